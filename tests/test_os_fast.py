"""minicontainer.os (posix's functions and os.path's, without importing os on the hot path:
1.4 ms of every call) must do what os and posixpath do; the runtime's calls must not import
os; the shell line must still find the module through a symlink."""
import os
import posix
import posixpath
import re
import subprocess
import sys

import pytest

import minicontainer as mc
from conftest import RUNTIME, write_bundle

PATHS = ["", "/", "//", "///", "a", "a/", "/a", "a/b", "a//b", "/a/b/", "//a/b", "///a/b",
         ".", "..", "./a", "a/.", "a/..", "a/../..", "/..", "/../a", "../a/./b/../c",
         "a/b/../../..", "/a/./b//c/", "dir/sub/", "x.tar.gz", "..a", "a..", ".hidden"]


@pytest.mark.parametrize("p", PATHS + [p.encode() for p in PATHS])
def test_path_functions_as_posixpath(p):
    for name in ("split", "dirname", "basename", "isabs", "normpath", "abspath"):
        assert getattr(mc.os.path, name)(p) == getattr(posixpath, name)(p), (name, p)


@pytest.mark.parametrize("parts", [("a", "b"), ("a/", "b"), ("a", "/b"), ("", "b"),
                                   ("a", ""), ("/", "a", "b/", "c"), ("a", "b", "/c", "d"),
                                   ("", ""), ("a//", "b"), ("/a", "", "b")])
def test_join_as_posixpath(parts):
    assert mc.os.path.join(*parts) == posixpath.join(*parts)
    encoded = [p.encode() for p in parts]
    assert mc.os.path.join(*encoded) == posixpath.join(*encoded)
    with pytest.raises(TypeError):
        mc.os.path.join(parts[0], b"x")


def test_path_like_arguments(tmp_path):
    assert mc.os.path.join(tmp_path, "x") == os.path.join(tmp_path, "x")
    assert mc.os.path.dirname(tmp_path / "x") == str(tmp_path)
    assert mc.os.path.isdir(tmp_path) and mc.os.path.realpath(tmp_path) == \
        os.path.realpath(tmp_path)


def outcome(fn, *args):
    try:
        return fn(*args)
    except Exception as e:
        return type(e)


def test_file_tests_and_realpath_as_os(tmp_path, monkeypatch):
    """exists, lexists, isdir, isfile, islink, realpath and samestat on what the file
    system holds: directories, files, symlinks to them, dangling and looping symlinks,
    relative links through .., paths that do not exist, and a NUL (ValueError in os)."""
    (tmp_path / "d" / "e").mkdir(parents=True)
    (tmp_path / "f").write_text("x")
    os.symlink("d", tmp_path / "to-d")
    os.symlink("../f", tmp_path / "d" / "up-f")
    os.symlink("nowhere", tmp_path / "dangling")
    os.symlink("loop", tmp_path / "loop")
    os.symlink(tmp_path / "to-d", tmp_path / "to-to-d")
    os.mkfifo(tmp_path / "fifo")
    monkeypatch.chdir(tmp_path)
    names = ["d", "d/e", "f", "to-d", "to-d/e", "d/up-f", "dangling", "dangling/x", "loop",
             "to-to-d/e/../..", "fifo", "missing", "missing/../f", "d/../f", "f/", "d/",
             "to-d/", "", "a\0b", "/proc/self", "/"]
    for name in names:
        for p in (name, str(tmp_path / name) if name else name):
            for test in ("exists", "lexists", "isdir", "isfile", "islink", "realpath"):
                assert outcome(getattr(mc.os.path, test), p) == \
                    outcome(getattr(os.path, test), p), (test, p)
    a, b = os.stat(tmp_path / "d"), os.stat(tmp_path / "to-d")
    assert mc.os.path.samestat(a, b) and not mc.os.path.samestat(a, os.stat(tmp_path / "f"))


def test_makedirs_as_os(tmp_path):
    target = tmp_path / "a" / "b" / "c"
    mc.os.makedirs(str(target), 0o700)
    assert target.is_dir() and (target.stat().st_mode & 0o777) == 0o700
    with pytest.raises(FileExistsError):
        mc.os.makedirs(str(target))
    mc.os.makedirs(str(target) + "/", exist_ok=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError):
        mc.os.makedirs(str(tmp_path / "file"), exist_ok=True)  # as os: not a directory
    with pytest.raises(NotADirectoryError):
        mc.os.makedirs(str(tmp_path / "file" / "x"))
    mc.os.makedirs(str(tmp_path / "new" / "."))
    os.makedirs(str(tmp_path / "new2" / "."))
    assert (tmp_path / "new").is_dir() and (tmp_path / "new2").is_dir()


