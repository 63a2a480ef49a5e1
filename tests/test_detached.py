"""Detached containers (issue 13): run -d through the state root's monitor, the json-file log
and its rotation, logs -t/--tail, the exit records of state.json, --restart policies, the
restart verb, and what the monitor costs."""
import fcntl
import json
import os
import re
import select
import signal
import subprocess
import sys
import termios
import time

import pytest

import minicontainer as mcmod
from conftest import (RUNTIME, mc, mc_argv, mc_bg, monitor_pid, new_id, one_line_error,
                      parent_pid, wait_for)

pytestmark = [pytest.mark.needs_root, pytest.mark.usefixtures("no_leaks")]

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")


def run_d(state_root, *args):
    rc, out, err = mc_bg("run", "-d", *args, state_root=state_root)
    assert rc == 0, (out, err)
    return out.strip()


def state(state_root, cid):
    # A restart makes the container again: for a moment, it is not there.
    def read():
        try:
            with open(os.path.join(state_root, cid, "state.json")) as f:
                return json.load(f)
        except FileNotFoundError:
            return None
    return wait_for(read, what="the state of %s" % cid)


def finished(state_root, cid, count=None):
    """The monitor recorded an exit (of the restart_count-th run, when given)."""
    s = state(state_root, cid)
    return "finished_at" in s and (count is None or s.get("restart_count") == count) and s


def delete(state_root, *cids):
    for cid in cids:
        mc("delete", "-f", cid, state_root=state_root)


def test_json_file_log_and_exit_record(busybox_rootfs, state_root):
    cid = run_d(state_root, "--stop-signal", "USR1", "--stop-timeout", "3", "--rootfs",
                busybox_rootfs, "--", "sh", "-c",
                "echo out; echo err >&2; echo two; printf partial; exit 5")
    try:
        s = wait_for(lambda: finished(state_root, cid), what="the exit record")
        assert s["exit_code"] == 5 and s["oom_killed"] is False and s["restart_count"] == 0
        assert (s["stop_signal"], s["stop_timeout"]) == ("SIGUSR1", 3)
        assert RFC3339.match(s["started_at"]) and RFC3339.match(s["finished_at"])
        assert s["started_at"] <= s["finished_at"]
        with open(os.path.join(state_root, cid, "container.log")) as f:
            records = [json.loads(line) for line in f]
        assert sorted((r["stream"], r["log"]) for r in records) == [
            ("stderr", "err\n"), ("stdout", "out\n"), ("stdout", "partial"),
            ("stdout", "two\n")]
        assert all(RFC3339.match(r["time"]) for r in records)
        r = mc("logs", cid, state_root=state_root)
        assert (r.returncode, r.stdout, r.stderr) == (0, "out\ntwo\npartial", "err\n")
        r = mc("logs", "-t", "--tail", "2", cid, state_root=state_root)
        lines = r.stdout.splitlines() + r.stderr.splitlines()
        assert len(lines) == 2 and all(RFC3339.match(line.split(" ", 1)[0]) for line in lines)
        assert r.stdout.endswith(" partial")  # the last record, after its time
        assert mc("logs", "--tail", "0", cid, state_root=state_root).stdout == ""
    finally:
        delete(state_root, cid)


def test_exit_by_a_signal_and_a_foreground_run_are_recorded(busybox_rootfs, state_root):
    cid = run_d(state_root, "--rootfs", busybox_rootfs, "--", "sleep", "1000")
    fg = new_id()
    try:
        os.kill(state(state_root, cid)["pid"], signal.SIGKILL)
        assert wait_for(lambda: finished(state_root, cid))["exit_code"] == 128 + 9
        r = mc("run", "--name", fg, "--rootfs", busybox_rootfs, "--", "sh", "-c", "exit 7",
               state_root=state_root)
        assert r.returncode == 7, r.stderr
        s = state(state_root, fg)
        assert (s["exit_code"], s["oom_killed"], s["stop_signal"], s["stop_timeout"]) == (
            7, False, "SIGTERM", 10)
        assert RFC3339.match(s["finished_at"]) and s["started_at"] <= s["finished_at"]
    finally:
        delete(state_root, cid, fg)


