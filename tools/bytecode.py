#!/usr/bin/env python3
"""Cache minicontainer.py's bytecode split in two: the functions a start calls, and the rest.

    python3 tools/bytecode.py [PATH/minicontainer.py]     (make install runs it)
    sudo python3 tools/bytecode.py --profile              (rewrites tools/bytecode-hot.txt)

Python caches a module's bytecode whole and unmarshals all of it at every import; half of
minicontainer's is never run by a start (docker's flags, images, networks, error paths).
Here the cache (__pycache__/minicontainer.TAG.pyc, the file Python reads, with the header it
checks) holds the functions named in bytecode-hot.txt as they are and every other one as a
stub of the same name and signature that calls _thaw(OFFSET, SIZE); their code goes to
minicontainer.TAG.cold beside it, one marshalled code object each, which the module maps and
reads as stubs are called (see "Cold code" in the module). A function of the module, or a
plain method of its classes, that takes no defaults but constant ones and that nothing names
as the module is imported is not even a stub (leave_out): its def becomes NOPs, and the
module puts a ColdFunction in its place, which finds its code by an index at the cold file's
end. The cold file's header ends with an id of the build, which the module holds: a cold
file written again for the same source is not read by a process that imported the cache
before. When the source changes, Python
finds the cache stale and writes the whole bytecode again, as it always does: the split
form is then back at the next `make install`.

bytecode-hot.txt is a profile: the qualified names of the functions that run, create, start,
state, list, exec, kill and delete call on a plain busybox bundle (and state, kill and delete
once it is gone), with the host's cgroups and with cgroup v2 and a cgroup namespace, as
--profile traces them.
A function missing there is still right, only loaded on first call (tests/test_bytecode.py
fails when an engine's call loads one); one there needlessly costs only memory.
"""
import importlib.util
import marshal
import os
import struct
import sys
import tempfile
import types

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TOOLS)
RUNTIME = os.path.join(ROOT, "minicontainer.py")
PROFILE = os.path.join(TOOLS, "bytecode-hot.txt")
CO_NEWLOCALS, CO_VARARGS, CO_VARKEYWORDS = 0x2, 0x4, 0x8
# What a stub's call runs before the function is in place (a stub there would call itself).
ALWAYS_HOT = {"_thaw", "_cold_code", "_open_cold_code", "map_cold_code", "_open_source",
              "_before_fork", "cold_code_fds_closed", "_function_of", "_code_from_source",
              "ColdFunction.__init__", "ColdFunction.__call__", "ColdFunction.__getattr__",
              "ColdFunction.__get__", "ColdFunction.load", "ColdFunction._put",
              "ColdFunction.put_in_place",
              "ctypes_api", "libc", "debug_step", "settings", "Settings.__init__", "getenv"}
ALWAYS_HOT_CLASSES = ("_Os.", "_OsPath.")  # the module's os: the machinery's calls use it


# The module imported from its source (and then, %(then)s, run) under sys.setprofile: the
# qualified name of each of its functions called, once, to the fd $BYTECODE_PROFILE_FD.
TRACER = r"""
import os, sys
fd = int(os.environ["BYTECODE_PROFILE_FD"])
os.set_inheritable(fd, False)
seen = set()
def profile(frame, event, arg):
    if event == "call" and frame.f_code.co_filename == %(runtime)r:
        name = frame.f_code.co_qualname
        if name not in seen:
            seen.add(name)
            try:
                os.write(fd, name.encode() + b"\n")
            except OSError:
                pass  # the init closed it: what follows is its exec
sys.path.insert(0, %(root)r)
sys.pycache_prefix = "/dev/null/none"  # the source, whatever cache lies beside it
sys.dont_write_bytecode = True
sys.setprofile(profile)
import minicontainer
%(then)s
"""


def import_calls(source_path):
    """The functions the module calls as it is imported (its body's): whole, as a stub
    called then would find no _thaw yet, nor what _thaw calls."""
    import subprocess
    with tempfile.TemporaryFile("w+") as trace:
        subprocess.run([sys.executable, "-I", "-S", "-B", "-c", TRACER % {
            "runtime": source_path, "root": os.path.dirname(source_path), "then": ""}],
            pass_fds=(trace.fileno(),), check=True, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, BYTECODE_PROFILE_FD=str(trace.fileno())))
        trace.seek(0)
        return set(trace.read().split())


