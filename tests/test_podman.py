"""Podman acceptance (issue #4): rootful podman runs containers through minicontainer.

podman gets `--runtime /path/to/minicontainer.py` and a private world: containers.conf and
storage.conf written into a temporary directory (vfs storage, cgroupfs, file events and
locks, no network setup), an image imported from the busybox rootfs.  Each test checks
what a user would see: output, exit codes, ttys, limits enforced, the lifecycle commands.

PODMAN_TEST_RUNTIME=runc (a name podman knows, or a path) runs the same checks through
another runtime, to compare.
"""
import os
import pty
import re
import shutil
import subprocess
import tempfile
import time

import pytest

from conftest import RUNTIME, mountpoints_under, wait_for

pytestmark = [
    pytest.mark.needs_root,
    pytest.mark.skipif(not (shutil.which("podman") and shutil.which("conmon")),
                       reason="needs podman and conmon"),
]

RUNTIME_UNDER_TEST = os.environ.get("PODMAN_TEST_RUNTIME") or RUNTIME
IMAGE = "localhost/mcbb:latest"

CONTAINERS_CONF = """\
[containers]
netns = "none"
# podman's default nproc (1048576) is above what root may set without CAP_SYS_RESOURCE
default_ulimits = [{ulimits}]
log_driver = "k8s-file"
cgroups = "enabled"

[engine]
cgroup_manager = "{manager}"
events_logger = "file"
lock_type = "file"
conmon_env_vars = ["CONTAINERS_CONF={conf}", "CONTAINERS_STORAGE_CONF={storage}"]
tmp_dir = "{base}/tmp"
"""

STORAGE_CONF = """\
[storage]
driver = "vfs"
runroot = "{base}/run"
graphroot = "{base}/graph"
"""


def _ulimits():
    """nofile and nproc limits root may set here (the hard limits it already has)."""
    import resource
    out = []
    for name, res, want in (("nofile", resource.RLIMIT_NOFILE, 1024),
                            ("nproc", resource.RLIMIT_NPROC, 4096)):
        hard = resource.getrlimit(res)[1]
        n = want if hard == resource.RLIM_INFINITY else min(want, hard)
        out.append('"%s=%d:%d"' % (name, n, n))
    return ", ".join(out)


def _libpod_cgroups():
    found = set()
    for top, dirs, _ in os.walk("/sys/fs/cgroup"):
        for d in dirs:
            if "libpod" in d or (d == "conmon" and "libpod" in top):
                found.add(os.path.join(top, d))
        if top.count("/") >= 6:
            dirs[:] = []
    return found


