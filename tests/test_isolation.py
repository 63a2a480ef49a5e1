"""User namespaces (root inside is not root outside) and rootfs symlinks that point out of
the container (the CVE-2021-30465 class): nothing may be mounted or made on the host."""
import os
import shutil

import pytest

from conftest import mc, mc_bg, mc_sh, mountpoints_under, new_id, ok, write_bundle

import minicontainer as mc_module

pytestmark = pytest.mark.needs_root




@pytest.fixture
def volume(walkable):
    """A host directory with a file only the host's root may read, one owned by the
    container's root (host uid 100000 with the default map), and no write bit for others."""
    vol = walkable / "vol"
    vol.mkdir()
    os.chmod(vol, 0o755)
    (vol / "rootonly").write_text("secret\n")
    os.chmod(vol / "rootonly", 0o600)
    (vol / "mine").write_text("mine\n")
    os.chown(vol / "mine", 100000, 100000)
    return vol


def test_userns_root_inside_is_mapped_to_an_unprivileged_host_uid(walkable_rootfs, state_root):
    out = ok(mc_sh("id -u; cat /proc/self/uid_map /proc/self/gid_map", "--userns",
                   rootfs=walkable_rootfs, state_root=state_root, name=new_id("userns")))
    lines = out.split("\n")
    assert lines[0] == "0"
    base = lines[1].split()
    assert base[0] == "0" and int(base[1]) >= 1000 and base[1] != "0"
    assert lines[2].split() == base


def test_userns_root_cannot_touch_what_the_host_root_owns(walkable_rootfs, state_root, volume):
    script = ("cat /vol/rootonly && echo READ; touch /vol/new && echo CREATED; "
              "echo more >> /vol/mine && echo APPENDED; stat -c '%u' /vol/rootonly")
    r = mc_sh(script, "--userns", "-v", "%s:/vol" % volume, rootfs=walkable_rootfs,
              state_root=state_root, name=new_id("userns"))
    assert "READ" not in r.stdout and "CREATED" not in r.stdout
    assert "APPENDED" in r.stdout  # its own (mapped) file it may write
    assert r.stdout.strip().endswith("65534")  # the host's root is nobody in here
    assert not (volume / "new").exists()
    assert (volume / "mine").read_text() == "mine\nmore\n"
    assert os.stat(volume / "mine").st_uid == 100000


def test_userns_files_created_inside_belong_to_the_mapped_uid(walkable_rootfs, state_root,
                                                              walkable):
    shared = walkable / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    ok(mc_sh("touch /shared/f", "--userns", "-v", "%s:/shared" % shared, rootfs=walkable_rootfs,
             state_root=state_root, name=new_id("userns")))
    st = os.stat(shared / "f")
    assert (st.st_uid, st.st_gid) == (100000, 100000)


def test_userns_keeps_the_rest_of_the_setup(walkable_rootfs, state_root):
    out = ok(mc_sh("hostname; ls /proc | grep -c '^[0-9]'; cat /dev/null && echo null; "
                   "grep CapEff /proc/self/status; echo x > /proc/sys/kernel/hostname "
                   "2>/dev/null && echo WROTE; head -c 4 /dev/urandom | wc -c", "--userns",
                   "--hostname", "inside", rootfs=walkable_rootfs, state_root=state_root,
                   name=new_id("userns")))
    lines = out.split("\n")
    assert lines[0] == "inside"
    assert int(lines[1]) <= 3  # sh, its children: a pid namespace of its own
    assert "null" in lines and "WROTE" not in out
    assert "CapEff:\t00000000a80425fb" in out
    assert lines[-2] == "4"


def test_userns_exec_joins_the_user_namespace(walkable_rootfs, state_root):
    cid = new_id("usex")
    rc, _, err = mc_bg("run", "-d", "--name", cid, "--userns", "--rootfs", walkable_rootfs, "--",
                       "sleep", "60", state_root=state_root)
    try:
        assert rc == 0, err
        out = ok(mc("exec", cid, "sh", "-c", "id -u; cat /proc/self/uid_map",
                    state_root=state_root))
        assert out.split("\n")[0] == "0" and out.split()[2] != "0"
    finally:
        mc("delete", "-f", cid, state_root=state_root)


def test_userns_from_a_bundle_with_explicit_maps(walkable_rootfs, state_root, walkable):
    def edit(config):
        config["linux"]["namespaces"].append({"type": "user"})
        config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 1000}]
        config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 200000, "size": 1000}]
    bundle = write_bundle(walkable / "bundle", ["sh", "-c", "cat /proc/self/uid_map"], edit,
                          walkable_rootfs)
    out = ok(mc("run", "--bundle", bundle, new_id("usb"), state_root=state_root))
    assert out.split() == ["0", "200000", "1000"]


