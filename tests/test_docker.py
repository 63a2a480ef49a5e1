"""Docker drives the runtime (issue 11): a private dockerd and containerd, with this checkout's
minicontainer.py added as the runtime `mc`, run docker's everyday flags; where runc, docker's
own runtime, can run the same container, both must give the same result.

The daemons run in namespaces of their own (pid, mount, network; tini as pid 1 reaps the
shims), with /run a tmpfs there and their roots in the test's temporary directory, so that
nothing of theirs (mounts, docker0, state) outlives the module."""
import json
import os
import shutil
import signal
import subprocess
import tarfile

import pytest

from conftest import RUNTIME, SESSION, host_block_device, wait_for

pytestmark = pytest.mark.needs_root

IMAGE = "mc-busybox:test"
CGROUP_PARENT = "/%s-docker" % SESSION


class Docker:
    def __init__(self, sock):
        self.env = dict(os.environ, DOCKER_HOST="unix://%s" % sock)

    def run_cli(self, *args, input=None, timeout=60):
        return subprocess.run(["docker"] + [str(a) for a in args], input=input, text=True,
                              capture_output=True, env=self.env, timeout=timeout)

    def __call__(self, *args, input=None):
        """A docker command that must succeed; its stdout."""
        r = self.run_cli(*args, input=input)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        return r.stdout

    def both(self, *args):
        """`docker run --rm ARGS` under runc and under minicontainer: (runc's, ours), each
        (exit status, stdout)."""
        got = []
        for runtime in ("runc", "mc"):
            r = self.run_cli("run", "--rm", "--runtime", runtime, *args)
            got.append((r.returncode, r.stdout))
        return got

    def same(self, *args):
        """Both runtimes exit 0 with the same output; returns it."""
        runc, ours = self.both(*args)
        assert ours == runc, (args, "minicontainer:", ours, "runc:", runc)
        assert ours[0] == 0, ours
        return ours[1]


def _daemon_children(pid):
    with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
        return [int(p) for p in f.read().split()]


@pytest.fixture(scope="module")
def docker(tmp_path_factory, busybox_rootfs):
    for tool in ("dockerd", "containerd", "docker", "tini", "unshare", "runc"):
        if not shutil.which(tool):
            pytest.skip("%s is not installed (make setup installs it)" % tool)
    d = tmp_path_factory.mktemp("docker")
    sock = d / "docker.sock"
    script = """
set -e
mount -t tmpfs tmpfs /run
ip link set lo up
containerd --root {d}/containerd --state {d}/containerd-state \\
    --address {d}/containerd.sock > {d}/containerd.log 2>&1 &
exec dockerd --data-root {d}/data --exec-root {d}/exec --pidfile {d}/dockerd.pid \\
    -H unix://{sock} --containerd {d}/containerd.sock --iptables=false --ip-masq=false \\
    --cgroup-parent {parent} --add-runtime mc={runtime} > {d}/dockerd.log 2>&1
""".format(d=d, sock=sock, parent=CGROUP_PARENT, runtime=RUNTIME)
    daemons = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount", "--net", "--propagation", "private",
         "--mount-proc", "tini", "-s", "--", "sh", "-c", script],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    dk = Docker(sock)
    try:
        wait_for(lambda: daemons.poll() is not None or dk.run_cli("version").returncode == 0,
                 timeout=60, what="dockerd to answer")
        assert daemons.poll() is None, (d / "dockerd.log").read_text()[-2000:]
        tarball = d / "busybox.tar"
        with tarfile.open(tarball, "w") as tar:
            tar.add(busybox_rootfs, arcname=".")
        dk("import", "--change", 'CMD ["sh"]', tarball, IMAGE)
        yield dk
    finally:
        left = dk.run_cli("ps", "-aq").stdout.split() if daemons.poll() is None else []
        if left:
            dk.run_cli("rm", "-f", *left)
        # pid 1 of the daemons' pid namespace: its end ends every process in there
        init = _daemon_children(daemons.pid) if daemons.poll() is None else []
        for pid in init:
            os.kill(pid, signal.SIGTERM)
        try:
            daemons.wait(timeout=20)
        except subprocess.TimeoutExpired:
            for pid in init:
                os.kill(pid, signal.SIGKILL)
            daemons.wait(timeout=20)
        for top in sorted((os.path.join(root, name) for root, dirs, _ in
                           os.walk("/sys/fs/cgroup") for name in dirs
                           if CGROUP_PARENT[1:] in os.path.join(root, name)),
                          key=len, reverse=True):
            os.rmdir(top)
        shutil.rmtree(d, ignore_errors=True)


