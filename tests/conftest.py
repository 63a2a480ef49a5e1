"""Shared fixtures: a busybox rootfs, the runtime as a command, and a leak check."""
import itertools
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))

import bytecode  # noqa: E402

# The runtime's bytecode cached as `make install` caches it: split, the functions a start
# does not call loaded on their first call (tools/bytecode.py). The suite runs what users
# run, and so does this process, whose helpers call the runtime's functions.
bytecode.write(os.path.join(ROOT, "minicontainer.py"))

import minicontainer  # noqa: E402
import mkrootfs  # noqa: E402

pytest_plugins = ["fixtures_registry"]

RUNTIME = os.path.join(ROOT, "minicontainer.py")
SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")


def repository_files():
    """The checkout's files, but for git's, the image store's and caches: tests must not write
    here (a program run with the tests' working directory may, e.g. conmon's `oom` file)."""
    skip = {".git", "images", "__pycache__", ".pytest_cache", ".ruff_cache"}
    found = set()
    for top, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in skip]
        found.update(os.path.relpath(os.path.join(top, f), ROOT) for f in files)
    return found


REPOSITORY_FILES_AT_START = repository_files()


def host_device_nodes():
    """Mode, owner and type of the host's standard device nodes: the ones a container in a
    user namespace gets bind-mounted (the same inodes: a chmod through the bind is the
    host's)."""
    found = {}
    for name, *_ in minicontainer.DEFAULT_DEVICES:
        try:
            st = os.stat(name)
        except OSError:
            continue
        found[name] = (oct(st.st_mode), st.st_uid, st.st_gid, st.st_rdev)
    return found


HOST_DEVICE_NODES_AT_START = host_device_nodes()

# A shell without job control starts a background job with SIGINT ignored, and what it runs
# inherits that: the pulls and runtimes of the tests would ignore the Ctrl-C that tests send
# them. Python's handler, ours, is reset to the default by their exec.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="needs root")
        for item in items:
            if "needs_root" in item.keywords:
                item.add_marker(skip)
    # The session-wide leak check (tests/test_leaks.py) looks at what all the others left.
    items.sort(key=lambda item: item.fspath.basename == "test_leaks.py")


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory):
    """A read-mostly busybox rootfs shared by the session; tests that write copy it."""
    return mkrootfs.make_rootfs(str(tmp_path_factory.mktemp("busybox") / "rootfs"))


@pytest.fixture(scope="session")
def image_rootfs(tmp_path_factory):
    """The busybox rootfs that test images are built from, never run: a run of the shared
    one leaves its mount points there (-v /x: a directory /x), which an image built from it
    would have (a volume test's once failed test_overlay's `echo x > /x`)."""
    return mkrootfs.make_rootfs(str(tmp_path_factory.mktemp("image-busybox") / "rootfs"))


# The runtime as engines run it: started by the shell line at its top (its bytecode cached)
RUNTIME_COMMAND = minicontainer.runtime_command()


def mc_argv(*args, state_root=None):
    """The command line of the runtime: for the tests that need a Popen, a pty or fds of
    their own; the others call mc or mc_bg."""
    cmd = list(RUNTIME_COMMAND)
    if state_root:
        cmd += ["--root", str(state_root)]
    return cmd + [str(a) for a in args]


def mc(*args, input=None, timeout=60, check=False, env=None, state_root=None):
    """Run the runtime with the interpreter running the tests; returns CompletedProcess."""
    return subprocess.run(mc_argv(*args, state_root=state_root), input=input,
                          capture_output=True, text=True, timeout=timeout, check=check, env=env)


class Ran(subprocess.CompletedProcess):
    """mc_bg's result: a CompletedProcess that also unpacks as (returncode, stdout, stderr)."""

    def __iter__(self):
        return iter((self.returncode, self.stdout, self.stderr))


