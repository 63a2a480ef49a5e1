"""The runtime seen from inside the container: each test runs busybox sh in a container, as
root on the real kernel, and proves a property from there (issue #2)."""
import fcntl
import json
import os
import pty
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
import time

import pytest

import minicontainer as mcmod
from conftest import (RUNTIME, host_block_device, mc, mc_argv, mc_bg, mc_sh, mountpoints_under,
                      new_id, ok, one_line_error, wait_for)

pytestmark = [pytest.mark.needs_root, pytest.mark.usefixtures("no_leaks")]

DEFAULT_CAPS_MASK = 0x00000000a80425fb
CAP_SYS_ADMIN = 21


def caps(text):
    return {line.split(":")[0]: int(line.split()[1], 16)
            for line in text.splitlines() if line.startswith("Cap")}




# ---- identity: hostname, capabilities, user ----

def test_hostname_is_the_containers_own(busybox_rootfs, state_root):
    host = socket.gethostname()
    assert ok(mc_sh("hostname", rootfs=busybox_rootfs, state_root=state_root)) == "minicontainer\n"
    assert ok(mc_sh("hostname; cat /proc/sys/kernel/hostname", "--hostname", "box1",
                    rootfs=busybox_rootfs, state_root=state_root)) == \
        "box1\nbox1\n"
    assert socket.gethostname() == host


def test_default_capabilities_are_dockers_14(busybox_rootfs, state_root):
    # As docker: bounding, effective and permitted; nothing inheritable or ambient.
    assert mcmod.cap_mask(mcmod.DEFAULT_CAPS, "test") == DEFAULT_CAPS_MASK
    got = caps(ok(mc_sh("grep ^Cap /proc/self/status", rootfs=busybox_rootfs,
                        state_root=state_root)))
    assert got == {"CapInh": 0, "CapPrm": DEFAULT_CAPS_MASK, "CapEff": DEFAULT_CAPS_MASK,
                   "CapBnd": DEFAULT_CAPS_MASK, "CapAmb": 0}


def test_cap_drop_all_leaves_none(busybox_rootfs, state_root):
    got = caps(ok(mc_sh("grep ^Cap /proc/self/status", "--cap-drop", "ALL", rootfs=busybox_rootfs,
                        state_root=state_root)))
    assert got == dict.fromkeys(("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"), 0)
    # and it shows: root without CAP_CHOWN cannot chown a file it does not own
    r = mc_sh("touch /dev/shm/f && chown 1000 /dev/shm/f && chown 0 /dev/shm/f", "--cap-drop",
              "ALL", rootfs=busybox_rootfs, state_root=state_root)
    assert r.returncode != 0 and "Operation not permitted" in r.stderr


def test_cap_add_sys_admin_adds_bit_21(busybox_rootfs, state_root):
    got = caps(ok(mc_sh("grep ^Cap /proc/self/status", "--cap-add", "SYS_ADMIN",
                        rootfs=busybox_rootfs, state_root=state_root)))
    assert got == dict(dict.fromkeys(("CapPrm", "CapEff", "CapBnd"),
                                     DEFAULT_CAPS_MASK | 1 << CAP_SYS_ADMIN), CapInh=0, CapAmb=0)
    # CAP_SYS_ADMIN is real: a mount works with it, and not without
    script = "mkdir -p /dev/shm/m && mount -t tmpfs none /dev/shm/m && echo mounted"
    assert ok(mc_sh(script, "--cap-add", "SYS_ADMIN", rootfs=busybox_rootfs,
                    state_root=state_root)) == "mounted\n"
    assert mc_sh(script, rootfs=busybox_rootfs, state_root=state_root).returncode != 0


def test_cap_drop_one(busybox_rootfs, state_root):
    got = caps(ok(mc_sh("grep ^Cap /proc/self/status", "--cap-drop", "CHOWN",
                        rootfs=busybox_rootfs, state_root=state_root)))
    assert got == dict(dict.fromkeys(("CapPrm", "CapEff", "CapBnd"), DEFAULT_CAPS_MASK & ~1),
                       CapInh=0, CapAmb=0)


