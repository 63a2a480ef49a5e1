"""Races of create and run, provoked on purpose: a runtime killed at any step of a start
leaves nothing that gc does not remove; a create never kills another container.

The steps and the interleavings come from $MINICONTAINER_DEBUG_DIE_AT and
$MINICONTAINER_DEBUG_SLEEP_AT (minicontainer.debug_step)."""
import os
import random
import signal
import subprocess
import time

import pytest

import minicontainer as mcmod
from conftest import (find_leaks, mc, mc_argv, mc_bg, new_id, ok, one_line_error, ours,
                      session_cgroups, wait_for, write_bundle)

pytestmark = pytest.mark.needs_root

# The runtime's steps, in order; "join" is half-way into the cgroup (one hierarchy).
STEPS = ["state", "network", "cgroup", "fork", "join", "in-cgroup", "userns", "ready",
         "created", "start", "started", "running"]
CREATED = {"created", "start", "started", "running"}  # from there on, the container lives


def steps(command, network, userns, born_in_cgroup):
    for step in STEPS:
        if step == "network" and not network or step == "userns" and not userns:
            continue
        if step == "in-cgroup" and userns:  # the first child moves itself
            continue
        if step == "join" and born_in_cgroup:  # on cgroup v2, where it can be: no move
            continue
        if command == "create" and step in ("start", "started", "running"):
            continue
        yield step


def in_a_userns(config):
    """A bundle's edit: a user namespace with the maps --userns gives."""
    config["linux"]["namespaces"].append({"type": "user"})
    config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    config["mounts"] = [m for m in config["mounts"] if m["type"] != "cgroup"]


def gc_until_settled(state_root, cid):
    """gc, again while the killed runtime's children still hold its lock (a child closes
    its copy right after fork, if it ever ran)."""
    for _ in range(50):
        r = mc("gc", state_root=state_root)
        assert r.returncode == 0 and r.stderr == "", r.stderr
        if not os.path.exists(os.path.join(state_root, cid)):
            return r.stdout
        state = mcmod.Container.load(cid, state_root)
        if state.status() in ("created", "running"):
            return r.stdout
        time.sleep(0.1)
    raise AssertionError("gc left %s: %s" % (cid, os.listdir(os.path.join(state_root, cid))))


def assert_nothing_left(state_root, cid, tmp_path, rootfs, step):
    problems = find_leaks(state_root, [str(tmp_path), rootfs], state_root)
    assert problems == [], (step, problems)
    assert ours(state_root) == ({}, [], []), step
    assert not [d for d in session_cgroups() if cid in d], step


def in_a_cgroupns(config):
    config["linux"]["namespaces"].append({"type": "cgroup"})


@pytest.mark.parametrize("command, network, userns, v2", [
    ("run", False, False, False), ("run", True, False, False), ("create", False, False, False),
    ("run", False, True, False), ("run", False, False, True)],
    ids=["run", "run-bridge", "create", "run-userns", "run-v2-cgroupns"])
def test_killed_at_every_step_gc_leaves_nothing(walkable, tmp_path, cgroups, command, network,
                                                userns, v2):
    """v2: on cgroup v2 (a hybrid host's cgroup2 mount, as if pure), a container with a
    cgroup namespace, whose init is born in its cgroup."""
    state_root = str(tmp_path / "state")
    rootfs = str(walkable / "rootfs")
    env = dict(os.environ)
    if v2:
        if not cgroups.v2:
            pytest.skip("no cgroup2 mount on this host")
        if cgroups.v1:
            env["MINICONTAINER_CGROUP2"] = cgroups.v2
    on_v2 = bool(env.get("MINICONTAINER_CGROUP2")) or cgroups.kind == "v2"
    b = write_bundle(tmp_path / "bundle", ["sleep", "1000"],
                     in_a_userns if userns else in_a_cgroupns if v2 else None, rootfs)
    for step in steps(command, network, userns, on_v2 and (userns or v2)):
        cid = new_id(step)
        died_at = dict(env, MINICONTAINER_DEBUG_DIE_AT=step)
        if command == "create":
            args = ["create", "-b", b, cid]
        else:
            args = ["run", "-b", b, "--name", cid] + (["--network", "bridge"] if network else [])
        rc, _, err = mc_bg(*args, state_root=state_root, env=died_at,
                           out=str(tmp_path / "out"))
        if step == "join" and userns:  # the first child dies there: the runtime says so
            assert rc == 1 and "container init died during setup" in err, (step, rc, err)
        else:
            assert rc == -signal.SIGKILL, (step, rc, err)
        out = gc_until_settled(state_root, cid)
        if step in CREATED:  # a live container: gc leaves it, delete removes it
            assert "container %s" % cid not in out, step
            c = mcmod.Container.load(cid, state_root)
            assert c.status() in ("created", "running"), step
            ok(mc("delete", "-f", cid, state_root=state_root, env=env))
        else:
            assert not os.path.exists(os.path.join(state_root, cid)), step
        assert_nothing_left(state_root, cid, tmp_path, rootfs, step)


