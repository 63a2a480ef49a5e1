"""The OCI command line (issue #4): runc's commands and flags as engines call them, on real
containers. Every test has its own --root and deletes (-f) every container it made."""
import ctypes
import json
import os
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from conftest import (RUNTIME, SESSION, mc, mc_argv, mc_bg, mc_create, mountpoints_under,
                      new_id, no_state, ok, one_line_error, state, status, wait_for,
                      wait_status)

pytestmark = [pytest.mark.needs_root, pytest.mark.usefixtures("no_leaks")]

HOOK_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"




def gone(pid):
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return True
    return data[data.rindex(b")") + 2:][:1] in (b"Z", b"X")


def read_until_eof(fd, timeout=10):
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not select.select([fd], [], [], 0.1)[0]:
            continue
        try:
            data = os.read(fd, 65536)
        except OSError:  # EIO: a pty master whose slave every process closed
            break
        if not data:
            break
        out += data
    return out


# ---- lifecycle through the command line ----

def test_state_transitions_and_create_keeps_stdio(state_root, bundle, tmp_path):
    b = bundle(["sh", "-c", "echo hello from $$; read line < /dev/shm/go 2>/dev/null; "
                            "echo bye"])
    r, w = os.pipe()
    pid_file = tmp_path / "pidfile"
    try:
        cid, _ = mc_create(b, None, "--pid-file", pid_file, stdout=w, state_root=state_root)
    finally:
        os.close(w)
    st = state(cid, state_root)
    assert st["status"] == "created" and st["id"] == cid and st["bundle"] == b
    assert st["ociVersion"].startswith("1.")
    pid = st["pid"]
    assert pid > 0 and int(pid_file.read_text()) == pid
    assert not select.select([r], [], [], 0)[0]  # nothing ran yet
    ok(mc("start", cid, state_root=state_root))
    assert status(cid, state_root) in ("running", "stopped")
    # the container's program writes to the pipe `create` was given; it is its pid 1
    out = read_until_eof(r).decode()
    os.close(r)
    assert out == "hello from 1\nbye\n"
    wait_status(cid, "stopped", state_root)
    st = state(cid, state_root)
    assert st["pid"] == 0 and st["id"] == cid
    assert one_line_error(mc("start", cid, state_root=state_root),
                          code=1).endswith("cannot start a container that is stopped")
    ok(mc("delete", cid, state_root=state_root))
    assert one_line_error(mc("state", cid, state_root=state_root),
                          code=1) == "minicontainer: container %s does not exist" % cid


def test_start_twice_is_an_error(state_root, bundle):
    cid, _ = mc_create(bundle(["sleep", "1000"]), state_root=state_root)
    ok(mc("start", cid, state_root=state_root))
    assert status(cid, state_root) == "running"
    assert one_line_error(mc("start", cid, state_root=state_root),
                          code=1).endswith("cannot start a container that is running")
    ok(mc("delete", "-f", cid, state_root=state_root))


def test_kill_before_start_then_delete(state_root, bundle, tmp_path):
    b = bundle(["sh", "-c", "touch /ran"], rootfs=None)
    cid, _ = mc_create(b, state_root=state_root)
    pid = state(cid, state_root)["pid"]
    ok(mc("kill", cid, "9", state_root=state_root))
    wait_status(cid, "stopped", state_root)
    assert one_line_error(mc("start", cid, state_root=state_root),
                          code=1).endswith("cannot start a container that is stopped")
    ok(mc("delete", cid, state_root=state_root))
    assert gone(pid)
    assert ok(mc("list", "-q", state_root=state_root)).strip() == ""


@pytest.mark.parametrize("signal_word", ["", "TERM", "HUP", "QUIT"])
def test_a_created_container_ends_on_a_terminating_signal(state_root, bundle, signal_word):
    """runc's `kill ID` (SIGTERM) and the other signals that end a process by default end
    a created container, as they end runc's: as a pid namespace's init without a handler it
    got none of them (only SIGKILL), and `start` later ran it."""
    cid, _ = mc_create(bundle(["sh", "-c", "touch /ran"], rootfs=None), state_root=state_root)
    try:
        ok(mc("kill", cid, *[signal_word] if signal_word else [], state_root=state_root))
        wait_status(cid, "stopped", state_root)
        assert one_line_error(mc("start", cid, state_root=state_root),
                              code=1).endswith("cannot start a container that is stopped")
    finally:
        ok(mc("delete", "-f", cid, state_root=state_root))


@pytest.mark.parametrize("step", ["in-cgroup", "map-cold-code"])
@pytest.mark.parametrize("command", ["run", "create"])
def test_sigterm_while_a_container_is_made_undoes_it(state_root, bundle, command, step):
    """SIGTERM (an engine's timeout, systemd's stop) while run or create sets a container
    up: the runtime unwinds as on Ctrl-C, nothing is left (state, cgroups: no_leaks), and
    its status says the signal. It ended where it stood, the container half made. Also as
    the init is forked, where the cold code is mapped: in os.fork's hook, whose exceptions
    Python ignores, the signal was lost and the container made (seen in the v2 guest)."""
    b = bundle(["true"])
    env = dict(os.environ, MINICONTAINER_DEBUG_SLEEP_AT=step + ":3")
    cid = new_id()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(mc_argv(command, "--bundle", b, cid, state_root=state_root),
                                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err)
        try:
            wait_for(lambda: os.path.exists(os.path.join(state_root, cid, "exec.fifo")),
                     what="the container half made")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 128 + signal.SIGTERM
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err.seek(0)
        assert b"Traceback" not in err.read()
    assert no_state(state_root)


def test_a_cwd_only_root_may_enter(state_root, bundle, rootfs_copy):
    """process.cwd is entered as root, before the user is set, as runc does: a user's
    process may start in a directory it may not enter itself (it failed: Permission
    denied). One it may not enter as root either stays an error."""
    os.makedirs(os.path.join(rootfs_copy, "private"), mode=0o700)
    b = bundle(["sh", "-c", "pwd; id -u"], rootfs=rootfs_copy, edit=lambda c: c["process"].update(
        cwd="/private", user={"uid": 1000, "gid": 1000}))
    assert ok(mc("run", "--bundle", b, new_id(), state_root=state_root)).split() == \
        ["/private", "1000"]
    b = bundle(["true"], rootfs=rootfs_copy, edit=lambda c: c["process"].update(
        cwd="/etc/passwd/x", user={"uid": 1000, "gid": 1000}))
    r = mc("run", "--bundle", b, new_id(), state_root=state_root)
    assert one_line_error(r).endswith("process.cwd /etc/passwd/x: not a directory"), r.stderr
    assert no_state(state_root)


def test_a_mounts_propagation_option_outlives_pivot_root(state_root, bundle, tmp_path):
    """A bind mount with "shared" is shared in the container (mountinfo's shared:N): the old
    root, made a slave before its detach, was reached through ".", which is the new root
    after pivot_root(".", "."): its every mount became a slave, a shared one private."""
    (tmp_path / "source").mkdir()
    b = bundle(["grep", " /mnt ", "/proc/self/mountinfo"], edit=lambda c: c["mounts"].append(
        {"destination": "/mnt", "type": "bind", "source": str(tmp_path / "source"),
         "options": ["rbind", "shared"]}))
    line = ok(mc("run", "--bundle", b, new_id(), state_root=state_root))
    assert " shared:" in line, line


def test_tmpfs_takes_the_mode_of_what_it_covers(state_root, bundle, rootfs_copy):
    """A tmpfs without mode= gets the mode of the directory it covers, as runc gives it
    (tmpfs's own is 1777: on /private, 0700, anyone could write there); mode= wins; on a
    directory made for it, tmpfs's own."""
    os.makedirs(os.path.join(rootfs_copy, "private"), mode=0o700)

    def edit(c):
        c["mounts"] += [{"destination": d, "type": "tmpfs", "source": "tmpfs", "options": o}
                        for d, o in (("/private", ["nosuid"]), ("/etc", ["mode=750"]),
                                     ("/made", []))]
    b = bundle(["stat", "-c", "%a", "/private", "/etc", "/made"], rootfs=rootfs_copy,
               edit=edit)
    assert ok(mc("run", "--bundle", b, new_id(), state_root=state_root)).split() == \
        ["700", "750", "1777"]


def test_runcs_run_flags(state_root, bundle):
    """runc's run takes --keep (the container stays, stopped, when its process exits),
    --no-pivot, --no-new-keyring and --no-subreaper (they were unrecognized arguments)."""
    b = bundle(["true"])
    kept = new_id()
    ok(mc("run", "--keep", "--no-new-keyring", "--no-subreaper", "--bundle", b, kept,
          state_root=state_root))
    assert status(kept, state_root) == "stopped"
    ok(mc("delete", kept, state_root=state_root))
    b = bundle(["sh", "-c", "echo $((1 + 1))"])
    assert ok(mc("run", "--no-pivot", "--bundle", b, new_id(),
                 state_root=state_root)).strip() == "2"
    # run -d of a bundle says nothing, as runc's (docker's of an image says the id): its
    # stdout may be the container's
    detached = new_id()
    r = mc_bg("run", "-d", "--bundle", bundle(["sleep", "1000"]), detached,
              state_root=state_root)
    try:
        assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
        assert status(detached, state_root) == "running"
    finally:
        ok(mc("delete", "-f", detached, state_root=state_root))
    assert no_state(state_root)


def test_exec_pid_file_where_there_is_no_directory(state_root, bundle):
    """exec -d --pid-file into a missing directory: said, and no process left running
    unrecorded (it was started, and the error went to the /dev/null it was given)."""
    cid, _ = mc_create(bundle(["sleep", "1000"]), state_root=state_root)
    try:
        ok(mc("start", cid, state_root=state_root))
        r = mc_bg("exec", "-d", "--pid-file", "/nonexistent/dir/pid", cid, "sleep", "777",
                  state_root=state_root)
        assert one_line_error(r, 1) == "minicontainer: --pid-file /nonexistent/dir/pid: no " \
            "such directory"
        assert "777" not in ok(mc("ps", cid, state_root=state_root))
    finally:
        ok(mc("delete", "-f", cid, state_root=state_root))


def test_delete_of_stopped_and_delete_force_of_running(bundle, state_root, cgroups):
    b = bundle(["sleep", "1000"])
    stopped, _ = mc_create(bundle(["true"]), state_root=state_root)
    ok(mc("start", stopped, state_root=state_root))
    wait_status(stopped, "stopped", state_root)
    running, _ = mc_create(b, state_root=state_root)
    ok(mc("start", running, state_root=state_root))
    pid = state(running, state_root)["pid"]
    assert "--force" in one_line_error(mc("delete", running, state_root=state_root), code=1)
    ok(mc("delete", stopped, state_root=state_root))
    ok(mc("delete", "--force", running, state_root=state_root))
    assert gone(pid)
    assert not cgroups.exists("minicontainer/" + running)
    assert os.listdir(state_root) == []