@pytest.mark.parametrize("user", ["1000", "nobody"])
def test_non_root_user_has_no_capabilities(busybox_rootfs, state_root, tmp_path, user):
    # As docker: a non-root user keeps only the bounding set (the ambient set would carry
    # CAP_DAC_OVERRIDE across the switch of uid and write root's files through a volume).
    host = tmp_path / "hostetc"
    host.mkdir()
    (host / "f").write_text("root's\n")
    os.chmod(host / "f", 0o644)
    r = mc_sh("id -u; grep ^Cap /proc/self/status; echo x >> /hostetc/f; "
              "touch /dev/shm/f; chown 123 /dev/shm/f", "-u", user, "-v", "%s:/hostetc" % host,
              rootfs=busybox_rootfs, state_root=state_root)
    assert r.returncode != 0 and "Permission denied" in r.stderr, (r.stdout, r.stderr)
    assert "Operation not permitted" in r.stderr  # no CAP_CHOWN either
    assert caps(r.stdout) == dict(CapBnd=DEFAULT_CAPS_MASK, CapInh=0, CapPrm=0, CapEff=0,
                                  CapAmb=0)
    assert (host / "f").read_text() == "root's\n"
    # what the user asks for is still the bounding set's, for a setuid or file-capable program
    got = caps(ok(mc_sh("grep ^Cap /proc/self/status", "-u", user, "--cap-add", "NET_ADMIN",
                        rootfs=busybox_rootfs, state_root=state_root)))
    assert got == dict(CapBnd=DEFAULT_CAPS_MASK | 1 << 12, CapInh=0, CapPrm=0, CapEff=0,
                       CapAmb=0)


@pytest.mark.parametrize("spec, expected", [
    ("1000:1000", "uid=1000(user) gid=1000(user)"),
    ("1000", "uid=1000(user) gid=1000(user)"),
    ("user", "uid=1000(user) gid=1000(user)"),
    ("nobody", "uid=65534(nobody) gid=65534(nogroup)"),
    ("4242:100", "uid=4242 gid=100(users)"),
    ("user:users", "uid=1000(user) gid=100(users)"),
])
def test_user(busybox_rootfs, state_root, spec, expected):
    out = ok(mc_sh("id; grep -E '^(Uid|Gid|Groups)' /proc/self/status", "-u", spec,
                   rootfs=busybox_rootfs, state_root=state_root))
    lines = out.splitlines()
    assert lines[0] == expected
    uid, gid = (int(x.split("=")[1].split("(")[0]) for x in expected.split())
    assert lines[1].split()[1:] == [str(uid)] * 4  # real, effective, saved, fs
    assert lines[2].split()[1:] == [str(gid)] * 4
    assert lines[3].split()[1:] == []  # none of the runtime's supplementary groups


def ignored(status_text):
    """The signals SigIgn says are ignored, but glibc's own (32, 33), which a caller's may
    leave ignored and Python cannot reset."""
    mask = int(next(line.split()[1] for line in status_text.splitlines()
                    if line.startswith("SigIgn:")), 16)
    return {sig for sig in range(1, 65) if mask & 1 << (sig - 1)} - {32, 33}


def test_no_signal_is_ignored_or_blocked(busybox_rootfs, state_root):
    # The runtime is Python, which ignores SIGPIPE and SIGXFSZ, and its caller may ignore
    # SIGHUP (nohup): the program must inherit none of that (a pipeline's writer would never
    # die of its reader's exit).
    script = "grep -E '^Sig(Ign|Blk)' /proc/self/status; yes | head -1"
    for out in (ok(mc_sh(script, rootfs=busybox_rootfs, state_root=state_root)),
                subprocess.run(["nohup", *mc_argv("run", "--rm", "--rootfs", busybox_rootfs, "--",
                                                  "sh", "-c", script, state_root=state_root)],
                               stdin=subprocess.DEVNULL, capture_output=True, text=True,
                               timeout=60, cwd="/tmp").stdout):
        assert "SigBlk:\t0000000000000000" in out and out.endswith("y\n"), out
        assert ignored(out) == set(), out


def test_default_user_is_root(busybox_rootfs, state_root):
    assert ok(mc_sh("id", rootfs=busybox_rootfs,
                    state_root=state_root)).strip() == "uid=0(root) gid=0(root)"


# ---- the pid namespace and /proc ----

