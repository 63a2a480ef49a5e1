"""Rootless (issue 15): everything here runs as an unprivileged user that the fixture makes
(conftest.RootlessUser: a subuid range, $XDG_RUNTIME_DIR, setpriv), against runc on the same
rootless bundles where runc runs them, and podman rootless with the runtime.

Not tested here as a user, as the machine does not allow it: slirp4netns (it opens
/dev/net/tun, which is root's only here: tested as root, and as the user up to that open)."""
import json
import os
import shutil
import subprocess

import pytest

from conftest import mountpoints_under, new_id, ok, one_line_error

pytestmark = pytest.mark.needs_root

SHOW = "id; cat /proc/self/uid_map /proc/self/gid_map; ls /sys/class/net"


def rootless_bundle(user, name, args, edit=None, maker="mc"):
    """A bundle of `spec --rootless` (ours, or runc's) made by the user, on a rootfs of its
    own, running args; edit(config) shapes it."""
    d = user.mkdir(name)
    user.mkdir(name, "rootfs", rootfs=True)
    argv = [maker] if maker == "runc" else ["python3", user.runtime]
    ok(user.run(*argv, "spec", "--rootless", cwd=d))
    path = os.path.join(d, "config.json")
    with open(path) as f:
        config = json.load(f)
    config["process"]["args"] = list(args)
    config["process"]["terminal"] = False
    if edit:
        edit(config)
    with open(path, "w") as f:
        json.dump(config, f)
    return d


def two_mappings(user):
    """root to the user, 1-65536 to its subordinate range (as podman maps them)."""
    def edit(config):
        for kind, own in (("uid", user.uid), ("gid", user.gid)):
            config["linux"][kind + "Mappings"] = [
                {"containerID": 0, "hostID": own, "size": 1},
                {"containerID": 1, "hostID": user.subid_start, "size": user.subid_count}]
        for caps in config["process"]["capabilities"].values():
            caps.append("CAP_CHOWN")
        config["root"]["readonly"] = False
    return edit


@pytest.fixture(scope="module")
def user(rootless_user):
    return rootless_user


@pytest.fixture(scope="module")
def image(user):
    """busybox in the user's own store (~/.local/share/minicontainer), imported as the user."""
    rootfs = user.mkdir("image-rootfs", rootfs=True)
    ok(user.run("python3", os.path.join(user.code, "tools", "import_image.py"), rootfs,
                "rlbusybox"))
    return "rlbusybox"


# ---- where things live ----

def test_state_under_xdg_runtime_dir(user):
    cid = new_id("rl")
    d = user.mkdir("b-state")
    user.mkdir("b-state", "rootfs", rootfs=True)
    ok(user.mc("spec", "--rootless", cwd=d))
    ok(user.mc("create", "--bundle", d, cid, bg=True))
    try:
        assert os.path.isdir(os.path.join(user.xdg, "minicontainer", cid))
        assert os.stat(os.path.join(user.xdg, "minicontainer", cid)).st_uid == user.uid
        assert cid in ok(user.mc("list", "-q"))
    finally:
        ok(user.mc("delete", "--force", cid))
    assert not os.path.exists(os.path.join(user.xdg, "minicontainer", cid))


def test_xdg_runtime_dir_unset_or_unusable_is_one_line(user):
    line = one_line_error(user.mc("list", env={"XDG_RUNTIME_DIR": None}))
    assert "XDG_RUNTIME_DIR is not set" in line
    line = one_line_error(user.mc("run", "--rm", "--rootfs", "/", "--", "true",
                                  env={"XDG_RUNTIME_DIR": "/root"}))
    assert "/root is not a directory you can write" in line
    # --root says where instead
    d = user.mkdir("own-root")
    assert ok(user.mc("--root", d, "list", "-q", env={"XDG_RUNTIME_DIR": None})).strip() == ""


def test_run_d_without_xdg_runtime_dir_says_what_needs_it(user):
    """run -d with --root and no $XDG_RUNTIME_DIR said "...is not set: ... or give --root",
    --root given: it is the monitor's socket that needs it, which the line says now."""
    root = user.mkdir("root-no-xdg")
    rootfs = user.mkdir("rootfs-no-xdg", rootfs=True)
    r = user.mc("--root", root, "run", "-d", "--rootfs", rootfs, "--", "true",
                env={"XDG_RUNTIME_DIR": None})
    assert one_line_error(r, 125) == "minicontainer: rootless: $XDG_RUNTIME_DIR is not set: " \
        "the monitor of detached containers (run -d) keeps its socket there, whatever --root " \
        "says; set it to a directory of yours (mode 0700)"
    assert os.listdir(root) == []


def test_a_monitors_directory_that_is_none_is_named(user):
    """$XDG_RUNTIME_DIR/minicontainer-monitors a regular file, or a symbolic link loop:
    run -d said a bare "[Errno 20] Not a directory" / "[Errno 40] ...", without the path."""
    xdg = user.mkdir("xdg-monitors")
    rootfs = user.mkdir("rootfs-monitors", rootfs=True)
    monitors = os.path.join(xdg, "minicontainer-monitors")
    for make, words in (("touch %s", "not a directory"),
                        ("ln -s loop %s && ln -s minicontainer-monitors %s/loop",
                         "Too many levels of symbolic links")):
        ok(user.run("sh", "-c", make % ((monitors,) if make.count("%s") == 1 else
                                        (monitors, xdg))))
        try:
            r = user.mc("run", "-d", "--rootfs", rootfs, "--", "true",
                        env={"XDG_RUNTIME_DIR": xdg})
            assert one_line_error(r, 125) == "minicontainer: %s: %s (where the monitors of " \
                "run -d keep their sockets)" % (monitors, words)
        finally:
            for name in (monitors, os.path.join(xdg, "loop")):
                if os.path.lexists(name):
                    os.unlink(name)
    assert os.listdir(os.path.join(xdg, "minicontainer")) == []