@pytest.mark.parametrize("content", [None, "", "{", "{\"id\": ", "\0\0\0"])
def test_delete_of_a_half_created_state_dir(state_root, content):
    # what a create that crashed before writing its state leaves
    cid = new_id()
    d = os.path.join(state_root, cid)
    os.makedirs(d)
    if content is not None:
        with open(os.path.join(d, "state.json"), "w") as f:
            f.write(content)
    assert status(cid, state_root) == "creating"
    assert cid in ok(mc("list", "-q", state_root=state_root)).split()
    ok(mc("delete", cid, state_root=state_root))
    assert not os.path.exists(d)
    assert ok(mc("list", "-q", state_root=state_root)).strip() == ""


def test_delete_of_a_state_whose_pid_is_now_another_process(state_root):
    # the recorded pid was reused: the start time tells, and delete must not kill it
    bystander = subprocess.Popen(["sleep", "1000"])
    try:
        cid = new_id()
        os.makedirs(os.path.join(state_root, cid))
        with open(os.path.join(state_root, cid, "state.json"), "w") as f:
            json.dump({"id": cid, "pid": bystander.pid, "start_time": 1, "bundle": "/"}, f)
        assert state(cid, state_root)["status"] == "stopped"
        ok(mc("delete", cid, state_root=state_root))
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_delete_after_create_was_killed_midway(bundle, tmp_path, state_root, cgroups):
    # A createRuntime hook that blocks holds `create` at a known point; kill -9 it there.
    marker = tmp_path / "hook.pid"
    hook = tmp_path / "block.sh"
    hook.write_text("#!/bin/sh\necho $$ > %s.tmp; mv %s.tmp %s\nexec sleep 1000\n"
                    % (marker, marker, marker))
    hook.chmod(0o755)
    b = bundle(["true"], edit=lambda c: c.update(hooks={"createRuntime": [
        {"path": str(hook), "env": [HOOK_PATH]}]}))
    cid = new_id()
    out, err = str(tmp_path / "create.out"), str(tmp_path / "create.err")
    with open(out, "w") as o, open(err, "w") as e:
        proc = subprocess.Popen(mc_argv("create", "--bundle", b, cid, state_root=state_root),
                                stdin=subprocess.DEVNULL,
                                stdout=o, stderr=e)
    try:
        hook_pid = int(wait_for(lambda: marker.exists() and marker.read_text(),
                                what="the hook to run"))
        cg = "minicontainer/" + cid
        assert cgroups.exists(cg)
        proc.kill()
        proc.wait()
        os.kill(hook_pid, signal.SIGKILL)
        assert status(cid, state_root) == "creating"
        assert cid in ok(mc("list", "-q", state_root=state_root)).split()
        ok(mc("delete", cid, state_root=state_root))
        assert not os.path.exists(os.path.join(state_root, cid))
        wait_for(lambda: not cgroups.exists(cg), what="the cgroup to go")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_two_containers_at_once_and_id_in_use(state_root, bundle):
    b = bundle(["sleep", "1000"])
    a, _ = mc_create(b, state_root=state_root)
    c, _ = mc_create(b, state_root=state_root)
    ok(mc("start", a, state_root=state_root))
    ok(mc("start", c, state_root=state_root))
    pids = [state(x, state_root)["pid"] for x in (a, c)]
    assert pids[0] != pids[1]
    listed = {s["id"]: (s["status"], s["pid"])
              for s in json.loads(ok(mc("list", "--format", "json", state_root=state_root)))}
    assert listed == {a: ("running", pids[0]), c: ("running", pids[1])}
    rc, _, err = mc_create(b, a, check=False, state_root=state_root)[1]
    assert rc == 1 and err == "minicontainer: container id %s is already in use\n" % a
    assert state(a, state_root)["pid"] == pids[0]
    ok(mc("delete", "-f", a, state_root=state_root))
    assert status(c, state_root) == "running"
    ok(mc("delete", "-f", c, state_root=state_root))


def test_concurrent_create_of_one_id(state_root, bundle, tmp_path):
    b = bundle(["sleep", "1000"])
    cid = new_id()
    # stderr to files: the winner's container keeps its stderr open
    errs = [open(tmp_path / ("create%d.err" % i), "w+") for i in range(4)]
    procs = [subprocess.Popen(mc_argv("create", "--bundle", b, cid, state_root=state_root),
                              stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=e) for e in errs]
    results = []
    for p, e in zip(procs, errs):
        rc = p.wait(timeout=30)
        e.seek(0)
        results.append((rc, e.read()))
        e.close()
    assert sorted(rc for rc, _ in results) == [0, 1, 1, 1], results
    for rc, err in results:
        assert "Traceback" not in err
        if rc:
            assert "already in use" in err
    assert status(cid, state_root) == "created"
    ok(mc("delete", cid, state_root=state_root))