def test_pid_namespace_shows_only_the_containers_processes(busybox_rootfs, state_root):
    out = ok(mc_sh("echo $$; tr '\\0' ' ' </proc/1/cmdline; echo; ls /proc | grep '^[0-9]'",
                   rootfs=busybox_rootfs, state_root=state_root))
    lines = out.splitlines()
    assert lines[0] == "1"
    assert lines[1].startswith("sh -c echo $$")
    pids = sorted(int(p) for p in lines[2:])
    # sh (1), ls and grep: nothing of the host, whose pids are far larger
    assert pids[0] == 1 and len(pids) == 3 and pids[-1] < 10, pids
    assert os.getpid() not in pids or os.getpid() < 10


def test_proc_sys_and_other_readonly_paths_are_read_only(busybox_rootfs, state_root):
    host = socket.gethostname()
    r = mc_sh("echo evil > /proc/sys/kernel/hostname", rootfs=busybox_rootfs, state_root=state_root)
    assert r.returncode != 0 and "Read-only file system" in r.stderr
    assert socket.gethostname() == host
    mounts = {}
    for line in ok(mc_sh("cat /proc/self/mountinfo", rootfs=busybox_rootfs,
                         state_root=state_root)).splitlines():
        f = line.split()
        mounts[f[4]] = f[5].split(",")
    for path in ("/proc/sys", "/proc/bus", "/proc/fs", "/proc/irq"):
        assert "ro" in mounts[path], path


def test_sysrq_trigger_is_not_writable(busybox_rootfs, state_root):
    out = ok(mc_sh("if [ -e /proc/sysrq-trigger ]; then "
                   "  (echo h > /proc/sysrq-trigger) 2>/dev/null && echo WROTE || echo denied; "
                   "else echo absent; fi", rootfs=busybox_rootfs, state_root=state_root))
    if os.path.exists("/proc/sysrq-trigger"):
        assert out == "denied\n"
    else:  # a kernel without CONFIG_MAGIC_SYSRQ: nothing there to protect
        assert out == "absent\n"


def test_masked_paths_read_empty(busybox_rootfs, state_root):
    with open("/proc/timer_list") as f:
        assert f.read(100)  # the host's is not empty
    out = ok(mc_sh("wc -c < /proc/timer_list; wc -c < /proc/keys; ls -A /sys/firmware | wc -l; "
                   "touch /sys/firmware/x || echo firmware-ro", rootfs=busybox_rootfs,
                   state_root=state_root))
    assert out.split() == ["0", "0", "0", "firmware-ro"]


def test_sys_is_read_only(busybox_rootfs, state_root):
    r = mc_sh("echo 1 > /sys/kernel/profiling", rootfs=busybox_rootfs, state_root=state_root)
    assert r.returncode != 0 and "Read-only file system" in r.stderr


# ---- resources: memory, pids, devices, rlimits ----

def test_memory_limit_kills_through_the_cgroup_oom_killer(busybox_rootfs, state_root, cgroups):
    cgroups.need("memory")
    # tail keeps the "line" it reads from /dev/zero, which never ends: it grows until killed.
    # v1: the limit, oom_control's kill count and failcnt; v2: memory.events' oom_kill and max
    if cgroups.unified:
        files = ("memory.max", "memory.events", "memory.events")
        hit = "grep '^max ' %s | cut -d' ' -f2"
    else:
        files = ("memory.limit_in_bytes", "memory.oom_control", "memory.failcnt")
        hit = "cat %s"
    limit, oom, failed = (cgroups.inside("memory", f) for f in files)
    script = ("cat %s; tail /dev/zero; echo rc=$?; grep '^oom_kill ' %s; " % (limit, oom) +
              hit % failed)
    out = ok(mc_sh(script, "-m", "16m", timeout=60, rootfs=busybox_rootfs,
                   state_root=state_root)).split("\n")
    assert out[0] == str(16 << 20)
    assert out[1] == "rc=137"  # SIGKILL
    assert out[2].startswith("oom_kill ") and int(out[2].split()[1]) >= 1, out
    assert int(out[3]) > 0  # the cgroup hit its limit
    # and when the container's init is the one killed, the runtime exits 137
    r = mc_sh("exec tail /dev/zero", "-m", "16m", timeout=60, rootfs=busybox_rootfs,
              state_root=state_root)
    assert r.returncode == 137, (r.returncode, r.stderr)


