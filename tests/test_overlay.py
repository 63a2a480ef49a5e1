"""Issue #6: copy-on-write rootfs (overlayfs), layers stored once, volumes and tmpfs.

Every test has its own store ($MINICONTAINER_STORE, the `store` fixture) and state root, and
the no_leaks fixture checks that no state directory, cgroup or mount is left."""
import hashlib
import os
import stat
import subprocess

import pytest

import minicontainer as mc
from conftest import mc as run_mc
from conftest import mc_bg, mountpoints_under, new_id, ok, wait_for
import store_writer
from fixtures_registry import Image, dir_layer, entry, run_pull, tar_layer

pytestmark = [pytest.mark.needs_root, pytest.mark.usefixtures("no_leaks")]


def upper_layers():
    """Layers over a busybox base: whiteouts of files and directories, opaque directories,
    a directory replaced by a file and back, a whiteout then a directory of the same name in
    one layer, whiteouts of what their own layer made, hardlinks, symlinks, odd modes and
    owners."""
    second = tar_layer([
        entry("etc", "dir"), entry("etc/motd", data=b"hello\n"),
        entry("data", "dir", mode=0o750, uid=1000, gid=1000),
        entry("data/a", data=b"A" * 5000), entry("data/b", "hardlink", link="data/a"),
        entry("data/link", "symlink", link="a"), entry("data/gone", data=b"gone"),
        entry("data/sub", "dir"), entry("data/sub/x", data=b"x"),
        entry("opq", "dir"), entry("opq/old1", data=b"1"), entry("opq/old2", "dir"),
        entry("opq/old2/deep", data=b"2"),
        entry("dir2file", "dir"), entry("dir2file/inner", data=b"i"),
        entry("file2dir", data=b"f"),
        entry("wd", "dir"), entry("wd/old", data=b"o"),
        entry("d2f2d", "dir"), entry("d2f2d/inner", data=b"i"),
        entry("imp", "dir"), entry("imp/q", "dir"), entry("imp/q/x", data=b"x"),
        entry("usr", "dir"), entry("usr/bin", "dir"),
        entry("usr/bin/suid", data=b"#!/bin/sh\n", mode=0o4755),
        entry("wl", "dir"), entry("wl/old", data=b"o"), entry("wl/q", "dir"),
        entry("wl/q/x", data=b"x"),
        entry("we", "dir", mode=0o700), entry("we/old", data=b"o"),
        entry("wi", "dir"), entry("wi/old", data=b"o"),
    ])
    third = tar_layer([
        entry("data/.wh.gone"), entry("data/.wh.sub"),
        entry("opq/.wh..wh..opq"), entry("opq/new", data=b"n"),
        entry("dir2file", data=b"now a file"),
        entry("file2dir", "dir", mode=0o711), entry("file2dir/child", data=b"c"),
        entry("etc/motd", data=b"welcome, again\n", mode=0o600),
        entry("bin/.wh.vi"),
        entry(".wh.wd"), entry("wd", "dir"), entry("wd/new", data=b"w"),
    ], compression="zstd")
    fourth = tar_layer([
        entry("file2dir/.wh..wh..opq"), entry("file2dir/other", data=b"x"),
        entry("data/c", data=b"C", uid=7, gid=8, mode=0o640),
        # a whiteout hides lower layers only: not what its own layer made before it
        entry("mine", data=b"m"), entry(".wh.mine"), entry("made/deep/f", data=b"f"),
        entry("made/.wh.deep"),
        # a directory that a file replaced, then a directory again: empty but for its own
        entry("d2f2d", data=b"file"), entry("d2f2d", "dir"), entry("d2f2d/new", data=b"n"),
        # a file in place of the directories it made for an entry of its own
        entry("imp/q/f", data=b"f"), entry("imp", data=b"now a file", mode=0o600),
        # a whiteout after the layer's own entries below it, and after its own directory:
        # they stay, the lower ones go (as if the whiteout came first); before an entry
        # below it with no directory entry of its own: that directory starts empty
        entry("wl/q/f", data=b"f"), entry(".wh.wl"),
        entry("we", "dir", mode=0o750), entry(".wh.we"),
        entry(".wh.wi"), entry("wi/f", data=b"f"),
    ], compression=None)
    return [second, third, fourth]


