"""Escape attempts from inside a default container, as root (issue #5, item 7).

tests/escape_suite.sh runs as the container's pid 1 and prints one line per attempt; it runs
once per module (the `suite` fixture) and every attempt is asserted on its own. The host is
looked at before and after: hostname, clock, mounts, cgroup release agents and the sysctls
the suite tries to write must be as they were."""
import glob
import json
import os
import shutil
import socket
import tempfile
import time

import pytest

import minicontainer as mcmod
from conftest import mc, mc_bg, mountpoints_under, new_id

pytestmark = [pytest.mark.needs_root]

SUITE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "escape_suite.sh")

# Every attempt the suite makes; a line for each must be there, and say "blocked".
ATTEMPTS = """
mount_tmpfs mount_bind mount_proc mount_sysfs mount_cgroup_v1 remount_sys_rw
remount_proc_sys_rw remount_cgroup_rw umount_masked_path umount_readonly_proc_sys
unshare_mount unshare_user unshare_user_map_root unshare_net unshare_pid
setns_mnt_of_pid1 setns_net_of_pid1 setns_host_namespace_reachable pivot_root
write_proc_sys_hostname write_proc_sys_drop_caches write_proc_sys_core_pattern sysctl_write
write_sys_uevent_helper write_sysrq_trigger read_proc_kcore read_kernel_log insmod rmmod
blockdev_host_disk_in_dev blockdev_host_disk_in_tmp blockdev_sda blockdev_vda chardev_mem
chardev_kmsg cgroup_release_agent cgroup_notify_on_release cgroup_mkdir cgroup_devices_allow
cgroup_memory_limit ptrace_other_uid_mem ptrace_other_uid_environ
ptrace_other_container_visible reboot halt poweroff sethostname settime_date settime_adjtimex
host_pids_visible host_mounts_visible host_network_visible
""".split()

# Why each must fail, where the reason is not "nothing found": a word of the error, so that
# an attempt that failed for some other reason (a missing file, a typo) does not pass.
REASONS = {
    "mount_": "permission denied", "remount_": "permission denied",
    "umount_": "Operation not permitted", "unshare_": "Operation not permitted",
    "setns_mnt": "Operation not permitted", "setns_net": "Operation not permitted",
    "pivot_root": "Operation not permitted", "write_proc_sys": "Read-only file system",
    "sysctl_write": "Read-only file system", "write_sys_": "Read-only file system",
    "read_kernel_log": "Operation not permitted", "insmod": "Operation not permitted",
    "rmmod": "Operation not permitted", "blockdev_": "Operation not permitted",
    "chardev_": "Operation not permitted", "cgroup_notify": "Read-only file system",
    "cgroup_mkdir": "Read-only file system", "cgroup_devices": "Read-only file system",
    "cgroup_memory": "Read-only file system", "ptrace_other_uid": "Permission denied",
    "reboot": "Operation not permitted", "halt": "Operation not permitted",
    "poweroff": "Operation not permitted", "sethostname": "Operation not permitted",
    "settime_": "Operation not permitted",
}
# namespace type in the spec -> name under /proc/PID/ns
NS_NAMES = {"mount": "mnt", "network": "net", "pid": "pid", "ipc": "ipc", "uts": "uts"}


def parse(stdout):
    lines = {}
    for line in stdout.splitlines():
        if line.startswith("ATTEMPT "):
            _, name, verdict, detail = (line.split(" ", 3) + [""])[:4]
            assert name not in lines, "attempt %s reported twice" % name
            lines[name] = (verdict, detail)
    return lines


def host_disk():
    """MAJOR:MINOR of the block device holding the host's root filesystem, which is in the
    host's /proc/partitions (this machine's: vda, 254:0)."""
    dev = os.stat("/").st_dev
    major, minor = os.major(dev), os.minor(dev)
    with open("/proc/partitions") as f:
        known = {tuple(line.split()[:2]) for line in f.read().splitlines()[2:] if line.split()}
    if (str(major), str(minor)) not in known:
        pytest.skip("the root filesystem is not on a block device of /proc/partitions")
    return "%d:%d" % (major, minor)


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        return "error %d" % e.errno


def host_snapshot(own_tmp):
    """What the suite must not change on the host. Other sessions' containers and tests
    mount and unmount in the temporary directory and /run/minicontainer as they run
    alongside: only our own part of those is compared."""
    tmp = os.path.realpath(tempfile.gettempdir()) + "/"
    mounts = sorted(mp for mp in mountpoints_under("/")
                    if not mp.startswith((tmp, "/run/minicontainer/", "/run/netns/"))
                    or mp.startswith(own_tmp + "/state"))
    mounts += sorted(mountpoints_under(own_tmp + "/rootfs"))
    cgroup = {p: _read(p) for p in sorted(glob.glob("/sys/fs/cgroup/*/release_agent") +
                                          glob.glob("/sys/fs/cgroup/*/notify_on_release"))}
    knobs = {p: _read(p) for p in ("/proc/sys/kernel/core_pattern", "/proc/sys/vm/swappiness",
                                   "/proc/sys/kernel/hostname", "/sys/kernel/uevent_helper")}
    return {"hostname": socket.gethostname(), "mounts": mounts, "cgroup": cgroup,
            "knobs": knobs}


def clock_offset():
    return time.time() - time.monotonic()