def test_pids_limit_stops_a_fork_loop(busybox_rootfs, state_root, cgroups):
    cgroups.need("pids")
    r = mc_sh("cat " + cgroups.inside("pids", "pids.max") + "; i=0; "
              "while [ $i -lt 20 ]; do sleep 1000 & i=$((i+1)); done; echo spawned $i",
              "--pids-limit", "10", rootfs=busybox_rootfs, state_root=state_root)
    assert r.stdout.splitlines()[0] == "10"
    assert "can't fork" in r.stderr or "Resource temporarily unavailable" in r.stderr, r.stderr
    assert "spawned 20" not in r.stdout


def test_allowed_devices_work(busybox_rootfs, state_root):
    out = ok(mc_sh("cat /dev/null; head -c 4 /dev/zero | od -An -tx1; "
                   "head -c 16 /dev/urandom | wc -c; head -c 16 /dev/random | wc -c; "
                   "echo x > /dev/null && echo null-ok; "
                   "echo x > /dev/full || echo full-failed", rootfs=busybox_rootfs,
                   state_root=state_root))
    assert out.split("\n")[:4] == [" 00 00 00 00", "16", "16", "null-ok"]
    assert out.endswith("full-failed\n")


def test_dev_full_gives_enospc(busybox_rootfs, state_root):
    r = mc_sh("echo x > /dev/full", rootfs=busybox_rootfs, state_root=state_root)
    assert r.returncode != 0 and "No space left on device" in r.stderr




def test_device_not_allowed_cannot_be_used(busybox_rootfs, state_root):
    major, minor = host_block_device()
    # mknod itself is allowed (runc allows "b *:* m"), using the node is not
    r = mc_sh("mknod /dev/blk b %s %s && echo made; head -c 512 /dev/blk | wc -c" % (major, minor),
              rootfs=busybox_rootfs, state_root=state_root)
    assert r.stdout.startswith("made\n")
    assert "Operation not permitted" in r.stderr, r.stderr
    # a char device outside the defaults: /dev/mem (1:1)
    r = mc_sh("mknod /dev/mem2 c 1 1 && head -c 1 /dev/mem2", rootfs=busybox_rootfs,
              state_root=state_root)
    assert r.returncode != 0 and "Operation not permitted" in r.stderr


def test_rlimit_nofile(busybox_rootfs, state_root):
    assert ok(mc_sh("ulimit -n; ulimit -Hn", rootfs=busybox_rootfs,
                    state_root=state_root)).split() == ["1025", "1025"]


def test_cpu_and_cpuset_limits_are_in_the_containers_cgroup(busybox_rootfs, state_root, cgroups):
    cgroups.need("cpu", "cpuset")
    # v2: cpu.max is "quota period", and the shares are a weight (1 + (512 - 2) * 9999 // 262142)
    files = [("cpu", f) for f in (["cpu.max", "cpu.weight"] if cgroups.unified else
                                  ["cpu.cfs_quota_us", "cpu.cfs_period_us", "cpu.shares"])]
    out = ok(mc_sh("cat %s; nproc" % " ".join(cgroups.inside(c, f) for c, f in
                                              files + [("cpuset", "cpuset.cpus")]),
                   "--cpus", "0.5", "--cpu-shares", "512", "--cpuset-cpus", "0",
                   rootfs=busybox_rootfs, state_root=state_root))
    assert out.split() == ["50000", "100000", "20" if cgroups.unified else "512", "0", "1"]


def test_sysctl_and_oom_score_adj_flags(busybox_rootfs, walkable_rootfs, state_root):
    # docker's --sysctl KEY=VALUE (repeated: linux.sysctl) and --oom-score-adj N
    # (process.oomScoreAdj): one row each in RUN_FLAGS
    out = ok(mc_sh("cat /proc/self/oom_score_adj /proc/sys/kernel/shmmax "
                   "/proc/sys/net/ipv4/ip_forward", "--oom-score-adj", "345",
                   "--sysctl", "kernel.shmmax=123456789", "--sysctl", "net.ipv4.ip_forward=1",
                   rootfs=busybox_rootfs, state_root=state_root))
    assert out.split() == ["345", "123456789", "1"]
    assert ok(mc_sh("cat /proc/self/oom_score_adj", "--oom-score-adj", "1000",
                    rootfs=busybox_rootfs, state_root=state_root)).strip() == "1000"
    # with a user namespace too: its root may not write the init's /proc/self files (the
    # host root's, while it is not dumpable), so the first child writes it, before (runc
    # writes it from outside)
    assert ok(mc_sh("cat /proc/self/oom_score_adj", "--userns", "--oom-score-adj", "100",
                    rootfs=walkable_rootfs, state_root=state_root)).strip() == "100"