def mc_bg(*args, state_root=None, out=None, timeout=60, env=None, stdout=None):
    """Run the runtime with stdout/stderr going to files: for commands that leave a
    container running (create, run -d, exec -d), which keeps the runtime's stdio open.
    Returns a Ran; `out` is the prefix of the two files, `stdout` a file descriptor to give
    instead of the first."""
    import tempfile
    prefix = out or tempfile.mktemp(prefix="mc-out-")
    cmd = mc_argv(*args, state_root=state_root)
    with open(prefix + ".out", "w") as o, open(prefix + ".err", "w") as e:
        rc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=o if stdout is None else stdout,
                            stderr=e, timeout=timeout, env=env).returncode
    with open(prefix + ".out") as o, open(prefix + ".err") as e:
        r = Ran(cmd, rc, o.read(), e.read())
    if not out:  # nobody else knows their names
        os.unlink(prefix + ".out")
        os.unlink(prefix + ".err")
    return r


def mc_create(bundle, cid=None, *flags, state_root=None, stdout=None, check=True):
    """`create` (a new id unless cid is given), with stdio to files (the container keeps
    them) or to the given stdout fd; never a traceback, and success if check. Returns (id,
    mc_bg's Ran)."""
    cid = cid or new_id()
    r = mc_bg("create", "--bundle", bundle, *flags, cid, state_root=state_root, stdout=stdout)
    assert "Traceback" not in r.stderr, r.stderr
    if check:
        assert r.returncode == 0, r.stderr
    return cid, r


def mc_sh(script, *flags, rootfs, state_root, name=None, **kw):
    """`run --rm --name NAME --rootfs ROOTFS FLAGS -- sh -c SCRIPT` through mc (a new id unless
    name is given): a shell script in a container of its own."""
    return mc("run", "--rm", "--name", name or new_id(), "--rootfs", rootfs, *flags, "--",
              "sh", "-c", script, state_root=state_root, **kw)


def state(cid, state_root):
    """The container's `state`, parsed."""
    return json.loads(ok(mc("state", cid, state_root=state_root)))


def status(cid, state_root):
    return state(cid, state_root)["status"]


def wait_status(cid, want, state_root, timeout=10):
    wait_for(lambda: status(cid, state_root) == want, timeout, "%s to be %s" % (cid, want))


def write_bundle(d, args=("true",), edit=None, rootfs=None, terminal=False, text=None):
    """Make directory d (made if missing) an OCI bundle: the config `spec` writes, running
    args in rootfs (by default d/rootfs), edited by edit (a callable, like set_field's); or
    the raw text given. Returns d as a string."""
    d = str(d)
    os.makedirs(d, exist_ok=True)
    if text is None:
        config = minicontainer.default_spec(rootfs=str(rootfs or os.path.join(d, "rootfs")),
                                            args=list(args), terminal=terminal)
        if edit:
            edit(config)
        text = json.dumps(config)
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write(text)
    return d


@pytest.fixture
def bundle(tmp_path, busybox_rootfs):
    """bundle(args, edit=None, rootfs=None, ...) -> a new bundle directory (write_bundle's)
    in the test's tmp_path, on the shared busybox rootfs unless rootfs says otherwise."""
    n = itertools.count(1)

    def make(args=("true",), edit=None, rootfs=None, **kw):
        return write_bundle(tmp_path / ("bundle%d" % next(n)), args, edit,
                            rootfs or busybox_rootfs, **kw)
    return make


def no_state(state_root):
    """Nothing left in the state directory (which a failed create need not have made)."""
    return not os.path.isdir(state_root) or os.listdir(state_root) == []


# ---- assertions and waits that many test modules use ----

def set_field(path, value):
    """An edit of a config that sets the field at a dotted path (making the objects on the
    way), for tests that shape configs."""
    def edit(config):
        *parents, last = path.split(".")
        d = config
        for p in parents:
            d = d.setdefault(p, {})
        d[last] = value
    return edit