def test_concurrent_start_kill_delete_on_one_id(bundle, state_root, cgroups):
    b = bundle(["sleep", "1000"])
    for _ in range(3):
        cid, _ = mc_create(b, state_root=state_root)
        pid = state(cid, state_root)["pid"]
        commands = [["start", cid], ["start", cid], ["kill", cid, "KILL"], ["kill", cid],
                    ["delete", "-f", cid], ["delete", "-f", cid], ["state", cid]]
        procs = [subprocess.Popen(mc_argv(*c, state_root=state_root), stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for c in commands]
        for c, p in zip(commands, procs):
            rc = p.wait(timeout=30)
            err = p.stderr.read()
            p.stderr.close()
            assert "Traceback" not in err, (c, err)
            assert rc in (0, 1) and len(err.strip().splitlines()) == rc, (c, rc, err)
            if c[0] == "delete":
                assert rc == 0, err  # delete -f always ends with the container gone
        assert one_line_error(mc("state", cid, state_root=state_root),
                              code=1).endswith("does not exist")
        assert gone(pid)
        assert not os.path.exists(os.path.join(state_root, cid))
        assert not cgroups.exists("minicontainer/" + cid)


def test_concurrent_deletes_run_poststop_once(state_root, bundle, tmp_path):
    hook = tmp_path / "poststop.sh"
    hook.write_text("#!/bin/sh\necho stopped >> %s/poststop\n" % tmp_path)
    hook.chmod(0o755)
    b = bundle(["sleep", "1000"], edit=lambda c: c.update(hooks={"poststop": [
        {"path": str(hook), "env": [HOOK_PATH]}]}))
    cid, _ = mc_create(b, state_root=state_root)
    ok(mc("start", cid, state_root=state_root))
    procs = [subprocess.Popen(mc_argv("delete", "-f", cid, state_root=state_root),
                              stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=30)
        assert p.returncode == 0 and err == "", err
    assert (tmp_path / "poststop").read_text() == "stopped\n"


def test_state_json_is_always_whole_while_it_changes(bundle, state_root):
    cid, _ = mc_create(bundle(["sleep", "1000"]), state_root=state_root)
    ok(mc("start", cid, state_root=state_root))
    path = os.path.join(state_root, cid, "state.json")
    stop = threading.Event()
    bad = []

    def reader():
        while not stop.is_set():
            with open(path) as f:
                data = f.read()
            try:
                json.loads(data)
            except ValueError:
                bad.append(data)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for limit in range(100, 112):
            ok(mc("update", "--pids-limit", limit, cid, state_root=state_root))
    finally:
        stop.set()
        t.join()
    assert bad == []
    assert os.listdir(os.path.dirname(path)) == ["state.json"] or \
        not [n for n in os.listdir(os.path.dirname(path)) if ".tmp" in n]
    ok(mc("delete", "-f", cid, state_root=state_root))


def test_preserve_fds(state_root, bundle):
    b = bundle(["sh", "-c", "echo through fd 3 >&3 && ls /proc/self/fd"])
    r, w = os.pipe()
    out_r, out_w = os.pipe()
    try:
        cid = new_id()
        # the runtime gets the pipe as its fd 3, and passes it on as the container's fd 3
        wrap = "import os, sys; os.dup2(%d, 3); os.close(%d); os.execv(sys.argv[1], " \
               "sys.argv[1:])" % (w, w)
        subprocess.run([sys.executable, "-c", wrap] +
                       mc_argv("create", "--bundle", b, "--preserve-fds", 1, cid,
                               state_root=state_root),
                       pass_fds=(w,), stdin=subprocess.DEVNULL, stdout=out_w, check=True,
                       timeout=30)
    finally:
        os.close(w)
        os.close(out_w)
    ok(mc("start", cid, state_root=state_root))
    assert read_until_eof(r) == b"through fd 3\n"
    os.close(r)
    listed = read_until_eof(out_r).decode().split()
    os.close(out_r)
    assert listed == ["0", "1", "2", "3", "4"]  # 4 is ls's own /proc/self/fd
    wait_status(cid, "stopped", state_root)
    ok(mc("delete", cid, state_root=state_root))


def test_run_a_bundle_waits_and_removes_the_container(state_root, bundle):
    cid = new_id()
    r = mc("run", "--bundle", bundle(["sh", "-c", "echo ran as $$; exit 4"]), cid,
           state_root=state_root)
    assert r.returncode == 4, r.stderr
    assert r.stdout == "ran as 1\n"
    assert ok(mc("list", "-q", state_root=state_root)).strip() == ""


# ---- console socket ----

class ConsoleSocket:
    """What an engine listens on: receives the pty master by SCM_RIGHTS."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(4)
        self.sock.settimeout(20)

    def receive(self):
        conn, _ = self.sock.accept()
        with conn:
            msg, fds, _, _ = socket.recv_fds(conn, 4096, 4)
        assert len(fds) == 1, (msg, fds)
        assert stat.S_ISCHR(os.fstat(fds[0]).st_mode)
        assert os.isatty(fds[0])
        return fds[0]

    def close(self):
        self.sock.close()


@pytest.fixture
def console(tmp_path):
    c = ConsoleSocket(str(tmp_path / "console.sock"))
    yield c
    c.close()


def test_create_with_a_console_socket(state_root, bundle, console):
    b = bundle(["sh"], edit=lambda c: c["process"].update(terminal=True))
    cid, (rc, out, err) = mc_create(b, None, "--console-socket", console.path,
                                    state_root=state_root)
    master = console.receive()
    try:
        ok(mc("start", cid, state_root=state_root))
        os.write(master, b"tty; exit 3\n")
        output = read_until_eof(master).decode(errors="replace")
    finally:
        os.close(master)
    assert "/dev/pts/0" in output
    wait_status(cid, "stopped", state_root)
    ok(mc("delete", cid, state_root=state_root))


def test_terminal_without_a_console_socket_is_an_error(bundle, state_root):
    b = bundle(["sh"], edit=lambda c: c["process"].update(terminal=True))
    cid, (rc, _, err) = mc_create(b, check=False, state_root=state_root)
    assert rc == 1 and "console" in err and len(err.splitlines()) == 1
    assert no_state(state_root)


def test_exec_tty_with_a_console_socket(state_root, bundle, console):
    cid, _ = mc_create(bundle(["sleep", "1000"]), state_root=state_root)
    ok(mc("start", cid, state_root=state_root))
    proc = subprocess.Popen(mc_argv("exec", "--tty", "--console-socket", console.path, cid, "sh",
                                    "-c", "tty; exit 7", state_root=state_root),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        master = console.receive()
        try:
            output = read_until_eof(master).decode(errors="replace")
        finally:
            os.close(master)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "/dev/pts/" in output, output
    assert proc.returncode == 7, err
    ok(mc("delete", "-f", cid, state_root=state_root))


# ---- exec ----

def caps_bits(status_line):
    return int(status_line.split()[1], 16)


def test_exec_process_file(state_root, bundle, tmp_path):
    cid, _ = mc_create(bundle(["sleep", "1000"]), state_root=state_root)
    ok(mc("start", cid, state_root=state_root))
    caps = ["CAP_NET_RAW"]
    process = {
        "terminal": False, "user": {"uid": 1000, "gid": 1000, "additionalGids": [100]},
        "args": ["sh", "-c", "echo $FOO; pwd; id -u; id -g; grep CapEff /proc/self/status; "
                             "grep Groups /proc/self/status; ulimit -n"],
        "env": ["PATH=/bin:/usr/bin", "FOO=from-process-json"], "cwd": "/tmp",
        "capabilities": {k: caps for k in ("bounding", "effective", "inheritable",
                                           "permitted", "ambient")},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 321, "soft": 123}],
    }
    pf = tmp_path / "process.json"
    pf.write_text(json.dumps(process))
    lines = ok(mc("exec", "--process", pf, cid, state_root=state_root)).splitlines()
    assert lines[:4] == ["from-process-json", "/tmp", "1000", "1000"]
    assert caps_bits(lines[4]) == 1 << 13  # CAP_NET_RAW only, kept by the ambient set
    assert lines[5].split()[1:] == ["100"]
    assert lines[6] == "123"
    ok(mc("delete", "-f", cid, state_root=state_root))


def test_a_bundle_as_runc_spec_writes_it(state_root, tmp_path, busybox_rootfs):
    # runc spec lists ambient capabilities that are not inheritable: the kernel cannot raise
    # them, and runc skips them; create must not fail, and the sets end as runc leaves them.
    if not shutil.which("runc"):
        pytest.skip("runc is not installed")
    b = tmp_path / "runc-bundle"
    b.mkdir()
    subprocess.run(["runc", "spec"], cwd=b, check=True)
    config = json.loads((b / "config.json").read_text())
    assert "inheritable" not in config["process"]["capabilities"]
    config["root"]["path"] = busybox_rootfs
    config["process"].update(terminal=False, args=["grep", "^Cap", "/proc/self/status"])
    (b / "config.json").write_text(json.dumps(config))
    got = {line.split(":")[0]: caps_bits(line) for line in
           ok(mc("run", "--bundle", b, new_id(), state_root=state_root)).splitlines()}
    three = (1 << 29) | (1 << 5) | (1 << 10)  # AUDIT_WRITE, KILL, NET_BIND_SERVICE
    assert got == {"CapInh": 0, "CapPrm": three, "CapEff": three, "CapBnd": three, "CapAmb": 0}


def test_rlimits_unlimited_as_docker_sends_it(state_root, bundle):
    # docker's --ulimit core=-1 arrives as 2**64-1; soft and hard are set as given.
    unlimited = 18446744073709551615
    rlimits = [{"type": "RLIMIT_CORE", "soft": unlimited, "hard": unlimited},
               {"type": "RLIMIT_STACK", "soft": 8 << 20, "hard": unlimited},
               {"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200}]
    b = bundle(["sh", "-c", "ulimit -Sc; ulimit -Hc; ulimit -Ss; ulimit -Hs; ulimit -Sn; "
                "ulimit -Hn"], edit=lambda c: c["process"].update(rlimits=rlimits))
    assert ok(mc("run", "--bundle", b, new_id(), state_root=state_root)).split() == \
        ["unlimited", "unlimited", "8192", "unlimited", "100", "200"]


# /proc/self/stat: nice (19), rt_priority (40), policy (41); busybox ionice: the I/O class.
SCHED_SCRIPT = "cut -d' ' -f19,40,41 /proc/self/stat; ionice; echo $HOME"


@pytest.mark.parametrize("scheduler, io, user, expected", [
    ({"policy": "SCHED_BATCH", "nice": 7}, {"class": "IOPRIO_CLASS_IDLE", "priority": 0},
     {"uid": 0, "gid": 0}, ["7 0 3", "idle", "/root"]),
    ({"policy": "SCHED_IDLE"}, {"class": "IOPRIO_CLASS_BE", "priority": 6},
     {"uid": 1000, "gid": 1000}, ["0 0 5", "best-effort: prio 6", "/home/user"]),
    ({"policy": "SCHED_OTHER", "nice": -5},
     {"class": "IOPRIO_CLASS_RT", "priority": 2}, {"uid": 4242, "gid": 4242},
     ["-5 0 0", "realtime: prio 2", "/"]),
])
def test_scheduler_io_priority_and_home(state_root, bundle, scheduler, io, user, expected):
    # HOME comes from the container's /etc/passwd when the env lacks it (/ for no entry),
    # for the init and for exec.
    def edit(c):
        c["process"].update(scheduler=scheduler, ioPriority=io, user=user,
                            env=["PATH=/bin:/usr/bin"])
    b = bundle(["sh", "-c", "(%s) > /dev/shm/init; exec sleep 1000" % SCHED_SCRIPT], edit=edit)
    cid, _ = mc_create(b, state_root=state_root)
    ok(mc("start", cid, state_root=state_root))
    try:
        assert wait_for(lambda: ok(mc("exec", cid, "cat", "/dev/shm/init",
                                      state_root=state_root)).count("\n") == 3)
        assert ok(mc("exec", cid, "cat", "/dev/shm/init",
                     state_root=state_root)).splitlines() == expected
        assert ok(mc("exec", cid, "sh", "-c", SCHED_SCRIPT,
                     state_root=state_root)).splitlines() == expected
    finally:
        ok(mc("delete", "-f", cid, state_root=state_root))


@pytest.mark.parametrize("home, expected", [("HOME=", "/home/user"),
                                            ("HOME=/custom", "/custom")])
def test_an_empty_home_is_unset(state_root, bundle, home, expected):
    """HOME= (empty) is taken as unset, as runc takes it: the user's home from the
    container's /etc/passwd; one that says something stays."""
    b = bundle(["sh", "-c", "echo $HOME; env | grep -c ^HOME="], edit=lambda c: c[
        "process"].update(user={"uid": 1000, "gid": 1000}, env=["PATH=/bin:/usr/bin", home]))
    assert ok(mc("run", "--bundle", b, new_id(), state_root=state_root)).split() == \
        [expected, "1"]


def test_realtime_policy_without_realtime_time_fails_create(state_root, bundle):
    if not os.path.exists("/sys/fs/cgroup/cpu/cpu.rt_runtime_us"):
        pytest.skip("no RT group scheduling on this host")
    b = bundle(["true"], edit=lambda c: c["process"].update(
        scheduler={"policy": "SCHED_FIFO", "priority": 10}))
    err = one_line_error(mc("create", "--bundle", b, new_id(), state_root=state_root), code=1)
    assert "sched_setattr SCHED_FIFO: Operation not permitted" in err and "realtime" in err


@pytest.mark.parametrize("propagation, root_flag, hears_host", [
    (None, "master:", True),  # unset: rslave, as runc
    ("rprivate", None, False), ("private", None, False), ("rslave", "master:", True),
    ("slave", "master:", True), ("rshared", "shared:", True), ("shared", "shared:", True),
    ("runbindable", "unbindable", False), ("unbindable", "unbindable", False)])
def test_rootfs_propagation(state_root, bundle, tmp_path, busybox_rootfs, propagation, root_flag,
                            hears_host):
    # The rootfs on a shared mount of the host: a slave (or shared) root hears the host's
    # mounts, a private one does not, and what the container mounts never reaches the host.
    top = tmp_path / "top"
    top.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", top], check=True)
    try:
        subprocess.run(["mount", "--make-shared", top], check=True)
        rootfs = top / "rootfs"
        shutil.copytree(busybox_rootfs, rootfs, symlinks=True)
        for d in ("mnt", "srv"):
            (rootfs / d).mkdir(exist_ok=True)

        def edit(c):
            if propagation:
                c["linux"]["rootfsPropagation"] = propagation
            for kind in c["process"]["capabilities"].values():
                kind.append("CAP_SYS_ADMIN")
            c["linux"].pop("seccomp", None)
        b = bundle(["sh", "-c", "mount -t tmpfs inner /mnt && exec sleep 1000"],
                   rootfs=str(rootfs), edit=edit)
        cid, _ = mc_create(b, state_root=state_root)
        ok(mc("start", cid, state_root=state_root))
        try:
            root = ok(mc("exec", cid, "awk", '$5 == "/"', "/proc/self/mountinfo",
                         state_root=state_root)).split()
            flags = root[6:root.index("-")]
            assert [f for f in flags if f.startswith(root_flag)] if root_flag else not flags, root
            subprocess.run(["mount", "-t", "tmpfs", "fromhost", rootfs / "srv"], check=True)
            seen = ok(mc("exec", cid, "awk", '$5 == "/srv"', "/proc/self/mountinfo",
                         state_root=state_root))
            assert bool(seen) == hears_host, seen
            assert wait_for(lambda: " inner " in ok(mc("exec", cid, "awk", '$5 == "/mnt"',
                                                       "/proc/self/mountinfo",
                                                       state_root=state_root)))
            with open("/proc/self/mountinfo") as f:
                assert str(rootfs / "mnt") not in f.read()
        finally:
            ok(mc("delete", "-f", cid, state_root=state_root))
    finally:
        subprocess.run(["umount", "-R", "-l", top], check=True)


@pytest.mark.parametrize("propagation, reaches_host", [
    ("rshared", True), (None, False), ("rslave", False), ("rprivate", False)])
def test_a_shared_bind_with_a_shared_root_is_bidirectional(state_root, bundle, tmp_path,
                                                          busybox_rootfs, propagation,
                                                          reaches_host):
    """CRI's Bidirectional: a bind "rshared" with rootfsPropagation rshared is a peer of the
    host's mount, so what the container mounts in it reaches the host (runc's); with another
    root it is a peer group of its own. Nothing else the container (or its setup) mounts
    reaches the host: the rootfs is a mount of its own here, as an engine's overlay is."""
    top = tmp_path / "top"
    top.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", top], check=True)
    try:
        subprocess.run(["mount", "--make-shared", top], check=True)
        rootfs, vol = top / "rootfs", top / "vol"
        rootfs.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "rootfs", rootfs], check=True)
        shutil.copytree(busybox_rootfs, rootfs, symlinks=True, dirs_exist_ok=True)
        for d in ("vol/sub", "mnt"):
            (rootfs / d).mkdir(parents=True, exist_ok=True)
        (vol / "sub").mkdir(parents=True)

        def edit(c):
            if propagation:
                c["linux"]["rootfsPropagation"] = propagation
            c["mounts"].append({"destination": "/vol", "type": "bind", "source": str(vol),
                                "options": ["rbind", "rshared"]})
            for kind in c["process"]["capabilities"].values():
                kind.append("CAP_SYS_ADMIN")
            c["linux"].pop("seccomp", None)
        b = bundle(["sh", "-c", "mount -t tmpfs inner /vol/sub && mount -t tmpfs inner /mnt"],
                   rootfs=str(rootfs), edit=edit)
        ok(mc("run", "--bundle", b, new_id(), state_root=state_root))
        assert mountpoints_under(str(top)) == [str(top), str(rootfs)] + (
            [str(vol / "sub")] if reaches_host else [])
    finally:
        subprocess.run(["umount", "-R", "-l", top], check=True)