# ---- process: env, cwd, exit codes, signals ----

def test_environment(busybox_rootfs, state_root):
    out = ok(mc_sh("env | sort", "-e", "FOO=bar baz", "-e", "EMPTY=", "-e", "FROM_HOST",
                   rootfs=busybox_rootfs, state_root=state_root))
    env = dict(line.split("=", 1) for line in out.splitlines())
    assert env["PATH"] == mcmod.DEFAULT_PATH
    assert env["FOO"] == "bar baz" and env["EMPTY"] == ""
    assert "FROM_HOST" not in env  # not set on the host: left out, as docker does
    assert "TERM" not in env  # docker's: TERM=xterm with -t only


def test_environment_from_the_host(busybox_rootfs, state_root):
    env = dict(os.environ, FROM_HOST="hello")
    r = subprocess.run(mc_argv("run", "--rm", "--name", new_id(), "--rootfs", busybox_rootfs, "-e",
                               "FROM_HOST", "-e", "PATH=/bin", "--", "sh", "-c",
                               "echo $FROM_HOST $PATH", state_root=state_root),
                       capture_output=True, text=True, env=env, timeout=30)
    assert r.stdout == "hello /bin\n", r.stderr


def test_workdir(busybox_rootfs, state_root, rootfs_copy):
    assert ok(mc_sh("pwd", rootfs=busybox_rootfs, state_root=state_root)) == "/\n"
    assert not os.path.exists(os.path.join(rootfs_copy, "work/dir"))
    assert ok(mc_sh("pwd", "-w", "/work/dir", rootfs=rootfs_copy,
                    state_root=state_root)) == "/work/dir\n"
    assert os.path.isdir(os.path.join(rootfs_copy, "work/dir"))  # created when missing
    assert ok(mc_sh("pwd", "-w", "/tmp", rootfs=rootfs_copy, state_root=state_root)) == "/tmp\n"


@pytest.mark.parametrize("script, code", [("true", 0), ("exit 3", 3), ("exit 255", 255),
                                          ("sh -c 'kill -9 $$'; exit $?", 137)])
def test_exit_codes(busybox_rootfs, state_root, script, code):
    assert mc_sh(script, rootfs=busybox_rootfs, state_root=state_root).returncode == code


def test_command_not_found_is_127(busybox_rootfs, state_root):
    r = mc("run", "--rm", "--name", new_id(), "--rootfs", busybox_rootfs, "--", "nosuchcommand",
           state_root=state_root)
    assert r.returncode == 127
    assert "nosuchcommand" in one_line_error(r)
    r = mc("run", "--rm", "--name", new_id(), "--rootfs", busybox_rootfs, "--", "/no/such/file",
           state_root=state_root)
    assert r.returncode == 127 and "no such file" in one_line_error(r)


def test_not_executable_is_126(busybox_rootfs, state_root):
    r = mc("run", "--rm", "--name", new_id(), "--rootfs", busybox_rootfs, "--", "/etc/passwd",
           state_root=state_root)
    assert r.returncode == 126
    assert "permission denied" in one_line_error(r)


def test_killed_container_exits_128_plus_signal(busybox_rootfs, state_root, tmp_path):
    cid = new_id()
    p = subprocess.Popen(mc_argv("run", "--rm", "--name", cid, "--rootfs", busybox_rootfs, "--",
                                 "sh", "-c", "echo ready; exec sleep 1000", state_root=state_root),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "ready\n"
        r = mc("kill", cid, "KILL", state_root=state_root)
        assert r.returncode == 0, r.stderr
        assert p.wait(timeout=30) == 137
    finally:
        p.kill()
        p.wait()


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 42), (signal.SIGUSR1, 43),
                                       (signal.SIGHUP, 44), (signal.SIGINT, 45),
                                       (signal.SIGUSR2, 46)])
