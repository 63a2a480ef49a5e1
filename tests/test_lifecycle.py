"""create / start / state / ps / stats / pause / resume / kill / delete, through the command
line (runc's commands) and through the Python API, on real containers."""
import json
import os
import signal
import subprocess
import time

import pytest

import minicontainer as mcmod
from conftest import (mc, mc_argv, mc_bg, monitor_pid, new_id, ok, one_line_error, parent_pid,
                      state, status, wait_for, wait_status)

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


def test_full_lifecycle(bundle, tmp_path, state_root, cgroups):
    b = bundle(["sh", "-c", COUNTER])
    cid = new_id()
    pid_file = tmp_path / "pid"
    ok(mc_bg("create", "-b", b, "--pid-file", str(pid_file), cid, state_root=state_root))
    st = state(cid, state_root)
    assert st["status"] == "created" and st["id"] == cid and st["bundle"] == b
    pid = st["pid"]
    assert pid > 0 and int(pid_file.read_text()) == pid
    assert os.path.isdir(os.path.join(state_root, cid))
    # created: init waits in the runtime, the program has not run
    assert b"minicontainer" in open("/proc/%d/cmdline" % pid, "rb").read()
    assert counter(pid) == 0
    assert one_line_error(mc("pause", cid, state_root=state_root)).startswith(
        "minicontainer: cannot pause a container that is "
        "created")

    ok(mc("start", cid, state_root=state_root))
    assert status(cid, state_root) == "running"
    wait_for(lambda: counter(pid) > 0, what="the counter")
    assert open("/proc/%d/cmdline" % pid, "rb").read().startswith(b"sh\0-c\0")
    assert one_line_error(mc("start", cid, state_root=state_root)).endswith(
        "cannot start a container that is running")

    table = ok(mc("ps", cid, state_root=state_root)).splitlines()
    assert table[0].split() == ["PID", "CMD"]
    assert any(line.split()[0] == str(pid) and "sh -c" in line for line in table[1:])

    stats = json.loads(ok(mc("stats", cid, state_root=state_root)))
    assert stats["memory"]["usage"] > 0
    assert stats["pids"]["current"] >= 1
    assert stats["cpu"]["usage_ns"] > 0
    assert set(stats) >= {"cpu", "memory", "pids", "blkio"}

    listed = json.loads(ok(mc("list", "-f", "json", state_root=state_root)))
    assert [(s["id"], s["status"], s["pid"]) for s in listed] == [(cid, "running", pid)]
    assert ok(mc("list", "-q", state_root=state_root)).split() == [cid]
    table = ok(mc("list", state_root=state_root)).splitlines()
    assert table[0].split()[:3] == ["ID", "PID", "STATUS"]
    assert table[1].split()[:3] == [cid, str(pid), "running"]

    ok(mc("pause", cid, state_root=state_root))
    assert status(cid, state_root) == "paused"
    assert cgroups.frozen("/minicontainer/" + cid)
    frozen_at = counter(pid)
    time.sleep(0.3)  # not a handshake: the time during which nothing must happen
    assert counter(pid) == frozen_at
    assert one_line_error(mc("pause", cid, state_root=state_root)).endswith(
        "cannot pause a container that is paused")
    # ps (while frozen, so that the loop's usleeps hold still): host pids, the cgroup's members
    pids = json.loads(ok(mc("ps", "-f", "json", cid, state_root=state_root)))
    assert pid in pids
    assert sorted(pids) == cgroups.procs("/minicontainer/" + cid)
    ok(mc("resume", cid, state_root=state_root))
    assert status(cid, state_root) == "running"
    wait_for(lambda: counter(pid) > frozen_at, what="the counter to go on")
    assert one_line_error(mc("resume", cid, state_root=state_root)).endswith(
        "cannot resume a container that is running")

    ok(mc("kill", cid, state_root=state_root))  # SIGTERM, which the script traps
    wait_status(cid, "stopped", state_root)
    assert state(cid, state_root)["pid"] == 0
    assert one_line_error(mc("kill", cid, "KILL", state_root=state_root)) == \
        "minicontainer: %s: container not running" % cid
    ok(mc("delete", cid, state_root=state_root))
    assert one_line_error(mc("state", cid, state_root=state_root)) == \
        "minicontainer: container %s does not exist" % cid
    assert not os.path.exists(os.path.join(state_root, cid))
    assert not cgroups.exists("/minicontainer/" + cid)
    assert ok(mc("list", "-q", state_root=state_root)).strip() == ""