def read_profile(path=PROFILE):
    with open(path) as f:
        return {line.strip() for line in f if line.strip() and not line.startswith("#")}


def stub_for(code, offset, size):
    """A function code object of code's name, signature, file and first line whose body is
    `return _thaw(offset, size)(its arguments)`."""
    n, k = code.co_argcount, code.co_kwonlyargcount
    names = code.co_varnames
    positional, keyword = list(names[:n]), list(names[n:n + k])
    i = n + k
    star = names[i] if code.co_flags & CO_VARARGS else None
    i += star is not None
    starstar = names[i] if code.co_flags & CO_VARKEYWORDS else None
    p = code.co_posonlyargcount
    params = positional[:p] + ["/"] * (p > 0) + positional[p:]
    params += ["*" + star] if star else ["*"] if keyword else []
    params += keyword + (["**" + starstar] if starstar else [])
    args = positional + (["*" + star] if star else []) + ["%s=%s" % (a, a) for a in keyword]
    args += ["**" + starstar] if starstar else []
    source = "def stub(%s):\n    return _thaw(%d, %d)(%s)\n" % (
        ", ".join(params), offset, size, ", ".join(args))
    stub = next(c for c in compile(source, code.co_filename, "exec").co_consts
                if isinstance(c, types.CodeType))
    return stub.replace(co_name=code.co_name, co_qualname=code.co_qualname,
                        co_firstlineno=code.co_firstlineno)


def can_stub(code, hot):
    """Not a function kept whole, nor a lambda or comprehension; not a closure (a method
    that calls super() has a __class__ cell: __code__ can only be swapped for code with the
    same free variables); none of its arguments named _thaw (the stub's call of it)."""
    return code.co_qualname not in hot and code.co_qualname not in ALWAYS_HOT and \
        not code.co_qualname.startswith(ALWAYS_HOT_CLASSES) and \
        not code.co_name.startswith("<") and not code.co_freevars and \
        "_thaw" not in code.co_varnames


def split(code, hot, cold, offset):
    """code with its functions, and its classes' methods, not in hot replaced by stubs;
    their code appended to cold (marshalled), whose data starts at offset in the file."""
    consts = []
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            if not c.co_flags & CO_NEWLOCALS:  # a class body: its methods are its constants
                c = split(c, hot, cold, offset)
            elif can_stub(c, hot):
                data = marshal.dumps(c)
                at = offset + sum(len(d) for d in cold)
                cold.append(data)
                c = stub_for(c, at, len(data))
        consts.append(c)
    return code.replace(co_consts=tuple(consts))


def loaded_at_import(code, attributes=None):
    """The names the module's body (and its class bodies, comprehensions and lambdas) loads
    or stores as it runs: its functions' own bodies run later. attributes: a set, given the
    attribute names that code looks up or sets."""
    import dis
    names = {}
    for i in dis.get_instructions(code):
        if i.opname in ("LOAD_NAME", "LOAD_GLOBAL", "STORE_NAME", "STORE_GLOBAL",
                        "DELETE_NAME", "DELETE_GLOBAL", "LOAD_FROM_DICT_OR_GLOBALS"):
            names[i.argval] = names.get(i.argval, 0) + 1
        elif attributes is not None and i.opname in ("LOAD_ATTR", "LOAD_METHOD",
                                                      "STORE_ATTR", "DELETE_ATTR"):
            attributes.add(i.argval)
    for c in code.co_consts:
        if isinstance(c, types.CodeType) and (not c.co_flags & CO_NEWLOCALS or
                                              c.co_name.startswith("<")):
            for name, n in loaded_at_import(c, attributes).items():
                names[name] = names.get(name, 0) + n
    return names


