"""The runtime's bytecode cached split (tools/bytecode.py, issue 12): what a start calls
loaded with the module, the rest on first call, from the cold file beside the cache."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import types

import pytest

import bytecode
from conftest import (RUNTIME, RUNTIME_COMMAND, mc, mc_bg, new_id, ok, wait_for,
                      wait_status, write_bundle)

pytestmark = pytest.mark.skipif(sys.version_info < (3, 11),
                                reason="split only from Python 3.11 (qualified names)")
TRACE = dict(os.environ, MINICONTAINER_TRACE="1")


def thawed(stderr):
    """(pid, function) of each `thaw:FUNCTION` step a traced runtime printed."""
    return [(int(line.split()[3]), line.split()[4][5:]) for line in stderr.splitlines()
            if line.startswith("minicontainer: trace ") and line.split()[4][:5] == "thaw:"]


def functions(code):
    """The module's functions and its classes' methods: qualified name -> code."""
    found = {}
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            if c.co_flags & bytecode.CO_NEWLOCALS:
                found[c.co_qualname] = c
            else:
                found.update(functions(c))
    return found


def is_stub(code):
    return code.co_names == ("_thaw",)  # its one name (others refer to _thaw, and more)


@pytest.fixture
def copy(tmp_path):
    """A copy of the runtime in a directory of its own, and its command line (the shell
    line's, as RUNTIME_COMMAND): the tests' own split cache is left alone."""
    path = tmp_path / "code" / "minicontainer.py"
    path.parent.mkdir()
    shutil.copy2(RUNTIME, path)
    return str(path), RUNTIME_COMMAND[:-1] + [str(path)]


def test_python_imports_the_split_cache():
    """The cache conftest wrote is the one Python takes: the engine's functions whole, the
    others stubs; a stub called does what its function does and is replaced by it."""
    probe = """
import sys
sys.path.insert(0, %r)
import minicontainer as m
stub = lambda f: f.__code__.co_names == ("_thaw",)
print(m.__cached__, stub(m.main), stub(m._go_string))
print(m._go_string([True, None, {"b": 1, "a": "x"}]))
print(stub(m._go_string))
""" % os.path.dirname(RUNTIME)
    out = subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True,
                         text=True, check=True).stdout.splitlines()
    cached, main_stub, cold_stub = out[0].split()
    assert cached == importlib.util.cache_from_source(RUNTIME)
    assert os.path.exists(cached[:-4] + ".cold")
    assert (main_stub, cold_stub) == ("False", "True")
    assert out[1:] == ["[true <nil> map[a:x b:1]]", "False"]


def test_stubs_have_their_functions_signatures():
    """Every stub takes its function's arguments as the function does (names, kinds, order):
    the defaults are the function object's, made by the module as ever."""
    with open(RUNTIME) as f:
        module = compile(f.read(), RUNTIME, "exec")
    whole, cold = functions(module), []
    split = functions(bytecode.split(module, bytecode.read_profile(), cold, 16))
    stubs = {name: code for name, code in split.items() if is_stub(code)}
    assert len(stubs) == len(cold) > 100
    for name, stub in stubs.items():
        real = whole[name]
        layout = ("co_argcount", "co_posonlyargcount", "co_kwonlyargcount", "co_name",
                  "co_firstlineno", "co_filename")
        assert [getattr(stub, a) for a in layout] == [getattr(real, a) for a in layout], name
        stars = bytecode.CO_VARARGS | bytecode.CO_VARKEYWORDS
        n = real.co_argcount + real.co_kwonlyargcount + \
            bool(real.co_flags & bytecode.CO_VARARGS) + \
            bool(real.co_flags & bytecode.CO_VARKEYWORDS)
        assert stub.co_varnames[:n] == real.co_varnames[:n], name
        assert stub.co_flags & stars == real.co_flags & stars, name
    # what the profile keeps whole stays whole
    assert not is_stub(split["main"])


def test_a_stub_finds_its_function_by_its_name(copy):
    """_thaw finds the function object of a stub where its qualified name says, for every
    kind there is (functions, methods, static, class and property functions, decorated
    ones), without looking through the whole module."""
    path, _ = copy
    bytecode.write(path, hot=set())
    probe = """
import sys
sys.path.insert(0, %r)
import minicontainer as m
stubs, seen = {}, set()
def walk(values):  # every function object the module holds, however held
    for value in values:
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, type) and value.__module__ == "minicontainer":
            walk(vars(value).values())
        elif isinstance(value, property):
            walk((value.fget, value.fset, value.fdel))
        elif isinstance(value, (staticmethod, classmethod)):
            walk((value.__func__,))
        elif callable(value) and hasattr(value, "__code__"):
            if value.__code__.co_names == ("_thaw",):
                stubs.setdefault(value.__code__, []).append(value)
            walk((getattr(value, "__wrapped__", None),))
walk(list(vars(m).values()))
print(len(stubs), all([m._function_of(code)] == found for code, found in stubs.items()))
""" % os.path.dirname(path)
    out = subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True,
                         text=True, check=True).stdout.split()
    assert int(out[0]) > 100 and out[1] == "True", out