def cgroup_files(*names):
    """A shell line printing the first of the files named that the container has under
    /sys/fs/cgroup (v1 names with their controller directory, or v2 names)."""
    return "; ".join("cat $(ls /sys/fs/cgroup/%s 2>/dev/null | head -1)" % " /sys/fs/cgroup/"
                     .join(alts) for alts in names)


# ---- identity: user, env, workdir, capabilities, rlimits ----

def test_default_container_matches_runc(docker):
    out = docker.same(IMAGE, "sh", "-c", "id; pwd; grep -E '^(Cap|NoNewPrivs|Seccomp:)' "
                      "/proc/self/status; cat /proc/1/cmdline; echo; ls /dev; "
                      "awk '$5 !~ \"^/sys/fs/cgroup/\" {print $5}' /proc/self/mountinfo | sort")
    # (the cgroup hierarchies differ, as the README says: runc mounts name=systemd, we the
    # cgroup2 mount of a hybrid host)
    assert out.startswith("uid=0(root) gid=0(root)")


def test_user_env_workdir(docker):
    out = docker.same("-u", "65534", "-e", "FOO=bar", "-w", "/tmp", IMAGE, "sh", "-c",
                      "id; echo $FOO; pwd; echo $HOME; grep -E '^Cap(Prm|Eff|Amb)' "
                      "/proc/self/status")
    lines = out.splitlines()
    assert lines[0].startswith("uid=65534(nobody)") and lines[1:3] == ["bar", "/tmp"]
    assert "CapEff:\t0000000000000000" in lines


def test_capabilities_dropped_and_added(docker):
    out = docker.same("--cap-drop", "ALL", "--cap-add", "NET_ADMIN", IMAGE,
                      "grep", "^Cap", "/proc/self/status")
    assert "CapEff:\t0000000000001000" in out


def test_ulimits(docker):
    out = docker.same("--ulimit", "core=-1", "--ulimit", "nofile=500:600", IMAGE,
                      "sh", "-c", "ulimit -c; ulimit -Sn; ulimit -Hn")
    assert out.split() == ["unlimited", "500", "600"]


# ---- resources ----

def test_memory_cpu_pids_limits(docker):
    out = docker.same("-m", "64m", "--cpus", "0.5", "--pids-limit", "50", IMAGE, "sh", "-c",
                      cgroup_files(("memory/memory.limit_in_bytes", "memory.max"),
                                   ("pids/pids.max", "pids.max"),
                                   ("cpu/cpu.cfs_quota_us", "cpu.max")))
    assert out.split()[:2] == ["67108864", "50"] and out.split()[2] == "50000"


def test_device_read_bps(docker):
    major, minor = host_block_device()
    with open("/sys/dev/block/%s:%s/uevent" % (major, minor)) as f:
        node = "/dev/" + dict(line.strip().split("=", 1) for line in f if "=" in line)["DEVNAME"]
    out = docker.same("--device-read-bps", "%s:1mb" % node, IMAGE, "sh", "-c",
                      cgroup_files(("blkio/blkio.throttle.read_bps_device", "io.max")))
    assert "1048576" in out


def test_update_a_running_container(docker):
    cid = docker("run", "-d", "--runtime", "mc", "-m", "64m", IMAGE, "sleep", "1000").strip()
    try:
        docker("update", "--memory", "128m", "--memory-swap", "256m", "--pids-limit", "30",
               cid)
        out = docker("exec", cid, "sh", "-c",
                     cgroup_files(("memory/memory.limit_in_bytes", "memory.max"),
                                  ("pids/pids.max", "pids.max")))
        assert out.split() == ["134217728", "30"]
    finally:
        docker("rm", "-f", cid)


# ---- lifecycle: exec, top, pause, kill, stop ----

def test_detached_exec_top_pause_kill_stop(docker):
    cid = docker("run", "-d", "--runtime", "mc", IMAGE, "sh", "-c",
                 "trap 'echo usr1' USR1; trap 'exit 7' TERM; while :; do sleep 0.1; done"
                 ).strip()
    try:
        assert docker("exec", cid, "sh", "-c", "echo $((1+2)); id -u") == "3\n0\n"
        assert docker("exec", "-u", "65534", cid, "id", "-u") == "65534\n"
        assert docker.run_cli("exec", cid, "sh", "-c", "exit 4").returncode == 4
        top = docker("top", cid)
        assert "while :" in top
        docker("pause", cid)
        assert json.loads(docker("inspect", cid))[0]["State"]["Status"] == "paused"
        docker("unpause", cid)
        docker("kill", "-s", "USR1", cid)
        wait_for(lambda: "usr1" in docker("logs", cid), what="the trap of USR1")
        docker("stop", "-t", "10", cid)
        state = json.loads(docker("inspect", cid))[0]["State"]
        assert (state["Status"], state["ExitCode"]) == ("exited", 7)
    finally:
        docker("rm", "-f", cid)