def test_a_state_root_another_user_could_write_is_refused(user):
    """A state root (--root, or $XDG_RUNTIME_DIR/minicontainer) or monitors' directory that
    exists but is not the user's, or that others may write, was used as it was: another
    user could plant state.json files pointing the user's kill and delete at its own
    processes. Refused now, as ssh refuses a loose ~/.ssh; a new --root is made (0711) and
    used, and a directory writable by the user's own group only is the user's."""
    theirs = user.mkdir("root-theirs")
    os.chown(theirs, 0, 0)
    loose = user.mkdir("root-loose")
    os.chmod(loose, 0o1777)
    grouped = user.mkdir("root-grouped")
    os.chmod(grouped, 0o775)
    for root, words in ((theirs, "not owned by you (uid 0; the state root)"),
                        (loose, "writable by others (mode 1777; the state root)")):
        for args in (["list"], ["gc"], ["delete", "-f", "x"]):
            r = user.mc("--root", root, *args)
            assert one_line_error(r, 1) == "minicontainer: %s: %s: refused" % (root, words)
    assert ok(user.mc("--root", grouped, "list", "-q")) == ""
    fresh = os.path.join(user.mkdir("root-parent"), "state")
    assert ok(user.mc("--root", fresh, "list", "-q")) == ""
    ok(user.mc("--root", fresh, "run", "--rm", "--rootfs", user.mkdir("rootfs-loose",
                                                                      rootfs=True), "--", "true"))
    assert os.stat(fresh).st_mode & 0o7777 == 0o711 and os.stat(fresh).st_uid == user.uid
    xdg = user.mkdir("xdg-theirs")
    for name in ("minicontainer", "minicontainer-monitors"):
        os.mkdir(os.path.join(xdg, name), 0o755)  # root's
        try:
            r = user.mc("--root", fresh, "run", "-d", "--rootfs", "/", "--", "true",
                        env={"XDG_RUNTIME_DIR": xdg}) if "monitors" in name else \
                user.mc("list", env={"XDG_RUNTIME_DIR": xdg})
            what = "where the monitors of run -d keep their sockets" if "monitors" in name \
                else "the state root"
            assert one_line_error(r) == "minicontainer: %s/%s: not owned by you (uid 0; %s): " \
                "refused" % (xdg, name, what)
        finally:
            os.rmdir(os.path.join(xdg, name))
    assert os.listdir(fresh) == []


def test_an_entry_the_user_cannot_read_is_skipped(user):
    """A directory of mode 000 in the user's state root made list, ps -a and gc exit 1
    ("…/junk/state.json: Permission denied") for the whole root: each skips it now with a
    one-line warning naming it, as runc's list does."""
    root = user.mkdir("root-unreadable")
    junk = os.path.join(root, "junk")
    ok(user.run("mkdir", "-m", "000", junk))
    try:
        for args in (["list", "-q"], ["ps", "-a", "-q"], ["gc"]):
            r = user.mc("--root", root, *args)
            assert (r.returncode, r.stdout, r.stderr) == (
                0, "", "minicontainer: warning: skipped container junk: %s/state.json: "
                "Permission denied\n" % junk), (args, r.stderr)
    finally:
        os.rmdir(junk)
    assert os.listdir(root) == []


def test_store_in_the_users_home(user, image):
    assert os.path.isdir(os.path.join(user.home, ".local", "share", "minicontainer", "layers"))
    assert "rlbusybox" in ok(user.mc("images"))
    other = user.mkdir("other-store")
    out = ok(user.mc("images", env={"MINICONTAINER_STORE": other}))
    assert "rlbusybox" not in out


# ---- the OCI path ----

def test_spec_rootless_as_runc_writes_it(user, cgroups):
    ours, runc = user.mkdir("spec-ours"), user.mkdir("spec-runc")
    ok(user.mc("spec", "--rootless", cwd=ours))
    ok(user.run("runc", "spec", "--rootless", cwd=runc))
    a, b = (json.load(open(os.path.join(d, "config.json"))) for d in (ours, runc))
    for c in (a, b):
        assert "resources" not in c["linux"]
        assert c["linux"]["uidMappings"] == [{"containerID": 0, "hostID": user.uid, "size": 1}]
        assert c["linux"]["gidMappings"] == [{"containerID": 0, "hostID": user.gid, "size": 1}]
    # with a cgroup namespace on a pure v2 host, as runc's
    assert sorted(ns["type"] for ns in a["linux"]["namespaces"]) == \
        sorted(ns["type"] for ns in b["linux"]["namespaces"]) == \
        sorted(["ipc", "mount", "pid", "user", "uts"] + ["cgroup"] * cgroups.unified)
    mounts = {m["destination"]: m for m in a["mounts"]}
    assert [m["destination"] for m in a["mounts"]] == [m["destination"] for m in b["mounts"]]
    for m in b["mounts"]:
        if m["destination"] == "/proc":
            continue  # runc writes proc without options; ours has nosuid, noexec, nodev
        assert (mounts[m["destination"]]["type"], mounts[m["destination"]]["source"],
                mounts[m["destination"]].get("options")) == \
            (m["type"], m["source"], m.get("options")), m["destination"]


def test_bundle_runs_as_runc_runs_it(user):
    out = {}
    for maker in ("mc", "runc"):
        d = rootless_bundle(user, "b-show-" + maker, ["sh", "-c", SHOW])
        if maker == "mc":
            out[maker] = ok(user.mc("run", "--bundle", d, new_id("rl")))
        else:
            out[maker] = ok(user.run("runc", "--root", os.path.join(user.xdg, "runc"), "run",
                                     "--bundle", d, new_id("rl")))
    assert "uid=0(root) gid=0(root)" in out["mc"]
    assert "0 %d 1" % user.uid in " ".join(out["mc"].split())
    # the same container but for the groups runc adds from /etc/group
    assert out["mc"].replace(" groups=0(root)", "") == out["runc"].replace(" groups=0(root)", "")