def cold_functions(path):
    """The names of the ColdFunctions of the split cache beside path."""
    probe = "import sys; sys.path.insert(0, %r); import minicontainer as m; " \
        "print(*m._COLD_FUNCTIONS[0])" % os.path.dirname(path)
    return subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True,
                          text=True, check=True).stdout.split()


def test_cold_functions_stand_in_for_their_defs(copy):
    """With an empty profile, a function of the module's own that takes no defaults but
    constant positional ones, and that nothing names as the module is imported, is no
    function object but a ColdFunction (its def made NOPs, its code in the cold file); its
    first call, or any other use of it, loads the source's function (its defaults too) and
    puts it in its place."""
    path, _ = copy
    bytecode.write(path, hot=set())
    probe = """
import sys, types
sys.path.insert(0, %r)
import minicontainer as m
def where(qualname):  # the namespace it is in, and its name there
    owner, _, name = qualname.rpartition(".")
    return vars(getattr(m, owner) if owner else m), name
def held(qualname):
    space, name = where(qualname)
    return space[name]
names = m._COLD_FUNCTIONS[0]
kinds = sorted({type(held(n)).__name__ for n in names})
before = held("_valid_id")
said = [m._valid_id("abc"), m._valid_id("-abc")]
now = held("_valid_id")
print(len(names), kinds, "_valid_id" in names, said, type(now).__name__, before.function is now)
source, todo = {}, [compile(open(m.__file__).read(), m.__file__, "exec", optimize=2)]
while todo:  # (compiled as the cache is)
    code = todo.pop()
    source[code.co_qualname] = code
    todo.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
loaded = {n: getattr(held(n), "__code__") for n in names}  # (a use that loads them)
print(all(type(held(n)) is types.FunctionType and loaded[n].co_code == source[n].co_code
          and loaded[n].co_firstlineno == source[n].co_firstlineno for n in names))
# methods: bound as functions are, through an instance, and as plain functions through
# their class, the same ones
methods = [n for n in names if "." in n]
c = m.Cgroup.__new__(m.Cgroup)
print(len(methods), getattr(c, methods[0].split(".")[1]).__self__ is c if
      methods[0].startswith("Cgroup.") else None)
# and their defaults, as the module imported from its source has them
import importlib.util
sys.pycache_prefix, sys.dont_write_bytecode = "/dev/null/none", True
spec = importlib.util.spec_from_file_location("from_source", m.__file__)
whole = importlib.util.module_from_spec(spec)
spec.loader.exec_module(whole)
def of(module, qualname):
    owner, _, name = qualname.rpartition(".")
    return getattr(getattr(module, owner) if owner else module, name)
print(sum(bool(held(n).__defaults__) for n in names),
      all(held(n).__defaults__ == of(whole, n).__defaults__ for n in names))
""" % os.path.dirname(path)
    out = subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert out[0].split(" ", 1)[1] == \
        "['ColdFunction'] True [True, False] function True", out
    assert int(out[0].split()[0]) > 150 and out[1] == "True", out
    methods, bound = out[2].split()
    assert int(methods) > 50 and bound == "True", out
    defaulted, same = out[3].split()
    assert int(defaulted) > 20 and same == "True", out