def test_run_detached_then_kill_and_delete(busybox_rootfs, tmp_path, state_root):
    cid = new_id()
    out = ok(mc_bg("run", "-d", "--name", cid, "--pid-file", str(tmp_path / "pid"), "--rootfs",
                   busybox_rootfs, "--", "sh", "-c", COUNTER, state_root=state_root))
    assert out == cid + "\n"
    st = state(cid, state_root)
    assert st["status"] == "running" and int((tmp_path / "pid").read_text()) == st["pid"]
    wait_for(lambda: counter(st["pid"]) > 0, what="the counter")
    ok(mc("kill", cid, "KILL", state_root=state_root))
    wait_status(cid, "stopped", state_root)
    ok(mc("delete", cid, state_root=state_root))
    assert ok(mc("list", "-q", state_root=state_root)).strip() == ""


def test_run_detached_rm_removes_the_container_when_it_exits(busybox_rootfs, state_root,
                                                             cgroups):
    cid = new_id()
    assert ok(mc_bg("run", "-d", "--rm", "--name", cid, "--rootfs", busybox_rootfs, "--", "sleep",
                    "1000", state_root=state_root)) == cid + "\n"
    st = state(cid, state_root)
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

    ok(mc("kill", cid, "KILL", state_root=state_root))
    wait_for(lambda: not os.path.exists(os.path.join(state_root, cid)), what="removal")
    wait_for(lambda: not os.path.exists("/proc/%d" % monitors[0]), what="the monitor to end")
    assert not cgroups.exists(cg)
    assert one_line_error(mc("state", cid, state_root=state_root)) == \
        "minicontainer: container %s does not exist" % cid


def test_run_detached_rm_leaves_a_newer_container_of_the_same_id(busybox_rootfs,
                                                                 state_root, bundle):
    cid = new_id()
    ok(mc_bg("run", "-d", "--rm", "--name", cid, "--rootfs", busybox_rootfs, "--", "sleep", "1000",
             state_root=state_root))
    first = state(cid, state_root)["pid"]
    monitor = monitor_pid(state_root)
    # Deleted by hand and made again (by an engine's create: the monitor cannot answer a
    # run -d now) before the monitor saw its init exit.
    os.kill(monitor, signal.SIGSTOP)
    try:
        ok(mc("delete", "-f", cid, state_root=state_root))
        ok(mc_bg("create", "--bundle", bundle(["sleep", "1000"]), cid, state_root=state_root))
        ok(mc("start", cid, state_root=state_root))
    finally:
        os.kill(monitor, signal.SIGCONT)
    wait_for(lambda: not os.path.exists("/proc/%d" % monitor), what="the monitor to end")
    assert status(cid, state_root) == "running" and state(cid, state_root)["pid"] != first
    ok(mc("delete", "-f", cid, state_root=state_root))


def test_run_detached_without_a_name_prints_its_id(state_root, busybox_rootfs):
    cid = ok(mc_bg("run", "-d", "--cgroup-parent", new_id("parent"), "--rootfs", busybox_rootfs,
                   "--", "sleep", "1000", state_root=state_root)).strip()
    assert ok(mc("list", "-q", state_root=state_root)).split() == [cid]
    ok(mc("delete", "-f", cid, state_root=state_root))


def test_two_containers_at_once(state_root, bundle):
    b = bundle(["sh", "-c", COUNTER])
    ids = [new_id(), new_id()]
    for cid in ids:
        ok(mc_bg("create", "-b", b, cid, state_root=state_root))
    for cid in ids:
        ok(mc("start", cid, state_root=state_root))
    pids = [state(cid, state_root)["pid"] for cid in ids]
    assert pids[0] != pids[1]
    for pid in pids:
        wait_for(lambda: counter(pid) > 0, what="the counters")
    ns = [os.readlink("/proc/%d/ns/pid" % pid) for pid in pids]
    assert ns[0] != ns[1] and os.readlink("/proc/self/ns/pid") not in ns
    listed = {s["id"]: s["status"] for s in json.loads(ok(mc("list", "-f", "json",
                                                             state_root=state_root)))}
    assert listed == dict.fromkeys(ids, "running")
    ps = [set(json.loads(ok(mc("ps", "-f", "json", cid, state_root=state_root)))) for cid in ids]
    assert not ps[0] & ps[1]
    ok(mc("pause", ids[0], state_root=state_root))  # one paused, the other not
    assert [status(cid, state_root) for cid in ids] == ["paused", "running"]
    for cid in ids:
        ok(mc("delete", "-f", cid, state_root=state_root))
    assert ok(mc("list", "-q", state_root=state_root)).strip() == ""


def test_id_already_in_use(state_root, bundle, busybox_rootfs):
    b = bundle(["sleep", "1000"])
    cid = new_id()
    ok(mc_bg("create", "-b", b, cid, state_root=state_root))
    pid = state(cid, state_root)["pid"]
    assert one_line_error(mc("create", "-b", b, cid, state_root=state_root)) == \
        "minicontainer: container id %s is already in use" % cid
    r = mc("run", "--rm", "--name", cid, "--rootfs", busybox_rootfs, "--", "true",
           state_root=state_root)
    assert r.returncode == 125 and "already in use" in r.stderr  # docker's run: its own
    # the first one is untouched
    assert state(cid, state_root)["pid"] == pid and status(cid, state_root) == "created"
    ok(mc("delete", "-f", cid, state_root=state_root))


