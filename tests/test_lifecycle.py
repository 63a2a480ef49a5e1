"""create / start / state / ps / stats / pause / resume / kill / delete, through the command
line (runc's commands) and through the Python API, on real containers."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import minicontainer as mcmod
from conftest import RUNTIME, mc, mc_bg, monitor_pid, new_id, parent_pid, wait_for

pytestmark = [pytest.mark.needs_root, pytest.mark.usefixtures("no_leaks")]

# A counter the host can watch through /proc/PID/root; TERM ends it with status 0.
COUNTER = ('trap "exit 0" TERM; i=0; '
           'while :; do i=$((i+1)); echo $i > /dev/shm/n; usleep 20000; done')




def counter(pid):
    try:
        with open("/proc/%d/root/dev/shm/n" % pid) as f:
            return int(f.read() or 0)
    except (OSError, ValueError):
        return 0


@pytest.fixture
def bundle(tmp_path, busybox_rootfs):
    """bundle(args) -> a bundle directory whose config.json runs args in the busybox rootfs."""
    n = [0]

    def make(args, edit=None):
        n[0] += 1
        d = tmp_path / ("bundle%d" % n[0])
        d.mkdir()
        config = mcmod.default_spec(rootfs=busybox_rootfs, args=args)
        if edit:
            edit(config)
        (d / "config.json").write_text(json.dumps(config))
        return str(d)
    return make


class Cli:
    def __init__(self, state_root, tmp_path):
        self.root = state_root
        self.tmp = tmp_path
        self.n = 0

    def __call__(self, *args):
        """A command that returns at once; fails the test unless it succeeds."""
        r = mc(*args, state_root=self.root)
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        return r.stdout

    def fails(self, *args):
        r = mc(*args, state_root=self.root)
        assert r.returncode != 0, (args, r.stdout)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        return r.stderr

    def bg(self, *args):
        """A command that leaves a container behind (create, run -d): stdio to files."""
        self.n += 1
        rc, out, err = mc_bg(*args, state_root=self.root, out=str(self.tmp / ("bg%d" % self.n)))
        assert rc == 0, (args, out, err)
        return out

    def state(self, cid):
        return json.loads(self(("state"), cid))

    def status(self, cid):
        return self.state(cid)["status"]


@pytest.fixture
def cli(state_root, tmp_path):
    return Cli(state_root, tmp_path)


def test_full_lifecycle(cli, bundle, tmp_path, state_root, cgroups):
    b = bundle(["sh", "-c", COUNTER])
    cid = new_id()
    pid_file = tmp_path / "pid"
    cli.bg("create", "-b", b, "--pid-file", str(pid_file), cid)
    st = cli.state(cid)
    assert st["status"] == "created" and st["id"] == cid and st["bundle"] == b
    pid = st["pid"]
    assert pid > 0 and int(pid_file.read_text()) == pid
    assert os.path.isdir(os.path.join(state_root, cid))
    # created: init waits in the runtime, the program has not run
    assert b"minicontainer" in open("/proc/%d/cmdline" % pid, "rb").read()
    assert counter(pid) == 0
    assert cli.fails("pause", cid).startswith("minicontainer: cannot pause a container that is "
                                              "created")

    cli("start", cid)
    assert cli.status(cid) == "running"
    wait_for(lambda: counter(pid) > 0, what="the counter")
    assert open("/proc/%d/cmdline" % pid, "rb").read().startswith(b"sh\0-c\0")
    assert cli.fails("start", cid).endswith("cannot start a container that is running\n")

    table = cli("ps", cid).splitlines()
    assert table[0].split() == ["PID", "CMD"]
    assert any(line.split()[0] == str(pid) and "sh -c" in line for line in table[1:])

    stats = json.loads(cli("stats", cid))
    assert stats["memory"]["usage"] > 0
    assert stats["pids"]["current"] >= 1
    assert stats["cpu"]["usage_ns"] > 0
    assert set(stats) >= {"cpu", "memory", "pids", "blkio"}

    listed = json.loads(cli("list", "-f", "json"))
    assert [(s["id"], s["status"], s["pid"]) for s in listed] == [(cid, "running", pid)]
    assert cli("list", "-q").split() == [cid]
    table = cli("list").splitlines()
    assert table[0].split()[:3] == ["ID", "PID", "STATUS"]
    assert table[1].split()[:3] == [cid, str(pid), "running"]

    cli("pause", cid)
    assert cli.status(cid) == "paused"
    assert cgroups.frozen("/minicontainer/" + cid)
    frozen_at = counter(pid)
    time.sleep(0.3)  # not a handshake: the time during which nothing must happen
    assert counter(pid) == frozen_at
    assert cli.fails("pause", cid).endswith("cannot pause a container that is paused\n")
    # ps (while frozen, so that the loop's usleeps hold still): host pids, the cgroup's members
    pids = json.loads(cli("ps", "-f", "json", cid))
    assert pid in pids
    assert sorted(pids) == cgroups.procs("/minicontainer/" + cid)
    cli("resume", cid)
    assert cli.status(cid) == "running"
    wait_for(lambda: counter(pid) > frozen_at, what="the counter to go on")
    assert cli.fails("resume", cid).endswith("cannot resume a container that is running\n")

    cli("kill", cid)  # SIGTERM, which the script traps
    wait_for(lambda: cli.status(cid) == "stopped", what="stopped")
    assert cli.state(cid)["pid"] == 0
    assert cli.fails("kill", cid, "KILL") == "minicontainer: %s: container not running\n" % cid
    cli("delete", cid)
    assert cli.fails("state", cid) == "minicontainer: container %s does not exist\n" % cid
    assert not os.path.exists(os.path.join(state_root, cid))
    assert not cgroups.exists("/minicontainer/" + cid)
    assert cli("list", "-q").strip() == ""


def test_run_detached_then_kill_and_delete(cli, busybox_rootfs, tmp_path, state_root):
    cid = new_id()
    out = cli.bg("run", "-d", "--name", cid, "--pid-file", str(tmp_path / "pid"), "--rootfs",
                 busybox_rootfs, "--", "sh", "-c", COUNTER)
    assert out == cid + "\n"
    st = cli.state(cid)
    assert st["status"] == "running" and int((tmp_path / "pid").read_text()) == st["pid"]
    wait_for(lambda: counter(st["pid"]) > 0, what="the counter")
    cli("kill", cid, "KILL")
    wait_for(lambda: cli.status(cid) == "stopped", what="stopped")
    cli("delete", cid)
    assert cli("list", "-q").strip() == ""


def test_run_detached_rm_removes_the_container_when_it_exits(cli, busybox_rootfs, state_root,
                                                             cgroups):
    cid = new_id()
    assert cli.bg("run", "-d", "--rm", "--name", cid, "--rootfs", busybox_rootfs, "--",
                  "sleep", "1000") == cid + "\n"
    st = cli.state(cid)
    assert st["status"] == "running"
    # What removes it later is the state root's monitor: a process of its own session, the
    # parent of the container's init, holding none of the caller's stdio.
    monitors = [monitor_pid(state_root)]
    fds = {int(fd): os.readlink("/proc/%d/fd/%s" % (monitors[0], fd))
           for fd in os.listdir("/proc/%d/fd" % monitors[0])}
    assert [fds[fd] for fd in (0, 1, 2)] == ["/dev/null"] * 3
    assert os.getsid(monitors[0]) != os.getsid(0)
    assert parent_pid(st["pid"]) == monitors[0]
    cg = "/minicontainer/" + cid
    assert cgroups.exists(cg)

    cli("kill", cid, "KILL")
    wait_for(lambda: not os.path.exists(os.path.join(state_root, cid)), what="removal")
    wait_for(lambda: not os.path.exists("/proc/%d" % monitors[0]), what="the monitor to end")
    assert not cgroups.exists(cg)
    assert cli.fails("state", cid) == "minicontainer: container %s does not exist\n" % cid


def test_run_detached_rm_leaves_a_newer_container_of_the_same_id(cli, busybox_rootfs,
                                                                 state_root, bundle):
    cid = new_id()
    cli.bg("run", "-d", "--rm", "--name", cid, "--rootfs", busybox_rootfs, "--",
           "sleep", "1000")
    first = cli.state(cid)["pid"]
    monitor = monitor_pid(state_root)
    # Deleted by hand and made again (by an engine's create: the monitor cannot answer a
    # run -d now) before the monitor saw its init exit.
    os.kill(monitor, signal.SIGSTOP)
    try:
        cli("delete", "-f", cid)
        cli.bg("create", "--bundle", bundle(["sleep", "1000"]), cid)
        cli("start", cid)
    finally:
        os.kill(monitor, signal.SIGCONT)
    wait_for(lambda: not os.path.exists("/proc/%d" % monitor), what="the monitor to end")
    assert cli.status(cid) == "running" and cli.state(cid)["pid"] != first
    cli("delete", "-f", cid)


def test_run_detached_without_a_name_prints_its_id(cli, busybox_rootfs):
    cid = cli.bg("run", "-d", "--cgroup-parent", new_id("parent"), "--rootfs", busybox_rootfs,
                 "--", "sleep", "1000").strip()
    assert cli("list", "-q").split() == [cid]
    cli("delete", "-f", cid)


def test_two_containers_at_once(cli, bundle):
    b = bundle(["sh", "-c", COUNTER])
    ids = [new_id(), new_id()]
    for cid in ids:
        cli.bg("create", "-b", b, cid)
    for cid in ids:
        cli("start", cid)
    pids = [cli.state(cid)["pid"] for cid in ids]
    assert pids[0] != pids[1]
    for pid in pids:
        wait_for(lambda: counter(pid) > 0, what="the counters")
    ns = [os.readlink("/proc/%d/ns/pid" % pid) for pid in pids]
    assert ns[0] != ns[1] and os.readlink("/proc/self/ns/pid") not in ns
    listed = {s["id"]: s["status"] for s in json.loads(cli("list", "-f", "json"))}
    assert listed == dict.fromkeys(ids, "running")
    ps = [set(json.loads(cli("ps", "-f", "json", cid))) for cid in ids]
    assert not ps[0] & ps[1]
    cli("pause", ids[0])  # one paused, the other not
    assert [cli.status(cid) for cid in ids] == ["paused", "running"]
    for cid in ids:
        cli("delete", "-f", cid)
    assert cli("list", "-q").strip() == ""


def test_id_already_in_use(cli, bundle, busybox_rootfs):
    b = bundle(["sleep", "1000"])
    cid = new_id()
    cli.bg("create", "-b", b, cid)
    pid = cli.state(cid)["pid"]
    assert cli.fails("create", "-b", b, cid) == \
        "minicontainer: container id %s is already in use\n" % cid
    r = mc("run", "--rm", "--name", cid, "--rootfs", busybox_rootfs, "--", "true",
           state_root=cli.root)
    assert r.returncode == 1 and "already in use" in r.stderr
    # the first one is untouched
    assert cli.state(cid)["pid"] == pid and cli.status(cid) == "created"
    cli("delete", "-f", cid)


def test_kill_before_start(cli, bundle):
    b = bundle(["sh", "-c", "echo should not run > /dev/shm/ran"])
    cid = new_id()
    cli.bg("create", "-b", b, cid)
    pid = cli.state(cid)["pid"]
    cli("kill", cid, "KILL")
    wait_for(lambda: cli.status(cid) == "stopped", what="stopped")
    assert cli.fails("start", cid).endswith("cannot start a container that is stopped\n")
    cli("delete", cid)
    assert not os.path.exists("/proc/%d" % pid) or counter(pid) == 0


def test_delete_a_running_container_needs_force(cli, bundle, cgroups):
    cid = new_id()
    cli.bg("create", "-b", bundle(["sleep", "1000"]), cid)
    cli("start", cid)
    pid = cli.state(cid)["pid"]
    assert "use --force" in cli.fails("delete", cid)
    assert cli.status(cid) == "running"
    cli("delete", "-f", cid)
    wait_for(lambda: mcmod.process_state(pid) in (None, "Z"), what="init to die")
    assert not cgroups.exists("/minicontainer/" + cid)


def test_delete_force_of_a_paused_container(cli, bundle):
    cid = new_id()
    cli.bg("create", "-b", bundle(["sh", "-c", COUNTER]), cid)
    cli("start", cid)
    cli("pause", cid)
    cli("delete", "-f", cid)
    assert cli("list", "-q").strip() == ""


def test_kill_all(cli, bundle):
    # init ignores TERM (it is pid 1 without a handler); its children do not
    cid = new_id()
    cli.bg("create", "-b", bundle(["sh", "-c", "sleep 1000 & sleep 1000 & sleep 1000"]), cid)
    cli("start", cid)
    pid = cli.state(cid)["pid"]
    wait_for(lambda: len(json.loads(cli("ps", "-f", "json", cid))) == 3, what="the sleeps")
    cli("kill", "--all", cid, "KILL")
    wait_for(lambda: cli.status(cid) == "stopped", what="stopped")
    assert mcmod.process_state(pid) in (None, "Z")
    cli("delete", cid)


def test_kill_with_a_signal_number_and_name(cli, bundle):
    cid = new_id()
    cli.bg("create", "-b", bundle(["sh", "-c", 'trap "exit 0" USR1; ' + COUNTER]), cid)
    cli("start", cid)
    assert "unknown signal" in cli.fails("kill", cid, "SIGNOPE")
    cli("kill", cid, "SIGUSR1")
    wait_for(lambda: cli.status(cid) == "stopped", what="stopped")
    cli("delete", cid)


def test_delete_of_a_half_created_container(cli, state_root):
    # what a create that crashed before writing its state leaves
    for cid, state in ((new_id(), None), (new_id(), "{"), (new_id(), "")):
        d = os.path.join(state_root, cid)
        os.makedirs(d)
        if state is not None:
            with open(os.path.join(d, "state.json"), "w") as f:
                f.write(state)
        assert cli.status(cid) == "creating"
        assert cid in cli("list", "-q").split()
        cli("delete", cid)
        assert not os.path.exists(d)
    assert cli("list", "-q").strip() == ""


def test_commands_on_a_container_that_does_not_exist(cli):
    for args in (["start"], ["state"], ["kill"], ["pause"], ["resume"], ["ps"], ["stats"],
                 ["delete"]):
        err = cli.fails(*args, "nosuch")
        assert err == "minicontainer: container nosuch does not exist\n", (args, err)
    cli("delete", "-f", "nosuch")  # force: nothing to do is fine


def test_stats_and_ps_of_a_created_container(cli, bundle):
    cid = new_id()
    cli.bg("create", "-b", bundle(["true"]), cid)
    pid = cli.state(cid)["pid"]
    assert json.loads(cli("ps", "-f", "json", cid)) == [pid]
    assert json.loads(cli("stats", cid))["pids"]["current"] == 1
    cli("delete", cid)  # a created container is not running: no --force needed


# ---- the Python API ----

def test_api_lifecycle(busybox_rootfs, state_root, tmp_path):
    config = mcmod.default_spec(rootfs=busybox_rootfs, args=["sh", "-c", COUNTER])
    cid = new_id()
    c = mcmod.Container.create(cid, config, str(tmp_path), root=state_root, stdin_null=True)
    try:
        assert c.status() == "created"
        st = c.oci_state()
        assert st["pid"] == c.pid > 0 and st["status"] == "created" and st["id"] == cid
        c.start()
        assert c.exec_result() is None
        assert c.status() == "running"
        wait_for(lambda: counter(c.pid) > 0, what="the counter")
        assert c.pid in c.processes()
        stats = c.stats()
        assert stats["memory"]["usage"] > 0 and stats["pids"]["current"] >= 1
        c.pause()
        assert c.status() == "paused"
        assert mcmod.Container.load(cid, state_root).status() == "paused"
        c.resume()
        assert c.status() == "running"
        assert [x.id for x in mcmod.Container.list(state_root)] == [cid]
        with pytest.raises(mcmod.Error, match="use --force"):
            c.destroy(force=False)
        c.signal(signal.SIGTERM)
        _, status = os.waitpid(c.pid, 0)  # ours: the test process created it
        assert os.waitstatus_to_exitcode(status) == 0
        assert c.status() == "stopped"
        c.destroy(force=False)
    finally:
        if os.path.isdir(c.dir):
            c.destroy()
    with pytest.raises(mcmod.Error, match="does not exist"):
        mcmod.Container.load(cid, state_root)
    assert mcmod.Container.list(state_root) == []


def test_api_kill_and_destroy(busybox_rootfs, state_root, tmp_path):
    config = mcmod.default_spec(rootfs=busybox_rootfs, args=["sleep", "1000"])
    c = mcmod.Container.create(new_id(), config, str(tmp_path), root=state_root,
                               stdin_null=True)
    try:
        c.start()
        assert c.exec_result() is None
        c.signal(signal.SIGKILL)
        _, status = os.waitpid(c.pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    finally:
        c.destroy()


def test_api_destroy_reaps_a_running_container(busybox_rootfs, state_root, tmp_path):
    config = mcmod.default_spec(rootfs=busybox_rootfs, args=["sleep", "1000"])
    c = mcmod.Container.create(new_id(), config, str(tmp_path), root=state_root,
                               stdin_null=True)
    c.start()
    assert c.exec_result() is None
    pid = c.pid
    c.destroy()
    assert mcmod.process_state(pid) is None  # killed and reaped, not a zombie


def test_destroy_when_the_init_dies_between_the_check_and_the_kill(busybox_rootfs,
                                                                    state_root, tmp_path):
    # A concurrent `kill` may end the init after destroy saw it alive and before it sends
    # SIGKILL: destroy must still succeed. The interleaving is forced: alive() answers from
    # before the death, for its first two calls.
    config = mcmod.default_spec(rootfs=busybox_rootfs, args=["sleep", "1000"])
    c = mcmod.Container.create(new_id(), config, str(tmp_path), root=state_root,
                               stdin_null=True)
    c.start()
    assert c.exec_result() is None
    os.kill(c.pid, signal.SIGKILL)
    os.waitpid(c.pid, 0)  # dead and reaped: the pid names nothing now
    real, answers = mcmod.Container.alive, [True, True]  # destroy's look, then the kill's
    c.alive = lambda: answers.pop() if answers else real(c)
    c.destroy()
    assert not os.path.exists(c.dir) and answers == []


def test_api_console_self(busybox_rootfs, state_root, tmp_path):
    config = mcmod.default_spec(rootfs=busybox_rootfs, args=["sh", "-c", "tty; stty size"],
                                terminal=True)
    config["process"]["consoleSize"] = {"height": 21, "width": 77}
    c = mcmod.Container.create(new_id(), config, str(tmp_path), root=state_root,
                               console="self")
    master = c.console_master
    try:
        assert isinstance(master, int)
        c.start()
        assert c.exec_result() is None
        _, status = os.waitpid(c.pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        out = b""
        os.set_blocking(master, False)
        try:
            while True:
                data = os.read(master, 4096)
                if not data:
                    break
                out += data
        except OSError:
            pass
        assert out == b"/dev/pts/0\r\n21 77\r\n"
    finally:
        os.close(master)
        c.destroy()


def test_api_terminal_needs_a_console(busybox_rootfs, state_root, tmp_path):
    config = mcmod.default_spec(rootfs=busybox_rootfs, args=["true"], terminal=True)
    with pytest.raises(mcmod.Error, match="give a console"):
        mcmod.Container.create(new_id(), config, str(tmp_path), root=state_root)


def test_exec_as_a_non_root_user_gets_no_capabilities(cli, busybox_rootfs, state_root):
    # docker's exec -u: a non-root user of a docker-like container has the bounding set only.
    cid = new_id()
    cli.bg("run", "-d", "--name", cid, "--rootfs", busybox_rootfs, "--", "sleep", "1000")
    try:
        root, user = (cli("exec", *flags, cid, "grep", "-E", "^Cap(Eff|Amb)",
                          "/proc/self/status").split() for flags in ([], ["-u", "1000"]))
        assert root == ["CapEff:", "00000000a80425fb", "CapAmb:", "0000000000000000"]
        assert user == ["CapEff:", "0000000000000000", "CapAmb:", "0000000000000000"]
        ignored = int(cli("exec", cid, "grep", "^SigIgn", "/proc/self/status").split()[1], 16)
        assert ignored & ~(3 << 31) == 0  # but glibc's 32 and 33, which a caller may ignore
    finally:
        cli("delete", "-f", cid)


def test_trace_shows_where_a_start_goes(busybox_rootfs, state_root):
    # MINICONTAINER_TRACE=1: each step of the runtime and of the init, on one clock
    r = mc("run", "--rm", "--rootfs", busybox_rootfs, "--", "true", state_root=state_root,
           env=dict(os.environ, MINICONTAINER_TRACE="1"))
    assert r.returncode == 0, r.stderr
    steps = sorted((line.split()[2:] for line in r.stderr.splitlines()),
                   key=lambda step: float(step[0]))  # two processes write: by their clock
    names = [name for _, _, name in steps]
    for before, after in (("main", "state"), ("state", "cgroup"), ("fork", "unshare"),
                          ("unshare", "mounts"), ("mounts", "process"),
                          ("privileges", "ready"), ("ready", "start"), ("start", "execve")):
        assert names.index(before) < names.index(after), names
    assert len({pid for _, pid, _ in steps}) >= 2  # the runtime's and the init's


def test_run_detached_returns_at_once_and_logs_its_output(cli, busybox_rootfs, state_root):
    # As `CID=$(minicontainer run -d ...)`: the caller's stdout is a pipe that the container
    # must not hold (else the caller waits for the container's end); its output goes to a
    # log that `logs` prints.
    cid = new_id()
    r = subprocess.run([sys.executable, RUNTIME, "--root", state_root, "run", "-d", "--name",
                        cid, "--rootfs", busybox_rootfs, "--", "sh", "-c",
                        "echo out; echo err >&2; while [ ! -e /dev/shm/go ]; do usleep 20000; "
                        "done; echo late; "
                        "exec sleep 1000"], stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=60)
    try:
        assert (r.returncode, r.stdout, r.stderr) == (0, cid + "\n", "")
        assert cli.status(cid) == "running"  # the pipe closed while the container runs

        def logs(*flags):  # stdout's lines on stdout, stderr's on stderr, as docker's
            r = mc("logs", *flags, cid, state_root=state_root)
            return r.returncode, r.stdout, r.stderr
        wait_for(lambda: logs() == (0, "out\n", "err\n"), what="the output in the log")
        cli("exec", cid, "sh", "-c", "echo go > /dev/shm/go")
        wait_for(lambda: logs()[1].endswith("late\n"), what="the next line")
        cli("kill", cid, "KILL")
        wait_for(lambda: cli.status(cid) == "stopped")
        assert logs("-f") == (0, "out\nlate\n", "err\n")  # ends: the container stopped
    finally:
        cli("delete", "-f", cid)


def test_gc_keeps_what_the_user_kept_and_prune_removes_it(cli, busybox_rootfs, state_root):
    # A run without --rm keeps its stopped container (docker's semantics): gc, which removes
    # what crashes left, must leave it; prune removes stopped containers, asking first.
    kept = new_id()
    r = mc("run", "--name", kept, "--rootfs", busybox_rootfs, "--", "true",
           state_root=state_root)
    assert r.returncode == 0, r.stderr
    assert cli.status(kept) == "stopped"
    cli("gc")
    assert cli.status(kept) == "stopped"
    running = new_id()
    cli.bg("run", "-d", "--name", running, "--rootfs", busybox_rootfs, "--", "sleep", "1000")
    try:
        assert "give -f" in cli.fails("prune")  # no terminal to ask on
        assert cli.status(kept) == "stopped"
        assert cli("prune", "-f").split() == [kept]
        assert cli.fails("state", kept).endswith("does not exist\n")
        assert cli.status(running) == "running"
    finally:
        cli("delete", "-f", running)