def test_killed_at_a_random_time_gc_leaves_nothing(busybox_rootfs, tmp_path):
    """A real SIGKILL from outside, 10 to 90 ms into `run`, every other one on a bridge."""
    state_root = str(tmp_path / "state")
    rnd = random.Random(os.getpid())
    for i in range(20):
        cid = new_id("kill")
        network = ["--network", "bridge"] if i % 2 else []
        with open(tmp_path / "err", "w") as err:
            proc = subprocess.Popen(mc_argv("run", "--name", cid, "--rootfs", busybox_rootfs,
                                            state_root=state_root) + network +
                                    ["--", "sleep", "1000"],
                                    stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        time.sleep(rnd.uniform(0.01, 0.09))
        proc.kill()
        proc.wait()
        gc_until_settled(state_root, cid)
        if os.path.exists(os.path.join(state_root, cid)):  # it got as far as created
            ok(mc("delete", "-f", cid, state_root=state_root))
        assert_nothing_left(state_root, cid, tmp_path, busybox_rootfs, "try %d" % i)


def held_run(state_root, cid, rootfs):
    """`run`, its init held (30 s) after its setup, before its process is prepared."""
    env = dict(os.environ, MINICONTAINER_DEBUG_SLEEP_AT="process:30")
    return subprocess.Popen(mc_argv("run", "--name", cid, "--rootfs", rootfs, "--", "true",
                                    state_root=state_root), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)


def test_child_of_create_closes_the_runtimes_end_and_dies_with_it(busybox_rootfs, tmp_path):
    """The init, held before it reads its cgroup move, must not keep the runtime's end of
    the socket (it would wait on it forever) and must die with the runtime."""
    state_root = str(tmp_path / "state")
    cid = new_id()
    proc = held_run(state_root, cid, busybox_rootfs)
    try:
        def init():  # once it has run: in a mount namespace of its own
            for pid, _, _ in mcmod._fifo_holders(state_root).get(cid, []):
                try:
                    if os.readlink("/proc/%d/ns/mnt" % pid) != os.readlink("/proc/self/ns/mnt"):
                        return pid
                except OSError:
                    pass
        child = wait_for(init, 10, "a child of create to hold the fifo")

        def sockets(pid):
            found = set()
            for fd in os.listdir("/proc/%d/fd" % pid):
                try:
                    found.add(os.readlink("/proc/%d/fd/%s" % (pid, fd)))
                except FileNotFoundError:
                    pass  # closed meanwhile
            return found

        def runtime_end():
            # Right after the fork the runtime holds both ends until it closes the child's:
            # on a loaded machine the child may be at its hold before the runtime runs again.
            ends = {s for s in sockets(proc.pid) if s.startswith("socket:")}
            return ends if len(ends) == 1 else None
        runtime = wait_for(runtime_end, 10, "the runtime to hold its end of the pair only")
        # Its own end only (its setup may hold others for a moment: loopback_up's socket)
        assert not sockets(child) & runtime, (sockets(child), runtime)
        pidfd = os.pidfd_open(child)
        proc.kill()
        proc.wait()
        import select
        assert select.select([pidfd], [], [], 5)[0], "the init outlived the runtime"
        os.close(pidfd)
    finally:  # a failure above must not leave the held container to the next test
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        gc_until_settled(state_root, cid)
    assert_nothing_left(state_root, cid, tmp_path, busybox_rootfs, "")


def test_gc_kills_an_orphan_that_no_state_describes(busybox_rootfs, tmp_path):
    """What the old runtime left: a child of create, in the container's cgroup, waiting
    forever, whose state gc had removed. The next gc finds it by the fifo it holds."""
    state_root = str(tmp_path / "state")
    cid = new_id()
    proc = held_run(state_root, cid, busybox_rootfs)
    try:
        def init_in_its_cgroup():
            holders = mcmod._fifo_holders(state_root).get(cid, [])
            cg = holders and mcmod.Container.load(cid, state_root).cgroup
            return cg and holders[0][0] in cg.procs() and holders[0][0]
        child = wait_for(init_in_its_cgroup, 10, "the init to get into its cgroup")
        os.kill(proc.pid, signal.SIGSTOP)  # the runtime neither cleans up nor dies
        import shutil
        shutil.rmtree(os.path.join(state_root, cid))  # as the old gc did
        r = mc("gc", state_root=state_root)
        assert r.returncode == 0, r.stderr
        assert "removed process %d" % child in r.stdout, r.stdout
        assert mcmod.process_state(child) in (None, "Z")
        assert not [d for d in session_cgroups() if cid in d]
    finally:
        proc.kill()
        proc.wait()
    assert_nothing_left(state_root, cid, tmp_path, busybox_rootfs, "")


def test_an_id_in_use_in_another_state_root_leaves_that_container_alone(busybox_rootfs,
                                                                         tmp_path):
    # Both would have the cgroup /minicontainer/ID: the second create must fail without
    # killing the first's processes or removing its cgroup.
    first, second = str(tmp_path / "first"), str(tmp_path / "second")
    cid = new_id()
    rc, _, err = mc_bg("run", "-d", "--name", cid, "--rootfs", busybox_rootfs, "--", "sleep",
                       "1000", state_root=first, out=str(tmp_path / "d"))
    assert rc == 0, err
    try:
        r = mc("run", "--name", cid, "--rootfs", busybox_rootfs, "--", "true",
               state_root=second)
        assert "already exists" in one_line_error(r)
        assert os.listdir(second) == []
        assert ok(mc("exec", cid, "echo", "alive", state_root=first)) == "alive\n"
    finally:
        ok(mc("delete", "-f", cid, state_root=first))
    assert_nothing_left(first, cid, tmp_path, busybox_rootfs, "")