def test_devices_through_a_symlink_stay_in_the_root(state_root, bundle, rootfs_copy, tmp_path):
    # A device path through a symlink of the rootfs that points at a host directory is made
    # inside the root; the directories it needs are 0755, not world-writable.
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(str(outside), os.path.join(rootfs_copy, "devlink"))
    devices = [{"path": "/devlink/sub/null2", "type": "c", "major": 1, "minor": 3,
                "fileMode": 0o620, "uid": 7, "gid": 8},
               {"path": "/dev/../devlink/fifo", "type": "p", "fileMode": 0o600}]
    b = bundle(["sh", "-c", "stat -c '%A %u %g %t,%T' /devlink/sub/null2 /devlink/fifo; "
                            "stat -c %a /devlink/sub"], rootfs=rootfs_copy,
               edit=lambda c: c["linux"].update(devices=devices))
    assert ok(mc("run", "--bundle", b, new_id(), state_root=state_root)).splitlines() == \
        ["crw--w---- 7 8 1,3", "prw------- 0 0 0,0", "755"]
    assert os.listdir(outside) == []


@pytest.mark.parametrize("domainname, sysctl, expected", [
    ("a.example", None, "a.example"), (None, "b.example", "b.example"),
    ("c.example", "c.example", "c.example")])
def test_domainname_and_its_sysctl(state_root, bundle, domainname, sysctl, expected):
    def edit(c):
        if domainname:
            c["domainname"] = domainname
        if sysctl:
            c["linux"]["sysctl"] = {"kernel.domainname": sysctl}
    b = bundle(["cat", "/proc/sys/kernel/domainname"], edit=edit)
    assert ok(mc("run", "--bundle", b, new_id(), state_root=state_root)) == expected + "\n"


def test_socket_activation_and_preserve_fds(state_root, bundle):
    # Started by systemd with LISTEN_FDS=1 (LISTEN_PID ours): fd 3 goes on to the container
    # with LISTEN_FDS=1 and LISTEN_PID=1, and --preserve-fds 1 passes the fd after it.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    r, w = os.pipe()
    b = bundle(["sh", "-c", "echo $LISTEN_FDS $LISTEN_PID; readlink /proc/self/fd/3 | "
                            "cut -d: -f1; echo through-fd-4 >&4"])

    def fds():
        os.dup2(listener.fileno(), 3)
        os.dup2(w, 4)
    argv = " ".join("'%s'" % a for a in mc_argv("run", "--preserve-fds", "1", "--bundle", b,
                                                new_id(), state_root=state_root))
    out = subprocess.run(["sh", "-c", "LISTEN_PID=$$ LISTEN_FDS=1 exec " + argv],
                         preexec_fn=fds, close_fds=False,  # fds() puts 3 and 4 in place
                         capture_output=True, text=True, timeout=30)
    os.close(w)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "1", "socket"]
    assert os.read(r, 100) == b"through-fd-4\n"
    os.close(r)
    listener.close()


def test_create_reports_what_fails_before_start(bundle, state_root):
    # Capability sets the kernel refuses (effective beyond permitted): create fails and says
    # why, instead of a created container that dies unheard at start.
    def edit(c):
        c["process"]["capabilities"] = {"bounding": ["CAP_CHOWN"], "effective": ["CAP_CHOWN"],
                                        "permitted": []}
    cid, (rc, _, err) = mc_create(bundle(["true"], edit=edit), check=False, state_root=state_root)
    assert rc == 1 and "process.capabilities: cannot set them" in err, err
    assert len(err.strip().splitlines()) == 1
    assert no_state(state_root)


@pytest.mark.parametrize("userns", [False, True])
def test_time_namespace_with_offsets(state_root, bundle, userns):
    # The init and what exec starts see the clocks moved by the offsets; the host does not.
    def edit(c):
        c["linux"]["namespaces"].append({"type": "time"})
        c["linux"]["timeOffsets"] = {"monotonic": {"secs": 1000, "nanosecs": 0},
                                     "boottime": {"secs": 2000, "nanosecs": 5}}
        if userns:
            c["linux"]["namespaces"].append({"type": "user"})
            c["linux"]["uidMappings"] = c["linux"]["gidMappings"] = [
                {"containerID": 0, "hostID": 0, "size": 65536}]
    cid, _ = mc_create(bundle(["sleep", "1000"], edit=edit), state_root=state_root)
    ok(mc("start", cid, state_root=state_root))
    try:
        with open("/proc/uptime") as f:
            host = float(f.read().split()[0])
        inside = float(ok(mc("exec", cid, "cat", "/proc/uptime", state_root=state_root)).split()[0])
        assert 1990 < inside - host < 2030
        assert ok(mc("exec", cid, "cat", "/proc/self/timens_offsets",
                     state_root=state_root)).split() == \
            ["monotonic", "1000", "0", "boottime", "2000", "5"]
        init = state(cid, state_root)["pid"]
        assert os.readlink("/proc/%d/ns/time" % init) != os.readlink("/proc/self/ns/time")
    finally:
        ok(mc("delete", "-f", cid, state_root=state_root))


def test_without_a_mount_namespace(state_root, bundle, rootfs_copy):
    # As runc runs it: in the host's mount namespace, chrooted to the rootfs; what it needs
    # mounted (here /proc) the caller has mounted in the rootfs beforehand.
    proc = os.path.join(rootfs_copy, "proc")
    subprocess.run(["mount", "--bind", "/proc", proc], check=True)
    try:
        def edit(c):
            c["linux"]["namespaces"] = [ns for ns in c["linux"]["namespaces"]
                                        if ns["type"] != "mount"]
            c["mounts"] = []
            for key in ("maskedPaths", "readonlyPaths"):
                c["linux"].pop(key)
        open(os.path.join(rootfs_copy, "only-in-this-rootfs"), "w").close()
        b = bundle(["sh", "-c", "ls /only-in-this-rootfs; readlink /proc/self/ns/mnt"],
                   rootfs=rootfs_copy, edit=edit)
        out = ok(mc("run", "--bundle", b, new_id(), state_root=state_root)).split()
        assert out == ["/only-in-this-rootfs", os.readlink("/proc/self/ns/mnt")]
    finally:
        subprocess.run(["umount", proc], check=True)


def test_id_mapped_bind_mounts(state_root, bundle, rootfs_copy, tmp_path):
    # A volume owned by root and by 1000 on disk, seen through uidMappings/gidMappings of
    # the mount (0 -> 5000): as 5000 and 6000. The destination goes through a symlink of the
    # rootfs that points at a host directory: resolved inside the root, as every mount.
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "f").write_text("x")
    os.chown(vol, 1000, 1000)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(str(outside), os.path.join(rootfs_copy, "link"))
    maps = [{"containerID": 0, "hostID": 5000, "size": 65536}]

    def edit(c):
        c["mounts"].append({"destination": "/link/vol", "type": "bind", "source": str(vol),
                            "options": ["bind"], "uidMappings": maps, "gidMappings": maps})
    b = bundle(["sh", "-c", "stat -c '%u %g' /link/vol /link/vol/f"], rootfs=rootfs_copy,
               edit=edit)
    assert ok(mc("run", "--bundle", b, new_id(), state_root=state_root)).split() == \
        ["6000", "6000", "5000", "5000"]
    assert os.listdir(outside) == [] and os.stat(vol / "f").st_uid == 0


def test_id_mapped_mount_in_a_user_namespace(state_root, bundle, walkable):
    # "idmap" without maps of its own takes the container's: the container's root owns the
    # host root's files there, and what it writes is the host root's on disk.
    vol = walkable / "vol"
    vol.mkdir()
    (vol / "f").write_text("x")
    maps = [{"containerID": 0, "hostID": 100000, "size": 65536}]

    def edit(c):
        c["linux"]["namespaces"].append({"type": "user"})
        c["linux"]["uidMappings"] = c["linux"]["gidMappings"] = maps
        c["mounts"].append({"destination": "/vol", "type": "bind", "source": str(vol),
                            "options": ["rbind", "idmap"]})
    b = bundle(["sh", "-c", "stat -c '%u' /vol/f; echo w > /vol/g && stat -c '%u' /vol/g"],
               rootfs=str(walkable / "rootfs"), edit=edit)
    assert ok(mc("run", "--bundle", b, new_id(), state_root=state_root)).split() == ["0", "0"]
    assert os.stat(vol / "g").st_uid == 0


def test_exec_args_with_env_cwd_user_cap(state_root, bundle):
    cid, _ = mc_create(bundle(["sleep", "1000"]), state_root=state_root)
    ok(mc("start", cid, state_root=state_root))
    out = ok(mc("exec", "-e", "FOO=bar", "--cwd", "/home/user", "--user", "1000:100", "--cap",
                "CAP_SYS_ADMIN", cid, "sh", "-c",
                "echo $FOO; pwd; id -u; id -g; grep CapEff /proc/self/status",
                state_root=state_root))
    lines = out.splitlines()
    assert lines[:4] == ["bar", "/home/user", "1000", "100"]
    # none for a user, as runc 1.1.5 gives (the spec has no inheritable set, --cap adds none)
    assert caps_bits(lines[4]) == 0
    out = ok(mc("exec", "--cap", "CAP_SYS_ADMIN", cid, "grep", "CapEff", "/proc/self/status",
                state_root=state_root))
    assert caps_bits(out) & (1 << 21)  # SYS_ADMIN added, for root
    assert caps_bits(out) & (1 << 13)  # and the container's own (NET_RAW) kept
    # runc's -g: supplementary groups of the process
    assert ok(mc("exec", "-g", "5", "--additional-gids", "7", cid, "sh", "-c",
                 "grep Groups /proc/self/status", state_root=state_root)).split() == \
        ["Groups:", "5", "7"]
    assert "a group id is a number" in one_line_error(mc("exec", "-g", "x", cid, "true",
                                                         state_root=state_root), 1)
    # the exit status of the process is exec's
    assert mc("exec", cid, "sh", "-c", "exit 5", state_root=state_root).returncode == 5
    ok(mc("delete", "-f", cid, state_root=state_root))


CAP_LINES = "grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status"