def test_a_kept_foreground_container_is_logged_too(busybox_rootfs, state_root):
    """docker's logs of a container run in the foreground: its output reaches the caller,
    stdout and stderr apart, and its log; a caller's stdout closed early (| head) ends only
    the caller's copy; signals still reach the container."""
    fg, piped, signalled = new_id(), new_id(), new_id()
    try:
        r = mc("run", "--name", fg, "--rootfs", busybox_rootfs, "--", "sh", "-c",
               "echo out; echo err >&2; printf partial; exit 3", state_root=state_root)
        assert (r.returncode, r.stdout, r.stderr) == (3, "out\npartial", "err\n")
        r = mc("logs", fg, state_root=state_root)
        assert (r.returncode, r.stdout, r.stderr) == (0, "out\npartial", "err\n")
        with open(os.path.join(state_root, fg, "container.log")) as f:
            records = [json.loads(line) for line in f]
        assert sorted((r["stream"], r["log"]) for r in records) == [
            ("stderr", "err\n"), ("stdout", "out\n"), ("stdout", "partial")]
        # stdout closed after its first line: the container still writes all of it
        p = subprocess.Popen(mc_argv("run", "--name", piped, "--rootfs", busybox_rootfs, "--",
                                     "seq", "20000", state_root=state_root),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert p.stdout.readline() == b"1\n"
        p.stdout.close()
        assert p.wait(timeout=60) == 0, p.stderr.read()
        assert mc("logs", "--tail", "1", piped, state_root=state_root).stdout == "20000\n"
        p = subprocess.Popen(mc_argv("run", "--name", signalled, "--rootfs", busybox_rootfs,
                                     "--", "sh", "-c", "trap 'echo term; exit 7' TERM; "
                                     "echo ready; while :; do sleep 0.1; done",
                                     state_root=state_root),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert p.stdout.readline() == b"ready\n"
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 7 and p.stdout.read() == b"term\n"
        assert mc("logs", signalled, state_root=state_root).stdout == "ready\nterm\n"
    finally:
        delete(state_root, fg, piped, signalled)


def test_exec_with_a_terminal_leaves_dev_console_alone(busybox_rootfs, state_root):
    """exec -t gives its process a pty but binds no /dev/console over the container's (the
    init's own, or none), as runc's exec: the bind stayed, naming a pty that was gone."""
    cid = run_d(state_root, "--rootfs", busybox_rootfs, "--", "sleep", "1000")
    try:
        r = mc("exec", "-t", cid, "sh", "-c", "[ -t 0 ] && echo tty", state_root=state_root)
        assert (r.returncode, r.stdout.strip()) == (0, "tty"), r.stderr
        r = mc("exec", cid, "grep", "-c", " /dev/console ", "/proc/self/mountinfo",
               state_root=state_root)
        assert r.stdout.strip() == "0", r.stdout
    finally:
        delete(state_root, cid)


def test_a_kept_foreground_terminal_is_logged(busybox_rootfs, state_root):
    """run -t in the foreground, kept: its terminal's output reaches ours and its log (all
    of it stdout, lines ending in \\r\\n, as docker's)."""
    cid = new_id()
    master, slave = os.openpty()
    p = subprocess.Popen(mc_argv("run", "-t", "--name", cid, "--rootfs", busybox_rootfs, "--",
                                 "sh", "-c", "echo on-tty; [ -t 1 ] && [ $TERM = xterm ] && "
                                 "echo is-a-tty; exit 4",
                                 state_root=state_root),
                         stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    seen = b""
    try:
        while True:  # until the runtime has closed the terminal (EIO)
            try:
                data = os.read(master, 4096) \
                    if select.select([master], [], [], 30)[0] else b""
            except OSError:
                data = b""
            if not data:
                break
            seen += data
        assert p.wait(timeout=30) == 4
        assert b"on-tty\r" in seen and b"is-a-tty\r" in seen, seen  # (ours adds a \\r too)
        with open(os.path.join(state_root, cid, "container.log")) as f:
            records = [json.loads(line) for line in f]
        assert [(r["stream"], r["log"]) for r in records] == [
            ("stdout", "on-tty\r\n"), ("stdout", "is-a-tty\r\n")]  # as the pty wrote it
        r = mc("logs", cid, state_root=state_root)  # (text mode: \r\n read as \n)
        assert (r.returncode, r.stdout, r.stderr) == (0, "on-tty\nis-a-tty\n", "")
    finally:
        os.close(master)
        if p.poll() is None:
            p.kill()
            p.wait()
        delete(state_root, cid)


def test_oom_killed_is_recorded(busybox_rootfs, state_root):
    cid = run_d(state_root, "-m", "16m", "--rootfs", busybox_rootfs, "--", "sh", "-c",
                "head -c 100m /dev/zero | tail")
    try:
        s = wait_for(lambda: finished(state_root, cid), timeout=30)
        assert s["oom_killed"] is True and s["exit_code"] == 128 + 9, s
    finally:
        delete(state_root, cid)


def test_the_log_is_rotated_by_size(busybox_rootfs, state_root):
    cid = run_d(state_root, "--log-opt", "max-size=2k", "--log-opt", "max-file=3", "--rootfs",
                busybox_rootfs, "--", "sh", "-c",
                "i=0; while [ $i -lt 300 ]; do i=$((i+1)); echo line $i; done")
    try:
        wait_for(lambda: finished(state_root, cid))
        files = sorted(n for n in os.listdir(os.path.join(state_root, cid))
                       if n.startswith("container.log"))
        assert files == ["container.log", "container.log.1", "container.log.2"]
        assert all(os.path.getsize(os.path.join(state_root, cid, n)) <= 2048 for n in files)
        out = mc("logs", cid, state_root=state_root).stdout.splitlines()
        # what the files hold: the last lines, in order
        assert out[-1] == "line 300" and 10 < len(out) < 300
        assert out == ["line %d" % i for i in range(301 - len(out), 301)]
    finally:
        delete(state_root, cid)


def test_a_detached_container_outlives_the_terminal_and_session_it_came_from(
        busybox_rootfs, state_root):
    cid = new_id()
    master, slave = os.openpty()

    def controlling_tty():
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    shell = subprocess.Popen(
        ["sh", "-c", '"$@"; echo started; exec sleep 1000', "sh", sys.executable, RUNTIME,
         "--root", state_root, "run", "-d", "--name", cid, "--rootfs", busybox_rootfs, "--",
         "sh", "-c", "while :; do echo tick; sleep 0.1; done"],
        stdin=slave, stdout=slave, stderr=slave, preexec_fn=controlling_tty)
    os.close(slave)
    try:
        out = b""
        while b"started" not in out:
            out += os.read(master, 4096)
        assert cid.encode() in out
        pid = state(state_root, cid)["pid"]
        # The terminal goes away, and its session with a SIGHUP.
        os.close(master)
        master = None
        os.killpg(shell.pid, signal.SIGHUP)
        shell.wait(10)
        time.sleep(0.5)
        r = mc("state", cid, state_root=state_root)
        assert json.loads(r.stdout)["status"] == "running"
        assert state(state_root, cid)["pid"] == pid
        # and its output still goes to its log
        n = mc("logs", cid, state_root=state_root).stdout.count("tick")
        wait_for(lambda: mc("logs", cid, state_root=state_root).stdout.count("tick") > n)
    finally:
        if master is not None:
            os.close(master)
        if shell.poll() is None:
            shell.kill()
            shell.wait()
        delete(state_root, cid)


def test_on_failure_restarts_at_most_n_times(busybox_rootfs, state_root):
    ok = None
    cid = run_d(state_root, "--restart", "on-failure:2", "--rootfs", busybox_rootfs, "--",
                "sh", "-c", "echo run; exit 3")
    try:
        # between its exits and its restarts: docker's `Restarting`
        wait_for(lambda: mc("inspect", "-f", "{{.State.Status}} {{.State.Restarting}}", cid,
                            state_root=state_root).stdout == "restarting true\n",
                 what="the restarting state", interval=0.01)
        s = wait_for(lambda: finished(state_root, cid, count=2), what="the 2nd restart")
        time.sleep(1)  # a 3rd would come within 0.4 s (docker's back-off)
        s = state(state_root, cid)
        assert (s["restart_count"], s["exit_code"]) == (2, 3)
        assert mc("inspect", "-f", "{{.State.Status}} {{.State.Restarting}}", cid,
                  state_root=state_root).stdout == "exited false\n"  # no more restarts
        assert mc("logs", cid, state_root=state_root).stdout == "run\n" * 3
        # a success is not restarted
        ok = run_d(state_root, "--restart", "on-failure", "--rootfs", busybox_rootfs, "--",
                   "true")
        wait_for(lambda: finished(state_root, ok))
        time.sleep(0.5)
        assert state(state_root, ok)["restart_count"] == 0
    finally:
        delete(state_root, cid)
        delete(state_root, ok)


def test_always_restarts_until_stopped(busybox_rootfs, state_root):
    cid = run_d(state_root, "--restart", "always", "--rootfs", busybox_rootfs, "--",
                "sh", "-c", "echo run; exec sleep 1000")
    try:
        first = state(state_root, cid)["pid"]
        os.kill(first, signal.SIGKILL)
        s = wait_for(lambda: state(state_root, cid).get("restart_count") == 1 and
                     mcmod.Container.load(cid, state_root).alive() and
                     state(state_root, cid), what="the restart")
        assert s["pid"] != first and "finished_at" not in s
        # the monitor's worker that made it hands it over as it exits (the monitor reaps
        # orphans: PR_SET_CHILD_SUBREAPER)
        wait_for(lambda: parent_pid(s["pid"]) == monitor_pid(state_root),
                 what="the monitor to parent the restarted init")
        # stop, as the contract says (`stop` writes stopped_by_user first): not restarted
        mcmod.stop_container(mcmod.Container.load(cid, state_root), timeout=1)
        s = wait_for(lambda: finished(state_root, cid))
        time.sleep(0.5)
        s = state(state_root, cid)
        assert s["stopped_by_user"] is True and s["restart_count"] == 1
        assert s["exit_code"] == 128 + 9  # sleep as PID 1 ignores TERM: killed after 1 s
        assert json.loads(mc("state", cid, state_root=state_root).stdout)["status"] == \
            "stopped"
        assert mc("logs", cid, state_root=state_root).stdout == "run\nrun\n"
    finally:
        delete(state_root, cid)


def test_a_start_that_cannot_have_its_port_keeps_the_container(busybox_rootfs, state_root):
    """start of a stopped container whose published port is taken meanwhile: one line, and
    the container stays as it was (it was taken apart first, then its run failed: gone,
    with its files); once the port is free, start works and its files are there."""
    import socket
    from fixtures_registry import free_port
    port = free_port()
    cid = run_d(state_root, "-p", "127.0.0.1:%d:80" % port, "--rootfs", busybox_rootfs, "--",
                "sh", "-c", "echo kept > /root/data; exec sleep 1000")
    try:
        assert mc("stop", "-t", "1", cid, state_root=state_root).returncode == 0
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", port))
            r = mc("start", cid, state_root=state_root)
            assert r.returncode == 1 and r.stderr.endswith(
                "127.0.0.1:%d: Address already in use\n" % port), r.stderr
        assert mc("start", cid, state_root=state_root).returncode == 0
        assert mc("exec", cid, "cat", "/root/data", state_root=state_root).stdout == "kept\n"
    finally:
        delete(state_root, cid)


def test_restart_verb(busybox_rootfs, state_root, tmp_path):
    cid = run_d(state_root, "--stop-signal", "USR1", "--rootfs", busybox_rootfs, "--", "sh",
                "-c", "trap 'echo usr1; exit 0' USR1; echo run; sleep 1000 & wait")
    engine = new_id()
    try:
        first = state(state_root, cid)["pid"]
        wait_for(lambda: "run" in mc("logs", cid, state_root=state_root).stdout)
        r = mc("restart", "-t", "5", cid, state_root=state_root)
        assert (r.returncode, r.stdout, r.stderr) == (0, cid + "\n", "")
        s = state(state_root, cid)
        assert s["pid"] != first and mcmod.Container.load(cid, state_root).alive()
        assert s["restart_count"] == 0 and "stopped_by_user" not in s
        wait_for(lambda: mc("logs", cid, state_root=state_root).stdout == "run\nusr1\nrun\n")
        # a container of an engine (runc's create): its engine restarts it
        bundle = tmp_path / "bundle"
        bundle.mkdir()
        (bundle / "config.json").write_text(json.dumps(
            mcmod.default_spec(rootfs=busybox_rootfs, args=["sleep", "1000"])))
        rc, _, err = mc_bg("create", "--bundle", str(bundle), engine, state_root=state_root)
        assert rc == 0, err
        assert "through the engine" in one_line_error(
            mc("restart", engine, state_root=state_root))
    finally:
        delete(state_root, cid, engine)


def test_run_flags_of_detached_containers_say_what_is_wrong(busybox_rootfs, state_root):
    for flags, words in ((["--restart", "sometimes"], "invalid restart policy"),
                         (["--restart", "always", "--rm"], "--restart and --rm conflict"),
                         (["--restart", "always"], "needs -d"),
                         (["--log-opt", "max-size=0"], "max-size"),
                         (["--log-opt", "colour=blue"], "max-size=SIZE"),
                         (["--stop-signal", "SIGNOPE"], "unknown signal"),
                         (["--stop-timeout", "-1"], "--stop-timeout")):
        detach = [] if "needs -d" in words else ["-d"]
        line = one_line_error(mc("run", *detach, *flags, "--rootfs", busybox_rootfs, "--",
                                 "true", state_root=state_root))
        assert words in line, (flags, line)
    assert not os.path.exists(state_root) or \
        [n for n in os.listdir(state_root) if not n.startswith(".")] == []


def _rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def test_one_monitor_serves_every_detached_container(busybox_rootfs, state_root):
    cids = []
    try:
        cids.append(run_d(state_root, "--rootfs", busybox_rootfs, "--", "sleep", "1000"))
        monitor = monitor_pid(state_root)
        one = _rss_kib(monitor)
        for _ in range(9):
            cids.append(run_d(state_root, "--rm", "--rootfs", busybox_rootfs, "--",
                              "sleep", "1000"))
        assert monitor_pid(state_root) == monitor
        assert {parent_pid(state(state_root, c)["pid"]) for c in cids} == {monitor}
        ten = _rss_kib(monitor)
        # bench/bench_detached.py measures it; here a loose bound: a few MiB, not 10 each
        print("monitor RSS: %d KiB with 1 container, %d KiB with 10" % (one, ten))
        assert ten < 40 * 1024 and ten - one < 10 * 1024
    finally:
        delete(state_root, *cids)
    # it leaves with the last one
    wait_for(lambda: not os.path.exists("/proc/%d" % monitor) or
             open("/proc/%d/stat" % monitor).read().split(") ")[1][0] == "Z",
             what="the monitor to leave")
    assert sorted(os.listdir(state_root)) == []


def test_gc_removes_what_a_crashed_monitor_left(busybox_rootfs, state_root):
    cid = run_d(state_root, "--rm", "--rootfs", busybox_rootfs, "--", "sleep", "1000")
    monitor = monitor_pid(state_root)
    os.kill(monitor, signal.SIGKILL)
    wait_for(lambda: not os.path.exists("/proc/%d" % monitor), what="the monitor's end")
    # the container lives on; a gc removes the monitor's socket (a new monitor would too)
    assert mcmod.Container.load(cid, state_root).alive()
    r = mc("gc", state_root=state_root)
    assert r.returncode == 0 and "monitor.sock" in r.stdout, (r.stdout, r.stderr)
    # a new run -d starts a new monitor
    other = run_d(state_root, "--rootfs", busybox_rootfs, "--", "sleep", "1000")
    assert monitor_pid(state_root) != monitor
    delete(state_root, cid, other)


def test_a_new_monitor_adopts_the_containers_of_one_that_died(busybox_rootfs, state_root):
    """Their ends are recorded (the code unknown: not our children any more), --rm and
    --restart act, also for one that ended while no monitor ran."""
    always = run_d(state_root, "--restart", "always", "--rootfs", busybox_rootfs, "--", "sh",
                   "-c", "echo run; exec sleep 1000")
    kept = run_d(state_root, "--rootfs", busybox_rootfs, "--", "sleep", "1000")
    gone = run_d(state_root, "--rm", "--rootfs", busybox_rootfs, "--", "sleep", "1000")
    other = None
    try:
        wait_for(lambda: "run" in mc("logs", always, state_root=state_root).stdout)
        pids = {cid: state(state_root, cid)["pid"] for cid in (always, kept, gone)}
        monitor = monitor_pid(state_root)
        os.kill(monitor, signal.SIGKILL)
        wait_for(lambda: not os.path.exists("/proc/%d" % monitor), what="the monitor's end")
        os.kill(pids[kept], signal.SIGKILL)  # while no monitor runs
        wait_for(lambda: not mcmod.Container.load(kept, state_root).alive())
        assert "finished_at" not in state(state_root, kept)
        other = run_d(state_root, "--rootfs", busybox_rootfs, "--", "sleep", "1000")
        assert monitor_pid(state_root) != monitor
        s = wait_for(lambda: finished(state_root, kept), what="the adopted one's end")
        assert s["exit_code"] is None and s["restart_count"] == 0
        for cid in (always, gone):
            os.kill(pids[cid], signal.SIGKILL)
        wait_for(lambda: not os.path.exists(os.path.join(state_root, gone)), what="--rm")
        s = wait_for(lambda: state(state_root, always).get("restart_count") == 1 and
                     mcmod.Container.load(always, state_root).alive() and
                     state(state_root, always), what="the restart of the adopted one")
        assert s["pid"] != pids[always]
        wait_for(lambda: mc("logs", always, state_root=state_root).stdout == "run\nrun\n")
        row = mc("ps", "-a", "--format", "{{.Names}} {{.Status}}",
                 state_root=state_root).stdout
        assert re.search(r"^%s Exited \S" % re.escape(kept), row, re.M), row  # no code
    finally:
        delete(state_root, always, kept, gone, *([other] if other else []))

@pytest.mark.parametrize("copy", [False, True], ids=["overlay", "private-copy"])
def test_restart_keeps_the_containers_files_and_creation_time(image_rootfs, tmp_path, copy):
    """docker's restart (and start of a stopped container) keeps the writable layer (here
    STATE/upper, or the private copy when overlayfs is not used), Created and its log; a
    foreground container kept without --rm comes back detached."""
    import import_image
    store, state_root = str(tmp_path / "store"), str(tmp_path / "state")
    import_image.import_image(image_rootfs, "restart-test:1", store=store)
    env = dict(os.environ, MINICONTAINER_STORE=store)
    if copy:
        env["MINICONTAINER_NO_OVERLAY"] = "1"
    cid = new_id("keep")
    r = mc("run", "--name", cid, "restart-test:1", "sh", "-c", "echo x >> /f; wc -l < /f",
           state_root=state_root, env=env)
    try:
        assert (r.returncode, r.stdout) == (0, "1\n"), r.stderr
        created = state(state_root, cid)["created"]
        mode = state(state_root, cid)["overlay"]["mode"]
        assert mode == ("copy" if copy else "overlay")
        for verb in ("restart", "start"):  # docker's start of a stopped one: the same
            r = mc(verb, cid, state_root=state_root, env=env)
            assert (r.returncode, r.stdout) == (0, cid + "\n"), r.stderr
            s = wait_for(lambda: finished(state_root, cid))
            assert s["exit_code"] == 0 and s["created"] == created
            assert s["overlay"]["mode"] == mode
        assert mc("logs", cid, state_root=state_root).stdout == "1\n2\n3\n"  # docker's
    finally:
        delete(state_root, cid)
    assert os.listdir(state_root) == []  # nothing kept aside for the restarts either


def test_a_detached_terminal_is_logged(busybox_rootfs, state_root):
    """run -dt: what the container writes on its terminal goes to its log, as docker's."""
    cid = run_d(state_root, "-t", "--rootfs", busybox_rootfs, "--", "sh", "-c",
                "echo on-tty; [ -t 1 ] && echo is-a-tty; exec sleep 1000")
    try:
        wait_for(lambda: "is-a-tty" in mc("logs", cid, state_root=state_root).stdout,
                 what="the terminal's output in the log")
        with open(os.path.join(state_root, cid, "container.log")) as f:
            records = [json.loads(line) for line in f]
        assert [(r["stream"], r["log"]) for r in records] == [
            ("stdout", "on-tty\r\n"), ("stdout", "is-a-tty\r\n")]  # as the pty wrote it
        assert mcmod.Container.load(cid, state_root).alive()  # the terminal stays open
    finally:
        delete(state_root, cid)


def _fake_monitor(state_root):
    """A listener where the monitor of state_root listens, that the test answers itself."""
    import socket
    os.makedirs(state_root, exist_ok=True)
    d = mcmod.monitor_dir(state_root)
    os.makedirs(d, mode=0o700)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(os.path.join(d, "monitor.sock"))
    listener.listen(1)
    return listener, d


def test_a_monitor_answer_that_is_not_one_is_a_one_line_error(busybox_rootfs, state_root):
    """A broken (or truncated) answer from the monitor: one line and docker's 125 for its
    own failure, not a traceback."""
    import shutil
    import socket
    for answer in (b"not json", b'{"code": ', b'["code"]', b'{"code": "0"}'):
        listener, d = _fake_monitor(state_root)
        try:
            p = subprocess.Popen(mc_argv("run", "-d", "--rootfs", busybox_rootfs, "--", "true",
                                         state_root=state_root),
                                 stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
            conn, _ = listener.accept()
            with conn:
                _, fds, _, _ = socket.recv_fds(conn, 1 << 18, 16)
                for fd in fds:
                    os.close(fd)
                conn.send(answer)
            out, err = p.communicate(timeout=60)
        finally:
            listener.close()
            shutil.rmtree(d)
        line = one_line_error(subprocess.CompletedProcess(p.args, p.returncode, out, err),
                              code=125)
        assert "not an answer" in line, (answer, line)


def _monitor_socket(state_root):
    return os.path.join(mcmod.monitor_dir(state_root), "monitor.sock")


def _ask(state_root, request, fds):
    """A request sent to the monitor as a client sends it; its answer (b"": none)."""
    import socket
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
        s.connect(_monitor_socket(state_root))
        socket.send_fds(s, [request if isinstance(request, bytes) else
                            json.dumps(request).encode()], fds)
        s.settimeout(60)
        return s.recv(4096)


def test_a_client_that_sends_nothing_holds_nobody_up(busybox_rootfs, state_root):
    """A client that connects and sends nothing (a run -d stopped by Ctrl-Z in between): the
    monitor serves the next ones meanwhile, then drops it; what it sends after is not run."""
    import socket
    cid = run_d(state_root, "--rootfs", busybox_rootfs, "--", "sleep", "1000")
    other, late = new_id(), new_id()
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        silent.connect(_monitor_socket(state_root))  # accepted first: connections queue
        rc, out, err = mc_bg("run", "-d", "--name", other, "--rootfs", busybox_rootfs, "--",
                             "sleep", "1000", state_root=state_root, timeout=30)
        assert (rc, out.strip()) == (0, other), err
        assert mcmod.Container.load(other, state_root).alive()
        wait_for(lambda: select.select([silent], [], [], 0)[0], timeout=60,
                 what="the monitor to drop the silent client")
        assert silent.recv(4096) == b""
        null = os.open(os.devnull, os.O_RDWR)
        try:
            with pytest.raises((BrokenPipeError, ConnectionResetError)):
                socket.send_fds(silent, [json.dumps({
                    "run": ["--root", state_root, "run", "-d", "--name", late, "--rootfs",
                            busybox_rootfs, "--", "sleep", "1000"],
                    "cwd": "/", "env": dict(os.environ)}).encode()], [null] * 3)
        finally:
            os.close(null)
        assert not os.path.exists(os.path.join(state_root, late))
    finally:
        silent.close()
        delete(state_root, cid, other)


def test_a_bad_request_leaves_no_fd_in_the_monitor(busybox_rootfs, state_root):
    """Whatever a request is, the fds that came with it are closed: answered with an error,
    never kept (they were, for every request that was not a run or a restart)."""
    cid = run_d(state_root, "--rootfs", busybox_rootfs, "--", "sleep", "1000")
    monitor = monitor_pid(state_root)
    before = len(os.listdir("/proc/%d/fd" % monitor))
    null = os.open(os.devnull, os.O_RDWR)
    harmless = {"run": ["state", "no-such-container"], "cwd": "/", "env": {}}
    answers = []
    try:
        for request, n in ((b"not json", 3), (b"[1, 2]", 3), (b'"run"', 3), (b"{}", 3),
                           ({"neither": "run nor restart", "env": {}}, 3),
                           ({"run": "a string", "cwd": "/", "env": {}}, 3),
                           ({"restart": ["a", "list"], "env": {}}, 3),
                           (harmless, 65), (harmless, 200)):  # (--preserve-fds 62, 197)
            answers.append((request, n, _ask(state_root, request, [null] * n)))
        # (it closes a connection after its answer)
        wait_for(lambda: len(os.listdir("/proc/%d/fd" % monitor)) == before,
                 what="the monitor's fds as they were")
        for request, n, answer in answers:
            if request is harmless:  # run: `state` of no container
                assert json.loads(answer) == {"code": 1}, (n, answer)
            else:
                assert answer and json.loads(answer).get("error"), (request, n, answer)
        assert monitor_pid(state_root) == monitor
    finally:
        os.close(null)
        delete(state_root, cid)


def test_a_request_without_its_fds_is_refused(busybox_rootfs, state_root):
    """Without the fds it says it carries (or without stdio): refused, nothing run; it ran
    with its fds 0-2 closed (files of the runtime's landing there) and answered 255."""
    cid = run_d(state_root, "--rootfs", busybox_rootfs, "--", "sleep", "1000")
    names = [new_id(), new_id()]
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for name, fds, extra in ((names[0], [], {}), (names[1], [null] * 3, {"fds": 4})):
            answer = _ask(state_root, dict({
                "run": ["--root", state_root, "run", "-d", "--name", name, "--rootfs",
                        busybox_rootfs, "--", "sleep", "1000"],
                "cwd": "/", "env": dict(os.environ)}, **extra), fds)
            assert "fds" in json.loads(answer)["error"], answer
            assert not os.path.exists(os.path.join(state_root, name))
    finally:
        os.close(null)
        delete(state_root, cid, *names)


def test_a_monitor_serves_no_caller_of_another_runtime(busybox_rootfs, state_root, tmp_path):
    """A run -d of another runtime (another install, or this one installed anew) than the
    monitor's: the monitor retires, a new one (of the caller's runtime) serves it; the old
    one watches its containers until they end, a restart of theirs made by the new one, and
    the verbs work for both."""
    import shutil
    other = str(tmp_path / "other" / "minicontainer.py")
    os.makedirs(os.path.dirname(other))
    shutil.copy2(RUNTIME, other)
    argv = mc_argv("run", "-d", "--restart", "always", "--rootfs", busybox_rootfs, "--", "sh",
                   "-c", "echo run; exec sleep 1000", state_root=state_root)
    assert argv[5] == RUNTIME
    argv[5] = other
    with open(str(tmp_path / "out"), "w+") as out:
        assert subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                              timeout=60).returncode == 0
        out.seek(0)
        first = out.read().strip()
    second = None
    try:
        old = monitor_pid(state_root)
        wait_for(lambda: "run" in mc("logs", first, state_root=state_root).stdout)
        second = run_d(state_root, "--rootfs", busybox_rootfs, "--", "sleep", "1000")
        new = monitor_pid(state_root)
        assert new != old and parent_pid(state(state_root, second)["pid"]) == new
        assert parent_pid(state(state_root, first)["pid"]) == old  # still its
        with open("/proc/%d/cmdline" % new, "rb") as f:
            assert RUNTIME.encode() in f.read().split(b"\0")
        r = mc("gc", state_root=state_root)
        assert (r.returncode, r.stdout) == (0, ""), r.stderr
        rows = mc("ps", "--format", "{{.Names}}", state_root=state_root).stdout.split()
        assert sorted(rows) == sorted([first, second])
        # its policy's restart: recorded by the old monitor, made by the new one
        pid = state(state_root, first)["pid"]
        os.kill(pid, signal.SIGKILL)
        s = wait_for(lambda: state(state_root, first).get("restart_count") == 1 and
                     mcmod.Container.load(first, state_root).alive() and
                     state(state_root, first), what="the restart")
        assert s["pid"] != pid
        wait_for(lambda: parent_pid(s["pid"]) == new, what="the new monitor to parent it")
        wait_for(lambda: mc("logs", first, state_root=state_root).stdout == "run\nrun\n")
        # with nothing left to watch, the old one leaves
        wait_for(lambda: not os.path.exists("/proc/%d" % old) or
                 open("/proc/%d/stat" % old).read().split(") ")[1][0] == "Z",
                 what="the old monitor to leave")
        assert mc("stop", "-t", "1", first, state_root=state_root).returncode == 0
        assert wait_for(lambda: finished(state_root, first))["exit_code"] == 128 + 9
    finally:
        delete(state_root, first, *([second] if second else []))


def test_a_container_stopped_while_no_monitor_ran_ended_when_stopped(busybox_rootfs,
                                                                      state_root):
    """Its end, recorded by the next monitor as it adopts it, is when `stop` saw it, not when
    that monitor came."""
    cid = run_d(state_root, "--rootfs", busybox_rootfs, "--", "sleep", "1000")
    other = None
    try:
        monitor = monitor_pid(state_root)
        os.kill(monitor, signal.SIGKILL)
        wait_for(lambda: not os.path.exists("/proc/%d" % monitor), what="the monitor's end")
        assert mc("stop", "-t", "1", cid, state_root=state_root).returncode == 0
        stopped = mcmod.timestamp()
        other = run_d(state_root, "--rootfs", busybox_rootfs, "--", "sleep", "1000")
        s = wait_for(lambda: finished(state_root, cid), what="the adopted one's end")
        assert s["exit_code"] is None and s["finished_at"] <= stopped, (s, stopped)
    finally:
        delete(state_root, cid, *([other] if other else []))


def test_the_monitor_keeps_no_debug_setting_of_its_starter(busybox_rootfs, state_root):
    """The caller that starts the monitor may have debug hooks set (test settings): they are
    its own run's, not the monitor's (whose environment the restarts of containers it
    adopts have)."""
    env = dict(os.environ, MINICONTAINER_DEBUG_SLEEP_AT="no-such-step:1")
    rc, out, err = mc_bg("run", "-d", "--rootfs", busybox_rootfs, "--", "sleep", "1000",
                         state_root=state_root, env=env)
    assert rc == 0, err
    cid = out.strip()
    try:
        with open("/proc/%d/environ" % monitor_pid(state_root), "rb") as f:
            assert b"MINICONTAINER_DEBUG_" not in f.read()
    finally:
        delete(state_root, cid)