def test_the_rest_is_os_own():
    """posix's functions are os's own objects; environ, walk and the like come from os
    (posix.environ is the environment at start, in bytes); getenv follows os.environ once
    os is imported."""
    assert mc.os.open is os.open and mc.os.stat is os.stat and mc.os.fork is os.fork
    assert mc.os.environ is os.environ and mc.os.walk is os.walk
    assert mc.os.devnull == os.devnull and mc.os.SEEK_CUR == os.SEEK_CUR
    os.environ["MC_OS_FAST_PROBE"] = "é x"
    try:
        assert mc.getenv("MC_OS_FAST_PROBE") == "é x" and mc.settings() is not None
    finally:
        del os.environ["MC_OS_FAST_PROBE"]
    assert mc.getenv("MC_OS_FAST_PROBE", "none") == "none"


def test_what_the_module_calls_of_os_is_posixs_without_importing_os():
    """Every os.NAME in the module that posix has (os._exit too, which ends every call and
    every child) is served without importing os: in a child after pivot_root or setns,
    importing it works only where the interpreter has os frozen in (3.11+)."""
    with open(mc.__file__) as f:
        used = set(re.findall(r"\bos\.([A-Za-z_]\w*)", f.read()))
    served = set(vars(mc.os)) | set(dir(type(mc.os)))
    assert "_exit" in used and not {n for n in used if hasattr(posix, n)} - served - \
        {"environ"}


@pytest.mark.needs_root
def test_the_runtimes_calls_do_not_import_os(busybox_rootfs, tmp_path):
    """run, create, start, state, exec, kill, delete and list import no os (nor
    posixpath, nor _collections_abc): the runtime process's modules at its end; and the
    environment is read without it (MINICONTAINER_TRACE)."""
    bundle = write_bundle(tmp_path / "b", ["sleep", "100"], rootfs=busybox_rootfs)
    run_bundle = write_bundle(tmp_path / "r", ["true"], rootfs=busybox_rootfs)
    probe = """
import sys
sys.path.insert(0, %r)
sys.argv = ["minicontainer.py", "--root", %r] + sys.argv[1:]
import minicontainer
try:
    code = minicontainer.main()
finally:
    sys.stderr.write("imported: " + repr(sorted(
        {"os", "posixpath", "_collections_abc", "_socket"} & set(sys.modules))) + "\\n")
sys.exit(code)
""" % (os.path.dirname(RUNTIME), str(tmp_path / "state"))
    cid = "osfast%d" % os.getpid()
    calls = [(run_bundle, ["run", cid + "r"]), (bundle, ["create", cid]),
             (bundle, ["start", cid]), (bundle, ["state", cid]), (bundle, ["list"]),
             (bundle, ["exec", cid, "true"]), (bundle, ["kill", cid, "KILL"]),
             (bundle, ["delete", "-f", cid])]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "MINICONTAINER_TRACE": "1"}
    try:
        for cwd, args in calls:
            with open(tmp_path / "out", "w+") as out:  # a file: create's init keeps it
                r = subprocess.run([sys.executable, "-I", "-S", "-c", probe] + args, cwd=cwd,
                                   stdout=out, stderr=subprocess.STDOUT, env=env,
                                   stdin=subprocess.DEVNULL, timeout=60)
                out.seek(0)
                said = out.read()
            assert r.returncode == 0, (args, said)
            assert "imported: []" in said and "minicontainer: trace" in said, (args, said)
    finally:
        subprocess.run([RUNTIME, "--root", str(tmp_path / "state"), "delete", "-f", cid],
                       capture_output=True)


def test_the_shell_line_finds_the_module_through_a_symlink(tmp_path):
    """Run through a symlink in another directory (as an engine's configured path may be),
    the shell line imports the module beside the file the link leads to."""
    link = tmp_path / "runtime"
    os.symlink(RUNTIME, link)
    r = subprocess.run([str(link), "--version"], capture_output=True, text=True,
                       env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert r.returncode == 0 and mc.__version__ in r.stdout, r
    os.symlink(link, tmp_path / "runtime2")  # a chain of links
    r = subprocess.run([str(tmp_path / "runtime2"), "--version"], capture_output=True,
                       text=True, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    assert r.returncode == 0 and mc.__version__ in r.stdout, r