def test_no_capabilities_in_the_config_is_none(state_root, bundle, tmp_path):
    """A process without process.capabilities gets no capability at all, bounding set
    included, as runc gives it (they were the runtime's, all of them); exec --process of a
    process without them gets the container's, as runc's exec."""
    b = bundle(["sh", "-c", CAP_LINES + "; exec sleep 1000"],
               edit=lambda c: c["process"].pop("capabilities"))
    out = tmp_path / "out"
    cid, _ = mc_create(b, state_root=state_root, stdout=os.open(out, os.O_WRONLY | os.O_CREAT))
    try:
        ok(mc("start", cid, state_root=state_root))
        wait_for(lambda: out.read_text().count("\n") == 5, what="the capability lines")
        assert [caps_bits(line) for line in out.read_text().splitlines()] == [0] * 5
        process = {"args": ["sh", "-c", CAP_LINES], "cwd": "/", "user": {"uid": 0, "gid": 0},
                   "env": ["PATH=/bin:/usr/bin"]}
        (tmp_path / "process.json").write_text(json.dumps(process))
        got = ok(mc("exec", "--process", str(tmp_path / "process.json"), cid,
                    state_root=state_root))
        assert [caps_bits(line) for line in got.splitlines()] == [0] * 5
    finally:
        ok(mc("delete", "-f", cid, state_root=state_root))
    cid, _ = mc_create(bundle(["sleep", "1000"]), state_root=state_root)
    try:
        ok(mc("start", cid, state_root=state_root))
        own = ok(mc("exec", cid, "sh", "-c", CAP_LINES, state_root=state_root))
        got = ok(mc("exec", "--process", str(tmp_path / "process.json"), cid,
                    state_root=state_root))
        assert got == own and caps_bits(got.splitlines()[2]) & (1 << 13)  # NET_RAW, as asked
    finally:
        ok(mc("delete", "-f", cid, state_root=state_root))


def test_recursive_mount_options(state_root, bundle, tmp_path):
    """rro, rnosuid, rnodev, rnoexec reach the mounts an rbind brings along (mount_setattr
    with AT_RECURSIVE): the flags of mount(2) change only the top one. They went to the
    filesystem's data, which a bind ignores: the mount stayed writable."""
    source = tmp_path / "source"
    (source / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "rec-test", str(source / "sub")], check=True)
    try:
        script = "touch /mnt/x /mnt/sub/y; grep ' /mnt' /proc/self/mountinfo | cut -d' ' -f5,6"
        b = bundle(["sh", "-c", script], edit=lambda c: c["mounts"].append(
            {"destination": "/mnt", "type": "bind", "source": str(source),
             "options": ["rbind", "rro", "rnosuid", "rnodev", "rnoexec"]}))
        r = mc("run", "--bundle", b, new_id(), state_root=state_root)
        assert r.returncode == 0, r.stderr
        assert r.stderr.splitlines() == ["touch: /mnt/x: Read-only file system",
                                         "touch: /mnt/sub/y: Read-only file system"]
        mounts = dict(line.split() for line in r.stdout.splitlines())
        assert set(mounts) == {"/mnt", "/mnt/sub"}
        for options in mounts.values():
            assert {"ro", "nosuid", "nodev", "noexec"} <= set(options.split(",")), mounts
        assert os.listdir(source / "sub") == []
    finally:
        subprocess.run(["umount", str(source / "sub")], check=True)


def test_cgroups_path_stays_in_the_hierarchy(state_root, bundle, cgroups):
    """A linux.cgroupsPath with ".." is cleaned as runc cleans it: the cgroup is at the
    hierarchy's top, never a directory made above /sys/fs/cgroup/..."""
    name = "mc-test-escape-" + new_id()
    b = bundle(["cat", "/proc/self/cgroup"],
               edit=lambda c: c["linux"].update(cgroupsPath="../../../../" + name))
    cid, _ = mc_create(b, state_root=state_root)
    try:
        assert not os.path.exists("/" + name)
        assert cgroups.member("/" + name, state(cid, state_root)["pid"])
    finally:
        ok(mc("delete", "-f", cid, state_root=state_root))
    assert not os.path.exists("/" + name)


def test_exec_joins_the_containers_namespaces_and_cgroup(state_root, bundle, cgroups):
    b = bundle(["sleep", "1000"], edit=lambda c: c.update(hostname="inside"))
    cid, _ = mc_create(b, state_root=state_root)
    ok(mc("start", cid, state_root=state_root))
    init = state(cid, state_root)["pid"]
    out = ok(mc("exec", cid, "sh", "-c",
                "hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /; cat /proc/self/cgroup; "
                "for n in mnt net uts ipc pid cgroup; do readlink /proc/self/ns/$n; done",
                state_root=state_root))
    lines = out.splitlines()
    assert lines[0] == "inside"
    assert lines[1].strip() == "sleep 1000"  # pid 1 is the container's init: its pid view
    assert "bin" in lines[2:] and "home" in lines[2:]  # the busybox root: its mount view
    cg = "\n".join(line for line in lines if line.split(":")[0].isdigit())
    assert cgroups.member("/minicontainer/" + cid, text=cg), lines
    ns = lines[-6:]
    for name, link in zip(("mnt", "net", "uts", "ipc", "pid"), ns):
        assert link == os.readlink("/proc/%d/ns/%s" % (init, name)), name
        assert link != os.readlink("/proc/self/ns/%s" % name), name
    ok(mc("delete", "-f", cid, state_root=state_root))


def test_exec_detach_pid_file(state_root, bundle, tmp_path, cgroups):
    cid, _ = mc_create(bundle(["sleep", "1000"]), state_root=state_root)
    ok(mc("start", cid, state_root=state_root))
    pid_file = tmp_path / "exec.pid"
    rc, out, err = mc_bg("exec", "--detach", "--pid-file", pid_file, cid, "sleep", "999",
                         state_root=state_root)
    assert rc == 0, err
    pid = int(pid_file.read_text())
    assert open("/proc/%d/cmdline" % pid, "rb").read() == b"sleep\x00999\x00"
    assert cgroups.member("/minicontainer/" + cid, pid)
    assert pid in json.loads(ok(mc("ps", "--format", "json", cid, state_root=state_root)))
    ok(mc("delete", "-f", cid, state_root=state_root))
    wait_for(lambda: gone(pid), what="the exec'd process to die with the container")


def test_exec_in_a_stopped_container_is_an_error(state_root, bundle):
    cid, _ = mc_create(bundle(["true"]), state_root=state_root)
    ok(mc("start", cid, state_root=state_root))
    wait_status(cid, "stopped", state_root)
    assert "stopped" in one_line_error(mc("exec", cid, "true", state_root=state_root), code=1)
    ok(mc("delete", cid, state_root=state_root))


# ---- hooks ----

HOOK = """#!/bin/sh
cat > {out}/{name}.json
{{ readlink /proc/self/ns/mnt; readlink /proc/self/ns/uts; hostname; }} > {out}/{name}.where
echo {name} >> {out}/order
"""


def test_poststart_state_names_the_program_that_ended_already(state_root, bundle, tmp_path):
    """The program may end before the poststart hooks run (held here until it has): their
    state still says "running" and gives its pid, not stopped's 0."""
    script = tmp_path / "poststart.sh"
    script.write_text(HOOK.format(out=tmp_path, name="poststart"))
    script.chmod(0o755)
    b = bundle(["true"], edit=lambda c: c.update(hooks={"poststart": [
        {"path": str(script), "env": [HOOK_PATH]}]}))
    cid, _ = mc_create(b, state_root=state_root)
    try:
        pid = state(cid, state_root)["pid"]
        ok(mc("start", cid, state_root=state_root,
              env=dict(os.environ, MINICONTAINER_DEBUG_SLEEP_AT="poststart:1")))
        with open(tmp_path / "poststart.json") as f:
            hook_state = json.load(f)
        assert (hook_state["status"], hook_state["pid"]) == ("running", pid)
    finally:
        ok(mc("delete", "-f", cid, state_root=state_root))


def test_hooks_run_in_order_where_the_spec_says(state_root, bundle, tmp_path, rootfs_copy):
    out = tmp_path / "hooks"
    out.mkdir()
    hooks = {}
    for name in ("prestart", "createRuntime", "createContainer", "poststart", "poststop"):
        script = tmp_path / ("%s.sh" % name)
        script.write_text(HOOK.format(out=out, name=name))
        script.chmod(0o755)
        hooks[name] = [{"path": str(script), "args": [name, "arg"], "env": [HOOK_PATH]}]
    # startContainer runs in the container after pivot_root: its path is the container's
    inside = os.path.join(rootfs_copy, "hooks")
    os.mkdir(inside)
    with open(os.path.join(inside, "start.sh"), "w") as f:
        f.write(HOOK.format(out="/hooks", name="startContainer"))
    os.chmod(os.path.join(inside, "start.sh"), 0o755)
    hooks["startContainer"] = [{"path": "/hooks/start.sh", "env": ["PATH=/bin"]}]
    b = bundle(["sh", "-c", "echo program >> /hooks/order"], rootfs=rootfs_copy,
               edit=lambda c: c.update(hooks=hooks, hostname="ctr"))
    cid, _ = mc_create(b, state_root=state_root)
    pid = state(cid, state_root)["pid"]
    container_ns = [os.readlink("/proc/%d/ns/%s" % (pid, n)) for n in ("mnt", "uts")]
    host_ns = [os.readlink("/proc/self/ns/%s" % n) for n in ("mnt", "uts")]
    assert (out / "order").read_text().split() == ["prestart", "createRuntime",
                                                   "createContainer"]
    ok(mc("start", cid, state_root=state_root))
    wait_status(cid, "stopped", state_root)
    ok(mc("delete", cid, state_root=state_root))
    order = (out / "order").read_text().split()
    assert order == ["prestart", "createRuntime", "createContainer", "poststart", "poststop"]
    with open(os.path.join(inside, "order")) as f:
        assert f.read().split() == ["startContainer", "program"]

    def hook_state(name, d=out):
        with open(os.path.join(d, name + ".json")) as f:
            return json.load(f)

    def where(name, d=out):
        with open(os.path.join(d, name + ".where")) as f:
            return f.read().split()

    expected = {"prestart": "creating", "createRuntime": "creating",
                "createContainer": "creating", "poststart": "running", "poststop": "stopped"}
    for name, want in expected.items():
        s = hook_state(name)
        assert s["status"] == want, (name, s)
        assert s["id"] == cid and s["bundle"] == b and s["ociVersion"], (name, s)
        if name == "createContainer":
            assert s["pid"] in (pid, 1), s
        elif want != "stopped":
            assert s["pid"] == pid, (name, s)
    s = hook_state("startContainer", inside)
    assert s["id"] == cid and s["status"] == "created" and s["bundle"] == b, s
    assert s["pid"] in (pid, 1), s  # runc gives the pid as the container sees itself
    for name in ("prestart", "createRuntime", "poststart", "poststop"):
        assert where(name)[:2] == host_ns, name  # the runtime's namespaces
    assert where("createContainer")[:2] == container_ns
    assert where("startContainer", inside)[:2] == container_ns
    assert where("startContainer", inside)[2] == "ctr"