def leave_out(module, hot):
    """module without the defs of its functions that can be left out whole: each a
    function of the module, or a method of one of its classes (not a dunder, nor a name
    the module's import looks up as an attribute), that a stub could stand for, takes no
    defaults but constant positional ones, is named by nothing its module's (or class's)
    body runs as it is imported but its one def, and is defined whatever happens (no jump
    passes over it), whose instructions ([LOAD_CONST defaults], LOAD_CONST code,
    MAKE_FUNCTION, STORE_NAME) become NOPs; a ColdFunction of its qualified name stands in
    its place (see the module's "Cold code"). Returns (module, {qualified name: (code,
    defaults or None)}); none are left out where the module has no _COLD_FUNCTIONS to name
    them in, or Python compiles a def otherwise."""
    if cold_functions_const(module) is None:
        return module, {}
    attributes = set()
    names = loaded_at_import(module, attributes)
    module, out = _leave_out_of(module, hot, names)
    consts = list(module.co_consts)
    for i, c in enumerate(consts):  # the classes' bodies: their methods
        if isinstance(c, types.CodeType) and not c.co_flags & CO_NEWLOCALS and \
                not c.co_name.startswith("<"):
            consts[i], methods = _leave_out_of(c, hot, loaded_at_import(c), attributes)
            out.update(methods)
    return module.replace(co_consts=tuple(consts)), out