def test_bundle_lifecycle(user):
    d = rootless_bundle(user, "b-life", ["sleep", "60"])
    cid = new_id("rl")
    ok(user.mc("create", "--bundle", d, cid, bg=True))
    try:
        assert json.loads(ok(user.mc("state", cid)))["status"] == "created"
        ok(user.mc("start", cid))
        st = json.loads(ok(user.mc("state", cid)))
        assert st["status"] == "running"
        with open("/proc/%d/status" % st["pid"]) as f:  # the container's root is the user
            assert "Uid:\t%d\t" % user.uid in f.read()
        out = ok(user.mc("exec", cid, "sh", "-c", "id -u; readlink /proc/1/exe"))
        assert out.split() == ["0", "/bin/busybox"]
        assert str(st["pid"]) in ok(user.mc("ps", cid))
        ok(user.mc("kill", cid, "KILL"))
        for _ in range(200):
            if json.loads(ok(user.mc("state", cid)))["status"] == "stopped":
                break
        assert json.loads(ok(user.mc("state", cid)))["status"] == "stopped"
    finally:
        ok(user.mc("delete", "--force", cid))
    one_line_error(user.mc("state", cid))


def test_exec_before_start_as_runc(user):
    """exec into a created container, as runc rootless allows it."""
    d = rootless_bundle(user, "b-created", ["sleep", "60"])
    outs = {}
    for maker in ("mc", "runc"):
        cid = new_id("rl")
        base = ["python3", user.runtime] if maker == "mc" else \
            ["runc", "--root", os.path.join(user.xdg, "runc")]
        ok(user.run(*base, "create", "--bundle", d, cid, bg=True))
        try:
            outs[maker] = ok(user.run(*base, "exec", cid, "sh", "-c", "id -u; cat /proc/1/comm"))
        finally:
            ok(user.run(*base, "delete", "--force", cid))
    assert outs["mc"].split()[0] == outs["runc"].split()[0] == "0"


def test_no_exec_before_start_with_a_python_the_user_can_write(user):
    """Then the waiting init stays undumpable: the container's root (the user) could rewrite
    that interpreter through /proc/1/exe otherwise. After start, exec works as ever."""
    d = rootless_bundle(user, "b-own-python", ["sleep", "60"])
    own = user.mkdir("own-python")
    shutil.copy2("/usr/bin/python3", os.path.join(own, "python3"))
    subprocess.run(["chown", "%d:%d" % (user.uid, user.gid), os.path.join(own, "python3")],
                   check=True)
    python = os.path.join(own, "python3")
    cid = new_id("rl")
    ok(user.run(python, user.runtime, "create", "--bundle", d, cid, bg=True))
    try:
        r = user.run(python, user.runtime, "exec", cid, "true")
        assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1, r
        ok(user.run(python, user.runtime, "start", cid))
        assert ok(user.run(python, user.runtime, "exec", cid, "id", "-u")) == "0\n"
    finally:
        ok(user.run(python, user.runtime, "delete", "--force", cid))

def test_two_mappings_through_newuidmap(user):
    """root to the user and 1-65536 to its /etc/subuid range: written by newuidmap and
    newgidmap, so that chown to 1000 works inside, and lands in the range outside."""
    script = "cat /proc/self/uid_map; touch /f; chown 1000:1000 /f; stat -c %u:%g /f"
    outs = {}
    for maker in ("mc", "runc"):
        d = rootless_bundle(user, "b-maps-" + maker, ["sh", "-c", script],
                            edit=two_mappings(user))
        cid = new_id("rl")
        if maker == "mc":
            outs[maker] = ok(user.mc("run", "--bundle", d, cid))
        else:
            outs[maker] = ok(user.run("runc", "--root", os.path.join(user.xdg, "runc"), "run",
                                      "--bundle", d, cid))
        st = os.stat(os.path.join(d, "rootfs", "f"))
        assert (st.st_uid, st.st_gid) == (user.subid_start + 999,) * 2
    assert outs["mc"] == outs["runc"]
    assert outs["mc"].split()[-1] == "1000:1000"
    assert "1 %d %d" % (user.subid_start, user.subid_count) in " ".join(outs["mc"].split())


def test_limits_skipped_with_one_warning(user):
    """No cgroup of the user's on this host (hybrid, no delegation): as runc rootless."""
    rootfs = user.mkdir("rootfs-limits", rootfs=True)
    r = user.mc("run", "--rm", "-m", "64m", "--pids-limit", "50", "--rootfs", rootfs,
                "--", "true")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "warning" in lines[0] and "memory, pids" in lines[0], r.stderr
    assert ok(user.mc("run", "--rm", "--rootfs", rootfs, "--", "true"), quiet=True) == ""


def test_no_cgroup_verbs_say_so(user):
    d = rootless_bundle(user, "b-pause", ["sleep", "60"])
    cid = new_id("rl")
    ok(user.mc("create", "--bundle", d, cid, bg=True))
    try:
        ok(user.mc("start", cid))
        assert "no cgroup" in one_line_error(user.mc("pause", cid))
        assert "no cgroup" in one_line_error(user.mc("update", "--memory", "64m", cid))
    finally:
        ok(user.mc("delete", "--force", cid))


def test_gc_and_prune_as_the_user(user):
    rootfs = user.mkdir("rootfs-prune", rootfs=True)
    name = new_id("rl")
    ok(user.mc("run", "--name", name, "--rootfs", rootfs, "--", "true"))
    ok(user.mc("gc"))  # keeps what the user kept; touches nothing of root's (the bridge)
    assert os.path.isdir(os.path.join(user.state, name))
    assert name in ok(user.mc("prune", "-f"))
    assert not os.path.exists(os.path.join(user.state, name))


def test_rootless_flag_as_runc_has_it(tmp_path, state_root, busybox_rootfs, cgroups, no_leaks):
    """runc's --rootless true, given to root: cgroups are made only where a user's could be
    (on a pure v2 host, where root may write, they are), as runc's."""
    from conftest import mc
    name = new_id("rlflag")
    r = mc("--rootless", "true", "run", "--rm", "--name", name, "-m", "64m", "--rootfs",
           busybox_rootfs, "--", "sh", "-c",
           "cat /proc/self/cgroup; cat /sys/fs/cgroup/memory.max 2>/dev/null; true",
           state_root=state_root)
    assert r.returncode == 0, r.stderr
    if cgroups.unified:
        # root may make its cgroup on a pure v2 host: so does runc --rootless true (seen in
        # the pure v2 guest: its own cgroup, memory.max 64 MiB)
        assert r.stderr == "" and r.stdout.split() == ["0::/", str(64 << 20)]
    else:
        assert "linux.resources memory not applied" in r.stderr
        assert name not in r.stdout  # in no cgroup of its own
    one_line_error(mc("--rootless", "maybe", "list", state_root=state_root), 2)


