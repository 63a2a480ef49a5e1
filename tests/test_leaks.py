"""Runs last (conftest.py sorts it so): what the whole session left behind. Other sessions
may run containers on this machine at the same time, so each check looks at what is this
session's: its temporary directory, its container ids (conftest.SESSION), its processes."""
import glob
import os
import time

import pytest

from conftest import (HOST_DEVICE_NODES_AT_START, REPOSITORY_FILES_AT_START,
                      ROOTLESS_USER_PREFIX, SESSION, SUBID_FILES, _cmdlines, host_device_nodes,
                      mountpoints_under, repository_files, session_cgroups)

pytestmark = pytest.mark.needs_root


@pytest.fixture(scope="module")
def basetemp(tmp_path_factory):
    return str(tmp_path_factory.getbasetemp())


def test_no_runtime_process_left(basetemp):
    left = [(pid, cmd) for pid, cmd in _cmdlines()
            if "minicontainer.py" in cmd and (basetemp in cmd or SESSION in cmd)]
    assert left == []


def test_no_container_process_left(basetemp):
    left = []
    for pid, cmd in _cmdlines():
        try:
            root = os.readlink("/proc/%d/root" % pid)
        except OSError:
            continue
        if root.startswith(basetemp):
            left.append((pid, root, cmd))
    assert left == []


def test_no_cgroup_left():
    assert session_cgroups() == []
    # The default parent goes with the last container in it: one still there must hold
    # another session's containers (wait a little for such a one to finish).
    deadline = time.monotonic() + 5
    while True:
        empty = [d for d in glob.glob("/sys/fs/cgroup/*/minicontainer")
                 if not any(os.path.isdir(os.path.join(d, e)) for e in os.listdir(d))]
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert empty == []


def test_no_mount_left(basetemp):
    assert mountpoints_under(basetemp) == []


def test_no_state_left(basetemp):
    assert glob.glob(os.path.join(basetemp, "*", "state", "*")) == []
    assert glob.glob("/run/minicontainer/%s*" % SESSION) == []


def test_the_shared_rootfs_was_not_written(busybox_rootfs):
    # Tests share one busybox rootfs (copy it to write): something made in it would leak
    # into every later test, and a device node in it breaks the copies.
    made = [os.path.join(top, name) for top, dirs, files in os.walk(busybox_rootfs)
            for name in dirs + files if top.startswith(os.path.join(busybox_rootfs, "tmp"))]
    assert made == []


def test_the_checkout_was_not_written():
    assert sorted(repository_files() - REPOSITORY_FILES_AT_START) == []


def test_the_hosts_device_nodes_are_as_they_were():
    """/dev/null and the other standard nodes keep their mode and owner: this machine's
    /dev/null was found 0755 one evening (2026-12-03: cause not found; crun 1.8's `run`
    changes its ctime, ours and runc's do not), which broke every user's write to it, apt's
    among them."""
    assert host_device_nodes() == HOST_DEVICE_NODES_AT_START


def test_no_rootless_user_left():
    """conftest.RootlessUser's user, its subordinate ids and its directory go with it."""
    name = ROOTLESS_USER_PREFIX + str(os.getpid())
    with open("/etc/passwd") as f:
        assert [line for line in f if line.startswith(name + ":")] == []
    for path in SUBID_FILES:
        if os.path.exists(path):
            with open(path) as f:
                assert [line for line in f if line.startswith(name + ":")] == []


def test_the_image_rootfs_is_as_made(image_rootfs, tmp_path):
    """The rootfs test images are built from is never run nor written (conftest)."""
    import mkrootfs

    def tree(root):
        return sorted(os.path.relpath(os.path.join(d, n), root)
                      for d, dirs, files in os.walk(root) for n in dirs + files)
    fresh = str(tmp_path / "rootfs")
    mkrootfs.make_rootfs(fresh)
    assert tree(image_rootfs) == tree(fresh)
