"""The store as the runtime sees it: find_image, `images`, `rmi`, locking, progress output."""
import gzip
import json
import os
import subprocess
import sys
import threading
import time

import pytest

import minicontainer as mc
from conftest import mc as run_mc
from fixtures_registry import PULL, Image, entry, run_pull, tar_layer


@pytest.fixture
def two_images(registry, store):
    """Two pulled images sharing their first layer."""
    name = "shared/" + os.urandom(4).hex()
    base = tar_layer([entry("bin/x", data=b"base" * 1000)])
    one = Image([base, tar_layer([entry("one", data=b"1")])])
    two = Image([base, tar_layer([entry("two", data=b"2")])], fmt="docker")
    registry.client.push_image(name, "one", one)
    registry.client.push_image(name, "two", two)
    refs = [f"{registry.host}/{name}:one", f"{registry.host}/{name}:two"]
    for ref in refs:
        assert run_pull("-q", ref, store=store).returncode == 0
    return refs, one, two, base


def blobs(store):
    return set(os.listdir(os.path.join(store, "blobs", "sha256")))


def test_find_image_and_store_dir(two_images, store, monkeypatch):
    refs, one, two, base = two_images
    image = mc.find_image(refs[0], store)
    assert image.layers == [os.path.join(store, "layers", layer.diff_id[7:])
                            for layer in one.layers]
    assert image.rootfs is None  # no flat tree: containers overlay the layers
    assert open(mc.layers_lookup(image.layers, "/one")).read() == "1"
    assert image.config["Cmd"] == ["/bin/sh"]
    assert mc.find_image(image.digest[7:19], store).name == refs[0]  # by ID prefix
    assert mc.store_dir() == store  # $MINICONTAINER_STORE, set by the fixture
    assert mc.find_image(refs[1]).name == refs[1]
    monkeypatch.delenv("MINICONTAINER_STORE")
    assert mc.store_dir() == os.path.join(os.path.dirname(os.path.realpath(mc.__file__)),
                                          "images")
    with pytest.raises(mc.Error, match="no such image: nothere"):
        mc.find_image("nothere", store)


def test_may_name_is_true_for_every_form_that_finds_an_image(two_images, store):
    """A bundle's `run ID` looks ID up as an image only where may_name says it might be
    one: never false for what find_image finds."""
    refs, _, _, _ = two_images
    s = mc.ImageStore(store)
    digest = mc.find_image(refs[0], store).digest
    for ref in refs + [digest, digest[7:19], "sha256:" + digest[7:19]]:
        assert mc.find_image(ref, store) and s.may_name(ref), ref
    for ref in ("t1", "my-container", "zz"):
        assert not s.may_name(ref), ref


def test_images_lists_the_store(two_images, store):
    refs, one, two, base = two_images
    env = dict(os.environ, MINICONTAINER_STORE=store)
    r = run_mc("images", env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "PLATFORM", "CREATED", "SIZE"]
    repo = refs[0].rsplit(":", 1)[0]
    assert [line.split()[:2] for line in lines[1:]] == [[repo, "one"], [repo, "two"]]
    assert all("linux/amd64" in line for line in lines[1:])
    ids = run_mc("images", "-q", env=env).stdout.split()
    assert ids == [mc.find_image(ref, store).digest[7:19] for ref in refs]
    listed = [json.loads(line) for line in  # docker's: an object a line, its keys
              run_mc("images", "--format", "json", env=env).stdout.splitlines()]
    assert [(i["Repository"], i["Tag"], i["ID"]) for i in listed] == [
        (repo, "one", ids[0]), (repo, "two", ids[1])]


def test_rmi_removes_only_unshared_blobs(two_images, store):
    refs, one, two, base = two_images
    env = dict(os.environ, MINICONTAINER_STORE=store)
    first, second = (mc.find_image(ref, store) for ref in refs)
    r = run_mc("rmi", refs[0], env=env)
    assert r.returncode == 0, r.stderr
    assert f"Untagged: {refs[0]}" in r.stdout
    assert base.digest[7:] in blobs(store)  # still used by the second image
    assert one.layers[1].digest[7:] not in blobs(store)
    assert first.digest[7:] not in blobs(store)
    assert not os.path.exists(first.layers[1])
    assert os.path.isdir(first.layers[0])  # the base layer, which the second image uses
    assert mc.find_image(refs[1], store).layers == second.layers
    assert os.path.isfile(mc.layers_lookup(second.layers, "two"))
    skopeo = subprocess.run(["skopeo", "inspect", f"oci:{store}:{refs[1]}"],
                            capture_output=True, text=True)
    assert skopeo.returncode == 0, skopeo.stderr

    r = run_mc("rmi", "nope:nope", env=env)
    assert r.returncode == 1 and r.stderr.strip() == "minicontainer: no such image: nope:nope"

    r = run_mc("rmi", second.digest[7:19], env=env)  # by ID
    assert r.returncode == 0, r.stderr
    assert blobs(store) == set()
    assert os.listdir(os.path.join(store, "layers")) == []
    assert mc.ImageStore(store).entries() == []