# ---- cgroup v2 delegation ----

@pytest.fixture
def delegated(user):
    """A cgroup v2 directory the user owns (as systemd delegates one), which its shell
    joins first (moving a process needs write access to both cgroups' common ancestor)."""
    from minicontainer import cgroup_hierarchies
    _, v2 = cgroup_hierarchies()
    if not v2:
        pytest.skip("no cgroup2 mount")
    d = os.path.join(v2, new_id("rl-deleg"))
    os.mkdir(d)
    for name in ("", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads"):
        os.chown(os.path.join(d, name), user.uid, user.gid)
    yield v2, d
    for top, dirs, _ in sorted(os.walk(d), key=lambda x: -len(x[0])):
        os.rmdir(top)


def test_limits_apply_in_a_delegated_v2_cgroup(user, delegated):
    v2, d = delegated
    rootfs = user.mkdir("rootfs-deleg", rootfs=True)
    cid = new_id("rl")
    parent = "/" + os.path.relpath(d, v2) + "/ctrs"
    r = user.mc("run", "--rm", "--name", cid, "--cgroup-parent", parent, "--rootfs", rootfs,
                "--", "sh", "-c", "cat /proc/self/cgroup; ls /sys/fs/cgroup",
                env={"MINICONTAINER_CGROUP2": v2}, cgroup=d)
    # the runtime is started in the delegated cgroup, as a user's shell would be
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr
    assert "0::/\n" in r.stdout  # its own cgroup namespace, rooted at its cgroup
    assert "cgroup.procs" in r.stdout  # cgroup2 mounted there
    assert not os.path.exists(os.path.join(d, "ctrs", cid))  # removed with the container


def test_unified_limit_written_in_the_delegated_cgroup(user, delegated):
    v2, d = delegated
    b = rootless_bundle(user, "b-deleg-%s" % os.path.basename(d), ["sleep", "60"],
                        edit=lambda c: c["linux"].update(
                            cgroupsPath="/" + os.path.relpath(d, v2) + "/c",
                            resources={"unified": {"cgroup.max.depth": "3"}}))
    cid = new_id("rl")
    env = {"MINICONTAINER_CGROUP2": v2}
    ok(user.mc("create", "--bundle", b, cid, bg=True, env=env, cgroup=d))
    try:
        with open(os.path.join(d, "c", "cgroup.max.depth")) as f:
            assert f.read().strip() == "3"
        with open(os.path.join(d, "c", "cgroup.procs")) as f:
            assert f.read().split() == [str(json.loads(ok(user.mc("state", cid)))["pid"])]
        ok(user.mc("start", cid, env=env))
        ok(user.mc("pause", cid, env=env))  # the cgroup's own freezer, the user's
        assert json.loads(ok(user.mc("state", cid, env=env)))["status"] == "paused"
        with open(os.path.join(d, "c", "cgroup.freeze")) as f:
            assert f.read().strip() == "1"
        ok(user.mc("resume", cid, env=env))
        assert json.loads(ok(user.mc("state", cid, env=env)))["status"] == "running"
    finally:
        ok(user.mc("delete", "--force", cid, env=env))
    assert not os.path.exists(os.path.join(d, "c"))


# ---- the docker-like path ----

def test_rootfs_run_maps_the_subordinate_range(user):
    rootfs = user.mkdir("rootfs-run", rootfs=True)
    vol = user.mkdir("vol-run")
    out = ok(user.mc("run", "--rm", "-v", "%s:/vol" % vol, "--rootfs", rootfs, "--", "sh",
                     "-c", "cat /proc/self/uid_map; id -u; touch /vol/root-made; "
                     "touch /vol/u1000; chown 1000:1000 /vol/u1000; ls /sys/class/net"))
    maps = [line.split() for line in out.splitlines()[:2]]
    assert maps == [["0", str(user.uid), "1"],
                    ["1", str(user.subid_start), str(user.subid_count)]]
    assert out.split()[6:] == ["0", "lo"]  # its own network namespace, loopback only
    st = os.stat(os.path.join(vol, "root-made"))
    assert (st.st_uid, st.st_gid) == (user.uid, user.gid)  # the container's root is the user
    st = os.stat(os.path.join(vol, "u1000"))
    assert (st.st_uid, st.st_gid) == (user.subid_start + 999,) * 2


def test_rootfs_run_without_a_range_maps_the_user_alone(user):
    rootfs = user.mkdir("rootfs-alone", rootfs=True)
    from conftest import _edit_subids
    _edit_subids(user.name)
    try:
        out = ok(user.mc("run", "--rm", "--rootfs", rootfs, "--", "sh", "-c",
                         "cat /proc/self/uid_map; ls -l /dev/pts/ptmx >/dev/null && echo pts"))
    finally:
        _edit_subids(user.name, "%d:%d" % (user.subid_start, user.subid_count))
    assert out.split() == ["0", str(user.uid), "1", "pts"]  # devpts without gid=5


def test_bridge_is_roots(user):
    line = one_line_error(user.mc("run", "--rm", "--network", "bridge", "--rootfs", "/",
                                  "--", "true"))
    assert "bridge is root's" in line


def test_image_run_and_detached_lifecycle(user, image):
    out = ok(user.mc("run", "--rm", image, "sh", "-c",
                     "id -u; grep ' / ' /proc/mounts | cut -d' ' -f3; echo x > /etc/new; "
                     "mkdir /home/d; touch /home/d/f; chown -R 1000 /home/d; chmod 700 /home/d"))
    assert out.split()[:2] == ["0", "overlay"]  # overlayfs in the user namespace (5.11+)
    name = new_id("rl")
    ok(user.mc("run", "-d", "--name", name, image, "sh", "-c", "echo up; sleep 60"),
       quiet=True)
    try:
        assert ok(user.mc("exec", name, "id", "-u")).strip() == "0"
        assert name in ok(user.mc("ps"))
        for _ in range(100):
            if "up" in user.mc("logs", name).stdout:
                break
        assert ok(user.mc("logs", name)) == "up\n"
        ok(user.mc("stop", "-t", "1", name))
        assert "Exited" in ok(user.mc("ps", "-a"))
    finally:
        ok(user.mc("rm", "-f", name))
    assert not os.path.exists(os.path.join(user.state, name))
    monitors = os.path.join(user.xdg, "minicontainer-monitors")
    assert os.path.isdir(monitors)  # the monitor of detached containers is the user's


def test_kept_container_removed_with_its_subordinate_files(user, image):
    name = new_id("rl")
    ok(user.mc("run", "--name", name, image, "sh", "-c",
               "mkdir /home/d; touch /home/d/f; chown -R 1000 /home/d; chmod 700 /home/d"))
    upper = os.path.join(user.state, name, "upper", "home", "d")
    assert os.stat(upper).st_uid == user.subid_start + 999
    ok(user.mc("rm", name))
    assert not os.path.exists(os.path.join(user.state, name))


def test_pull_into_the_users_store(user, registry):
    """tools/pull.py as the user, from a loopback registry, into its own store; then run."""
    from fixtures_registry import Image, dir_layer
    rootfs = user.mkdir("pull-rootfs", rootfs=True)
    name = "rootless/bb"
    registry.client.push_image(name, "v1", Image([dir_layer(rootfs)], "oci", "amd64",
                                                 config={"Cmd": ["id", "-u"]}))
    ref = "%s/%s:v1" % (registry.host, name)
    ok(user.run("python3", os.path.join(user.code, "tools", "pull.py"), "-q", ref))
    store = os.path.join(user.home, ".local", "share", "minicontainer")
    assert os.stat(store).st_uid == user.uid
    assert ok(user.mc("run", "--rm", ref)) == "0\n"


def test_pull_whiteouts_and_opaque_directories(user, registry):
    """A user may make overlayfs's whiteouts (0/0 devices, since Linux 5.8); its opaque
    directories are marked with user.overlay.opaque (trusted.* is root's), which the
    overlay reads mounted with userxattr, and the private copy too."""
    from fixtures_registry import Image, dir_layer, entry, tar_layer
    rootfs = user.mkdir("wh-rootfs", rootfs=True)
    base = dir_layer(rootfs)
    ref = "%s/rootless/wh:v1" % registry.host
    registry.client.push_image("rootless/wh", "v1", Image(
        [base, tar_layer([entry("etc/.wh.group")])], "oci", "amd64"))
    ok(user.run("python3", os.path.join(user.code, "tools", "pull.py"), "-q", ref))
    out = ok(user.mc("run", "--rm", ref, "sh", "-c", "ls /etc/group 2>&1; ls /etc/passwd"))
    assert "No such file" in out and out.endswith("/etc/passwd\n")
    ref = "%s/rootless/opq:v1" % registry.host
    registry.client.push_image("rootless/opq", "v1", Image(
        [base, tar_layer([entry("home", "dir"), entry("home/old", data=b"old")]),
         tar_layer([entry("home", "dir"), entry("home/.wh..wh..opq"),
                    entry("home/new", data=b"new")])], "oci", "amd64"))
    ok(user.run("python3", os.path.join(user.code, "tools", "pull.py"), "-q", ref))
    for env in ({}, {"MINICONTAINER_NO_OVERLAY": "1"}):  # the overlay, and the private copy
        out = ok(user.mc("run", "--rm", ref, "ls", "/home", env=env))
        assert out == "new\n", env


# ---- slirp4netns: the user-mode network of rootless -p ----

needs_slirp4netns = pytest.mark.skipif(not shutil.which("slirp4netns"),
                                       reason="needs slirp4netns")


def _fetch(port):
    """The page the container's httpd serves through the published port (once it listens)."""
    import time
    import urllib.request
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/index.html" % port,
                                        timeout=5) as r:
                return r.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _slirp4netns_of(path):
    """slirp4netns processes whose API socket is under path (zombies not counted)."""
    from conftest import _cmdlines
    return [pid for pid, cmd in _cmdlines() if cmd.startswith("/usr/bin/slirp4netns")
            and path in cmd]