@pytest.fixture(scope="module")
def suite(busybox_rootfs, tmp_path_factory):
    """Run the suite once in a default container; yields (lines, raw stdout, host before,
    host after). Another container runs alongside as the one to look for."""
    base = tmp_path_factory.mktemp("escape")
    state = str(base / "state")
    rootfs = str(base / "rootfs")
    shutil.copytree(busybox_rootfs, rootfs, symlinks=True)
    shutil.copy(SUITE, os.path.join(rootfs, "escape_suite.sh"))
    # A mount only the host has, made before the container: its source name must not show.
    mark = "hostonly-%d" % os.getpid()
    hostmnt = str(base / "hostmnt")
    os.mkdir(hostmnt)
    mcmod.mount(mark, hostmnt, "tmpfs", 0, "size=64k")
    victim, cid = new_id("victim"), new_id("escape")
    victim_mark = "victim-%d" % os.getpid()
    try:
        rc, out, err = mc_bg("run", "-d", "--name", victim, "--rootfs", busybox_rootfs, "--",
                             "sh", "-c", "sleep 1000; : %s" % victim_mark, state_root=state,
                             out=str(base / "victim"))
        assert rc == 0, err
        spec_ns = [ns["type"] for ns in mcmod.default_spec()["linux"]["namespaces"]]
        host_ns = " ".join(os.readlink("/proc/self/ns/%s" % NS_NAMES[t]) for t in spec_ns)
        before, offset = host_snapshot(str(base)), clock_offset()
        r = mc("run", "--rm", "--name", cid, "--rootfs", rootfs,
               "-e", "HOST_DISK=%s" % host_disk(), "-e", "HOST_NS=%s" % host_ns,
               "-e", "HOST_MARK=%s" % mark, "-e", "VICTIM_MARK=%s" % victim_mark,
               "--", "sh", "/escape_suite.sh", state_root=state, timeout=120)
        after, drift = host_snapshot(str(base)), clock_offset() - offset
        victim_alive = json.loads(mc("state", victim, state_root=state).stdout)["status"]
    finally:
        mc("delete", "-f", victim, state_root=state)
        mc("delete", "-f", cid, state_root=state)
        mcmod.umount2(hostmnt, mcmod.MNT_DETACH)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    assert os.listdir(state) == [], "containers left in %s" % state
    return {"lines": parse(r.stdout), "stdout": r.stdout, "before": before, "after": after,
            "drift": drift, "victim": victim_alive}


def test_the_suite_ran_to_its_end_and_reported_every_attempt(suite):
    assert suite["stdout"].rstrip().endswith("DONE"), suite["stdout"]
    assert sorted(suite["lines"]) == sorted(ATTEMPTS)


@pytest.mark.parametrize("name", ATTEMPTS)
def test_attempt_is_blocked(suite, name):
    assert name in suite["lines"], "no line for %s:\n%s" % (name, suite["stdout"])
    verdict, detail = suite["lines"][name]
    assert verdict == "blocked", "%s: %s %s" % (name, verdict, detail)
    reason = next((why for prefix, why in REASONS.items() if name.startswith(prefix)), None)
    if reason and not detail.startswith("absent"):
        assert reason in detail, "%s failed, but not for the expected reason: %s" % (name,
                                                                                      detail)


def test_host_hostname_and_uts_sysctls_unchanged(suite):
    assert suite["after"]["hostname"] == suite["before"]["hostname"]
    assert suite["after"]["knobs"] == suite["before"]["knobs"]


def test_host_clock_not_changed(suite):
    # date -s would have moved the wall clock by decades; allow for NTP slewing
    assert abs(suite["drift"]) < 2, suite["drift"]


def test_host_mounts_unchanged(suite):
    assert suite["after"]["mounts"] == suite["before"]["mounts"]


def test_host_cgroup_release_agents_unchanged(suite, cgroups):
    if cgroups.v1:  # v2 has no release agents
        assert suite["before"]["cgroup"], "no cgroup v1 release_agent on this host to compare"
        assert suite["after"]["cgroup"] == suite["before"]["cgroup"]
    for top in glob.glob("/sys/fs/cgroup/*/"):
        assert not glob.glob(top + "**/evil", recursive=True)


def test_the_other_container_survived_untouched(suite):
    assert suite["victim"] == "running"


# ---- the suite can tell: given the capability, the same attempt shows as ESCAPED ----

@pytest.mark.parametrize("flags, names", [
    (["--cap-add", "SYS_PTRACE"], ["ptrace_other_uid_mem", "ptrace_other_uid_environ"]),
    (["--cap-add", "SYS_ADMIN"], ["mount_tmpfs", "unshare_mount", "unshare_net"]),
], ids=["sys_ptrace", "sys_admin"])
def test_the_suite_reports_an_escape_when_the_container_is_given_the_power(
        busybox_rootfs, tmp_path, flags, names):
    rootfs = str(tmp_path / "rootfs")
    shutil.copytree(busybox_rootfs, rootfs, symlinks=True)
    shutil.copy(SUITE, os.path.join(rootfs, "escape_suite.sh"))
    r = mc("run", "--rm", "--name", new_id(), "--rootfs", rootfs, *flags,
           "-e", "ONLY=%s" % " ".join(names), "--", "sh", "/escape_suite.sh",
           state_root=str(tmp_path / "state"))
    assert r.returncode == 0, r.stderr
    lines = parse(r.stdout)
    assert sorted(lines) == sorted(names), r.stdout
    for name in names:
        assert lines[name][0] == "ESCAPED", (name, lines[name])