@pytest.fixture(scope="module")
def base(image_rootfs):
    return dir_layer(image_rootfs)


def push_pull(registry, store, layers, tag="v", name=None):
    name = name or "ovl/" + os.urandom(4).hex()
    registry.client.push_image(name, tag, Image(layers))
    ref = f"{registry.host}/{name}:{tag}"
    r = run_pull("-q", ref, store=store)
    assert r.returncode == 0, r.stderr
    return mc.find_image(ref, store)


@pytest.fixture
def image(registry, store, base):
    return push_pull(registry, store, [base] + upper_layers())


def snapshot(root):
    """Everything about a tree a container could change: {path: facts}, root included."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [""] + dirnames + filenames if dirpath == root else dirnames + filenames:
            path = os.path.join(dirpath, name) if name else dirpath
            st = os.lstat(path)
            facts = [st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_rdev,
                     st.st_nlink, sorted((x, os.getxattr(path, x, follow_symlinks=False))
                                         for x in os.listxattr(path, follow_symlinks=False))]
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    facts.append(hashlib.sha256(f.read()).hexdigest())
            elif stat.S_ISLNK(st.st_mode):
                facts.append(os.readlink(path))
            out[os.path.relpath(path, root)] = facts
    return out


def view(root):
    """What a merged view must agree on: file list, types, modes, owners, contents, symlink
    targets, device numbers, and which names are hardlinks of one another."""
    out, inodes = {}, {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            facts = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
            if stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    facts += (hashlib.sha256(f.read()).hexdigest(),)
                inodes.setdefault(st.st_ino, []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                facts += (os.readlink(path),)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                facts += (st.st_rdev,)
            out[rel] = facts
    links = sorted(sorted(names) for names in inodes.values() if len(names) > 1)
    return out, links


def differences(got, want):
    """The entries where two views disagree (readable in a failure, unlike two big dicts)."""
    (a, alinks), (b, blinks) = got, want
    diff = [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    return diff + ([("hardlinks", alinks, blinks)] if alinks != blinks else [])


def flat_unpack(store, image, dest):
    os.mkdir(dest)
    for layer in image.manifest["layers"]:
        store_writer.unpack_layer(mc.ImageStore(store).blob_path(layer["digest"]), dest)
    return dest


def layers_snapshot(image):
    return [snapshot(path) for path in image.layers]


# ---- layers stored once, merged view == flat unpack ----

def test_merged_view_equals_flat_unpack(image, store, tmp_path):
    flat = view(flat_unpack(store, image, str(tmp_path / "flat")))
    assert flat[0]["dir2file"][0] == stat.S_IFREG and "data/gone" not in flat[0]
    assert sorted(n for n in flat[0] if n.startswith("file2dir/")) == ["file2dir/other"]
    assert sorted(n for n in flat[0] if n.startswith("wd/")) == ["wd/new"]
    assert ["data/a", "data/b"] in flat[1]
    assert "mine" in flat[0] and "made/deep/f" in flat[0]
    assert sorted(n for n in flat[0] if n.startswith("d2f2d/")) == ["d2f2d/new"]
    assert flat[0]["imp"][:2] == (stat.S_IFREG, 0o600)
    assert sorted(n for n in flat[0] if n.startswith(("wl/", "we/", "wi/"))) == \
        ["wi/f", "wl/q", "wl/q/f"]
    assert flat[0]["we"][:2] == (stat.S_IFDIR, 0o750)
    # the layer directories hold overlayfs's whiteouts, not the tar's .wh. files
    third = image.layers[2]
    assert os.stat(os.path.join(third, "data/gone"), follow_symlinks=False).st_rdev == 0
    assert stat.S_ISCHR(os.lstat(os.path.join(third, "data/gone")).st_mode)
    assert os.getxattr(os.path.join(third, "opq"), "trusted.overlay.opaque") == b"y"
    assert os.getxattr(os.path.join(third, "wd"), "trusted.overlay.opaque") == b"y"
    assert not any(".wh." in n for layer in image.layers for _, ds, fs in os.walk(layer)
                   for n in ds + fs)
    # the overlay the runtime mounts
    merged, upper, work = (str(tmp_path / d) for d in ("merged", "upper", "work"))
    for d in (merged, upper, work):
        os.mkdir(d)
    mc.mount_overlay(image.layers, upper, work, merged)
    try:
        assert differences(view(merged), flat) == []
    finally:
        mc.umount2(merged)
    # the private copy made where overlayfs is refused
    copy = str(tmp_path / "copy")
    os.mkdir(copy)
    mc.copy_layers(image.layers, copy)
    assert differences(view(copy), flat) == []


def test_two_images_share_their_base_layer_on_disk(registry, store, base):
    def du():
        return int(subprocess.run(["du", "-sk", os.path.join(store, "layers")],
                                  capture_output=True, text=True, check=True).stdout.split()[0])
    one = push_pull(registry, store, [base, tar_layer([entry("one", data=b"1")])])
    after_one = du()
    two = push_pull(registry, store, [base, tar_layer([entry("two", data=b"2")])])
    assert one.layers[0] == two.layers[0]  # the same directory...
    assert os.stat(one.layers[0]).st_ino == os.stat(two.layers[0]).st_ino
    assert len(os.listdir(os.path.join(store, "layers"))) == 3  # ...stored once
    # the second image cost its own small layer only (a few kB), not the busybox base again
    assert after_one > 500 and du() - after_one < 50
    # two tags of one image cost nothing at all
    before = sorted(os.listdir(os.path.join(store, "layers"))), du()
    name = one.name.rsplit(":", 1)[0].split("/", 1)[1]
    again = push_pull(registry, store, [base, tar_layer([entry("one", data=b"1")])],
                      tag="other", name=name)
    assert again.digest == one.digest and again.layers == one.layers
    assert (sorted(os.listdir(os.path.join(store, "layers"))), du()) == before


def test_rmi_keeps_layers_a_container_uses(registry, store, base, state_root):
    img = push_pull(registry, store, [base, tar_layer([entry("mine", data=b"m")])])
    cid = new_id("ov")
    ok(run_mc("run", "--name", cid, img.name, "true", state_root=state_root),
       quiet=True)  # stays, stopped, without --rm
    env = dict(os.environ, MINICONTAINER_STORE=store)
    assert run_mc("rmi", img.name, env=env).returncode == 1  # in use: issue 13 refuses it
    assert run_mc("rmi", "-f", img.name, env=env).returncode == 0
    assert all(os.path.isdir(p) for p in img.layers)  # the container still needs them
    ok(run_mc("delete", cid, state_root=state_root), quiet=True)
    assert os.listdir(os.path.join(store, "containers")) == []
    with mc.ImageStore(store).lock(True):
        mc.ImageStore(store).collect_garbage()
    assert os.listdir(os.path.join(store, "layers")) == []


# ---- copy-on-write containers ----

WRITES = """set -e
echo changed > /etc/motd
rm /data/a
echo new > /added; mkdir -p /newdir/deep; echo d > /newdir/deep/f
rm -rf /opq; mkdir /opq; echo y > /opq/y
rm -rf /file2dir; echo now-a-file > /file2dir
chmod 700 /usr/bin/suid; chown 5:5 /data/c
ln -s /added /etc/alias
echo done
"""


def test_image_is_unchanged_by_a_container_and_changes_stay_until_delete(image, state_root):
    before = layers_snapshot(image)
    cid = new_id("ov")
    assert ok(run_mc("run", "--name", cid, image.name, "sh", "-c", WRITES, state_root=state_root),
              quiet=True) == "done\n"
    assert layers_snapshot(image) == before  # byte for byte, metadata included
    # without --rm the stopped container and its changes remain
    state = mc.Container.load(cid, state_root)
    assert state.status() == "stopped"
    upper = os.path.join(state.dir, "upper")
    assert open(os.path.join(upper, "added")).read() == "new\n"
    # what the container wrote (setuid files of its root, too) is out of the host users' reach
    assert os.stat(state.dir).st_mode & 0o777 == 0o700
    assert stat.S_ISCHR(os.lstat(os.path.join(upper, "data/a")).st_mode)  # a whiteout
    assert not mountpoints_under(state.dir)  # the overlay was the container's alone
    # a new container sees the image, not the other's changes
    out = ok(run_mc("run", "--name", new_id("ov"), "--rm", image.name, "sh", "-c",
                    "cat /etc/motd; ls /added /data/a /opq /file2dir 2>&1; ls -l /usr/bin/suid",
                    state_root=state_root), quiet=True)
    assert "welcome, again\n" in out and "/added: No such file" in out
    assert "/data/a\n" in out and "new\n" in out and "child" not in out and "other\n" in out
    assert "-rwsr-xr-x" in out
    ok(run_mc("delete", cid, state_root=state_root), quiet=True)
    assert not os.path.exists(state.dir)
    assert layers_snapshot(image) == before


def test_two_running_containers_do_not_see_each_others_writes(image, state_root, tmp_path):
    first = new_id("ov")
    rc, out, err = mc_bg("run", "-d", "--name", first, image.name, "sh", "-c",
                         "echo one > /shared; echo one > /etc/motd; sleep 60",
                         state_root=state_root, out=str(tmp_path / "first"))
    assert rc == 0, err
    try:
        upper = os.path.join(state_root, first, "upper")
        wait_for(lambda: os.path.exists(os.path.join(upper, "etc/motd")), 10,
                 "the first container's write")
        out = ok(run_mc("run", "--name", new_id("ov"), "--rm", image.name, "sh", "-c",
                        "cat /shared 2>&1; cat /etc/motd; echo two > /shared",
                        state_root=state_root), quiet=True)
        assert "No such file" in out and "welcome, again\n" in out
        assert open(os.path.join(upper, "shared")).read() == "one\n"
    finally:
        run_mc("delete", "-f", first, state_root=state_root)


def test_rm_leaves_nothing(image, state_root, store):
    ok(run_mc("run", "--name", new_id("ov"), "--rm", image.name, "sh", "-c", "echo x > /x",
              state_root=state_root), quiet=True)
    assert os.listdir(state_root) == []
    assert os.listdir(os.path.join(store, "containers")) == []


def test_an_image_of_many_layers(registry, store, base, state_root):
    # 100 layers' names (64 hex digits each) are more than one page of mount data: the
    # overlay names them through short links. Each layer adds a file and replaces /top.
    layers = [base] + [tar_layer([entry("many", "dir"), entry("many/%d" % i, data=b"%d" % i),
                                  entry("top", data=b"%d\n" % i)], compression=None)
                       for i in range(100)]
    image = push_pull(registry, store, layers)
    assert len(image.layers) == 101
    out = ok(run_mc("run", "--name", new_id("ov"), "--rm", image.name, "sh", "-c",
                    "ls /many | wc -l; cat /top", state_root=state_root), quiet=True)
    assert out == "100\n99\n"
    assert os.listdir(state_root) == []


def test_fallback_copy_when_overlay_is_not_used(image, state_root):
    before = layers_snapshot(image)
    env = dict(os.environ, MINICONTAINER_NO_OVERLAY="1")
    cid = new_id("ov")
    r = run_mc("run", "--name", cid, image.name, "sh", "-c", WRITES + "cat /etc/motd", env=env,
               state_root=state_root)
    assert r.returncode == 0 and r.stdout == "done\nchanged\n", r.stderr
    lines = r.stderr.splitlines()  # said once
    assert len(lines) == 1 and "private copy" in lines[0], r.stderr
    assert layers_snapshot(image) == before
    rootfs = os.path.join(state_root, cid, "rootfs")
    busybox = mc.layers_lookup(image.layers, "bin/busybox")
    assert os.stat(os.path.join(rootfs, "bin/busybox")).st_ino != os.stat(busybox).st_ino
    assert open(os.path.join(rootfs, "added")).read() == "new\n"  # kept until delete
    ok(run_mc("delete", cid, state_root=state_root), quiet=True)


def test_fallback_copy_when_the_kernel_refuses(image, state_root, tmp_path):
    """A state root on overlayfs: an upper directory there is refused (EINVAL), the init
    says so and the runtime copies the image in its place."""
    d = {n: tmp_path / n for n in ("l", "u", "w", "m")}
    for p in d.values():
        p.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", "lowerdir=%s,upperdir=%s,"
                    "workdir=%s" % (d["l"], d["u"], d["w"]), str(d["m"])], check=True)
    try:
        r = run_mc("run", "--name", new_id("ov"), "--rm", image.name, "sh", "-c",
                   "echo x > /x; cat /x", state_root=str(d["m"] / "state"))
        assert (r.returncode, r.stdout) == (0, "x\n"), r.stderr
        assert len(r.stderr.splitlines()) == 1 and "refused" in r.stderr
        assert os.listdir(d["m"] / "state") == []
    finally:
        subprocess.run(["umount", str(d["m"])], check=True)


# ---- --read-only, --tmpfs, --mount, -v ----

def test_read_only_root_with_writable_tmp_and_run(image, state_root):
    r = run_mc("run", "--name", new_id("ov"), "--rm", "--read-only", image.name, "sh", "-c",
               "touch /x", state_root=state_root)
    assert r.returncode != 0 and "Read-only file system" in r.stderr
    out = ok(run_mc("run", "--name", new_id("ov"), "--rm", "--read-only", image.name, "sh", "-c",
                    "touch /tmp/a /run/b && echo ok; stat -c %a /tmp /run", state_root=state_root),
             quiet=True)
    assert out == "ok\n1777\n755\n"


def test_tmpfs_and_mount_tmpfs(image, state_root):
    out = ok(run_mc("run", "--name", new_id("ov"), "--rm", "--tmpfs", "/scratch:size=1m",
                    "--mount", "type=tmpfs,target=/t,tmpfs-size=2m,tmpfs-mode=700", image.name,
                    "sh", "-c", "echo a > /scratch/a && echo b > /t/b && cat /scratch/a /t/b; "
                    "stat -c %a /t; grep -E ' /(scratch|t) ' /proc/self/mountinfo",
                    state_root=state_root), quiet=True)
    lines = out.splitlines()
    assert lines[:3] == ["a", "b", "700"]
    assert "tmpfs" in lines[3] and "size=1024k" in lines[3] and "noexec" in lines[3]
    assert "tmpfs" in lines[4] and "size=2048k" in lines[4]


def test_volumes_and_bind_mounts(image, state_root, tmp_path):
    host = tmp_path / "vol"
    host.mkdir()
    (host / "f").write_text("from host\n")
    out = ok(run_mc("run", "--name", new_id("ov"), "--rm", "-v", "%s:/rw" % host, "-v",
                    "%s:/ro:ro" % host, "--mount", "type=bind,source=%s,target=/m,readonly" % host,
                    image.name, "sh", "-c",
                    "cat /ro/f; echo w > /rw/written; (echo no > /ro/x) 2>&1; "
                    "(echo no > /m/x) 2>&1; echo end", state_root=state_root), quiet=True)
    assert out.startswith("from host\n") and out.endswith("end\n")
    assert out.count("Read-only file system") == 2
    assert (host / "written").read_text() == "w\n"
    assert not (host / "x").exists()
    r = run_mc("run", "--name", new_id("ov"), "--rm", image.name, "sh", "-c", "echo no > /ro/x",
               state_root=state_root)  # no volume: fine
    assert r.returncode != 0
    r = run_mc("run", "--name", new_id("ov"), "--rm", "--mount", "type=bind,src=%s,dst=/w" % host,
               image.name, "cat", "/w/written", state_root=state_root)
    assert ok(r, quiet=True) == "w\n"


def test_docker_defaults_of_term_and_the_host_network(image, state_root):
    """As docker's: TERM only with -t; with --network host the host's hostname, and -p
    discarded with a warning (it was an error)."""
    r = run_mc("run", "--rm", "--network", "host", "-p", "8080:80", image.name, "sh", "-c",
               "hostname; env | grep -c ^TERM= || true", state_root=state_root)
    assert (r.returncode, r.stdout.split()) == (0, [os.uname().nodename, "0"]), r.stderr
    assert r.stderr == "minicontainer: warning: published ports are discarded with " \
        "--network host\n"
    out = ok(run_mc("run", "--rm", "-e", "TERM=dumb", image.name, "sh", "-c",
                    "env | grep ^TERM=", state_root=state_root), quiet=True)
    assert out == "TERM=dumb\n"


def test_a_read_only_volume_is_read_only_below_too(image, state_root, tmp_path):
    """-v HOST:CTR:ro and --mount ...,readonly make the volume's submounts read-only too, as
    docker 25+ does (recursive read-only, mount_setattr): a host mount inside the volume's
    source was writable."""
    if not mc.has_mount_setattr():
        pytest.skip("no mount_setattr (Linux 5.12+)")
    host = tmp_path / "vol"
    (host / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", host / "sub"], check=True)
    try:
        out = ok(run_mc("run", "--rm", "-v", "%s:/v:ro" % host, "--mount",
                        "type=bind,source=%s,target=/m,readonly" % host, image.name, "sh", "-c",
                        "for f in /v/x /v/sub/x /m/sub/x; do (echo no > $f) 2>&1; done; echo end",
                        state_root=state_root), quiet=True)
        assert out.count("Read-only file system") == 3 and out.endswith("end\n"), out
        assert os.listdir(host / "sub") == []
    finally:
        subprocess.run(["umount", host / "sub"], check=True)


@pytest.mark.parametrize("volume", ["-v", "--mount"])
def test_a_shared_volume_is_shared_with_the_host(image, tmp_path, volume):
    """-v HOST:CTR:rshared (or bind-propagation=rshared) asks for a shared root, as docker
    does: what the container mounts in the volume reaches the host; nothing else does, the
    image's overlay included, though the state root is on a shared mount of the host (one
    of its own: a volume on it would not be a peer, see cut_from_host)."""
    top, states = tmp_path / "top", tmp_path / "states"
    try:
        for d in (top, states):
            d.mkdir()
            subprocess.run(["mount", "-t", "tmpfs", "tmpfs", d], check=True)
            subprocess.run(["mount", "--make-shared", d], check=True)
        vol = top / "vol"
        (vol / "sub").mkdir(parents=True)
        flag = "%s:/vol:rw,rshared" % vol if volume == "-v" else \
            "type=bind,source=%s,target=/vol,bind-propagation=rshared" % vol
        ok(run_mc("run", "--rm", "--privileged", volume, flag, image.name, "sh", "-c",
                  "mount -t tmpfs inner /vol/sub && mkdir /m && mount -t tmpfs inner /m",
                  state_root=str(states / "state")), quiet=True)
        assert mountpoints_under(str(top), str(states)) == [str(top), str(states),
                                                            str(vol / "sub")]
    finally:
        for d in (top, states):
            if os.path.ismount(d):
                subprocess.run(["umount", "-R", "-l", d], check=True)


@pytest.mark.parametrize("flag, message", [
    (["-v", "/tmp:/x:rw,bogus"], "OPTIONS ro or rw and a propagation"),
    (["-v", "/nonexistent-mc/x:/x"], "does not exist"),
    (["--mount", "type=bind,source=/nonexistent-mc/x,target=/x"], "does not exist"),
    (["--mount", "type=npipe,target=/x"], "not supported"),  # (type=volume: a volume's)
    (["--mount", "type=volume,source=a/b,target=/x"], "no volume name"),
    (["--mount", "type=bind,source=/tmp"], "target="),
    (["--mount", "type=tmpfs,target=/x,bogus=1"], "unknown option bogus"),
    (["--tmpfs", "relative"], "must be absolute"),
])
def test_mount_errors_are_one_line(image, state_root, flag, message):
    r = run_mc("run", "--name", new_id("ov"), "--rm", *flag, image.name, "true",
               state_root=state_root)
    assert r.returncode == 125 and len(r.stderr.splitlines()) == 1, r.stderr
    assert message in r.stderr
    assert not os.path.exists("/nonexistent-mc")  # never created behind the user's back
    assert not os.path.isdir(state_root) or os.listdir(state_root) == []


def test_bind_create_src_makes_the_source_when_asked(image, state_root, tmp_path):
    src = tmp_path / "made" / "here"
    ok(run_mc("run", "--name", new_id("ov"), "--rm", "--mount",
              "type=bind,source=%s,target=/x,bind-create-src"
              % src, image.name, "sh", "-c", "echo hi > /x/f", state_root=state_root), quiet=True)
    assert (src / "f").read_text() == "hi\n"