def test_rmi_waits_for_a_running_pull(two_images, store):
    refs, *_ = two_images
    image = mc.find_image(refs[0], store)
    held, release = threading.Event(), threading.Event()

    def pull_holding_lock():  # what pull does for its whole run
        with mc.ImageStore(store).lock(False):
            held.set()
            release.wait(30)
    t = threading.Thread(target=pull_holding_lock)
    t.start()
    held.wait(10)
    proc = subprocess.Popen([sys.executable, mc.__file__, "rmi", refs[0]],
                            env=dict(os.environ, MINICONTAINER_STORE=store),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        assert proc.poll() is None  # blocked on the store lock
        assert os.path.isdir(image.layers[-1])
    finally:
        release.set()
        t.join()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert not os.path.exists(image.layers[-1])


@pytest.mark.needs_root
def test_rmi_refuses_to_delete_through_a_mount(two_images, store, tmp_path):
    refs, *_ = two_images
    image = mc.find_image(refs[0], store)
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    (host_dir / "precious").write_text("keep me")
    target = os.path.join(image.layers[-1], "mnt")
    os.makedirs(target, exist_ok=True)
    subprocess.run(["mount", "--bind", str(host_dir), target], check=True)
    try:
        r = run_mc("rmi", refs[0], env=dict(os.environ, MINICONTAINER_STORE=store))
        assert r.returncode == 1
        assert "is mounted inside it" in r.stderr
        assert (host_dir / "precious").read_text() == "keep me"
    finally:
        subprocess.run(["umount", target], check=True)


def test_progress_output(registry, store):
    name = "progress/" + os.urandom(4).hex()
    layer = tar_layer([entry("f", data=os.urandom(300000))])
    registry.client.push_image(name, "v", Image([layer]))
    ref = f"{registry.host}/{name}:v"
    # not a terminal: one line per state change, docker-style
    r = run_pull(ref, store=store)
    key = layer.digest[7:19]
    assert r.stdout.splitlines() == [
        f"v: Pulling from {name}", f"{key}: Pulling fs layer", f"{key}: Downloading",
        f"{key}: Verifying Checksum", f"{key}: Download complete", f"{key}: Extracting",
        f"{key}: Pull complete", f"Digest: {Image([layer]).digest}",
        f"Status: Downloaded newer image for {ref}", ref]
    assert "\x1b" not in r.stdout
    # a terminal: the layer line is redrawn in place with a bar
    other = store + "-tty"
    r = subprocess.run(["script", "-qec", f"{sys.executable} {PULL} --store {other} {ref}",
                        "/dev/null"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout
    assert "\x1b[" in r.stdout and "Pull complete" in r.stdout
    assert f"{key}: Downloading [" in r.stdout
    # -q: the reference only, as docker
    r = run_pull("-q", ref, store=store + "-q")
    assert (r.returncode, r.stdout, r.stderr) == (0, ref + "\n", "")


def test_the_stores_layers_are_its_owners_alone(tmp_path):
    """layers/ (and tmp/) are 0700: an image's layers may hold setuid-root programs and
    device nodes of any numbers (a pulled image's, as it says), which no other user of the
    host may reach (they were 0755). A store made before is mended when next written."""
    from store_writer import StoreWriter
    store = str(tmp_path / "store")
    StoreWriter(store).ensure_layout()
    for d in ("layers", "tmp"):
        assert os.stat(os.path.join(store, d)).st_mode & 0o777 == 0o700
        os.chmod(os.path.join(store, d), 0o755)
    StoreWriter(store).ensure_layout()
    assert [os.stat(os.path.join(store, d)).st_mode & 0o777 for d in ("layers", "tmp")] == \
        [0o700, 0o700]


def test_import_of_a_broken_gzip_is_one_line(tmp_path):
    """A tarball that starts as gzip and is not one whole (cut short, or garbage after the
    magic): one line and exit 1 (an EOFError's traceback before)."""
    importer = os.path.join(os.path.dirname(PULL), "import_image.py")
    for name, data in (("garbage.tgz", b"\x1f\x8bgarbage"),
                       ("cut.tgz", gzip.compress(b"x" * 100000)[:100])):
        (tmp_path / name).write_bytes(data)
        r = subprocess.run([sys.executable, importer, "--store", str(tmp_path / "store"),
                            str(tmp_path / name), "broken:1"], capture_output=True, text=True)
        assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
        assert r.stderr.startswith("import_image: %s: not a whole gzip file" % (tmp_path / name))