def _processes_mentioning(text):
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            try:
                with open("/proc/%s/cmdline" % name, "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmd:
                found.append("%s %s" % (name, cmd))
    return found


def _runtime_states(base):
    """(id, state root) of what a runtime still keeps of containers whose bundle is in base."""
    found = []
    for root in ("/run/minicontainer", "/run/runc", "/run/crun"):
        try:
            names = os.listdir(root)
        except OSError:
            continue
        for name in names:
            try:
                with open(os.path.join(root, name, "state.json"), errors="replace") as f:
                    if base in f.read():
                        found.append((name, root))
            except OSError:
                pass
    return found


class Podman:
    """podman with the private configuration; `p(*args)` returns a CompletedProcess."""

    def __init__(self, base, manager="cgroupfs"):
        self.base = base
        self.conf = os.path.join(base, "containers-%s.conf" % manager)
        self.storage = os.path.join(base, "storage.conf")
        with open(self.conf, "w") as f:
            f.write(CONTAINERS_CONF.format(base=base, conf=self.conf, storage=self.storage,
                                           ulimits=_ulimits(), manager=manager))
        with open(self.storage, "w") as f:
            f.write(STORAGE_CONF.format(base=base))
        self.env = dict(os.environ, CONTAINERS_CONF=self.conf,
                        CONTAINERS_STORAGE_CONF=self.storage)
        self.n = 0

    def argv(self, *args):
        return ["podman", "--runtime", RUNTIME_UNDER_TEST] + [str(a) for a in args]

    def __call__(self, *args, input=None, timeout=60, check=False):
        return subprocess.run(self.argv(*args), input=input, capture_output=True, text=True,
                              timeout=timeout, check=check, env=self.env, cwd=self.base,
                              stdin=None if input is not None else subprocess.DEVNULL)

    def tty(self, *args, timeout=60):
        """Run podman with a pty as stdin, stdout and stderr: (returncode, output)."""
        master, slave = pty.openpty()
        try:
            proc = subprocess.Popen(self.argv(*args), stdin=slave, stdout=slave, stderr=slave,
                                    env=self.env, cwd=self.base, start_new_session=True)
        finally:
            os.close(slave)
        out = b""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: every slave end is closed
                    break
                if not chunk:
                    break
                out += chunk
            rc = proc.wait(timeout=max(1, deadline - time.monotonic()))
        finally:
            os.close(master)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        return rc, out.decode(errors="replace")

    def name(self):
        self.n += 1
        return "mcpm%d-%d" % (os.getpid(), self.n)


@pytest.fixture(scope="module")
def podman(busybox_rootfs):
    base = tempfile.mkdtemp(prefix="mcpm-")
    cgroups_before = _libpod_cgroups()
    p = Podman(base)
    try:
        tarball = os.path.join(base, "rootfs.tar")
        subprocess.run(["tar", "-C", busybox_rootfs, "-cf", tarball, "."], check=True)
        # a file under /var/tmp, which --read-only covers with a tmpfs holding a copy of it
        extra = os.path.join(base, "extra")
        os.makedirs(os.path.join(extra, "var/tmp"))
        with open(os.path.join(extra, "var/tmp/kept"), "w") as f:
            f.write("kept\n")
        subprocess.run(["tar", "-C", extra, "-rf", tarball, "./var/tmp/kept"], check=True)
        r = p("import", tarball, IMAGE, timeout=120)
        assert r.returncode == 0, r.stderr
        yield p
    finally:
        problems = []
        left = p("ps", "-aq").stdout.split()
        if left:
            problems.append("containers left: %s" % " ".join(left))
        p("rm", "-af", "-t", "0", timeout=120)
        p("rmi", "-af", timeout=120)
        for line in _processes_mentioning(base):
            problems.append("process left: " + line)
        for mp in sorted(mountpoints_under(base), key=len, reverse=True):
            subprocess.run(["umount", "-l", mp], capture_output=True)
        for cid, root in _runtime_states(base):
            problems.append("runtime state left: %s/%s" % (root, cid))
            subprocess.run([RUNTIME_UNDER_TEST, "--root", root, "delete", "--force", cid],
                           capture_output=True)
        # podman makes libpod_parent and libpod_parent/conmon and leaves them: not a leak.
        for d in sorted(_libpod_cgroups() - cgroups_before, key=len, reverse=True):
            if "libpod-" in d:
                problems.append("cgroup left: %s" % d)
            try:
                os.rmdir(d)
            except OSError as e:
                problems.append("cannot remove cgroup %s: %s" % (d, e.strerror))
        shutil.rmtree(base, ignore_errors=True)
        if problems:
            pytest.fail("podman tests left things behind:\n  " + "\n  ".join(problems))


@pytest.fixture
def names(podman):
    """Container names for one test; the containers go when it ends, pass or fail."""
    made = []

    def new():
        made.append(podman.name())
        return made[-1]
    yield new
    for n in made:
        podman("rm", "-f", "-t", "0", "--ignore", n)
    left = [n for n in made if podman("container", "exists", n).returncode == 0]
    assert not left, "containers not removed: %s" % left


# A container init that says it started, reports USR1 and TERM, and otherwise waits.
LOOP = ('trap "echo got-usr1" USR1; trap "echo got-term; exit 7" TERM; echo started; '
        'while true; do sleep 0.1; done')


@pytest.fixture
def running(podman, names):
    """A detached container running LOOP; its name."""
    n = names()
    r = podman("run", "-d", "--name", n, IMAGE, "sh", "-c", LOOP)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: "started" in podman("logs", n).stdout, what="container output", interval=0.1)
    return n


def status(podman, n):
    return podman("inspect", "-f", "{{.State.Status}}", n).stdout.strip()


# ---- podman run ----

def test_run_rm_output(podman):
    r = podman("run", "--rm", IMAGE, "echo", "hello", "world")
    assert (r.returncode, r.stdout) == (0, "hello world\n"), r.stderr
    assert podman("ps", "-aq").stdout == ""