def test_cold_functions_under_a_cold_file_of_another_build(copy):
    """A cold file of another build of the same source (bytecode.py run again, with another
    profile: its header, the source's, is the same) under a process that imported the cache
    before: at its ColdFunctions' index's offset lies anything (here an int), no index; they
    compile the source then, as stubs do."""
    path, _ = copy
    bytecode.write(path, hot=set())
    probe = """
import marshal, os, sys
sys.path.insert(0, %r)
import minicontainer as m
cold = m.__cached__[:-4] + ".cold"
with open(cold, "rb") as f:
    data = bytearray(f.read())
at, size = m._COLD_FUNCTIONS[2:4]
data[at:at + size] = marshal.dumps(42).ljust(size, b"N")
with open(cold + ".new", "wb") as f:
    f.write(data)
os.replace(cold + ".new", cold)
print(m._valid_id("abc"), m._valid_id("-abc"), type(vars(m)["_valid_id"]).__name__)
""" % os.path.dirname(path)
    done = subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True,
                          text=True)
    assert done.stdout.split() == ["True", "False", "function"], done.stderr


def test_a_cold_file_of_another_build_is_not_used(copy):
    """bytecode.py run again for the same source (another profile) writes a cold file whose
    header Python would take, and other code at the offsets that a process which imported
    the cache before knows: its build's id, which ends the header, differs, so that the
    process takes its stubs' and ColdFunctions' code from the source instead."""
    path, _ = copy
    bytecode.write(path, hot=set())
    probe = """
import sys
sys.path.insert(0, %r)
sys.path.insert(0, %r)
import minicontainer as m
import bytecode
before = m._open_cold_code()
bytecode.write(m.__file__, hot={"main", "_go_string"})
print(before is not None, m._open_cold_code() is None, m._go_string([True, None]),
      m._valid_id("abc"), m._valid_id("-abc"), type(vars(m)["_valid_id"]).__name__)
""" % (os.path.dirname(path), os.path.dirname(bytecode.__file__))
    done = subprocess.run([sys.executable, "-I", "-S", "-c", probe], capture_output=True,
                          text=True)
    assert done.stdout.split() == ["True", "True", "[true", "<nil>]", "True", "False",
                                   "function"], done.stderr


def test_only_defs_that_always_run_are_left_out():
    """A def in an if's body, or in a loop's, or named at import, or taking defaults made as
    it runs, stays a def (perhaps a stub): a ColdFunction would stand where the module
    would have had nothing, or another function."""
    source = """
import sys
_COLD_FUNCTIONS = ((), (), 0, 0, b"")
if sys.maxsize < 0:
    def in_an_if():
        pass
for n in range(2):
    def in_a_loop():
        return n
def named():
    pass
TABLE = {"f": named}
def defaulted(a=len("xy")):
    return a
def constant_defaults(a=1, b=None):
    return a
def always():
    pass
"""
    left = bytecode.leave_out(compile(source, "s.py", "exec"), set())[1]
    assert sorted(left) == ["always", "constant_defaults"]
    assert left["constant_defaults"][1] == (1, None)


def test_profile_names_functions_that_exist():
    """bytecode-hot.txt names functions of the module (a renamed function would fall out of
    it unseen: loaded on first call at every start)."""
    names = set()
    todo = [compile(open(RUNTIME).read(), RUNTIME, "exec")]
    while todo:
        code = todo.pop()
        names.add(code.co_qualname)
        todo.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    missing = bytecode.read_profile() - names
    assert not missing, "stale names in tools/bytecode-hot.txt (tools/bytecode.py " \
        "--profile rewrites it): %s" % sorted(missing)


@pytest.mark.needs_root
@pytest.mark.parametrize("mode", bytecode.profile_modes(),
                         ids=lambda mode: "v2-cgroupns" if mode[1] else "host")