def ok(r, quiet=False):
    """The CompletedProcess succeeded, without a traceback (quiet: with nothing on stderr at
    all); its stdout."""
    assert r.returncode == 0, (r.args[-6:], r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in (r.stderr or ""), r.stderr
    if quiet:
        assert r.stderr == "", r.stderr
    return r.stdout


def one_line_error(r, code=None):
    """The command failed (with exit status code, if given) with one line `minicontainer: ...`
    on stderr and no traceback; the line."""
    assert r.returncode != 0 if code is None else r.returncode == code, \
        (r.args[-6:], r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minicontainer: "), r.stderr
    return lines[0]


def monitor_pid(state_root):
    """The pid of the monitor of a state root's detached containers (run -d)."""
    with open(os.path.join(minicontainer.monitor_dir(state_root), "monitor")) as f:
        return int(f.read())


def parent_pid(pid):
    return int(minicontainer.proc_stat(pid)[1])


def wait_for(predicate, timeout=10, what="condition", interval=0.01):
    """predicate()'s first true value, polled every interval seconds: the way a test waits
    for a state, a file or a process (not a sleep of a guessed length)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out waiting for %s" % what)


def host_block_device():
    """A block device that the host itself may open, so that EPERM inside is the cgroup's."""
    for name in sorted(os.listdir("/sys/dev/block")):
        major, minor = name.split(":")
        try:
            with open("/sys/dev/block/%s/uevent" % name) as f:
                dev = dict(line.strip().split("=", 1) for line in f if "=" in line)["DEVNAME"]
            os.close(os.open("/dev/" + dev, os.O_RDONLY))
        except (OSError, KeyError):
            continue
        return major, minor
    pytest.skip("no block device that the host can open")


# ---- the host's cgroup layout: v1, hybrid or v2 ----

class CgroupLayout:
    """How this host mounts cgroups, as the runtime finds them (v1: a hierarchy per controller;
    hybrid: those plus a v2 mount for membership; v2: one hierarchy), and where a container's
    cgroup is: on the host, and as a process of a docker-like container sees it (v1 and
    hybrid: a bind of each hierarchy's directory; v2: its own cgroup namespace, so the root)."""

    def __init__(self):
        self.v1, self.v2 = minicontainer.cgroup_hierarchies()
        self.kind = "v2" if not self.v1 else "hybrid" if self.v2 else "v1"
        self.unified = self.kind == "v2"

    def has(self, controller):
        if not self.unified:
            return controller in self.v1
        with open(os.path.join(self.v2, "cgroup.controllers")) as f:
            return controller in f.read().split()

    def need(self, *controllers):
        for c in controllers:
            if not self.has(c):
                pytest.skip("no cgroup controller %s on this %s host" % (c, self.kind))

    def dir(self, controller, path):
        """The host directory of cgroup `path` (/minicontainer/ID) that holds controller's files
        (on v2 the one directory, whichever the controller)."""
        return os.path.join(self.v2 if self.unified else self.v1[controller], path.strip("/"))

    def inside(self, controller, name):
        """The path of one of the container's own cgroup files inside it."""
        if self.unified:
            return "/sys/fs/cgroup/" + name
        return "/sys/fs/cgroup/%s/%s" % (os.path.basename(self.v1[controller]), name)

    def read(self, controller, path, name):
        with open(os.path.join(self.dir(controller, path), name)) as f:
            return f.read().strip()

    def procs(self, path):
        """The members of cgroup `path`, as host pids."""
        d = self.dir("pids", path) if self.unified or "pids" in self.v1 else \
            self.dir("memory", path)
        with open(os.path.join(d, "cgroup.procs")) as f:
            return sorted(int(p) for p in f.read().split())

    def frozen(self, path):
        """freezer.state says FROZEN (v1), or cgroup.events "frozen 1" (v2)."""
        if self.unified:
            return "frozen 1" in self.read(None, path, "cgroup.events").splitlines()
        return self.read("freezer", path, "freezer.state") == "FROZEN"

    def exists(self, path):
        """Whether any directory of cgroup `path` is left on the host."""
        roots = ([self.v2] if self.v2 else []) + sorted(set(self.v1.values()))
        return any(os.path.exists(os.path.join(r, path.strip("/"))) for r in roots)

    def member(self, path, pid=None, text=None):
        """/proc/PID/cgroup (or a copy of it, text) puts the process in cgroup `path` in every
        hierarchy the runtime uses (named v1 ones, name=systemd, it does not join)."""
        if text is None:
            with open("/proc/%d/cgroup" % pid) as f:
                text = f.read()
        seen = {}
        for line in text.splitlines():
            _, controllers, where = line.split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                seen[c] = where
        used = ([""] if self.v2 else []) + list(self.v1)
        return all(seen.get(c) == "/" + path.strip("/") for c in used)


@pytest.fixture(scope="session")
def cgroups():
    return CgroupLayout()


# ---- per-test isolation for the runtime tests: ids, a state root, and a leak check ----

SESSION = "mct%d" % os.getpid()  # every container id, hence every cgroup, starts with it
_ids = itertools.count(1)


def new_id(tag="c"):
    return "%s-%s-%d" % (SESSION, tag, next(_ids))


@pytest.fixture
def state_root(tmp_path):
    """A state directory (--root) of the test's own."""
    return str(tmp_path / "state")


@pytest.fixture
def walkable(busybox_rootfs):
    """A directory every uid may walk (pytest's own tmp dirs are 0700): in a user namespace
    the container's root must be able to reach its rootfs and bind sources."""
    import pathlib
    import tempfile
    d = tempfile.mkdtemp(prefix="mc-userns-", dir="/tmp")
    os.chmod(d, 0o755)
    shutil.copytree(busybox_rootfs, os.path.join(d, "rootfs"), symlinks=True)
    yield pathlib.Path(d)
    shutil.rmtree(d)


@pytest.fixture
def walkable_rootfs(walkable):
    """walkable's copy of the busybox rootfs."""
    return str(walkable / "rootfs")


@pytest.fixture
def rootfs_copy(busybox_rootfs, tmp_path):
    """A private copy of the busybox rootfs, for tests that write to it."""
    dest = str(tmp_path / "rootfs")
    shutil.copytree(busybox_rootfs, dest, symlinks=True)
    return dest


@pytest.fixture(scope="session")
def alpine_rootfs(tmp_path_factory):
    """Alpine's minirootfs from shared/data (musl, /etc/passwd of a real distribution)."""
    tarball = os.path.join(SHARED_DATA, "alpine-minirootfs-3.20.3-%s.tar.gz" % platform.machine())
    if not os.path.exists(tarball):
        pytest.skip("no %s" % tarball)
    dest = tmp_path_factory.mktemp("alpine") / "rootfs"
    dest.mkdir()
    subprocess.run(["tar", "-xzf", tarball, "-C", str(dest)], check=True)
    return str(dest)


def _cmdlines():
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/cmdline" % name, "rb") as f:
                    yield int(name), f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                pass


def session_cgroups():
    """cgroup directories this session's containers made (their ids start with SESSION)."""
    found = []
    for top, dirs, _ in os.walk("/sys/fs/cgroup"):
        depth = top.count("/") - 3
        for d in dirs:
            if SESSION in d:
                found.append(os.path.join(top, d))
        if depth >= 3:
            dirs[:] = []
    return found


def mountpoints_under(*paths):
    return [mp for mp, _, _ in minicontainer.mountinfo()
            if any(mp == p or mp.startswith(p.rstrip("/") + "/") for p in paths)]


def links():
    with minicontainer.Netlink() as nl:
        return minicontainer.rtm_getlink_all(nl)


def leases(bridge=None):
    import json
    try:
        with open(os.path.join(minicontainer.NETWORK_DIR,
                               (bridge or minicontainer.BRIDGE) + ".json")) as f:
            return json.load(f).get("leases", {})
    except FileNotFoundError:
        return {}


def ours(state_root):
    """Leases, mounts and links the containers of this state root hold."""
    held = {ip: e for ip, e in leases().items() if e["dir"].startswith(state_root + "/")}
    return held, mountpoints_under(state_root), \
        sorted(e["veth"] for e in held.values() if e["veth"] in links())


def find_leaks(state_root, paths, marker):
    """What the runtime left behind, each as a line; cleans it up as it goes."""
    problems = []
    # A state root's monitor of detached containers leaves once it has seen the last one
    # end (which the test's delete does not wait for): it has a moment to do so.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(
            "minicontainer._Monitor" in cmd and marker in cmd for _, cmd in _cmdlines()):
        time.sleep(0.02)
    for pid, cmd in _cmdlines():
        if "minicontainer.py" in cmd and marker in cmd and pid != os.getpid():
            problems.append("runtime process left: %d %s" % (pid, cmd))
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    if state_root and os.path.isdir(state_root):
        for name in sorted(os.listdir(state_root)):
            problems.append("state dir left: %s/%s" % (state_root, name))
            try:
                minicontainer.Container.load(name, state_root).destroy()
            except Exception:
                shutil.rmtree(os.path.join(state_root, name), ignore_errors=True)
    for d in sorted(session_cgroups(), key=len, reverse=True):
        problems.append("cgroup left: %s" % d)
        try:
            with open(os.path.join(d, "cgroup.procs")) as f:
                for pid in f.read().split():
                    os.kill(int(pid), signal.SIGKILL)
            for _ in range(100):
                try:
                    os.rmdir(d)
                    break
                except OSError:
                    time.sleep(0.01)
        except OSError:
            pass
    for mp in sorted(mountpoints_under(*paths), key=len, reverse=True):
        problems.append("mount left: %s" % mp)
        subprocess.run(["umount", "-l", mp], capture_output=True)
    return problems


@pytest.fixture
def no_leaks(tmp_path, state_root, busybox_rootfs):
    """After the test: no runtime process, state dir, cgroup or mount of this test remains."""
    yield
    problems = find_leaks(state_root, [str(tmp_path), busybox_rootfs], str(tmp_path))
    if problems:
        pytest.fail("the test left things behind:\n  " + "\n  ".join(problems))


# ---- an unprivileged user, for the rootless tests ----

ROOTLESS_USER_PREFIX = "mcrl"  # test_leaks checks that no such user is left
SUBID_FILES = ("/etc/subuid", "/etc/subgid")


def _edit_subids(name, line=None):
    """Drop `name`'s lines from /etc/subuid and /etc/subgid (useradd may have given it a
    range), then add `line` (start:count) if given; atomically, as shadow's tools do."""
    for path in SUBID_FILES:
        try:
            with open(path) as f:
                lines = [x for x in f.read().splitlines() if x.split(":")[0] != name]
        except FileNotFoundError:
            lines = []
        if line:
            lines.append("%s:%s" % (name, line))
        tmp = path + ".mc-tmp"
        with open(tmp, "w") as f:
            f.write("".join(x + "\n" for x in lines))
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)