@pytest.mark.parametrize("code", [0, 1, 3, 42, 255])
def test_exit_codes(podman, code):
    r = podman("run", "--rm", IMAGE, "sh", "-c", "exit %d" % code)
    assert r.returncode == code, r.stderr


@pytest.mark.parametrize("program, code", [("/no/such/program", 127), ("nosuch", 127),
                                           ("/etc/passwd", 126), ("/etc", 126)])
def test_cannot_run(podman, program, code):
    r = podman("run", "--rm", IMAGE, program)
    assert r.returncode == code, (r.stdout, r.stderr)
    assert program in r.stderr


def test_stdin(podman):
    r = podman("run", "--rm", "-i", IMAGE, "sh", "-c", "read a; read b; echo $b $a; cat",
               input="one\ntwo\nrest\n")
    assert (r.returncode, r.stdout) == (0, "two one\nrest\n"), r.stderr


def test_tty(podman):
    rc, out = podman.tty("run", "--rm", "-t", IMAGE, "sh", "-c", "tty; exit 4")
    assert rc == 4, out
    assert re.match(r"/dev/pts/\d+\r\n$", out), out


def test_env_workdir_user_hostname(podman):
    r = podman("run", "--rm", "-e", "FOO=bar baz", "-w", "/var/tmp", "-u", "1000",
               "--hostname", "boxy", IMAGE,
               "sh", "-c", 'echo "$FOO"; pwd; id -u; id -g; hostname; cat /etc/hostname')
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["bar baz", "/var/tmp", "1000", "1000", "boxy", "boxy"]


# ---- resources ----

@pytest.mark.skipif(not os.path.isdir("/run/systemd/system"), reason="systemd is not the init")
def test_systemd_cgroup_manager(podman, cgroups):
    """podman's default where systemd is the init (most hosts): --systemd-cgroup and a
    slice:prefix:name cgroupsPath. The container's cgroup is machine.slice/libpod-ID.scope
    (made through cgroupfs: systemd is not asked), its limits are there, exec joins it."""
    p = Podman(podman.base, "systemd")  # the same storage and image
    n = podman.name()
    try:
        r = p("run", "--rm", "-m", "32m", "--pids-limit", "50", IMAGE, "sh", "-c",
              "cat /proc/self/cgroup %s %s" % (cgroups.inside("memory", "memory.max"),
                                               cgroups.inside("pids", "pids.max")))
        assert (r.returncode, r.stdout.split()[1:]) == (0, [str(32 << 20), "50"]), r.stderr
        assert p("run", "-d", "--name", n, IMAGE, "sleep", "100").returncode == 0
        pid = int(p("inspect", "-f", "{{.State.Pid}}", n).stdout)
        with open("/proc/%d/cgroup" % pid) as f:
            where = f.read().strip().split(":", 2)[2]
        assert re.fullmatch(r"/machine\.slice/libpod-[0-9a-f]{64}\.scope", where), where
        r = p("exec", n, "cat", "/proc/self/cgroup")
        assert (r.returncode, r.stdout) == (0, "0::/\n"), r.stderr  # its cgroup namespace
    finally:
        p("rm", "-f", "-t", "0", "--ignore", n)
    assert p("container", "exists", n).returncode != 0


def test_memory_limit_visible(podman, cgroups):
    cgroups.need("memory")
    r = podman("run", "--rm", "-m", "32m", IMAGE, "cat", cgroups.inside(
        "memory", "memory.max" if cgroups.unified else "memory.limit_in_bytes"))
    assert (r.returncode, r.stdout) == (0, "%d\n" % (32 << 20)), r.stderr


def test_memory_limit_enforced(podman):
    # dd's 64 MiB buffer, filled from /dev/zero, cannot fit: the kernel kills it.
    r = podman("run", "--rm", "-m", "32m", IMAGE,
               "dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1")
    assert r.returncode == 137, (r.stdout, r.stderr)