def test_userns_with_an_image(image_rootfs, walkable):
    """An overlay of an image's layers in a user namespace; its /etc files are the
    container root's to edit, and its writes land as the mapped uid in its upper layer."""
    import import_image
    store, state_root = str(walkable / "store"), str(walkable / "state")
    import_image.import_image(image_rootfs, "userns-test:1", store=store)
    env = dict(os.environ, MINICONTAINER_STORE=store)
    cid = new_id("userns")
    r = mc("run", "--name", cid, "--userns", "userns-test:1", "sh", "-c",
           "echo 192.0.2.1 added >> /etc/hosts && tail -n 1 /etc/hosts; stat -c %u /etc/hosts; "
           "echo hi > /new; stat -c %u /new; grep ' / ' /proc/self/mountinfo | grep -c overlay",
           state_root=state_root, env=env)
    try:
        assert (r.returncode, r.stdout) == (0, "192.0.2.1 added\n0\n0\n1\n"), r.stderr
        base, _ = mc_module.subordinate_ids()
        assert os.stat(os.path.join(state_root, cid, "hosts")).st_uid == base
        st = os.stat(os.path.join(state_root, cid))  # only the container's root may walk in
        assert (st.st_mode & 0o777, st.st_gid) == (0o710, base)
        assert os.stat(os.path.join(state_root, cid, "upper", "new")).st_uid == base
    finally:
        assert mc("delete", cid, state_root=state_root).returncode == 0
    assert os.listdir(state_root) == [] and not mountpoints_under(str(walkable))
    # The id-mapped layer mounts are gone once the overlay is up: through a volume holding
    # the store, the layers are the host root's again, in a directory only it may enter
    # (layers/ is 0700: an image's setuid files and device nodes are no one else's).
    r = mc("run", "--rm", "--userns", "-v", "%s:/store" % store, "userns-test:1", "sh", "-c",
           "stat -c %u:%a /store/layers; for f in /store/layers/*/bin/busybox; do "
           "echo x >> $f && echo WROTE; done; grep -c ' /store/layers/' /proc/self/mountinfo",
           state_root=state_root, env=env)
    assert "WROTE" not in r.stdout and r.stdout.split()[:1] == ["65534:700"], \
        (r.stdout, r.stderr)
    assert "Permission denied" in r.stderr and r.stdout.split()[-1] == "0", r.stdout
    # Without overlayfs: a private copy, its owners mapped as the overlay would show them
    env["MINICONTAINER_NO_OVERLAY"] = "1"
    r = mc("run", "--rm", "--userns", "userns-test:1", "sh", "-c",
           "echo hi > /etc/new && cat /etc/new; stat -c %u:%g /etc /bin/busybox",
           state_root=state_root, env=env)
    assert (r.returncode, r.stdout) == (0, "hi\n0:0\n0:0\n"), r.stderr
    assert "private copy" in r.stderr and os.listdir(state_root) == []


def test_userns_with_an_image_of_many_layers(registry, image_rootfs, walkable):
    """Id-mapped layers named through the short links that many layers need."""
    from fixtures_registry import Image, dir_layer, entry, run_pull, tar_layer
    store, state_root = str(walkable / "store"), str(walkable / "state")
    layers = [dir_layer(image_rootfs)] + [
        tar_layer([entry("top", data=b"%d\n" % i)], compression=None) for i in range(80)]
    registry.client.push_image("userns/many", "v", Image(layers))
    r = run_pull("-q", "%s/userns/many:v" % registry.host, store=store)
    assert r.returncode == 0, r.stderr
    r = mc("run", "--rm", "--userns", "%s/userns/many:v" % registry.host, "sh", "-c",
           "cat /top; stat -c %u /top; echo x > /etc/x && echo written",
           state_root=state_root, env=dict(os.environ, MINICONTAINER_STORE=store))
    assert (r.returncode, r.stdout) == (0, "79\n0\nwritten\n"), r.stderr
    assert os.listdir(state_root) == [] and not mountpoints_under(str(walkable))


def test_userns_without_maps_is_a_config_error(walkable_rootfs, state_root, tmp_path):
    bundle = write_bundle(tmp_path / "bundle", ["sh"], rootfs=walkable_rootfs,
                          edit=lambda c: c["linux"]["namespaces"].append({"type": "user"}))
    r = mc("run", "--bundle", bundle, new_id("usm"), state_root=state_root)
    assert r.returncode != 0 and "uidMappings" in r.stderr and "Traceback" not in r.stderr
    assert not os.listdir(state_root)


def test_userns_rootfs_out_of_reach_is_a_clear_error(busybox_rootfs, state_root):
    # pytest's tmp dirs are 0700: the mapped root (host uid 100000) cannot walk to them.
    r = mc("run", "--rm", "--name", new_id("usr"), "--userns", "--rootfs", busybox_rootfs, "--",
           "true", state_root=state_root)
    assert r.returncode == 125 and "may not enter" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not os.listdir(state_root)


@pytest.fixture
def hostile_rootfs(walkable_rootfs, tmp_path):
    """A rootfs whose /proc, /dev, /sys and a volume's destination are symlinks out of it,
    absolute and through `..`: resolved as the container sees them, they stay inside."""
    outside = tmp_path / "outside"
    for name in ("proc", "dev", "sys", "vol"):
        (outside / name).mkdir(parents=True)
    for name, target in (("proc", "../../../../../../%s/proc" % outside),
                         ("dev", "%s/dev" % outside), ("sys", "../../../..%s/sys" % outside),
                         ("data", "%s/vol" % outside)):
        path = os.path.join(walkable_rootfs, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        os.symlink(target, path)
    return walkable_rootfs, outside


def test_symlinks_out_of_the_rootfs_mount_nothing_on_the_host(hostile_rootfs, state_root,
                                                              volume):
    rootfs, outside = hostile_rootfs
    before = mountpoints_under(str(outside))
    out = ok(mc("run", "--rm", "--name", new_id("sym"), "--rootfs", rootfs,
                "-v", "%s:/data" % volume, "--",
                "sh", "-c", "ls /proc | grep -c '^[0-9]'; ls /dev/null; ls /data",
                state_root=state_root))
    assert "/dev/null" in out and "mine" in out  # the mounts happened, inside
    assert before == [] and mountpoints_under(str(outside)) == []
    for name in ("proc", "dev", "sys", "vol"):  # nothing was made outside either
        assert os.listdir(outside / name) == [], name