@needs_slirp4netns
def test_slirp4netns_publishes_a_port(tmp_path, state_root, rootfs_copy, no_leaks):
    """As root here: /dev/net/tun, which slirp4netns opens, is root's on this machine."""
    from conftest import mc, wait_for
    from fixtures_registry import free_port
    with open(os.path.join(rootfs_copy, "index.html"), "w") as f:
        f.write("served\n")
    port, name = free_port(), new_id("slirp")
    ok(mc("run", "-d", "--name", name, "--network", "slirp4netns", "-p",
          "127.0.0.1:%d:80" % port, "--rootfs", rootfs_copy, "--", "sh", "-c",
          "ip -4 addr show tap0 | grep -o 'inet [0-9./]*'; exec httpd -f -p 80 -h /",
          state_root=state_root))
    try:
        wait_for(lambda: "inet" in mc("logs", name, state_root=state_root).stdout)
        assert ok(mc("logs", name, state_root=state_root)) == "inet 10.0.2.100/24\n"
        assert _fetch(port) == "served\n"
        assert ok(mc("port", name, state_root=state_root)).strip() == \
            "80/tcp -> 127.0.0.1:%d" % port
        assert len(_slirp4netns_of(state_root)) == 1
    finally:
        ok(mc("rm", "-f", name, state_root=state_root))
    wait_for(lambda: _slirp4netns_of(state_root) == [], what="slirp4netns to end")


@needs_slirp4netns
def test_rootless_publish_uses_slirp4netns(user):
    """-p of a user is slirp4netns's (the bridge is root's): where /dev/net/tun is the
    user's to open it serves; here it is root's only, and that is one line, nothing left."""
    from fixtures_registry import free_port
    rootfs = user.mkdir("rootfs-slirp", rootfs=True)
    with open(os.path.join(rootfs, "index.html"), "w") as f:
        f.write("served\n")
    port = free_port()
    tun_open = user.run("sh", "-c", "exec 3<>/dev/net/tun").returncode == 0
    name = new_id("rl")
    r = user.mc("run", "-d", "--name", name, "-p", "127.0.0.1:%d:80" % port, "--rootfs",
                rootfs, "--", "httpd", "-f", "-p", "80", "-h", "/", bg=True)
    try:
        if tun_open:
            assert r.returncode == 0, r.stderr
            assert _fetch(port) == "served\n"
        else:
            assert one_line_error(r) == 'minicontainer: slirp4netns: open("/dev/net/tun"): ' \
                'Permission denied'
    finally:
        user.mc("rm", "-f", name)
    assert not os.path.exists(os.path.join(user.state, name))
    assert _slirp4netns_of(user.state) == []


