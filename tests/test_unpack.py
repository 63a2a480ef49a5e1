"""unpack_layer: file types and metadata, whiteouts, compression, and hostile layers."""
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import time

import pytest

from conftest import SHARED_DATA, wait_for
from fixtures_registry import entry, tar_bytes, tree_snapshot
import store_writer

ALPINE = os.path.join(SHARED_DATA, "alpine-minirootfs-3.20.3-x86_64.tar.gz")


def unpack(entries, dest, compression=None):
    data = tar_bytes(entries)
    diff_id = store_writer.unpack_layer(
        io.BytesIO(gzip.compress(data) if compression else data), dest)
    import hashlib
    assert diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    return diff_id


@pytest.fixture
def rootfs(tmp_path):
    d = tmp_path / "rootfs"
    d.mkdir()
    return str(d)


def test_file_types_and_metadata(rootfs):
    unpack([
        entry("etc", "dir", mode=0o755),
        entry("etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n", mode=0o644, mtime=1234567890),
        entry("bin/su", data=b"\x7fELF", mode=0o4755, uid=0, gid=0),
        entry("usr/bin/wall", data=b"w", mode=0o2755, uid=0, gid=5),
        entry("tmp", "dir", mode=0o1777),
        entry("home/user", "dir", mode=0o750, uid=1000, gid=1000, mtime=1111111111),
        entry("home/user/.profile", data=b"x", uid=1000, gid=100),
        entry("bin/sh", "symlink", link="/bin/busybox", uid=1, gid=2),
        entry("etc/hard", "hardlink", link="etc/passwd"),
        entry("run/fifo", "fifo", mode=0o600),
        entry("dev/null", "char", mode=0o666, dev=(1, 3)),
        entry("dev/loop0", "block", mode=0o660, gid=6, dev=(7, 0)),
        entry("xattr-file", data=b"x", xattrs={"user.greeting": "hello"}),
    ], rootfs, compression="gzip")
    p = lambda name: os.path.join(rootfs, name)  # noqa: E731
    assert open(p("etc/passwd"), "rb").read().startswith(b"root:x")
    assert os.stat(p("etc/passwd")).st_mtime == 1234567890
    assert stat.S_IMODE(os.stat(p("bin/su")).st_mode) == 0o4755
    assert stat.S_IMODE(os.stat(p("usr/bin/wall")).st_mode) == 0o2755
    assert os.stat(p("usr/bin/wall")).st_gid == 5
    assert stat.S_IMODE(os.stat(p("tmp")).st_mode) == 0o1777
    st = os.stat(p("home/user"))
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1000, 0o750)
    assert st.st_mtime == 1111111111  # set after its contents were written
    assert (os.stat(p("home/user/.profile")).st_uid, os.stat(p("home/user/.profile")).st_gid) \
        == (1000, 100)
    assert os.readlink(p("bin/sh")) == "/bin/busybox"
    assert os.lstat(p("bin/sh")).st_uid == 1
    assert os.stat(p("etc/hard")).st_ino == os.stat(p("etc/passwd")).st_ino
    assert stat.S_ISFIFO(os.stat(p("run/fifo")).st_mode)
    assert os.stat(p("dev/null")).st_rdev == os.makedev(1, 3)
    assert stat.S_ISCHR(os.stat(p("dev/null")).st_mode)
    assert stat.S_ISBLK(os.stat(p("dev/loop0")).st_mode)
    assert os.getxattr(p("xattr-file"), "user.greeting") == b"hello"
    assert stat.S_ISDIR(os.stat(p("bin")).st_mode)  # implied parents are made


def test_file_capability_xattr_survives_chown(rootfs):
    # security.capability is binary and is cleared by chown: it must be set after ownership
    cap = b"\x01\x00\x00\x02\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    unpack([entry("ping", data=b"x", mode=0o755, uid=0, gid=0,
                  xattrs={"security.capability": cap.decode("utf-8", "surrogateescape")})],
           rootfs)
    assert os.getxattr(os.path.join(rootfs, "ping"), "security.capability") == cap