def _leave_out_of(code, hot, names, attributes=None):
    """leave_out's work in one body: the module's, or (attributes given) a class's."""
    import dis
    real = [i for i in dis.get_instructions(code) if i.opname != "EXTENDED_ARG"]
    extended = {i.offset for i in dis.get_instructions(code) if i.opname == "EXTENDED_ARG"}
    # what a jump passes over (an if's body, a loop's) runs perhaps, or more than once
    jumped = [(min(i.offset, i.argval), max(i.offset, i.argval)) for i in real
              if i.opcode in dis.hasjrel or i.opcode in dis.hasjabs]
    body, consts, out = bytearray(code.co_code), list(code.co_consts), {}
    nop = bytes([dis.opmap["NOP"], 0])
    prefix = "" if attributes is None else code.co_name + "."
    for before, load, make, store in zip([None] + real, real, real[1:], real[2:]):
        c = load.argval
        # defaults: a constant tuple, loaded just before (MAKE_FUNCTION's flag 1)
        defaults = before.argval if make.arg == 1 and before.opname == "LOAD_CONST" else None
        if load.opname == "LOAD_CONST" and isinstance(c, types.CodeType) and \
                make.opname == "MAKE_FUNCTION" and (not make.arg or defaults) and \
                store.opname == "STORE_NAME" and store.argval == c.co_name and \
                c.co_qualname == prefix + c.co_name and names.get(c.co_name) == 1 and \
                can_stub(c, hot) and not any(low < load.offset < high for low, high in jumped) \
                and (attributes is None or c.co_name not in attributes and
                     not c.co_name.startswith("__")):
            start = (before if defaults else load).offset
            while start - 2 in extended:  # (its own EXTENDED_ARGs; none has a cache)
                start -= 2
            body[start:store.offset + 2] = nop * ((store.offset + 2 - start) // 2)
            consts[load.arg] = None
            out[c.co_qualname] = c, defaults
    return code.replace(co_code=bytes(body), co_consts=tuple(consts)), out


def cold_functions_const(module):
    """The index in module's constants of what its _COLD_FUNCTIONS is set to (a constant
    loaded there only), else None."""
    import dis
    real = [i for i in dis.get_instructions(module) if i.opname != "EXTENDED_ARG"]
    loads = [i.arg for i in real if i.opname == "LOAD_CONST"]
    for load, store in zip(real, real[1:]):
        if store.opname == "STORE_NAME" and store.argval == "_COLD_FUNCTIONS" and \
                load.opname == "LOAD_CONST" and loads.count(load.arg) == 1:
            return load.arg
    return None


# The module as the cache holds it: without docstrings (nothing reads them: -OO's, as the
# module has no assert) nor its instructions' columns (-X no_debug_ranges: a traceback keeps
# its lines, not its ^^^ marks): 70 KiB less of every start's peak RSS, and 10% less to
# unmarshal. Compiled by another interpreter: columns are left out only when it starts so.
COMPILE = """
import marshal, sys
try:
    code = compile(sys.stdin.buffer.read(), sys.argv[1], "exec", dont_inherit=True, optimize=2)
except (SyntaxError, ValueError) as e:
    sys.exit("%s: %s" % (type(e).__name__, e))
sys.stdout.buffer.write(marshal.dumps(code))
"""


def compiled(source, source_path):
    import subprocess
    done = subprocess.run([sys.executable, "-I", "-S", "-X", "no_debug_ranges", "-c", COMPILE,
                           source_path], input=source, capture_output=True)
    if done.returncode:
        raise SyntaxError(done.stderr.decode(errors="replace").strip())
    return marshal.loads(done.stdout)


def write(source_path=RUNTIME, hot=None):
    """Writes source_path's split cache; returns (functions stubbed, bytes of cold code).
    Before Python 3.11 (no code object knows its qualified name) the cache is written
    whole, as Python writes it: (0, 0)."""
    if sys.version_info < (3, 11):
        import py_compile
        py_compile.compile(source_path, doraise=True)
        return 0, 0
    source_path = os.path.abspath(source_path)
    with open(source_path, "rb") as f:
        source = f.read()
    st = os.stat(source_path)
    code = compiled(source, source_path)
    hot = (read_profile() if hot is None else hot) | ALWAYS_HOT | import_calls(source_path)
    # what Python checks before it uses a cache: its magic number, then the source's mtime
    # and size (flags 0: no hash); the cold file starts with it too, then with this build's
    # own id, which the module holds (in _COLD_FUNCTIONS): a cold file written again for the
    # same source (bytecode.py run again, another profile) has the header Python checks,
    # and anything at the offsets a module imported before knows; it checks the id.
    header = importlib.util.MAGIC_NUMBER + struct.pack(
        "<III", 0, int(st.st_mtime) & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF)
    record = cold_functions_const(code)
    build = os.urandom(8) if record is not None else b""
    cold = []
    code, left_out = leave_out(code, hot)
    module = split(code, hot, cold, len(header + build))
    at = len(header + build) + sum(map(len, cold))
    index = {}  # the left out functions' code, then the index of it, by name
    for name, (function, _) in left_out.items():
        cold.append(marshal.dumps(function))
        index[name] = (at, len(cold[-1]))
        at += len(cold[-1])
    if index:
        cold.append(marshal.dumps(index))
    if record is not None:
        # _COLD_FUNCTIONS: their names, the defaults of those that take some (the module's
        # constants still: no copy), where the index is, the build's id
        defaults = tuple((name, d) for name, (_, d) in sorted(left_out.items()) if d)
        consts = list(module.co_consts)
        consts[record] = (tuple(sorted(index)), defaults, at if index else 0,
                          len(cold[-1]) if index else 0, build)
        module = module.replace(co_consts=tuple(consts))
    pyc = importlib.util.cache_from_source(source_path)
    os.makedirs(os.path.dirname(pyc), exist_ok=True)
    # The cold file first: a cache Python reads always finds its cold code in place.
    for path, data in ((pyc[:-4] + ".cold", header + build + b"".join(cold)),
                       (pyc, header + marshal.dumps(module))):
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(pyc), prefix=".bytecode-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    return len(cold) - bool(index), sum(map(len, cold))


def profile_modes():
    """The cgroup setups to trace: the host's, and where it has a cgroup2 mount, v2 with a
    cgroup namespace (docker's and podman's default there; a hybrid host's cgroup2 mount
    used as a v2 host's, as the tests do): ([(environment, cgroupns)]."""
    sys.path.insert(0, ROOT)
    import minicontainer
    v1, v2 = minicontainer.cgroup_hierarchies()
    modes = [({}, False)]
    if v2:
        modes.append(({"MINICONTAINER_CGROUP2": v2} if v1 else {}, True))
    return modes


def profile(out=PROFILE):
    """Traces the engine's calls on a busybox bundle; writes the names they call to out."""
    import json
    import shutil
    import subprocess
    import time
    sys.path.insert(0, ROOT)
    import minicontainer
    import mkrootfs
    if os.geteuid() != 0:
        raise SystemExit("bytecode.py --profile: run it as root (it starts containers)")
    work = tempfile.mkdtemp(prefix="bytecode-profile-")
    state, bundle = os.path.join(work, "state"), os.path.join(work, "bundle")
    cid = "bytecode-profile-%d" % os.getpid()
    trace = os.open(os.path.join(work, "trace"), os.O_RDWR | os.O_CREAT | os.O_APPEND)
    env, cgroupns = {}, False  # the mode traced (profile_modes'), read by runtime()

    def runtime(*args, process=("true",), traced=True, root=True):
        spec = minicontainer.default_spec(rootfs="rootfs", args=list(process))
        if cgroupns:
            spec["linux"]["namespaces"].append({"type": "cgroup"})
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(spec, f)
        command = [sys.executable, "-I", "-S", "-c", TRACER % {
            "runtime": RUNTIME, "root": ROOT,
            "then": "minicontainer.exit(minicontainer.main())"}] if traced \
            else [sys.executable, RUNTIME]
        with tempfile.TemporaryFile("w+") as out:  # not a pipe: create's init keeps it
            done = subprocess.run(command + ["--root", state] * root + list(args), cwd=bundle,
                                  pass_fds=(trace,), stdout=out, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL,
                                  env=dict(os.environ, BYTECODE_PROFILE_FD=str(trace),
                                           **env))
            out.seek(0)
            return done.returncode, out.read()

    try:
        os.makedirs(bundle)
        mkrootfs.make_rootfs(os.path.join(bundle, "rootfs"))
        for env, cgroupns in profile_modes():
            code, said = runtime("run", cid + "-run", root=False)  # as people run it
            if code:
                raise SystemExit("bytecode.py --profile: run: %s" % said)
            steps = [("create", cid), ("start", cid), ("state", cid),
                     ("list",), ("exec", cid, "true"), ("kill", cid, "KILL")]
            for args in steps:
                code, said = runtime(*args, process=["sleep", "100"] if args[0] == "create"
                                     else ["true"])
                if code:
                    raise SystemExit("bytecode.py --profile: %s: %s" % (args[0], said))
            deadline = time.monotonic() + 10
            while '"stopped"' not in runtime("state", cid, traced=False)[1]:
                if time.monotonic() > deadline:
                    raise SystemExit("bytecode.py --profile: %s did not stop" % cid)
                time.sleep(0.05)
            runtime("delete", cid)
            # and what an engine's cleanup meets: the container gone
            for args in (["state", cid], ["kill", cid, "KILL"], ["kill", cid],
                         ["delete", cid]):
                if not runtime(*args)[0]:
                    raise SystemExit("bytecode.py --profile: %s of a deleted container "
                                     "succeeded" % args[0])
    finally:
        runtime("delete", "-f", cid, traced=False)
        os.lseek(trace, 0, 0)
        with os.fdopen(trace) as f:
            names = set(f.read().split())
        shutil.rmtree(work, ignore_errors=True)
    with open(out + ".new", "w") as f:
        f.write("# written by tools/bytecode.py --profile: the functions an engine's calls and "
                "`run` call\n# on a plain busybox bundle, kept whole in the cached bytecode\n")
        f.write("".join(name + "\n" for name in sorted(names)))
    os.replace(out + ".new", out)
    return names


def main(argv):
    if argv[:1] == ["--profile"]:
        print("bytecode.py: %d functions in %s" % (len(profile()), PROFILE))
        return 0
    path = argv[0] if argv else RUNTIME
    import subprocess
    try:
        stubs, size = write(path)
    except (OSError, SyntaxError) as e:
        print("bytecode.py: %s" % e, file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as e:  # importing the module failed
        print("bytecode.py: %s cannot be imported: %s" % (
            path, "".join((e.stderr or "").strip().splitlines()[-1:])), file=sys.stderr)
        return 1
    print("bytecode.py: %s: %d functions (%d KB) left to load on first call%s" % (
        path, stubs, size // 1024,
        " (cached whole: Python before 3.11)" if sys.version_info < (3, 11) else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