def test_pids_limit(podman, cgroups):
    cgroups.need("pids")
    script = ("cat " + cgroups.inside("pids", "pids.max") + "; i=0; "
              "while [ $i -lt 20 ]; do sleep 30 & i=$((i+1)); done; echo spawned")
    r = podman("run", "--rm", "--pids-limit", "8", IMAGE, "sh", "-c", script)
    assert r.stdout.startswith("8\n"), (r.stdout, r.stderr)
    assert "can't fork" in r.stderr or "Resource temporarily unavailable" in r.stderr, r.stderr


# ---- a detached container: exec, ps, logs, top, stats, pause, kill, stop, rm ----

def test_run_detached_stop_rm(podman, names):
    n = names()
    r = podman("run", "-d", "--name", n, IMAGE, "sh", "-c", LOOP)
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    assert re.match(r"[0-9a-f]{64}$", cid), r.stdout
    wait_for(lambda: "started" in podman("logs", n).stdout, what="container output", interval=0.1)
    assert status(podman, n) == "running"
    r = podman("stop", "-t", "5", n)
    assert (r.returncode, r.stdout.strip()) == (0, n), r.stderr
    assert status(podman, n) == "exited"
    assert podman("inspect", "-f", "{{.State.ExitCode}}", n).stdout.strip() == "7"
    assert "got-term" in podman("logs", n).stdout
    r = podman("rm", n)
    assert r.returncode == 0, r.stderr
    assert podman("container", "exists", n).returncode == 1


def test_stop_kills_after_timeout(podman, names):
    n = names()
    r = podman("run", "-d", "--name", n, IMAGE, "sleep", "1000")
    assert r.returncode == 0, r.stderr
    start = time.monotonic()
    r = podman("stop", "-t", "1", n)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - start < 10
    assert podman("inspect", "-f", "{{.State.ExitCode}}", n).stdout.strip() == "137"


def test_exec(podman, running):
    cid = podman("inspect", "-f", "{{.Id}}", running).stdout.strip()
    r = podman("exec", running, "sh", "-c", "echo in $(hostname) as $(id -u)")
    assert (r.returncode, r.stdout) == (0, "in %s as 0\n" % cid[:12]), r.stderr
    r = podman("exec", running, "sh", "-c", "exit 5")
    assert r.returncode == 5, r.stderr
    r = podman("exec", "-i", "-e", "X=1", "-w", "/tmp", "-u", "1000", running,
               "sh", "-c", 'echo $X $(pwd) $(id -u); cat', input="from stdin\n")
    assert (r.returncode, r.stdout) == (0, "1 /tmp 1000\nfrom stdin\n"), r.stderr
    r = podman("exec", running, "/no/such/program")
    assert r.returncode == 127, (r.stdout, r.stderr)
    r = podman("exec", running, "/etc")
    assert r.returncode == 126, (r.stdout, r.stderr)
    r = podman("exec", "-w", "/nonexistent", running, "pwd")
    assert r.returncode == 127 and "/nonexistent" in r.stderr, (r.stdout, r.stderr)


def test_exec_tty(podman, running):
    rc, out = podman.tty("exec", "-t", running, "sh", "-c", "tty; exit 3")
    assert rc == 3, out
    assert re.match(r"/dev/pts/\d+\r\n$", out), out


def test_ps(podman, running):
    r = podman("ps", "--format", "{{.Names}} {{.Status}} {{.Command}}")
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith(running + " ")]
    assert len(rows) == 1 and " Up " in rows[0], r.stdout


def test_logs(podman, names):
    n = names()
    r = podman("run", "--name", n, IMAGE, "sh", "-c", "echo out; echo err >&2; echo more")
    assert (r.returncode, r.stdout) == (0, "out\nmore\n"), r.stderr
    r = podman("logs", n)
    assert r.stdout.split() == ["out", "more"] and r.stderr.split() == ["err"], r


def test_top(podman, running):
    r = podman("top", running)
    assert r.returncode == 0, r.stderr
    header, *rows = r.stdout.splitlines()
    assert header.split()[:2] == ["USER", "PID"], r.stdout
    assert any("sh -c trap" in row for row in rows), r.stdout
    assert any(row.split()[1] == "1" for row in rows), r.stdout