def test_signals_to_the_runtime_reach_the_container(busybox_rootfs, state_root, sig, code):
    name = sig.name[3:]
    script = ('trap "echo got %s; exit %d" %s; echo ready; '
              'while :; do sleep 1 & wait $!; done' % (name, code, name))
    p = subprocess.Popen(mc_argv("run", "--rm", "--name", new_id(), "--rootfs", busybox_rootfs,
                                 "--", "sh", "-c", script, state_root=state_root),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "ready\n"
        p.send_signal(sig)
        assert p.wait(timeout=30) == code, p.stderr.read()
        assert p.stdout.read() == "got %s\n" % name
    finally:
        p.kill()
        p.wait()


def test_stdin_is_dev_null_without_i(busybox_rootfs, state_root):
    assert ok(mc_sh("cat; readlink /proc/self/fd/0", input="not for you", rootfs=busybox_rootfs,
                    state_root=state_root)) == "/dev/null\n"


def test_stdin_with_i(busybox_rootfs, state_root):
    assert ok(mc_sh("tr a-z A-Z", "-i", input="hello\n", rootfs=busybox_rootfs,
                    state_root=state_root)) == "HELLO\n"


def test_no_file_descriptors_leak_into_the_container(busybox_rootfs, state_root):
    out = ok(mc_sh("ls /proc/self/fd", rootfs=busybox_rootfs, state_root=state_root))
    assert sorted(out.split()) == ["0", "1", "2", "3"]  # 3: ls's own directory


# ---- the terminal ----

def _set_size(fd, rows, cols):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Pty:
    """The runtime under a pty of our own, as under a terminal emulator."""

    def __init__(self, argv, rows, cols):
        self.master, slave = os.openpty()
        _set_size(slave, rows, cols)
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave,
                                     start_new_session=True)
        os.close(slave)
        self.buf = b""

    def read_until(self, needle, timeout=20):
        deadline = time.monotonic() + timeout
        while needle not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.master], [], [], left)[0]:
                raise AssertionError("no %r in %r" % (needle, self.buf))
            try:
                data = os.read(self.master, 4096)
            except OSError:  # EIO: the other side is gone
                data = b""
            if not data:
                raise AssertionError("EOF before %r in %r" % (needle, self.buf))
            self.buf += data
        i = self.buf.index(needle) + len(needle)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def write(self, data):
        os.write(self.master, data)

    def close(self):
        try:
            self.proc.kill()
        except OSError:
            pass
        self.proc.wait()
        os.close(self.master)


def test_tty_interactive_shell(busybox_rootfs, state_root):
    t = Pty(mc_argv("run", "--rm", "-t", "-i", "--name", new_id(), "--rootfs", busybox_rootfs,
                    "--", "sh", state_root=state_root), 33, 101)
    try:
        t.read_until(b"# ")  # the prompt: typed-ahead input would be flushed
        # commands whose output differs from their echo, so that we read the output
        t.write(b"echo A$((6*7))Z; tty; echo B$$Z\n")
        out = t.read_until(b"B1Z\r\n").decode()
        assert "A42Z" in out and "/dev/pts/0\r\n" in out
        t.write(b"stty size; echo E$((1+1))E\n")
        assert t.read_until(b"E2E").decode().split("\r\n")[-2] == "33 101"
        t.write(b"[ -t 0 ] && [ -t 1 ] && echo T$((2+2))T\n")
        t.read_until(b"T4T")
        # a new size on the outer terminal reaches the container (SIGWINCH is forwarded)
        _set_size(t.master, 40, 120)
        t.proc.send_signal(signal.SIGWINCH)
        deadline = time.monotonic() + 10
        while True:
            t.write(b"echo S$(stty size | tr ' ' x)S\n")
            size = t.read_until(b"S\r\n").decode().rsplit("S", 2)[-2]
            if size == "40x120" or time.monotonic() > deadline:
                break
        assert size == "40x120"
        t.write(b"exit 7\n")
        assert t.proc.wait(timeout=20) == 7
    finally:
        t.close()


def test_tty_output_of_a_command(busybox_rootfs, state_root):
    t = Pty(mc_argv("run", "--rm", "-t", "--name", new_id(), "--rootfs", busybox_rootfs, "--",
                    "sh", "-c", "tty; stty size; exit 5", state_root=state_root), 12, 34)
    try:
        out = t.read_until(b"12 34\r")  # without -i our terminal is not raw: \r\r\n
        assert out.startswith(b"/dev/pts/0\r")
        assert t.proc.wait(timeout=20) == 5
    finally:
        t.close()


