"""Fixtures for image tests: a real docker-registry on loopback (filled in by the image work)."""