def test_kill_before_start(state_root, bundle):
    b = bundle(["sh", "-c", "echo should not run > /dev/shm/ran"])
    cid = new_id()
    ok(mc_bg("create", "-b", b, cid, state_root=state_root))
    pid = state(cid, state_root)["pid"]
    ok(mc("kill", cid, "KILL", state_root=state_root))
    wait_status(cid, "stopped", state_root)
    assert one_line_error(mc("start", cid, state_root=state_root)).endswith(
        "cannot start a container that is stopped")
    ok(mc("delete", cid, state_root=state_root))
    assert not os.path.exists("/proc/%d" % pid) or counter(pid) == 0


def test_delete_a_running_container_needs_force(state_root, bundle, cgroups):
    cid = new_id()
    ok(mc_bg("create", "-b", bundle(["sleep", "1000"]), cid, state_root=state_root))
    ok(mc("start", cid, state_root=state_root))
    pid = state(cid, state_root)["pid"]
    assert "use --force" in one_line_error(mc("delete", cid, state_root=state_root))
    assert status(cid, state_root) == "running"
    ok(mc("delete", "-f", cid, state_root=state_root))
    wait_for(lambda: mcmod.process_state(pid) in (None, "Z"), what="init to die")
    assert not cgroups.exists("/minicontainer/" + cid)


def test_delete_force_of_a_paused_container(state_root, bundle):
    cid = new_id()
    ok(mc_bg("create", "-b", bundle(["sh", "-c", COUNTER]), cid, state_root=state_root))
    ok(mc("start", cid, state_root=state_root))
    ok(mc("pause", cid, state_root=state_root))
    ok(mc("delete", "-f", cid, state_root=state_root))
    assert ok(mc("list", "-q", state_root=state_root)).strip() == ""


def test_kill_all(state_root, bundle):
    # init ignores TERM (it is pid 1 without a handler); its children do not
    cid = new_id()
    ok(mc_bg("create", "-b", bundle(["sh", "-c", "sleep 1000 & sleep 1000 & sleep 1000"]), cid,
             state_root=state_root))
    ok(mc("start", cid, state_root=state_root))
    pid = state(cid, state_root)["pid"]
    wait_for(lambda: len(json.loads(ok(mc("ps", "-f", "json", cid, state_root=state_root)))) == 3,
             what="the sleeps")
    ok(mc("kill", "--all", cid, "KILL", state_root=state_root))
    wait_status(cid, "stopped", state_root)
    assert mcmod.process_state(pid) in (None, "Z")
    ok(mc("delete", cid, state_root=state_root))


def test_kill_with_a_signal_number_and_name(state_root, bundle):
    cid = new_id()
    ok(mc_bg("create", "-b", bundle(["sh", "-c", 'trap "exit 0" USR1; ' + COUNTER]), cid,
             state_root=state_root))
    ok(mc("start", cid, state_root=state_root))
    assert "unknown signal" in one_line_error(mc("kill", cid, "SIGNOPE", state_root=state_root))
    ok(mc("kill", cid, "SIGUSR1", state_root=state_root))
    wait_status(cid, "stopped", state_root)
    ok(mc("delete", cid, state_root=state_root))


def test_commands_on_a_container_that_does_not_exist(state_root):
    for args in (["start"], ["state"], ["kill"], ["pause"], ["resume"], ["ps"], ["stats"],
                 ["delete"]):
        err = one_line_error(mc(*args, "nosuch", state_root=state_root))
        assert err == "minicontainer: container nosuch does not exist", (args, err)
    ok(mc("delete", "-f", "nosuch", state_root=state_root))  # force: nothing to do is fine


def test_stats_and_ps_of_a_created_container(state_root, bundle):
    cid = new_id()
    ok(mc_bg("create", "-b", bundle(["true"]), cid, state_root=state_root))
    pid = state(cid, state_root)["pid"]
    assert json.loads(ok(mc("ps", "-f", "json", cid, state_root=state_root))) == [pid]
    assert json.loads(ok(mc("stats", cid, state_root=state_root)))["pids"]["current"] == 1
    # a created container is not running: no --force needed
    ok(mc("delete", cid, state_root=state_root))


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


