"""Issue 15, item 3: fuse-overlayfs between the kernel's overlay and the private copy.

A user never reaches it on this machine (the kernel allows overlayfs in user namespaces, and
/dev/fuse opens for root only; the rootless tests make it so, or not, in a mount namespace of
their own), so $MINICONTAINER_OVERLAY=fuse takes the kernel's overlay
as refused, and the tests run as root: with a user namespace (the first child is refused,
as the host's root) and without (the init is refused). The daemon must be no process of
the container's, and must not outlive it."""
import os
import signal
import stat
import subprocess
import sys

import pytest

import minicontainer as mcmod
from conftest import mc, mc_bg, mountpoints_under, new_id, ok

pytestmark = [pytest.mark.needs_root, pytest.mark.usefixtures("no_leaks"),
              pytest.mark.skipif(not os.path.exists("/usr/bin/fuse-overlayfs"),
                                 reason="fuse-overlayfs is not installed")]

SAID = "fuse-overlayfs mounts the image instead"
COPY = "the container gets a private copy of the image"
USERNS = pytest.mark.parametrize("userns", [["--userns"], []], ids=["userns", "root"])


@pytest.fixture
def image(image_rootfs, walkable):
    """(env, state root): a busybox image in a store of its own, fuse-overlayfs forced."""
    import import_image
    store = str(walkable / "store")
    import_image.import_image(image_rootfs, "fuse-test:1", store=store)
    env = dict(os.environ, MINICONTAINER_STORE=store, MINICONTAINER_OVERLAY="fuse")
    yield env, str(walkable / "state")
    assert not daemons(str(walkable)) and not mountpoints_under(str(walkable))


def daemons(under):
    """The fuse-overlayfs processes serving a container under this directory."""
    found = []
    for pid in os.listdir("/proc"):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except (OSError, ValueError):
            continue
        if argv[0].endswith("fuse-overlayfs") and any(under + "/" in a for a in argv):
            found.append(int(pid))
    return found


@USERNS
def test_the_image_through_fuse_overlayfs(image, userns):
    env, state_root = image
    cid = new_id("fuse")
    r = mc_bg("run", "-d", "--name", cid, *userns, "fuse-test:1", "sh", "-c", "sleep 1000",
              state_root=state_root, env=env)
    assert r.returncode == 0 and r.stderr.count(SAID) == 1, r.stderr
    assert len(r.stderr.splitlines()) == 1, r.stderr
    try:
        ov = mcmod.Container.load(cid, state_root).state["overlay"]
        assert ov["mode"] == "fuse-overlayfs"
        assert daemons(state_root) == [ov["helper"][0]]
        out = ok(mc("exec", cid, "sh", "-c",
                    "echo hi > /new && cat /new; awk '$5 == \"/\"' /proc/self/mountinfo; "
                    "ls /bin/busybox; cat /proc/[0-9]*/cmdline | tr '\\0' ' '",
                    state_root=state_root))
        lines = out.splitlines()
        assert lines[0] == "hi" and " - fuse.fuse-overlayfs " in lines[1], out
        assert lines[2] == "/bin/busybox", out
        assert "fuse-overlayfs" not in lines[3] and "sleep 1000" in lines[3], out
        assert open(os.path.join(state_root, cid, "upper", "new")).read() == "hi\n"
    finally:
        ok(mc("rm", "-f", cid, state_root=state_root))
    assert daemons(state_root) == [] and not os.path.exists(os.path.join(state_root, cid))


@USERNS
def test_a_container_that_exits_takes_its_daemon(image, userns):
    env, state_root = image
    r = mc("run", "--rm", *userns, "fuse-test:1", "sh", "-c", "echo x > /x && cat /x",
           state_root=state_root, env=env)
    assert (r.returncode, r.stdout, r.stderr.count(SAID)) == (0, "x\n", 1), r.stderr
    assert daemons(state_root) == [] and os.listdir(state_root) == []
    # kept, stopped: the daemon goes with the init, the writable layer stays
    cid = new_id("fuse")
    r = mc("run", "--name", cid, *userns, "fuse-test:1", "sh", "-c", "echo y > /y",
           state_root=state_root, env=env)
    assert r.returncode == 0, r.stderr
    assert daemons(state_root) == []
    assert open(os.path.join(state_root, cid, "upper", "y")).read() == "y\n"
    ok(mc("rm", cid, state_root=state_root))


def test_a_restart_keeps_the_writable_layer_and_one_daemon(image):
    env, state_root = image
    cid = new_id("fuse")
    r = mc_bg("run", "-d", "--name", cid, "--userns", "fuse-test:1", "sh", "-c",
              "echo life >> /lives; sleep 1000", state_root=state_root, env=env)
    assert r.returncode == 0, r.stderr
    try:
        first = daemons(state_root)
        r = mc_bg("restart", cid, state_root=state_root, env=env)
        assert r.returncode == 0, r.stderr
        assert ok(mc("exec", cid, "cat", "/lives", state_root=state_root)) == "life\nlife\n"
        now = daemons(state_root)
        assert len(now) == 1 and now != first
    finally:
        ok(mc("rm", "-f", cid, state_root=state_root))
    assert daemons(state_root) == []