def _slirp4netns_status(pid):
    with open("/proc/%d/status" % pid) as f:
        return dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)


@needs_slirp4netns
def test_slirp4netns_runs_in_its_sandbox(state_root, rootfs_copy, no_leaks):
    """libslirp parses the container's packets: slirp4netns runs in a mount namespace of
    its own, with CAP_NET_BIND_SERVICE alone, under its seccomp filter; -p and its API
    socket work so."""
    from conftest import mc, wait_for
    from fixtures_registry import free_port
    with open(os.path.join(rootfs_copy, "index.html"), "w") as f:
        f.write("served\n")
    port, name = free_port(), new_id("slirp")
    ok(mc("run", "-d", "--name", name, "--network", "slirp4netns", "-p",
          "127.0.0.1:%d:80" % port, "--rootfs", rootfs_copy, "--", "httpd", "-f", "-p", "80",
          "-h", "/", state_root=state_root))
    try:
        assert _fetch(port) == "served\n"
        [pid] = _slirp4netns_of(state_root)
        assert os.readlink("/proc/%d/ns/mnt" % pid) != os.readlink("/proc/self/ns/mnt")
        status = _slirp4netns_status(pid)
        assert int(status["CapEff"], 16) == 1 << 10  # CAP_NET_BIND_SERVICE
        assert status["Seccomp"].strip() == "2"
    finally:
        ok(mc("rm", "-f", name, state_root=state_root))
    wait_for(lambda: _slirp4netns_of(state_root) == [], what="slirp4netns to end")


class _DnsServer:
    """A DNS server on a loopback address that answers every query with one A record."""

    def __init__(self, host, answer):
        import socket
        import threading
        self.answer = socket.inet_aton(answer)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 53))
        self.sock.settimeout(0.1)  # to see the stop, which a recvfrom does not
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        import socket
        import struct
        while not self.stop.is_set():
            try:
                query, peer = self.sock.recvfrom(512)
            except socket.timeout:
                continue
            end = 12
            while query[end]:
                end += query[end] + 1
            record = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + self.answer
            self.sock.sendto(query[:2] + b"\x81\x80" + struct.pack(">HHHH", 1, 1, 0, 0) +
                             query[12:end + 5] + record, peer)

    def close(self):
        self.stop.set()
        self.thread.join()
        self.sock.close()


@needs_slirp4netns
def test_slirp4netns_dns_in_its_sandbox(tmp_path, state_root, rootfs_copy, no_leaks):
    """Its sandbox keeps the host's /etc: 10.0.2.3 forwards to the resolver of the host's
    /etc/resolv.conf (here one of the test's, bound over it in a mount namespace)."""
    from conftest import mc_argv
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.77\n")
    server = _DnsServer("127.0.0.77", "192.0.2.99")
    try:
        r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            'mount --bind "$0" /etc/resolv.conf && exec "$@"', str(resolv)] +
                           mc_argv("run", "--rm", "--network", "slirp4netns", "--rootfs",
                                   rootfs_copy, "--", "nslookup", "dns.test", "10.0.2.3",
                                   state_root=state_root),
                           capture_output=True, text=True, timeout=60)
    finally:
        server.close()
    assert "Address: 192.0.2.99" in ok(r)
    assert _slirp4netns_of(state_root) == []


def _init_pid(state_root, name):
    with open(os.path.join(state_root, name, "state.json")) as f:
        return json.load(f)["pid"]


def _port_free(port):
    import socket
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@needs_slirp4netns
def test_slirp4netns_ends_with_its_monitor(state_root, rootfs_copy, no_leaks):
    """A detached container's slirp4netns holds its host port no longer than the monitor
    holds the container: the monitor SIGKILLed, then its init, the port is free again."""
    import signal
    from conftest import mc, monitor_pid, wait_for
    from fixtures_registry import free_port
    from minicontainer import monitor_dir
    port, name = free_port(), new_id("slirp")
    ok(mc("run", "-d", "--name", name, "--network", "slirp4netns", "-p",
          "127.0.0.1:%d:80" % port, "--rootfs", rootfs_copy, "--", "httpd", "-f", "-p", "80",
          "-h", "/", state_root=state_root))
    try:
        assert len(_slirp4netns_of(state_root)) == 1
        os.kill(monitor_pid(state_root), signal.SIGKILL)
        os.kill(_init_pid(state_root, name), signal.SIGKILL)
        # (its cmdline goes with its memory, before its sockets)
        wait_for(lambda: _port_free(port), what="the port to be free")
    finally:
        ok(mc("rm", "-f", name, state_root=state_root))
        ok(mc("gc", state_root=state_root))  # the killed monitor's socket and lock
    wait_for(lambda: _slirp4netns_of(state_root) == [], what="slirp4netns to end")
    assert not os.path.exists(monitor_dir(state_root))


@needs_slirp4netns
@pytest.mark.parametrize("verb", [["ps", "-a"], ["gc"]])
def test_orphaned_slirp4netns_ended_by_ps_and_gc(verb, tmp_path, state_root, rootfs_copy,
                                                 no_leaks):
    """run -d --console-socket leaves no process of ours with the container (as runc's):
    once it exited, ps and gc end its slirp4netns, which held its host port."""
    import signal
    import socket
    from conftest import mc, mc_bg, wait_for
    from fixtures_registry import free_port
    port, name = free_port(), new_id("slirp")
    console = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    console.bind(str(tmp_path / "console.sock"))
    console.listen(1)
    try:
        r = mc_bg("run", "-d", "-t", "--console-socket", str(tmp_path / "console.sock"),
                  "--name", name, "--network", "slirp4netns", "-p", "127.0.0.1:%d:80" % port,
                  "--rootfs", rootfs_copy, "--", "sleep", "1000", state_root=state_root)
        assert r.returncode == 0, r.stderr
        try:
            assert len(_slirp4netns_of(state_root)) == 1
            os.kill(_init_pid(state_root, name), signal.SIGKILL)
            wait_for(lambda: mc("state", name, state_root=state_root).stdout.count(
                '"stopped"'), what="the container to stop")
            assert len(_slirp4netns_of(state_root)) == 1  # nobody ended it
            ok(mc(*verb, state_root=state_root))
            wait_for(lambda: _port_free(port), what="the port to be free")
        finally:
            ok(mc("rm", "-f", name, state_root=state_root))
    finally:
        console.close()
    wait_for(lambda: _slirp4netns_of(state_root) == [], what="slirp4netns to end")