def test_an_engines_calls_load_nothing_on_first_call(mode, busybox_rootfs, tmp_path,
                                                     state_root):
    """run, create, start, state, list, exec, kill and delete on a plain bundle call no stub,
    nor do state, kill and delete once it is gone, with the host's cgroups and with v2 and
    a cgroup namespace: the profile holds all they call (else tools/bytecode.py --profile,
    as root, renews it)."""
    env, cgroupns = mode
    env = dict(TRACE, **env)

    def edit(config):
        if cgroupns:
            config["linux"]["namespaces"].append({"type": "cgroup"})
    bundle = write_bundle(tmp_path / "b", ["sleep", "100"], edit=edit, rootfs=busybox_rootfs)
    cid = new_id()
    said = []
    r = mc_bg("create", "--bundle", bundle, cid, state_root=state_root, env=env)
    said.append(("create", r))
    try:
        for args in (["start", cid], ["state", cid], ["list"], ["exec", cid, "true"],
                     ["kill", cid, "KILL"]):
            said.append((args[0], mc(*args, state_root=state_root, env=env)))
        wait_status(cid, "stopped", state_root)
    finally:
        said.append(("delete", mc("delete", "-f", cid, state_root=state_root, env=env)))
    for command in ("state", "kill", "delete"):  # an engine's cleanup, the container gone
        gone = mc(command, cid, state_root=state_root, env=env)
        assert gone.returncode != 0 and not thawed(gone.stderr), (command, gone.stderr)
    run_bundle = write_bundle(tmp_path / "r", ["true"], edit=edit, rootfs=busybox_rootfs)
    said.append(("run", subprocess.run(RUNTIME_COMMAND + ["run", new_id()], cwd=run_bundle,
                                       capture_output=True, text=True, env=env)))
    for command, r in said:
        assert r.returncode == 0, (command, r.stderr)
        assert "trace" in r.stderr and not thawed(r.stderr), (command, thawed(r.stderr))