def test_tty_via_pty_fork(busybox_rootfs, state_root):
    pid, master = pty.fork()
    if pid == 0:
        try:
            os.execv(sys.executable, mc_argv("run", "--rm", "-t", "-i", "--name", new_id(),
                                             "--rootfs", busybox_rootfs, "--", "sh", "-c",
                                             "tty; read x; echo got-$x; exit 9",
                                             state_root=state_root))
        finally:
            os._exit(127)
    buf = b""
    try:
        deadline = time.monotonic() + 20
        while b"/dev/pts/0" not in buf and time.monotonic() < deadline:
            if select.select([master], [], [], 1)[0]:
                buf += os.read(master, 1024)
        assert b"/dev/pts/0" in buf
        os.write(master, b"abc\n")
        while b"got-abc" not in buf and time.monotonic() < deadline:
            if select.select([master], [], [], 1)[0]:
                try:
                    buf += os.read(master, 1024)
                except OSError:
                    break
        assert b"got-abc" in buf, buf
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 9
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except OSError:
            pass
        os.close(master)


# ---- the root filesystem ----

def test_read_only_root(busybox_rootfs, state_root, rootfs_copy):
    r = mc_sh("touch /newfile", "--read-only", rootfs=rootfs_copy, state_root=state_root)
    assert r.returncode != 0 and "Read-only file system" in r.stderr
    # /tmp and /run are writable tmpfs mounts under --read-only (issue #6, as docker's --tmpfs)
    ok(mc_sh("touch /tmp/x /run/x", "--read-only", rootfs=rootfs_copy, state_root=state_root))
    assert not os.path.exists(os.path.join(rootfs_copy, "tmp", "x"))
    assert not os.path.exists(os.path.join(rootfs_copy, "newfile"))
    # the tmpfs mounts stay writable
    assert ok(mc_sh("echo hi > /dev/shm/x && cat /dev/shm/x", "--read-only", rootfs=rootfs_copy,
                    state_root=state_root)) == "hi\n"
    # without --read-only the same write works
    ok(mc_sh("touch /newfile", rootfs=rootfs_copy, state_root=state_root))
    assert os.path.exists(os.path.join(rootfs_copy, "newfile"))


def test_volumes(busybox_rootfs, state_root, rootfs_copy, tmp_path):
    host = tmp_path / "vol"
    host.mkdir()
    (host / "in").write_text("from host\n")
    out = ok(mc_sh("cat /data/in; echo from container > /data/out", "-v", "%s:/data" % host,
                   rootfs=rootfs_copy, state_root=state_root))
    assert out == "from host\n"
    assert (host / "out").read_text() == "from container\n"
    r = mc_sh("cat /data/in; echo again > /data/out", "-v", "%s:/data:ro" % host,
              rootfs=rootfs_copy, state_root=state_root)
    assert r.stdout == "from host\n"
    assert r.returncode != 0 and "Read-only file system" in r.stderr
    assert (host / "out").read_text() == "from container\n"
    # a file as a volume, and an explicit :rw
    f = tmp_path / "single"
    f.write_text("one file\n")
    assert ok(mc_sh("cat /etc/single; echo more >> /etc/single", "-v", "%s:/etc/single:rw" % f,
                    rootfs=rootfs_copy, state_root=state_root)) == "one file\n"
    assert f.read_text() == "one file\nmore\n"


def test_loopback_is_up_and_alone(busybox_rootfs, state_root):
    out = ok(mc_sh("ls /sys/class/net; cat /sys/class/net/lo/flags; ip -o link; "
                   "ping -c 1 -W 2 127.0.0.1 >/dev/null && echo ping-ok", rootfs=busybox_rootfs,
                   state_root=state_root))
    lines = out.splitlines()
    assert lines[0] == "lo"
    assert int(lines[1], 16) & 1  # IFF_UP
    links = [line for line in lines[2:-1]]
    assert len(links) == 1 and ": lo: <LOOPBACK,UP" in links[0]
    assert lines[-1] == "ping-ok"


def test_pivot_root_not_chroot(state_root, busybox_rootfs):
    out = ok(mc_sh("cat /proc/self/mountinfo; echo ---; ls -a /; echo ---; cd /..; pwd; ls; "
                   "echo ---; [ -e %s ] && echo HOST-VISIBLE; echo end" % RUNTIME,
                   rootfs=busybox_rootfs, state_root=state_root))
    mountinfo, root_ls, up_ls, rest = out.split("---\n")
    roots = [line.split() for line in mountinfo.splitlines() if line.split()[4] == "/"]
    assert len(roots) == 1, roots  # the old root is detached, not stacked below
    assert roots[0][3] == busybox_rootfs  # the root mount is the rootfs itself
    assert set(root_ls.split()) - {".", ".."} == set(os.listdir(busybox_rootfs))
    assert up_ls.splitlines()[0] == "/"
    assert rest == "end\n"
    # nothing of the host's filesystems is mounted inside
    for line in mountinfo.splitlines():
        assert line.split()[4].startswith(("/proc", "/dev", "/sys")) or \
            line.split()[4] == "/", line