# Fake slirp4netns programs: each writes its pid (and a child's) to DIR/pids.
FAKE_SLEEPS = """#!/bin/sh
echo $$ >>%(dir)s/pids
sleep 1000 &
echo $! >>%(dir)s/pids
wait
"""
FAKE_API = """#!/usr/bin/python3
import os, socket, sys, time
with open("%(dir)s/pids", "a") as f:
    f.write("%%d\\n" %% os.getpid())
args = " ".join(sys.argv[1:]).replace("=", " ").split()
api, ready = args[args.index("--api-socket") + 1], int(args[args.index("--ready-fd") + 1])
if "%(mode)s" == "exits":
    os.write(ready, b"1")
    sys.exit(0)
s = socket.socket(socket.AF_UNIX)
s.bind(api)
s.listen(4)
os.write(ready, b"1")
os.close(ready)
held = []
while True:
    conn, _ = s.accept()
    conn.recv(4096)
    held.append(conn)
    if "%(mode)s" != "silent":
        conn.sendall(%(answer)r)
        conn.close()
"""


def _fake_slirp4netns(d, text, **kw):
    path = os.path.join(str(d), "slirp4netns")
    with open(path, "w") as f:
        f.write(text % dict(kw, dir=d))
    os.chmod(path, 0o755)
    os.chmod(str(d), 0o755)
    return dict(os.environ, PATH="%s:%s" % (d, os.environ.get("PATH", "/usr/bin:/bin")))


def _fakes_left(d):
    """The fake's processes still there (ended now: a test leaves none)."""
    import signal
    from minicontainer import process_state
    try:
        with open(os.path.join(str(d), "pids")) as f:
            pids = [int(line) for line in f.read().split()]
    except FileNotFoundError:
        return []
    left = [pid for pid in pids if process_state(pid) not in ("Z", "X", None)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


def test_slirp4netns_never_ready_is_one_line(tmp_path, state_root, rootfs_copy, no_leaks):
    """A slirp4netns that never says it is ready: one line after a bounded wait, and
    nothing of it (nor of its children) left."""
    from conftest import mc
    env = _fake_slirp4netns(tmp_path, FAKE_SLEEPS)
    try:
        r = mc("run", "--rm", "--network", "slirp4netns", "--rootfs", rootfs_copy, "--",
               "true", state_root=state_root, env=env, timeout=60)
    finally:
        assert _fakes_left(tmp_path) == []
    assert one_line_error(r, 125) == "minicontainer: slirp4netns: not ready within 10 s: ended"


@pytest.mark.parametrize("mode,answer,error", [
    ("exits", b"", "slirp4netns( exited)?: API socket %(sock)s: No such file or directory"),
    ("garbage", b"garbage", "slirp4netns: API socket %(sock)s: not a JSON answer to "
     "add_hostfwd: garbage"),
    ("silent", b"", "slirp4netns: API socket %(sock)s: no answer to add_hostfwd within 10 "
     "s"),
])
def test_slirp4netns_api_failures_are_one_line(mode, answer, error, tmp_path, state_root,
                                               rootfs_copy, no_leaks):
    from conftest import mc
    from fixtures_registry import free_port
    env = _fake_slirp4netns(tmp_path, FAKE_API, mode=mode, answer=answer)
    name = new_id("slirp")
    try:
        r = mc("run", "--rm", "--name", name, "-p", "127.0.0.1:%d:80" % free_port(),
               "--network", "slirp4netns", "--rootfs", rootfs_copy, "--", "true",
               state_root=state_root, env=env, timeout=60)
    finally:
        assert _fakes_left(tmp_path) == []
    import re
    sock = os.path.join(state_root, name, "slirp4netns.sock")
    # (whether slirp4netns exited yet when the runtime found its socket gone: either)
    assert re.fullmatch("minicontainer: " + error % {"sock": re.escape(sock)},
                        one_line_error(r, 125))
    assert not os.path.exists(os.path.join(state_root, name))


@needs_slirp4netns
@pytest.mark.parametrize("host", ["127.0.0.1", "203.0.113.9"])
def test_slirp4netns_host_port_failure_says_why(host, state_root, rootfs_copy, no_leaks):
    """A host port in use, an address not the host's: said so, not slirp4netns's own
    "slirp_add_hostfwd failed"; nothing left."""
    import socket
    from conftest import mc
    from fixtures_registry import free_port
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1] if host == "127.0.0.1" else free_port()
        spec = "%s:%d:80" % (host, port)
        r = mc("run", "--rm", "--network", "slirp4netns", "-p", spec, "--rootfs", rootfs_copy,
               "--", "true", state_root=state_root)
    why = "the port is in use" if host == "127.0.0.1" else "not an address of this host"
    assert one_line_error(r, 125) == "minicontainer: -p %s: %s:%d: %s" % (spec, host, port,
                                                                        why)
    assert _slirp4netns_of(state_root) == []