class RootlessUser:
    """A user made for the test module: a home, a runtime dir ($XDG_RUNTIME_DIR, 0700), a
    range of 65536 subordinate ids, and a copy of the runtime and its tools it can read
    (the checkout may not be). Commands run as it through setpriv, in a clean environment."""

    def __init__(self):
        import pwd
        import tempfile
        self.name = "%s%d" % (ROOTLESS_USER_PREFIX, os.getpid())
        self.base = tempfile.mkdtemp(prefix="mc-rootless-", dir="/tmp")
        os.chmod(self.base, 0o755)
        self.home = os.path.join(self.base, "home")
        subprocess.run(["useradd", "--no-create-home", "--home-dir", self.home, "--shell",
                        "/bin/sh", "--user-group", self.name], check=True, capture_output=True)
        pw = pwd.getpwnam(self.name)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        # Far from the ranges useradd hands out (100000 on), and this session's own.
        self.subid_start, self.subid_count = 1000000 + (os.getpid() % 4000) * 65536, 65536
        _edit_subids(self.name, "%d:%d" % (self.subid_start, self.subid_count))
        self.xdg = os.path.join(self.base, "xdg")
        for d, mode in ((self.home, 0o755), (self.xdg, 0o700)):
            os.mkdir(d, mode)
            os.chown(d, self.uid, self.gid)
        self.code = os.path.join(self.base, "code")
        os.makedirs(os.path.join(self.code, "tools"))
        shutil.copy2(RUNTIME, self.code)
        for name in os.listdir(os.path.join(ROOT, "tools")):
            if name.endswith(".py"):
                shutil.copy2(os.path.join(ROOT, "tools", name), os.path.join(self.code, "tools"))
        import compileall  # bytecode it can read (it may not write it there)
        compileall.compile_dir(self.code, quiet=1)
        self.runtime = os.path.join(self.code, "minicontainer.py")
        bytecode.write(self.runtime)  # the runtime's split, as make install writes it
        self.state = os.path.join(self.xdg, "minicontainer")

    def env(self, **extra):
        env = {"HOME": self.home, "USER": self.name, "LOGNAME": self.name,
               "XDG_RUNTIME_DIR": self.xdg,
               "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
        env.update(extra)
        return {k: v for k, v in env.items() if v is not None}

    def argv(self, argv, **env):
        return ["setpriv", "--reuid", str(self.uid), "--regid", str(self.gid),
                "--init-groups", "--", "env", "-i"] + \
            ["%s=%s" % kv for kv in self.env(**env).items()] + [str(a) for a in argv]

    def run(self, *argv, input=None, timeout=60, cwd=None, env=None, bg=False, cgroup=None):
        """argv as the user; a CompletedProcess with text output. bg: its output through
        files, for a command that leaves a process holding them (create, run -d); cgroup:
        a cgroup v2 directory it starts in (as a user's shell in a delegated one)."""
        import tempfile
        cmd = self.argv(argv, **(env or {}))
        if cgroup:
            cmd = ["sh", "-c", 'echo $$ > "$0"/cgroup.procs && exec "$@"', cgroup] + cmd
        if not bg:
            return subprocess.run(cmd, input=input, text=True, capture_output=True,
                                  timeout=timeout, cwd=cwd or self.base)
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                               timeout=timeout, cwd=cwd or self.base)
            out.seek(0)
            err.seek(0)
            return subprocess.CompletedProcess(cmd, r.returncode, out.read(), err.read())

    def mc(self, *args, **kw):
        """The runtime (the user's copy) as the user."""
        return self.run(sys.executable, self.runtime, *args, **kw)

    def mkdir(self, *parts, rootfs=False):
        """A directory of the user's under base (a busybox rootfs in it if asked)."""
        d = os.path.join(self.base, *parts)
        if rootfs:
            mkrootfs.make_rootfs(d)
        else:
            os.makedirs(d)
        subprocess.run(["chown", "-R", "%d:%d" % (self.uid, self.gid), d], check=True)
        return d

    def processes(self):
        """Pids of the processes of the user and of its subordinate ids."""
        ids = range(self.subid_start, self.subid_start + self.subid_count)
        found = []
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == os.getpid():
                continue
            try:
                with open("/proc/%s/status" % name) as f:
                    uid = int(next(x for x in f if x.startswith("Uid:")).split()[1])
            except (OSError, StopIteration):
                continue
            if uid == self.uid or uid in ids:
                found.append(int(name))
        return found

    def remove(self):
        """Everything of the user's goes: its processes, mounts under base, files, ids."""
        left = []
        for _ in range(50):
            pids = self.processes()
            if not pids:
                break
            left = left or pids
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.1)
        for mp in sorted(mountpoints_under(self.base), key=len, reverse=True):
            subprocess.run(["umount", "-l", mp], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)
        lock = "/dev/shm/libpod_rootless_lock_%d" % self.uid  # podman rootless leaves it
        try:
            if os.stat(lock).st_uid == self.uid:
                os.unlink(lock)
        except OSError:
            pass
        _edit_subids(self.name)
        subprocess.run(["userdel", self.name], capture_output=True)
        return left


@pytest.fixture(scope="module")
def rootless_user():
    """A RootlessUser for the module, removed afterwards with whatever it still runs (a
    module checks what its tests left before: see test_rootless.test_nothing_left)."""
    user = RootlessUser()
    try:
        yield user
    finally:
        user.remove()