@pytest.mark.parametrize("kind", ["prestart", "createRuntime", "createContainer"])
def test_a_failing_hook_fails_create_and_leaves_nothing(bundle, tmp_path, state_root,
                                                        kind, cgroups):
    script = tmp_path / "fail.sh"
    script.write_text("#!/bin/sh\necho first >&2\necho the hook says no >&2\nexit 3\n")
    script.chmod(0o755)
    mark = tmp_path / "mark.sh"
    mark.write_text("#!/bin/sh\ncat > %s/poststop\n" % tmp_path)
    mark.chmod(0o755)
    b = bundle(["true"], edit=lambda c: c.update(hooks={kind: [
        {"path": str(script), "env": [HOOK_PATH]}], "poststop": [
        {"path": str(mark), "env": [HOOK_PATH]}]}))
    log = tmp_path / "log.json"
    cid = new_id()
    # --root first: mc_bg's state_root would put it before --log
    rc, _, err = mc_bg("--root", state_root, "--log", log, "--log-format", "json", "create",
                       "--bundle", b, cid)
    assert rc == 1
    [entry] = [json.loads(line) for line in log.read_text().splitlines()]
    assert entry["level"] == "error" and "the hook says no" in entry["msg"]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "the hook says no" in lines[0] and kind in lines[0], err
    assert no_state(state_root)
    assert not cgroups.exists("minicontainer/" + cid)
    # the poststop hooks ran, as runc runs them when it destroys what a failed create made
    poststop = json.loads((tmp_path / "poststop").read_text())
    assert poststop["id"] == cid and poststop["status"] == "stopped", poststop


@pytest.fixture
def failing_hooks(tmp_path):
    """hooks(kind) -> a failing hook, then one that records that it ran, both of `kind`."""
    fail = tmp_path / "fail.sh"
    fail.write_text("#!/bin/sh\necho no luck >&2\nexit 1\n")
    fail.chmod(0o755)
    mark = tmp_path / "mark.sh"
    mark.write_text("#!/bin/sh\necho $1 >> %s/ran\n" % tmp_path)
    mark.chmod(0o755)
    return lambda kind: {kind: [{"path": str(fail), "env": [HOOK_PATH]},
                                {"path": str(mark), "args": ["mark.sh", kind],
                                 "env": [HOOK_PATH]}]}


def test_a_failing_poststop_hook_is_a_warning(state_root, bundle, tmp_path, failing_hooks):
    hooks = failing_hooks("poststop")
    cid, _ = mc_create(bundle(["sleep", "1000"], edit=lambda c: c.update(hooks=hooks)),
                       state_root=state_root)
    ok(mc("start", cid, state_root=state_root))
    log = tmp_path / "log.json"
    r = mc("--log", log, "--log-format", "json", "delete", "-f", cid, state_root=state_root)
    assert r.returncode == 0, r.stderr
    assert r.stderr.startswith("minicontainer: warning: ") and "no luck" in r.stderr
    [entry] = [json.loads(line) for line in log.read_text().splitlines()]  # as engines see it
    assert entry["level"] == "warning" and "no luck" in entry["msg"]
    assert (tmp_path / "ran").read_text().split() == ["poststop"]
    assert one_line_error(mc("state", cid, state_root=state_root),
                          code=1).endswith("does not exist")


def test_a_failing_poststart_hook_fails_start_and_removes_the_container(
        bundle, tmp_path, failing_hooks, state_root, cgroups):
    # As runc: start fails with the hook's error and the container is gone (its init killed,
    # its cgroup removed); the hooks after the failing one do not run.
    hooks = failing_hooks("poststart")
    b = bundle(["sleep", "1000"], edit=lambda c: c.update(hooks=hooks))
    cid, _ = mc_create(b, state_root=state_root)
    pid = state(cid, state_root)["pid"]
    err = one_line_error(mc("start", cid, state_root=state_root), code=1)
    assert "poststart hook" in err and "no luck" in err
    assert one_line_error(mc("state", cid, state_root=state_root),
                          code=1).endswith("does not exist")
    assert gone(pid) and no_state(state_root)
    assert not cgroups.exists("minicontainer/" + cid)
    assert not (tmp_path / "ran").exists()
    # and run, which starts what it created, ends the same way
    err = one_line_error(mc("run", "--bundle", b, new_id(), state_root=state_root), code=1)
    assert "poststart hook" in err and no_state(state_root)


# ---- namespaces given by path ----

@pytest.fixture
def netns():
    name = "%s-ns%d" % (SESSION, time.monotonic_ns() % 100000)
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield name
    subprocess.run(["ip", "netns", "delete", name], check=False)


def test_join_a_network_namespace_by_path(state_root, bundle, netns):
    subprocess.run(["ip", "-n", netns, "addr", "add", "10.123.45.67/32", "dev", "lo"],
                   check=True)
    path = "/run/netns/" + netns

    def edit(c):
        for ns in c["linux"]["namespaces"]:
            if ns["type"] == "network":
                ns["path"] = path
    cid, _ = mc_create(bundle(["sleep", "1000"], edit=edit), state_root=state_root)
    pid = state(cid, state_root)["pid"]
    assert os.readlink("/proc/%d/ns/net" % pid) == "net:[%d]" % os.stat(path).st_ino
    ok(mc("start", cid, state_root=state_root))
    out = ok(mc("exec", cid, "ip", "-4", "addr", "show", "dev", "lo", state_root=state_root))
    assert "10.123.45.67/32" in out
    ok(mc("delete", "-f", cid, state_root=state_root))
    assert os.path.exists(path)  # joined, not owned: it outlives the container


def test_join_another_containers_uts_and_net_by_path(state_root, bundle):
    a, _ = mc_create(bundle(["sleep", "1000"], edit=lambda c: c.update(hostname="first")),
                     state_root=state_root)
    ok(mc("start", a, state_root=state_root))
    apid = state(a, state_root)["pid"]

    def edit(c):
        c.pop("hostname")
        for ns in c["linux"]["namespaces"]:
            if ns["type"] in ("uts", "network"):
                ns["path"] = "/proc/%d/ns/%s" % (apid, "net" if ns["type"] == "network"
                                                 else "uts")
    r, w = os.pipe()
    try:
        c, _ = mc_create(bundle(["hostname"], edit=edit), stdout=w, state_root=state_root)
    finally:
        os.close(w)
    cpid = state(c, state_root)["pid"]
    for n in ("uts", "net"):
        assert os.readlink("/proc/%d/ns/%s" % (cpid, n)) == \
            os.readlink("/proc/%d/ns/%s" % (apid, n))
    assert os.readlink("/proc/%d/ns/mnt" % cpid) != os.readlink("/proc/%d/ns/mnt" % apid)
    ok(mc("start", c, state_root=state_root))
    assert read_until_eof(r) == b"first\n"
    os.close(r)
    wait_status(c, "stopped", state_root)
    ok(mc("delete", c, state_root=state_root))
    ok(mc("delete", "-f", a, state_root=state_root))


def test_join_a_user_namespace_by_path_and_exec_into_it(state_root, bundle, walkable):
    # A pod's second container: the first's user, network and uts namespaces, joined by
    # path (no id maps of its own), then exec into it.
    maps = [{"containerID": 0, "hostID": 100000, "size": 65536}]

    def first(c):
        c["linux"]["namespaces"].append({"type": "user"})
        c["linux"]["uidMappings"] = c["linux"]["gidMappings"] = maps
        c["hostname"] = "pod"
    rootfs = str(walkable / "rootfs")
    a, _ = mc_create(bundle(["sleep", "1000"], rootfs=rootfs, edit=first), state_root=state_root)
    ok(mc("start", a, state_root=state_root))
    apid = state(a, state_root)["pid"]

    def second(c):
        c.pop("hostname")
        c["linux"]["namespaces"].append({"type": "user"})
        for ns in c["linux"]["namespaces"]:
            name = {"user": "user", "network": "net", "uts": "uts"}.get(ns["type"])
            if name:
                ns["path"] = "/proc/%d/ns/%s" % (apid, name)
    b, _ = mc_create(bundle(["sleep", "1000"], rootfs=rootfs, edit=second), state_root=state_root)
    ok(mc("start", b, state_root=state_root))
    try:
        bpid = state(b, state_root)["pid"]
        for n in ("user", "net", "uts"):
            assert os.readlink("/proc/%d/ns/%s" % (bpid, n)) == \
                os.readlink("/proc/%d/ns/%s" % (apid, n))
        assert ok(mc("exec", b, "sh", "-c", "hostname; id -u; cat /proc/self/uid_map",
                     state_root=state_root)).split() \
            == ["pod", "0", "0", "100000", "65536"]
    finally:
        ok(mc("delete", "-f", b, state_root=state_root))
        ok(mc("delete", "-f", a, state_root=state_root))


def test_a_hook_that_outlives_its_timeout_fails_create(bundle, tmp_path, state_root):
    hook = tmp_path / "slow.sh"
    hook.write_text("#!/bin/sh\nsleep 30\n")
    hook.chmod(0o755)
    hooks = {"createRuntime": [{"path": str(hook), "env": [HOOK_PATH], "timeout": 1}]}
    started = time.monotonic()
    cid, (rc, _, err) = mc_create(bundle(["true"], edit=lambda c: c.update(hooks=hooks)),
                                  check=False, state_root=state_root)
    assert rc == 1 and "createRuntime hook %s timed out" % hook in err, err
    assert time.monotonic() - started < 20 and no_state(state_root)


def test_bind_leaves_submounts_behind_and_rbind_takes_them(state_root, bundle, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "submount", src / "sub"], check=True)
    try:
        (src / "sub" / "on-the-submount").write_text("x")

        def edit(c):
            c["mounts"] += [
                {"destination": "/b", "type": "bind", "source": str(src), "options": ["bind"]},
                {"destination": "/r", "type": "bind", "source": str(src), "options": ["rbind"]}]
        b = bundle(["sh", "-c", "ls /b/sub; echo -; ls /r/sub"], edit=edit)
        assert ok(mc("run", "--bundle", b, new_id(), state_root=state_root)).split() == \
            ["-", "on-the-submount"]
    finally:
        subprocess.run(["umount", src / "sub"], check=True)


def test_a_namespace_path_that_does_not_exist(bundle, state_root):
    def edit(c):
        c["linux"]["namespaces"].append({"type": "cgroup", "path": "/nonexistent/ns"})
    cid, (rc, _, err) = mc_create(bundle(["true"], edit=edit), check=False, state_root=state_root)
    assert rc == 1 and "/nonexistent/ns" in err and len(err.strip().splitlines()) == 1
    assert no_state(state_root)


# ---- kill --all in the host's pid namespace ----

def host_pidns(c):
    c["linux"]["namespaces"] = [ns for ns in c["linux"]["namespaces"] if ns["type"] != "pid"]