@pytest.fixture
def shared_mount(tmp_path, busybox_rootfs):
    """A shared tmpfs holding a copy of the rootfs: a mount made in the container would
    propagate to the host unless the runtime cuts the container off its peer group."""
    d = str(tmp_path / "shared")
    os.mkdir(d)
    mcmod.mount("tmpfs", d, "tmpfs", 0, "mode=755")
    try:
        mcmod.mount(None, d, None, mcmod.MS_SHARED)
        shutil.copytree(busybox_rootfs, d + "/rootfs", symlinks=True)
        yield d
    finally:
        mcmod.umount2(d, mcmod.MNT_DETACH)


def test_mounts_do_not_propagate_to_the_host(shared_mount, state_root, tmp_path):
    with open("/proc/self/mountinfo") as f:
        line = next(ln for ln in f if ln.split()[4] == shared_mount)
    assert "shared:" in line  # the premise: the host side is a shared mount
    before = mountpoints_under(shared_mount)
    rootfs = shared_mount + "/rootfs"
    cid = new_id()
    rc, out, err = mc_bg("run", "-d", "--name", cid, "--rootfs", rootfs, "-v",
                         "%s:/vol" % tmp_path, "--", "sh", "-c",
                         "mount -t tmpfs x /mnt 2>/dev/null; echo up > /dev/shm/up; "
                         "exec sleep 1000", state_root=state_root, out=str(tmp_path / "d"))
    assert rc == 0, err
    try:
        pid = json.loads(mc("state", cid, state_root=state_root).stdout)["pid"]
        wait_for(lambda: os.path.exists("/proc/%d/root/dev/shm/up" % pid), what="container")
        assert mountpoints_under(shared_mount) == before  # while it runs
        inside = open("/proc/%d/mountinfo" % pid).read()
        assert "/proc" in inside and "/dev/shm" in inside
    finally:
        assert mc("delete", "-f", cid, state_root=state_root).returncode == 0
    assert mountpoints_under(shared_mount) == before  # and after


def test_spec_writes_the_default_config(tmp_path, busybox_rootfs, cgroups):
    r = mc("spec", "-b", str(tmp_path), "--rootfs", busybox_rootfs)
    assert r.returncode == 0, r.stderr
    spec = json.loads((tmp_path / "config.json").read_text())
    p = spec["process"]
    assert p["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 1025, "soft": 1025}]
    assert all(sorted(v) == sorted(mcmod.DEFAULT_CAPS) for v in p["capabilities"].values())
    # no inheritable set, as runc's spec since 1.1.2 (CVE-2022-29162)
    assert sorted(p["capabilities"]) == ["ambient", "bounding", "effective", "permitted"]
    assert len(mcmod.DEFAULT_CAPS) == 14
    assert p["noNewPrivileges"] is True and spec["hostname"] == "minicontainer"
    assert sorted(n["type"] for n in spec["linux"]["namespaces"]) == \
        sorted(["ipc", "mount", "network", "pid", "uts"] + ["cgroup"] * cgroups.unified)
    assert [m["destination"] for m in spec["mounts"]] == \
        ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/sys/fs/cgroup"]
    assert "seccomp" in spec["linux"]
    # a second spec does not overwrite it
    r = mc("spec", "-b", str(tmp_path))
    assert r.returncode != 0 and "already exists" in one_line_error(r)


def test_alpine(alpine_rootfs, state_root):
    r = mc("run", "--rm", "--name", new_id(), "--rootfs", alpine_rootfs, "-u", "nobody", "--", "sh",
           "-c", "cat /etc/alpine-release; id; hostname", state_root=state_root)
    lines = ok(r).splitlines()
    assert lines[0] == "3.20.3"
    assert lines[1].startswith("uid=65534(nobody) gid=65534(nobody)")
    assert lines[2] == "minicontainer"