def test_stats(podman, running):
    seen = []

    def stats():  # the loop's sleep is there most of the time: the shell and it, 2 pids
        r = podman("stats", "--no-stream", "--format", "{{.Name}}|{{.MemUsage}}|{{.PIDs}}",
                   running)
        assert r.returncode == 0, r.stderr
        seen[:] = r.stdout.strip().split("|")
        return int(seen[2]) >= 2
    wait_for(stats, what="stats to count the shell and its sleep", interval=0.1)
    name, mem, pids = seen
    assert name == running
    assert re.match(r"[\d.]+[kMG]?B / [\d.]+[kMGT]?B$", mem), mem
    assert float(re.match(r"[\d.]+", mem).group()) > 0


def test_pause_unpause(podman, running, cgroups):
    r = podman("pause", running)
    assert r.returncode == 0, r.stderr
    assert status(podman, running) == "paused"
    assert cgroups.frozen("/libpod_parent/libpod-" +
                          podman("inspect", "-f", "{{.Id}}", running).stdout.strip())
    r = podman("unpause", running)
    assert r.returncode == 0, r.stderr
    assert status(podman, running) == "running"
    r = podman("exec", running, "echo", "thawed")
    assert (r.returncode, r.stdout) == (0, "thawed\n"), r.stderr


def test_kill_usr1(podman, running):
    r = podman("kill", "-s", "USR1", running)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: "got-usr1" in podman("logs", running).stdout, what="the trap's output",
             interval=0.1)
    assert status(podman, running) == "running"
    r = podman("kill", running)  # SIGKILL
    assert r.returncode == 0, r.stderr
    wait_for(lambda: status(podman, running) == "exited", what="the container to exit",
             interval=0.1)
    assert podman("inspect", "-f", "{{.State.ExitCode}}", running).stdout.strip() == "137"


# ---- filesystem, capabilities, network ----

def test_read_only(podman):
    # /tmp, /var/tmp and /run are tmpfs then, /var/tmp with a copy of what it covers
    r = podman("run", "--rm", "--read-only", IMAGE, "sh", "-c",
               "touch /tmp/ok /run/ok /var/tmp/ok && cat /var/tmp/kept; touch /x")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stdout == "kept\n"
    assert "Read-only file system" in r.stderr, r.stderr


def test_volume(podman, tmp_path):
    host = tmp_path / "vol"
    host.mkdir()
    (host / "in").write_text("from host\n")
    r = podman("run", "--rm", "-v", "%s:/data" % host, IMAGE,
               "sh", "-c", "cat /data/in; echo from container > /data/out")
    assert (r.returncode, r.stdout) == (0, "from host\n"), r.stderr
    assert (host / "out").read_text() == "from container\n"
    r = podman("run", "--rm", "-v", "%s:/data:ro" % host, IMAGE, "touch", "/data/x")
    assert r.returncode == 1 and not (host / "x").exists(), r.stderr


def test_cap_drop_all(podman):
    r = podman("run", "--rm", IMAGE, "grep", "CapEff", "/proc/self/status")
    assert r.returncode == 0 and int(r.stdout.split()[1], 16) != 0, (r.stdout, r.stderr)
    r = podman("run", "--rm", "--cap-drop", "ALL", IMAGE, "grep", "^Cap", "/proc/self/status")
    assert r.returncode == 0, r.stderr
    caps = dict(line.split(":") for line in r.stdout.splitlines())
    assert int(caps["CapEff"], 16) == 0 and int(caps["CapPrm"], 16) == 0, r.stdout
    r = podman("run", "--rm", "--cap-drop", "ALL", IMAGE, "sh", "-c", "hostname x")
    assert r.returncode != 0


def test_network_none(podman):
    r = podman("run", "--rm", "--network", "none", IMAGE, "ls", "/sys/class/net")
    assert (r.returncode, r.stdout.split()) == (0, ["lo"]), r.stderr


def test_network_host(podman):
    before = set(os.listdir("/sys/class/net"))
    r = podman("run", "--rm", "--network", "host", IMAGE, "sh", "-c",
               "readlink /proc/self/ns/net; ls /sys/class/net")
    after = set(os.listdir("/sys/class/net"))  # other tests may add or remove interfaces
    assert r.returncode == 0, r.stderr
    ns, listing = r.stdout.split("\n", 1)
    # the host's namespace itself (which may have no interface but lo), and its interfaces
    assert ns == os.readlink("/proc/self/ns/net")
    seen = set(listing.split())
    assert before & after <= seen <= before | after, (seen, before, after)