def test_stop_kills_a_pid_1_that_ignores_term(docker):
    cid = docker("run", "-d", "--runtime", "mc", IMAGE, "sh", "-c",
                 "trap '' TERM; while :; do sleep 0.1; done").strip()
    try:
        docker("stop", "-t", "1", cid)
        assert json.loads(docker("inspect", cid))[0]["State"]["ExitCode"] == 137
    finally:
        docker("rm", "-f", cid)


def test_exit_status_and_stdin(docker):
    runc, ours = docker.both(IMAGE, "sh", "-c", "exit 3")
    assert ours == runc == (3, "")
    r = docker.run_cli("run", "--rm", "-i", "--runtime", "mc", IMAGE, "tr", "a-z", "A-Z",
                       input="hello\n")
    assert (r.returncode, r.stdout) == (0, "HELLO\n")


def test_pid_host_and_init(docker):
    out = docker.same("--pid", "host", IMAGE, "sh", "-c", "test $(ls -d /proc/[0-9]* | wc -l) "
                      "-gt 3 && echo many")
    assert out == "many\n"
    cid = docker("run", "-d", "--runtime", "mc", "--pid", "host", IMAGE, "sh", "-c",
                 "sleep 1000 & sleep 1000 & wait").strip()
    try:
        pids = docker("top", cid, "-o", "pid").split()[1:]
        assert len(pids) == 3
        docker("stop", "-t", "1", cid)  # pid 1 ignores TERM: KILL, then kill --all the rest
        wait_for(lambda: not any(os.path.exists("/proc/%s" % p) for p in pids),
                 what="every process of the --pid host container to end")
    finally:
        docker("rm", "-f", cid)
    out = docker.same("--init", IMAGE, "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '")
    assert out.startswith("/sbin/docker-init -- sh")


# ---- filesystems ----

def test_read_only_and_volumes(docker, tmp_path):
    r = docker.run_cli("run", "--rm", "--runtime", "mc", "--read-only", IMAGE, "touch", "/x")
    assert r.returncode == 1 and "Read-only file system" in r.stderr
    vol = tmp_path / "vol"
    vol.mkdir()
    docker("run", "--rm", "--runtime", "mc", "-v", "%s:/data" % vol, IMAGE, "sh", "-c",
           "echo from-container > /data/f")
    assert (vol / "f").read_text() == "from-container\n"
    r = docker.run_cli("run", "--rm", "--runtime", "mc", "-v", "%s:/data:ro" % vol, IMAGE,
                       "sh", "-c", "echo x > /data/f")
    assert r.returncode != 0 and "Read-only file system" in r.stderr
    assert (vol / "f").read_text() == "from-container\n"
    out = docker.same("--tmpfs", "/scratch:size=1m,mode=700", IMAGE, "sh", "-c",
                      "stat -c %a /scratch; df -k /scratch | tail -1 | awk '{print $2}'")
    assert out.split() == ["700", "1024"]


# ---- networks ----

def test_networks_none_host_bridge(docker):
    out = docker.same("--network", "none", IMAGE, "sh", "-c", "ls /sys/class/net")
    assert out.split() == ["lo"]
    out = docker.same("--network", "host", IMAGE, "sh", "-c", "ls /sys/class/net")
    assert "docker0" in out.split()
    server = docker("run", "-d", "--runtime", "mc", IMAGE, "sh", "-c",
                    "echo pong > /tmp/p; httpd -f -p 8080 -h /tmp").strip()
    try:
        ip = json.loads(docker("inspect", server))[0]["NetworkSettings"]["IPAddress"]
        assert ip.startswith("172.")
        got = docker("run", "--rm", "--runtime", "mc", IMAGE, "sh", "-c",
                     "ip -4 -o addr show eth0 | awk '{print $4}' | cut -d. -f1; "
                     "for i in $(seq 50); do wget -qO- http://%s:8080/p && break; "
                     "sleep 0.1; done" % ip)
        assert got.split() == ["172", "pong"]
    finally:
        docker("rm", "-f", server)
