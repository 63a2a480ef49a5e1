# minicontainer: set up, test, lint, benchmark, demo.  Run as root (sudo make ...).
PYTHON ?= python3
APT_PACKAGES = busybox-static docker-registry skopeo umoci runc crun podman conmon \
               zstd iproute2 uidmap linux-libc-dev openssl

.PHONY: setup test test-v2 lint bench demo clean

setup:
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(APT_PACKAGES)
	$(PYTHON) -m pip install -q -r requirements-dev.txt

# pytest's exit 5 (no tests collected) is a failure here, as is any other non-zero exit.
test:
	$(PYTHON) -m pytest -q -p no:cacheprovider tests

# The same suite in a pure cgroup v2 Debian 12 guest (QEMU; see tools/v2guest.py), on a copy of
# this checkout, with the guest's python3.  Not run by CI.  The first run builds the guest image.
test-v2:
	$(PYTHON) tools/v2guest.py run $(CURDIR) -- python3 -m pytest -q -p no:cacheprovider tests

lint:
	$(PYTHON) -m ruff check minicontainer.py tools tests bench

bench:
	$(PYTHON) bench/bench_run.py
	$(PYTHON) bench/bench_pull.py
	$(PYTHON) bench/bench_network.py
	$(PYTHON) bench/bench_overlay.py

demo:
	$(PYTHON) tools/demo.py

clean:
	rm -rf bench/out .pytest_cache