def started_in_the_host_pidns(bundle, script, processes, state_root):
    """A started container without a pid namespace of its own, running script: its id, and
    the host pids of its processes once `ps` shows all of them (`processes`)."""
    cid, _ = mc_create(bundle(["sh", "-c", script], edit=host_pidns), state_root=state_root)
    ok(mc("start", cid, state_root=state_root))

    def ps():
        return json.loads(ok(mc("ps", "--format", "json", cid, state_root=state_root)))
    wait_for(lambda: len(ps()) == processes, what="the sleeps")
    return cid, ps()


def test_kill_all_without_a_pid_namespace(state_root, bundle):
    cid, pids = started_in_the_host_pidns(
        bundle, "sleep 1000 & sleep 1000 & sleep 1000 & wait", 4, state_root)
    ok(mc("kill", "--all", cid, "TERM", state_root=state_root))
    wait_for(lambda: all(gone(p) for p in pids), what="every process to get TERM")
    wait_status(cid, "stopped", state_root)
    ok(mc("delete", cid, state_root=state_root))


def test_delete_kills_what_outlives_init_without_a_pid_namespace(state_root, bundle):
    cid, pids = started_in_the_host_pidns(
        bundle, "sleep 1000 & sleep 1000 & exec sleep 1000", 3, state_root)
    init = state(cid, state_root)["pid"]
    # init only: its children live on in the host's pid namespace
    ok(mc("kill", cid, "KILL", state_root=state_root))
    wait_status(cid, "stopped", state_root)
    assert gone(init)
    assert not all(gone(p) for p in pids)
    ok(mc("delete", cid, state_root=state_root))
    wait_for(lambda: all(gone(p) for p in pids), what="delete to kill the rest")


def test_kill_all_after_the_init_exited(state_root, bundle):
    # containerd's shim sends `kill --all ID 9` once pid 1 of a --pid host container is gone:
    # what is left in the cgroup gets it. A plain kill of a stopped container fails in runc's
    # words, which shims match on.
    cid, pids = started_in_the_host_pidns(
        bundle, "sleep 1000 & sleep 1000 & exec sleep 1000", 3, state_root)
    ok(mc("kill", cid, "KILL", state_root=state_root))
    wait_status(cid, "stopped", state_root)
    assert one_line_error(mc("kill", cid, "KILL", state_root=state_root),
                          code=1) == "minicontainer: %s: container not running" % cid
    assert not all(gone(p) for p in pids)
    ok(mc("kill", "--all", cid, "KILL", state_root=state_root))
    wait_for(lambda: all(gone(p) for p in pids), what="kill --all to reach the rest")
    # nothing left: still not an error, as runc
    ok(mc("kill", "--all", cid, "KILL", state_root=state_root))
    ok(mc("delete", cid, state_root=state_root))


# ---- config.json as engines write it ----

@pytest.mark.parametrize("cgroups_path, leaf, flags", [
    ("/libpod_parent/libpod-%s", "/libpod_parent/libpod-%s", ()),
    ("system.slice:mcprefix:%s", "system.slice/mcprefix-%s.scope",
     ("--no-pivot", "--no-new-keyring")),
], ids=["libpod", "systemd"])
def test_cgroups_path(state_root, bundle, cgroups, cgroups_path, leaf, flags):
    """As podman's cgroupfs manager gives it, and as its systemd one does (slice:prefix:name)."""
    cid = new_id()
    leaf %= cid
    b = bundle(["sleep", "1000"], edit=lambda c: c["linux"].update(cgroupsPath=cgroups_path % cid))
    mc_create(b, cid, *flags, state_root=state_root)
    pid = state(cid, state_root)["pid"]
    assert cgroups.procs(leaf) == [pid]
    assert cgroups.member(leaf, pid)
    ok(mc("delete", "-f", cid, state_root=state_root))
    assert not cgroups.exists(leaf)


def test_the_container_keeps_the_callers_session_keyring(state_root, bundle, tmp_path):
    # runc joins a new session keyring named after the container unless --no-new-keyring;
    # we never make one, so the flag is what we always do: the container's processes have
    # the caller's session keyring.
    nr = {"x86_64": 250, "aarch64": 219}.get(os.uname().machine)
    if nr is None or not os.path.exists("/proc/keys"):
        pytest.skip("needs keyctl's number and /proc/keys")
    ring = "mc-test-ring-%d" % os.getpid()

    def join_session_keyring():
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syscall(ctypes.c_long(nr), ctypes.c_long(1), ctypes.c_char_p(ring.encode())) < 0:
            os._exit(99)  # KEYCTL_JOIN_SESSION_KEYRING failed
    b = bundle(["cat", "/proc/keys"], edit=lambda c: c["linux"].update(
        maskedPaths=[p for p in c["linux"]["maskedPaths"] if p != "/proc/keys"]))
    assert "no new one is made" in ok(mc("create", "--help", state_root=state_root))
    for flags in ([], ["--no-new-keyring"]):
        cid = new_id()
        out_path, err_path = tmp_path / (cid + ".out"), tmp_path / (cid + ".err")
        with open(out_path, "w") as o, open(err_path, "w") as e:
            rc = subprocess.run(mc_argv("create", "--bundle", b, *flags, cid,
                                        state_root=state_root),
                                stdin=subprocess.DEVNULL, stdout=o, stderr=e, timeout=30,
                                preexec_fn=join_session_keyring).returncode
        assert rc == 0, open(err_path).read()
        ok(mc("start", cid, state_root=state_root))
        wait_status(cid, "stopped", state_root)
        keys = open(out_path).read()
        assert ring in keys and cid not in keys, keys
        ok(mc("delete", cid, state_root=state_root))


def test_no_pivot_moves_the_rootfs_onto_root(state_root, bundle, tmp_path):
    # runc's create --no-pivot (for a rootfs on ramfs, which pivot_root refuses): the rootfs
    # is moved onto / and chrooted into. The container sees its rootfs and not the host's.
    (tmp_path / "host-only").write_text("x")
    script = ("test -e %s && echo host-visible; test -x /bin/busybox && echo rootfs; "
              "grep -c . /proc/self/mountinfo >/dev/null && echo proc; "
              "test -e /proc/1/root%s && echo host-via-proc; echo done") % (
                  tmp_path / "host-only", tmp_path / "host-only")
    b = bundle(["sh", "-c", script])
    out = tmp_path / "no-pivot.out"
    with open(out, "w") as f:
        cid, _ = mc_create(b, None, "--no-pivot", state_root=state_root, stdout=f.fileno())
    ok(mc("start", cid, state_root=state_root))
    wait_status(cid, "stopped", state_root)
    assert out.read_text() == "rootfs\nproc\ndone\n"
    ok(mc("delete", cid, state_root=state_root))


def test_systemd_cgroup_flag_is_accepted_and_says_so(state_root, bundle, cgroups):
    cid = new_id()
    b = bundle(["true"], edit=lambda c: c["linux"].update(
        cgroupsPath="system.slice:mcprefix:%s" % cid))
    # (mc_bg would put --root first; here the flag goes with it)
    rc, _, err = mc_bg("--root", state_root, "--systemd-cgroup", "create", "--bundle", b, cid)
    assert rc == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "systemd" in lines[0] and "cgroupfs" in lines[0], err
    assert cgroups.exists("system.slice/mcprefix-%s.scope" % cid)
    ok(mc("delete", "-f", cid, state_root=state_root))


def test_annotations_appear_in_state(state_root, bundle):
    ann = {"org.example.a": "1", "io.podman.annotations.autoremove": "FALSE"}
    cid, _ = mc_create(bundle(["true"], edit=lambda c: c.update(annotations=ann)),
                       state_root=state_root)
    assert state(cid, state_root)["annotations"] == ann
    assert json.loads(ok(mc("list", "--format", "json",
                            state_root=state_root)))[0]["annotations"] == ann
    ok(mc("delete", cid, state_root=state_root))


def run_to_end(b, state_root):
    """create with a pipe as stdout, start, and what the container printed."""
    r, w = os.pipe()
    try:
        cid, _ = mc_create(b, stdout=w, state_root=state_root)
    finally:
        os.close(w)
    ok(mc("start", cid, state_root=state_root))
    out = read_until_eof(r).decode()
    os.close(r)
    wait_status(cid, "stopped", state_root)
    ok(mc("delete", cid, state_root=state_root))
    return out


def test_namespaced_sysctls_are_applied(state_root, bundle):
    sysctl = {"net.ipv4.ip_forward": "1", "kernel.shmmax": "123456789"}
    b = bundle(["cat", "/proc/sys/net/ipv4/ip_forward", "/proc/sys/kernel/shmmax"],
               edit=lambda c: c["linux"].update(sysctl=sysctl))
    assert run_to_end(b, state_root).split() == ["1", "123456789"]


def test_a_host_sysctl_is_refused(bundle, state_root):
    b = bundle(["true"], edit=lambda c: c["linux"].update(sysctl={"vm.swappiness": "10"}))
    cid, (rc, _, err) = mc_create(b, check=False, state_root=state_root)
    assert rc == 1 and "vm.swappiness" in err and len(err.strip().splitlines()) == 1
    assert no_state(state_root)


def test_oom_score_adj_umask_and_additional_gids(state_root, bundle):
    def edit(c):
        c["process"]["oomScoreAdj"] = 345
        c["process"]["user"].update(uid=1000, gid=1000, umask=0o027, additionalGids=[5, 100])
    b = bundle(["sh", "-c", "cat /proc/self/oom_score_adj; umask; "
                            "grep Groups /proc/self/status; touch /dev/shm/f; "
                            "stat -c %a /dev/shm/f"],
               edit=edit)
    lines = run_to_end(b, state_root).splitlines()
    assert lines[0] == "345"
    assert lines[1] == "0027"
    assert sorted(lines[2].split()[1:]) == ["100", "5"]
    assert lines[3] == "640"


def test_deny_all_devices_without_a_device_list_still_has_the_defaults(state_root, bundle):
    def edit(c):
        c["linux"]["resources"] = {"devices": [{"allow": False, "access": "rwm"}]}
        c["linux"].pop("devices", None)
    b = bundle(["sh", "-c", "for d in null zero full random urandom tty; do "
                            "test -c /dev/$d && echo $d; done; echo x > /dev/null && echo w; "
                            "head -c 3 /dev/zero | wc -c; "
                            "mknod /dev/sda b 8 0 2>&1 && head -c 1 /dev/sda 2>&1"],
               edit=edit)
    out = run_to_end(b, state_root)
    lines = out.split()
    assert lines[:6] == ["null", "zero", "full", "random", "urandom", "tty"]
    assert lines[6:8] == ["w", "3"]
    assert "Operation not permitted" in out  # the rule still denies what is not a default


@pytest.mark.parametrize("edit, words", [
    (lambda c: c["linux"].update(intelRdt={}), ["linux.intelRdt", "not supported"]),
    (lambda c: c["process"].update(execCPUAffinity={}), ["process.execCPUAffinity"]),
    (lambda c: c.update(vm={}), ["vm"]),
    (lambda c: c["process"].update(terminal="yes"), ["process.terminal", "boolean"]),
    (lambda c: c["process"]["user"].update(uid="0"), ["process.user.uid", "integer"]),
    (lambda c: c["linux"].update(namespaces={"type": "pid"}), ["linux.namespaces", "array"]),
], ids=["linux", "process", "top", "bool", "int", "array"])
def test_an_unsupported_or_mistyped_field_is_an_error_naming_it(bundle, state_root, edit,
                                                                 words):
    cid, (rc, _, err) = mc_create(bundle(["true"], edit=edit), check=False, state_root=state_root)
    assert rc == 1 and len(err.strip().splitlines()) == 1, err
    for w in words:
        assert w in err
    assert no_state(state_root)


