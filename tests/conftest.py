"""Shared fixtures: a busybox rootfs, the runtime as a command, and a leak check."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))

import mkrootfs  # noqa: E402

pytest_plugins = ["fixtures_registry"]

RUNTIME = os.path.join(ROOT, "minicontainer.py")
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="needs root")
        for item in items:
            if "needs_root" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory):
    """A read-mostly busybox rootfs shared by the session; tests that write copy it."""
    return mkrootfs.make_rootfs(str(tmp_path_factory.mktemp("busybox") / "rootfs"))


def mc(*args, input=None, timeout=60, check=False, env=None, state_root=None):
    """Run minicontainer.py with the interpreter running the tests; returns CompletedProcess."""
    cmd = [sys.executable, RUNTIME]
    if state_root:
        cmd += ["--root", state_root]
    cmd += list(args)
    return subprocess.run(cmd, input=input, capture_output=True, text=True,
                          timeout=timeout, check=check, env=env)