@pytest.mark.needs_root
def test_everything_cold_the_lifecycle_still_works(copy, busybox_rootfs, tmp_path, state_root):
    """With every function a stub (an empty profile), each is loaded where it is first
    called: in the runtime, in the init after pivot_root (a sysctl, a user, rlimits) and in
    exec's process after setns, where the cold file's path is gone: it was mapped before the
    fork."""
    path, command = copy
    stubs, _ = bytecode.write(path, hot=set())
    assert stubs > 500

    def edit(config):
        config["linux"]["sysctl"] = {"kernel.domainname": "thawed.example"}
        config["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256}]
        config["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [5]}
    script = "cat /proc/sys/kernel/domainname; ulimit -n; id -u; sleep 100"
    bundle = write_bundle(tmp_path / "b", ["sh", "-c", script], edit=edit,
                          rootfs=busybox_rootfs)
    cid = new_id()
    base = command + ["--root", str(state_root)]
    out = tmp_path / "out"
    with open(out, "w") as o, open(tmp_path / "err", "w+") as e:  # files: the init keeps them
        r = subprocess.run(base + ["create", "--bundle", bundle, cid], stdout=o, stderr=e,
                           stdin=subprocess.DEVNULL, env=TRACE, timeout=60)
        e.seek(0)
        r.stderr = e.read()
    try:
        assert r.returncode == 0, r.stderr
        runtime_pid = [pid for pid, _ in thawed(r.stderr)][0]
        in_children = {name for pid, name in thawed(r.stderr) if pid != runtime_pid}
        assert "write_sysctl" in in_children  # the init's, after pivot_root
        assert in_children & set(cold_functions(path))  # ColdFunctions' too
        start = subprocess.run(base + ["start", cid], capture_output=True, text=True, env=TRACE)
        assert start.returncode == 0 and thawed(start.stderr), start.stderr
        e = subprocess.run(base + ["exec", cid, "cat", "/proc/sys/kernel/domainname"],
                           capture_output=True, text=True, env=TRACE)
        assert (e.returncode, e.stdout) == (0, "thawed.example\n"), e.stderr
        exec_pid = [pid for pid, _ in thawed(e.stderr)][0]
        assert {pid for pid, _ in thawed(e.stderr)} - {exec_pid}  # in exec's children too
        state = json.loads(ok(subprocess.run(base + ["state", cid], capture_output=True,
                                             text=True)))
        assert state["status"] == "running"
        wait_for(lambda: open(out).read().count("\n") == 3, 10, "the container's output")
        with open(out) as o:
            assert o.read() == "thawed.example\n256\n1000\n"
        ok(subprocess.run(base + ["kill", cid, "KILL"], capture_output=True, text=True))
        wait_status(cid, "stopped", state_root)
    finally:
        ok(subprocess.run(base + ["delete", "-f", cid], capture_output=True, text=True))


@pytest.mark.needs_root
@pytest.mark.parametrize("damage", ["missing", "another build's"])
def test_without_its_cold_file_a_stub_compiles_the_source(copy, damage, tmp_path):
    """A cold file gone, or written for another source, is not used: the runtime process
    takes the function's code from the source instead, and says the same."""
    path, command = copy
    bytecode.write(path)
    cold = importlib.util.cache_from_source(path)[:-4] + ".cold"
    if damage == "missing":
        os.unlink(cold)
    else:
        with open(cold, "r+b") as f:
            f.seek(8)
            f.write(b"\xff\xff\xff\xff")  # the source's mtime
    (tmp_path / "split").mkdir()
    (tmp_path / "whole").mkdir()
    spec = subprocess.run(command + ["spec", "-b", str(tmp_path / "split")],
                          capture_output=True, text=True, env=TRACE)
    assert spec.returncode == 0 and thawed(spec.stderr), spec.stderr
    # a stub's function and a ColdFunction's both (no index to find it by, then)
    assert "cmd_spec" in cold_functions(path) and \
        "cmd_spec" in [name for _, name in thawed(spec.stderr)]
    # python3 minicontainer.py: compiled from the source, whole
    ok(subprocess.run([sys.executable, path, "spec", "-b", str(tmp_path / "whole")],
                      capture_output=True, text=True))
    assert (tmp_path / "split" / "config.json").read_text() == \
        (tmp_path / "whole" / "config.json").read_text()


@pytest.mark.needs_root
def test_without_its_cold_file_the_init_never_runs_the_images_source(copy, rootfs_copy,
                                                                     tmp_path, state_root):
    """No cold file to map: a stub first called by the init after pivot_root (run_hooks,
    for a startContainer hook) compiles its function from the host's source, opened before
    the fork, not from the file at that path in the container's root, which is the image's:
    here one whose run_hooks (on the same lines) leaves a mark, as the host's root."""
    path, command = copy
    bytecode.write(path)
    os.unlink(importlib.util.cache_from_source(path)[:-4] + ".cold")
    with open(path) as f:
        source = f.read()
    line = "engines expect runc's behaviour).\"\"\"\n    import subprocess\n"
    assert source.count(line) == 1
    planted = rootfs_copy + path
    os.makedirs(os.path.dirname(planted))
    with open(planted, "w") as f:
        f.write(source.replace(line, line.replace(
            "import", 'open("/planted-code-ran", "w").write("x"); import')))

    def edit(config):
        config["hooks"] = {"startContainer": [{"path": "/bin/true"}]}
    bundle = write_bundle(tmp_path / "b", ["echo", "ran"], edit=edit, rootfs=rootfs_copy)
    r = subprocess.run(command + ["--root", str(state_root), "run", "--bundle", bundle,
                                  new_id()], capture_output=True, text=True, env=TRACE)
    assert (r.returncode, r.stdout) == (0, "ran\n"), r.stderr
    assert "run_hooks" in [name for _, name in thawed(r.stderr)]
    assert not os.path.exists(os.path.join(rootfs_copy, "planted-code-ran"))


@pytest.mark.parametrize("source", [None, "def (\n", "import no_such_module_here\n"])
def test_a_source_it_cannot_split_is_one_line(source, tmp_path):
    """No file, a syntax error, a module that fails to import: one line, exit status 1,
    and no cache written."""
    path = tmp_path / "minicontainer.py"
    if source is not None:
        path.write_text(source)
    r = subprocess.run([sys.executable, bytecode.__file__, str(path)], capture_output=True,
                       text=True)
    assert r.returncode == 1 and r.stdout == "", r
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("bytecode.py: "), r.stderr
    assert not (tmp_path / "__pycache__").exists() or \
        not any(f.endswith(".cold") for f in os.listdir(tmp_path / "__pycache__"))