def test_rootless_privileged_port_says_why(user):
    """A user's -p of a port below net.ipv4.ip_unprivileged_port_start: said so (slirp4netns
    as the user cannot open /dev/net/tun here: a fake one answers for it)."""
    with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
        start = int(f.read())
    if start == 0:
        pytest.skip("every port is a user's here")
    d = user.mkdir("fake-slirp4netns")
    env = _fake_slirp4netns(d, FAKE_API, mode="answers", answer=b'{"return": {}}')
    rootfs = user.mkdir("rootfs-lowport", rootfs=True)
    name = new_id("rl")
    try:
        r = user.mc("run", "--rm", "--name", name, "-p", "127.0.0.1:%d:80" % (start - 1),
                    "--rootfs", rootfs, "--", "true", env={"PATH": env["PATH"]})
    finally:
        assert _fakes_left(d) == []
    assert one_line_error(r, 125) == (
        "minicontainer: -p 127.0.0.1:%d:80: 127.0.0.1:%d: a port below %d is root's "
        "(net.ipv4.ip_unprivileged_port_start)" % (start - 1, start - 1, start))
    assert not os.path.exists(os.path.join(user.state, name))


@pytest.fixture(scope="module")
def root_image(image_rootfs, tmp_path_factory):
    """An image of the busybox rootfs in a store of this module's: the environment to run it."""
    import import_image
    store = str(tmp_path_factory.mktemp("slirp-store"))
    import_image.import_image(image_rootfs, "slirp-test:1", store=store)
    return dict(os.environ, MINICONTAINER_STORE=store)


@needs_slirp4netns
def test_slirp4netns_host_gateway_reaches_the_host(state_root, root_image, no_leaks):
    """--add-host NAME:host-gateway names the host's own address (its loopback, 10.0.2.2,
    is out of reach): a server there is reached through the name."""
    import http.server
    import socket
    import threading
    from conftest import mc
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("198.51.100.1", 9))
        except OSError:
            pytest.skip("the host has no default route")
        host = s.getsockname()[0]

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"from the host\n")

        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer((host, 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        out = ok(mc("run", "--rm", "--network", "slirp4netns", "--add-host",
                    "hostgw:host-gateway", "slirp-test:1", "sh", "-c",
                    "grep hostgw /etc/hosts; wget -qO- http://hostgw:%d/" %
                    server.server_address[1], state_root=state_root, env=root_image))
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert out == "%s\thostgw\nfrom the host\n" % host


# ---- safety ----

def test_host_files_stay_out_of_reach(user):
    """Binds of /, /etc and /etc/shadow give the container's root no more than the user
    has: shadow unreadable, /etc not writable."""
    rootfs = user.mkdir("rootfs-safety", rootfs=True)
    script = ("cat /host/etc/shadow >/dev/null 2>&1 && echo READ1; "
              "cat /etc2/shadow >/dev/null 2>&1 && echo READ2; "
              "cat /shadow >/dev/null 2>&1 && echo READ3; "
              "echo x >> /etc2/passwd 2>/dev/null && echo WROTE1; "
              "touch /host/etc/mc-rootless 2>/dev/null && echo WROTE2; "
              "chown 0 /host/etc/passwd 2>/dev/null && echo CHOWNED; echo done")
    out = ok(user.mc("run", "--rm", "-v", "/:/host", "-v", "/etc:/etc2", "-v",
                     "/etc/shadow:/shadow", "--cap-add", "ALL", "--rootfs", rootfs, "--",
                     "sh", "-c", script))
    assert out.split() == ["done"]
    assert not os.path.exists("/etc/mc-rootless")
    d = rootless_bundle(user, "b-safety", ["sh", "-c", script], edit=lambda c: c[
        "mounts"].extend([{"destination": "/host", "source": "/", "type": "bind",
                           "options": ["rbind"]},
                          {"destination": "/etc2", "source": "/etc", "type": "bind",
                           "options": ["bind"]},
                          {"destination": "/shadow", "source": "/etc/shadow", "type": "bind",
                           "options": ["bind"]}]))
    assert ok(user.mc("run", "--bundle", d, new_id("rl"))).split() == ["done"]


# ---- podman rootless ----

@pytest.fixture(scope="module")
def podman(user):
    if not (shutil.which("podman") and shutil.which("conmon")):
        pytest.skip("needs podman and conmon")
    tarball = os.path.join(user.base, "bb.tar")
    rootfs = user.mkdir("podman-rootfs", rootfs=True)
    subprocess.run(["tar", "-C", rootfs, "-cf", tarball, "."], check=True)
    os.chmod(tarball, 0o644)

    def p(*args, timeout=120):
        # no network (slirp4netns needs /dev/net/tun), cgroupfs (no systemd), file events
        return user.run("podman", "--runtime", user.runtime, "--cgroup-manager", "cgroupfs",
                        "--events-backend", "file", *args, timeout=timeout,
                        env={"CONTAINERS_CONF": "/dev/null"})
    ok(p("import", tarball, "localhost/rlbb"))
    yield p
    p("rm", "-a", "-f")
    p("system", "migrate")


def test_podman_rootless_runs_it(podman, user):
    r = podman("run", "--rm", "--network", "none", "localhost/rlbb", "id", "-u")
    assert (r.returncode, r.stdout) == (0, "0\n"), r.stderr
    r = podman("run", "--rm", "--network", "none", "localhost/rlbb", "sh", "-c", "exit 7")
    assert r.returncode == 7, r.stderr
    # it ran here, as the user: the state went to $XDG_RUNTIME_DIR/minicontainer
    assert os.path.isdir(os.path.join(user.xdg, "minicontainer"))


def test_podman_rootless_detached_exec_stop(podman):
    r = podman("run", "-d", "--name", "rld", "--network", "none", "localhost/rlbb",
               "sleep", "60")
    assert r.returncode == 0, r.stderr
    try:
        r = podman("exec", "rld", "id", "-u")
        assert (r.returncode, r.stdout) == (0, "0\n"), r.stderr
        r = podman("stop", "-t", "1", "rld")
        assert r.returncode == 0, r.stderr
        r = podman("inspect", "--format", "{{.State.Status}}", "rld")
        assert r.stdout.strip() == "exited", r.stderr
    finally:
        podman("rm", "-f", "rld")


# ---- last: what the tests' containers left is the runtime's to remove, and it did ----

def test_nothing_left(user):
    left = os.listdir(user.state) if os.path.isdir(user.state) else []
    assert left == []
    assert mountpoints_under(user.base) == []
    runtimes = []
    for pid in user.processes():
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                if user.runtime.encode() in f.read():
                    runtimes.append(pid)
        except OSError:
            pass
    assert runtimes == []