def test_layers_replace_and_whiteout(rootfs):
    unpack([entry("a/keep", data=b"1"), entry("a/gone", data=b"2"), entry("a/sub/x", data=b"3"),
            entry("b/old", data=b"4"), entry("c", "dir"), entry("c/f", data=b"5"),
            entry("d", data=b"file"), entry("e", "dir"), entry("e/inner", data=b"6")], rootfs)
    unpack([entry("a/.wh.gone"), entry("a/.wh.sub"),
            entry("b", "dir"), entry("b/.wh..wh..opq"), entry("b/new", data=b"7"),
            entry("c/.wh..wh..opq"),  # opaque with nothing of its own: empties c
            entry("d", "dir"), entry("d/now-a-dir", data=b"8"),  # file replaced by a dir
            entry("e", "symlink", link="/nowhere"),  # dir replaced by a symlink
            entry(".wh.never-existed")], rootfs)
    found = sorted(os.path.relpath(os.path.join(dp, n), rootfs)
                   for dp, dns, fns in os.walk(rootfs) for n in dns + fns)
    assert found == ["a", "a/keep", "b", "b/new", "c", "d", "d/now-a-dir", "e"]
    assert os.readlink(os.path.join(rootfs, "e")) == "/nowhere"


def test_opaque_marker_after_own_entries_keeps_them(rootfs):
    unpack([entry("dir/lower", data=b"x"), entry("dir/sub/lower", data=b"y")], rootfs)
    unpack([entry("dir", "dir"), entry("dir/upper", data=b"u"), entry("dir/sub", "dir"),
            entry("dir/sub/upper2", data=b"v"), entry("dir/.wh..wh..opq")], rootfs)
    found = sorted(os.path.relpath(os.path.join(dp, n), rootfs)
                   for dp, dns, fns in os.walk(rootfs) for n in dns + fns)
    assert found == ["dir", "dir/sub", "dir/sub/upper2", "dir/upper"]


def test_whiteouts_after_own_entries_below_keep_them(rootfs):
    # Whiteouts hide lower layers only, wherever they sit in the layer: what the layer put
    # below the path (its parent directories given by no entry of their own) stays.
    unpack([entry("p/old", data=b"o"), entry("p/q/x", data=b"x"), entry("o/lower", data=b"l"),
            entry("o/sub/lower", data=b"l")], rootfs)
    unpack([entry("p/q/f", data=b"f"), entry(".wh.p"),
            entry("o/sub/mine", data=b"m"), entry("o/.wh..wh..opq")], rootfs)
    found = sorted(os.path.relpath(os.path.join(dp, n), rootfs)
                   for dp, dns, fns in os.walk(rootfs) for n in dns + fns)
    assert found == ["o", "o/sub", "o/sub/mine", "p", "p/q", "p/q/f"]