def test_exec_as_a_non_root_user_gets_no_capabilities(busybox_rootfs, state_root):
    # docker's exec -u: a non-root user of a docker-like container has the bounding set only.
    cid = new_id()
    ok(mc_bg("run", "-d", "--name", cid, "--rootfs", busybox_rootfs, "--", "sleep", "1000",
             state_root=state_root))
    try:
        root, user = (ok(mc("exec", *flags, cid, "grep", "-E", "^Cap(Eff|Amb)",
                            "/proc/self/status", state_root=state_root)).split()
                      for flags in ([], ["-u", "1000"]))
        assert root == ["CapEff:", "00000000a80425fb", "CapAmb:", "0000000000000000"]
        assert user == ["CapEff:", "0000000000000000", "CapAmb:", "0000000000000000"]
        ignored = int(ok(mc("exec", cid, "grep", "^SigIgn", "/proc/self/status",
                            state_root=state_root)).split()[1], 16)
        assert ignored & ~(3 << 31) == 0  # but glibc's 32 and 33, which a caller may ignore
    finally:
        ok(mc("delete", "-f", cid, state_root=state_root))


def test_trace_shows_where_a_start_goes(busybox_rootfs, state_root):
    # MINICONTAINER_TRACE=1: each step of the runtime and of the init, on one clock
    r = mc("run", "--rm", "--rootfs", busybox_rootfs, "--", "true", state_root=state_root,
           env=dict(os.environ, MINICONTAINER_TRACE="1"))
    assert r.returncode == 0, r.stderr
    steps = sorted((line.split()[2:] for line in r.stderr.splitlines()),
                   key=lambda step: float(step[0]))  # two processes write: by their clock
    names = [name for _, _, name, _ in steps]
    assert all(int(rss) > 1024 for _, _, _, rss in steps)  # KiB: an interpreter's at least
    # (the runtime's "fork" is traced once fork has returned to it: the init may be at
    # "unshare" by then; what precedes the fork in the runtime precedes the init's steps)
    for before, after in (("main", "state"), ("state", "cgroup"), ("cgroup", "unshare"),
                          ("unshare", "mounts"), ("mounts", "process"),
                          ("privileges", "ready"), ("ready", "start"), ("start", "execve")):
        assert names.index(before) < names.index(after), names
    assert len({pid for _, pid, _, _ in steps}) >= 2  # the runtime's and the init's


def test_run_detached_returns_at_once_and_logs_its_output(busybox_rootfs, state_root):
    # As `CID=$(minicontainer run -d ...)`: the caller's stdout is a pipe that the container
    # must not hold (else the caller waits for the container's end); its output goes to a
    # log that `logs` prints.
    cid = new_id()
    r = subprocess.run(mc_argv("run", "-d", "--name", cid, "--rootfs", busybox_rootfs, "--", "sh",
                               "-c", "echo out; echo err >&2; while [ ! -e /dev/shm/go ]; do "
                               "usleep 20000; done; echo late; exec sleep 1000",
                               state_root=state_root),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    try:
        assert (r.returncode, r.stdout, r.stderr) == (0, cid + "\n", "")
        assert status(cid, state_root) == "running"  # the pipe closed while the container runs

        def logs(*flags):  # stdout's lines on stdout, stderr's on stderr, as docker's
            r = mc("logs", *flags, cid, state_root=state_root)
            return r.returncode, r.stdout, r.stderr
        wait_for(lambda: logs() == (0, "out\n", "err\n"), what="the output in the log")
        ok(mc("exec", cid, "sh", "-c", "echo go > /dev/shm/go", state_root=state_root))
        wait_for(lambda: logs()[1].endswith("late\n"), what="the next line")
        ok(mc("kill", cid, "KILL", state_root=state_root))
        wait_for(lambda: status(cid, state_root) == "stopped")
        assert logs("-f") == (0, "out\nlate\n", "err\n")  # ends: the container stopped
    finally:
        ok(mc("delete", "-f", cid, state_root=state_root))


def test_gc_keeps_what_the_user_kept_and_prune_removes_it(busybox_rootfs, state_root):
    # A run without --rm keeps its stopped container (docker's semantics): gc, which removes
    # what crashes left, must leave it; prune removes stopped containers, asking first.
    kept = new_id()
    r = mc("run", "--name", kept, "--rootfs", busybox_rootfs, "--", "true",
           state_root=state_root)
    assert r.returncode == 0, r.stderr
    assert status(kept, state_root) == "stopped"
    ok(mc("gc", state_root=state_root))
    assert status(kept, state_root) == "stopped"
    running = new_id()
    ok(mc_bg("run", "-d", "--name", running, "--rootfs", busybox_rootfs, "--", "sleep", "1000",
             state_root=state_root))
    try:
        # no terminal to ask on
        assert "give -f" in one_line_error(mc("prune", state_root=state_root))
        assert status(kept, state_root) == "stopped"
        assert ok(mc("prune", "-f", state_root=state_root)).split() == [kept]
        assert one_line_error(mc("state", kept, state_root=state_root)).endswith("does not exist")
        assert status(running, state_root) == "running"
    finally:
        ok(mc("delete", "-f", running, state_root=state_root))
