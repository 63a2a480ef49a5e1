"""Errors a user can cause: each is one line on stderr (no traceback), a non-zero exit, and
nothing left behind (the no_leaks fixture checks state dirs, cgroups, mounts, processes)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

import minicontainer as mcmod

from conftest import (RUNTIME, mc, mc_argv, mc_create, new_id, no_state, ok, one_line_error,
                      status, wait_for, write_bundle)
from conftest import set_field as _set

pytestmark = [pytest.mark.needs_root, pytest.mark.usefixtures("no_leaks")]




def test_not_root(busybox_rootfs, tmp_path):
    """An ordinary user runs rootless (tests/test_rootless.py): without $XDG_RUNTIME_DIR or
    --root there is no state root of its own, which each command says in one line; a --root
    it may not write is a one-line error too, and nothing is made."""
    def drop():
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    # the test's interpreter may live where nobody cannot read: use the system's
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for args in (["run", "--rm", "--rootfs", busybox_rootfs, "--", "true"], ["create", "x"],
                 ["delete", "x"], ["kill", "x"], ["gc"], ["list"]):
        r = subprocess.run([python, RUNTIME] + args, capture_output=True, text=True,
                           preexec_fn=drop, cwd="/", timeout=30, env=env)
        assert one_line_error(r, 1) == "minicontainer: rootless: $XDG_RUNTIME_DIR is not " \
            "set: set it to a directory of yours (mode 0700), or give --root"
        r = subprocess.run([python, RUNTIME, "--root", str(tmp_path / "state")] + args,
                           capture_output=True, text=True, preexec_fn=drop, cwd="/",
                           timeout=30, env=env)
        # (Permission denied, or what it cannot reach; docker's run says its own failure so)
        one_line_error(r, 125 if args[0] == "run" else 1)
    # reading state is allowed (in a state root nobody may read: the test's own is not)
    nostate = "/tmp/%s-nostate" % new_id()
    r = subprocess.run([python, RUNTIME, "--root", nostate, "list", "-q"],
                       capture_output=True, text=True, preexec_fn=drop, cwd="/", timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == "", r.stderr
    assert not os.path.exists(tmp_path / "state") and not os.path.exists(nostate)


def test_not_root_yet_not_rootless():
    """An ordinary user's --rootless false: the cgroup it may not make is said in a line, and
    its state goes with it (it stayed, "creating", and its own delete could not remove it:
    it tried the shared parent cgroup, root's)."""
    def drop():
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"
    top = tempfile.mkdtemp(prefix="mc-test-notroot-", dir="/tmp")  # where nobody may walk
    try:
        os.chmod(top, 0o777)
        bundle = os.path.join(top, "bundle")
        os.makedirs(os.path.join(bundle, "rootfs"))
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(mcmod.default_spec(rootfs="rootfs", args=["true"]), f)
        state = os.path.join(top, "state")
        for command in ("run", "create"):
            args = ["--rm", "--rootfs", os.path.join(bundle, "rootfs"), "x", "--", "true"] \
                if command == "run" else ["-b", bundle, "x"]
            r = subprocess.run([python, RUNTIME, "--root", state, "--rootless", "false",
                                command] + args, capture_output=True, text=True,
                               preexec_fn=drop, cwd="/", timeout=30)
            line = one_line_error(r, 125 if command == "run" else 1)
            assert "cannot make /sys/fs/cgroup/" in line and line.endswith(
                ": Permission denied (not root: --rootless true, or leave --rootless to its "
                "default)"), line
            assert os.listdir(state) == []
    finally:
        shutil.rmtree(top)


@pytest.mark.parametrize("edit, text, words", [
    (None, "{", "invalid JSON"),
    (None, "", "invalid JSON"),
    (None, "[]", "must be an object"),
    (_set("process.scheduler", {"policy": "SCHED_FIFO"}), None,
     "process.scheduler.priority: SCHED_FIFO needs a priority from 1 to 99"),
    (_set("process.scheduler", {"policy": "SCHED_OTHER", "priority": 5}), None,
     "process.scheduler.priority: only SCHED_FIFO and SCHED_RR take a priority"),
    (_set("process.scheduler", {"policy": "SCHED_BATCH", "runtime": 5}), None,
     "runtime, deadline and period are for SCHED_DEADLINE"),
    (_set("process.scheduler", {"policy": "SCHED_DEADLINE", "runtime": 9000, "deadline": 10}),
     None, "SCHED_DEADLINE needs 1024 <= runtime <= deadline <= period"),
    (_set("process.scheduler", {"policy": "SCHED_SOON"}), None, "unknown policy 'SCHED_SOON'"),
    (_set("process.scheduler", {"policy": "SCHED_OTHER", "nice": 20}), None,
     "nice: must be from -20 to 19"),
    (_set("process.scheduler", {"policy": "SCHED_OTHER", "flags": ["SCHED_FLAG_X"]}), None,
     "unknown flag 'SCHED_FLAG_X'"),
    (_set("process.ioPriority", {"class": "IOPRIO_CLASS_BE", "priority": 8}), None,
     "process.ioPriority: class must be one of"),
    (_set("process.ioPriority", {"class": "BE", "priority": 1}), None,
     "process.ioPriority: class must be one of"),
    (_set("process.execCPUAffinity", {"initial": "0"}), None,
     "process.execCPUAffinity: not supported by minicontainer"),
    (_set("linux.timeOffsets", {"boottime": {"secs": 1}}), None,
     "linux.timeOffsets needs a time namespace of the container's own"),
    (_set("process.args", "sh"), None, "process.args: must be an array"),
    (_set("process.env", ["A=1", "=x"]), None, "process.env[1]: '=x' is not NAME=VALUE"),
    (_set("process.env", ["A=1", "B"]), None, "process.env[1]: 'B' is not NAME=VALUE"),
    (_set("process.user.uid", -1), None, "process.user.uid: an id is from 0 to 4294967294"),
    (_set("process.user.gid", 1 << 32), None, "process.user.gid: an id is from 0"),
    (_set("process.user.additionalGids", [5, -1]), None, "process.user.additionalGids: an id"),
    (lambda c: c["linux"].update(namespaces=[n for n in c["linux"]["namespaces"]
                                             if n["type"] != "uts"]), None,
     "hostname: set only in a UTS namespace of the container's"),
    (_set("mounts", [{"type": "tmpfs", "source": "tmpfs"}]), None,
     "mounts[0]: destination is missing"),
    (_set("process.args", []), None, "process.args must name the program"),
    (_set("process.args", ["sh", 3]), None, "process.args[1]: must be a string"),
    (_set("hostname", 5), None, "hostname: must be a string"),
    (_set("process.terminal", "yes"), None, "process.terminal: must be a boolean"),
    (_set("process.user.uid", "0"), None, "process.user.uid: must be an integer"),
    (_set("process.user.uid", True), None, "process.user.uid: must be an integer"),
    (_set("process.cwd", "relative"), None, "process.cwd must be an absolute path"),
    (_set("root.path", ""), None, "root.path is missing"),
    (_set("root.path", "/nonexistent/rootfs"), None, "rootfs /nonexistent/rootfs does not exist"),
    (_set("linux.namespaces", [{"type": "pid"}, {"type": "bogus"}]), None,
     "unknown type 'bogus'"),
    (_set("linux.namespaces", [{"type": "mount"}, {"type": "mount"}]), None, "given twice"),
    (lambda c: (c.pop("hostname"), c["linux"].update(namespaces=[{"type": "pid"}])), None,
     "without a mount namespace, mounts, linux.maskedPaths, linux.readonlyPaths would change "
     "the host's mounts"),
    (_set("process.rlimits", [{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}]), None,
     "unknown type 'RLIMIT_BOGUS'"),
    (_set("process.capabilities.bounding", ["CAP_BOGUS"]), None, "CAP_BOGUS"),
    (_set("linux.sysctl", {"kernel.panic": "1"}), None, "kernel.panic is not namespaced"),
    (_set("process.oomScoreAdj", -1001), None, "process.oomScoreAdj: must be from -1000 to 1000"),
    (_set("linux.sysctl", {"kernel.hostname": "x"}), None,
     'kernel.hostname conflicts with the "hostname" field'),
    (lambda c: (c.update(domainname="a.example"),
                c["linux"].update(sysctl={"kernel.domainname": "b.example"})), None,
     'kernel.domainname conflicts with the "domainname" field'),
    (lambda c: c.update(mounts=[m for m in c["mounts"] if m["destination"] != "/proc"]),
     None, "the container has no /proc"),
    (_set("linux.rootfsPropagation", "sideways"), None, "unknown value 'sideways'"),
    (_set("mounts", [{"destination": "relative", "type": "tmpfs"}]), None, "must be absolute"),
    (_set("mounts", [{"destination": "/x", "type": "tmpfs", "source": "tmpfs", "uidMappings":
                      [{"containerID": 0, "hostID": 1, "size": 1}]}]), None,
     "only a bind mount can be id-mapped"),
    (_set("mounts", [{"destination": "/x", "type": "bind", "source": "/nonexistent",
                      "options": ["bind"]}]), None,
     "mount /nonexistent to /x: No such file or directory"),
    # what the kernel refuses inside the init: the step as the user wrote it, errno's text
    # (on a directory the rootfs has: other tests' images are made of the same rootfs)
    (_set("mounts", [{"destination": "/tmp", "type": "bogusfs", "source": "bogus"}]), None,
     "minicontainer: mount bogus to /tmp: No such device"),
    (_set("mounts", [{"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                      "options": ["size=lots"]}]), None,
     "minicontainer: mount tmpfs to /tmp: Invalid argument"),
    (_set("linux.sysctl", {"kernel.msgmax": "many"}), None,
     "minicontainer: set sysctl kernel.msgmax to many: Invalid argument"),
    (_set("linux.resources.devices", [{"allow": True, "type": "z", "access": "r"}]), None,
     "bad rule"),
    (_set("process.rlimits", [{"type": "RLIMIT_NOFILE", "soft": 1 << 40, "hard": 1 << 40}]),
     None, "cannot set RLIMIT_NOFILE"),
])
def test_bad_configs(bundle, state_root, edit, text, words):
    b = bundle(["true"], edit, text=text)
    for args in (["create", "-b", b, new_id()], ["run", "-b", b, new_id()]):
        r = mc(*args, state_root=state_root)
        assert words in one_line_error(r), r.stderr
        assert r.returncode == 1
        assert no_state(state_root)


def test_a_config_nested_too_deep(bundle, state_root):
    """Python's JSON decoder recurses: 100,000 nested arrays were a RecursionError's
    traceback."""
    b = bundle(["true"], text="[" * 100000 + "]" * 100000)
    r = mc("create", "-b", b, new_id(), state_root=state_root)
    assert one_line_error(r, 1).endswith("config.json: invalid JSON: nested too deep")
    assert no_state(state_root)


def test_init_error_reaches_the_user_when_it_exits_with_a_message_unread(bundle,
                                                                         state_root):
    # The interleaving forced ($MINICONTAINER_DEBUG_SLEEP_AT): the runtime moves the init
    # into its cgroup and says so while the init is held before its failing step; then the
    # runtime is held while the init fails and exits without reading that message, which
    # resets the socket (the runtime used to print "[Errno 104] Connection reset by peer").
    b = bundle(["true"], _set("process.rlimits", [{"type": "RLIMIT_NOFILE", "soft": 1 << 40,
                                                   "hard": 1 << 40}]))
    env = dict(os.environ, MINICONTAINER_DEBUG_SLEEP_AT="process:0.3,in-cgroup:0.8")
    for command in ("create", "run"):
        r = mc(command, "-b", b, new_id(), state_root=state_root, env=env)
        assert "cannot set RLIMIT_NOFILE" in one_line_error(r), r.stderr
        assert no_state(state_root)


def test_a_console_socket_without_a_terminal(bundle, state_root, tmp_path):
    """--console-socket is for a terminal's master: with process.terminal false, an error
    (runc's too) for create and exec, not a socket that gets nothing."""
    b = bundle(["sleep", "1000"])
    r = mc("create", "-b", b, "--console-socket", str(tmp_path / "s"), new_id(),
           state_root=state_root)
    assert one_line_error(r, 1).endswith("--console-socket: process.terminal is not set (the "
                                         "socket is to get a terminal's master)")
    assert no_state(state_root)
    cid, _ = mc_create(b, state_root=state_root)
    try:
        r = mc("exec", "--console-socket", str(tmp_path / "s"), cid, "true",
               state_root=state_root)
        assert one_line_error(r, 1).endswith("process.terminal is not set (the socket is to "
                                             "get a terminal's master)")
    finally:
        mc("delete", "-f", cid, state_root=state_root)


def test_bundleout_config(tmp_path, state_root):
    r = mc("create", "-b", str(tmp_path), new_id(), state_root=state_root)
    assert "config.json: no such file" in one_line_error(r)


@pytest.mark.parametrize("cid", ["bad/id", "..", "-x", "a" * 129, "sp ace"])
def test_invalid_ids(bundle, state_root, cid):
    b = bundle(["true"])
    r = mc("create", "-b", b, "--", cid, state_root=state_root) if cid.startswith("-") else \
        mc("create", "-b", b, cid, state_root=state_root)
    assert "invalid container id" in one_line_error(r)


@pytest.mark.parametrize("flags, command, words, code", [
    (["--rootfs", "/nonexistent"], ["true"], "rootfs /nonexistent does not exist", 125),
    (["--rootfs", "/etc/passwd"], ["true"], "rootfs /etc/passwd is not a directory", 125),
    (["--rootfs", "/", "--bundle", "/"], ["true"], "run: --bundle and --rootfs: give one", 125),
    ([], ["true"], "give an image, --rootfs DIR or --bundle DIR", 1),
    (["--bogus-flag"], ["true"], "unrecognized arguments: --bogus-flag", 2),
    (["--pids-limit", "many"], ["true"], "invalid int value", 2),
    (["-m", "lots"], ["true"], "--memory: invalid size 'lots'", 125),
    (["-m", "99999999999999999999g"], ["true"], "--memory: invalid size", 125),
    (["-m", "infg"], ["true"], "--memory: invalid size 'infg'", 125),  # (a traceback)
    (["-m", "4k"], ["true"], "container init died during setup: killed by the OOM killer, at "
     "linux.resources.memory.limit 4096", 125),
    (["--memory-swap", "64m"], ["true"], "--memory-swap: needs --memory", 125),
    (["--sysctl", "kernel.panic=1"], ["true"],
     "--sysctl: linux.sysctl: kernel.panic is not namespaced in this container", 125),
    (["--sysctl", "kernel.shmmax"], ["true"], "--sysctl: 'kernel.shmmax' is not KEY=VALUE", 125),
    (["--network", "host", "--sysctl", "net.ipv4.ip_forward=1"], ["true"],
     "--sysctl: linux.sysctl: net.ipv4.ip_forward is not namespaced in this container", 125),
    (["--oom-score-adj", "1001"], ["true"],
     "--oom-score-adj: process.oomScoreAdj: must be from -1000 to 1000", 125),
    (["--oom-score-adj", "x"], ["true"], "invalid int value", 2),
    (["--cpus", "half"], ["true"], "--cpus half: a number of CPUs above 0", 125),
    (["--cpus", "nan"], ["true"], "--cpus nan: a number of CPUs above 0", 125),
    (["--cpus", "inf"], ["true"], "--cpus inf: a number of CPUs above 0", 125),
    (["--cpus", "-1"], ["true"], "--cpus -1: a number of CPUs above 0", 125),
    (["--cpus", "1000"], ["true"], "--cpus 1000: this machine has", 125),
    (["-v", "./relative:/data"], ["true"], "use HOST:CONTAINER[:OPTIONS]", 125),
    (["-v", "/tmp:/data:rx"], ["true"], "use HOST:CONTAINER[:OPTIONS]", 125),
    (["-v", "/tmp:/data:ro:x"], ["true"], "use HOST:CONTAINER[:OPTIONS]", 125),
    (["-v", "a/b:/data"], ["true"], "'a/b' is no volume name", 125),  # (NAME:CTR: a volume)
    (["-v", "vol:data"], ["true"], "use NAME:CONTAINER[:OPTIONS]", 125),
    (["-v", "/nonexistent/dir:/data"], ["true"], "/nonexistent/dir does not exist", 125),
    (["-u", "nosuchuser"], ["true"], "unable to find user nosuchuser", 125),
    (["-u", "user:nosuchgroup"], ["true"], "unable to find group nosuchgroup", 125),
    (["-w", "relative/dir"], ["true"], "must be an absolute path", 125),
    (["-w", "/etc/passwd"], ["true"], "process.cwd /etc/passwd: not a directory", 125),
    (["-w", "/etc/passwd/sub"], ["true"], "process.cwd /etc/passwd/sub: not a directory", 125),
    (["--cap-add", "NOPE"], ["true"], "NOPE", 125),
    (["--security-opt", "bogus"], ["true"], "--security-opt bogus: unknown option", 125),
    (["--security-opt", "seccomp=/nonexistent.json"], ["true"], "/nonexistent.json", 125),
    ([], ["nosuchcommand"], 'exec "nosuchcommand": executable file not found in $PATH', 127),
    ([], ["/etc/passwd"], 'exec "/etc/passwd": permission denied', 126),
    ([], ["/etc"], 'exec "/etc": permission denied', 126),
])
def test_bad_run_flags(busybox_rootfs, state_root, flags, command, words, code):
    if flags[:1] != ["--rootfs"] and flags != []:
        flags = ["--rootfs", busybox_rootfs] + flags
    elif flags == [] and command != ["true"]:
        flags = ["--rootfs", busybox_rootfs]
    r = mc("run", "--rm", "--name", new_id(), *flags, "--", *command, state_root=state_root)
    assert words in one_line_error(r), r.stderr
    assert r.returncode == code
    assert no_state(state_root)


@pytest.mark.parametrize("program, words, code", [
    ("/hosttrue", 'exec "/hosttrue": No such file or directory', 127),  # no glibc loader
    ("/garbage", 'exec "/garbage": Exec format error', 126)])
def test_an_execve_that_fails_is_one_line(rootfs_copy, state_root, program, words, code):
    """The program's own execve fails (its ELF interpreter is missing; no format the kernel
    runs): the exec helper's errno, said as python's was, for run and for exec."""
    shutil.copy("/bin/true", rootfs_copy + "/hosttrue")
    with open(rootfs_copy + "/garbage", "wb") as f:
        f.write(b"\x00" * 64)
    os.chmod(rootfs_copy + "/garbage", 0o755)
    r = mc("run", "--rm", "--name", new_id(), "--rootfs", rootfs_copy, "--", program,
           state_root=state_root)
    assert (one_line_error(r), r.returncode) == ("minicontainer: " + words, code)
    cid = new_id()
    ok(mc("run", "-d", "--name", cid, "--rootfs", rootfs_copy, "--", "sleep", "1000",
          state_root=state_root))
    try:
        r = mc("exec", cid, program, state_root=state_root)
        assert (one_line_error(r), r.returncode) == ("minicontainer: " + words, code)
    finally:
        ok(mc("rm", "-f", cid, state_root=state_root))
    assert no_state(state_root)


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_a_user_is_looked_up_inside_the_root(rootfs_copy, state_root, tmp_path, kind):
    """-u NAME reads the container's /etc/passwd as the container would: one that is a
    symlink to a host file (absolute, or ../ up and out) is followed inside the root, not
    to the host's file (whose entries it read); a fifo is not read (it hung the runtime).
    Through an image's layers alike."""
    host = tmp_path / "host-passwd"
    host.write_text("evil:x:4242:4343::/:/bin/sh\n")
    os.unlink(rootfs_copy + "/etc/passwd")
    if kind == "fifo":
        os.mkfifo(rootfs_copy + "/etc/passwd")
    else:
        os.symlink("../../../../../../../../../.." + str(host), rootfs_copy + "/etc/passwd")
    r = mc("run", "--rm", "--name", new_id(), "-u", "evil", "--rootfs", rootfs_copy, "--",
           "id", state_root=state_root, timeout=20)
    assert one_line_error(r) == "minicontainer: --user: unable to find user evil in the " \
        "container's /etc/passwd" and r.returncode == 125
    with pytest.raises(mcmod.Error, match="unable to find user evil"):
        mcmod.lookup_user([rootfs_copy], "evil")
    assert no_state(state_root)


def test_a_full_state_root_is_one_line_and_leaves_nothing(bundle, tmp_path):
    """create on a state root with little room: its state.json written in part was renamed
    into place, create said nothing, and delete -f then forgot the init and its cgroups.
    At every room from 4 to 28 KiB: created whole (and deleted), or a one-line error
    naming the file, nothing left."""
    b = bundle(["sleep", "1000"])
    small = tmp_path / "small"
    small.mkdir()
    said = set()
    for free in range(4, 32, 4):
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", small], check=True)
        try:
            (small / "fill").write_bytes(b"\0" * ((64 - free) * 1024))
            root = str(small / "state")
            cid, r = mc_create(b, state_root=root, check=False)
            if r.returncode == 0:
                ok(mc("delete", "-f", cid, state_root=root))
            else:
                said.add(one_line_error(r).split(": ", 2)[-1])
            assert not os.path.exists(os.path.join(root, cid))
        finally:
            subprocess.run(["umount", small], check=True)
    assert "No space left on device" in said, said


def test_a_read_only_state_root_starts_and_deletes_nothing(bundle, tmp_path):
    """start and delete -f on a state root made read-only: start let the init go, then could
    not remove the fifo: it said so, yet the program ran, `state` said created and a second
    start hung; delete -f said nothing and left the container listed. Now start starts
    nothing and delete -f says it could not; both work once the root is writable again."""
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", small], check=True)
    try:
        root = str(small / "state")
        cid, _ = mc_create(bundle(["sleep", "1000"]), state_root=root)
        subprocess.run(["mount", "-o", "remount,ro", small], check=True)
        assert one_line_error(mc("start", cid, state_root=root, timeout=20), 1) == \
            "minicontainer: container %s: cannot start: Read-only file system" % cid
        assert status(cid, root) == "created"
        r = mc("delete", "-f", cid, state_root=root, timeout=20)
        assert one_line_error(r, 1).startswith("minicontainer: container %s: cannot remove " %
                                               cid) and r.stderr.endswith("system\n")
        subprocess.run(["mount", "-o", "remount,rw", small], check=True)
        ok(mc("delete", "-f", cid, state_root=root))
        cid, _ = mc_create(bundle(["sleep", "1000"]), state_root=root)
        ok(mc("start", cid, state_root=root))
        assert status(cid, root) == "running"
        ok(mc("delete", "-f", cid, state_root=root))
        assert os.listdir(root) == []
    finally:
        subprocess.run(["umount", small], check=True)


@pytest.mark.parametrize("text", ["null", "[]", '"x"', '{"cgroup": "garbage"}',
                                  '{"cgroup": {"x": 1}}', '{"network": "x"}',
                                  '{"overlay": "x"}', '{"config": null, "pid": "7"}'])
def test_a_state_file_of_another_shape_is_no_traceback(state_root, text):
    """A state.json that is JSON but not the runtime's (by hand): every command was a
    traceback, list for the whole root; now it is as a torn one, which delete -f clears."""
    cid = new_id()
    os.makedirs(os.path.join(state_root, cid))
    with open(os.path.join(state_root, cid, "state.json"), "w") as f:
        f.write(text)
    for args in (["state", cid], ["list"], ["ps", cid], ["kill", cid], ["exec", cid, "true"],
                 ["update", "--memory", "100m", cid], ["delete", cid]):
        r = mc(*args, state_root=state_root)
        assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) <= 1, (args, r.stderr)
    ok(mc("delete", "-f", cid, state_root=state_root))
    assert no_state(state_root)


def test_rootfs_without_a_shell(tmp_path, state_root):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = mc("run", "--rm", "--name", new_id(), "--rootfs", str(empty), "--", "sh", "-c", "true",
           state_root=state_root)
    assert r.returncode == 127
    assert one_line_error(r) == \
        'minicontainer: exec "sh": executable file not found in $PATH'
    # the runtime made its mount points in it, and mounted nothing on the host
    assert no_state(state_root)


def test_run_with_a_name_and_an_id(busybox_rootfs, tmp_path, state_root):
    b = write_bundle(tmp_path, ["true"], rootfs=busybox_rootfs)
    r = mc("run", "-b", b, "--name", "one", "two", state_root=state_root)
    assert "two ids given" in one_line_error(r)


def test_debug_shows_the_traceback(state_root):
    r = mc("--debug", "run", "--rm", "--rootfs", "/nonexistent", "--", "true",
           state_root=state_root)
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_unknown_command():
    r = mc("frobnicate")
    assert r.returncode == 2 and one_line_error(r) == \
        "minicontainer: unknown command 'frobnicate' (minicontainer --help lists them)"


def test_unknown_properties_are_ignored_with_a_warning(bundle, state_root, tmp_path):
    # The runtime spec: implementations "MUST NOT generate an error if they encounter an
    # unknown property"; deprecated ones runc ignores (kernel memory) are ignored too.
    def edit(config):
        config["process"]["args"] = ["echo", "ran"]
        for path in ("process.foo", "linux.resources.memory.limitt", "bogus",
                     "linux.resources.memory.kernel", "linux.resources.memory.kernelTCP"):
            _set(path, 1)(config)
    b = bundle(["true"], edit)
    r = mc("run", "-b", b, new_id(), state_root=state_root)
    assert (r.returncode, r.stdout, r.stderr) == (0, "ran\n", "")
    log = tmp_path / "log.json"
    r = mc("--debug", "--log", str(log), "--log-format", "json", "run", "-b", b, new_id(),
           state_root=state_root)
    assert r.returncode == 0 and r.stdout == "ran\n", r.stderr
    # --debug prints the setup plan too (minicontainer: debug: setup plan: ...)
    warnings = sorted(line for line in r.stderr.splitlines() if ": debug: " not in line)
    assert "minicontainer: debug: setup plan: init: mount proc to /proc (proc) [mounts[0]]" \
        in r.stderr.splitlines()
    assert warnings == sorted("minicontainer: warning: " + w for w in (
        "config: unknown property bogus ignored",
        "config: unknown property process.foo ignored",
        "config: unknown property linux.resources.memory.limitt ignored",
        "config: linux.resources.memory.kernel is deprecated, ignored",
        "config: linux.resources.memory.kernelTCP is deprecated, ignored"))
    logged = [json.loads(line) for line in log.read_text().splitlines()]
    logged = [entry for entry in logged if entry["level"] != "debug"]
    assert {entry["level"] for entry in logged} == {"warning"} and len(logged) == 5


def test_command_line_mistakes_are_one_line(busybox_rootfs, state_root):
    r = mc("run", "--rm", "-e", "=x", "--rootfs", busybox_rootfs, "--", "true",
           state_root=state_root)
    assert one_line_error(r) == "minicontainer: -e '=x': not a variable (NAME=VALUE, or NAME " \
        "to pass ours)" and r.returncode == 125
    r = mc("--log", "/nonexistent/dir/log", "list", state_root=state_root)
    assert one_line_error(r) == "minicontainer: --log /nonexistent/dir/log: No such file or " \
        "directory" and r.returncode == 1
    r = mc("run", "--rm", "--preserve-fds=-2", "--rootfs", busybox_rootfs, "--", "true",
           state_root=state_root)
    assert one_line_error(r) == "minicontainer: run: argument --preserve-fds: '-2' is not a " \
        "count (0 or more)" and r.returncode == 2
    # images and rmi are on the shared parser: their mistakes are one line too
    r = mc("images", "--bogus", state_root=state_root)
    assert one_line_error(r) == "minicontainer: usage: unrecognized arguments: --bogus" \
        and r.returncode == 2
    r = mc("rmi", state_root=state_root)
    assert one_line_error(r) == "minicontainer: rmi: the following arguments are required: " \
        "IMAGE" and r.returncode == 2
    for args in (["list", "--format", "{{"], ["list", "--format", "{{.ID}"],
                 ["ps", "--format", "x {{"], ["images", "--format", "{{"],
                 ["inspect", "-f", "{{", "nosuch"]):  # parsed first, as docker's
        r = mc(*args, state_root=state_root)
        assert one_line_error(r, 1).startswith("minicontainer: --format: unclosed action: "), \
            (args, r.stderr)
    r = mc("images", "--format", "yaml", state_root=state_root)
    assert "argument -f/--format: 'yaml': table, json or a Go template" in one_line_error(r)
    r = mc("lsit", state_root=state_root)
    assert one_line_error(r) == "minicontainer: unknown command 'lsit' — did you mean 'list'? " \
        "(minicontainer --help lists them)" and r.returncode == 2
    # docker's order with a rootfs for the image: without a bare `--`, all is the command
    r = mc("run", "--rm", "--rootfs", busybox_rootfs, "sh", "-c", "echo hi",
           state_root=state_root)
    assert (r.returncode, r.stdout, r.stderr) == (0, "hi\n", "")
    assert no_state(state_root)


def test_kill_with_a_word_that_names_no_container(bundle, state_root):
    """runc's `kill ID SIGNAL` with a SIGNAL that is no signal, and no container either: "",
    "." and ".." named the state root itself, taken for a container, and docker's form killed
    ID with SIGKILL. A signal number beyond the last one is refused, not a traceback."""
    cid, _ = mc_create(bundle(["sleep", "100"]), state_root=state_root)
    try:
        for word in ("", ".", "..", "/tmp", "SIGFOO", "99999999999999999999", "65"):
            r = mc("kill", cid, word, state_root=state_root)
            assert one_line_error(r, 1) == "minicontainer: unknown signal %r" % word, word
            assert status(cid, state_root) == "created"
        r = mc("kill", "nosuch", "SIGFOO", state_root=state_root)  # said once, not per word
        assert one_line_error(r, 1) == "minicontainer: container nosuch does not exist"
        for word in ("", "."):
            r = mc("kill", word, state_root=state_root)
            assert one_line_error(r, 1), r.stderr
            r = mc("state", word, state_root=state_root)
            assert one_line_error(r, 1) == "minicontainer: container %s does not exist" % word
        assert status(cid, state_root) == "created"
    finally:
        mc("delete", "-f", cid, state_root=state_root)


def test_more_mistakes_are_one_line(bundle, busybox_rootfs, state_root, tmp_path, monkeypatch):
    """An --env-file not in UTF-8; events' --interval not above 0; an image store whose
    index.json is JSON but no image index."""
    env_file = tmp_path / "env"
    env_file.write_bytes(b"\xff\xfe=1\n")
    r = mc("run", "--rm", "--rootfs", busybox_rootfs, "--env-file", str(env_file), "--",
           "true", state_root=state_root)
    assert one_line_error(r, 125) == "minicontainer: --env-file: %s: not UTF-8 text (byte 0)" \
        % env_file
    cid, _ = mc_create(bundle(["sleep", "100"]), state_root=state_root)
    try:
        for interval in ("-1", "0", "0s", "nan"):
            r = mc("events", "--interval", interval, cid, state_root=state_root)
            assert one_line_error(r, 1) == "minicontainer: --interval %s: use seconds above " \
                "0, e.g. 5s" % interval
    finally:
        mc("delete", "-f", cid, state_root=state_root)
    store = tmp_path / "store"
    store.mkdir()
    monkeypatch.setenv("MINICONTAINER_STORE", str(store))
    for index in ("[]", "null", '{"manifests": 5}', '{"manifests": [5]}',
                  '{"manifests": [{"digest": 5}]}'):
        (store / "index.json").write_text(index)
        for args in (["images"], ["rmi", "x"], ["run", "--rm", "x"]):
            r = mc(*args, state_root=state_root)
            assert one_line_error(r, 125 if args[0] == "run" else 1) == "minicontainer: " \
                "image store %s: index.json is not an OCI image index" % store, (index, args)
    assert no_state(state_root)


@pytest.mark.parametrize("args", [["features"], ["images"], ["list"]])
def test_a_closed_pipe_ends_quietly(args, state_root):
    # `minicontainer.py features | head -1`: no traceback nor "[Errno 32]", and the exit
    # status of a program killed by SIGPIPE
    r, w = os.pipe()
    os.close(r)  # before the runtime writes: no reader, whenever it writes
    try:
        p = subprocess.run(mc_argv(*args, state_root=state_root), stdout=w,
                           stderr=subprocess.PIPE, timeout=30)
    finally:
        os.close(w)
    assert p.returncode == 141 and p.stderr == b"", p.stderr


def test_exec_process_that_is_no_object_is_one_line(bundle, state_root, tmp_path):
    """exec --process FILE whose JSON is an array (or another non-object) was a traceback
    (AttributeError: 'list' object has no attribute 'get'); runc: cannot unmarshal array."""
    cid, _ = mc_create(bundle(["sleep", "100"]), state_root=state_root)
    try:
        for text, kind in (("[1]", "array"), ('"x"', "string"), ("5", "number"),
                           ("null", "null"), ("true", "boolean")):
            (tmp_path / "process.json").write_text(text)
            r = mc("exec", "--process", tmp_path / "process.json", cid, state_root=state_root)
            assert one_line_error(r, 1) == "minicontainer: exec --process %s: a JSON %s, not " \
                "a process object" % (tmp_path / "process.json", kind)
        assert status(cid, state_root) == "created"
    finally:
        mc("delete", "-f", cid, state_root=state_root)
    assert no_state(state_root)


def test_exec_process_ids_out_of_range_are_one_line(bundle, state_root, tmp_path):
    """exec --process with an id that is none: additionalGids [4294967295] said a bare
    "[Errno 22] Invalid argument", -1 an OverflowError, and uid or gid 4294967295 (-1 to
    setresuid: the id left as it is) ran the process as root. Now each is refused, naming
    the field and the value, as create refuses them in a config."""
    cid, _ = mc_create(bundle(["sleep", "100"]), state_root=state_root)
    try:
        for key, user in (("additionalGids", {"uid": 0, "gid": 0, "additionalGids": [5, -1]}),
                          ("additionalGids", {"uid": 0, "gid": 0,
                                              "additionalGids": [4294967295]}),
                          ("uid", {"uid": 4294967295, "gid": 0}),
                          ("gid", {"uid": 0, "gid": 4294967295}),
                          ("uid", {"uid": 1 << 32, "gid": 0}), ("uid", {"uid": -1, "gid": 0})):
            value = (user[key][-1] if key == "additionalGids" else user[key])
            (tmp_path / "process.json").write_text(json.dumps(
                {"args": ["id"], "cwd": "/", "user": user}))
            r = mc("exec", "--process", tmp_path / "process.json", cid, state_root=state_root)
            assert one_line_error(r, 1) == "minicontainer: exec: process.user.%s: an id is " \
                "from 0 to 4294967294, not %d" % (key, value), user
    finally:
        mc("delete", "-f", cid, state_root=state_root)
    assert no_state(state_root)


def test_an_id_the_user_namespace_does_not_map_is_one_line(bundle, walkable_rootfs, state_root):
    """A user namespace of 65536 ids (as a rootless user's subordinate range): run -u 70000,
    -u 0:70000 and exec -u 70000 said a bare "[Errno 22] Invalid argument" (setresuid's);
    now the id and its missing mapping are named, as -u nosuch names the user. In a user
    namespace joined by path (no maps in the config) the init says so too."""
    for spec, kind in (("70000", "uid"), ("0:70000", "gid")):
        r = mc("run", "--rm", "--userns", "-u", spec, "--rootfs", walkable_rootfs, "--", "id",
               state_root=state_root)
        assert one_line_error(r, 125) == "minicontainer: --user: process.user.%s: %s 70000 " \
            "has no mapping in the container's user namespace (linux.%sMappings)" % (
                kind, kind, kind)

    def userns(config):
        config["linux"]["namespaces"].append({"type": "user"})
        for kind in ("uid", "gid"):
            config["linux"][kind + "Mappings"] = [
                {"containerID": 0, "hostID": 200000, "size": 65536}]
    cid, _ = mc_create(bundle(["sleep", "100"], userns, rootfs=walkable_rootfs),
                       state_root=state_root)
    try:
        r = mc("exec", "-u", "70000", cid, "id", state_root=state_root)
        assert one_line_error(r, 1) == "minicontainer: exec: process.user.uid: uid 70000 has " \
            "no mapping in the container's user namespace (linux.uidMappings)"
        assert ok(mc("exec", "-u", "1000", cid, "id", "-u", state_root=state_root)) == "1000\n"
        pid = json.loads(ok(mc("state", cid, state_root=state_root)))["pid"]

        def joins(config):
            config["linux"]["namespaces"].append(
                {"type": "user", "path": "/proc/%d/ns/user" % pid})
            config["mounts"] = [m for m in config["mounts"] if m["type"] not in ("sysfs",
                                                                                 "cgroup")]
            config["process"]["user"] = {"uid": 70000, "gid": 0}
        r = mc("run", "-b", bundle(["id"], joins, rootfs=walkable_rootfs), new_id(),
               state_root=state_root)
        assert one_line_error(r, 1) == "minicontainer: process.user: uid 70000: no mapping " \
            "in the container's user namespace"
    finally:
        mc("delete", "-f", cid, state_root=state_root)
    assert no_state(state_root)


def test_preserve_fds_beyond_what_can_be_passed_is_one_line(busybox_rootfs, bundle, state_root):
    """run -d --preserve-fds 251 (254 fds for the monitor, over SCM_RIGHTS' 253) said a bare
    "[Errno 22] Invalid argument"; an fd that is not open, "[Errno 9] Bad file descriptor"
    (run, create, exec). Now the limit, or the fd, is named, and nothing starts."""
    open_fds = "import os, sys\nfor fd in range(3, 254):\n    os.dup2(os.open(os.devnull, " \
        "os.O_RDONLY), fd)\nos.execvp(sys.argv[1], sys.argv[1:])"  # 3 to 253 open
    r = subprocess.run([sys.executable, "-c", open_fds] + mc_argv(
        "run", "-d", "--rm", "--preserve-fds", "251", "--rootfs", busybox_rootfs, "--", "true",
        state_root=state_root), stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=60)
    assert one_line_error(r, 125) == "minicontainer: run -d --preserve-fds 251: at most 250 " \
        "(the fds are handed to the monitor with stdin, stdout and stderr, and the kernel " \
        "passes 253 fds at most)"
    assert no_state(state_root)
    r = mc("run", "--rm", "--preserve-fds", "2", "--rootfs", busybox_rootfs, "--", "true",
           state_root=state_root)
    assert one_line_error(r, 125) == "minicontainer: --preserve-fds 2: fd 3 is not open (the " \
        "fds passed are 3 to 4)"
    r = mc("create", "--preserve-fds", "1", "--bundle", bundle(["true"]), new_id(),
           state_root=state_root)
    assert one_line_error(r, 1) == "minicontainer: --preserve-fds 1: fd 3 is not open (the " \
        "fds passed are 3 to 3)"
    assert no_state(state_root)
    # and what is under the limit is taken: the monitor took 64 fds a request at most
    open_70 = "import os, sys\nhigh = os.dup2(os.open(os.devnull, os.O_RDONLY), 999)\n" \
        "for fd in range(3, 73):\n    os.dup2(high, fd)\nos.close(high)\n" \
        "os.execvp(sys.argv[1], sys.argv[1:])"  # 3 to 72 open, inheritable
    cid = new_id()
    r = subprocess.run([sys.executable, "-c", open_70] + mc_argv(
        "run", "-d", "--name", cid, "--preserve-fds", "70", "--rootfs", busybox_rootfs, "--",
        "sh", "-c", "ls /proc/self/fd | wc -l; sleep 100", state_root=state_root),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    try:
        assert r.returncode == 0, r.stderr
        wait_for(lambda: mc("logs", cid, state_root=state_root).stdout.strip(),
                 what="its output")
        # 0-2, the 70 given, and ls's own directory fd
        assert mc("logs", cid, state_root=state_root).stdout.split() == ["74"]
    finally:
        ok(mc("rm", "-f", cid, state_root=state_root))


def test_an_entry_of_the_state_root_that_cannot_be_loaded_is_skipped(bundle, state_root,
                                                                     tmp_path):
    """An entry of the state root that is no container's state (a state.json that is a
    directory, a regular file, a symbolic link to a directory without state.json) made
    list, ps -a and gc exit 1 for the whole root; and gc (delete too) removed the files of
    the directory that the link named. Now each command skips it with a one-line warning
    naming it, as runc's list does, and goes on; delete refuses the link."""
    cid, _ = mc_create(bundle(["sleep", "100"]), state_root=state_root)
    target = tmp_path / "not-state"
    target.mkdir()
    (target / "precious").write_text("kept")
    junk = {"junkdir": state_root + "/junkdir/state.json: Is a directory",
            "junkfile": state_root + "/junkfile/state.json: Not a directory",
            "junklink": state_root + "/junklink is a symbolic link, not a state directory"}
    try:
        os.makedirs(os.path.join(state_root, "junkdir", "state.json"))
        open(os.path.join(state_root, "junkfile"), "w").close()
        os.symlink(target, os.path.join(state_root, "junklink"))
        for args in (["list", "-q"], ["ps", "-a", "-q"], ["gc"]):
            r = mc(*args, state_root=state_root)
            assert r.returncode == 0 and "Traceback" not in r.stderr, (args, r.stderr)
            assert r.stdout == ("" if args == ["gc"] else cid[:12 if args[0] == "ps" else None]
                                + "\n"), (args, r.stdout)
            assert sorted(r.stderr.splitlines()) == [
                "minicontainer: warning: skipped container %s: %s" % (name, junk[name])
                for name in sorted(junk)], (args, r.stderr)
        assert (target / "precious").read_text() == "kept"
        assert status(cid, state_root) == "created"
        r = mc("delete", "-f", "junklink", state_root=state_root)
        assert one_line_error(r, 1) == "minicontainer: container junklink: " + junk["junklink"]
        assert (target / "precious").read_text() == "kept"
    finally:
        mc("delete", "-f", cid, state_root=state_root)
        shutil.rmtree(os.path.join(state_root, "junkdir"), ignore_errors=True)
        for name in ("junkfile", "junklink"):
            if os.path.lexists(os.path.join(state_root, name)):
                os.unlink(os.path.join(state_root, name))
    assert no_state(state_root)


def test_a_state_root_others_may_write_is_refused(tmp_path):
    """The host root's default state root (/run/minicontainer) is refused, as an ordinary
    user's (tests/test_rootless.py), if it is another's or others may write it (a group too,
    root's among them): check_own_dir, which main applies to it, on directories of each
    kind (the default itself is shared with whatever else runs here)."""
    d = tmp_path / "root"
    d.mkdir(0o711)
    mcmod.check_own_dir(str(d), "the state root", private=True)
    for mode, uid, words in ((0o775, 0, "writable by others (mode 0775; the state root)"),
                             (0o713, 0, "writable by others (mode 0713; the state root)"),
                             (0o711, 65534, "not owned by you (uid 65534; the state root)")):
        os.chmod(d, mode)
        os.chown(d, uid, 0)
        with pytest.raises(mcmod.Error) as e:
            mcmod.check_own_dir(str(d), "the state root", private=True)
        assert str(e.value) == "%s: %s: refused" % (d, words)
    os.chown(d, 0, 0)
    (tmp_path / "file").write_text("")
    with pytest.raises(mcmod.Error, match="file: not a directory"):
        mcmod.check_own_dir(str(tmp_path / "file"), "the state root")