@pytest.mark.skipif(not shutil.which("umoci"), reason="umoci is not installed")
def test_whiteouts_as_umoci_applies_them(rootfs, tmp_path):
    """The same two layers, in an OCI layout that umoci unpacks: the same tree."""
    layers = [
        [entry("wl", "dir"), entry("wl/old", data=b"o"), entry("wl/q", "dir"),
         entry("wl/q/x", data=b"x"), entry("we", "dir", mode=0o700), entry("we/old", data=b"o"),
         entry("wi", "dir"), entry("wi/old", data=b"o"), entry("o", "dir"),
         entry("o/lower", data=b"l"), entry("o/sub", "dir"), entry("o/sub/lower", data=b"l"),
         entry("gone", data=b"g"), entry("kept", "dir"), entry("kept/x", data=b"x")],
        [entry("wl/q/f", data=b"f"), entry(".wh.wl"),  # after its own entries below
         entry("we", "dir", mode=0o750), entry(".wh.we"),  # after its own directory
         entry(".wh.wi"), entry("wi/f", data=b"f"),  # before them
         entry("o/sub/mine", data=b"m"), entry("o/.wh..wh..opq"),
         entry("mine", data=b"m"), entry(".wh.mine"), entry(".wh.gone"), entry("kept/y")]]
    layout = tmp_path / "layout"
    (layout / "blobs" / "sha256").mkdir(parents=True)

    def blob(data, media_type):
        digest = hashlib.sha256(data).hexdigest()
        (layout / "blobs" / "sha256" / digest).write_bytes(data)
        return {"mediaType": media_type, "digest": "sha256:" + digest, "size": len(data)}
    tars = [tar_bytes(entries) for entries in layers]
    config = blob(json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(t).hexdigest() for t in tars]
    }}).encode(), "application/vnd.oci.image.config.v1+json")
    manifest = blob(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config, "layers": [blob(t, "application/vnd.oci.image.layer.v1.tar")
                                     for t in tars]}).encode(),
        "application/vnd.oci.image.manifest.v1+json")
    manifest["annotations"] = {"org.opencontainers.image.ref.name": "t"}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest]}))
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    bundle = tmp_path / "bundle"
    r = subprocess.run(["umoci", "unpack", "--image", "%s:t" % layout, str(bundle)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for entries in layers:
        unpack(entries, rootfs)

    def tree(root):
        return sorted((os.path.relpath(os.path.join(dp, n), root),
                       os.lstat(os.path.join(dp, n)).st_mode)
                      for dp, dns, fns in os.walk(root) for n in dns + fns)
    ours = tree(rootfs)
    assert ours == tree(bundle / "rootfs")
    assert [path for path, _ in ours] == [
        "kept", "kept/x", "kept/y", "mine", "o", "o/sub", "o/sub/mine", "we", "wi", "wi/f",
        "wl", "wl/q", "wl/q/f"]


def test_whiteout_spares_same_layer_file(rootfs):
    unpack([entry("x", data=b"new"), entry(".wh.x")], rootfs)
    assert open(os.path.join(rootfs, "x"), "rb").read() == b"new"


def test_overwrite_never_writes_through_links(rootfs, tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"original")
    # a symlink to a host file, then a regular file of the same name: the symlink is replaced
    unpack([entry("s", "symlink", link=str(victim)), entry("s", data=b"mine")], rootfs)
    assert victim.read_bytes() == b"original"
    assert open(os.path.join(rootfs, "s"), "rb").read() == b"mine"
    # a hardlinked pair: rewriting one name must not change the other
    unpack([entry("f", data=b"one"), entry("g", "hardlink", link="f")], rootfs)
    unpack([entry("g", data=b"two")], rootfs)
    assert open(os.path.join(rootfs, "f"), "rb").read() == b"one"


@pytest.mark.parametrize("compression", ["gzip", "zstd", "zstd-program", "bzip2", "xz", None])
def test_compressions(rootfs, compression, monkeypatch):
    data = tar_bytes([entry("hello", data=b"world" * 1000)])
    if compression == "gzip":
        blob = gzip.compress(data)
    elif compression and compression.startswith("zstd"):
        blob = subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True,
                              check=True).stdout
        if compression == "zstd-program":  # no module: the zstd program is the fallback
            monkeypatch.setitem(sys.modules, "compression.zstd", None)
    elif compression == "bzip2":
        import bz2
        blob = bz2.compress(data)
    elif compression == "xz":
        import lzma
        blob = lzma.compress(data)
    else:
        blob = data
    import hashlib
    assert store_writer.unpack_layer(io.BytesIO(blob), rootfs) == \
        "sha256:" + hashlib.sha256(data).hexdigest()
    assert open(os.path.join(rootfs, "hello"), "rb").read() == b"world" * 1000


def test_zstd_without_any_decoder_is_a_clear_error(rootfs, monkeypatch):
    blob = subprocess.run(["zstd", "-q", "-c"], input=tar_bytes([entry("x")]),
                          capture_output=True, check=True).stdout
    monkeypatch.setitem(sys.modules, "compression.zstd", None)
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(store_writer.UnpackError, match="zstd"):
        store_writer.unpack_layer(io.BytesIO(blob), rootfs)


def test_truncated_and_corrupt_gzip(rootfs):
    blob = gzip.compress(tar_bytes([entry("big", data=os.urandom(200000))]))
    with pytest.raises(store_writer.UnpackError, match="truncated"):
        store_writer.unpack_layer(io.BytesIO(blob[:len(blob) // 2]), rootfs)
    bad = bytearray(blob)
    bad[len(bad) // 2] ^= 0xFF
    with pytest.raises(store_writer.UnpackError):
        store_writer.unpack_layer(io.BytesIO(bytes(bad)), rootfs)


@pytest.mark.skipif(not os.path.exists(ALPINE), reason="no Alpine minirootfs in ../shared/data")
def test_alpine_matches_gnu_tar(tmp_path):
    ours, theirs = tmp_path / "ours", tmp_path / "tar"
    ours.mkdir()
    theirs.mkdir()
    store_writer.unpack_layer(ALPINE, str(ours))
    subprocess.run(["tar", "-xzf", ALPINE, "-C", str(theirs), "--numeric-owner",
                    "--xattrs"], check=True)

    def describe(root):
        out = {}
        for dp, dns, fns in os.walk(root):
            for n in dns + fns:
                full = os.path.join(dp, n)
                st = os.lstat(full)
                out[os.path.relpath(full, root)] = (
                    st.st_mode, st.st_uid, st.st_gid, st.st_nlink,
                    int(st.st_mtime) if not stat.S_ISLNK(st.st_mode) else 0,
                    os.readlink(full) if stat.S_ISLNK(st.st_mode) else
                    open(full, "rb").read() if stat.S_ISREG(st.st_mode) else None)
        return out
    a, b = describe(ours), describe(theirs)
    assert len(a) > 500
    assert a == b


# ---- hostile layers ----

def hostile_layers(outside):
    """name -> list of layers (each a list of entries) that try to reach `outside`."""
    up = "../" * 30
    rel = up + outside.lstrip("/")
    return {
        "dotdot": [[entry(rel + "/pwned", data=b"x")]],
        "dotdot-inside": [[entry("a/../../pwned", data=b"x")]],
        "absolute": [[entry(outside + "/pwned", data=b"x")]],
        "symlink-absolute": [[entry("evil", "symlink", link=outside),
                              entry("evil/pwned", data=b"x")]],
        "symlink-relative": [[entry("evil", "symlink", link=rel),
                              entry("evil/pwned", data=b"x")]],
        "symlink-earlier-layer-absolute": [[entry("evil", "symlink", link=outside)],
                                           [entry("evil/pwned", data=b"x")]],
        "symlink-earlier-layer-relative": [[entry("d", "dir"),
                                            entry("d/evil", "symlink", link="../" + rel)],
                                           [entry("d/evil/sub/pwned", data=b"x")]],
        "symlink-dir-then-mkdir": [[entry("evil", "symlink", link=outside)],
                                   [entry("evil/newdir", "dir")]],
        "hardlink-absolute": [[entry("l", "hardlink", link=outside + "/victim")]],
        "hardlink-dotdot": [[entry("l", "hardlink", link=rel + "/victim")]],
        "hardlink-through-symlink": [[entry("evil", "symlink", link=outside),
                                      entry("l", "hardlink", link="evil/victim")]],
        "whiteout-dotdot": [[entry(rel + "/.wh.victim")]],
        "whiteout-through-symlink": [[entry("evil", "symlink", link=outside)],
                                     [entry("evil/.wh.victim")]],
        "opaque-through-symlink": [[entry("evil", "symlink", link=outside)],
                                   [entry("evil/.wh..wh..opq")]],
        "whiteout-of-parent": [[entry("d/.wh...")]],
        "too-deep": [[entry("a/" * 300 + "f", data=b"x")]],
    }


@pytest.fixture
def outside(tmp_path):
    d = tmp_path / "outside"
    d.mkdir()
    (d / "victim").write_bytes(b"original")
    return str(d)


@pytest.mark.parametrize("case", sorted(hostile_layers("/x")))
def test_hostile_layer_is_refused(case, rootfs, outside):
    before = tree_snapshot(outside)
    layers = hostile_layers(outside)[case]
    expected = ("symlinks are never followed" if "symlink" in case else
                "'\\.\\.'|absolute|whiteout must name|too deep")
    with pytest.raises(store_writer.UnpackError, match="refusing entry") as err:
        for i, layer in enumerate(layers):
            store_writer.unpack_layer(io.BytesIO(tar_bytes(layer)), rootfs, f"layer {i + 1}")
    assert re.search(expected, str(err.value))
    assert tree_snapshot(outside) == before
    assert os.stat(os.path.join(outside, "victim")).st_nlink == 1
    assert not os.path.exists(os.path.join(os.path.dirname(rootfs), "pwned"))


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_tar_formats_long_names_and_big_ids(rootfs, fmt):
    long_dir = "d" * 90 + "/" + "e" * 60
    name = long_dir + "/" + "f" * 99 if fmt != tarfile.USTAR_FORMAT else long_dir + "/f"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = 3, 0o640, 1600000000
        info.uid = 3000000 if fmt != tarfile.USTAR_FORMAT else 4000  # GNU: base-256
        tar.addfile(info, io.BytesIO(b"abc"))
        if fmt != tarfile.USTAR_FORMAT:
            link = tarfile.TarInfo("l")
            link.type, link.linkname = tarfile.SYMTYPE, "t" * 150
            tar.addfile(link)
    store_writer.unpack_layer(io.BytesIO(buf.getvalue()), rootfs)
    st = os.stat(os.path.join(rootfs, name))
    assert (st.st_size, stat.S_IMODE(st.st_mode), st.st_mtime) == (3, 0o640, 1600000000)
    assert st.st_uid == (3000000 if fmt != tarfile.USTAR_FORMAT else 4000)
    if fmt != tarfile.USTAR_FORMAT:
        assert os.readlink(os.path.join(rootfs, "l")) == "t" * 150


def test_damaged_tar_is_an_error_not_an_early_end(rootfs):
    data = bytearray(tar_bytes([entry("a", data=b"1" * 600), entry("b", data=b"2")]))
    bad = bytes(data[:1536]) + b"garbage!" + bytes(data[1544:])  # in the second header
    with pytest.raises(store_writer.UnpackError, match="checksum"):
        store_writer.unpack_layer(io.BytesIO(bad), rootfs)
    with pytest.raises(store_writer.UnpackError, match="truncated"):
        store_writer.unpack_layer(io.BytesIO(bytes(data[:800])), rootfs)


@pytest.mark.parametrize("pax, words", [
    ({"mtime": "1e400"}, "cannot convert float infinity"), ({"mtime": "1e20"}, "out of range"),
    ({"uid": "-5"}, ""), ({"uid": "99999999999999"}, "")])
def test_pax_values_no_system_call_takes_are_the_layers_fault(rootfs, pax, words):
    """A pax mtime or uid out of every range: the layer's error (UnpackError, one line),
    not an OverflowError (a traceback, 42 lines through an unpacking process)."""
    info, data = entry("f", data=b"x")
    info.pax_headers = pax
    with pytest.raises(store_writer.UnpackError, match="layer: .*" + words):
        store_writer.unpack_layer(io.BytesIO(tar_bytes([(info, data)])), rootfs,
                                  layer_name="layer")


def test_a_huge_pax_header_is_refused_unread(rootfs):
    """A pax header is read whole: one of 1 GiB of zeros is 1 MiB of gzip, and took 1 GiB of
    memory. More than 1 MiB of it is the layer's error."""
    header = tarfile.TarInfo("././@PaxHeader")
    header.type, header.size = tarfile.XHDTYPE, 64 << 20
    raw = header.tobuf(format=tarfile.USTAR_FORMAT) + bytes(512)  # its data cut short
    with pytest.raises(store_writer.UnpackError, match="a pax header of 67108864 bytes"):
        store_writer.unpack_layer(io.BytesIO(raw), rootfs)


def test_stop_ends_an_unpack_before_its_next_entry(rootfs, monkeypatch):
    """Pull's Ctrl-C: what is decompressed already (here the whole layer) is not unpacked
    once stop is set; it is set after the third entry is written."""
    import threading
    stop = threading.Event()
    written = []
    real_entry = store_writer._Unpacker.entry

    def entry_then_count(self, reader, member):
        real_entry(self, reader, member)
        written.append(member)
        if len(written) == 3:
            stop.set()
    monkeypatch.setattr(store_writer._Unpacker, "entry", entry_then_count)
    data = tar_bytes([entry(f"f{i}", data=b"x") for i in range(100)])
    with pytest.raises(store_writer.UnpackError, match="^layer: cancelled$"):
        store_writer.unpack_layer(io.BytesIO(data), rootfs, stop=stop)
    assert sorted(os.listdir(rootfs)) == ["f0", "f1", "f2"]


# ---- unpacking in forked processes (pull's UnpackProcesses) ----

def _children(pid):
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


@pytest.fixture
def processes():
    # Forked while pytest may have threads (the session's token registry serves from one):
    # they wait in select() holding no lock, so the children are sound; pull.py itself
    # forks only while it has no other thread (tests/test_pull.py, test_pull_terminal.py).
    ps = store_writer.UnpackProcesses(2)
    yield ps
    ps.close(kill=True)
    assert not set(p.pid for p in ps.all) & set(_children(os.getpid()))  # all reaped


def test_unpack_processes_unpack_as_this_process_does(processes, tmp_path):
    layer = tar_bytes([entry("etc", "dir", mode=0o750), entry("etc/motd", data=b"hi\n"),
                       entry("usr/lib/deep/f", data=b"x" * 300000, mode=0o600, uid=7),
                       entry("usr/bin/sh", "symlink", link="busybox"), entry(".wh.gone"),
                       entry("mine", data=b"m"), entry(".wh.mine")])
    path = tmp_path / "layer.tar.gz"
    path.write_bytes(gzip.compress(layer))
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    implicit = []
    want = store_writer.unpack_layer(str(path), str(here), overlay=True, implicit=implicit)
    seen = []
    assert processes.unpack(str(path), str(there), "layer", seen.append) == (want, implicit)
    assert implicit == [(), ("usr",), ("usr", "bin"), ("usr", "lib"), ("usr", "lib", "deep")]
    assert tree_snapshot(str(there)) == tree_snapshot(str(here))
    assert os.stat(there / "usr/lib/deep/f").st_uid == 7
    assert seen and seen == sorted(seen) and seen[-1] == path.stat().st_size
    assert processes.all[0].pid in _children(os.getpid())  # a process of ours did it
    # close() ends them once their jobs' pipe ends: each holds none of the others' pipes
    import threading
    closing = threading.Thread(target=processes.close)
    closing.start()
    closing.join(10)
    ended = not closing.is_alive()
    processes.kill()
    closing.join()
    assert ended, "close() waited for a process that never ended"


def test_unpack_process_tells_a_hostile_layer_and_goes_on(processes, tmp_path):
    bad, good = tmp_path / "bad.tar", tmp_path / "good.tar"
    bad.write_bytes(tar_bytes([entry("../escape", data=b"x")]))
    good.write_bytes(tar_bytes([entry("ok", data=b"fine")]))
    for i in range(3):  # every process, each after its failure, still works
        (tmp_path / f"d{i}").mkdir()
        with pytest.raises(store_writer.UnpackError, match="^layer 1: refusing entry"):
            processes.unpack(str(bad), str(tmp_path / f"d{i}"), "layer 1")
        (tmp_path / f"e{i}").mkdir()
        processes.unpack(str(good), str(tmp_path / f"e{i}"), "layer 2")
        assert (tmp_path / f"e{i}/ok").read_bytes() == b"fine"
    assert not (tmp_path / "escape").exists()
    with pytest.raises(store_writer.UnpackError, match="^layer 3: .*No such file"):
        processes.unpack(str(tmp_path / "missing"), str(tmp_path / "d0"), "layer 3")


def test_killed_unpack_processes_fail_their_callers(processes, tmp_path):
    layer = tmp_path / "layer.tar"
    layer.write_bytes(tar_bytes([entry("f", data=b"x")]))
    processes.kill()
    for i in range(2):
        with pytest.raises(store_writer.UnpackError, match="the unpacking process ended"):
            processes.unpack(str(layer), str(tmp_path), f"layer {i}")


def gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] == "Z"  # dead, not reaped yet
    except FileNotFoundError:
        return True


def test_unpack_processes_ignore_ctrl_c_and_die_with_their_parent(tmp_path):
    """Ctrl-C reaches the whole process group: pull takes it and kills its processes, which
    ignore it (no traceback of theirs on the terminal); a pull killed outright takes them
    down with it (PR_SET_PDEATHSIG), even one that is in the middle of a layer (here: one
    that waits for the rest of it, read from a FIFO)."""
    fifo = str(tmp_path / "layer")
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR)  # held open: the layer never ends
    os.write(writer, gzip.compress(tar_bytes([entry("f", data=b"x")]))[:20])
    os.mkdir(tmp_path / "dest")
    script = ("import signal, sys; sys.path[:0] = %r; import store_writer; "
              "signal.signal(signal.SIGINT, signal.default_int_handler); "  # as on a terminal
              "ps = store_writer.UnpackProcesses(2); "
              "print(*[p.pid for p in ps.all], flush=True); "
              "ps.unpack(%r, %r, 'layer')"
              % ([os.path.dirname(store_writer.__file__)], fifo, str(tmp_path / "dest")))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2 and sorted(pids) == sorted(_children(proc.pid))
        wait_for(lambda: any(os.path.realpath(f"/proc/{pids[0]}/fd/{fd}") == fifo
                             for fd in os.listdir(f"/proc/{pids[0]}/fd")),
                 what="the first process reading the layer")
        for pid in pids:
            os.kill(pid, signal.SIGINT)
        time.sleep(0.2)
        assert not any(gone(p) for p in pids)  # SIGINT ignored
        proc.kill()
        proc.wait()

        wait_for(lambda: all(gone(p) for p in pids), timeout=10,
                 what="the unpacking processes ending with their parent")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(writer)  # (a process still reading it then ends)
    assert proc.stderr.read() == ""  # (read once they are gone: they hold it too)


def test_an_unpacking_process_left_mid_layer_takes_no_other(tmp_path):
    """report() failing (pull's progress on a closed stdout, `pull | head`) leaves its
    process in the middle of a layer: its next answers would be that layer's, so it is
    ended, and a later layer given to it fails instead of getting the first one's digest."""
    first, second = tmp_path / "first.tar", tmp_path / "second.tar"
    first.write_bytes(tar_bytes([entry(f"f{i}", data=os.urandom(4096)) for i in range(200)]))
    second.write_bytes(tar_bytes([entry("other", data=b"x")]))
    for d in ("a", "b"):
        (tmp_path / d).mkdir()

    def closed_stdout(n):
        raise BrokenPipeError(32, "Broken pipe")
    ps = store_writer.UnpackProcesses(1)
    try:
        with pytest.raises(BrokenPipeError):
            ps.unpack(str(first), str(tmp_path / "a"), "layer 1", closed_stdout)
        with pytest.raises(store_writer.UnpackError, match="^layer 2: the unpacking process "
                                                           "ended$"):
            ps.unpack(str(second), str(tmp_path / "b"), "layer 2")
    finally:
        ps.close(kill=True)


def test_unpack_processes_keep_a_launchers_freeze():
    """minicontainer's launcher freezes what it loaded (gc.freeze); forking the unpacking
    processes freezes and thaws around the forks, but must not thaw what was frozen before."""
    import gc
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        store_writer.UnpackProcesses(1).close()
        # A thaw leaves none frozen; meanwhile a frozen object may die (the registry
        # fixture's thread frees some): the count may fall by a few, not to nothing.
        assert gc.get_freeze_count() > frozen // 2
    finally:
        gc.unfreeze()


def test_ctrl_c_while_unpacking_processes_are_forked(tmp_path):
    """A SIGINT that comes right after a fork, in the parent and in the child (sent there by
    fork hooks): the parent's KeyboardInterrupt comes once all are recorded, which ends and
    reaps them; no child runs the caller's code."""
    script = (
        "import os, signal, sys; sys.path[:0] = %r; import store_writer\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "os.register_at_fork(after_in_parent=lambda: os.kill(os.getpid(), signal.SIGINT),\n"
        "                    after_in_child=lambda: os.kill(os.getpid(), signal.SIGINT))\n"
        "try:\n"
        "    store_writer.UnpackProcesses(3)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted in', os.getpid(), flush=True)\n"
        "with open('/proc/self/task/%%d/children' %% os.getpid()) as f:\n"
        "    print('children:', f.read().split(), flush=True)\n"
        % [os.path.dirname(store_writer.__file__)])
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("interrupted in ") and lines[1:] == ["children: []"], r.stdout
    assert r.stderr == ""