def test_without_fuse_overlayfs_a_private_copy(image, tmp_path):
    env, state_root = image
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    r = mc("run", "--rm", "--userns", "fuse-test:1", "sh", "-c", "cat /bin/busybox | wc -c",
           state_root=state_root, env=dict(env, PATH=str(bin_dir)))
    assert r.returncode == 0 and int(r.stdout) > 0, r.stderr
    assert r.stderr == ("minicontainer: overlayfs not used ($MINICONTAINER_OVERLAY=fuse); "
                        "fuse-overlayfs is not installed: %s\n" % COPY)
    # one that fails: its first words say why
    fake = bin_dir / "fuse-overlayfs"
    fake.write_text("#!/bin/sh\necho 'fuse-overlayfs: cannot open lowerdir' >&2\nexit 1\n")
    fake.chmod(0o755)
    r = mc("run", "--rm", "fuse-test:1", "sh", "-c", "echo ok",
           state_root=state_root, env=dict(env, PATH="%s:/usr/bin:/bin" % bin_dir))
    assert (r.returncode, r.stdout) == (0, "ok\n"), r.stderr
    assert r.stderr == ("minicontainer: overlayfs not used ($MINICONTAINER_OVERLAY=fuse); "
                        "fuse-overlayfs failed (fuse-overlayfs: cannot open lowerdir): %s\n"
                        % COPY)
    assert os.listdir(state_root) == []


def test_a_daemon_that_never_answers_is_ended(image, tmp_path):
    """One that takes the device and never serves it: create would wait forever on its
    first request. It is killed after FUSE_ANSWER_TIMEOUT and the image copied instead."""
    env, state_root = image
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "fuse-overlayfs"
    fake.write_text("#!/bin/sh\nexec sleep 1000\n")
    fake.chmod(0o755)
    r = mc("run", "--rm", "fuse-test:1", "sh", "-c", "echo ok", state_root=state_root,
           env=dict(env, PATH="%s:/usr/bin:/bin" % bin_dir), timeout=60)
    assert (r.returncode, r.stdout) == (0, "ok\n"), r.stderr
    assert r.stderr == ("minicontainer: overlayfs not used ($MINICONTAINER_OVERLAY=fuse); "
                        "fuse-overlayfs failed (no answer within %d s): %s\n"
                        % (mcmod.FUSE_ANSWER_TIMEOUT, COPY))
    assert os.listdir(state_root) == []
    assert not [pid for pid in os.listdir("/proc") if pid.isdigit()
                and _cmdline(pid)[:2] == ["sleep", "1000"]]


def _cmdline(pid):
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as f:
            return f.read().decode(errors="replace").split("\0")
    except OSError:
        return []


@USERNS
@pytest.mark.parametrize("step", ["fuse-overlayfs started", "fuse-overlayfs"])
def test_gc_ends_the_daemon_of_a_killed_runtime(image, userns, step):
    """Killed once the daemon is forked (before it answered), or once it is up."""
    env, state_root = image
    cid = new_id("fuse")
    r = mc_bg("run", "--name", cid, *userns, "fuse-test:1", "sh", "-c", "sleep 1000",
              state_root=state_root, env=dict(env, MINICONTAINER_DEBUG_DIE_AT=step))
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert len(daemons(state_root)) == 1
    for _ in range(50):  # the killed runtime's children may hold its lock a moment
        r = mc("gc", state_root=state_root)
        assert r.returncode == 0 and r.stderr == "", r.stderr
        if not os.path.exists(os.path.join(state_root, cid)):
            break
    assert "removed container %s" % cid in r.stdout
    assert daemons(state_root) == [] and not mountpoints_under(state_root)


# ---- as a user: the case it is for ----

@pytest.fixture(scope="module")
def user_image(rootless_user):
    """busybox in the rootless user's own store, imported as the user."""
    rootfs = rootless_user.mkdir("image-rootfs", rootfs=True)
    ok(rootless_user.run("python3", os.path.join(rootless_user.code, "tools", "import_image.py"),
                         rootfs, "rlfuse"))
    return rootless_user


def test_rootless_fuse_overlayfs(user_image, tmp_path):
    """As the user, with /dev/fuse made the user's to open in a mount namespace of the test
    (here it is root's only): the daemon runs as the user, and goes with the container."""
    user = user_image
    node = str(tmp_path / "fuse")
    os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(10, 229))
    os.chmod(node, 0o666)
    script = ("awk '$5 == \"/\"' /proc/self/mountinfo; echo hi > /new; cat /new; "
              "cat /proc/[0-9]*/cmdline | tr '\\0' ' '")
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" /dev/fuse && exec "$@"', node] + user.argv(
                [sys.executable, user.runtime, "run", "--rm", "rlfuse", "sh", "-c", script],
                MINICONTAINER_OVERLAY="fuse")
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=user.base)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert " - fuse.fuse-overlayfs " in lines[0] and lines[1] == "hi", r.stdout
    assert "fuse-overlayfs" not in lines[2], r.stdout
    assert r.stderr.count(SAID) == 1 and len(r.stderr.splitlines()) == 1, r.stderr
    assert daemons(user.xdg) == [] and os.listdir(user.state) == []


def test_rootless_without_dev_fuse_a_private_copy(user_image, tmp_path):
    """As the user, with /dev/fuse root's only to open (as here; a mount namespace of the
    test makes it so where it is everybody's, as on a stock Debian)."""
    user = user_image
    node = str(tmp_path / "fuse")
    os.mknod(node, 0o600 | stat.S_IFCHR, os.makedev(10, 229))
    os.chmod(node, 0o600)
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" /dev/fuse && exec "$@"', node] + user.argv(
                [sys.executable, user.runtime, "run", "--rm", "rlfuse", "sh", "-c", "echo ok"],
                MINICONTAINER_OVERLAY="fuse")
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=user.base)
    assert (r.returncode, r.stdout) == (0, "ok\n"), r.stderr
    assert r.stderr == ("minicontainer: overlayfs not used ($MINICONTAINER_OVERLAY=fuse); "
                        "fuse-overlayfs failed (/dev/fuse: Permission denied): %s\n" % COPY)
    assert daemons(user.xdg) == []