def test_cgroup_mount_binds_each_v1_controller_read_only(state_root, bundle, cgroups):
    if cgroups.unified:
        pytest.skip("v1 and hybrid hosts only (v2: tests/test_cgroups.py)")
    cgroups.need("pids", "memory")
    pids, memory = cgroups.inside("pids", ""), cgroups.inside("memory", "").rstrip("/")
    b = bundle(["sh", "-c", "ls /sys/fs/cgroup; cat %scgroup.procs; "
                            "mkdir %sx 2>&1 || echo refused; "
                            "echo 5 > %spids.max 2>&1 || echo refused; "
                            "grep ' %s ' /proc/self/mountinfo" % (pids, pids, pids, memory)])
    out = run_to_end(b, state_root)
    lines = out.splitlines()
    for hierarchy in cgroups.v1.values():
        assert os.path.basename(hierarchy) in lines, out
    assert "1" in lines  # the container's own cgroup: its init is there, as pid 1
    assert lines.count("refused") == 2, out
    mnt = [line for line in lines if memory in line]
    assert mnt and mnt[0].split()[5].split(",")[0] == "ro", out


# ---- update, events, features, ps, list ----

def test_update_from_a_file_stdin_and_flags(state_root, bundle, tmp_path, cgroups):
    cgroups.need("pids", "memory", "cpu")
    v2 = cgroups.unified
    cid, _ = mc_create(bundle(["sleep", "1000"]), state_root=state_root)
    ok(mc("start", cid, state_root=state_root))
    cg = "minicontainer/" + cid

    def limits():
        if v2:
            return (cgroups.read("pids", cg, "pids.max"),
                    int(cgroups.read("memory", cg, "memory.max")),
                    cgroups.read("cpu", cg, "cpu.weight"), cgroups.read("cpu", cg, "cpu.max"))
        return (cgroups.read("pids", cg, "pids.max"),
                int(cgroups.read("memory", cg, "memory.limit_in_bytes")),
                cgroups.read("cpu", cg, "cpu.shares"), cgroups.read("cpu", cg, "cpu.cfs_quota_us"))
    res = tmp_path / "res.json"
    res.write_text(json.dumps({"pids": {"limit": 42}, "memory": {"limit": 64 << 20}}))
    ok(mc("update", "--resources", res, cid, state_root=state_root))
    assert limits()[:2] == ("42", 64 << 20)
    ok(mc("update", "-r", "-", cid, input=json.dumps({"cpu": {"shares": 512}}),
          state_root=state_root))
    assert limits()[2] == ("20" if v2 else "512")  # v2: 1 + (512 - 2) * 9999 // 262142
    ok(mc("update", "--pids-limit", "77", "--memory", "32m", "--cpu-quota", "50000",
          "--cpu-period", "100000", cid, state_root=state_root))
    assert limits()[::3] == ("77", "50000 100000" if v2 else "50000")
    assert limits()[1] == 32 << 20
    assert "JSON" in one_line_error(mc("update", "-r", "-", cid, input="{nope",
                                       state_root=state_root), code=1)
    assert "pids.limit" in one_line_error(mc("update", "-r", "-", cid, state_root=state_root,
                                             input='{"pids": {"limit": "7"}}'), code=1)
    ok(mc("delete", "-f", cid, state_root=state_root))


def test_events_stats(state_root, bundle):
    cid, _ = mc_create(bundle(["sleep", "1000"]), state_root=state_root)
    ok(mc("start", cid, state_root=state_root))
    lines = ok(mc("events", "--stats", cid, state_root=state_root)).splitlines()
    assert len(lines) == 1
    ev = json.loads(lines[0])
    assert ev["type"] == "stats" and ev["id"] == cid
    assert ev["data"]["memory"]["usage"]["usage"] > 0
    assert ev["data"]["pids"]["current"] == 1
    proc = subprocess.Popen(mc_argv("events", "--interval", "0.1s", cid, state_root=state_root),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(2):
            assert json.loads(proc.stdout.readline())["type"] == "stats"
    finally:
        proc.kill()
        proc.communicate()
    ok(mc("delete", "-f", cid, state_root=state_root))


def test_features(state_root):
    f = json.loads(ok(mc("features", state_root=state_root)))
    assert f["ociVersionMin"] <= f["ociVersionMax"]
    assert set(f["linux"]["namespaces"]) >= {"pid", "network", "ipc", "uts", "mount",
                                             "cgroup", "user"}
    assert f["linux"]["cgroup"]["v1"] is True and f["linux"]["cgroup"]["v2"] is True
    assert "CAP_SYS_ADMIN" in f["linux"]["capabilities"]
    assert set(f["hooks"]) == {"prestart", "createRuntime", "createContainer",
                               "startContainer", "poststart", "poststop"}


def test_ps_and_list_json(state_root, bundle):
    cid, _ = mc_create(bundle(["sh", "-c", "sleep 1000 & exec sleep 1001"]), state_root=state_root)
    assert json.loads(ok(mc("list", "--format", "json",
                            state_root=state_root)))[0]["status"] == "created"
    ok(mc("start", cid, state_root=state_root))
    pid = state(cid, state_root)["pid"]
    wait_for(lambda: len(json.loads(ok(mc("ps", "--format", "json", cid,
                                          state_root=state_root)))) == 2,
             what="two processes")
    assert pid in json.loads(ok(mc("ps", "--format", "json", cid, state_root=state_root)))
    table = ok(mc("ps", cid, state_root=state_root)).splitlines()
    assert table[0].split()[:2] == ["PID", "CMD"] and len(table) == 3
    # runc's ps ID PS_OPTIONS: the host's ps, the container's lines only
    for args in (["-o", "pid,comm"], ["--", "-o", "pid,comm"]):
        table = ok(mc("ps", cid, *args, state_root=state_root)).splitlines()
        assert table[0].split() == ["PID", "COMMAND"] and len(table) == 3, table
        assert str(pid) in [line.split()[0] for line in table[1:]]
    assert one_line_error(mc("ps", cid, "--bogus", state_root=state_root), 1).startswith(
        "minicontainer: ps: ps --bogus: ")
    [s] = json.loads(ok(mc("list", "--format", "json", state_root=state_root)))
    assert (s["id"], s["pid"], s["status"]) == (cid, pid, "running")
    assert json.loads(ok(mc("list", "--format", "json", state_root=state_root)).strip() or "[]")
    ok(mc("delete", "-f", cid, state_root=state_root))
    assert json.loads(ok(mc("list", "--format", "json", state_root=state_root))) == []


def test_pause_resume(state_root, bundle):
    cid, _ = mc_create(bundle(["sleep", "1000"]), state_root=state_root)
    ok(mc("start", cid, state_root=state_root))
    ok(mc("pause", cid, state_root=state_root))
    assert status(cid, state_root) == "paused"
    ok(mc("resume", cid, state_root=state_root))
    assert status(cid, state_root) == "running"
    ok(mc("delete", "-f", cid, state_root=state_root))


# ---- global flags ----

def test_log_json_for_an_error(state_root, tmp_path):
    log = tmp_path / "log.json"
    r = mc("--log", log, "--log-format", "json", "state", "nosuch", state_root=state_root)
    assert r.returncode == 1
    assert r.stderr.strip() == "minicontainer: container nosuch does not exist"
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(entries) == 1
    e = entries[0]
    assert e["level"] == "error" and "nosuch does not exist" in e["msg"]
    assert e["time"][:4].isdigit() and e["time"].endswith("Z")


def test_log_text_and_a_bad_flag(state_root, tmp_path):
    log = tmp_path / "log.txt"
    r = mc("--log", log, "kill", "--bogus", "x", state_root=state_root)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "--bogus" in log.read_text() and "error" in log.read_text()


def test_version(state_root):
    r = subprocess.run([RUNTIME, "--version"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0
    assert r.stdout.startswith("minicontainer version ") and "spec: 1." in r.stdout


def test_state_of_a_missing_container(state_root):
    r = mc("state", "nosuch", state_root=state_root)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == "minicontainer: container nosuch does not exist\n"


def test_default_root_for_a_non_root_user():
    top = tempfile.mkdtemp(prefix="mc-xdg-")  # not under pytest's tmp: that is root's only
    try:
        os.chmod(top, 0o755)
        xdg = os.path.join(top, "xdg")
        os.mkdir(xdg)
        os.chown(xdg, 65534, 65534)
        env = {"XDG_RUNTIME_DIR": xdg, "PATH": os.environ["PATH"]}
        nobody = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
        if not shutil.which("setpriv"):
            pytest.skip("no setpriv")
        r = subprocess.run(nobody + [RUNTIME, "list", "--format", "json"], env=env,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and json.loads(r.stdout) == [], r.stderr
        os.makedirs(os.path.join(xdg, "minicontainer", "fake"))
        for d in ("minicontainer", "minicontainer/fake"):  # the user's (another's is refused)
            os.chown(os.path.join(xdg, d), 65534, 65534)
        r = subprocess.run(nobody + [RUNTIME, "list", "-q"], env=env, capture_output=True,
                           text=True, timeout=30)
        assert r.stdout.split() == ["fake"], r.stderr
    finally:
        shutil.rmtree(top)


def test_init_is_in_its_cgroup_for_hooks_and_a_cgroup_namespace(state_root, bundle, tmp_path,
                                                                 cgroups):
    # The runtime moves the init into its cgroup while the init sets up (the first move
    # waits for an RCU grace period); hooks and a cgroup namespace must see it moved.
    seen = tmp_path / "hook.cgroup"
    hook = tmp_path / "hook.sh"
    hook.write_text("#!/bin/sh\npid=$(sed 's/.*\"pid\": *\\([0-9]*\\).*/\\1/')\n"
                    "cat /proc/$pid/cgroup > %s\n" % seen)
    hook.chmod(0o755)

    def edit(c):
        c["linux"]["namespaces"].append({"type": "cgroup"})
        c["hooks"] = {"createRuntime": [{"path": str(hook), "env": [HOOK_PATH]}]}
    b = bundle(["cat", "/proc/self/cgroup"], edit=edit)
    out = str(tmp_path / "create.out")
    with open(out, "w") as o:
        cid, _ = mc_create(b, None, stdout=o.fileno(), state_root=state_root)
    assert cgroups.member("/minicontainer/" + cid, text=seen.read_text()), seen.read_text()
    ok(mc("start", cid, state_root=state_root))
    wait_status(cid, "stopped", state_root)
    inside = open(out).read()
    assert cgroups.member("/", text=inside), inside  # the namespace's root
    ok(mc("delete", cid, state_root=state_root))
