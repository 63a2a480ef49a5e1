#!/bin/sh
"""exec" python3 -I -S -c 'import gc, sys, posix; gc.disable(); p = sys.argv[1]; \
p = __import__("os").path.realpath(p) if posix.lstat(p).st_mode >> 12 == 10 else p; \
sys.path.insert(0, p[:p.rfind("/")] or "/" if "/" in p else "."); sys.argv.pop(0); \
import minicontainer; gc.freeze(); gc.enable(); minicontainer.exit(minicontainer.main())' \
"$0" "$@"

minicontainer: a container runtime in one file of Python (standard library + ctypes).

The line above is for the shell: run as a program (as engines do, with no PATH), the shell
finds python3 and has it import this file as a module (beside the file a symlink leads to),
whose compiled form Python caches, instead of compiling all of it again at every start as
`python3 minicontainer.py` must. Nor does it import os (see _Os, below).
The garbage collector is off while it loads (making its functions and classes would set off
collections that free nothing: a tenth of the load), and what the load made is then frozen,
out of the way of later collections. `make install` caches that compiled form split, the
functions a start does not call loaded on their first call ("Cold code", in the helpers).

    sudo python3 minicontainer.py run --rootfs DIR -- sh
    sudo python3 minicontainer.py run alpine echo hello

Sections, each using only those above it, in the order a container is born: helpers,
ctypes bindings, seccomp (the compiler a config's filter needs), configuration, cgroups,
namespaces, root filesystem, process setup, network, the setup plan and the runtime<->init
protocol, the container's init, lifecycle, image store (the read side), command line.
docs/architecture.md tells them in five minutes.
"""

import errno
import fcntl
import posix
# signal's C half: the same functions, and its constants as ints; signal.py makes enums of
# them (it imports enum, functools and collections: ~4 ms of every start)
import _signal as signal
import stat
# struct's C half, built in: struct.py is only `from _struct import *`, a file to find and read
import _struct as struct
import sys
import time


class _OsPath:
    """os.path's functions as posixpath has them, for those the runtime calls on its way:
    importing posixpath imports os (see _Os). Any other is posixpath's own."""

    def __getattr__(self, name):
        import posixpath
        return getattr(posixpath, name)

    @staticmethod
    def join(a, *p):
        path = posix.fspath(a)
        sep = "/" if isinstance(path, str) else b"/"
        for b in map(posix.fspath, p):
            if b.startswith(sep) or not path:
                path = b
            elif path.endswith(sep):
                path += b
            else:
                path += sep + b
        return path

    @staticmethod
    def split(p):
        p = posix.fspath(p)
        sep = "/" if isinstance(p, str) else b"/"
        i = p.rfind(sep) + 1
        head, tail = p[:i], p[i:]
        if head and head != sep * len(head):
            head = head.rstrip(sep)
        return head, tail

    @staticmethod
    def dirname(p):
        return _OsPath.split(p)[0]

    @staticmethod
    def basename(p):
        p = posix.fspath(p)
        return p[p.rfind("/" if isinstance(p, str) else b"/") + 1:]

    @staticmethod
    def isabs(p):
        p = posix.fspath(p)
        return p.startswith("/" if isinstance(p, str) else b"/")

    @staticmethod
    def normpath(p):
        p = posix.fspath(p)
        sep, dot, up = ("/", ".", "..") if isinstance(p, str) else (b"/", b".", b"..")
        if not p:
            return dot
        # POSIX leaves the meaning of exactly two leading slashes to the system: kept
        slashes = 2 if p.startswith(sep * 2) and not p.startswith(sep * 3) else \
            1 if p.startswith(sep) else 0
        parts = []
        for part in p.split(sep):
            if part in (dot, p[:0]):
                continue
            if part != up or (not slashes and not parts) or (parts and parts[-1] == up):
                parts.append(part)
            elif parts:
                parts.pop()
        return sep * slashes + sep.join(parts) or dot

    @staticmethod
    def abspath(p):
        p = posix.fspath(p)
        if not _OsPath.isabs(p):
            p = _OsPath.join(posix.getcwd() if isinstance(p, str) else posix.getcwdb(), p)
        return _OsPath.normpath(p)

    @staticmethod
    def realpath(p):
        """The kernel's own resolution of an existing path (the link of an O_PATH fd of it);
        posixpath's, which resolves what exists of it, for any other."""
        p = posix.fspath(p)
        if isinstance(p, str) and p:
            try:
                fd = posix.open(p, posix.O_PATH | posix.O_CLOEXEC)
            except (OSError, ValueError):
                pass
            else:
                try:
                    real = posix.readlink("/proc/self/fd/%d" % fd)
                    if real.startswith("/") and not real.endswith(" (deleted)"):
                        return real
                except OSError:
                    pass
                finally:
                    posix.close(fd)
        import posixpath
        return posixpath.realpath(p)

    @staticmethod
    def _mode(p, stat_call=posix.stat):
        """The file's st_mode (its type bits are never all 0), or 0 where there is none."""
        try:
            return stat_call(p).st_mode
        except (OSError, ValueError):
            return 0

    @staticmethod
    def exists(p):
        return _OsPath._mode(p) != 0

    @staticmethod
    def lexists(p):
        return _OsPath._mode(p, posix.lstat) != 0

    @staticmethod
    def isdir(p):
        return stat.S_ISDIR(_OsPath._mode(p))

    @staticmethod
    def isfile(p):
        return stat.S_ISREG(_OsPath._mode(p))

    @staticmethod
    def islink(p):
        return stat.S_ISLNK(_OsPath._mode(p, posix.lstat))

    @staticmethod
    def samestat(s1, s2):
        return s1.st_ino == s2.st_ino and s1.st_dev == s2.st_dev


class _Os:
    """The os module as this one uses it, without importing it: posix's functions (os's are
    the same objects), os.path's that the runtime calls on its way (_OsPath), makedirs; and
    for anything else (environ, walk, fdopen...) the os module's own, imported then. Importing
    os took 1.4 ms of every call (60 interleaved runs of `python3 -I -S -c "import os"`
    against `pass`), 1.1 of them to make _collections_abc's classes for its environ."""

    path = _OsPath()
    devnull = "/dev/null"
    SEEK_SET, SEEK_CUR, SEEK_END = 0, 1, 2

    def __init__(self):  # posix.environ is the environment at start, in bytes: not os's
        vars(self).update((k, v) for k, v in vars(posix).items()
                          if not k.startswith("__") and k != "environ")

    def __getattr__(self, name):
        import os
        return getattr(os, name)

    def makedirs(self, name, mode=0o777, exist_ok=False):
        head, tail = self.path.split(name)
        if not tail:
            head, tail = self.path.split(head)
        if head and tail and not self.path.exists(head):
            try:
                self.makedirs(head, exist_ok=True)
            except FileExistsError:
                pass  # made meanwhile
            if tail == ".":  # "new/." is new, made now
                return
        try:
            posix.mkdir(name, mode)
        except OSError:
            if not exist_ok or not self.path.isdir(name):
                raise


os = _Os()


def getenv(name, default=None):
    """os.environ.get(name, default) without importing os (see _Os): the environment as the
    process began, unless os, imported meanwhile, holds it (and what was changed since)."""
    real = sys.modules.get("os")
    if real is not None:
        return real.environ.get(name, default)
    value = posix.environ.get(name.encode(sys.getfilesystemencoding(),
                                          sys.getfilesystemencodeerrors()))
    return default if value is None else \
        value.decode(sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())


__version__ = "0.1.0"
OCI_VERSION = "1.0.2"
STATE_ROOT = "/run/minicontainer"


class Error(Exception):
    """A failure the user can cause or fix: reported as one line, exit status 1 (or .code)."""

    def __init__(self, msg, code=1):
        super().__init__(msg)
        self.code = code


class NotFound(Error):
    """No such container (also: deleted by another process while we waited for its lock)."""


# ==== helpers used everywhere: files, /proc, sizes, time, messages ====

class _NotJson(Exception):
    pass


def _not_json(obj):
    raise _NotJson()


class _Json:
    """The json module's loads, load, dumps and dump, made by its C half (_json) alone:
    `import json` imports re, enum, functools and collections, some 6 ms of every start,
    more than `state` or `start` does. The C half is what json itself runs; with indent,
    json's own Python writes the whitespace, which _indented writes alike. Anything else
    (other keyword arguments, bytes not in UTF-8, a malformed document, what JSON cannot
    say) goes to the json module, which does or says it as it always does."""

    strict, object_hook, object_pairs_hook = True, None, None  # what make_scanner reads
    parse_float, parse_int = float, int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"),
                      "NaN": float("nan")}.__getitem__

    def __init__(self):
        import _json
        self._c = _json
        self._scan = _json.make_scanner(self)

    def loads(self, s, **kw):
        if isinstance(s, (bytes, bytearray)) and s[:1] < b"\x80" and b"\0" not in s[:2]:
            s = s.decode("utf-8", "surrogatepass")  # what json.detect_encoding finds
        if isinstance(s, str) and not kw:
            try:
                obj, end = self._scan(s, len(s) - len(s.lstrip(" \t\n\r")))
            except Exception:  # malformed: the json module says how (the C half raises
                pass           # its JSONDecodeError only once json.decoder is imported)
            else:
                if not s[end:].strip(" \t\n\r"):
                    return obj
        import json
        return json.loads(s, **kw)

    def load(self, fp, **kw):
        return self.loads(fp.read(), **kw)

    def dumps(self, obj, indent=None, **kw):
        if not kw and (indent is None or type(indent) is int):
            try:
                return self._compact(obj) if indent is None else \
                    self._indented(obj, " " * indent, "\n")
            except (_NotJson, RecursionError):
                pass
        import json
        return json.dumps(obj, indent=indent, **kw)

    def dump(self, obj, fp, **kw):
        fp.write(self.dumps(obj, **kw))

    def _compact(self, obj):
        return "".join(self._c.make_encoder({}, _not_json, self._c.encode_basestring_ascii,
                                            None, ": ", ", ", False, False, True)(obj, 0))

    def _indented(self, obj, indent, newline):
        inner = newline + indent
        if isinstance(obj, dict) and obj:
            if not all(isinstance(key, str) for key in obj):
                raise _NotJson()
            return "{%s%s}" % (",".join(inner + self._compact(key) + ": " +
                                        self._indented(value, indent, inner)
                                        for key, value in obj.items()), newline)
        if isinstance(obj, (list, tuple)) and obj:
            return "[%s%s]" % (",".join(inner + self._indented(value, indent, inner)
                                        for value in obj), newline)
        return self._compact(obj)


json = _Json()


def write_all(fd, data):
    """os.write until all of data is written (a pipe or a slow file may take less)."""
    n = os.write(fd, data)
    if n < len(data):
        view = memoryview(data)[n:]
        while view:
            view = view[os.write(fd, view):]


def write_atomic(path, data, mode=0o644, durable=False):
    """Write a file whole through a temporary file beside it and a rename: a reader sees the
    old file or the new one, never half of one. `durable` adds an fsync, for the image store
    (on a disk, which must survive a crash); container state lives on tmpfs and needs none."""
    tmp = "%s.tmp-%d-%s" % (path, os.getpid(), os.urandom(4).hex())
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:  # (a nearly full filesystem writes less: renamed so, state.json was torn)
            write_all(fd, data.encode() if isinstance(data, str) else data)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and e.strerror:  # (ENOSPC, EROFS: say which file)
            raise OSError(e.errno, e.strerror, path) from None
        raise


def mountinfo(pid="self"):
    """[(mount point, fs type, super options)] from /proc/PID/mountinfo, in mount order; the
    kernel escapes space, tab, newline and backslash in paths as octal (\\040)."""
    with open("/proc/%s/mountinfo" % pid, "rb") as f:
        text = f.read()
    out = []
    for line in text.splitlines():
        fields = line.split()
        sep = fields.index(b"-")
        out.append((_unescape_octal(fields[4]), fields[sep + 1].decode(),
                    fields[sep + 3].decode()))
    return out


def _unescape_octal(field):
    if b"\\" in field:
        parts = field.split(b"\\")
        field = parts[0] + b"".join(bytes([int(p[:3], 8)]) + p[3:] for p in parts[1:])
    return field.decode(sys.getfilesystemencoding(), sys.getfilesystemencodeerrors())


def proc_stat(pid):
    """/proc/PID/stat's fields after the command name (field 3 on, as bytes); None: no such
    process. The name, in parentheses, may itself hold spaces and parentheses."""
    try:
        fd = os.open("/proc/%d/stat" % pid, os.O_RDONLY | os.O_CLOEXEC)
        try:
            text = os.read(fd, 4096)  # made whole at the read: one read has all of it
        finally:
            os.close(fd)
    except OSError:
        return None
    end = text.rfind(b")")
    return None if end < 0 else text[end + 2:].split()


def process_start_time(pid):
    """Field 22 of /proc/PID/stat: with the pid, it names one process across pid reuse."""
    fields = proc_stat(pid)
    return None if fields is None else int(fields[19])


def process_state(pid):
    fields = proc_stat(pid)
    return None if fields is None else fields[0].decode()


def exit_status(status):
    """A wait status as a shell (and docker) says it: 128+N for a signal N."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def timestamp(t=None):
    t = time.time() if t is None else t
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%09dZ" % (t % 1 * 1e9)


def human_size(n, digits=3):
    """A size in decimal units, as docker prints them (5.2MB, 812kB)."""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return "%.0f%s" % (n, unit) if unit == "B" else "%.*g%s" % (digits, n, unit)
        n /= 1000


WARNINGS = []


def warn(msg):
    """A warning for --debug and the --log file (main writes them out): not for stderr, where
    engines may take it for an error."""
    if msg not in WARNINGS:  # a config is checked more than once
        WARNINGS.append(msg)


NOTICES = []


def notice(msg, level="warning"):
    """What the user must hear of (a limit not applied, an image copied instead of mounted):
    on stderr at once, and in the --log file (main writes it there)."""
    sys.stderr.write("minicontainer: %s%s\n" % ("warning: " if level == "warning" else "", msg))
    sys.stderr.flush()
    NOTICES.append((msg, level))


class Settings:
    """The environment variables that change what the runtime does, all of them, read here
    and nowhere else (settings() at each use: tests change them within one process)."""
    __slots__ = ("store", "bridge", "subnet", "cgroup2", "no_overlay", "overlay", "trace",
                 "die_at", "sleep_at")

    def __init__(self, get):  # getenv's signature
        self.store = get("MINICONTAINER_STORE")  # the image store; else images/ here
        self.bridge = get("MINICONTAINER_BRIDGE")  # --network bridge's; else BRIDGE
        self.subnet = get("MINICONTAINER_SUBNET")  # its subnet; else DEFAULT_SUBNET
        # a cgroup2 mount used as if the host were pure v2 (a hybrid host tests v2's code)
        self.cgroup2 = get("MINICONTAINER_CGROUP2")
        self.no_overlay = get("MINICONTAINER_NO_OVERLAY") == "1"  # images: copy layers
        # "fuse": the kernel's overlay taken as refused, fuse-overlayfs used (tests: here the
        # kernel allows it wherever a user could reach fuse-overlayfs)
        self.overlay = get("MINICONTAINER_OVERLAY")
        # debug_step's: print each step; SIGKILL at one; sleep at some (NAME:SECONDS,...)
        self.trace = bool(get("MINICONTAINER_TRACE"))
        self.die_at = get("MINICONTAINER_DEBUG_DIE_AT")
        self.sleep_at = {}
        for item in (get("MINICONTAINER_DEBUG_SLEEP_AT") or "").split(","):
            at, _, seconds = item.partition(":")
            if at:
                self.sleep_at[at] = float(seconds or 1)


def settings():
    return Settings(getenv)


_UNPRIVILEGED = []
_ROOTLESS = []  # main's --rootless true|false, when given


def unprivileged():
    """Whether the runtime is not the host's root, as runc decides it: an ordinary user, or
    root of a user namespace it did not make (podman rootless runs its runtime so). Its
    state, monitors and images are then the user's ($XDG_RUNTIME_DIR, ~/.local/share)."""
    if not _UNPRIVILEGED:
        try:
            with open("/proc/self/uid_map") as f:
                # the host's user namespace maps every id to itself
                foreign = f.read().split() != ["0", "0", "4294967295"]
        except OSError:
            foreign = False
        _UNPRIVILEGED.append(os.geteuid() != 0 or foreign)
    return _UNPRIVILEGED[0]


def rootless():
    """Whether cgroups are made as an unprivileged user may make them (only in a delegated
    subtree; limits skipped elsewhere): unprivileged(), unless runc's --rootless flag says
    otherwise, as runc's flag decides for its cgroup manager alone."""
    return _ROOTLESS[0] if _ROOTLESS else unprivileged()


def rootless_runtime_dir(for_monitor=False):
    """$XDG_RUNTIME_DIR, where a rootless runtime keeps its state and its monitors (as runc
    keeps $XDG_RUNTIME_DIR/runc): an Error that says what to do when it is unusable (for a
    monitor, --root does not do instead)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    if not base and for_monitor:
        raise Error("rootless: $XDG_RUNTIME_DIR is not set: the monitor of detached "
                    "containers (run -d) keeps its socket there, whatever --root says; set it "
                    "to a directory of yours (mode 0700)")
    if not base:
        raise Error("rootless: $XDG_RUNTIME_DIR is not set: set it to a directory of yours "
                    "(mode 0700), or give --root")
    if not os.path.isdir(base) or not os.access(base, os.W_OK | os.X_OK):
        raise Error("rootless: $XDG_RUNTIME_DIR %s is not a directory you can write" % base)
    return base


def check_own_dir(path, what, private=False):
    """A directory the runtime keeps things in (`what`): missing (made later), or a
    directory; else an Error that names it (not a bare "[Errno 20] Not a directory").
    private: also ours, and writable by nobody else (a group only if it is our own, a
    user's private group, not root's), as ssh refuses a loose ~/.ssh: another user who
    could plant a container's state.json there would point our kill and delete at our own
    processes, or a monitor's socket, to be handed our run -d's command line."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, PermissionError):
        return  # made later; or out of reach, which its first use says as before
    except OSError as e:
        raise Error("%s: %s (%s)" % (path, e.strerror, what)) from None
    if not stat.S_ISDIR(st.st_mode):
        raise Error("%s: not a directory (%s)" % (path, what))
    if not private:
        return
    if st.st_uid != os.geteuid():
        raise Error("%s: not owned by you (uid %d; %s): refused" % (path, st.st_uid, what))
    if st.st_mode & stat.S_IWOTH or st.st_mode & stat.S_IWGRP and (
            st.st_gid != os.getegid() or st.st_gid == 0):
        raise Error("%s: writable by others (mode %04o; %s): refused" % (
            path, stat.S_IMODE(st.st_mode), what))


def host_program(name):
    """The path of a program of the host's (newuidmap, slirp4netns, fuse-overlayfs) on our
    PATH, or None."""
    import shutil
    return shutil.which(name, path=os.environ.get("PATH") or "/usr/bin:/bin")


def debug_step(name):
    """A named step of create and run, where tests break them on purpose:
    $MINICONTAINER_DEBUG_DIE_AT=NAME SIGKILLs the process that reaches it (a crash there),
    $MINICONTAINER_DEBUG_SLEEP_AT=NAME:SECONDS[,...] holds it there (a slow scheduler).
    $MINICONTAINER_TRACE=1 prints each step as it is reached: the monotonic clock in ms (one
    clock for the runtime and the init), the pid, the step, the resident set in KiB; where a
    start's time and memory go."""
    env = settings()
    if env.trace:
        try:
            with open("/proc/self/statm", "rb") as f:
                rss = int(f.read().split()[1]) * os.sysconf("SC_PAGESIZE") // 1024
        except OSError:  # exec's process, between setns and its fork: /proc is another pid
            rss = -1    # namespace's, where it has no pid (nor a /proc/self)
        os.write(2, b"minicontainer: trace %.3f %d %s %d\n" % (time.monotonic() * 1000,
                                                               os.getpid(), name.encode(), rss))
    if env.die_at == name:
        os.kill(os.getpid(), signal.SIGKILL)
        os._exit(128 + signal.SIGKILL)  # a pid namespace's init ignores it from inside
    if name in env.sleep_at:
        time.sleep(env.sleep_at[name])


DEBUG_LOG = []  # main's [--log path, format] under --debug: where debug() writes


def debug(msg):
    """A line for --debug: on stderr and in the --log file, as errors and warnings go."""
    if DEBUG_LOG:
        _log_error(msg, DEBUG_LOG, "debug")


def print_formatted(fmt, data, header, rows, widths=None, headers=None, json_lines=False):
    """--format of list, ps and images: json prints `data` (what programs read), table the
    header and rows in columns `widths` wide, one space apart, or, without widths, as wide
    as their widest cell, three spaces apart. Any other format is a Go template, as
    docker's (render_template), printed for each item of `data`; "table TEMPLATE" puts a
    header line first, the column names from `headers` ({key: name}, else KEY), and aligns
    the columns that tabs (\\t) separate. json_lines: json as docker's ps and images print
    it, an object a line (runc's list and ps print one array)."""
    if fmt == "json":
        for line in [json.dumps(item) for item in data] if json_lines else [json.dumps(data)]:
            print(line)
        return
    if fmt != "table":
        fmt = fmt.replace("\\t", "\t").replace("\\n", "\n")
        table = fmt.startswith("table ")
        fmt = fmt[6:].strip() if table else fmt
        check_template(fmt)
        lines = [render_template(fmt, item) for item in data]
        if not table:
            for line in lines:
                print(line)
            return
        keys = {key for item in data for key in item} | set(headers or ())
        head = render_template(fmt, {k: (headers or {}).get(k, k.upper()) for k in keys})
        header, rows, widths = head.split("\t"), [line.split("\t") for line in lines], None
        rows = [row + [""] * (len(header) - len(row)) for row in rows]
        if len(header) == 1:
            print("\n".join([head] + lines))
            return
    sep = " " if widths else "   "
    widths = widths or [max(len(str(r[i])) for r in rows + [header])
                        for i in range(len(header))]
    for row in [header] + rows:
        print(sep.join(str(c).ljust(w) for c, w in zip(row[:-1], widths))
              + sep + str(row[-1]).rstrip())


def render_template(text, dot):
    """docker's --format: a Go text/template over `dot` (decoded JSON), in the part of the
    language that docker users write: {{.Path.To.Field}}, {{json .X}}, {{index .X "key"}},
    {{join .X ","}}, {{upper .X}}, {{lower .X}}, {{len .X}}, {{println .X}}, pipes (|),
    parentheses, {{range .X}}…{{end}} (also {{range $k, $v := .X}}), {{if .X}}…{{else}}…
    {{end}}, {{with .X}}…{{end}}, $ and {{- -}} trimming. Values print as Go prints them
    (true, [a b], map[k:v]); a key that is not there is an error, as in docker's inspect."""
    return "".join(_template_run(_template_parse(text), {".": dot, "$": dot}))


def print_inspected(found, template):
    """docker inspect's output: the objects as a JSON list, or -f's Go template for each."""
    if template:
        template = template.replace("\\t", "\t").replace("\\n", "\n")
        for item in found:
            print(render_template(template, item))
    else:
        print(json.dumps(found, indent=4))


def check_template(text):
    """Parse it, as docker does before it has anything to run it on: a malformed template
    is an error even where there is nothing to print."""
    _template_parse(text)


def _template_parse(text):
    import re
    nodes, stack = [], []
    tree = nodes
    pos = 0
    for m in re.finditer(r"\{\{(-\s)?(.*?)(\s-)?\}\}", text, re.S):
        lead = text[pos:m.start()]
        if m.group(1):
            lead = lead.rstrip()
        if tree and isinstance(tree[-1], tuple) and tree[-1][0] == "trim":
            tree.pop()
            lead = lead.lstrip()
        if lead:
            tree.append(lead)
        pos = m.end()
        words = _template_words(m.group(2).strip())
        head = words[0] if words else ""
        if head in ("range", "if", "with"):
            node = [head, words[1:], [], []]  # kind, pipeline, body, else-body
            tree.append(node)
            stack.append((tree, node))
            tree = node[2]
        elif head == "else":
            if not stack:
                raise Error("--format: {{else}} outside {{if}}, {{with}} or {{range}}")
            tree = stack[-1][1][3]
        elif head == "end":
            if not stack:
                raise Error("--format: {{end}} without its {{if}}, {{with}} or {{range}}")
            tree = stack.pop()[0]
        elif words:
            tree.append(("pipe", words))
        if m.group(3):
            tree.append(("trim",))
    if stack:
        raise Error("--format: {{%s}} without its {{end}}" % stack[-1][1][0])
    rest = text[pos:]
    if "{{" in rest:
        raise Error("--format: unclosed action: %s" % rest[rest.index("{{"):])
    if tree and isinstance(tree[-1], tuple) and tree[-1][0] == "trim":
        tree.pop()
        rest = rest.lstrip()
    if rest:
        tree.append(rest)
    return nodes


def _template_words(action):
    import re
    words = re.findall(r'"(?:[^"\\]|\\.)*"|`[^`]*`|\)(?:\.\w+)+|[()|]|[^\s()|"`]+|["`]',
                       action)
    if any(w in ('"', "`") for w in words):
        raise Error("--format: unterminated string in {{%s}}" % action)
    return words


def _template_run(nodes, env):
    """env: the dot (".") and the variables ("$" the whole, "$name" those that range set)."""
    for node in nodes:
        if isinstance(node, str):
            yield node
        elif isinstance(node, tuple):
            yield _go_string(_template_pipe(node[1], env))
        else:
            kind, words, body, other = node
            names = []
            if ":=" in words:  # {{range $key, $value := .X}} or {{range $value := .X}}
                at = words.index(":=")
                names, words = [w.rstrip(",") for w in words[:at] if w != ","], words[at + 1:]
            value = _template_pipe(words, env)
            if kind == "range":
                items = sorted(value.items()) if isinstance(value, dict) else \
                    list(enumerate(value or ()))  # Go ranges over a map in its keys' order
                for key, item in items:
                    bound = dict(zip(names, [key, item] if len(names) == 2 else [item]))
                    yield from _template_run(body, dict(env, **bound, **{".": item}))
                if not items:
                    yield from _template_run(other, env)
            elif _go_true(value):
                bound = dict(zip(names, [value]))
                yield from _template_run(body, dict(env, **bound, **{
                    ".": value if kind == "with" else env["."]}))
            else:
                yield from _template_run(other, env)


def _template_pipe(words, env):
    value, first = None, True
    while words:
        cut = _template_split(words)
        value = _template_call(words[:cut], env, None if first else [value])
        words, first = words[cut + 1:], False
    return value


def _template_split(words):
    """Where the first command of a pipeline ends: at a | outside parentheses."""
    depth = 0
    for i, w in enumerate(words):
        depth += (w == "(") - (w == ")" or w.startswith(")."))
        if w == "|" and depth == 0:
            return i
    return len(words)


def _template_call(words, env, piped):
    args, i = [], 0
    while i < len(words):
        w = words[i]
        if w == "(":
            depth, j = 1, i + 1
            while depth:
                if j == len(words):
                    raise Error("--format: unclosed (")
                depth += (words[j] == "(") - (words[j] == ")" or words[j].startswith(")."))
                j += 1
            value = _template_pipe(words[i + 1:j - 1], env)
            for name in words[j - 1].split(".")[1:]:
                value = _go_field(value, name)
            args.append(value)
            i = j
            continue
        args.append(_template_arg(w, env))
        i += 1
    args += piped or []
    fn = args[0]
    if not isinstance(fn, _GoFunc):
        if len(args) > 1:
            raise Error("--format: %s is not a function" % words[0])
        return fn
    return fn(args[1:])


class _GoFunc:
    def __init__(self, name, fn):
        self.name, self.fn = name, fn

    def __call__(self, args):
        try:
            return self.fn(*args)
        except (TypeError, KeyError, IndexError, ValueError, AttributeError):
            raise Error("--format: wrong arguments for %s" % self.name) from None


def _go_index(value, *keys):
    for key in keys:
        # a missing key: "", the zero value of docker's map[string]string (Labels)
        value = value.get(key, "") if isinstance(value, dict) else value[int(key)]
    return value


def _go_printf(fmt, *args):
    """Go's printf, its common verbs: %v %s %d %q %x %X %f %e %g %t %c %%, with flags,
    width and precision; a missing argument is %!v(MISSING), as Go says it."""
    import re
    args = list(args)

    def verb(m):
        flags, kind = m.group(1), m.group(2)
        if kind == "%":
            return "%"
        if not args:
            return "%!" + kind + "(MISSING)"
        value = args.pop(0)
        if kind in "vs":
            return ("%" + flags + "s") % _go_string(value)
        if kind == "q":
            return ("%" + flags + "s") % json.dumps(_go_string(value))
        if kind == "t":
            return ("%" + flags + "s") % ("true" if value else "false")
        if kind == "c":
            return chr(value)
        return ("%" + flags + kind) % (float(value) if kind in "feg" else int(value))
    return re.sub(r"%([-+# 0]*\d*(?:\.\d+)?)([vsdqxXfegtc%])", verb, fmt)


_GO_FUNCS = {
    "printf": _go_printf,
    "json": lambda v: json.dumps(v, separators=(",", ":")),
    "index": _go_index,
    "join": lambda v, sep: sep.join(_go_string(x) for x in v or ()),
    "upper": lambda v: _go_string(v).upper(),
    "lower": lambda v: _go_string(v).lower(),
    "title": lambda v: _go_string(v).title(),
    "len": lambda v: len(v or ()),
    "println": lambda *v: " ".join(_go_string(x) for x in v) + "\n",
    "print": lambda *v: "".join(_go_string(x) for x in v),
    "not": lambda v: not _go_true(v),
    "eq": lambda a, *b: any(a == x for x in b),
    "ne": lambda a, b: a != b,
}


def _template_arg(word, env):
    if word.startswith('"'):
        try:  # (a \n or \t the shell's way is a real one by now: allowed in it)
            return json.loads(word, strict=False)
        except ValueError:
            raise Error("--format: bad string %s" % word) from None
    if word.startswith("`"):
        return word[1:-1]
    if word.startswith((".", "$")):
        head, *path = word.split(".")
        if head not in env and head != "":
            raise Error("--format: undefined variable %s" % head)
        value = env[head or "."]
        for name in path:
            if name:
                value = _go_field(value, name)
        return value
    if word in _GO_FUNCS:
        return _GoFunc(word, _GO_FUNCS[word])
    if word in ("true", "false", "nil"):
        return {"true": True, "false": False, "nil": None}[word]
    try:
        return int(word)
    except ValueError:
        raise Error("--format: function %r not defined" % word) from None


def _go_field(value, name):
    if isinstance(value, dict):
        if name not in value:  # docker's inspect runs its templates with missingkey=error
            raise Error('--format: map has no entry for key "%s"' % name)
        return value[name]
    raise Error("--format: can't evaluate field %s in a %s" % (name, _go_type(value)))


def _go_type(value):
    return {bool: "bool", int: "int", float: "float64", str: "string", list: "slice"}.get(
        type(value), "nil" if value is None else "value")


def _go_true(value):
    return value not in (None, False, 0, "") and value != [] and value != {}


def _go_string(value):
    """A value as Go's fmt %v prints it."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[%s]" % " ".join(_go_string(v) for v in value)
    if isinstance(value, dict):
        return "map[%s]" % " ".join("%s:%s" % (k, _go_string(value[k])) for k in sorted(value))
    return str(value)


def _log_error(msg, log, level="error", stderr=True):
    if stderr:
        sys.stderr.write("minicontainer: %s%s\n" % ("" if level == "error" else level + ": ",
                                                    msg))
    if log and log[0]:
        try:
            with open(log[0], "a") as f:
                if log[1] == "json":
                    f.write(json.dumps({"level": level, "msg": msg, "time": timestamp()}) + "\n")
                else:
                    f.write("%s %s: %s\n" % (timestamp(), level, msg))
        except OSError:
            pass


# Cold code: `make install` (tools/bytecode.py) caches this module's bytecode split in two.
# In the cached module, each function that `run` and an engine's calls (create, start,
# state, kill, delete, exec, list) do not call on a plain bundle is a stub of the same
# signature, `return _thaw(OFFSET, SIZE)(ARGS)`, or not there at all (a ColdFunction, below);
# its code waits beside the cache in minicontainer.*.cold, read when it is first called.
# Half the module's code is never called by a start: loaded all the same, it took 0.6 MiB of
# `run`'s peak memory and 1 ms of its time (docs/performance.md). Python still decides when
# the cache is stale (it then compiles the source and caches it whole, as always).
_COLD = []  # the cold file's mapping: [address, size] ([0, 0]: none), once looked for
_SOURCE = []  # the module's code compiled from the source, where the cold file failed
_SOURCE_FD = []  # the source, opened before a fork where there was no cold file to map


def _open_cold_code():
    """An fd of the cold code file, when this module was loaded split and the file belongs
    to this source and build (it starts with the header Python checked in the cache: magic
    number, mtime and size of the source; then the id of the build); else None."""
    cached = globals().get("__cached__")
    if not cached or not cached.endswith(".pyc"):
        return None
    try:
        fd = os.open(cached[:-4] + ".cold", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None  # not split
    try:
        st = os.stat(__file__)
        header = sys.modules["_frozen_importlib_external"].MAGIC_NUMBER + struct.pack(
            "<III", 0, int(st.st_mtime) & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF) + \
            _COLD_FUNCTIONS[4]
        if os.pread(fd, len(header), 0) == header:
            return fd
    except OSError:
        pass
    os.close(fd)  # another build's
    return None


def map_cold_code():
    """Maps the cold code file, before every fork: a child may call a stub where the path
    is not to be found (after pivot_root or setns), or is the container's. Where there is
    no cold file to map (none, another build's), the source is opened instead, for the
    same reason: a child compiles its stubs' functions from the host's file, never from a
    file of the image's at its path, which would run the image's code as the host's root."""
    if _COLD:
        return
    debug_step("map-cold-code")
    _COLD[:] = [0, 0]  # tried
    fd = _open_cold_code()
    if fd is None:
        _open_source()
        return
    try:
        ctypes = ctypes_api()
        mmap = libc().mmap
        mmap.restype = ctypes.c_ulong
        mmap.argtypes = (ctypes.c_ulong, ctypes.c_ulong, ctypes.c_long, ctypes.c_long,
                         ctypes.c_long, ctypes.c_long)
        size = os.fstat(fd).st_size
        address = mmap(0, size, 1, 2, fd, 0)  # PROT_READ, MAP_PRIVATE
        if address != ctypes.c_ulong(-1).value:  # not MAP_FAILED
            _COLD[:] = [address, size]
        else:
            _open_source()
    finally:
        os.close(fd)


def cold_code_fds_closed():
    """After a child of ours closed every fd (a monitor's worker): the source's fd, where it
    stood for the cold file, is gone; it is looked for again, on the host as we are."""
    if _SOURCE_FD:
        del _SOURCE_FD[:], _COLD[:]


def _open_source():
    try:
        fd = os.open(__file__, os.O_RDONLY | os.O_CLOEXEC)
        st = os.fstat(fd)
        _SOURCE_FD[:] = [fd, (st.st_dev, st.st_ino)]  # (its file: see _code_from_source)
    except OSError:
        pass  # then a stub's call is an Error, in the child as here (_code_from_source)


_TAKEN_IN_HOOK = []  # what a signal's handler raised in os.fork's hook


def _before_fork():
    """map_cold_code, as os.register_at_fork's hook. Python ignores what a hook raises, and
    a signal's handler may run in it (SIGTERM's and Ctrl-C's, which unwind create: Signalled,
    KeyboardInterrupt): kept for fork() to raise once the fork is done. (Sending the signal
    again would run the handler again at once, in the hook.)"""
    try:
        map_cold_code()
    except KeyboardInterrupt as e:
        _TAKEN_IN_HOOK.append(e)


os.register_at_fork(before=_before_fork)


def fork():
    """os.fork, the cold code mapped first, out of the hook, where a signal's unwinding
    would be lost (test_oci's SIGTERM while create forks)."""
    map_cold_code()
    return _after_fork_hook(os.fork())


def _after_fork_hook(pid):
    """pid, or in the parent what a signal raised in the fork's hook: the child, which has
    done nothing yet, ended first (no pid is lost to the unwinding)."""
    if pid == 0:
        del _TAKEN_IN_HOOK[:]
    elif _TAKEN_IN_HOOK:
        kill_child(pid)
        raise _TAKEN_IN_HOOK.pop()
    return pid


def kill_child(pid):
    """SIGKILL a child of ours and reap it (gone already: nothing to do)."""
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except OSError:
        pass


def _thaw(offset, size):
    """The function whose stub called: its code read from the cold file (or, were that gone,
    compiled from the source), put in place of the stub's."""
    stub = sys._getframe(1).f_code
    debug_step("thaw:" + stub.co_qualname)
    code = _cold_code(offset, size)
    if getattr(code, "co_qualname", None) != stub.co_qualname:
        code = _code_from_source(stub.co_qualname, stub.co_firstlineno)
    function = _function_of(stub)
    if function is None:  # held somewhere unusual: called through the stub each time
        return type(_thaw)(code, globals())  # (which gives it all its arguments)
    function.__code__ = code
    return function


def _cold_code(offset, size):
    """What the cold file holds at offset (marshalled); None where it cannot be read."""
    import marshal
    if globals().get("_ctypes_api") is not None:
        map_cold_code()
    data = None
    if _COLD and offset + size <= _COLD[1]:
        data = (_ctypes_api.c_char * size).from_address(_COLD[0] + offset)
    elif not _COLD:  # not looked for (nor worth loading ctypes to map it: a light
        fd = _open_cold_code()  # command's error path): no fork yet, the paths are ours
        if fd is not None:
            try:
                data = os.pread(fd, size, offset)
            finally:
                os.close(fd)
    try:
        return marshal.loads(data) if data else None
    except (EOFError, ValueError, TypeError, SystemError):  # a cold file cut short
        return None


# In the cached module, a function of the module, or a method of its classes, that takes no
# defaults but constant positional ones, and that nothing names while the module is imported,
# is not even a stub: its def is gone (made NOPs) and a ColdFunction stands in its place, 48
# bytes where a stub's code and function object took 0.8 KiB (0.15 MiB of every start's
# peak). tools/bytecode.py writes here their qualified names, ((name, defaults), ...) for
# those that take some, where the cold file's index of them ({name: (offset, size)}) is, and
# the id of the build, which the cold file's header ends with (see _open_cold_code).
_COLD_FUNCTIONS = ((), (), 0, 0, b"")
_COLD_INDEX = []  # that index, once read


class ColdFunction:
    """A function of the module (or a method) in the cold file: loaded by its first call, or
    any other use of it, which puts it in its place."""
    __slots__ = ("name", "function")

    def __init__(self, name):
        self.name, self.function = name, None

    def __call__(self, *args, **kwargs):
        return (self.function or self.load())(*args, **kwargs)

    def __get__(self, instance, owner=None):
        """A method's, bound as a function is, and loaded only when called: a lookup alone
        (getattr, hasattr) loads nothing."""
        if self.function is not None:
            return self.function.__get__(instance, owner)
        return self if instance is None else type(self.load)(self, instance)

    def __getattr__(self, attribute):  # __code__, __name__...: the function's
        return getattr(self.function or self.load(), attribute)

    def __repr__(self):
        return "<cold function %s>" % self.name

    def load(self):
        debug_step("thaw:" + self.name)
        if not _COLD_INDEX:
            # (Not an index but where the cold file holds one: a damaged file holds anything
            # there; then, and where it cannot be read, the source is our code.)
            index = _cold_code(*_COLD_FUNCTIONS[2:4])
            if isinstance(index, dict):
                _COLD_INDEX.append(index)
        where = _COLD_INDEX[0].get(self.name) if _COLD_INDEX else None
        code = _cold_code(*where) if where else None
        if getattr(code, "co_qualname", None) != self.name:
            code = _code_from_source(self.name)
        self.function = type(_thaw)(code, globals(), None,
                                    dict(_COLD_FUNCTIONS[1]).get(self.name))
        self._put(self.function, instead_of=self)  # (not where a test put another)
        return self.function

    def _put(self, value, instead_of=None):
        """value in this function's place (only instead of that, if given)."""
        owner, _, name = self.name.rpartition(".")
        space = vars(globals()[owner]) if owner else globals()
        if instead_of is None or space.get(name) is instead_of:
            if owner:  # (a class's namespace is read-only but through setattr)
                setattr(globals()[owner], name, value)
            else:
                space[name] = value

    @staticmethod
    def put_in_place():
        """Each in its place, once the module's classes are made (at its end)."""
        for qualname in _COLD_FUNCTIONS[0]:
            cold = ColdFunction(qualname)
            cold._put(cold)


def _function_of(stub):
    """The function made of stub, where its qualified name says: a function of the module, a
    method, a static, class or property function, a decorated one (tests/test_bytecode.py
    finds every stub so)."""
    *path, name = stub.co_qualname.split(".")
    where = globals()
    for part in path:
        where = vars(where[part]) if isinstance(where.get(part), type) else {}
    value = where.get(name)
    for function in (value, getattr(value, "__func__", None), getattr(value, "fget", None),
                     getattr(value, "fset", None), getattr(value, "__wrapped__", None)):
        if getattr(function, "__code__", None) is stub:
            return function
    return None


def _code_from_source(qualname, firstlineno=None):
    if not _SOURCE and (_SOURCE_FD or not _COLD):
        # the fd map_cold_code opened before a fork (read at offsets: a parent shares its
        # file offset); else, not looked for, the path
        source, fd = [], _SOURCE_FD[0] if _SOURCE_FD else None
        try:
            if fd is None:
                fd = os.open(__file__, os.O_RDONLY | os.O_CLOEXEC)
            else:  # still the source's: a child that closed its fds (closerange) may have
                st = os.fstat(fd)  # another file under that number now
                if (st.st_dev, st.st_ino) != _SOURCE_FD[1]:
                    raise OSError(errno.EBADF, "its fd was closed")
            while not source or source[-1]:
                source.append(os.pread(fd, 1 << 20, sum(map(len, source))))
        except OSError as e:
            raise Error("the code of %s: %s: %s" % (qualname, __file__, e.strerror)) from None
        finally:
            if fd is not None and not _SOURCE_FD:
                os.close(fd)
        _SOURCE.append(compile(b"".join(source), __file__, "exec"))
    todo = list(_SOURCE)
    while todo:
        code = todo.pop()
        if code.co_qualname == qualname and firstlineno in (None, code.co_firstlineno):
            return code
        todo.extend(c for c in code.co_consts if isinstance(c, type(_thaw.__code__)))
    raise Error("the code of %s is in neither %s nor its cold file" % (qualname, __file__))


# ==== ctypes bindings ====
# Only what Python's os module lacks (3.8+): unshare, setns, mount, pivot_root, capabilities.

_ctypes_api = None
_libc = None
_pylibc = None


def ctypes_api():
    """The part of ctypes' API used here, made of its C half (_ctypes) alone, with ctypes'
    names and behaviour: the ctypes package defines some sixty types and helpers at import
    for these dozen calls, 0.3 MiB of every start's peak (a third of what we had over runc's)
    and 1.2 ms. Made on first use: light commands need none of it."""
    global _ctypes_api
    if _ctypes_api is None:
        import _ctypes

        def c_type(name, code):  # as ctypes makes c_int ("i") and its other scalar types
            return type(name, (_ctypes._SimpleCData,), {"_type_": code})
        c_char = c_type("c_char", "c")

        class CFunction(_ctypes.CFuncPtr):  # use_errno=True; returns an int unless told
            _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
            _restype_ = c_type("c_int", "i")

        class PythonFunction(CFunction):  # called holding the GIL: pythonapi's
            _flags_ = CFunction._flags_ | _ctypes.FUNCFLAG_PYTHONAPI

        class CDLL:
            """A library loaded; its functions are attributes, looked up on first use."""
            function_type = CFunction

            def __init__(self, name):
                self._handle = _ctypes.dlopen(name)  # where _ctypes finds it for a function

            def __getattr__(self, name):
                function = self.function_type((name, self))
                setattr(self, name, function)
                return function

        class PyDLL(CDLL):
            function_type = PythonFunction

        def create_string_buffer(init, size=None):
            if isinstance(init, int):
                init, size = b"", init
            buf = (c_char * (len(init) + 1 if size is None else size))()
            buf.value = init  # all of it, NUL-terminated where there is room, as ctypes'
            return buf

        _ctypes_api = type("ctypes", (), {
            "CDLL": CDLL, "PyDLL": PyDLL, "create_string_buffer": create_string_buffer,
            "get_errno": _ctypes.get_errno, "addressof": _ctypes.addressof, "c_char": c_char,
            "c_long": c_type("c_long", "l"), "c_ulong": c_type("c_ulong", "L"),
            "c_uint32": c_type("c_uint32", "I")})
    return _ctypes_api


def libc():
    global _libc
    if _libc is None:
        ctypes = ctypes_api()
        _libc = ctypes.CDLL(None)
        _libc.syscall.restype = ctypes.c_long  # a pointer or a 64-bit count, not an int
    return _libc


def _check(ret, what):
    if ret < 0:
        err = ctypes_api().get_errno()
        raise OSError(err, "%s: %s" % (what, os.strerror(err)))
    return ret


CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080
CLONE_INTO_CGROUP = 0x200000000

# The OCI names of namespaces, their clone flags and their /proc/PID/ns names.
NAMESPACES = {
    "user": (CLONE_NEWUSER, "user"), "pid": (CLONE_NEWPID, "pid"),
    "network": (CLONE_NEWNET, "net"), "ipc": (CLONE_NEWIPC, "ipc"),
    "uts": (CLONE_NEWUTS, "uts"), "mount": (CLONE_NEWNS, "mnt"),
    "cgroup": (CLONE_NEWCGROUP, "cgroup"), "time": (CLONE_NEWTIME, "time"),
}

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_SYNCHRONOUS, MS_REMOUNT, MS_MANDLOCK, MS_DIRSYNC = 16, 32, 64, 128
MS_NOSYMFOLLOW, MS_NOATIME, MS_NODIRATIME, MS_BIND = 256, 1024, 2048, 4096
MS_MOVE, MS_REC, MS_SILENT = 8192, 16384, 32768
MS_UNBINDABLE, MS_PRIVATE, MS_SLAVE, MS_SHARED = 1 << 17, 1 << 18, 1 << 19, 1 << 20
MS_RELATIME, MS_STRICTATIME, MS_LAZYTIME = 1 << 21, 1 << 24, 1 << 25
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

# Syscall numbers: Linux 6.19's tables (syscall_64.tbl, syscall_32.tbl and the generic table
# arm64 uses), names in number order, "@N" continuing at number N; parsed on first use, so
# that importing the module costs nothing. seccomp filters name calls of every ABI with them.
_SYSCALLS_X86_64 = """
read write open close stat fstat lstat poll lseek mmap mprotect munmap brk rt_sigaction
rt_sigprocmask rt_sigreturn ioctl pread64 pwrite64 readv writev access pipe select sched_yield
mremap msync mincore madvise shmget shmat shmctl dup dup2 pause nanosleep getitimer alarm
setitimer getpid sendfile socket connect accept sendto recvfrom sendmsg recvmsg shutdown bind
listen getsockname getpeername socketpair setsockopt getsockopt clone fork vfork execve exit
wait4 kill uname semget semop semctl shmdt msgget msgsnd msgrcv msgctl fcntl flock fsync
fdatasync truncate ftruncate getdents getcwd chdir fchdir rename mkdir rmdir creat link unlink
symlink readlink chmod fchmod chown fchown lchown umask gettimeofday getrlimit getrusage sysinfo
times ptrace getuid syslog getgid setuid setgid geteuid getegid setpgid getppid getpgrp setsid
setreuid setregid getgroups setgroups setresuid getresuid setresgid getresgid getpgid setfsuid
setfsgid getsid capget capset rt_sigpending rt_sigtimedwait rt_sigqueueinfo rt_sigsuspend
sigaltstack utime mknod uselib personality ustat statfs fstatfs sysfs getpriority setpriority
sched_setparam sched_getparam sched_setscheduler sched_getscheduler sched_get_priority_max
sched_get_priority_min sched_rr_get_interval mlock munlock mlockall munlockall vhangup
modify_ldt pivot_root _sysctl prctl arch_prctl adjtimex setrlimit chroot sync acct settimeofday
mount umount2 swapon swapoff reboot sethostname setdomainname iopl ioperm create_module
init_module delete_module get_kernel_syms query_module quotactl nfsservctl getpmsg putpmsg
afs_syscall tuxcall security gettid readahead setxattr lsetxattr fsetxattr getxattr lgetxattr
fgetxattr listxattr llistxattr flistxattr removexattr lremovexattr fremovexattr tkill time futex
sched_setaffinity sched_getaffinity set_thread_area io_setup io_destroy io_getevents io_submit
io_cancel get_thread_area lookup_dcookie epoll_create epoll_ctl_old epoll_wait_old
remap_file_pages getdents64 set_tid_address restart_syscall semtimedop fadvise64 timer_create
timer_settime timer_gettime timer_getoverrun timer_delete clock_settime clock_gettime
clock_getres clock_nanosleep exit_group epoll_wait epoll_ctl tgkill utimes vserver mbind
set_mempolicy get_mempolicy mq_open mq_unlink mq_timedsend mq_timedreceive mq_notify
mq_getsetattr kexec_load waitid add_key request_key keyctl ioprio_set ioprio_get inotify_init
inotify_add_watch inotify_rm_watch migrate_pages openat mkdirat mknodat fchownat futimesat
newfstatat unlinkat renameat linkat symlinkat readlinkat fchmodat faccessat pselect6 ppoll
unshare set_robust_list get_robust_list splice tee sync_file_range vmsplice move_pages utimensat
epoll_pwait signalfd timerfd_create eventfd fallocate timerfd_settime timerfd_gettime accept4
signalfd4 eventfd2 epoll_create1 dup3 pipe2 inotify_init1 preadv pwritev rt_tgsigqueueinfo
perf_event_open recvmmsg fanotify_init fanotify_mark prlimit64 name_to_handle_at
open_by_handle_at clock_adjtime syncfs sendmmsg setns getcpu process_vm_readv process_vm_writev
kcmp finit_module sched_setattr sched_getattr renameat2 seccomp getrandom memfd_create
kexec_file_load bpf execveat userfaultfd membarrier mlock2 copy_file_range preadv2 pwritev2
pkey_mprotect pkey_alloc pkey_free statx io_pgetevents rseq uretprobe uprobe @424
pidfd_send_signal io_uring_setup io_uring_enter io_uring_register open_tree move_mount fsopen
fsconfig fsmount fspick pidfd_open clone3 close_range openat2 pidfd_getfd faccessat2
process_madvise epoll_pwait2 mount_setattr quotactl_fd landlock_create_ruleset landlock_add_rule
landlock_restrict_self memfd_secret process_mrelease futex_waitv set_mempolicy_home_node
cachestat fchmodat2 map_shadow_stack futex_wake futex_wait futex_requeue statmount listmount
lsm_get_self_attr lsm_set_self_attr lsm_list_modules mseal setxattrat getxattrat listxattrat
removexattrat open_tree_attr file_getattr file_setattr listns
"""

_SYSCALLS_I386 = """
restart_syscall exit fork read write open close waitpid creat link unlink execve chdir time
mknod chmod lchown break oldstat lseek getpid mount umount setuid getuid stime ptrace alarm
oldfstat pause utime stty gtty access nice ftime sync kill rename mkdir rmdir dup pipe times
prof brk setgid getgid signal geteuid getegid acct umount2 lock ioctl fcntl mpx setpgid ulimit
oldolduname umask chroot ustat dup2 getppid getpgrp setsid sigaction sgetmask ssetmask setreuid
setregid sigsuspend sigpending sethostname setrlimit getrlimit getrusage gettimeofday
settimeofday getgroups setgroups select symlink oldlstat readlink uselib swapon reboot readdir
mmap munmap truncate ftruncate fchmod fchown getpriority setpriority profil statfs fstatfs
ioperm socketcall syslog setitimer getitimer stat lstat fstat olduname iopl vhangup idle vm86old
wait4 swapoff sysinfo ipc fsync sigreturn clone setdomainname uname modify_ldt adjtimex mprotect
sigprocmask create_module init_module delete_module get_kernel_syms quotactl getpgid fchdir
bdflush sysfs personality afs_syscall setfsuid setfsgid _llseek getdents _newselect flock msync
readv writev getsid fdatasync _sysctl mlock munlock mlockall munlockall sched_setparam
sched_getparam sched_setscheduler sched_getscheduler sched_yield sched_get_priority_max
sched_get_priority_min sched_rr_get_interval nanosleep mremap setresuid getresuid vm86
query_module poll nfsservctl setresgid getresgid prctl rt_sigreturn rt_sigaction rt_sigprocmask
rt_sigpending rt_sigtimedwait rt_sigqueueinfo rt_sigsuspend pread64 pwrite64 chown getcwd capget
capset sigaltstack sendfile getpmsg putpmsg vfork ugetrlimit mmap2 truncate64 ftruncate64 stat64
lstat64 fstat64 lchown32 getuid32 getgid32 geteuid32 getegid32 setreuid32 setregid32 getgroups32
setgroups32 fchown32 setresuid32 getresuid32 setresgid32 getresgid32 chown32 setuid32 setgid32
setfsuid32 setfsgid32 pivot_root mincore madvise getdents64 fcntl64 @224 gettid readahead
setxattr lsetxattr fsetxattr getxattr lgetxattr fgetxattr listxattr llistxattr flistxattr
removexattr lremovexattr fremovexattr tkill sendfile64 futex sched_setaffinity sched_getaffinity
set_thread_area get_thread_area io_setup io_destroy io_getevents io_submit io_cancel fadvise64
@252 exit_group lookup_dcookie epoll_create epoll_ctl epoll_wait remap_file_pages
set_tid_address timer_create timer_settime timer_gettime timer_getoverrun timer_delete
clock_settime clock_gettime clock_getres clock_nanosleep statfs64 fstatfs64 tgkill utimes
fadvise64_64 vserver mbind get_mempolicy set_mempolicy mq_open mq_unlink mq_timedsend
mq_timedreceive mq_notify mq_getsetattr kexec_load waitid @286 add_key request_key keyctl
ioprio_set ioprio_get inotify_init inotify_add_watch inotify_rm_watch migrate_pages openat
mkdirat mknodat fchownat futimesat fstatat64 unlinkat renameat linkat symlinkat readlinkat
fchmodat faccessat pselect6 ppoll unshare set_robust_list get_robust_list splice sync_file_range
tee vmsplice move_pages getcpu epoll_pwait utimensat signalfd timerfd_create eventfd fallocate
timerfd_settime timerfd_gettime signalfd4 eventfd2 epoll_create1 dup3 pipe2 inotify_init1 preadv
pwritev rt_tgsigqueueinfo perf_event_open recvmmsg fanotify_init fanotify_mark prlimit64
name_to_handle_at open_by_handle_at clock_adjtime syncfs sendmmsg setns process_vm_readv
process_vm_writev kcmp finit_module sched_setattr sched_getattr renameat2 seccomp getrandom
memfd_create bpf execveat socket socketpair bind connect listen accept4 getsockopt setsockopt
getsockname getpeername sendto sendmsg recvfrom recvmsg shutdown userfaultfd membarrier mlock2
copy_file_range preadv2 pwritev2 pkey_mprotect pkey_alloc pkey_free statx arch_prctl
io_pgetevents rseq @393 semget semctl shmget shmctl shmat shmdt msgget msgsnd msgrcv msgctl
clock_gettime64 clock_settime64 clock_adjtime64 clock_getres_time64 clock_nanosleep_time64
timer_gettime64 timer_settime64 timerfd_gettime64 timerfd_settime64 utimensat_time64
pselect6_time64 ppoll_time64 @416 io_pgetevents_time64 recvmmsg_time64 mq_timedsend_time64
mq_timedreceive_time64 semtimedop_time64 rt_sigtimedwait_time64 futex_time64
sched_rr_get_interval_time64 pidfd_send_signal io_uring_setup io_uring_enter io_uring_register
open_tree move_mount fsopen fsconfig fsmount fspick pidfd_open clone3 close_range openat2
pidfd_getfd faccessat2 process_madvise epoll_pwait2 mount_setattr quotactl_fd
landlock_create_ruleset landlock_add_rule landlock_restrict_self memfd_secret process_mrelease
futex_waitv set_mempolicy_home_node cachestat fchmodat2 @454 futex_wake futex_wait futex_requeue
statmount listmount lsm_get_self_attr lsm_set_self_attr lsm_list_modules mseal setxattrat
getxattrat listxattrat removexattrat open_tree_attr file_getattr file_setattr listns
"""

_SYSCALLS_AARCH64 = """
io_setup io_destroy io_submit io_cancel io_getevents setxattr lsetxattr fsetxattr getxattr
lgetxattr fgetxattr listxattr llistxattr flistxattr removexattr lremovexattr fremovexattr getcwd
lookup_dcookie eventfd2 epoll_create1 epoll_ctl epoll_pwait dup dup3 fcntl inotify_init1
inotify_add_watch inotify_rm_watch ioctl ioprio_set ioprio_get flock mknodat mkdirat unlinkat
symlinkat linkat renameat umount2 mount pivot_root nfsservctl statfs fstatfs truncate ftruncate
fallocate faccessat chdir fchdir chroot fchmod fchmodat fchownat fchown openat close vhangup
pipe2 quotactl getdents64 lseek read write readv writev pread64 pwrite64 preadv pwritev sendfile
pselect6 ppoll signalfd4 vmsplice splice tee readlinkat newfstatat fstat sync fsync fdatasync
sync_file_range timerfd_create timerfd_settime timerfd_gettime utimensat acct capget capset
personality exit exit_group waitid set_tid_address unshare futex set_robust_list get_robust_list
nanosleep getitimer setitimer kexec_load init_module delete_module timer_create timer_gettime
timer_getoverrun timer_settime timer_delete clock_settime clock_gettime clock_getres
clock_nanosleep syslog ptrace sched_setparam sched_setscheduler sched_getscheduler
sched_getparam sched_setaffinity sched_getaffinity sched_yield sched_get_priority_max
sched_get_priority_min sched_rr_get_interval restart_syscall kill tkill tgkill sigaltstack
rt_sigsuspend rt_sigaction rt_sigprocmask rt_sigpending rt_sigtimedwait rt_sigqueueinfo
rt_sigreturn setpriority getpriority reboot setregid setgid setreuid setuid setresuid getresuid
setresgid getresgid setfsuid setfsgid times setpgid getpgid getsid setsid getgroups setgroups
uname sethostname setdomainname getrlimit setrlimit getrusage umask prctl getcpu gettimeofday
settimeofday adjtimex getpid getppid getuid geteuid getgid getegid gettid sysinfo mq_open
mq_unlink mq_timedsend mq_timedreceive mq_notify mq_getsetattr msgget msgctl msgrcv msgsnd
semget semctl semtimedop semop shmget shmctl shmat shmdt socket socketpair bind listen accept
connect getsockname getpeername sendto recvfrom setsockopt getsockopt shutdown sendmsg recvmsg
readahead brk munmap mremap add_key request_key keyctl clone execve mmap fadvise64 swapon
swapoff mprotect msync mlock munlock mlockall munlockall mincore madvise remap_file_pages mbind
get_mempolicy set_mempolicy migrate_pages move_pages rt_tgsigqueueinfo perf_event_open accept4
recvmmsg @260 wait4 prlimit64 fanotify_init fanotify_mark name_to_handle_at open_by_handle_at
clock_adjtime syncfs setns sendmmsg process_vm_readv process_vm_writev kcmp finit_module
sched_setattr sched_getattr renameat2 seccomp getrandom memfd_create bpf execveat userfaultfd
membarrier mlock2 copy_file_range preadv2 pwritev2 pkey_mprotect pkey_alloc pkey_free statx
io_pgetevents rseq kexec_file_load @424 pidfd_send_signal io_uring_setup io_uring_enter
io_uring_register open_tree move_mount fsopen fsconfig fsmount fspick pidfd_open clone3
close_range openat2 pidfd_getfd faccessat2 process_madvise epoll_pwait2 mount_setattr
quotactl_fd landlock_create_ruleset landlock_add_rule landlock_restrict_self memfd_secret
process_mrelease futex_waitv set_mempolicy_home_node cachestat fchmodat2 map_shadow_stack
futex_wake futex_wait futex_requeue statmount listmount lsm_get_self_attr lsm_set_self_attr
lsm_list_modules mseal setxattrat getxattrat listxattrat removexattrat open_tree_attr
file_getattr file_setattr listns
"""

# x32 runs x86_64's numbers with bit 30 set, except that these got their own compat entry
# points at 512..547 (in this order) and these few 64-bit-only calls do not exist at all.
_X32_RENUMBERED = """
rt_sigaction rt_sigreturn ioctl readv writev recvfrom sendmsg recvmsg execve ptrace rt_sigpending
rt_sigtimedwait rt_sigqueueinfo sigaltstack timer_create mq_notify kexec_load waitid
set_robust_list get_robust_list vmsplice move_pages preadv pwritev rt_tgsigqueueinfo recvmmsg
sendmmsg process_vm_readv process_vm_writev setsockopt getsockopt io_setup io_submit execveat
preadv2 pwritev2
"""
_X32_ABSENT = """
uselib _sysctl create_module get_kernel_syms query_module nfsservctl set_thread_area
get_thread_area epoll_ctl_old epoll_wait_old vserver
"""
_X32_BIT = 0x40000000

_syscall_tables = {}


def syscall_table(abi):
    """{name: number} for "x86_64", "i386", "x32" (numbers carry bit 30) or "aarch64"."""
    table = _syscall_tables.get(abi)
    if table is None:
        if abi == "x32":
            absent = set(_X32_ABSENT.split())
            table = {name: nr | _X32_BIT for name, nr in syscall_table("x86_64").items()
                     if name not in absent}
            for i, name in enumerate(_X32_RENUMBERED.split()):
                table[name] = _X32_BIT | (512 + i)
        else:
            source = {"x86_64": _SYSCALLS_X86_64, "i386": _SYSCALLS_I386,
                      "aarch64": _SYSCALLS_AARCH64}[abi]
            table, nr = {}, 0
            for word in source.split():
                if word[0] == "@":
                    nr = int(word[1:])
                else:
                    table[word] = nr
                    nr += 1
        _syscall_tables[abi] = table
    return table


# Machine names (uname -m, and Debian's) as OCI platforms call the architecture (Go's).
OCI_ARCH = {"x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm",
            "armel": "arm", "i386": "386", "i686": "386"}
# The ABIs we have syscall tables for, by their kernel and their OCI names.
_ARCH_ALIASES = {name: abi for abi in ("x86_64", "aarch64") for name in (abi, OCI_ARCH[abi])}


def native_arch(arch=None):
    """The ABI name ("x86_64", "aarch64") of `arch` (an alias such as "amd64"), or of this
    process when None."""
    machine = os.uname().machine if arch is None else arch
    if arch is None and struct.calcsize("P") == 8:
        # Under a PER_LINUX32 personality (linux32, setarch) a 64-bit process sees i686 or
        # armv8l, but its syscalls are still the 64-bit ABI's.
        machine = {"i386": "x86_64", "i486": "x86_64", "i586": "x86_64", "i686": "x86_64",
                   "armv8l": "aarch64", "armv7l": "aarch64"}.get(machine, machine)
    if machine not in _ARCH_ALIASES:
        raise Error("unsupported architecture %r (x86_64 and aarch64 are)" % machine)
    return _ARCH_ALIASES[machine]


_native_syscalls = None


# Calls added since Linux 5.1 have one number on every architecture of ours: those a start
# makes are looked up here, not in a table parsed for them (0.1 MiB of `run`'s peak).
_SYSCALLS_COMMON = {"pidfd_send_signal": 424, "open_tree": 428, "move_mount": 429,
                    "pidfd_open": 434, "clone3": 435, "close_range": 436, "openat2": 437,
                    "pidfd_getfd": 438, "mount_setattr": 442}


def syscall_nr(name):
    """The number of a call glibc does not wrap (or not as we need), on this machine."""
    global _native_syscalls
    if name in _SYSCALLS_COMMON and native_arch():  # (an Error on another architecture)
        return _SYSCALLS_COMMON[name]
    if _native_syscalls is None:
        _native_syscalls = syscall_table(native_arch())
    return _native_syscalls[name]


AT_FDCWD, AT_EMPTY_PATH = -100, 0x1000
OPEN_TREE_CLONE, MOVE_MOUNT_F_EMPTY_PATH, MOUNT_ATTR_IDMAP = 1, 4, 0x00100000
MOVE_MOUNT_T_SYMLINKS, AT_RECURSIVE = 0x10, 0x8000


def unshare(flags):
    _check(libc().unshare(flags), "unshare")


def setns(fd, nstype=0):
    _check(libc().setns(fd, nstype), "setns")


def mount(source, target, fstype, flags=0, data=None):
    def enc(s):
        return s.encode() if isinstance(s, str) else s
    _check(libc().mount(enc(source), enc(target), enc(fstype), flags, enc(data)),
           "mount %s on %s" % (source or fstype, target))


def umount2(target, flags=0):
    _check(libc().umount2(target.encode(), flags), "umount %s" % target)


def pivot_root(new_root, put_old):
    _check(libc().syscall(syscall_nr("pivot_root"), new_root.encode(), put_old.encode()),
           "pivot_root")


def idmapped_tree(path, userns_fd, recursive=False):
    """A detached copy of the mount at path (open_tree) that shows its files' owners mapped
    by the user namespace: uid 0 on disk is the namespace's root (kernel 5.12+). Made as
    the host's root, it can be attached later from inside a user namespace (move_tree)."""
    tree = _check(libc().syscall(syscall_nr("open_tree"), AT_FDCWD, path.encode(), OPEN_TREE_CLONE |
                                 os.O_CLOEXEC | (AT_RECURSIVE if recursive else 0)),
                  "open_tree %s" % path)
    try:
        attr = struct.pack("QQQQ", MOUNT_ATTR_IDMAP, 0, 0, userns_fd)
        _check(libc().syscall(syscall_nr("mount_setattr"), tree, b"", AT_EMPTY_PATH |
                              (AT_RECURSIVE if recursive else 0), attr, len(attr)),
               "id-mapped mount of %s" % path)
    except BaseException:
        os.close(tree)
        raise
    return tree


def move_tree(tree, target):
    """Attach a detached mount at target (a path; /proc/self/fd/N ones are followed)."""
    _check(libc().syscall(syscall_nr("move_mount"), tree, b"", AT_FDCWD, target.encode(),
                          MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_SYMLINKS),
           "move_mount on %s" % target)


def idmapped_bind(path, userns_fd):
    """Bind path on itself through an id-mapped mount (idmapped_tree)."""
    tree = idmapped_tree(path, userns_fd)
    try:
        move_tree(tree, path)
    finally:
        os.close(tree)


def open_in_root(root, path, flags=os.O_PATH):
    """An fd of `path` resolved as if `root` were "/" — by the kernel, atomically, with
    openat2(RESOLVE_IN_ROOT) where it exists (5.6+), so that no symlink swapped in by a
    process racing us can send a mount outside the container (runc's CVE-2021-30465).
    Older kernels: our own resolution, then a check of where the fd really landed."""
    ctypes = ctypes_api()
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        how = struct.pack("QQQ", flags | os.O_CLOEXEC, 0, 0x10 | 0x02)  # IN_ROOT, NO_MAGICLINKS
        fd = libc().syscall(syscall_nr("openat2"), root_fd, path.encode(), how, len(how))
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if err != errno.ENOSYS:
            raise OSError(err, "%s: %s" % (path, os.strerror(err)))
    finally:
        os.close(root_fd)
    fd = os.open(resolve_in_root(root, path), flags | os.O_NOFOLLOW | os.O_CLOEXEC)
    real = os.readlink("/proc/self/fd/%d" % fd)
    if real != root and not real.startswith(root.rstrip("/") + "/"):
        os.close(fd)
        raise Error("%s: resolves outside the container's root" % path)
    return fd


def prctl(option, arg2=0, arg3=0, arg4=0, arg5=0):
    ctypes = ctypes_api()
    ul = ctypes.c_ulong
    return _check(libc().prctl(option, ul(arg2), ul(arg3), ul(arg4), ul(arg5)), "prctl")


def capset(effective, permitted, inheritable):
    ctypes = ctypes_api()
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = (ctypes.c_uint32 * 6)(effective & 0xffffffff, permitted & 0xffffffff,
                                 inheritable & 0xffffffff, effective >> 32, permitted >> 32,
                                 inheritable >> 32)
    _check(libc().syscall(syscall_nr("capset"), header, data), "capset")


CAPABILITIES = [
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID",
    "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW",
    "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD",
    "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG",
    "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
]


def cap_last_cap():
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(CAPABILITIES) - 1


def cap_mask(names, where):
    mask = 0
    for name in names:
        short = name.upper()
        short = short[4:] if short.startswith("CAP_") else short
        if short not in CAPABILITIES:
            raise Error("%s: unknown capability %s" % (where, name))
        mask |= 1 << CAPABILITIES.index(short)
    return mask


def fork_into_cgroup(cgroup_dir):
    """os.fork(), the child born in the cgroup v2 directory `cgroup_dir` (clone3's
    CLONE_INTO_CGROUP, Linux 5.7+): a move into a cgroup waits for an RCU grace period
    (7 to 15 ms here, when no move went just before), a birth there does not. None where
    clone3 fails (a kernel before 5.7, a seccomp filter, the cgroup refusing a process):
    fork and move then, and the move says what is wrong.

    Only from a single-threaded process, as the caller must see to: clone3 is the system
    call alone, and what glibc's fork() adds, resetting its locks and the thread's cached
    id in the child, matters only where another thread may hold a lock. Python's own fork
    work (the interpreter's reinitialisation, os.register_at_fork's hooks) runs as around
    os.fork, and the call holds the interpreter's lock as os.fork's does."""
    python = _libc_python()
    try:
        before, in_child, in_parent = (python.PyOS_BeforeFork, python.PyOS_AfterFork_Child,
                                       python.PyOS_AfterFork_Parent)
    except AttributeError:  # an interpreter that does not export its C API
        return None
    fd = os.open(cgroup_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        # struct clone_args up to .cgroup: flags, pidfd, child_tid, parent_tid,
        # exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup
        args = struct.pack("11Q", CLONE_INTO_CGROUP, 0, 0, 0, signal.SIGCHLD, 0, 0, 0, 0, 0,
                           fd)
        nr = syscall_nr("clone3")
        before()
        pid = python.syscall(nr, args, len(args))
        if pid == 0:
            in_child()
            return 0
        err = ctypes_api().get_errno()  # before the next call of ours takes its own
        in_parent()
        if pid > 0:
            _after_fork_hook(pid)
    finally:
        # The child's too, at once: an fd of a host directory is a way out of the
        # container through /proc/self/fd (runc's CVE-2024-21626 was a cgroup's).
        os.close(fd)
    if pid < 0:
        debug("clone3 into the cgroup: %s; fork, then move the child" % os.strerror(err))
        return None
    return pid


def _libc_python():
    """The C library's functions called holding the interpreter's lock, and Python's C API
    (the running interpreter's symbols are the process's, as ctypes' pythonapi finds them)."""
    global _pylibc
    if _pylibc is None:
        ctypes = ctypes_api()
        _pylibc = ctypes.PyDLL(None)
        _pylibc.syscall.restype = ctypes.c_long
    return _pylibc


def fork_perhaps_into_cgroup(cgroup, into):
    """(pid, whether the child was born in `cgroup`): fork_into_cgroup's where asked and
    this process has one thread, else os.fork's (the child is then to be moved)."""
    map_cold_code()  # (here, where a signal unwinds us, rather than in the fork's hook)
    if into and len(os.listdir("/proc/self/task")) == 1:
        pid = fork_into_cgroup(cgroup.v2)
        if pid is not None:
            return pid, True
    return fork(), False


def pidfd_open(pid):
    """A pidfd, or None where the kernel is older than 5.3; it pins the process identity."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


# Docker's default capability set (moby's caps/defaults.go): a docker-like container's, and what
# a docker-format seccomp profile's caps conditions test when the caller names none.
DEFAULT_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
                "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
                "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"]


def resolve_in_root(root, path):
    """The host path of `path` inside `root`, following symlinks as if root were "/".

    A symlink in the rootfs can point anywhere ("/etc", "../../.."); resolved here it stays
    inside root, as the container would see it, so a mount cannot land on the host."""
    parts = [p for p in path.split("/") if p]
    resolved = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            target = os.readlink(candidate)
        except OSError:  # not a link, or not there yet: take it as it is
            resolved.append(part)
            continue
        links += 1
        if links > 40:
            raise Error("%s: too many levels of symbolic links" % path)
        if target.startswith("/"):
            resolved = []
        parts = [p for p in target.split("/") if p] + parts
    return os.path.join(root, *resolved)


# ==== seccomp ====
# Compiles an OCI `linux.seccomp` object to classic BPF here, without libseccomp, and loads
# it with seccomp(2), with the syscall tables of the ctypes bindings.

# Calls that exist only on architectures we never filter (ARM32, s390, ppc, riscv, ...).
# libseccomp knows them, so profiles written for docker name them; like libseccomp we skip
# them on our architectures instead of rejecting the profile.
_SYSCALLS_ELSEWHERE = """
recv send arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush set_tls
usr26 usr32 swapcontext s390_pci_mmio_read s390_pci_mmio_write s390_runtime_instr
s390_guarded_storage s390_sthyi riscv_flush_icache riscv_hwprobe spu_run spu_create
subpage_prot switch_endian multiplexer rtas sys_debug_setcontext pciconfig_iobase
pciconfig_read pciconfig_write getpagesize sysmips cachectl atomic_cmpxchg_32 atomic_barrier
get_tls kern_features utrap_install perfctr memory_ordering getxgid getxpid getxuid
"""

_AUDIT_ARCH = {"x86_64": 0xC000003E, "i386": 0x40000003, "aarch64": 0xC00000B7}
# Every SCMP_ARCH_* name libseccomp knows; those naming an ABI the running kernel can't
# execute here are irrelevant and ignored, ARM32 on aarch64 we have no table for (blocked).
_SCMP_ARCHES = {
    "SCMP_ARCH_X86_64": "x86_64", "SCMP_ARCH_X86": "i386", "SCMP_ARCH_X32": "x32",
    "SCMP_ARCH_AARCH64": "aarch64", "SCMP_ARCH_ARM": "arm", "SCMP_ARCH_MIPS": None,
    "SCMP_ARCH_MIPS64": None, "SCMP_ARCH_MIPS64N32": None, "SCMP_ARCH_MIPSEL": None,
    "SCMP_ARCH_MIPSEL64": None, "SCMP_ARCH_MIPSEL64N32": None, "SCMP_ARCH_PPC": None,
    "SCMP_ARCH_PPC64": None, "SCMP_ARCH_PPC64LE": None, "SCMP_ARCH_S390": None,
    "SCMP_ARCH_S390X": None, "SCMP_ARCH_PARISC": None, "SCMP_ARCH_PARISC64": None,
    "SCMP_ARCH_RISCV64": None, "SCMP_ARCH_LOONGARCH64": None, "SCMP_ARCH_M68K": None,
    "SCMP_ARCH_SH": None, "SCMP_ARCH_SHEB": None,
}
_SUB_ABIS = {"x86_64": ("i386", "x32"), "aarch64": ()}

_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_EPERM, _ENOSYS = 1, 38
# SECCOMP_RET_* for each OCI action; the errno-carrying ones get errnoRet in the low 16 bits.
_SECCOMP_ACTIONS = {
    "SCMP_ACT_KILL": 0x00000000, "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": _RET_KILL_PROCESS, "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": _RET_ERRNO, "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000, "SCMP_ACT_ALLOW": 0x7FFF0000,
    "SCMP_ACT_NOTIFY": 0x7FC00000,  # SECCOMP_RET_USER_NOTIF: an agent answers the call
}
_FILTER_FLAG_NEW_LISTENER = 8
_SECCOMP_FLAGS = {"SECCOMP_FILTER_FLAG_TSYNC": 1, "SECCOMP_FILTER_FLAG_LOG": 2,
                  "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4}
_SECCOMP_OPS = ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE",
                "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ")

# Classic BPF opcodes used below.
_BPF_LD_ABS, _BPF_AND_K, _BPF_RET_K = 0x20, 0x54, 0x06
_BPF_JA, _BPF_JEQ, _BPF_JGT, _BPF_JGE = 0x05, 0x15, 0x25, 0x35
_BPF_MAXINSNS = 4096

def _known_syscall(name):
    return (any(name in syscall_table(abi) for abi in ("x86_64", "i386", "aarch64"))
            or name in _SYSCALLS_ELSEWHERE.split())


def _seccomp_action(action, errno_ret, where):
    if action not in _SECCOMP_ACTIONS:
        raise Error("seccomp: %s: unknown action %r" % (where, action))
    ret = _SECCOMP_ACTIONS[action]
    if action in ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"):
        errno_ret = _EPERM if errno_ret is None else errno_ret
        # The kernel hands at most MAX_ERRNO back as an error.
        if not isinstance(errno_ret, int) or not 0 <= errno_ret <= 4095:
            raise Error("seccomp: %s: errnoRet %r is not 0..4095" % (where, errno_ret))
        ret |= errno_ret
    return ret


def _u64(value, where):
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 64:
        raise Error("seccomp: %s: %r is not an unsigned 64-bit value" % (where, value))
    return value


def _seccomp_flags(profile):
    flags = 0
    for flag in profile.get("flags") or ():
        if flag not in _SECCOMP_FLAGS:
            raise Error("seccomp: unknown flag %r" % flag)
        flags |= _SECCOMP_FLAGS[flag]
    return flags


def _seccomp_rules(profile):
    """[(names, ret, [conditions...])]: runc's semantics, one entry per alternative."""
    rules = []
    for i, call in enumerate(profile.get("syscalls") or ()):
        where = "syscalls[%s]" % i
        if not isinstance(call, dict):
            raise Error("seccomp: %s is not an object" % where)
        for key in call:
            if key not in ("names", "name", "action", "errnoRet", "args", "comment"):
                raise Error("seccomp: %s: unknown field %r" % (where, key))
        names = list(call.get("names") or ()) + ([call["name"]] if call.get("name") else [])
        if not names:
            raise Error("seccomp: %s: no syscall names" % where)
        for name in names:
            if not isinstance(name, str):
                raise Error("seccomp: %s: syscall name %r is not a string" % (where, name))
        # A name no table knows is skipped, as runc does: engines' profiles name syscalls
        # of newer kernels (and podman's names "syscall", which no kernel has).
        names = [name for name in names if _known_syscall(name)]
        ret = _seccomp_action(call.get("action"), call.get("errnoRet"), where)
        conds = []
        for j, arg in enumerate(call.get("args") or ()):
            awhere = "%s.args[%s]" % (where, j)
            if not isinstance(arg, dict):
                raise Error("seccomp: %s is not an object" % awhere)
            for key in arg:
                if key not in ("index", "value", "valueTwo", "op"):
                    raise Error("seccomp: %s: unknown field %r" % (awhere, key))
            index = arg.get("index")
            if not isinstance(index, int) or not 0 <= index <= 5:
                raise Error("seccomp: %s: index %r is not 0..5" % (awhere, index))
            if arg.get("op") not in _SECCOMP_OPS:
                raise Error("seccomp: %s: unknown op %r" % (awhere, arg.get("op")))
            conds.append((index, arg["op"], _u64(arg.get("value", 0), awhere),
                          _u64(arg.get("valueTwo", 0), awhere)))
        # runc (and so docker) turn several conditions on one argument into alternatives
        # (OR) rather than a conjunction; profiles in the wild depend on that.
        indexes = [c[0] for c in conds]
        if len(set(indexes)) < len(indexes):
            rules.extend((names, ret, [c]) for c in conds)
        else:
            rules.append((names, ret, conds))
    return rules


class _Asm:
    """Straight-line BPF with symbolic forward jumps (labels are plain objects)."""

    def __init__(self):
        self.code = []

    def label(self, label):
        self.code.append(label)

    def ld(self, offset):
        self.code.append((_BPF_LD_ABS, 0, 0, offset))

    def jump(self, op, k, jt, jf):
        self.code.append((op, jt, jf, k))

    def ja(self, label):
        self.code.append((_BPF_JA, 0, 0, label))

    def ret(self, value):
        self.code.append((_BPF_RET_K, 0, 0, value))

    def assemble(self):
        where, n = {}, 0
        for ins in self.code:
            if isinstance(ins, tuple):
                n += 1
            else:
                where[id(ins)] = n
        if n > _BPF_MAXINSNS:
            raise Error("seccomp: profile compiles to %d BPF instructions, over the kernel's %d"
                        % (n, _BPF_MAXINSNS))
        out, n = [], 0
        for ins in self.code:
            if not isinstance(ins, tuple):
                continue
            code, jt, jf, k = ins
            if code == _BPF_JA:
                k = where[id(k)] - n - 1
            else:
                jt, jf = (t if isinstance(t, int) else where[id(t)] - n - 1 for t in (jt, jf))
                if not (0 <= jt <= 255 and 0 <= jf <= 255):
                    raise Error("seccomp: a syscall's argument rules are too long for BPF jumps")
            out.append(struct.pack("<HBBI", code, jt, jf, k))
            n += 1
        return b"".join(out)


def _emit_condition(asm, cond, fail, wide):
    """Fall through when the condition holds, jump to `fail` otherwise.

    seccomp_data.args are 64-bit but classic BPF loads 32 bits: compare the high words
    first and the low words only where the high words are equal (little-endian layout).
    i386 arguments are 32-bit, so like libseccomp only the low word counts there.
    """
    index, op, value, two = cond
    lo, hi = 16 + 8 * index, 20 + 8 * index
    ok = object()
    if op == "SCMP_CMP_MASKED_EQ":
        if wide:
            asm.ld(hi)
            asm.jump(_BPF_AND_K, value >> 32, 0, 0)
            asm.jump(_BPF_JEQ, two >> 32, 0, fail)
        asm.ld(lo)
        asm.jump(_BPF_AND_K, value & 0xFFFFFFFF, 0, 0)
        asm.jump(_BPF_JEQ, two & 0xFFFFFFFF, 0, fail)
        return
    vhi, vlo = value >> 32, value & 0xFFFFFFFF
    # (jump if the high words decide "holds", jump if they decide "fails", low-word test,
    #  whether that test means "holds")
    table = {
        "SCMP_CMP_EQ": (None, "ne", _BPF_JEQ, True),
        "SCMP_CMP_NE": ("ne", None, _BPF_JEQ, False),
        "SCMP_CMP_GT": ("gt", "lt", _BPF_JGT, True),
        "SCMP_CMP_GE": ("gt", "lt", _BPF_JGE, True),
        "SCMP_CMP_LT": ("lt", "gt", _BPF_JGE, False),
        "SCMP_CMP_LE": ("lt", "gt", _BPF_JGT, False),
    }
    hi_ok, hi_fail, low_op, low_holds = table[op]
    if wide:
        asm.ld(hi)
        if "gt" in (hi_ok, hi_fail):
            asm.jump(_BPF_JGT, vhi, ok if hi_ok == "gt" else fail, 0)
        # Here hi <= vhi for ordered ops, so "not equal" means "less than".
        asm.jump(_BPF_JEQ, vhi, 0, ok if hi_ok in ("ne", "lt") else fail)
    asm.ld(lo)
    if low_holds:
        asm.jump(low_op, vlo, 0, fail)
    else:
        asm.jump(low_op, vlo, fail, 0)
    asm.label(ok)


def _emit_abi(asm, abi, rules, default_ret, enosys):
    """Dispatch on the syscall number (already in A) for one ABI."""
    table = syscall_table(abi)
    per_nr = {}
    for names, ret, conds in rules:
        for name in names:
            if name in table:  # other arches' names are skipped, as libseccomp does
                per_nr.setdefault(table[name], []).append((ret, conds))
    if enosys:
        # Calls newer than our table get ENOSYS, not the default errno, so that libc falls
        # back to older calls (runc does the same for syscalls its profile predates).
        asm.jump(_BPF_JGT, max(table.values()), 0, 1)
        asm.ret(_RET_ERRNO | _ENOSYS)
    # Per syscall: argument rules first in profile order (first match wins), then the first
    # unconditional rule, then the default action.
    targets, blocks = {}, []
    for nr, entries in per_nr.items():
        conditional = [(ret, conds) for ret, conds in entries if conds]
        fallback = next((ret for ret, conds in entries if not conds), default_ret)
        if conditional:
            label = object()
            targets[nr] = ("block", label)
            blocks.append((label, conditional, fallback))
        elif fallback != default_ret:
            targets[nr] = ("ret", fallback)
    # Number ranges with one outcome, searched as a balanced tree: about log2(ranges) jumps.
    ranges, start = [], 0
    for nr in sorted(targets):
        if nr > start:
            ranges.append((start, ("ret", default_ret)))
        ranges.append((nr, targets[nr]))
        start = nr + 1
    ranges.append((start, ("ret", default_ret)))
    merged = []
    for first, target in ranges:
        if not merged or merged[-1][1] != target:
            merged.append((first, target))

    def leaf(target):
        if target[0] == "ret":
            asm.ret(target[1])
        else:
            asm.ja(target[1])

    def tree(items):
        if len(items) == 1:
            return leaf(items[0][1])
        mid = len(items) // 2
        asm.jump(_BPF_JGE, items[mid][0], 0, 1)
        if len(items) - mid == 1:
            leaf(items[mid][1])
            return tree(items[:mid])
        right = object()
        asm.ja(right)
        tree(items[:mid])
        asm.label(right)
        tree(items[mid:])

    tree(merged)
    wide = abi != "i386"
    for label, conditional, fallback in blocks:
        asm.label(label)
        for ret, conds in conditional:
            fail = object()
            for cond in conds:
                _emit_condition(asm, cond, fail, wide)
            asm.ret(ret)
            asm.label(fail)
        asm.ret(fallback)


def seccomp_program(profile, arch=None):
    """Compile an OCI `linux.seccomp` object into a classic BPF program (sock_filter[]).

    `arch` is "x86_64" or "aarch64" (default: the running machine). ABIs other than the
    native one run only if `architectures` lists them (i386, x32 on x86_64); any other
    audit arch, or x32 numbers when x32 isn't listed, kill the process as libseccomp does.
    """
    arch = native_arch(arch)
    if not isinstance(profile, dict):
        raise Error("seccomp: the profile is not a JSON object")
    for key in profile:
        if key not in ("defaultAction", "defaultErrnoRet", "architectures", "flags",
                       "syscalls", "listenerPath", "listenerMetadata"):
            raise Error("seccomp: unknown field %r" % key)
    if "defaultAction" not in profile:
        raise Error("seccomp: defaultAction is missing")
    if _notifies(profile) and not profile.get("listenerPath"):
        raise Error("seccomp: SCMP_ACT_NOTIFY needs a listenerPath (the agent's socket)")
    if profile.get("listenerPath") and not profile["listenerPath"].startswith("/"):
        raise Error("seccomp: listenerPath must be an absolute path")
    default_ret = _seccomp_action(profile["defaultAction"], profile.get("defaultErrnoRet"),
                                  "defaultAction")
    _seccomp_flags(profile)
    abis = [arch]
    for name in profile.get("architectures") or ():
        if name not in _SCMP_ARCHES:
            raise Error("seccomp: unknown architecture %r" % name)
        if _SCMP_ARCHES[name] in _SUB_ABIS[arch] and _SCMP_ARCHES[name] not in abis:
            abis.append(_SCMP_ARCHES[name])
    rules = _seccomp_rules(profile)
    allowing = default_ret in (_SECCOMP_ACTIONS["SCMP_ACT_ALLOW"],
                               _SECCOMP_ACTIONS["SCMP_ACT_LOG"]) or default_ret >> 16 == 0x7FF0
    asm = _Asm()
    asm.ld(4)  # seccomp_data.arch
    sections = []
    for abi in abis:
        if abi != "x32":
            label = object()
            sections.append((abi, label))
            asm.jump(_BPF_JEQ, _AUDIT_ARCH[abi], 0, 1)
            asm.ja(label)
    asm.ret(_RET_KILL_PROCESS)
    x32 = object() if "x32" in abis else None
    for abi, label in sections:
        asm.label(label)
        asm.ld(0)  # seccomp_data.nr
        if abi == "x86_64":
            # x32 calls arrive with the x86_64 audit arch and bit 30 set in the number.
            asm.jump(_BPF_JGE, _X32_BIT, 0, 1)
            if x32:
                asm.ja(x32)
            else:
                asm.ret(_RET_KILL_PROCESS)
        _emit_abi(asm, abi, rules, default_ret, not allowing)
    if x32:
        asm.label(x32)
        _emit_abi(asm, "x32", rules, default_ret, not allowing)
    return asm.assemble()


def _notifies(profile):
    return profile.get("defaultAction") == "SCMP_ACT_NOTIFY" or any(
        isinstance(call, dict) and call.get("action") == "SCMP_ACT_NOTIFY"
        for call in profile.get("syscalls") or ())


def apply_seccomp(profile, prog=None):
    """Load `profile` (an OCI linux.seccomp object; None: nothing) into this process.

    Needs no_new_privs or CAP_SYS_ADMIN. The filter applies from here on, across exec:
    call it as late as possible before exec. `prog` is the profile compiled beforehand.
    Returns the listener fd of a profile with SCMP_ACT_NOTIFY rules (else None).
    """
    if profile is None:
        return
    ctypes = ctypes_api()
    if prog is None:
        prog = seccomp_program(profile)
    flags = _seccomp_flags(profile)
    if _notifies(profile):
        flags |= _FILTER_FLAG_NEW_LISTENER

    insns = ctypes.create_string_buffer(prog, len(prog))
    fprog = ctypes.create_string_buffer(struct.pack("HP", len(prog) // 8,  # struct sock_fprog
                                                    ctypes.addressof(insns)))
    nr = syscall_table(native_arch())["seccomp"]
    set_mode_filter = 1
    rc = libc().syscall(ctypes.c_long(nr), ctypes.c_long(set_mode_filter), ctypes.c_long(flags),
                        fprog)
    err = ctypes.get_errno()
    if rc != 0 and err == errno.ENOSYS and not flags:
        # Kernels before 3.17 only have the prctl interface (and no flags).
        pr_set_seccomp, seccomp_mode_filter = 22, 2
        rc = libc().prctl(pr_set_seccomp, seccomp_mode_filter, fprog, 0, 0)
        err = ctypes.get_errno()
    if rc > 0 and flags & _FILTER_FLAG_NEW_LISTENER:
        return rc
    if rc > 0:
        raise Error("seccomp: thread %s has an incompatible filter (TSYNC)" % rc)
    if rc < 0:
        hint = " (set no_new_privs or keep CAP_SYS_ADMIN)" if err == errno.EACCES else ""
        raise Error("seccomp: loading the filter failed: %s%s" % (os.strerror(err), hint))


# Docker's default allowlist (moby profiles/seccomp/default.json) minus io_uring (docker
# dropped it too) and ptrace/process_vm_* (here they need CAP_SYS_PTRACE, see below), plus
# harmless calls newer than that list (cachestat, fchmodat2, futex2, mseal, *xattrat, ...).
_DEFAULT_ALLOWED = """
accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod chown chown32
clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime clock_gettime64
clock_nanosleep clock_nanosleep_time64 close close_range connect copy_file_range creat dup dup2
dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait
epoll_wait_old eventfd eventfd2 execve execveat exit exit_group faccessat faccessat2 fadvise64
fadvise64_64 fallocate fanotify_mark fchdir fchmod fchmodat fchmodat2 fchown fchown32 fchownat
fcntl fcntl64 fdatasync fgetxattr file_getattr file_setattr flistxattr flock fork fremovexattr
fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futex
futex_requeue futex_time64 futex_wait futex_waitv futex_wake futimesat getcpu getcwd getdents
getdents64 getegid getegid32 geteuid geteuid32 getgid getgid32 getgroups getgroups32 getitimer
getpeername getpgid getpgrp getpid getppid getpriority getrandom getresgid getresgid32
getresuid getresuid32 getrlimit get_robust_list getrusage getsid getsockname getsockopt
get_thread_area gettid gettimeofday getuid getuid32 getxattr getxattrat inotify_add_watch
inotify_init inotify_init1 inotify_rm_watch io_cancel ioctl io_destroy io_getevents
io_pgetevents io_pgetevents_time64 ioprio_get ioprio_set io_setup io_submit ipc kill
landlock_add_rule landlock_create_ruleset landlock_restrict_self lchown lchown32 lgetxattr link
linkat listen listxattr listxattrat llistxattr _llseek lremovexattr lseek lsetxattr lstat
lstat64 madvise map_shadow_stack membarrier memfd_create memfd_secret mincore mkdir mkdirat
mknod mknodat mlock mlock2 mlockall mmap mmap2 mprotect mq_getsetattr mq_notify mq_open
mq_timedreceive mq_timedreceive_time64 mq_timedsend mq_timedsend_time64 mq_unlink mremap mseal
msgctl msgget msgrcv msgsnd msync munlock munlockall munmap name_to_handle_at nanosleep
newfstatat _newselect open openat openat2 pause pidfd_open pidfd_send_signal pipe pipe2
pkey_alloc pkey_free pkey_mprotect poll ppoll ppoll_time64 prctl pread64 preadv preadv2
prlimit64 process_mrelease pselect6 pselect6_time64 pwrite64 pwritev pwritev2 read readahead
readlink readlinkat readv recvfrom recvmmsg recvmmsg_time64 recvmsg remap_file_pages
removexattr removexattrat rename renameat renameat2 restart_syscall rmdir rseq rt_sigaction
rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait
rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam
sched_get_priority_max sched_get_priority_min sched_getscheduler sched_rr_get_interval
sched_rr_get_interval_time64 sched_setaffinity sched_setattr sched_setparam sched_setscheduler
sched_yield seccomp select semctl semget semop semtimedop semtimedop_time64 sendfile
sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32 setfsuid setfsuid32 setgid setgid32
setgroups setgroups32 setitimer setpgid setpriority setregid setregid32 setresgid setresgid32
setresuid setresuid32 setreuid setreuid32 setrlimit set_robust_list setsid setsockopt
set_thread_area set_tid_address setuid setuid32 setxattr setxattrat shmat shmctl shmdt shmget
shutdown sigaltstack signalfd signalfd4 sigprocmask sigreturn socketcall socketpair splice
stat stat64 statfs statfs64 statx symlink symlinkat sync sync_file_range syncfs sysinfo tee
tgkill time timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64
timer_settime timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime
timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat
uprobe uretprobe utime utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid
write writev arch_prctl modify_ldt
"""
# Allowed when the container holds the capability (docker's "includes": {"caps": ...}):
# the capability already lets the process do what these calls do.
_DEFAULT_BY_CAP = {
    "CAP_SYS_ADMIN": "bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick "
                     "lookup_dcookie mount mount_setattr move_mount open_tree perf_event_open "
                     "quotactl quotactl_fd setdomainname sethostname setns syslog umount "
                     "umount2 unshare",
    "CAP_SYS_BOOT": "reboot",
    "CAP_SYS_CHROOT": "chroot",
    "CAP_SYS_MODULE": "delete_module init_module finit_module",
    "CAP_SYS_PACCT": "acct",
    "CAP_SYS_PTRACE": "kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev "
                      "ptrace",
    "CAP_SYS_RAWIO": "iopl ioperm",
    "CAP_SYS_TIME": "settimeofday stime clock_settime clock_settime64",
    "CAP_SYS_TTY_CONFIG": "vhangup",
    "CAP_SYS_NICE": "get_mempolicy mbind set_mempolicy set_mempolicy_home_node",
    "CAP_SYSLOG": "syslog",
    "CAP_BPF": "bpf",
    "CAP_PERFMON": "perf_event_open",
    "CAP_DAC_READ_SEARCH": "open_by_handle_at",
}
# Docker's default capability set: what default_seccomp_profile() assumes without `caps`.
_CLONE_NAMESPACE_FLAGS = 0x7E020000  # CLONE_NEW{NS,CGROUP,UTS,IPC,USER,PID,NET}
# personality(2) values docker allows: PER_LINUX, PER_LINUX32, UNAME26 variants, and query.
_SAFE_PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
_AF_VSOCK = 40


def default_seccomp_profile(caps=None):
    """The default `linux.seccomp`: docker's default profile, as an OCI object.

    An allowlist with EPERM for everything else, like docker's: a denylist would let every
    syscall added to future kernels through unreviewed, while docker's list has been run
    by millions of containers, so it is known not to break ordinary programs. Calls newer
    than our tables get ENOSYS rather than EPERM (see seccomp_program) so that libc falls
    back to older calls, which keeps the allowlist from breaking future libcs.
    `caps` (capability names, default docker's default set) adds docker's
    capability-conditional entries.
    """
    caps = set(DEFAULT_CAPS if caps is None else caps)
    allowed = _DEFAULT_ALLOWED.split()
    for cap, names in _DEFAULT_BY_CAP.items():
        if cap in caps:
            allowed += [n for n in names.split() if n not in allowed]
    syscalls = [{"names": allowed, "action": "SCMP_ACT_ALLOW"}]
    syscalls.append({"names": ["socket"], "action": "SCMP_ACT_ALLOW",
                     "args": [{"index": 0, "value": _AF_VSOCK, "op": "SCMP_CMP_NE"}]})
    syscalls += [{"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                  "args": [{"index": 0, "value": v, "op": "SCMP_CMP_EQ"}]}
                 for v in _SAFE_PERSONALITIES]
    if "CAP_SYS_ADMIN" not in caps:
        syscalls.append({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                         "args": [{"index": 0, "value": _CLONE_NAMESPACE_FLAGS,
                                   "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]})
        # clone3 passes its flags in memory, out of BPF's reach: ENOSYS makes libc use clone.
        syscalls.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": _ENOSYS})
    return {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": _EPERM,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
            "syscalls": syscalls}


def _from_docker_profile(profile, caps):
    """Resolve docker's profile extensions (archMap, includes/excludes) for this machine."""
    arch = native_arch()
    goarch = OCI_ARCH[arch]
    kernel = tuple(int(x) for x in os.uname().release.split("-")[0].split(".")[:2])
    out = {k: v for k, v in profile.items() if k not in ("archMap", "comment")}
    if "architectures" not in out and profile.get("archMap"):
        native = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}[arch]
        for entry in profile["archMap"]:
            if entry.get("architecture") == native:
                out["architectures"] = [native] + list(entry.get("subArchitectures") or ())

    def check(cond):
        for key in cond or ():
            if key not in ("caps", "arches", "minKernel"):
                raise Error("seccomp: unknown includes/excludes field %r" % key)
        return cond or {}

    def included(cond):
        cond = check(cond)
        if any(c not in caps for c in cond.get("caps") or ()):
            return False
        if cond.get("arches") and goarch not in cond["arches"]:
            return False
        need = str(cond.get("minKernel") or "0.0").split(".")[:2]
        return kernel >= tuple(int(x) for x in need)

    def excluded(cond):
        cond = check(cond)
        return (any(c in caps for c in cond.get("caps") or ())
                or goarch in (cond.get("arches") or ()))

    calls = []
    for call in profile.get("syscalls") or ():
        if included(call.get("includes")) and not excluded(call.get("excludes")):
            calls.append({k: v for k, v in call.items() if k not in ("includes", "excludes")})
    out["syscalls"] = calls
    return out


def seccomp_profile_for_option(value=None, caps=None):
    """The linux.seccomp object for `--security-opt seccomp=VALUE` (None: unconfined).

    VALUE is "unconfined", a JSON file in OCI or docker format, or None for the default
    profile. `caps` are the container's capabilities, for docker-format conditions.
    """
    if value is None:
        return default_seccomp_profile(caps)
    if value == "unconfined":
        return None
    try:
        with open(value, encoding="utf-8") as f:
            profile = json.load(f)
    except (OSError, ValueError) as e:
        raise Error("seccomp: cannot read profile %s: %s" % (value, e)) from None
    if not isinstance(profile, dict):
        raise Error("seccomp: %s: not a JSON object" % value)
    if "archMap" in profile or any(
            isinstance(c, dict) and ("includes" in c or "excludes" in c)
            for c in profile.get("syscalls") or ()):
        profile = _from_docker_profile(profile, set(DEFAULT_CAPS if caps is None
                                                     else caps))
    seccomp_program(profile)  # reject a bad profile now, not inside the container
    return profile


def send_seccomp_listener(profile, fd, state):
    """Hand a process's seccomp listener to the agent at listenerPath, with the container's
    state, as runc sends it (the runtime spec's containerProcessState)."""
    import socket
    msg = {"ociVersion": OCI_VERSION, "fds": ["seccompFd"], "pid": state["pid"],
           "metadata": profile.get("listenerMetadata", ""), "state": state}
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as agent:
            agent.connect(profile["listenerPath"])
            socket.send_fds(agent, [json.dumps(msg).encode()], [fd])
    except OSError as e:
        raise Error("seccomp: listenerPath %s: %s" % (profile["listenerPath"],
                                                      e.strerror)) from None
    finally:
        os.close(fd)


def _compile_seccomp(linux):
    """(profile, program) for _drop_privileges: compiled before the container's setup, so
    that a bad profile fails it and the container's process only loads it."""
    profile = linux.get("seccomp")
    return (profile, seccomp_program(profile)) if profile else None


# ==== configuration: the OCI runtime-spec config.json ====

DEFAULT_MASKED_PATHS = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                        "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                        "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
                        "/sys/devices/virtual/powercap"]
DEFAULT_READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                          "/proc/sysrq-trigger"]
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def default_spec(rootfs="rootfs", args=("sh",), terminal=False):
    """What `spec` writes: the setup of libcontainer's classic example, as an OCI config."""
    caps = list(DEFAULT_CAPS)
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": terminal,
            "user": {"uid": 0, "gid": 0},
            "args": list(args),
            "env": ["PATH=" + DEFAULT_PATH, "TERM=xterm"],
            "cwd": "/",
            # No inheritable set, as runc's spec since 1.1.2 (and docker's containers): with
            # one, a program of the container's non-root user that has inheritable file
            # capabilities would gain them (runc's CVE-2022-29162, moby's CVE-2022-24769).
            # The ambient set, which needs them inheritable, is skipped so, as runc skips it.
            "capabilities": {k: list(caps) for k in
                             ("bounding", "effective", "permitted", "ambient")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1025, "soft": 1025}],
            "noNewPrivileges": True,
        },
        "root": {"path": rootfs, "readonly": False},
        "hostname": "minicontainer",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                         "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [{"type": t} for t in ("pid", "network", "ipc", "uts", "mount")],
            "maskedPaths": list(DEFAULT_MASKED_PATHS),
            "readonlyPaths": list(DEFAULT_READONLY_PATHS),
            "seccomp": default_seccomp_profile(caps),
        },
    }


def rootless_spec(spec):
    """`spec --rootless`: what runc's specconv.ToRootless makes of the default config. A
    user namespace mapping the caller to root and no network namespace (an unprivileged
    user could only have one with nothing but lo); /sys a read-only bind of the host's
    (sysfs may only be mounted by the network namespace's owner); no uid=/gid= mount options
    (those ids are unmapped); no linux.resources (no cgroup the user may write)."""
    linux = spec["linux"]
    linux["namespaces"] = [ns for ns in linux["namespaces"]
                           if ns["type"] not in ("network", "user")] + [{"type": "user"}]
    linux["uidMappings"] = [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
    linux["gidMappings"] = [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
    mounts = []
    for m in spec["mounts"]:
        if os.path.normpath(m["destination"]) == "/sys":
            m = {"destination": "/sys", "type": "none", "source": "/sys",
                 "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}
        elif m.get("options"):
            m["options"] = [o for o in m["options"] if not o.startswith(("uid=", "gid="))]
        mounts.append(m)
    spec["mounts"] = mounts
    linux.pop("resources", None)
    return spec


# The schema of what this runtime understands. A type is checked with isinstance; a dict is
# an object whose keys are all known; a one-element list is an array of that element;
# FREE is an object of strings to anything (annotations, sysctl, unified).
FREE = "free"
_ID_MAP = [{"containerID": int, "hostID": int, "size": int}]
_HOOKS = [{"path": str, "args": [str], "env": [str], "timeout": int}]
_WEIGHT_DEVICE = [{"major": int, "minor": int, "weight": int, "leafWeight": int}]
_RATE_DEVICE = [{"major": int, "minor": int, "rate": int}]
SCHEMA = {
    "ociVersion": str, "hostname": str, "domainname": str, "annotations": FREE,
    "root": {"path": str, "readonly": bool},
    "process": {
        "terminal": bool, "consoleSize": {"height": int, "width": int}, "cwd": str,
        "env": [str], "args": [str], "commandLine": str,
        "user": {"uid": int, "gid": int, "umask": int, "additionalGids": [int],
                 "username": str},
        "capabilities": {k: [str] for k in
                         ("bounding", "effective", "inheritable", "permitted", "ambient")},
        "rlimits": [{"type": str, "hard": int, "soft": int}],
        "noNewPrivileges": bool, "oomScoreAdj": int,
        "apparmorProfile": str, "selinuxLabel": str,
        "scheduler": {"policy": str, "nice": int, "priority": int, "flags": [str],
                      "runtime": int, "deadline": int, "period": int},
        "ioPriority": {"class": str, "priority": int},
    },
    "mounts": [{"destination": str, "source": str, "type": str, "options": [str],
                "uidMappings": _ID_MAP, "gidMappings": _ID_MAP}],
    "hooks": {k: _HOOKS for k in ("prestart", "createRuntime", "createContainer",
                                  "startContainer", "poststart", "poststop")},
    "linux": {
        "namespaces": [{"type": str, "path": str}],
        "uidMappings": _ID_MAP, "gidMappings": _ID_MAP,
        "devices": [{"path": str, "type": str, "major": int, "minor": int,
                     "fileMode": int, "uid": int, "gid": int}],
        "cgroupsPath": str,
        "resources": {
            "devices": [{"allow": bool, "type": str, "major": int, "minor": int,
                         "access": str}],
            "memory": {"limit": int, "reservation": int, "swap": int, "kernel": int,
                       "kernelTCP": int, "swappiness": int, "disableOOMKiller": bool,
                       "useHierarchy": bool, "checkBeforeUpdate": bool},
            "cpu": {"shares": int, "quota": int, "burst": int, "period": int,
                    "realtimeRuntime": int, "realtimePeriod": int, "cpus": str,
                    "mems": str, "idle": int},
            "pids": {"limit": int},
            "blockIO": {"weight": int, "leafWeight": int, "weightDevice": _WEIGHT_DEVICE,
                        "throttleReadBpsDevice": _RATE_DEVICE,
                        "throttleWriteBpsDevice": _RATE_DEVICE,
                        "throttleReadIOPSDevice": _RATE_DEVICE,
                        "throttleWriteIOPSDevice": _RATE_DEVICE},
            "hugepageLimits": [{"pageSize": str, "limit": int}],
            "network": {"classID": int, "priorities": [{"name": str, "priority": int}]},
            "unified": FREE,
        },
        "sysctl": FREE,
        "maskedPaths": [str], "readonlyPaths": [str],
        "rootfsPropagation": str, "mountLabel": str,
        "timeOffsets": {clock: {"secs": int, "nanosecs": int}
                        for clock in ("monotonic", "boottime")},
        "seccomp": FREE,
    },
}


# Properties the runtime spec defines that this runtime does not implement: a config that
# asks for one is refused, since ignoring it would run the container other than asked. Any
# other property it does not know is ignored (the spec: "MUST NOT generate an error if they
# encounter an unknown property"), with a warning in --debug and the --log file.
NOT_SUPPORTED = {"process.execCPUAffinity",
                 "linux.personality", "linux.intelRdt",
                 "linux.memoryPolicy", "linux.netDevices", "linux.resources.rdma", "vm"}
# Deprecated properties runc ignores with a warning: the kernel dropped kernel memory limits.
DEPRECATED = {"linux.resources.memory.kernel", "linux.resources.memory.kernelTCP"}


def validate(value, schema, where="config", path=""):
    """Check a config against SCHEMA; the error names the first field that is off. `path` is
    the dotted name of `value` from the config's top, as NOT_SUPPORTED names properties."""
    if schema is FREE:
        if not isinstance(value, dict):
            raise Error("%s: must be an object" % where)
    elif isinstance(schema, dict):
        if not isinstance(value, dict):
            raise Error("%s: must be an object" % where)
        for key, sub in value.items():
            name = path + "." + key if path else key
            if name in NOT_SUPPORTED:
                raise Error("%s.%s: not supported by minicontainer" % (where, key))
            if name in DEPRECATED:
                warn("config: %s is deprecated, ignored" % name)
            elif key not in schema:
                warn("config: unknown property %s ignored" % name)
            else:
                validate(sub, schema[key], "%s.%s" % (where, key), name)
    elif isinstance(schema, list):
        if not isinstance(value, list):
            raise Error("%s: must be an array" % where)
        for i, item in enumerate(value):
            validate(item, schema[0], "%s[%d]" % (where, i), path)
    elif schema is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise Error("%s: must be an integer" % where)
    elif not isinstance(value, schema):
        raise Error("%s: must be a %s" % (where, {str: "string", bool: "boolean"}[schema]))


# sched_setattr(2)'s policies and flags, and ioprio_set(2)'s classes, by their OCI names.
SCHED_POLICIES = {"SCHED_OTHER": 0, "SCHED_FIFO": 1, "SCHED_RR": 2, "SCHED_BATCH": 3,
                  "SCHED_ISO": 4, "SCHED_IDLE": 5, "SCHED_DEADLINE": 6}
SCHED_FLAGS = {"SCHED_FLAG_RESET_ON_FORK": 0x01, "SCHED_FLAG_RECLAIM": 0x02,
               "SCHED_FLAG_DL_OVERRUN": 0x04, "SCHED_FLAG_KEEP_POLICY": 0x08,
               "SCHED_FLAG_KEEP_PARAMS": 0x10, "SCHED_FLAG_UTIL_CLAMP_MIN": 0x20,
               "SCHED_FLAG_UTIL_CLAMP_MAX": 0x40}
IOPRIO_CLASSES = {"IOPRIO_CLASS_RT": 1, "IOPRIO_CLASS_BE": 2, "IOPRIO_CLASS_IDLE": 3}


def check_scheduler(s, where):
    """The combinations sched_setattr would refuse, refused before anything starts."""
    where += ": process.scheduler"
    policy = s.get("policy")
    if policy not in SCHED_POLICIES:
        raise Error("%s.policy: unknown policy %r" % (where, policy))
    for flag in s.get("flags", []):
        if flag not in SCHED_FLAGS:
            raise Error("%s.flags: unknown flag %r" % (where, flag))
    if not -20 <= s.get("nice", 0) <= 19:
        raise Error("%s.nice: must be from -20 to 19" % where)
    realtime = policy in ("SCHED_FIFO", "SCHED_RR")
    if realtime and not 1 <= s.get("priority", 0) <= 99:
        raise Error("%s.priority: %s needs a priority from 1 to 99" % (where, policy))
    if not realtime and s.get("priority", 0) != 0:
        raise Error("%s.priority: only SCHED_FIFO and SCHED_RR take a priority" % where)
    times = [s.get(k, 0) for k in ("runtime", "deadline", "period")]
    if policy != "SCHED_DEADLINE":
        if any(times):
            raise Error("%s: runtime, deadline and period are for SCHED_DEADLINE" % where)
    elif not 0 < times[0] <= times[1] <= (times[2] or times[1]) or times[0] < 1024:
        raise Error("%s: SCHED_DEADLINE needs 1024 <= runtime <= deadline <= period (ns)"
                    % where)


def check_user_ids(user, linux, where):
    """process.user's ids (a config's, or exec's process): each from 0 to 4294967294 (-1
    would leave the id as it is: root), and mapped in the user namespace whose maps the
    config gives (setresuid and setgroups would say only "Invalid argument")."""
    for key, ids in (("uid", [user.get("uid", 0)]), ("gid", [user.get("gid", 0)]),
                     ("additionalGids", user.get("additionalGids", []))):
        kind = "uid" if key == "uid" else "gid"
        maps = linux.get(kind + "Mappings")
        for i in ids:
            if not 0 <= i < 0xFFFFFFFF:
                raise Error("%s: process.user.%s: an id is from 0 to 4294967294, not %d"
                            % (where, key, i))
            if maps and not any(m["containerID"] <= i < m["containerID"] + m["size"]
                                for m in maps):
                raise Error("%s: process.user.%s: %s %d has no mapping in the container's "
                            "user namespace (linux.%sMappings)" % (where, key, kind, i, kind))


def check_config(config, where="config.json"):
    """Semantic checks beyond types: what must be there, and values that have a fixed set."""
    validate(config, SCHEMA, where)
    process = config.get("process")
    if not isinstance(process, dict) or not process.get("args"):
        raise Error("%s: process.args must name the program to run" % where)
    if not config.get("root", {}).get("path"):
        raise Error("%s: root.path is missing" % where)
    if not process.get("cwd", "/").startswith("/"):
        raise Error("%s: process.cwd must be an absolute path" % where)
    for i, var in enumerate(process.get("env", [])):
        if var.startswith("=") or "=" not in var or "\0" in var:
            raise Error("%s: process.env[%d]: %r is not NAME=VALUE" % (where, i, var))
    linux = config.get("linux", {})
    check_user_ids(process.get("user", {}), linux, where)
    seen = set()
    for ns in linux.get("namespaces", []):
        if ns["type"] not in NAMESPACES:
            raise Error("%s: linux.namespaces: unknown type %r" % (where, ns["type"]))
        if ns["type"] in seen:
            raise Error("%s: linux.namespaces: %s given twice" % (where, ns["type"]))
        seen.add(ns["type"])
    for name in ("hostname", "domainname"):
        if config.get(name) and "uts" not in seen:
            raise Error("%s: %s: set only in a UTS namespace of the container's (the host's "
                        "is not the container's to name)" % (where, name))
    if ("uidMappings" in linux or "gidMappings" in linux) and "user" not in seen:
        raise Error("%s: linux.uidMappings needs a user namespace" % where)
    if linux.get("timeOffsets") and not makes_time_ns(linux):
        raise Error("%s: linux.timeOffsets needs a time namespace of the container's own"
                    % where)
    for kind in ("bounding", "effective", "inheritable", "permitted", "ambient"):
        cap_mask(process.get("capabilities", {}).get(kind, []),
                 "%s: process.capabilities.%s" % (where, kind))
    for rl in process.get("rlimits", []):
        rlimit_type(rl["type"], where)
    if "scheduler" in process:
        check_scheduler(process["scheduler"], where)
    io = process.get("ioPriority")
    if io is not None and (io.get("class") not in IOPRIO_CLASSES
                           or not 0 <= io.get("priority", 0) <= 7):
        raise Error("%s: process.ioPriority: class must be one of %s, priority 0 to 7"
                    % (where, ", ".join(IOPRIO_CLASSES)))
    for i, m in enumerate(config.get("mounts", [])):
        if not m.get("destination"):
            raise Error("%s: mounts[%d]: destination is missing" % (where, i))
        if not m["destination"].startswith("/"):
            raise Error("%s: mounts: destination %r must be absolute" % (where, m["destination"]))
    if linux.get("rootfsPropagation", "private") not in PROPAGATION:
        raise Error("%s: linux.rootfsPropagation: unknown value %r"
                    % (where, linux["rootfsPropagation"]))
    if not -1000 <= process.get("oomScoreAdj", 0) <= 1000:
        raise Error("%s: process.oomScoreAdj: must be from -1000 to 1000" % where)
    check_security_labels(process, linux, where)
    try:
        check_sysctl(config)
    except Error as e:
        raise Error("%s: %s" % (where, e)) from None
    return config


def apparmor_enabled():
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            return f.read().strip() == "Y"
    except OSError:
        return False


def check_security_labels(process, linux, where):
    """Security modules' labels are applied or refused, never dropped: an engine that asks
    for a profile must not get an unconfined container unawares. AppArmor's profile is
    applied at execve (apply_apparmor); SELinux labels are not supported: the process's is
    refused (as runc refuses it where SELinux is off); a mount label is ignored where
    SELinux is off (it labels nothing then: go-selinux's formatting leaves it out too)."""
    profile = process.get("apparmorProfile")
    if profile and profile != "unconfined" and not apparmor_enabled():
        raise Error("%s: process.apparmorProfile %s: AppArmor is not enabled on this host"
                    % (where, profile))
    selinux = os.path.exists("/sys/fs/selinux/enforce")
    if process.get("selinuxLabel"):
        raise Error("%s: process.selinuxLabel: %s" % (where, "SELinux labels are not "
                                                      "supported by minicontainer" if selinux
                                                      else "SELinux is not enabled on this host"))
    if linux.get("mountLabel") and selinux:
        raise Error("%s: linux.mountLabel: SELinux labels are not supported by minicontainer"
                    % where)


def apparmor_to_apply(process):
    """The profile a child is to apply (apply_apparmor), decided by the runtime: the child
    would read the container's /sys. None for none, and for "unconfined" where AppArmor is
    off (check_security_labels let that one through)."""
    profile = process.get("apparmorProfile")
    return profile if profile and (profile != "unconfined" or apparmor_enabled()) else None


PROC_SUPER_MAGIC = 0x9fa0


def apply_apparmor(profile):
    """The AppArmor profile the program runs in from its execve (runc's change_onexec).
    Written through the container's /proc, which must be procfs: a mount over it (a volume
    at /proc, or the container's root at exec time) would take the write and leave the
    program unconfined (runc's CVE-2019-16884)."""
    for path in ("/proc/thread-self/attr/apparmor/exec", "/proc/self/attr/exec"):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # (attr/apparmor/ from 5.8)
            continue
        except OSError as e:
            raise Error("process.apparmorProfile %s: %s: %s" % (profile, path, e.strerror))
        try:
            ctypes = ctypes_api()
            buf = ctypes.create_string_buffer(256)  # struct statfs; f_type, a long, first
            if libc().fstatfs(fd, buf) < 0 or \
                    struct.unpack_from("l", buf.raw)[0] != PROC_SUPER_MAGIC:
                raise Error("process.apparmorProfile %s: %s is not procfs's (something is "
                            "mounted over /proc): not applied" % (profile, path))
            os.write(fd, b"exec " + profile.encode())
            return
        except OSError as e:
            raise Error("process.apparmorProfile %s: %s: %s" % (profile, path, e.strerror))
        finally:
            os.close(fd)
    raise Error("process.apparmorProfile %s: no /proc/self/attr/exec (is /proc mounted?)"
                % profile)


# process.rlimits' types, numbered as in Linux's generic table. Alpha, MIPS and SPARC number
# some others: there the resource module's numbers count (it has all of them but
# RLIMIT_LOCKS). A config is checked by name alone: the resource module is a shared library
# to load (150 KiB of the runtime's memory), imported by the init only.
RLIMITS = {"RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3,
           "RLIMIT_CORE": 4, "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7,
           "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9, "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11,
           "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13, "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15}


def rlimit_type(name, where="config.json"):
    if name not in RLIMITS:
        raise Error("%s: process.rlimits: unknown type %r" % (where, name))
    return name


def rlimit_resource(name, where="config.json"):
    return RLIMITS[rlimit_type(name, where)]


def load_config(bundle):
    path = os.path.join(bundle, "config.json")
    try:
        with open(path) as f:
            config = json.load(f)
    except FileNotFoundError:
        raise Error("%s: no such file (is %s a bundle?)" % (path, bundle)) from None
    except ValueError as e:
        raise Error("%s: invalid JSON: %s" % (path, e)) from None
    except RecursionError:
        raise Error("%s: invalid JSON: nested too deep" % path) from None
    except OSError as e:
        raise Error("%s: %s" % (path, e.strerror)) from None
    return check_config(config, path)


_MOUNT_FLAGS = {  # option: (flags to set, flags to clear)
    "ro": (MS_RDONLY, 0), "rw": (0, MS_RDONLY), "nosuid": (MS_NOSUID, 0), "suid": (0, MS_NOSUID),
    "nodev": (MS_NODEV, 0), "dev": (0, MS_NODEV), "noexec": (MS_NOEXEC, 0),
    "exec": (0, MS_NOEXEC), "sync": (MS_SYNCHRONOUS, 0), "async": (0, MS_SYNCHRONOUS),
    "dirsync": (MS_DIRSYNC, 0), "remount": (MS_REMOUNT, 0), "mand": (MS_MANDLOCK, 0),
    "nomand": (0, MS_MANDLOCK), "atime": (0, MS_NOATIME), "noatime": (MS_NOATIME, 0),
    "diratime": (0, MS_NODIRATIME), "nodiratime": (MS_NODIRATIME, 0),
    "relatime": (MS_RELATIME, 0), "norelatime": (0, MS_RELATIME),
    "strictatime": (MS_STRICTATIME, 0), "nostrictatime": (0, MS_STRICTATIME),
    "lazytime": (MS_LAZYTIME, 0), "nolazytime": (0, MS_LAZYTIME),
    "bind": (MS_BIND, 0), "rbind": (MS_BIND | MS_REC, 0), "nosymfollow": (MS_NOSYMFOLLOW, 0),
}
PROPAGATION = {
    "private": MS_PRIVATE, "rprivate": MS_PRIVATE | MS_REC, "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC, "slave": MS_SLAVE, "rslave": MS_SLAVE | MS_REC,
    "unbindable": MS_UNBINDABLE, "runbindable": MS_UNBINDABLE | MS_REC,
}


# The recursive options (runc's, from the spec's list): mount_setattr(2) with AT_RECURSIVE
# on the mount and every mount below it, as no flag of mount(2) can do (a bind's "ro" makes
# its top read-only, not the mounts an rbind brought along). Option: (set, clear).
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC = 0x1, 0x2, 0x4, 0x8
MOUNT_ATTR__ATIME, MOUNT_ATTR_NOATIME, MOUNT_ATTR_STRICTATIME = 0x70, 0x10, 0x20
MOUNT_ATTR_NODIRATIME, MOUNT_ATTR_NOSYMFOLLOW = 0x80, 0x200000
RECURSIVE_MOUNT_OPTIONS = {
    "rro": (MOUNT_ATTR_RDONLY, 0), "rrw": (0, MOUNT_ATTR_RDONLY),
    "rnosuid": (MOUNT_ATTR_NOSUID, 0), "rsuid": (0, MOUNT_ATTR_NOSUID),
    "rnodev": (MOUNT_ATTR_NODEV, 0), "rdev": (0, MOUNT_ATTR_NODEV),
    "rnoexec": (MOUNT_ATTR_NOEXEC, 0), "rexec": (0, MOUNT_ATTR_NOEXEC),
    "rnodiratime": (MOUNT_ATTR_NODIRATIME, 0), "rdiratime": (0, MOUNT_ATTR_NODIRATIME),
    "rnosymfollow": (MOUNT_ATTR_NOSYMFOLLOW, 0), "rsymfollow": (0, MOUNT_ATTR_NOSYMFOLLOW),
    # atime is one value of three: the kernel takes it whole (clear all its bits, set one)
    "rrelatime": (0, MOUNT_ATTR__ATIME), "rnoatime": (MOUNT_ATTR_NOATIME, MOUNT_ATTR__ATIME),
    "rstrictatime": (MOUNT_ATTR_STRICTATIME, MOUNT_ATTR__ATIME),
}


def recursive_mount_attrs(options):
    """The recursive options among a mount's: (attributes to set, to clear), in order."""
    on = off = 0
    for opt in options or []:
        if opt in RECURSIVE_MOUNT_OPTIONS:
            add, remove = RECURSIVE_MOUNT_OPTIONS[opt]
            on, off = (on & ~remove) | add, (off & ~add) | remove
    return on, off


def mount_setattr_recursive(target, attr_set, attr_clr):
    attr = struct.pack("QQQQ", attr_set, attr_clr, 0, 0)
    _check(libc().syscall(syscall_nr("mount_setattr"), AT_FDCWD, target.encode(),
                          AT_RECURSIVE, attr, len(attr)),
           "recursive mount options (mount_setattr, Linux 5.12+) on %s" % target)


def has_mount_setattr():
    """Whether the kernel has mount_setattr (5.12+), which the recursive options need."""
    libc().syscall(syscall_nr("mount_setattr"), -1, b"", 0, None, 0)
    return ctypes_api().get_errno() != errno.ENOSYS


def parse_mount_options(options):
    """OCI mount options as (flags, propagation flags, data for the filesystem); the
    recursive ones are recursive_mount_attrs'."""
    flags, propagation, data = 0, [], []
    for opt in options or []:
        if opt in _MOUNT_FLAGS:
            on, off = _MOUNT_FLAGS[opt]
            flags = (flags | on) & ~off
        elif opt in PROPAGATION:
            propagation.append(PROPAGATION[opt])
        elif opt in RECURSIVE_MOUNT_OPTIONS:
            pass  # mount_entry applies them once the mount is there
        elif opt == "tmpcopyup":
            pass  # mount_entry: a tmpfs gets a copy of what it covers
        elif opt in ("idmap", "ridmap"):
            pass  # mount_idmaps: an id-mapped bind, made before the container's setup
        else:
            data.append(opt)
    return flags, propagation, ",".join(data)


def _bind_source(m, bundle):
    """The host path a bind mount takes (relative ones are relative to the bundle), or None
    when the mount is not a bind."""
    if m.get("type") != "bind" and not parse_mount_options(m.get("options"))[0] & MS_BIND:
        return None
    source = m.get("source", "")
    return source if source.startswith("/") else os.path.join(bundle, source)


# sysctls that belong to a namespace the container has; anything else would change the host.
_NAMESPACED_SYSCTLS = {"kernel.msgmax": "ipc", "kernel.msgmnb": "ipc", "kernel.msgmni": "ipc",
                       "kernel.sem": "ipc", "kernel.shmall": "ipc", "kernel.shmmax": "ipc",
                       "kernel.shmmni": "ipc", "kernel.shm_rmid_forced": "ipc",
                       "kernel.hostname": "uts", "kernel.domainname": "uts"}


def check_sysctl(config):
    namespaces = {ns["type"] for ns in config.get("linux", {}).get("namespaces", [])}
    sysctl = config.get("linux", {}).get("sysctl", {})
    # The UTS names have fields of their own: runc refuses kernel.hostname outright, and a
    # kernel.domainname that says otherwise than domainname would leave one of them unmet.
    if "kernel.hostname" in sysctl:
        raise Error('linux.sysctl: kernel.hostname conflicts with the "hostname" field')
    if config.get("domainname") and sysctl.get("kernel.domainname", config["domainname"]) \
            != config["domainname"]:
        raise Error('linux.sysctl: kernel.domainname conflicts with the "domainname" field')
    for key in sysctl:
        ns = _NAMESPACED_SYSCTLS.get(key)
        if ns is None and key.startswith("fs.mqueue."):
            ns = "ipc"
        if ns is None and key.startswith("net."):
            ns = "network"
        if ns is None or ns not in namespaces:
            raise Error("linux.sysctl: %s is not namespaced in this container" % key)


def makes_time_ns(linux):
    return any(ns["type"] == "time" and not ns.get("path")
               for ns in linux.get("namespaces", []))


# ==== cgroups: v1 (a hierarchy per controller), v2 (one hierarchy) and hybrid hosts ====

def cgroup_hierarchies():
    """Where the cgroup hierarchies are mounted: ({v1 controller: mountpoint}, v2 mountpoint).

    A hybrid host has both; its v1 controllers are used for resources and the v2 hierarchy
    for membership only (as runc does). $MINICONTAINER_CGROUP2 names a cgroup2 mount to use
    as if the host were pure v2, which lets a hybrid host exercise the v2 code."""
    forced = settings().cgroup2
    if forced:
        return {}, forced
    v1, v2 = {}, None
    # mountpoint: (fstype, super options); a later mount hides an earlier one at its point
    # or below it (cgroup2 mounted over a hybrid host's /sys/fs/cgroup, v1's mounts in it)
    mounts = {}
    for point, fstype, options in mountinfo():
        if point != "/":
            for hidden in [p for p in mounts if p.startswith(point + "/")]:
                del mounts[hidden]
        mounts[point] = (fstype, options)
    for mountpoint, (fstype, options) in mounts.items():
        if fstype == "cgroup2" and v2 is None:
            v2 = mountpoint
        elif fstype == "cgroup":
            for opt in options.split(","):
                if opt not in ("rw", "ro") and "=" not in opt and opt not in v1:
                    v1[opt] = mountpoint
    return v1, v2


def _write(path, value):
    with open(path, "w") as f:
        f.write(str(value))


def _read(path):
    with open(path) as f:
        return f.read().strip()


def _v2_has_own_processes(d):
    """Whether cgroup v2 directory d holds processes and may not hand controllers down to
    its children for that (the root cgroup, which alone has no cgroup.type, may; not so the
    root of a cgroup namespace)."""
    return os.path.exists(os.path.join(d, "cgroup.type")) and \
        bool(_read(os.path.join(d, "cgroup.procs")))


def _read_int(path):
    try:
        value = _read(path)
    except OSError:
        return None
    return None if value == "max" else int(value)


def _keyed(path):
    """A flat keyed file (memory.stat, cpu.stat, cpuacct.stat) as a dict of ints."""
    out = {}
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if value.strip().lstrip("-").isdigit():
                    out[key] = int(value)
    except OSError:
        pass
    return out


# The devices every container may use whatever its rules say, as runc allows them.
DEFAULT_ALLOWED_DEVICES = [
    ("c", None, None, "m"), ("b", None, None, "m"),
    ("c", 1, 3, "rwm"), ("c", 1, 8, "rwm"), ("c", 1, 7, "rwm"), ("c", 5, 0, "rwm"),
    ("c", 1, 5, "rwm"), ("c", 1, 9, "rwm"), ("c", 136, None, "rwm"), ("c", 5, 2, "rwm"),
    ("c", 10, 200, "rwm"),
]


def device_rules(resources):
    """The linux.resources.devices rules, then the defaults: (allow, type, major, minor, access)."""
    rules = []
    for d in resources.get("devices", []):
        kind = d.get("type", "a")
        access = d.get("access", "rwm")
        if kind not in ("a", "b", "c") or not access or set(access) - set("rwm"):
            raise Error("linux.resources.devices: bad rule %s" % json.dumps(d))
        rules.append((d.get("allow", False), kind, d.get("major"), d.get("minor"), access))
    if rules:
        rules += [(True,) + dev for dev in DEFAULT_ALLOWED_DEVICES]
    return rules


def check_v1_device_rules(rules):
    """v1's devices controller keeps a default and a list of exceptions, and silently ignores
    a rule that would take part of a wildcard exception back (deny b 8:0 r after allow
    b *:* rwm): refuse such a list, as runc does, rather than run with less than asked."""
    default_allow, exceptions = False, []

    def wild(n):
        return n is None or n < 0
    for allow, kind, major, minor, access in rules:
        if kind == "a" and wild(major) and wild(minor):
            default_allow, exceptions = allow, []
        elif allow != default_allow:
            exceptions.append((kind, major, minor, access))
        else:
            for ex_kind, ex_major, ex_minor, ex_access in exceptions:
                covers = ex_kind in ("a", kind) and (wild(ex_major) or ex_major == major) \
                    and (wild(ex_minor) or ex_minor == minor)
                exact = ex_kind == kind and wild(ex_major) == wild(major) and \
                    wild(ex_minor) == wild(minor)
                if covers and not exact and set(access) & set(ex_access):
                    raise Error("linux.resources.devices: cgroup v1 cannot punch a hole in "
                                "the wildcard rule %s %s:%s %s" % (
                                    ex_kind, "*" if wild(ex_major) else ex_major,
                                    "*" if wild(ex_minor) else ex_minor, ex_access))


def device_filter_program(rules):
    """An eBPF program for cgroup v2 that allows exactly what the rules allow.

    cgroup v2 has no devices controller: the kernel asks a BPF_PROG_TYPE_CGROUP_DEVICE program
    attached to the cgroup instead. The last matching rule decides, as with v1's lists."""

    def insn(op, dst=0, src=0, off=0, imm=0):
        return struct.pack("<BBhi", op, dst | (src << 4), off, imm)

    LDXW, AND32, RSH32, MOV32, JNE32, EXIT = 0x61, 0x54, 0x74, 0xb4, 0x56, 0x95
    head = [insn(LDXW, 2, 1, 0), insn(AND32, 2, imm=0xffff),   # r2 = device type
            insn(LDXW, 3, 1, 0), insn(RSH32, 3, imm=16),       # r3 = access requested
            insn(LDXW, 4, 1, 4), insn(LDXW, 5, 1, 8)]          # r4 = major, r5 = minor
    body = []
    for allow, kind, major, minor, access in reversed(rules):
        checks = []
        if kind != "a":
            checks.append(insn(JNE32, 2, imm=1 if kind == "b" else 2))
        bits = (1 if "m" in access else 0) | (2 if "r" in access else 0) | \
               (4 if "w" in access else 0)
        if bits != 7:  # the access asked for must lie within the rule's
            checks += [insn(0xbc, 1, 3), insn(AND32, 1, imm=~bits & 7), insn(JNE32, 1, imm=0)]
        if major is not None and major >= 0:
            checks.append(insn(JNE32, 4, imm=major))
        if minor is not None and minor >= 0:
            checks.append(insn(JNE32, 5, imm=minor))
        # Each JNE skips to the end of this rule: the remaining checks plus the two below.
        block = []
        for i, c in enumerate(checks):
            if c[0] == JNE32:
                skip = sum(1 for _ in checks[i + 1:]) + 2
                c = c[:2] + struct.pack("<h", skip) + c[4:]
            block.append(c)
        body += block + [insn(MOV32, 0, imm=1 if allow else 0), insn(EXIT)]
        if not checks:  # it matches everything: the verifier refuses code after it as unreachable
            break
    else:
        body += [insn(MOV32, 0, imm=0), insn(EXIT)]  # no rule matched: deny
    return b"".join(head + body)


def bpf_load_device_program(prog):
    """Load a BPF_PROG_TYPE_CGROUP_DEVICE program: its fd. Without the verifier's log (the
    log buffer, 64 KiB filled at every start, and the log's formatting cost both): the
    load is tried again with it only to say why the kernel refused the program."""
    ctypes = ctypes_api()
    insns = ctypes.create_string_buffer(prog, len(prog))
    license = ctypes.create_string_buffer(b"Apache-2.0")
    for log_size in (0, 65536):
        log = ctypes.create_string_buffer(log_size) if log_size else None
        attr = ctypes.create_string_buffer(128)
        struct.pack_into("<IIQQIIQ", attr, 0, 15, len(prog) // 8,  # CGROUP_DEVICE
                         ctypes.addressof(insns), ctypes.addressof(license), bool(log),
                         log_size, ctypes.addressof(log) if log else 0)
        prog_fd = libc().syscall(syscall_nr("bpf"), 5, attr, 128)  # BPF_PROG_LOAD
        if prog_fd >= 0:
            return prog_fd
        err = ctypes.get_errno()
    raise Error("device filter: BPF_PROG_LOAD: %s %s" % (
        os.strerror(err), " ".join(log.value.decode(errors="replace").split())[:200]))


def bpf_attach_device_filter(cgroup_dir, rules):
    ctypes = ctypes_api()
    nr = syscall_nr("bpf")
    prog_fd = bpf_load_device_program(device_filter_program(rules))
    try:
        cg_fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            attr = ctypes.create_string_buffer(128)
            struct.pack_into("<IIII", attr, 0, cg_fd, prog_fd, 6, 2)  # BPF_CGROUP_DEVICE, MULTI
            if libc().syscall(nr, 8, attr, 128) < 0:  # BPF_PROG_ATTACH
                raise Error("device filter: BPF_PROG_ATTACH: %s" %
                            os.strerror(ctypes.get_errno()))
        finally:
            os.close(cg_fd)
    finally:
        os.close(prog_fd)


DEFAULT_CGROUP_PARENT = "minicontainer"


class Cgroup:
    """One container's cgroup: on v1 a directory in each controller's hierarchy, on v2 one
    directory. `path` is the cgroup's path inside the hierarchies, e.g. /minicontainer/ID."""

    def __init__(self, path, v1=None, v2=None, created=None):
        self.path = "/" + path.strip("/")
        if v1 is None and v2 is None:
            v1, v2 = cgroup_hierarchies()
        self.v1 = {c: os.path.join(m, self.path.lstrip("/")) for c, m in (v1 or {}).items()}
        self.v2_root = v2
        self.v2 = os.path.join(v2, self.path.lstrip("/")) if v2 else None
        self.created = created or []
        self.warming = (None, None)  # warm's fd while its move may be under way, its path

    @property
    def unified(self):
        """A pure v2 host (or one made to look so): resources live in the v2 directory."""
        return not self.v1

    def dirs(self):
        return sorted(set(self.v1.values())) + ([self.v2] if self.v2 else [])

    def to_json(self):
        return {"path": self.path, "v1": {c: d[:-len(self.path)] for c, d in self.v1.items()},
                "v2": self.v2_root, "created": self.created}

    @classmethod
    def from_json(cls, data):
        return cls(data["path"], data["v1"], data["v2"], data.get("created"))

    # -- creation and membership
    def create(self):
        for base in self.dirs():
            for attempt in range(5):
                try:
                    self._mkdirs(base)
                    break
                except FileNotFoundError:  # a parent was removed by a container that ended
                    if attempt == 4:
                        raise
        if "cpuset" in self.v1:
            self._init_cpuset()
        if self.v2:  # on a hybrid host too: a controller only cgroup2 has is used there
            self._enable_controllers()

    def _mkdirs(self, leaf):
        missing = []
        d = leaf
        while not os.path.isdir(d):
            missing.append(d)
            d = os.path.dirname(d)
        for d in reversed(missing):
            try:
                os.mkdir(d)
                self.created.append(d)
            except FileExistsError:
                pass
            except FileNotFoundError:
                raise  # its parent removed meanwhile (by a container that ended): create()
                # tries again
            except OSError as e:
                raise Error("cgroup %s: cannot make %s: %s%s" % (
                    self.path, d, e.strerror, " (not root: --rootless true, or leave "
                    "--rootless to its default)" if os.geteuid() else "")) from None
        if not missing:
            raise Error("cgroup %s already exists" % leaf)

    def _init_cpuset(self):
        # A v1 cpuset cgroup starts with no cpus and no mems: copy them down from the parent.
        root = self.v1["cpuset"][:-len(self.path)]
        d = root
        for part in self.path.strip("/").split("/"):
            parent, d = d, os.path.join(d, part)
            for name in ("cpuset.cpus", "cpuset.mems"):
                if not _read(os.path.join(d, name)):
                    _write(os.path.join(d, name), _read(os.path.join(parent, name)))

    def _enable_controllers(self):
        wanted = _read(os.path.join(self.v2_root, "cgroup.controllers")).split()
        d = self.v2_root
        for part in self.path.strip("/").split("/")[:-1] + [None]:
            # Not in a cgroup with processes of its own (a rootless runtime's delegated
            # cgroup, which it makes the container's below): the kernel refuses domain
            # controllers there (EBUSY) but grants threaded ones (cpu, pids), which make it
            # a thread root, and every cgroup made below it "domain invalid", which no
            # process may join (EOPNOTSUPP).
            if not _v2_has_own_processes(d):
                for c in wanted:
                    try:
                        _write(os.path.join(d, "cgroup.subtree_control"), "+" + c)
                    except OSError:
                        pass  # e.g. cpu while a realtime task runs: use what can be had
            if part is None:
                break
            d = os.path.join(d, part)

    def warm(self):
        """Begin, in a thread, the wait of the first move into a cgroup, so that join need
        not wait. A move takes the kernel's cgroup_threadgroup_rwsem for writing, which
        waits for an RCU grace period (~10 ms) unless a move went through within about one
        grace period before: moving ourselves into the cgroup we are in changes nothing,
        and is such a move. It holds cgroup_mutex while it waits, as a cgroup's mkdir and
        a cgroup mount do: call it after create. Until it ends we are not single-threaded,
        as setns into a time or user namespace must be. It returns once the thread is at its
        write: a thread waiting for the interpreter would get it when we next block or after
        the GIL's switch interval (5 ms), and its wait would overlap nothing (5 ms of each
        `run` and `exec`, measured)."""
        if sys.version_info >= (3, 12) and __name__ == "__main__":
            return  # os.fork would warn of the thread, as warnings show for __main__ only
        own = {}
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                for c in controllers.split(","):
                    own[c] = path
        if self.v2 and "" in own:
            procs = os.path.join(self.v2_root, own[""].lstrip("/"), "cgroup.procs")
        else:
            c = next((c for c in self.v1 if c in own), None)
            if c is None:
                return
            procs = os.path.join(self.v1[c][:-len(self.path)], own[c].lstrip("/"),
                                 "cgroup.procs")

        import _thread
        begun = _thread.allocate_lock()
        begun.acquire()

        def move():
            fd = None
            try:  # only where we are (a cgroup namespace may show another cgroup there)
                if str(os.getpid()) in _read(procs).split():
                    fd = os.open(procs, os.O_WRONLY | os.O_CLOEXEC)
                    self.warming = (fd, procs)
            except OSError:
                pass
            finally:  # whatever happened: the caller waits for it
                begun.release()
            if fd is not None:
                try:
                    os.write(fd, b"0")
                except OSError:
                    pass
                finally:
                    os.close(fd)
        _thread.start_new_thread(move, ())
        begun.acquire()

    def close_warming(self):
        """In a child forked while warm's move was under way: its fd, of a host cgroup's
        cgroup.procs open for writing, is the child's too until execve. Closed only if it
        is still that file: the thread may have closed it before the fork, and the number
        be another's since."""
        fd, procs = self.warming
        if fd is not None:
            try:
                mine, warms = os.fstat(fd), os.stat(procs)
            except OSError:
                return  # closed before the fork
            if (mine.st_dev, mine.st_ino) == (warms.st_dev, warms.st_ino):
                os.close(fd)

    def join(self, pid=0):
        """Move `pid` (0: the caller) into the cgroup in every hierarchy."""
        for i, d in enumerate(self.dirs()):
            _write(os.path.join(d, "cgroup.procs"), pid)
            if i == 0:
                debug_step("join")  # in one hierarchy only

    def procs(self):
        d = self.v2 if self.unified else (self.v1.get("pids") or self.v1.get("memory") or
                                          self.v1.get("freezer") or self.dirs()[0])
        try:
            return [int(p) for p in _read(os.path.join(d, "cgroup.procs")).split()]
        except FileNotFoundError:
            return []

    # -- limits
    def apply(self, resources, device_filter=True):
        """Write linux.resources. Every value is checked and turned into file writes first, so
        a config or an update that is refused writes nothing; a write the kernel refuses undoes
        the ones before it. A 0 leaves a value as it is, as runc reads them (engines send
        zeros for what an update does not change). device_filter=False: v2's device filter
        is left to the caller (create's init attaches it): its rules are returned."""
        resources = resources or {}
        steps = self.plan(resources)
        rules = self._plan_devices(resources)
        done = []
        try:
            for step in steps:
                done += self._write_step(step)
        except Error:
            for path, old in reversed(done):
                try:
                    _write(path, old)
                except OSError:
                    pass
            raise
        if rules and not rootless():
            # Rootless, the kernel loads no device filter (BPF needs CAP_SYS_ADMIN), and
            # none is needed: the container cannot mknod, and its device nodes are binds
            # of the host's, which the host's permissions guard (as runc skips it there).
            if not device_filter and self.unified:
                return rules
            self._write_devices(rules)
        return None

    def _plan_devices(self, resources):
        """linux.resources.devices as rules, checked before anything is written: a v1 list
        the kernel would silently take otherwise is refused."""
        rules = device_rules(resources)
        if rules and not self.unified:
            self._where("devices")
            check_v1_device_rules(rules)
        return rules

    def _write_devices(self, rules):
        """v2 has no devices controller: a BPF program attached to the cgroup decides."""
        if self.unified:
            bpf_attach_device_filter(self.v2, rules)
            return
        for allow, kind, major, minor, access in rules:
            rule = "%s %s:%s %s" % (kind, "*" if major is None or major < 0 else major,
                                    "*" if minor is None or minor < 0 else minor, access)
            self._write_step([(os.path.join(self.v1["devices"], "devices.allow"
                                            if allow else "devices.deny"),
                               "a" if kind == "a" and allow is False else rule, False)])

    def _where(self, controller):
        """'v1' or 'v2' and the directory where the controller's files are. On a hybrid host
        a controller that only the cgroup2 hierarchy has (hugetlb, here) is used there."""
        if controller in self.v1:
            return "v1", self.v1[controller]
        if self.v2 and self.has_v2(controller):
            return "v2", self.v2
        raise Error("cgroup controller %s is not available%s" % (controller,
                                                                 self._not_handed_down(controller)))

    def has_v2(self, controller):
        """Whether our cgroup has the controller's files (once it is made; before, whether
        the hierarchy has the controller at all)."""
        own = os.path.join(self.v2, "cgroup.controllers")
        try:
            return controller in _read(own if os.path.exists(own) else os.path.join(
                self.v2_root, "cgroup.controllers")).split()
        except OSError:
            return False

    def _not_handed_down(self, controller):
        """Why the hierarchy has a controller that our cgroup has not: the cgroup above that
        did not enable it for its children (_enable_controllers)."""
        if not self.v2 or not os.path.exists(os.path.join(self.v2, "cgroup.controllers")) or \
                controller not in _read(os.path.join(self.v2_root, "cgroup.controllers")).split():
            return ""
        d = self.v2_root
        for part in self.path.strip("/").split("/")[:-1]:
            if controller not in _read(os.path.join(d, "cgroup.subtree_control")).split():
                break
            d = os.path.join(d, part)
        where = "/" + os.path.relpath(d, self.v2_root).lstrip(".")
        return " in %s: %s does not hand it down%s" % (
            self.path, where, " (it has processes of its own, which cgroup v2 forbids then)"
            if _v2_has_own_processes(d) else "")

    def plan(self, r):
        """linux.resources as steps, each a list of (path, value, optional) writes; a step of
        two is a pair the kernel may only take in one order (memory and memory+swap, cpu
        period and quota), tried the other way round when the first is refused. One function
        per OCI key, each choosing the v1 or v2 file where it writes (as crun writes each
        resource group in its own function); all are planned, and so checked, before any
        write."""
        steps = []
        for key, plan_key in (("memory", self._plan_memory), ("cpu", self._plan_cpu),
                              ("cpu", self._plan_cpuset), ("pids", self._plan_pids),
                              ("blockIO", self._plan_block_io),
                              ("hugepageLimits", self._plan_hugepage_limits),
                              ("network", self._plan_network), ("unified", self._plan_unified)):
            if r.get(key):
                steps += plan_key(r[key])
        return [step for step in steps if step]

    def _file(self, controller, name, value, optional=False):
        """A write to the controller's file `name`, in whichever hierarchy has it."""
        return (os.path.join(self._where(controller)[1], name), str(value), optional)

    def _plan_memory(self, mem):
        if not (any(mem.get(k) for k in ("limit", "swap", "reservation")) or
                mem.get("swappiness") is not None or mem.get("disableOOMKiller")):
            return []
        file, steps = self._file, []
        limit, swap = mem.get("limit", 0), mem.get("swap", 0)
        if limit == -1 and swap == 0:
            swap = -1  # unlimited memory means unlimited swap too, as runc has it
        if self._where("memory")[0] == "v1":
            pair = []
            if limit:
                pair.append(file("memory", "memory.limit_in_bytes", limit))
            if swap:
                pair.append(file("memory", "memory.memsw.limit_in_bytes", swap, True))
            steps.append(pair)
            if mem.get("reservation"):
                steps.append([file("memory", "memory.soft_limit_in_bytes",
                                   mem["reservation"])])
            if mem.get("swappiness") is not None:
                if not 0 <= mem["swappiness"] <= 100:
                    raise Error("linux.resources.memory.swappiness: %d is not from 0 to "
                                "100" % mem["swappiness"])
                steps.append([file("memory", "memory.swappiness", mem["swappiness"])])
            if mem.get("disableOOMKiller"):
                steps.append([file("memory", "memory.oom_control", 1)])
            return steps
        if swap not in (0, -1):
            if limit in (0, -1):
                raise Error("linux.resources.memory.swap: cgroup v2 cannot limit "
                            "swap without a memory limit")
            if swap < limit:
                raise Error("linux.resources.memory.swap: memory+swap must be at "
                            "least the memory limit")
        pair = []
        if limit:
            pair.append(file("memory", "memory.max", "max" if limit < 0 else limit))
        if swap:
            pair.append(file("memory", "memory.swap.max",
                             "max" if swap < 0 else swap - limit, True))
        steps.append(pair)
        if mem.get("reservation"):
            steps.append([file("memory", "memory.low", mem["reservation"])])
        for key in ("swappiness", "disableOOMKiller"):
            if mem.get(key) not in (None, False):
                raise Error("linux.resources.memory.%s is not supported on cgroup v2"
                            % key)
        return steps

    def _plan_cpu(self, cpu):
        if not (any(cpu.get(k) for k in ("shares", "quota", "period", "realtimeRuntime",
                                         "realtimePeriod", "burst")) or
                cpu.get("idle") is not None):
            return []
        file, steps = self._file, []
        shares, quota, period = cpu.get("shares", 0), cpu.get("quota", 0), \
            cpu.get("period", 0)
        if self._where("cpu")[0] == "v1":
            if shares:
                steps.append([file("cpu", "cpu.shares", shares)])
            pair = []
            if period:
                pair.append(file("cpu", "cpu.cfs_period_us", period))
            if quota:
                pair.append(file("cpu", "cpu.cfs_quota_us", quota))
            steps.append(pair)
            if cpu.get("burst") is not None:
                steps.append([file("cpu", "cpu.cfs_burst_us", cpu["burst"])])
            rt = [file("cpu", name, cpu[key]) for key, name in
                  (("realtimePeriod", "cpu.rt_period_us"),
                   ("realtimeRuntime", "cpu.rt_runtime_us")) if cpu.get(key)]
            steps.append(rt)
            if cpu.get("idle"):
                raise Error("linux.resources.cpu.idle needs cgroup v2")
            return steps
        if shares:
            steps.append([file("cpu", "cpu.weight", 1 + ((shares - 2) * 9999) // 262142)])
        if quota or period:
            if not quota:  # a new period alone keeps the quota
                try:
                    quota = _read(os.path.join(self.v2, "cpu.max")).split()[0]
                except (OSError, IndexError):
                    quota = "max"
            steps.append([file("cpu", "cpu.max", "%s %d" % (
                "max" if quota in (-1, "max") or int(quota) < 0 else quota,
                period or 100000))])
        if cpu.get("burst") is not None:
            steps.append([file("cpu", "cpu.max.burst", cpu["burst"])])
        if cpu.get("idle") is not None:
            steps.append([file("cpu", "cpu.idle", cpu["idle"])])
        if cpu.get("realtimeRuntime") or cpu.get("realtimePeriod"):
            raise Error("linux.resources.cpu: realtime time is cgroup v1's")
        return steps

    def _plan_cpuset(self, cpu):
        # cpuset's files have one name on v1 and v2
        return [[self._file("cpuset", "cpuset." + key, cpu[key])] for key in ("cpus", "mems")
                if cpu.get(key)]

    def _plan_pids(self, pids):
        limit = pids.get("limit", 0)
        return [[self._file("pids", "pids.max", "max" if limit < 0 else limit)]] if limit else []

    def _plan_hugepage_limits(self, limits):
        v1 = self._where("hugetlb")[0] == "v1"
        return [[self._file("hugetlb", "hugetlb.%s.%s" % (
            h["pageSize"], "limit_in_bytes" if v1 else "max"), h["limit"])] for h in limits]

    def _plan_network(self, net):
        # net_cls and net_prio are v1's only: _where says so on a v2 host
        steps = []
        if net.get("classID"):
            steps.append([self._file("net_cls", "net_cls.classid", net["classID"])])
        for prio in net.get("priorities") or []:
            steps.append([self._file("net_prio", "net_prio.ifpriomap",
                                     "%s %d" % (prio["name"], prio["priority"]))])
        return steps

    def _plan_unified(self, unified):
        if not self.v2:
            raise Error("linux.resources.unified needs a cgroup v2 hierarchy")
        steps = []
        for key, value in unified.items():
            if "/" in key or key.startswith("."):
                raise Error("linux.resources.unified: bad file name %r" % key)
            controller = key.split(".")[0]
            if controller != "cgroup" and not self.has_v2(controller):
                raise Error("cgroup controller %s is not available" % controller)
            steps.append([(os.path.join(self.v2, key), str(value), False)])
        return steps

    def _plan_block_io(self, b):
        """blockIO as blkio files (v1) or io files (v2); bfq's weight files where the
        kernel has them, as runc picks them."""
        if not any(b.get(k) for k in ("weight", "leafWeight", "weightDevice",
                                      "throttleReadBpsDevice", "throttleWriteBpsDevice",
                                      "throttleReadIOPSDevice", "throttleWriteIOPSDevice")):
            return []
        version, d = self._where("blkio" if "blkio" in self.v1 else "io")
        steps = []

        def weight_file(v1_names, v2_bfq):
            # bfq's where the kernel has it, else the other (whose write then says whether
            # the kernel has that)
            names = v1_names if version == "v1" else (v2_bfq, "io.weight")
            return next((n for n in names if os.path.exists(os.path.join(d, n))), names[-1])

        def io_weight(name, weight):  # io.weight counts 1-10000, blkio and bfq 10-1000
            return weight if name != "io.weight" else 1 + (weight - 10) * 9999 // 990

        if b.get("weight"):
            name = weight_file(("blkio.bfq.weight", "blkio.weight"), "io.bfq.weight")
            steps.append([(os.path.join(d, name), str(io_weight(name, b["weight"])), False)])
        if b.get("leafWeight"):
            if version != "v1":
                raise Error("linux.resources.blockIO.leafWeight is cgroup v1's")
            steps.append([(os.path.join(d, weight_file(("blkio.leaf_weight",), "")),
                           str(b["leafWeight"]), False)])
        for dev in b.get("weightDevice") or []:
            if dev.get("weight"):
                name = weight_file(("blkio.bfq.weight_device", "blkio.weight_device"),
                                   "io.bfq.weight")
                steps.append([(os.path.join(d, name), "%d:%d %d" % (
                    dev["major"], dev["minor"], io_weight(name, dev["weight"])), False)])
        for key, v1_name, v2_key in (
                ("throttleReadBpsDevice", "blkio.throttle.read_bps_device", "rbps"),
                ("throttleWriteBpsDevice", "blkio.throttle.write_bps_device", "wbps"),
                ("throttleReadIOPSDevice", "blkio.throttle.read_iops_device", "riops"),
                ("throttleWriteIOPSDevice", "blkio.throttle.write_iops_device", "wiops")):
            for dev in b.get(key) or []:
                if version == "v1":
                    line = (os.path.join(d, v1_name), "%d:%d %d" % (
                        dev["major"], dev["minor"], dev["rate"]), False)
                else:
                    line = (os.path.join(d, "io.max"), "%d:%d %s=%s" % (
                        dev["major"], dev["minor"], v2_key, dev["rate"] or "max"), False)
                steps.append([line])
        return steps

    def _write_step(self, step):
        """Write a step's files; returns (path, old value) of each, to undo them."""
        def write_all(writes):
            done = []
            for path, value, optional in writes:
                try:
                    old = _read(path)
                except OSError:
                    old = None
                try:
                    _write(path, value)
                except FileNotFoundError:
                    if optional:
                        continue
                    raise Error("cgroup: %s is not supported by this kernel"
                                % os.path.basename(path)) from None
                except OSError as e:
                    for p, o in reversed(done):
                        try:
                            _write(p, o)
                        except OSError:
                            pass
                    raise Error("cgroup: cannot write %s to %s: %s" % (
                        value, os.path.basename(path), e.strerror)) from None
                if old is not None and "\n" not in old and " " not in old:
                    done.append((path, old))  # a single value: one that can be put back
            return done
        try:
            return write_all(step)
        except Error:
            if len(step) != 2:
                raise
            return write_all(step[::-1])

    # -- what the container uses
    def stats(self):
        s = {"cpu": {}, "memory": {}, "pids": {}, "blkio": {}}
        if self.unified:
            cpu = _keyed(os.path.join(self.v2, "cpu.stat"))
            s["cpu"] = {"usage_ns": cpu.get("usage_usec", 0) * 1000,
                        "user_ns": cpu.get("user_usec", 0) * 1000,
                        "system_ns": cpu.get("system_usec", 0) * 1000}
            s["memory"] = {"usage": _read_int(os.path.join(self.v2, "memory.current")),
                           "limit": _read_int(os.path.join(self.v2, "memory.max")),
                           "max_usage": _read_int(os.path.join(self.v2, "memory.peak")),
                           "stat": _keyed(os.path.join(self.v2, "memory.stat"))}
            pids = self.v2
            rbytes = wbytes = 0
            try:
                with open(os.path.join(self.v2, "io.stat")) as f:
                    for line in f:
                        kv = dict(p.split("=") for p in line.split()[1:] if "=" in p)
                        rbytes += int(kv.get("rbytes", 0))
                        wbytes += int(kv.get("wbytes", 0))
            except OSError:
                pass
            s["blkio"] = {"read_bytes": rbytes, "write_bytes": wbytes}
        else:
            if "cpuacct" in self.v1:
                d = self.v1["cpuacct"]
                ticks = os.sysconf("SC_CLK_TCK")
                st = _keyed(os.path.join(d, "cpuacct.stat"))
                s["cpu"] = {"usage_ns": _read_int(os.path.join(d, "cpuacct.usage")),
                            "user_ns": st.get("user", 0) * 10**9 // ticks,
                            "system_ns": st.get("system", 0) * 10**9 // ticks}
            if "memory" in self.v1:
                d = self.v1["memory"]
                s["memory"] = {"usage": _read_int(os.path.join(d, "memory.usage_in_bytes")),
                               "limit": _read_int(os.path.join(d, "memory.limit_in_bytes")),
                               "max_usage": _read_int(os.path.join(d,
                                                                   "memory.max_usage_in_bytes")),
                               "stat": _keyed(os.path.join(d, "memory.stat"))}
            pids = self.v1.get("pids")
            if "blkio" in self.v1:
                rbytes = wbytes = 0
                try:
                    with open(os.path.join(self.v1["blkio"],
                                           "blkio.throttle.io_service_bytes_recursive")) as f:
                        for line in f:
                            parts = line.split()
                            if len(parts) == 3 and parts[1] == "Read":
                                rbytes += int(parts[2])
                            elif len(parts) == 3 and parts[1] == "Write":
                                wbytes += int(parts[2])
                except OSError:
                    pass
                s["blkio"] = {"read_bytes": rbytes, "write_bytes": wbytes}
        if pids:
            s["pids"] = {"current": _read_int(os.path.join(pids, "pids.current")),
                         "limit": _read_int(os.path.join(pids, "pids.max"))}
        return s

    # -- pause and resume
    def freeze(self, frozen=True):
        if self.unified:
            _write(os.path.join(self.v2, "cgroup.freeze"), 1 if frozen else 0)
        else:
            _write(os.path.join(self._where("freezer")[1], "freezer.state"),
                   "FROZEN" if frozen else "THAWED")
        for _ in range(2000):  # freezing is asynchronous: wait until the kernel says it is done
            if self.frozen() == frozen:
                return
            time.sleep(0.001)
        raise Error("cgroup: the container did not %s" % ("freeze" if frozen else "thaw"))

    def frozen(self):
        try:
            if self.unified:
                return "frozen 1" in _read(os.path.join(self.v2, "cgroup.events"))
            if "freezer" in self.v1:
                return _read(os.path.join(self.v1["freezer"], "freezer.state")) == "FROZEN"
        except OSError:
            pass
        return False

    def oom_killed(self):
        """Whether the kernel's OOM killer killed a process of this cgroup (for its limit):
        memory.events' oom_kill on v2, memory.oom_control's on v1 (Linux 4.13+)."""
        if self.unified:
            path = os.path.join(self.v2, "memory.events")
        elif "memory" in self.v1:
            path = os.path.join(self.v1["memory"], "memory.oom_control")
        else:
            return False
        return _keyed(path).get("oom_kill", 0) > 0

    # -- the end
    def kill_all(self, sig=signal.SIGKILL):
        # Every hierarchy's members: a move cut short (a runtime killed while it wrote them)
        # leaves a process in some of them only, which it keeps busy.
        pids = set()
        for d in self.dirs():
            try:
                pids.update(int(p) for p in _read(os.path.join(d, "cgroup.procs")).split())
            except FileNotFoundError:
                pass
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def destroy(self):
        """Kill what is left and remove the directories this cgroup created (or its leaf)."""
        if self.frozen():
            self.kill_all()
            self.freeze(False)
        for attempt in range(400):
            self.kill_all()
            try:
                self._remove()
                return
            except OSError as e:
                if e.errno != errno.EBUSY or attempt == 399:
                    raise Error("cgroup %s: cannot remove: %s" % (self.path, e.strerror)) from None
                time.sleep(0.005)

    def _remove(self):
        leaves = self.dirs()
        # Our default parent is removed by whichever container leaves it empty.
        ours = {os.path.dirname(d) for d in leaves
                if os.path.basename(os.path.dirname(d)) == DEFAULT_CGROUP_PARENT}
        failed = None
        for d in sorted(set(self.created) | set(leaves) | ours, key=len, reverse=True):
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError as e:
                # A shared parent that another container still uses: that one removes it
                # (or one that is not ours to remove: made by root, we are not).
                if d in leaves or e.errno not in (errno.EBUSY, errno.EACCES, errno.EPERM):
                    failed = failed or e  # remove what we can, then say what we could not
        if failed:
            raise failed
        self.created = []


# ==== namespaces: joined by path, made, user namespaces and their id maps, time ====

def unshare_time(linux):
    """A time namespace is entered by the children of the process that makes it, never by
    that process: make it before the init is forked, with its clocks' offsets written
    before any process is in it. Returns whether one was made."""
    if not makes_time_ns(linux):
        return False
    unshare(CLONE_NEWTIME)
    offsets = linux.get("timeOffsets") or {}
    lines = ["%s %d %d" % (clock, o.get("secs", 0), o.get("nanosecs", 0))
             for clock, o in sorted(offsets.items())]
    if lines:
        try:
            _write("/proc/self/timens_offsets", "\n".join(lines) + "\n")
        except OSError as e:
            raise Error("linux.timeOffsets: %s" % e.strerror) from None
    return True


def new_userns(linux):
    """Whether the container makes a user namespace of its own (not one given by path)."""
    return any(ns["type"] == "user" and not ns.get("path")
               for ns in linux.get("namespaces", []))


def host_owner(linux, uid=0, gid=0):
    """Where the container's uid:gid is on the host: itself, or with a user namespace of its
    own, the host ids its maps give (-1, which chown leaves alone, when unmapped)."""
    if not new_userns(linux):
        return uid, gid
    return (_host_id(linux.get("uidMappings", []), uid),
            _host_id(linux.get("gidMappings", []), gid))


def _host_id(mappings, container_id=0):
    """The host id that container_id maps to (-1, which chown ignores, when none)."""
    for m in mappings:
        if m["containerID"] <= container_id < m["containerID"] + m["size"]:
            return m["hostID"] + container_id - m["containerID"]
    return -1


def _check_reachable(paths, linux):
    """In a user namespace the container's root is an unprivileged uid of the host: it must
    be able to walk to the rootfs and to every bind source (paths), or the setup fails
    obscurely."""
    uid, gid = host_owner(linux)
    for path in paths:
        d = os.path.dirname(os.path.abspath(path))
        while True:
            st = os.stat(d)
            if not (st.st_mode & stat.S_IXOTH or (st.st_uid == uid and st.st_mode & stat.S_IXUSR)
                    or (st.st_gid == gid and st.st_mode & stat.S_IXGRP)):
                raise Error("%s: the container's root (uid %d on the host) may not enter %s: "
                            "a user namespace needs paths it can walk" % (path, uid, d))
            if d == "/":
                break
            d = os.path.dirname(d)


def _join_namespace(kind, path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise Error("linux.namespaces: %s %s: %s" % (kind, path, e.strerror)) from None
    try:
        setns(fd, NAMESPACES[kind][0])
    finally:
        os.close(fd)


def write_id_maps(pid, linux):
    """uid_map and gid_map of a process that has just made its user namespace.

    An unprivileged user may write one mapping of its own id, and its gid only once
    setgroups is denied in the namespace (else it could drop a group that denies it
    access); other maps (its /etc/subuid range) go through the setuid newuidmap and
    newgidmap, which check them against /etc/subuid and /etc/subgid, as runc does."""
    maps = {}
    for kind in ("uid", "gid"):
        maps[kind] = linux.get(kind + "Mappings", [])
        if not maps[kind]:
            raise Error("linux.%sMappings: a user namespace needs them" % kind)
    own = {"uid": os.geteuid(), "gid": os.getegid()}
    helper = os.geteuid() != 0 and any(
        len(m) != 1 or m[0]["hostID"] != own[kind] or m[0]["size"] != 1
        for kind, m in maps.items())
    if os.geteuid() != 0 and not helper:
        try:
            _write("/proc/%d/setgroups" % pid, "deny")
        except OSError as e:
            raise Error("linux.gidMappings: deny setgroups: %s" % e.strerror) from None
    for kind in ("uid", "gid"):
        if helper:
            _run_id_map_helper(pid, kind, maps[kind])
            continue
        lines = "".join("%d %d %d\n" % (m["containerID"], m["hostID"], m["size"])
                        for m in maps[kind])
        try:
            _write("/proc/%d/%s_map" % (pid, kind), lines)
        except OSError as e:
            raise Error("linux.%sMappings: %s" % (kind, e.strerror)) from None


def _run_id_map_helper(pid, kind, mappings):
    import subprocess
    name = "new%smap" % kind
    path = host_program(name)
    if path is None:
        raise Error("linux.%sMappings: mappings other than your own id need %s (the uidmap "
                    "package) and a range in /etc/sub%s" % (kind, name, kind))
    argv = [path, str(pid)] + [str(n) for m in mappings
                               for n in (m["containerID"], m["hostID"], m["size"])]
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        why = " ".join(r.stdout.split()) or "exit status %d" % r.returncode
        raise Error("linux.%sMappings: %s: %s" % (kind, name, why))


def mount_idmaps(config, bundle):
    """{index in config.mounts: an id-mapped copy of its source} for the bind mounts with
    uidMappings/gidMappings (or an idmap option, which takes the container's maps). Made
    here, as the host's root: inside a user namespace the kernel refuses to id-map a mount
    of the host's filesystems, but attaching the copy is allowed. The caller closes them."""
    linux = config.get("linux", {})
    trees = {}
    try:
        for i, m in enumerate(config.get("mounts", [])):
            options = m.get("options") or []
            maps = {k: m[k] for k in ("uidMappings", "gidMappings") if m.get(k)}
            if not maps and not {"idmap", "ridmap"} & set(options):
                continue
            source = _bind_source(m, bundle)
            if source is None:
                raise Error("mounts: %s: only a bind mount can be id-mapped" % m["destination"])
            if not os.path.exists(source):
                raise Error("mount %s to %s: %s" % (source, m["destination"],
                                                    os.strerror(errno.ENOENT)))
            maps = maps or {k: linux.get(k) for k in ("uidMappings", "gidMappings")}
            if not maps.get("uidMappings") or not maps.get("gidMappings"):
                raise Error("mounts: %s: an id-mapped mount needs uidMappings and gidMappings"
                            % m["destination"])
            userns = mapped_userns(maps)
            try:
                trees[i] = idmapped_tree(source, userns, "rbind" in options or
                                         "ridmap" in options)
            except OSError as e:
                raise Error("mount %s to %s: id-map: %s" % (source, m["destination"],
                                                            os.strerror(e.errno))) from None
            finally:
                os.close(userns)
    except BaseException:
        for tree in trees.values():
            os.close(tree)
        raise
    return trees


def mapped_userns(linux):
    """An fd of a user namespace with the container's id maps, for id-mapped mounts: a
    child makes the namespace and waits while we map it and open it, then goes."""
    made_r, made_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = fork()
    if pid == 0:
        try:
            os.close(made_r)
            os.close(done_w)
            unshare(CLONE_NEWUSER)
            os.write(made_w, b"x")
            os.read(done_r, 1)
        finally:
            os._exit(0)
    os.close(made_w)
    os.close(done_r)
    try:
        if os.read(made_r, 1) != b"x":
            raise Error("user namespace: could not make one for the image's layers")
        write_id_maps(pid, linux)
        return os.open("/proc/%d/ns/user" % pid, os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(made_r)
        os.close(done_w)
        os.waitpid(pid, 0)


def remove_as_container_root(path, linux):
    """Remove a tree that a rootless container's root wrote, as that root: files of its
    subordinate ids, or the user's own without permission bits (overlayfs's work
    directory), are only its to remove, in a user namespace with its maps (as `podman
    unshare rm` does)."""
    import shutil
    userns = mapped_userns(linux)
    try:
        pid = fork()
        if pid == 0:
            code = 1
            try:
                setns(userns, CLONE_NEWUSER)
                shutil.rmtree(path, ignore_errors=True)
                code = 0
            finally:
                os._exit(code)
    finally:
        os.close(userns)
    os.waitpid(pid, 0)


# ==== root filesystem: mounts, /dev, pivot_root, masked and read-only paths ====

def make_in_root(root, path, like_file=False, links=0):
    """Make `path` inside `root` if it is missing, as a mount point is made: its missing
    directories, then an empty file (like_file) or a directory; a dangling symlink's target
    instead, inside root. Each step is taken from an fd that open_in_root resolved, so that
    no symlink swapped in by a racing process (another container on the same rootfs, a
    volume's) sends it to the host's files, as a path resolved beforehand could."""
    parent, name = _parent_in_root(root, path)
    try:
        if name is None:
            return
        try:
            if like_file:
                os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC,
                                 0o644, dir_fd=parent))
            else:
                os.mkdir(name, 0o755, dir_fd=parent)
            return
        except FileExistsError:
            try:
                target = os.readlink(name, dir_fd=parent)
            except OSError:
                return  # there, and no symlink
    finally:
        os.close(parent)
    try:
        os.close(open_in_root(root, path))
    except FileNotFoundError:  # a dangling symlink: its target is made (as resolved inside)
        if links >= 40:
            raise Error("%s: too many levels of symbolic links" % path) from None
        make_in_root(root, target if target.startswith("/") else os.path.join(
            os.path.dirname(os.path.normpath("/" + path)), target), like_file, links + 1)


def _parent_in_root(root, path, links=0):
    """(an O_PATH fd of the directory of `path` inside root, its missing directories made,
    a dangling symlink's target among them; the last name of path, or None for root
    itself), each step through open_in_root."""
    parts = [p for p in os.path.normpath("/" + path).split("/") if p]
    fd = open_in_root(root, "/", os.O_PATH | os.O_DIRECTORY)
    try:
        for i, part in enumerate(parts[:-1]):
            try:
                os.mkdir(part, 0o755, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                new = open_in_root(root, "/".join(parts[:i + 1]), os.O_PATH | os.O_DIRECTORY)
            except FileNotFoundError:  # a dangling symlink: made where it points
                target = os.readlink(part, dir_fd=fd)
                rest = "/".join([target] + parts[i + 1:])
                break
            os.close(fd)
            fd = new
        else:
            return fd, (parts[-1] if parts else None)
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    if links >= 40:
        raise Error("%s: too many levels of symbolic links" % path)
    return _parent_in_root(root, rest if target.startswith("/") else "/".join(
        parts[:i] + [rest]), links + 1)


def _readonly_remount(target, rec=False):
    _bind_remount(target, MS_RDONLY | (MS_REC if rec else 0))


def make_mount_points(mounts, config, rootfs):
    """Every mount point and the working directory, made beforehand by the host's root: in
    a user namespace, the container's root may not create files in a rootfs the host owns.
    mounts: the plan's, (entry, host source of a bind or None)."""
    for m, source in mounts:
        like_file = bool(source) and os.path.exists(source) and not os.path.isdir(source)
        make_in_root(rootfs, m["destination"], like_file)
    make_cwd(config, rootfs)


def make_cwd(config, rootfs):
    """The working directory, made if missing, as docker makes WORKDIR: before anything is
    mounted, and only in the rootfs itself — a cwd under a mount such as /proc is there or
    not (and through /proc/self/fd it could name anything)."""
    cwd = os.path.normpath(config["process"].get("cwd", "/"))
    if any(cwd == m["destination"].rstrip("/") or cwd.startswith(m["destination"].rstrip("/")
                                                                  + "/")
           for m in config.get("mounts", []) if m["destination"] != "/"):
        return
    try:
        make_in_root(rootfs, cwd)
        os.close(open_in_root(rootfs, cwd, os.O_PATH | os.O_DIRECTORY))
    except (FileExistsError, NotADirectoryError):
        raise Error("process.cwd %s: not a directory" % cwd) from None


def _bind_remount(target, flags):
    # A bind mount takes its flags from a remount only; in a user namespace the flags it
    # already has (nosuid, nodev, noexec, atime) are locked and must be repeated.
    st = os.statvfs(target)
    keep = st.f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_NOATIME | MS_NODIRATIME)
    if st.f_flag & os.ST_RELATIME:
        keep |= MS_RELATIME
    mount(None, target, None, (flags & ~MS_REC) | keep | MS_BIND | MS_REMOUNT)


def mount_entry(m, rootfs, source, cgroup, userns=False, tree=None):
    """Mount one entry of config.mounts, through an fd of its target opened inside root;
    `source` is a bind's host path (_bind_source), `tree` its id-mapped copy (mount_idmaps)
    to attach instead of a bind."""
    flags, propagation, data = parse_mount_options(m.get("options"))
    kind = m.get("type") or ("bind" if flags & MS_BIND else "")
    dest = m["destination"]
    if source is not None and not os.path.exists(source):
        raise FileNotFoundError(errno.ENOENT, source)  # "mount SOURCE to DEST: ..." (Step)
    if kind == "tmpfs" and not any(o.startswith("mode=") for o in data.split(",")):
        # the mode of the directory it covers, as runc gives it (not tmpfs's own 1777: a
        # tmpfs on /root would be everyone's to write)
        try:
            fd = open_in_root(rootfs, dest)
        except OSError:
            fd = None
        if fd is not None:
            try:
                st = os.fstat(fd)
            finally:
                os.close(fd)
            if stat.S_ISDIR(st.st_mode):
                data = ",".join(filter(None, [data, "mode=%o" % stat.S_IMODE(st.st_mode)]))
    make_in_root(rootfs, dest, source is not None and not os.path.isdir(source))
    remount = 0
    with _InRoot(rootfs, dest) as target:
        if tree is not None:
            move_tree(tree, target)
            remount = flags & ~(MS_BIND | MS_REC)
        elif source is not None:
            mount(source, target, None, MS_BIND | (flags & MS_REC))
            remount = flags & ~(MS_BIND | MS_REC)
        elif kind == "cgroup":
            mount_cgroupfs(rootfs, dest, target, flags, cgroup)
        elif kind == "sysfs" and userns:
            # sysfs may only be mounted by the owner of the network namespace: without a
            # network namespace of our own, bind the host's /sys (read-only if asked), as runc.
            try:
                mount("sysfs", target, "sysfs", flags, data or None)
            except PermissionError:
                mount("/sys", target, None, MS_BIND | MS_REC)
                remount = flags & MS_RDONLY | MS_REC
        else:
            mount(m.get("source") or kind, target, kind, flags, data or None)
            if kind == "tmpfs" and "tmpcopyup" in m.get("options", ()):
                # `target` still names the directory now covered: copy it into the tmpfs.
                with _InRoot(rootfs, dest) as tmpfs:
                    copy_tree(target, tmpfs)  # tmpcopyup
    recursive = recursive_mount_attrs(m.get("options"))
    if remount or propagation or recursive != (0, 0):
        # A new fd: the one above names the directory the mount now covers, not the mount.
        with _InRoot(rootfs, dest) as target:
            if remount:
                _bind_remount(target, remount)
            if recursive != (0, 0):
                mount_setattr_recursive(target, *recursive)
            for p in propagation:
                mount(None, target, None, p)


class _InRoot:
    """`with _InRoot(root, path) as p:` p is a /proc/self/fd path of `path` inside root."""

    def __init__(self, root, path):
        self.fd = open_in_root(root, path)

    def __enter__(self):
        return "/proc/self/fd/%d" % self.fd

    def __exit__(self, *exc):
        os.close(self.fd)


def mount_cgroupfs(rootfs, dest, target, flags, cgroup):
    """/sys/fs/cgroup as the container sees it: its own cgroup, read-only unless asked."""
    if cgroup is None:  # rootless without a cgroup: an empty one
        mount("tmpfs", target, "tmpfs", flags | MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=755")
        return
    if cgroup.unified:
        # The mount shows the hierarchy from the root of our cgroup namespace: with one of
        # our own, the container's cgroup.
        try:
            mount("cgroup2", target, "cgroup2", flags)
            return
        except OSError as e:
            # Only a process whose cgroup namespace belongs to its user namespace may mount
            # cgroup2: in a user namespace without one (or with one joined by path), bind the
            # container's own cgroup instead, as runc falls back to a bind.
            if e.errno not in (errno.EPERM, errno.EBUSY):
                raise
        _bind_cgroup(cgroup.v2, rootfs, dest, flags)
        return
    # v1 has a hierarchy per controller: bind the container's directory of each (runc does).
    mount("tmpfs", target, "tmpfs", flags & ~MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
          "mode=755")
    hierarchies = {}
    for controller, d in cgroup.v1.items():
        hierarchies.setdefault(os.path.basename(d[:-len(cgroup.path)].rstrip("/")) or
                               controller, d)
    if cgroup.v2:
        hierarchies["unified"] = cgroup.v2
    with _InRoot(rootfs, dest) as tmpfs:
        for name in hierarchies:
            os.mkdir(os.path.join(tmpfs, name))
    for name, source in hierarchies.items():
        _bind_cgroup(source, rootfs, os.path.join(dest, name), flags)
    if flags & MS_RDONLY:
        with _InRoot(rootfs, dest) as tmpfs:
            mount(None, tmpfs, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)


def _bind_cgroup(source, rootfs, dest, flags):
    """Bind a cgroup directory of the host at dest with the entry's flags (as runc does)."""
    with _InRoot(rootfs, dest) as target:
        mount(source, target, None, MS_BIND)
    extra = flags & (MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    if extra:  # a new fd: the one above names the directory the bind now covers
        with _InRoot(rootfs, dest) as target:
            _bind_remount(target, extra)


DEFAULT_DEVICES = [  # path, type, major, minor: what every container's /dev holds
    ("/dev/null", "c", 1, 3), ("/dev/zero", "c", 1, 5), ("/dev/full", "c", 1, 7),
    ("/dev/random", "c", 1, 8), ("/dev/urandom", "c", 1, 9), ("/dev/tty", "c", 5, 0),
]
DEV_SYMLINKS = [("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"),
                ("/proc/self/fd/1", "/dev/stdout"), ("/proc/self/fd/2", "/dev/stderr"),
                ("pts/ptmx", "/dev/ptmx"), ("/proc/kcore", "/dev/core")]


def create_devices(rootfs, devices, userns=False):
    """The device nodes of /dev. In a user namespace mknod is refused: the host's nodes are
    bind-mounted instead (the devices cgroup still decides what may be used)."""
    old = os.umask(0)
    try:
        wanted = [{"path": p, "type": t, "major": ma, "minor": mi, "fileMode": 0o666}
                  for p, t, ma, mi in DEFAULT_DEVICES]
        given = {d["path"] for d in devices}
        for dev in [d for d in wanted if d["path"] not in given] + list(devices):
            kind = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK,
                    "p": stat.S_IFIFO}.get(dev.get("type"))
            if kind is None:
                raise Error("linux.devices: %s: unknown type %r" % (dev["path"], dev.get("type")))
            try:
                _create_device(rootfs, dev, kind, userns)
            except OSError as e:
                raise Error("create device %s: %s" % (dev["path"], os.strerror(e.errno))
                            ) from None
        for source, link in DEV_SYMLINKS:
            if link == "/dev/core" and not os.path.exists(source):
                continue  # a kernel without /proc/kcore: no dangling link (runc does so)
            parent, name = _parent_in_root(rootfs, link)
            try:
                os.symlink(source, name, dir_fd=parent)
            except FileExistsError:
                pass
            finally:
                os.close(parent)
    finally:
        os.umask(old)


def _create_device(rootfs, dev, kind, userns):
    parent, name = _parent_in_root(rootfs, dev["path"])  # (see make_in_root)
    try:
        try:
            os.unlink(name, dir_fd=parent)
        except FileNotFoundError:
            pass
        if userns:
            os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600,
                             dir_fd=parent))
        else:
            mode = dev.get("fileMode", 0o666) & 0o7777
            os.mknod(name, kind | mode, os.makedev(dev.get("major", 0), dev.get("minor", 0)),
                     dir_fd=parent)
            os.chown(name, dev.get("uid", 0), dev.get("gid", 0), dir_fd=parent,
                     follow_symlinks=False)
    finally:
        os.close(parent)
    if userns:
        with _InRoot(rootfs, dev["path"]) as target:
            mount(dev["path"], target, None, MS_BIND)


def cut_from_host(linux, under):
    """Make our mount namespace's mounts such that nothing mounted from here on under the
    paths `under` (the rootfs, an overlay's layers) reaches the host.

    Unset, linux.rootfsPropagation is rslave, as runc's: every mount a slave of the host's
    (it hears the host's mounts, and says nothing back); private cuts them off. With shared,
    the mounts stay the host's peers, so that a bind of a host directory is one too (CRI's
    Bidirectional: what the container mounts in it reaches the host); then only the mounts
    that hold `under` are made slaves, as runc makes the rootfs's private (and pivot_root
    refuses a new root whose parent is shared)."""
    propagation = linux.get("rootfsPropagation") or "rslave"
    if "shared" not in propagation:
        mount(None, "/", None, MS_REC | (MS_SLAVE if "slave" in propagation else MS_PRIVATE))
        return
    points = _mount_points()
    for path in under:
        path = os.path.realpath(path)
        holder = max((i for i, (point, _) in enumerate(points)
                      if path == point or path.startswith(point.rstrip("/") + "/")),
                     key=lambda i: (len(points[i][0]), i))  # the last of a stacked point
        if points[holder][1]:
            mount(None, points[holder][0], None, MS_SLAVE)
            points[holder] = (points[holder][0], False)


def _mount_points():
    """[(mount point, whether shared)] of our mount namespace, in mount order."""
    out = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f.read().splitlines():
            fields = line.split()
            optional = fields[6:fields.index(b"-")]
            out.append((_unescape_octal(fields[4]),
                        any(tag.startswith(b"shared:") for tag in optional)))
    return out


def enter_rootfs(rootfs):
    """pivot_root into rootfs and detach the old root: no chroot, nothing of the host left."""
    old = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.chdir(rootfs)
        pivot_root(".", ".")
        # The old root now sits on top of the new one: detach it without telling the host.
        # Through its fd, as runc: "." is still the new root, whose mounts keep the
        # propagation their options gave them (a shared one stays shared).
        os.fchdir(old)
        mount(None, ".", None, MS_SLAVE | MS_REC)
        umount2(".", MNT_DETACH)
    finally:
        os.close(old)
    os.chdir("/")


def move_root(rootfs):
    """create --no-pivot, as runc's: move the rootfs mount onto / and chroot into it, for a
    rootfs on a ramfs (an initramfs), which pivot_root refuses. The host's mounts stay
    below it, out of reach of paths but not of a process with CAP_SYS_CHROOT."""
    os.chdir(rootfs)
    mount(rootfs, "/", None, MS_MOVE)
    os.chroot(".")
    os.chdir("/")


def readonly_path(path):
    """An entry of linux.readonlyPaths, once inside; one that does not exist is skipped."""
    try:
        mount(path, path, None, MS_BIND | MS_REC)
    except FileNotFoundError:
        return
    _readonly_remount(path, rec=True)


def mask_path(path):
    """An entry of linux.maskedPaths, once inside; one that does not exist is skipped."""
    try:
        if os.path.isdir(path):
            mount("tmpfs", path, "tmpfs", MS_RDONLY)
        else:
            mount("/dev/null", path, None, MS_BIND)
    except FileNotFoundError:
        pass


def root_propagation(propagation):
    """linux.rootfsPropagation shared or unbindable, set last. Only now, on the new root:
    pivot_root refuses a shared new root, before it the flag would reach the mount the
    rootfs sits on, and an unbindable tree takes no more binds (read-only paths are binds).
    A shared root is a peer group of the container's own: the host's mounts are slaves of
    the host's by then."""
    mount(None, "/", None, PROPAGATION[propagation])


# ---- layers as a root filesystem: an overlay mount, or a private copy ----
# Layer directories hold overlayfs's form of whiteouts: a 0/0 character device hides a name
# of the layers below, and a directory with trusted.overlay.opaque=y hides all they put in it
# (user.overlay.opaque=y in a rootless user's store: only root may set trusted.* xattrs; the
# overlay then mounted with userxattr, as the kernel allows in a user namespace since 5.11).

OVERLAY_OPAQUE = ("trusted.overlay.opaque", "user.overlay.opaque")


def _is_whiteout(st):
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _opaque(path):
    for name in OVERLAY_OPAQUE:
        try:
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            pass
    return False


def layers_lookup(layers, path):
    """The host path of `path` (no symlink followed) in the merged view of layers (bottom
    first): in the topmost layer that has it, or None if the merged view has no such file."""
    for candidate, _ in _layer_entries(layers, path):
        return candidate
    return None


def _layer_entries(layers, path):
    """(host path, lstat) of `path` (no symlink followed) in each layer (bottom first) whose
    entry shows in their merged view, topmost first: down to the one that hides the layers
    below (a whiteout, a file where a directory was, an opaque directory; its own entries
    show)."""
    parts = [p for p in os.path.normpath("/" + path).split("/") if p]  # no ".." out of it
    for layer in reversed(layers):
        hidden_below = False
        for i in range(len(parts)):
            candidate = os.path.join(layer, *parts[:i + 1])
            try:
                st = os.lstat(candidate)
            except (FileNotFoundError, NotADirectoryError):
                break
            if _is_whiteout(st):
                return
            if i == len(parts) - 1:
                yield candidate, st
            if not stat.S_ISDIR(st.st_mode):
                return  # a file where a directory was: nothing below shows through
            hidden_below = hidden_below or _opaque(candidate)
        if hidden_below:
            return


def _copy_metadata(src, dst, st, owner):
    link = stat.S_ISLNK(st.st_mode)
    uid, gid = owner(st.st_uid, st.st_gid)
    os.chown(dst, uid, gid, follow_symlinks=False)
    if not link:  # after chown, which clears setuid bits
        mode = stat.S_IMODE(st.st_mode)
        if uid == -1 or gid == -1:  # an owner outside the id map stays the host's root:
            mode &= ~(stat.S_ISUID | stat.S_ISGID)  # never setuid to it
        os.chmod(dst, mode)
        for name in os.listxattr(src, follow_symlinks=False):
            if not name.startswith(("trusted.overlay.", "user.overlay.")):  # keep e.g.
                # security.capability
                os.setxattr(dst, name, os.getxattr(src, name, follow_symlinks=False),
                            follow_symlinks=False)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def _same_owner(uid, gid):
    return uid, gid


def _remove_entry(path):
    import shutil
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _copy_dir(src, dst, links, owner, layer):
    """Copy src's entries into dst (made), all file types, owners (through owner), modes,
    times and xattrs, hard links kept. A layer's whiteouts and opaque directories hide
    what dst has; elsewhere (layer false) they are copied like any node."""
    import shutil
    if layer and _opaque(src):
        for name in os.listdir(dst):
            _remove_entry(os.path.join(dst, name))
    with os.scandir(src) as entries:
        for entry in entries:
            s, d = entry.path, os.path.join(dst, entry.name)
            st = entry.stat(follow_symlinks=False)
            if layer and _is_whiteout(st):
                _remove_entry(d)
                continue
            if stat.S_ISDIR(st.st_mode):
                if not (os.path.isdir(d) and not os.path.islink(d)):
                    _remove_entry(d)
                    os.mkdir(d, 0o700)
                _copy_dir(s, d, links, owner, layer)
                _copy_metadata(s, d, st, owner)  # last: filling it changed its mtime
                continue
            _remove_entry(d)
            key = (st.st_dev, st.st_ino)
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1 and key in links:
                os.link(links[key], d)  # a hardlink of the layer stays one
                continue
            if stat.S_ISREG(st.st_mode):
                shutil.copyfile(s, d, follow_symlinks=False)
                links[key] = d
            elif stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(s), d)
            else:
                os.mknod(d, st.st_mode, st.st_rdev)
            _copy_metadata(s, d, st, owner)


def copy_layers(layers, dest, owner=_same_owner):
    """Apply layer directories (bottom first, overlay form) onto the directory dest: the
    tree an overlay of them shows, as files of dest's own (no inode shared with the store).
    owner(uid, gid) gives the owner on the host of what the image has as uid:gid."""
    for layer in layers:
        _copy_dir(layer, dest, {}, owner, layer=True)
        _copy_metadata(layer, dest, os.lstat(layer), owner)


def copy_tree(src, dst):
    """A copy of the tree at src in the directory dst (a mount's tmpcopyup: dst keeps its
    own owner and mode, those of the tmpfs's options)."""
    _copy_dir(src, dst, {}, _same_owner, layer=False)


OVERLAY_REFUSED = (errno.EINVAL, errno.ENODEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP)


def _overlay_escape(path):
    return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def unique_layers(layers):
    """A layer twice in one image (identical layers happen) would be refused (ELOOP): its
    topmost occurrence alone gives the same view, covering all that the lower one adds."""
    return [p for i, p in enumerate(layers) if p not in layers[i + 1:]]


def overlay_options(layers, upper, work):
    """The overlay's mount data: lower layers topmost first, named relative to their common
    directory when they have one (mount_overlay then calls mount(2) from there)."""
    parent = os.path.dirname(layers[0])
    relative = all(os.path.dirname(p) == parent for p in layers)
    lower = ":".join(_overlay_escape(os.path.basename(p) if relative else p)
                     for p in reversed(layers))
    return "lowerdir=%s,upperdir=%s,workdir=%s" % (lower, _overlay_escape(upper),
                                                   _overlay_escape(work))


def mount_overlay(layers, upper, work, target):
    """Mount the overlay of layers (bottom first) with upper and work dirs on target.

    Mount data may be one page long: the lower layers are named relative to their common
    directory, made our working directory for the call (the kernel resolves them there)."""
    layers = unique_layers(layers)
    data = overlay_options(layers, upper, work)
    if unprivileged():  # a user's store marks opaque directories with user.* xattrs
        data += ",userxattr"
    if len(data) >= 4096:
        raise Error("the image has too many layers (%d) for one overlay mount" % len(layers))
    parent = os.path.dirname(layers[0])
    cwd = os.open(".", os.O_PATH | os.O_CLOEXEC)
    try:
        if all(os.path.dirname(p) == parent for p in layers):
            os.chdir(parent)
        mount("overlay", target, "overlay", 0, data)
    finally:
        os.fchdir(cwd)
        os.close(cwd)


FUSE_ANSWER_TIMEOUT = 10  # seconds for fuse-overlayfs to answer its first request (~20 ms)


def fuse_overlayfs_mount(program, nsfds, layers, upper, work, target, log, started):
    """The overlay of layers on target by fuse-overlayfs (program), in the user and mount
    namespaces nsfds (fds of those of the process the kernel's overlay was refused), as
    podman mounts it: from the runtime's side, so that the daemon is no process of the
    container's pid namespace (its root and fds are the host's: the container's root could
    ptrace it). A child of ours joins the namespaces, mounts /dev/fuse itself and hands it to
    fuse-overlayfs as /dev/fd/N (libfuse's pre-mounted form): the device is opened by us,
    not by the container's root, which may not open it (a root-only /dev/fuse, with
    --userns). started(pid) is told the daemon's pid as soon as it is forked (to be
    recorded before a crash could lose it); then that child reads the mount once (which
    waits for the daemon's answer) and reports. The daemon runs on in its own session and
    mount namespace, reparented; an Error says why it does not (killed by then)."""
    layers = unique_layers(layers)
    data = overlay_options(layers, upper, work)
    parent = os.path.dirname(layers[0])
    relative = all(os.path.dirname(p) == parent for p in layers)
    argv = [program, "-f", "-o", data]
    report_r, report_w = os.pipe()
    joiner = fork()
    if joiner == 0:
        daemon, mounted, report = None, False, {}
        try:
            os.close(report_r)
            # opened here, as the runtime: the state directory may not be the namespace's
            out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            os.setsid()  # the terminal's ^C is for the container, not for its filesystem
            userns, mntns = nsfds
            if os.fstat(userns).st_ino != os.stat("/proc/self/ns/user").st_ino:
                setns(userns, CLONE_NEWUSER)
            # fuse takes a device opened in the user namespace of the mount
            fuse = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
            setns(mntns, CLONE_NEWNS)
            mount("fuse-overlayfs", target, "fuse.fuse-overlayfs", 0,
                  "fd=%d,rootmode=40000,user_id=0,group_id=0,default_permissions,"
                  "allow_other" % fuse)
            mounted = True
            try:  # the namespace's root, whose files the layers are
                os.setgroups([])
            except OSError:  # setgroups denied (a user's own id mapped alone)
                pass
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
            daemon = fork()
            if daemon == 0:
                try:
                    # Out of the container's mount namespace (the device holds the mount):
                    # the init's pivot_root would move the root of every process there
                    # that shares its old one, ours too, into the container's rootfs.
                    unshare(CLONE_NEWNS)
                    if relative:
                        os.chdir(parent)
                    null = os.open(os.devnull, os.O_RDONLY)
                    os.dup2(null, 0)
                    os.dup2(out, 1)
                    os.dup2(out, 2)
                    os.dup2(fuse, 3)  # and nothing else of the runtime's
                    os.closerange(4, 65536)
                    fuse = 3
                    os.execv(argv[0], argv + ["/dev/fd/%d" % fuse])
                finally:
                    os._exit(127)
            os.close(fuse)  # the daemon's alone: its death aborts the connection
            os.write(report_w, json.dumps({"pid": daemon}).encode() + b"\n")
            try:
                os.listdir(target)  # the first request: answered, or ENOTCONN
            except OSError as e:
                report["error"] = _first_line(log) or e.strerror
            else:
                report["ok"] = True
        except BaseException as e:
            report["error"] = str(e)
            if isinstance(e, OSError) and e.strerror:  # /dev/fuse: Permission denied
                report["error"] = ("%s: " % e.filename if e.filename else "") + e.strerror
        try:
            if "error" in report:
                if daemon:
                    os.kill(daemon, signal.SIGKILL)
                if mounted:
                    umount2(target, MNT_DETACH)
            os.write(report_w, json.dumps(report).encode() + b"\n")
        finally:
            os._exit(0)
    os.close(report_w)
    report, pending, deadline = {}, b"", time.monotonic() + FUSE_ANSWER_TIMEOUT
    import select
    try:
        while True:
            wait = None if deadline is None else max(0, deadline - time.monotonic())
            if not select.select([report_r], [], [], wait)[0]:
                # A daemon that never answers would hold create forever: ended, its
                # connection aborts, and the joiner's request fails (or the joiner, stuck
                # before it could fork one, ends).
                os.kill(report.get("pid") or joiner, signal.SIGKILL)
                report["silent"], deadline = True, None
                continue
            data = os.read(report_r, 4096)
            if not data:
                break
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                report.update(json.loads(line))
                if "pid" in report and not report.get("told"):
                    report["told"] = True
                    started(report["pid"])
    finally:
        os.close(report_r)
        os.waitpid(joiner, 0)
    if report.get("silent"):
        raise Error("no answer within %d s" % FUSE_ANSWER_TIMEOUT)
    if not report.get("ok"):
        raise Error(report.get("error") or "exited")


def _first_line(path):
    try:
        with open(path, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return ""
    # fuse-overlayfs says that it ignores mount options it does not know (lazytime) first
    lines = [line for line in lines if not line.startswith("unknown argument ignored")]
    return lines[0] if lines else ""


# ==== process setup: hostname, sysctl, network, terminal, rlimits, user, capabilities ====

def write_sysctl(key, value):
    """An entry of linux.sysctl, inside the container (check_sysctl said it is namespaced);
    the step says which when the kernel refuses it."""
    _write("/proc/sys/" + key.replace(".", "/"), value)


def sethostname(name, domain=False):
    fn = libc().setdomainname if domain else libc().sethostname
    raw = name.encode()
    _check(fn(raw, len(raw)), "setdomainname" if domain else "sethostname")


def loopback_up():
    """ifconfig lo up, by ioctl: a new network namespace starts with lo down."""
    fd = _check(libc().socket(2, 2 | 0o2000000, 0), "socket")  # AF_INET, SOCK_DGRAM|CLOEXEC
    try:
        ifreq = bytearray(struct.pack("16sH22x", b"lo", 0))
        fcntl.ioctl(fd, 0x8913, ifreq)  # SIOCGIFFLAGS
        flags = struct.unpack_from("H", ifreq, 16)[0] | 1  # IFF_UP
        fcntl.ioctl(fd, 0x8914, struct.pack("16sH22x", b"lo", flags))  # SIOCSIFFLAGS
    finally:
        os.close(fd)


def open_pty():
    """A pty from the container's own devpts, so that the tty is /dev/pts/N inside."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, 0x40045431, struct.pack("i", 0))  # TIOCSPTLCK: unlock
    n = struct.unpack("I", fcntl.ioctl(master, 0x80045430, b"\0" * 4))[0]  # TIOCGPTN
    slave_path = "/dev/pts/%d" % n
    slave = os.open(slave_path, os.O_RDWR | os.O_NOCTTY)
    return master, slave, slave_path


def set_winsize(fd, rows, cols):
    fcntl.ioctl(fd, 0x5414, struct.pack("HHHH", rows, cols, 0, 0))  # TIOCSWINSZ


def get_winsize(fd):
    try:
        rows, cols = struct.unpack("HHHH", fcntl.ioctl(fd, 0x5413, b"\0" * 8))[:2]  # TIOCGWINSZ
    except OSError:
        return None
    return rows, cols


def setup_console(slave, slave_path, console_size, bind_console=True):
    """Make the pty slave the process's stdio and controlling terminal, and (the init's,
    bind_console) /dev/console."""
    if bind_console and (os.path.exists("/dev/console") or os.path.isdir("/dev")):
        try:
            if not os.path.lexists("/dev/console"):
                os.close(os.open("/dev/console", os.O_CREAT | os.O_WRONLY, 0o600))
            mount(slave_path, "/dev/console", None, MS_BIND)
        except OSError:
            pass  # /dev is the host's or read-only: the pty still works as stdio
    if console_size:
        set_winsize(slave, console_size.get("height", 24), console_size.get("width", 80))
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    os.close(slave)
    fcntl.ioctl(0, 0x540E, 0)  # TIOCSCTTY: the slave becomes our controlling terminal


RLIM_INFINITY = 2 ** 64 - 1


def rlimit_value(value):
    """The spec's values are uint64: "unlimited" arrives as 2**64-1, or as -1 (docker's
    --ulimit x=-1); from 2**63-1 on, no count reaches it: unlimited too."""
    return RLIM_INFINITY if value < 0 or value >= 2 ** 63 - 1 else value


def prlimit(resource, limits=None):
    """(soft, hard) of this process's `resource` (RLIMITS' numbers), first set to `limits`
    if given: through prlimit64 rather than the resource module, a shared library that the
    init would load for this alone (0.6 ms of a start)."""
    old = ctypes_api().create_string_buffer(16)
    _check(libc().syscall(syscall_nr("prlimit64"), 0, resource,
                          struct.pack("QQ", *limits) if limits else None, old), "prlimit")
    return struct.unpack("QQ", old.raw)


def apply_rlimits(rlimits):
    for rl in rlimits:
        res = rlimit_resource(rl["type"])
        try:
            prlimit(res, (rlimit_value(rl["soft"]), rlimit_value(rl["hard"])))
        except OSError:
            hard = prlimit(res)[1]
            raise Error("process.rlimits: cannot set %s to %d/%d (the hard limit here is %s)"
                        % (rl["type"], rl["soft"], rl["hard"],
                           "unlimited" if hard == RLIM_INFINITY else hard)) from None


def apply_scheduler(s):
    ctypes = ctypes_api()
    flags = sum(SCHED_FLAGS[f] for f in s.get("flags", []))
    # struct sched_attr, its first version (SCHED_ATTR_SIZE_VER0 = 48 bytes)
    attr = struct.pack("IIQiIQQQ", 48, SCHED_POLICIES[s["policy"]], flags, s.get("nice", 0),
                       s.get("priority", 0), s.get("runtime", 0), s.get("deadline", 0),
                       s.get("period", 0))
    if libc().syscall(syscall_nr("sched_setattr"), 0, ctypes.create_string_buffer(attr), 0):
        err = ctypes.get_errno()
        hint = ""
        if err == errno.EPERM and s["policy"] in ("SCHED_FIFO", "SCHED_RR", "SCHED_DEADLINE"):
            hint = " (with RT group scheduling, the container's cgroup needs realtime time: " \
                "linux.resources.cpu.realtimeRuntime)"
        raise Error("process.scheduler: sched_setattr %s: %s%s"
                    % (s["policy"], os.strerror(err), hint))


def apply_io_priority(io):
    ctypes = ctypes_api()
    if libc().syscall(syscall_nr("ioprio_set"), 1, 0,  # IOPRIO_WHO_PROCESS, ourselves
                      IOPRIO_CLASSES[io["class"]] << 13 | io.get("priority", 0)):
        raise Error("process.ioPriority: ioprio_set %s: %s"
                    % (io["class"], os.strerror(ctypes.get_errno())))


def home_directory(uid):
    """HOME as runc sets it when the config's env lacks it: the user's from the container's
    /etc/passwd, else /."""
    try:
        with open("/etc/passwd") as f:
            for line in f:
                parts = line.rstrip("\n").split(":")
                if len(parts) > 5 and parts[2] == str(uid) and parts[5]:
                    return parts[5]
    except OSError:
        pass
    return "/"


def find_executable(args, env):
    """The path execve will run, or an Error with the exit status docker gives (127/126)."""
    name = args[0]
    if "/" in name:
        candidates = [name]
    else:
        path = next((e[5:] for e in env if e.startswith("PATH=")), DEFAULT_PATH)
        candidates = [os.path.join(d or ".", name) for d in path.split(":")]
    for c in candidates:
        try:
            st = os.stat(c)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
            return c
        if "/" in name:
            raise Error('exec "%s": permission denied' % name, 126)
    if "/" in name:
        raise Error('exec "%s": no such file or directory' % name, 127)
    raise Error('exec "%s": executable file not found in $PATH' % name, 127)


def _setgroups_denied():
    """A user namespace whose gid map an unprivileged user wrote (write_id_maps): the
    groups stay the host's, as runc leaves them there."""
    try:
        with open("/proc/self/setgroups") as f:
            return f.read().strip() == "deny"
    except OSError:
        return False


def apply_user_and_capabilities(process):
    """Drop to the configured user with exactly the configured capability sets.

    The order matters: the bounding set while we still hold CAP_SETPCAP, then keep
    capabilities across setuid, then capset, and ambient last (it needs permitted and
    inheritable in place). No process.capabilities is every set empty, as runc has it: the
    runtime's own capabilities are never the container's by default."""
    caps = process.get("capabilities") or {}
    user = process.get("user", {})
    last = cap_last_cap()
    bounding = cap_mask(caps.get("bounding", []), "bounding")
    for cap in range(last + 1):
        if not bounding & (1 << cap):
            prctl(PR_CAPBSET_DROP, cap)
    prctl(PR_SET_KEEPCAPS, 1)
    gid, uid = user.get("gid", 0), user.get("uid", 0)
    try:  # (the ids that the config's maps lack are refused before: check_user_ids)
        ids = "additionalGids %s" % user.get("additionalGids", [])
        if user.get("additionalGids") or not _setgroups_denied():
            os.setgroups(user.get("additionalGids", []))
        ids = "gid %d" % gid
        os.setresgid(gid, gid, gid)
        ids = "uid %d" % uid
        os.setresuid(uid, uid, uid)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        raise Error("process.user: %s: no mapping in the container's user namespace" % ids) \
            from None
    try:
        capset(cap_mask(caps.get("effective", []), "effective"),
               cap_mask(caps.get("permitted", []), "permitted"),
               cap_mask(caps.get("inheritable", []), "inheritable"))
    except OSError:
        raise Error("process.capabilities: cannot set them (a capability the runtime "
                    "itself lacks, or effective not within permitted?)") from None
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    # The kernel raises an ambient capability only if it is permitted and inheritable;
    # `runc spec` lists ambient ones that are not inheritable, and runc and crun skip
    # those rather than fail.
    ambient = cap_mask(caps.get("ambient", []), "ambient") & \
        cap_mask(caps.get("permitted", []), "permitted") & \
        cap_mask(caps.get("inheritable", []), "inheritable")
    for cap in range(last + 1):
        if ambient & (1 << cap):
            prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)
    prctl(PR_SET_KEEPCAPS, 0)


def run_hooks(hooks, state, kind):
    """Run OCI hooks with the container state on stdin; a failing hook fails the step,
    except poststop, whose failure is a warning (the remaining hooks and the deletion go
    on). A failing poststart hook fails `start`, which removes the container, as runc does
    (the spec would have a warning: engines expect runc's behaviour)."""
    import subprocess
    for hook in hooks:
        try:
            try:
                proc = subprocess.run(
                    hook.get("args") or [hook["path"]], executable=hook["path"],
                    input=json.dumps(state).encode(), env=dict(
                        e.split("=", 1) for e in hook.get("env", []) if "=" in e),
                    capture_output=True, timeout=hook.get("timeout"))
            except subprocess.TimeoutExpired:
                raise Error("%s hook %s timed out" % (kind, hook["path"])) from None
            except OSError as e:
                raise Error("%s hook %s: %s" % (kind, hook["path"], e.strerror)) from None
            if proc.returncode != 0:
                msg = proc.stderr.decode(errors="replace").strip().splitlines()
                raise Error("%s hook %s failed (exit %d)%s" % (
                    kind, hook["path"], proc.returncode, ": " + msg[-1] if msg else ""))
        except Error as e:
            if kind != "poststop":
                raise
            notice(str(e))


# ==== network: rtnetlink, bridge, veth, leases, published ports ====
# --network bridge as CNI's bridge plugin does it, without the `ip` binary: the runtime makes
# a network namespace, bind-mounts it on STATE/netns (the init joins it by path), links it to
# the bridge by a veth pair, gives it an address leased from the subnet and a default route
# via the bridge. Whatever is made is first recorded (state.json, the lease file), so that
# delete, and gc after a crash, can undo it.

BRIDGE = "mc0"
DEFAULT_SUBNET = "172.31.77.0/24"
# One lease file per bridge for the whole machine, not per --root: two state roots share
# the bridge, so they must share its addresses.
NETWORK_DIR = os.path.join(STATE_ROOT, ".network")
VETH_PREFIX = "mcv"  # host ends: mcv + 12 hex digits of the state dir = IFNAMSIZ - 1

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR, RTM_NEWROUTE = 20, 21, 22, 24
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE, NLM_F_DUMP = 1, 4, 0x200, 0x400, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
IFLA_IFNAME, IFLA_MASTER, IFLA_LINKINFO, IFLA_NET_NS_FD = 3, 10, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_OIF, RTA_GATEWAY = 4, 5
IFF_UP = 1
AF_INET = 2


def _rta(kind, value):
    """One rtattr: str (NUL-terminated), int (u32), bytes, or a list of (kind, value): nested."""
    if isinstance(value, str):
        value = value.encode() + b"\0"
    elif isinstance(value, int):
        value = struct.pack("=I", value)
    elif isinstance(value, list):
        value = b"".join(_rta(k, v) for k, v in value)
    return struct.pack("=HH", 4 + len(value), kind) + value + b"\0" * (-len(value) % 4)


def _rtattrs(data, offset=0):
    attrs = {}
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        attrs[kind & 0x3fff] = data[offset + 4:offset + length]  # without NLA_F_NESTED etc.
        offset += (length + 3) & ~3
    return attrs


def _ifinfomsg(index=0, flags=0, change=0):
    return struct.pack("=BxHiII", 0, 0, index, flags, change)


class Netlink:
    """An rtnetlink socket in the network namespace of the thread that made it."""

    def __init__(self):
        import socket
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                  0)  # NETLINK_ROUTE
        for opt in (11, 10):  # NETLINK_EXT_ACK: the kernel says why; NETLINK_CAP_ACK: briefly
            try:
                self.sock.setsockopt(270, opt, 1)  # SOL_NETLINK
            except OSError:
                pass
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def request(self, kind, body, attrs=(), flags=0, what="netlink"):
        """Send one message; the replies (type, body) up to its ACK or DONE, or OSError."""
        self.seq += 1
        payload = body + b"".join(_rta(k, v) for k, v in attrs)
        self.sock.send(struct.pack("=IHHII", 16 + len(payload), kind,
                                   NLM_F_REQUEST | NLM_F_ACK | flags, self.seq, 0) + payload)
        replies = []
        while True:
            data = self.sock.recv(1 << 18)
            off = 0
            while off + 16 <= len(data):
                length, mtype, mflags, seq, _ = struct.unpack_from("=IHHII", data, off)
                body = data[off + 16:off + length]
                off += max(16, (length + 3) & ~3)
                if seq != self.seq:
                    continue  # the late ACK of an earlier dump
                if mtype == NLMSG_DONE:
                    return replies
                if mtype != NLMSG_ERROR:
                    replies.append((mtype, body))
                    continue
                err = -struct.unpack_from("=i", body)[0]
                if err == 0:
                    return replies
                why = ""
                if mflags & 0x200:  # NLM_F_ACK_TLVS: after our request (its header if capped)
                    skip = 20 if mflags & 0x100 else 4 + struct.unpack_from("=I", body, 4)[0]
                    text = _rtattrs(body, skip).get(1)  # NLMSGERR_ATTR_MSG
                    if text:
                        why = " (%s)" % text.rstrip(b"\0").decode(errors="replace")
                raise OSError(err, "%s: %s%s" % (what, os.strerror(err), why))


def rtm_getlink(nl, name):
    """(index, flags, kind) of the link called `name`, or None."""
    try:
        replies = nl.request(RTM_GETLINK, _ifinfomsg(), [(IFLA_IFNAME, name)],
                             what="link %s" % name)
    except OSError as e:
        if e.errno == errno.ENODEV:
            return None
        raise
    for mtype, body in replies:
        if mtype == RTM_NEWLINK:
            _, _, index, flags, _ = struct.unpack_from("=BxHiII", body)
            info = _rtattrs(_rtattrs(body, 16).get(IFLA_LINKINFO, b""))
            kind = info.get(IFLA_INFO_KIND, b"").rstrip(b"\0").decode()
            return index, flags, kind
    return None


def rtm_getlink_all(nl):
    """{name: (index, master index or 0)} of every link of the namespace."""
    links = {}
    for mtype, body in nl.request(RTM_GETLINK, _ifinfomsg(), flags=NLM_F_DUMP, what="links"):
        if mtype == RTM_NEWLINK:
            index = struct.unpack_from("=BxHiII", body)[2]
            attrs = _rtattrs(body, 16)
            master = attrs.get(IFLA_MASTER)
            links[attrs.get(IFLA_IFNAME, b"").rstrip(b"\0").decode()] = \
                (index, struct.unpack("=I", master)[0] if master else 0)
    return links


def rtm_newlink_bridge(nl, name):
    nl.request(RTM_NEWLINK, _ifinfomsg(flags=IFF_UP, change=IFF_UP),
               [(IFLA_IFNAME, name), (IFLA_LINKINFO, [(IFLA_INFO_KIND, "bridge")])],
               NLM_F_CREATE | NLM_F_EXCL, "create bridge %s" % name)


def rtm_newlink_veth(nl, name, peer, peer_netns_fd, master):
    """A veth pair: `name` here, up, with `master`; `peer` made straight in the namespace
    (down: the kernel refuses to open it before the pair is complete)."""
    peer_msg = _ifinfomsg() + _rta(IFLA_IFNAME, peer) + _rta(IFLA_NET_NS_FD, peer_netns_fd)
    nl.request(RTM_NEWLINK, _ifinfomsg(flags=IFF_UP, change=IFF_UP),
               [(IFLA_IFNAME, name), (IFLA_MASTER, master),
                (IFLA_LINKINFO, [(IFLA_INFO_KIND, "veth"),
                                 (IFLA_INFO_DATA, [(VETH_INFO_PEER, peer_msg)])])],
               NLM_F_CREATE | NLM_F_EXCL, "create veth %s" % name)


def rtm_setlink_up(nl, name):
    nl.request(RTM_NEWLINK, _ifinfomsg(flags=IFF_UP, change=IFF_UP), [(IFLA_IFNAME, name)],
               what="set %s up" % name)


def rtm_dellink(nl, name):
    """Delete a link (a veth takes its peer along); False if there was none."""
    try:
        nl.request(RTM_DELLINK, _ifinfomsg(), [(IFLA_IFNAME, name)], what="delete %s" % name)
        return True
    except OSError as e:
        if e.errno == errno.ENODEV:
            return False
        raise


def _ifaddrmsg(index, prefixlen):
    return struct.pack("=BBBBi", AF_INET, prefixlen, 0, 0, index)


def rtm_getaddr(nl, index):
    """The IPv4 addresses of a link, as (address, prefix length)."""
    import ipaddress
    out = []
    for mtype, body in nl.request(RTM_GETADDR, _ifaddrmsg(0, 0), flags=NLM_F_DUMP,
                                  what="addresses"):
        family, prefixlen, _, _, ifindex = struct.unpack_from("=BBBBi", body)
        if mtype == RTM_NEWADDR and family == AF_INET and ifindex == index:
            attrs = _rtattrs(body, 8)
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if raw:
                out.append((ipaddress.IPv4Address(raw), prefixlen))
    return out


def rtm_newaddr(nl, index, address, prefixlen):
    nl.request(RTM_NEWADDR, _ifaddrmsg(index, prefixlen),
               [(IFA_LOCAL, address.packed), (IFA_ADDRESS, address.packed)],
               NLM_F_CREATE | NLM_F_EXCL, "add address %s/%d" % (address, prefixlen))


def rtm_deladdr(nl, index, address, prefixlen):
    nl.request(RTM_DELADDR, _ifaddrmsg(index, prefixlen),
               [(IFA_LOCAL, address.packed), (IFA_ADDRESS, address.packed)],
               what="delete address %s/%d" % (address, prefixlen))


def rtm_newroute_default(nl, gateway, index):
    # AF_INET, /0, main table, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST: as `ip route add`
    rtmsg = struct.pack("=BBBBBBBBI", AF_INET, 0, 0, 0, 254, 3, 0, 1, 0)
    nl.request(RTM_NEWROUTE, rtmsg, [(RTA_GATEWAY, gateway.packed), (RTA_OIF, index)],
               NLM_F_CREATE | NLM_F_EXCL, "default route via %s" % gateway)


# -- addresses: a lease file per bridge, under flock

def network_subnet(text=None):
    import ipaddress
    text = text or settings().subnet or DEFAULT_SUBNET
    try:
        net = ipaddress.IPv4Network(text)
    except ValueError as e:
        raise Error("subnet %s: %s" % (text, e)) from None
    if net.prefixlen > 30:
        raise Error("subnet %s: too small (the bridge and a container need a /30)" % text)
    return net


def _check_no_overlap(bridge, net):
    """Another bridge of ours that serves containers on a subnet overlapping `net`: an Error
    (both bridges would hold the same route, and containers on the new one not reach their
    gateway), as docker refuses a network that overlaps another."""
    import ipaddress
    for name in sorted(_listdir(NETWORK_DIR)):
        other = name[:-len(".json")]
        if not name.endswith(".json") or other == bridge:
            continue
        try:
            with open(os.path.join(NETWORK_DIR, name)) as f:
                data = json.load(f)
            subnet = ipaddress.IPv4Network(data.get("subnet"))
        except (OSError, ValueError, TypeError, AttributeError):
            continue
        if data.get("leases") and subnet.overlaps(net):
            raise Error("subnet %s overlaps %s, which bridge %s serves (%d containers)"
                        % (net, subnet, other, len(data["leases"])))


class _Leases:
    """The bridge's lease file, locked: {"subnet": ..., "leases": {ip: {"dir", "netns",
    "veth", "forwarder"}}}. Written whole and renamed, so a crash never tears it."""

    def __init__(self, bridge):
        self.path = os.path.join(NETWORK_DIR, bridge + ".json")
        self.data = None

    def __enter__(self):
        os.makedirs(NETWORK_DIR, 0o700, exist_ok=True)
        self.fd = os.open(self.path[:-5] + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
                          0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            with open(self.path) as f:
                self.data = json.load(f)
        except (FileNotFoundError, ValueError):
            self.data = {}
        self.data.setdefault("leases", {})
        return self

    def __exit__(self, *exc):
        os.close(self.fd)

    @property
    def leases(self):
        return self.data["leases"]

    def save(self):
        write_atomic(self.path, json.dumps(self.data, indent=1), 0o600)

    def take(self, net, entry):
        """The first free address after the last one given (as CNI's host-local does): an
        address just freed is not given again at once, while ARP caches still name it."""
        import ipaddress
        first = int(net.network_address) + 2  # the gateway has +1
        size = net.num_addresses - 3
        try:
            start = int(ipaddress.IPv4Address(self.data.get("last"))) + 1 - first
        except ValueError:
            start = 0
        for i in range(size):
            address = ipaddress.IPv4Address(first + (start + i) % size)
            if str(address) not in self.leases:
                self.leases[str(address)] = entry
                self.data["last"] = str(address)
                self.save()
                return address
        raise Error("subnet %s is exhausted: %d containers have its addresses"
                    % (net, len(self.leases)))

    def release(self, address, netns):
        entry = self.leases.get(address)
        if entry and entry.get("netns") == netns:
            del self.leases[address]
            self.save()

    def collect(self, out=None):
        """Release the leases of dead containers (and what they held): `run`'s cheap gc."""
        for address, entry in list(self.leases.items()):
            if _lease_dead(entry):
                network_teardown(dict(entry, mode="bridge", ip=None))
                del self.leases[address]
                self.save()
                if out is not None:
                    out.append("lease %s of %s" % (address, entry.get("dir")))


def _lease_dead(entry):
    """True when the container holding the lease is gone or its init has died; a container
    whose state is locked (being created, started or deleted) is alive."""
    d = entry.get("dir") or ""
    try:
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return True
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        try:
            c = Container.load(os.path.basename(d), os.path.dirname(d))
        except Error:
            return True
        return not c.alive()
    finally:
        os.close(fd)


# -- set-up and tear-down

def network_mode(a):
    # -p implies a bridge; rootless, where the bridge is root's, slirp4netns (as podman)
    return a.network or (("slirp4netns" if unprivileged() else "bridge") if a.publish else "none")


def network_option(a, config):
    """run's --network, -p and --subnet: the `network` argument of Container.create (None
    for none and host). host drops the network namespace; bridge keeps one, made by us."""
    mode = network_mode(a)
    linux = config.setdefault("linux", {})
    namespaces = linux.setdefault("namespaces", [])
    if mode == "bridge" and unprivileged():
        raise Error("--network bridge: the bridge is root's (rootless: --network none, host "
                    "or slirp4netns)")
    if mode == "slirp4netns" and not host_program("slirp4netns"):
        raise Error("%s: slirp4netns is not installed (Debian's slirp4netns package)" % (
            "-p" if a.publish and not a.network else "--network slirp4netns"))
    if a.publish and mode == "host":  # the host's ports are the container's: as docker
        notice("published ports are discarded with --network host")
        a.publish = []
    if a.publish and mode not in ("bridge", "slirp4netns"):
        raise Error("-p: publishing a port needs --network bridge or slirp4netns")
    if a.subnet and mode != "bridge":
        raise Error("--subnet: only for --network bridge")
    if mode == "host":
        linux["namespaces"] = [ns for ns in namespaces if ns["type"] != "network"]
        return None
    if mode == "none":
        return None
    publish, seen = [], set()
    for spec in a.publish:
        for p in parse_publish(spec):
            publish.append(p)
            key = (p["host_ip"], p["host"], p["proto"])
            if key in seen and p["host"]:
                raise Error("-p %s: host port %d/%s given twice" % (spec, key[1], key[2]))
            seen.add(key)
            if not p["host"] and mode == "slirp4netns":
                raise Error("-p %s: a host port the kernel picks needs --network bridge" % spec)
    if not any(ns["type"] == "network" for ns in namespaces):
        namespaces.append({"type": "network"})
    if mode == "slirp4netns":
        return {"mode": mode, "publish": publish}
    return {"mode": "bridge", "subnet": str(network_subnet(a.subnet)), "publish": publish,
            "bridge": settings().bridge or BRIDGE}


SLIRP_IP, SLIRP_DNS = "10.0.2.100", "10.0.2.3"  # slirp4netns --configure's, as podman's
SLIRP4NETNS_TIMEOUT = 10  # seconds for slirp4netns to be ready (~20 ms), and for an answer


def slirp4netns_setup(c, spec, netns, userns, owned=False):
    """--network slirp4netns, on the network namespace the init has made (an fd of it, and
    of its user namespace: the init's /proc files are not the user's until it execs): a
    user-mode network stack (slirp4netns, as podman rootless uses) behind its tap0
    (SLIRP_IP/24, gateway 10.0.2.2, DNS SLIRP_DNS; the host's loopback out of reach), the
    published ports forwarded through its API socket. Its pid goes in state.network, for
    network_teardown: it outlives the runtime, with the container. owned: the caller lives
    as long as the container (a foreground run) or hands it to one that does (the monitor):
    returns the write end of slirp4netns's --exit-fd, for it to hold (slirp4netns ends when
    its holder dies, as podman's conmon holds it); else None, and ps and gc end it."""
    import subprocess
    sock = os.path.join(os.path.abspath(c.dir), "slirp4netns.sock")
    log = os.path.join(os.path.abspath(c.dir), "slirp4netns.log")
    # libslirp parses the container's packets: slirp4netns runs in its sandbox (a mount
    # namespace of /etc and /run only, every capability but CAP_NET_BIND_SERVICE dropped)
    # under its seccomp filter, as podman runs it. Both came with v0.4.0, as --netns-type
    # and --userns-path did, which it needs anyway. The API socket is bound before.
    argv = [host_program("slirp4netns"), "--configure", "--mtu=65520", "--disable-host-loopback",
            "--enable-sandbox", "--enable-seccomp", "--api-socket", sock, "--netns-type=path"]
    fds = [netns]
    if unprivileged():  # the network namespace is entered through its user namespace
        argv.append("--userns-path=/proc/self/fd/%d" % userns)
        fds.append(userns)
    exit_r, exit_w = os.pipe() if owned else (None, None)
    if owned:
        argv.append("--exit-fd=%d" % exit_r)
        fds.append(exit_r)
    ready_r, ready_w = os.pipe()
    proc, ready = None, None
    try:
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv + ["--ready-fd", str(ready_w), "/proc/self/fd/%d" % netns,
                                            "tap0"],
                                    pass_fds=fds + [ready_w], stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=out, start_new_session=True)
        os.close(ready_w)
        ready_w = None
        c.state["network"] = dict(c.state["network"], ip=SLIRP_IP,
                                  helper=[proc.pid, process_start_time(proc.pid)])
        c.save()
        ready = _slirp4netns_ready(proc, ready_r)
    finally:
        os.close(ready_r)
        if ready_w is not None:
            os.close(ready_w)
        if exit_r is not None:
            os.close(exit_r)
        if ready != b"1":
            if proc is not None:  # its session: what a wrapper script started too
                _end_session(proc)
            if exit_w is not None:
                os.close(exit_w)
    if ready != b"1":
        raise Error("slirp4netns: %s" % (_first_line(log) or (
            "not ready within %d s: ended" % SLIRP4NETNS_TIMEOUT if ready is None else
            "exited")))
    try:
        for p in spec["publish"]:
            _slirp4netns_port_check(p)
            _slirp4netns_api(sock, "add_hostfwd", proc, proto=p["proto"], host_addr=p["host_ip"],
                             host_port=p["host"], guest_port=p["ctr"])
    except BaseException:
        if exit_w is not None:
            os.close(exit_w)
        raise
    finally:
        if proc.returncode is None:
            proc.returncode = 0  # not ours to wait for: network_teardown ends it
    return exit_w


def slirp4netns_host_address(spec):
    """The host as a slirp4netns container reaches it (--add-host NAME:host-gateway): not
    10.0.2.2, the host's loopback, which --disable-host-loopback keeps out of reach, but the
    host's own address on its default route (what a UDP socket connected to a documentation
    address is bound to: connect sends nothing)."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("198.51.100.1", 9))
            ip = s.getsockname()[0]
        except OSError:
            ip = "0.0.0.0"
    if ip == "0.0.0.0":
        raise Error("--add-host %s: the host has no address that slirp4netns reaches (no "
                    "default route)" % _shown(spec))
    return ip


def end_orphaned_slirp4netns(c, status):
    """End the slirp4netns of a container that exited where no process held its --exit-fd
    (run -d --console-socket): ps and gc do, or it would keep the container's host ports."""
    info = c.state.get("network") or {}
    if status == "stopped" and info.get("mode") == "slirp4netns":
        end_helper(info.get("helper"))


def _slirp4netns_ready(proc, ready):
    """What slirp4netns wrote on its --ready-fd ("1"): b"" when it exited first, None when
    SLIRP4NETNS_TIMEOUT passed without either."""
    import select
    poll = select.poll()
    poll.register(ready, select.POLLIN)
    pidfd = pidfd_open(proc.pid)
    if pidfd is not None:
        poll.register(pidfd, select.POLLIN)
    deadline = time.monotonic() + SLIRP4NETNS_TIMEOUT
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            events = dict(poll.poll(left * 1000))
            if ready in events:
                return os.read(ready, 1)
            if pidfd in events:  # (its children may hold the pipe)
                return b""
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _end_session(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    proc.wait()


def _slirp4netns_port_check(p):
    """slirp4netns says only "slirp_add_hostfwd failed" when it cannot bind a -p host port:
    the reason, as binding it ourselves first tells (as the same user)."""
    def why(e):
        if e.errno == errno.EADDRINUSE:
            return "the port is in use"
        if e.errno == errno.EACCES:
            try:
                with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as f:
                    start = int(f.read())
            except (OSError, ValueError):
                start = 1024
            return "a port below %d is root's (net.ipv4.ip_unprivileged_port_start)" % start
        if e.errno == errno.EADDRNOTAVAIL:
            return "not an address of this host"
        return e.strerror
    bind_published(p, why).close()  # (TCP with SO_REUSEADDR, as libslirp binds it)


def _slirp4netns_api(path, command, proc, **arguments):
    """A request to slirp4netns's API socket (proc: slirp4netns, not reaped yet): an Error
    in one line unless it answers, in JSON and within SLIRP4NETNS_TIMEOUT, that it did."""
    import socket

    def where():
        return "slirp4netns%s: API socket %s" % (
            " exited" if proc.poll() is not None else "", path)
    deadline = time.monotonic() + SLIRP4NETNS_TIMEOUT
    answer = b""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(SLIRP4NETNS_TIMEOUT)
            s.connect(path)
            s.sendall(json.dumps({"execute": command, "arguments": arguments}).encode())
            s.shutdown(socket.SHUT_WR)
            while True:
                s.settimeout(max(deadline - time.monotonic(), 0.001))
                data = s.recv(4096)
                if not data:
                    break
                answer += data
    except socket.timeout:
        raise Error("%s: no answer to %s within %d s" % (where(), command,
                                                        SLIRP4NETNS_TIMEOUT)) from None
    except OSError as e:
        raise Error("%s: %s" % (where(), e.strerror or e)) from None
    try:
        reply = json.loads(answer or b"{}")
        if not isinstance(reply, dict):
            raise ValueError
    except ValueError:
        raise Error("%s: not a JSON answer to %s: %s" % (
            where(), command, _shown(answer[:60].decode(errors="replace")))) from None
    error = reply.get("error")
    if error is not None or "return" not in reply:
        raise Error("slirp4netns: %s %s: %s" % (command, arguments.get("host_port", ""), (
            error.get("desc") if isinstance(error, dict) else None) or "no answer"))


def _shown(text):
    """A value in a one-line error: as given, or quoted where it holds a newline or such."""
    return text if text.isprintable() else repr(text)


def etc_files_option(a, image):
    """run's --dns, --dns-search and --add-host: write_etc_files's spec, for an image's
    container (a bundle or a rootfs directory keeps its own /etc)."""
    if image is None:
        if a.dns or a.dns_search or a.add_host:
            raise Error("--dns, --dns-search, --add-host: only for a container from an image")
        return None
    if a.dns or a.add_host:
        import ipaddress
    for server in a.dns:
        try:
            ipaddress.ip_address(server)
            if "%" in server:  # (a zone takes any text, a newline too: another line)
                raise ValueError
        except ValueError:
            raise Error("--dns %s: not an IP address" % _shown(server)) from None
    hosts = []
    for spec in a.add_host:
        name, _, ip = spec.partition(":")
        if ip == "host-gateway":  # docker's name for the host, as the container reaches it
            mode = network_mode(a)
            if mode not in ("bridge", "host", "slirp4netns"):
                raise Error("--add-host %s: no network reaches the host (--network none)"
                            % _shown(spec))
            if mode == "slirp4netns":
                ip = slirp4netns_host_address(spec)
            else:
                ip = {"host": "127.0.0.1"}.get(mode) or str(
                    network_subnet(a.subnet).network_address + 1)  # the bridge's address
        try:
            ipaddress.ip_address(ip)
            if "%" in ip:  # (a zone takes any text, a newline too: another line)
                raise ValueError
        except ValueError:
            raise Error("--add-host %s: use NAME:IP" % _shown(spec)) from None
        if not name or any(ch.isspace() for ch in name):
            raise Error("--add-host %s: use NAME:IP" % _shown(spec))
        hosts.append((name, ip))
    for domain in a.dns_search:
        if not domain or any(ch.isspace() for ch in domain):
            raise Error("--dns-search %r: not a domain" % domain)
    return {"mode": network_mode(a), "dns": a.dns,
            "dns_search": a.dns_search, "add_host": hosts}


def parse_publish(spec):
    """-p [[HOSTIP:]HOSTPORT:]CTRPORT[/tcp|udp], as docker's: a port or a range (8080-8081:
    80-81) each; no host port (or HOSTIP::CTRPORT) is one the kernel picks (host 0 here,
    the real one recorded once bound). Returns one entry a port."""
    import ipaddress
    ports, _, proto = spec.partition("/")
    proto = proto or "tcp"
    parts = ports.rsplit(":", 2)

    def span(text):
        first, dash, last = text.partition("-")
        first, last = int(first), int(last) if dash else int(first)
        if not 0 < first <= last < 65536:
            raise ValueError
        return list(range(first, last + 1))
    try:
        if proto not in ("tcp", "udp"):
            raise ValueError
        host_ip = str(ipaddress.IPv4Address(parts[0])) if len(parts) == 3 else "0.0.0.0"
        ctrs = span(parts[-1])
        hosts = span(parts[-2]) if len(parts) > 1 and parts[-2] else [0] * len(ctrs)
        if len(hosts) != len(ctrs):
            raise ValueError
    except ValueError:
        raise Error("-p %s: use [[HOSTIP:]HOSTPORT:]CTRPORT[/tcp|udp], ports 1-65535 (or "
                    "ranges of one length)" % spec) from None
    return [{"spec": spec, "host_ip": host_ip, "host": host, "ctr": ctr, "proto": proto,
             "picked": not host} for host, ctr in zip(hosts, ctrs)]


def _make_netns(path):
    """A network namespace that outlives its processes, bind-mounted on `path` (as `ip netns
    add` does). This thread enters it only for the mount; returns a Netlink socket inside."""
    host = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o444))
        unshare(CLONE_NEWNET)
        try:
            mount("/proc/thread-self/ns/net", path, None, MS_BIND)
            # As docker and podman do: ports below 1024 are the container's to bind, also
            # for users without CAP_NET_BIND_SERVICE and for a user namespace's root.
            try:
                _write("/proc/sys/net/ipv4/ip_unprivileged_port_start", 0)
            except OSError:
                pass  # before 4.11, or /proc/sys read-only here: ports keep the default
            # The bridge is IPv4's: no IPv6 on the eth0 moved in here (a link made after
            # this takes "default"), so that no other container's router advertisement
            # gives it an address or a default route (CVE-2020-13401's class; docker too).
            _write_if_there("/proc/sys/net/ipv6/conf/default/disable_ipv6", 1)
            return Netlink()
        finally:
            setns(host, CLONE_NEWNET)
    finally:
        os.close(host)


def _write_if_there(path, value):
    """A sysctl that a kernel without it (no IPv6) has no file for, or that a read-only
    /proc/sys (a runtime in a container) keeps: as it is then, as ip_unprivileged_port_start
    is left."""
    try:
        _write(path, value)
    except OSError:
        pass


def _umount_netns(path):
    try:
        umount2(path, MNT_DETACH)
    except OSError:
        pass  # not mounted (any more)
    try:
        os.unlink(path)
    except OSError:
        pass


def network_setup(c, spec):
    """For Container.create, before the init exists: --network bridge's namespace, veth,
    address and route, recorded in state.network (whose netns the setup plan joins)."""
    import hashlib
    net = network_subnet(spec["subnet"])
    bridge = spec.get("bridge") or BRIDGE
    cdir = os.path.abspath(c.dir)
    info = c.state["network"] = {
        "mode": "bridge", "bridge": bridge, "subnet": str(net), "ip": None,
        "veth": VETH_PREFIX + hashlib.sha256(cdir.encode()).hexdigest()[:12],
        "netns": os.path.join(cdir, "netns"), "publish": spec.get("publish", []),
        "forwarder": None}
    gateway = net.network_address + 1
    try:
        with _Leases(bridge) as leases:
            leases.collect()
            active = {e.get("subnet") for e in leases.leases.values()}
            if active and str(net) not in active:
                raise Error("bridge %s serves subnet %s (%d containers), not %s"
                            % (bridge, active.pop(), len(leases.leases), net))
            _check_no_overlap(bridge, net)
            address = leases.take(net, {"dir": cdir, "netns": info["netns"],
                                        "veth": info["veth"], "subnet": str(net),
                                        "forwarder": None})
            info["ip"] = str(address)
            c.save()
            with Netlink() as nl:
                master = _ensure_bridge(nl, bridge, net, leases.data.get("subnet"))
            if leases.data.get("subnet") != str(net):
                leases.data["subnet"] = str(net)
                leases.save()
        inside = _make_netns(info["netns"])
        try:
            with Netlink() as nl:
                nsfd = os.open(info["netns"], os.O_RDONLY | os.O_CLOEXEC)
                try:
                    rtm_newlink_veth(nl, info["veth"], "eth0", nsfd, master)
                finally:
                    os.close(nsfd)
            rtm_setlink_up(inside, "lo")
            rtm_setlink_up(inside, "eth0")
            index = rtm_getlink(inside, "eth0")[0]
            rtm_newaddr(inside, index, address, net.prefixlen)
            rtm_newroute_default(inside, gateway, index)
        finally:
            inside.close()
    except OSError as e:
        raise Error("--network bridge: %s" % (e.strerror or e)) from None
    c.save()


def _ensure_bridge(nl, name, net, old_subnet):
    """The bridge's index: made on first use, with the subnet's first address, up."""
    import ipaddress
    gateway = net.network_address + 1
    link = rtm_getlink(nl, name)
    if link is None:
        try:
            rtm_newlink_bridge(nl, name)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise
        link = rtm_getlink(nl, name)
        if link is None:
            raise Error("bridge %s: made, then gone" % name)
    index, flags, kind = link
    if kind != "bridge":
        raise Error("--network bridge: %s exists and is not a bridge (%s)"
                    % (name, kind or "no kind"))
    # IPv4's alone: the host takes no router advertisement a container sends on it
    _write_if_there("/proc/sys/net/ipv6/conf/%s/disable_ipv6" % name, 1)
    addresses = rtm_getaddr(nl, index)
    if old_subnet and old_subnet != str(net):
        old = ipaddress.IPv4Network(old_subnet)
        if (old.network_address + 1, old.prefixlen) in addresses:
            rtm_deladdr(nl, index, old.network_address + 1, old.prefixlen)
    if (gateway, net.prefixlen) not in addresses:
        try:
            rtm_newaddr(nl, index, gateway, net.prefixlen)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise
    if not flags & IFF_UP:
        rtm_setlink_up(nl, name)
    return index


def end_helper(helper):
    """SIGKILL a helper process the runtime started for a container (slirp4netns, the port
    forwarder, fuse-overlayfs), recorded as [pid, start time]: it outlives the runtime, not
    the container. Waits until it is gone (a zombie of ours, reaped); never fails."""
    if not helper or process_start_time(helper[0]) != helper[1]:
        return
    try:
        os.kill(helper[0], signal.SIGKILL)
    except OSError:
        return
    for _ in range(1000):
        try:  # ours when this runtime started it
            os.waitpid(helper[0], os.WNOHANG)
        except ChildProcessError:
            pass
        if process_start_time(helper[0]) != helper[1] or process_state(helper[0]) in (
                "Z", "X", None):
            return
        time.sleep(0.002)


def network_teardown(info):
    """Undo network_setup and network_publish (or slirp4netns_setup), as far as they got;
    never fails."""
    if info and info.get("mode") == "slirp4netns":
        end_helper(info.get("helper"))
    if not info or info.get("mode") != "bridge":
        return
    end_helper(info.get("forwarder"))
    try:
        with Netlink() as nl:  # the veth would go with the namespace, but later (a workqueue)
            rtm_dellink(nl, info["veth"])
    except OSError:
        pass
    _umount_netns(info["netns"])
    if info.get("ip"):
        try:
            with _Leases(info["bridge"]) as leases:
                leases.release(info["ip"], info["netns"])
        except OSError:
            pass


# -- /etc/hostname, /etc/hosts and /etc/resolv.conf, as docker gives them

ETC_HOSTS = ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
             "fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n"
             "ff02::2\tip6-allrouters\n")
FALLBACK_DNS = ["8.8.8.8", "8.8.4.4"]  # docker's, when the host's resolvers are loopback


def host_resolv_conf():
    """The host's resolver configuration; behind systemd-resolved's stub (127.0.0.53), the
    upstream servers it uses."""
    text = ""
    for path in ("/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"):
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        servers = [ln.split()[1] for ln in text.splitlines()
                   if ln.startswith("nameserver") and len(ln.split()) > 1]
        if servers != ["127.0.0.53"]:
            break
    return text


def resolv_conf(host_text, mode, dns=(), search=()):
    """The container's resolv.conf: the host's, whose loopback nameservers mean nothing in
    another network namespace (docker drops them, and falls back to public resolvers)."""
    import ipaddress
    lines, servers, at = [], [], None  # the servers go where the host's first one was
    for line in host_text.splitlines():
        words = line.split()
        if words[:1] == ["nameserver"] and len(words) > 1:
            try:
                loopback = ipaddress.ip_address(words[1].split("%")[0]).is_loopback
            except ValueError:
                loopback = False
            if mode == "host" or not loopback:
                servers.append(words[1])
            at = len(lines) if at is None else at
        elif words[:1] in (["search"], ["domain"]) and search:
            continue
        elif words and not line.lstrip().startswith(("#", ";")):
            lines.append(line.strip())
    at = len(lines) if at is None else at
    servers = ["nameserver " + s for s in list(dns) or servers or FALLBACK_DNS]
    head = ["search " + " ".join(search)] if search else []
    return "\n".join(head + lines[:at] + servers + lines[at:]) + "\n"


def write_etc_files(c, config, spec):
    """For a container from an image: its /etc/hostname, /etc/hosts (with its address on the
    bridge and --add-host's) and /etc/resolv.conf, made in its state directory; returns the
    bind mounts of them that the setup plan adds after config.mounts, so the image is not
    written. A mount the user gave for one of them wins.
    spec: {"mode": none|host|bridge, "dns": [...], "dns_search": [...], "add_host": [...]}."""
    hostname = config.get("hostname") or ""
    if spec["mode"] == "host":
        try:
            with open("/etc/hosts") as f:
                hosts = f.read()
        except OSError:
            hosts = ETC_HOSTS
        hosts = hosts if hosts.endswith("\n") or not hosts else hosts + "\n"
    else:
        hosts = ETC_HOSTS
        ip = (c.state.get("network") or {}).get("ip")
        if ip and hostname:
            hosts += "%s\t%s\n" % (ip, hostname)
    hosts += "".join("%s\t%s\n" % (ip, name) for name, ip in spec["add_host"])
    files = {"hostname": hostname + "\n" if hostname else "", "hosts": hosts,
             "resolv.conf": resolv_conf(host_resolv_conf(), spec["mode"], spec["dns"] or (
                 [SLIRP_DNS] if spec["mode"] == "slirp4netns" else []), spec["dns_search"])}
    taken = {os.path.normpath(m["destination"]) for m in config.get("mounts", [])}
    readonly = config.get("root", {}).get("readonly")  # docker leaves them writable; we do not
    owner = host_owner(config.get("linux", {}))  # the container's root's
    mounts = []
    for name, text in files.items():
        if "/etc/" + name in taken:
            continue
        path = os.path.join(os.path.abspath(c.dir), name)
        write_atomic(path, text, 0o644)
        os.chown(path, *owner)
        mounts.append({"destination": "/etc/" + name, "type": "bind", "source": path,
                       "options": ["rbind", "rprivate"] + (["ro"] if readonly else [])})
    return mounts


def network_gc(out):
    """gc's part: leases of dead containers, and host ends of veths that no lease names
    (each checked under the lock of its bridge's leases: a start in progress has its lease
    before its veth)."""
    try:
        names = sorted(n[:-5] for n in os.listdir(NETWORK_DIR) if n.endswith(".json"))
    except FileNotFoundError:
        return
    known = set()
    try:
        with Netlink() as nl:
            for bridge in names:
                with _Leases(bridge) as leases:
                    leases.collect(out)
                    veths = {e.get("veth") for e in leases.leases.values()}
                    known |= veths
                    links = rtm_getlink_all(nl)
                    if bridge not in links:
                        continue
                    for link, (_, master) in links.items():
                        if link.startswith(VETH_PREFIX) and len(link) == 15 and \
                                master == links[bridge][0] and link not in veths and \
                                rtm_dellink(nl, link):
                            out.append("link %s" % link)
            for link, (_, master) in rtm_getlink_all(nl).items():  # their bridge went
                if link.startswith(VETH_PREFIX) and len(link) == 15 and not master and \
                        link not in known and rtm_dellink(nl, link):
                    out.append("link %s" % link)
    except OSError as e:
        sys.stderr.write("minicontainer: gc: links: %s\n" % (e.strerror or e))


# -- published ports: a userspace forwarder per container

def bind_published(p, why=lambda e: e.strerror):
    """A socket bound to a -p entry's host address (its port already in use, by another
    container or a host service: an Error in the user's words, why(OSError)'s)."""
    import socket
    tcp = p["proto"] == "tcp"
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
    if tcp:  # (for UDP it lets two sockets share a port: another container's or a host
        # service's traffic would come here)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((p["host_ip"], p["host"]))
    except OSError as e:
        s.close()
        raise Error("-p %s: %s:%d: %s" % (p["spec"], p["host_ip"], p["host"],
                                          why(e))) from None
    return s


def network_publish(c):
    """Start the forwarder of the container's -p ports: a daemon that binds them now (a port
    in use is the user's error, said here) and ends by itself when the init dies."""
    info = c.state.get("network") or {}
    if not info.get("publish") or info.get("mode") != "bridge":  # slirp4netns forwards its
        return
    listeners = []
    try:
        for p in info["publish"]:
            s = bind_published(p)
            listeners.append((s, p))
            p["host"] = s.getsockname()[1]  # (the kernel's pick, for a port not given)
            if p["proto"] == "tcp":
                s.listen(128)
        pid = _spawn_forwarder(listeners, info["ip"], c.pid, c.state.get("start_time"))
    finally:
        for s, _ in listeners:
            s.close()
    info["forwarder"] = [pid, process_start_time(pid)]
    c.save()
    with _Leases(info["bridge"]) as leases:
        entry = leases.leases.get(info["ip"])
        if entry and entry.get("netns") == info["netns"]:
            entry["forwarder"] = info["forwarder"]
            leases.save()


def _spawn_forwarder(listeners, ip, init_pid, start_time):
    """Double fork: the forwarder is nobody's child, in a session of its own."""
    r, w = os.pipe()
    pid = fork()
    if pid == 0:
        try:
            os.close(r)
            os.setsid()
            if fork():
                os._exit(0)
            import gc
            gc.collect()  # no garbage socket may close, later, an fd number we reuse
            libc().prctl(15, b"mc-forward", 0, 0, 0)  # PR_SET_NAME: ps tells it apart
            pidfd = pidfd_open(init_pid)
            os.write(w, b"%d" % os.getpid())
            keep = {s.fileno() for s, _ in listeners} | {pidfd}
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                        signal.SIGWINCH, signal.SIGCHLD, signal.SIGPIPE):
                signal.signal(sig, signal.SIG_DFL if sig != signal.SIGPIPE else signal.SIG_IGN)
            null = os.open("/dev/null", os.O_RDWR)
            for fd in range(3):
                os.dup2(null, fd)
            for name in os.listdir("/proc/self/fd"):
                if int(name) > 2 and int(name) not in keep:
                    try:
                        os.close(int(name))
                    except OSError:
                        pass
            if process_start_time(init_pid) == start_time:
                _forward(listeners, ip, init_pid, start_time, pidfd)
        except BaseException:
            pass
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    if not data:
        raise Error("-p: the port forwarder did not start")
    return int(data)


def _forward(listeners, ip, init_pid, start_time, pidfd):
    import selectors
    import socket
    import threading
    sel = selectors.DefaultSelector()
    for s, p in listeners:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, ("listen", s, p))
    if pidfd is not None:
        sel.register(pidfd, selectors.EVENT_READ, ("init",))
    clients = {}  # udp: (listener fd, client address) -> a socket connected to the container
    # TCP: 2 fds a connection; past what the fd limit allows (raised to the hard one), new
    # ones are closed at once: out of fds, the listener stayed readable and this loop spun
    nofile = RLIMITS["RLIMIT_NOFILE"]
    soft, hard = prlimit(nofile)
    try:
        prlimit(nofile, (hard, hard))
        soft = hard
    except OSError:
        pass
    tcp = {"active": 0, "most": max(16, (min(soft, 1 << 20) - 64) // 2),
           "lock": threading.Lock()}
    while True:
        events = sel.select(None if pidfd is not None else 1.0)
        if not events and process_start_time(init_pid) != start_time:
            return
        for key, _ in events:
            tag = key.data
            if tag[0] == "init":
                return
            if tag[0] == "back":  # a udp reply from the container
                _, up, listener, addr = tag
                try:
                    listener.sendto(up.recv(65535), addr)
                except OSError:
                    pass
                continue
            _, s, p = tag
            try:
                if p["proto"] == "tcp":
                    try:
                        conn = s.accept()[0]
                    except OSError:  # (out of fds or memory: not at once again)
                        time.sleep(0.1)
                        continue
                    if tcp["active"] >= tcp["most"]:
                        conn.close()
                        continue
                    with tcp["lock"]:
                        tcp["active"] += 1
                    conn.setblocking(True)
                    threading.Thread(target=_forward_tcp, args=(conn, (ip, p["ctr"]), tcp),
                                     daemon=True).start()
                    continue
                data, addr = s.recvfrom(65535)
                up = clients.get((s.fileno(), addr))
                if up is None:
                    if len(clients) >= 1024:  # forget the oldest client
                        old = clients.pop(next(iter(clients)))
                        sel.unregister(old)
                        old.close()
                    up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    up.connect((ip, p["ctr"]))
                    clients[(s.fileno(), addr)] = up
                    sel.register(up, selectors.EVENT_READ, ("back", up, s, addr))
                up.send(data)
            except OSError:
                pass


def _forward_tcp(conn, target, tcp):
    """One connection, both ways; then one fewer in tcp["active"]."""
    import socket
    import threading
    try:
        up = socket.create_connection(target, timeout=10)
    except OSError:
        conn.close()
        with tcp["lock"]:
            tcp["active"] -= 1
        return
    up.settimeout(None)

    def copy(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    t = threading.Thread(target=copy, args=(up, conn), daemon=True)
    t.start()
    copy(conn, up)
    t.join()
    conn.close()
    up.close()
    with tcp["lock"]:
        tcp["active"] -= 1


# ==== the setup plan, and the protocol between the runtime and the container's init ====
# Container.create and exec compile the config into a SetupPlan (ordered Steps) before any
# fork, then talk to the processes that carry it out over one socket, in named messages.

class Msg:
    """The messages of the setup socket between the runtime and a container's init (or
    exec's middle process), named once, as crun names its sync messages. Each is a JSON
    object {"t": NAME, ...fields}, with fds alongside (SCM_RIGHTS)."""
    ERROR = "error"            # either way: msg, code; the sender gives up
    IN_CGROUP = "in-cgroup"    # runtime -> init: moved into the container's cgroup
    USERNS = "userns"          # first child -> runtime: user namespace made, write its maps
    OVERLAY_REFUSED = "overlay-refused"  # init -> runtime: msg; fds: its user and mount
    #                            namespaces, to mount fuse-overlayfs in, else make a private
    #                            copy instead
    HOOKS = "hooks"            # init -> runtime: run prestart and createRuntime hooks now
    NETNS = "netns"            # init -> runtime: fds: its network and user namespaces, for
    #                            slirp4netns to attach to
    OK = "ok"                  # runtime -> init: done what USERNS, OVERLAY_REFUSED, HOOKS,
    #                            NETNS asked
    PID = "pid"                # a forking child -> runtime: pid (the init, exec's process)
    PTY = "pty"                # -> runtime: fds[0] is the pty's master
    SECCOMP = "seccomp"        # -> runtime: fds[0] is the seccomp listener
    READY = "ready"            # init -> runtime: set up, waiting to be recorded
    CREATED = "created"        # runtime -> init: recorded in the state; wait for start


class SeqPacket:
    """One end of an AF_UNIX SOCK_SEQPACKET socketpair, on its fd, through libc (already
    loaded wherever one is used): socket's C half (_socket) interns its ~400 constants'
    names as it is imported, which grew the interpreter's table of interned strings past
    its next resize during every `run`: 0.2 MiB more of its peak (the table's new copy).
    Closed when dropped, as a socket is; received fds are close-on-exec."""
    __slots__ = ("fd",)
    SOL_SOCKET = SCM_RIGHTS = 1
    MSG_PEEK, MSG_TRUNC, MSG_NOSIGNAL, MSG_CMSG_CLOEXEC = 0x2, 0x20, 0x4000, 0x40000000

    def __init__(self, fd):
        self.fd = fd

    @classmethod
    def pair(cls):
        fds = ctypes_api().create_string_buffer(8)
        # AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC (which is O_CLOEXEC on every architecture)
        _check(libc().socketpair(1, 5 | os.O_CLOEXEC, 0, fds), "socketpair")
        return tuple(cls(fd) for fd in struct.unpack("2i", fds.raw))

    def fileno(self):
        return self.fd

    def close(self):
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def __del__(self):
        self.close()

    @staticmethod
    def _retry(function, *args):
        """function(*args), again on EINTR (signal handlers run in between, as socket's
        do); an OSError of its errno (ConnectionResetError...) if it fails."""
        while True:
            n = function(*args)
            if n >= 0:
                return n
            err = ctypes_api().get_errno()
            if err != errno.EINTR:
                raise OSError(err, os.strerror(err))

    def _msghdr(self, data, control):
        """A struct msghdr of one iovec over data, and of control."""
        ctypes = ctypes_api()
        iov = (ctypes.c_char * 16).from_buffer_copy(struct.pack(
            "QQ", ctypes.addressof(data), len(data)))
        header = (ctypes.c_char * 56).from_buffer_copy(struct.pack(
            "QI4xQQQQi4x", 0, 0, ctypes.addressof(iov), 1,
            ctypes.addressof(control) if len(control) else 0, len(control), 0))
        return header, iov  # (the iovec kept alive with it)

    def sendmsg(self, data, fds=()):
        ctypes = ctypes_api()
        control = (ctypes.c_char * ((16 + 4 * len(fds) + 7) // 8 * 8 if fds else 0))()
        if fds:  # struct cmsghdr: len, level, type, then the fds
            struct.pack_into("Qii%di" % len(fds), control, 0, 16 + 4 * len(fds),
                             self.SOL_SOCKET, self.SCM_RIGHTS, *fds)
        data = (ctypes.c_char * len(data)).from_buffer_copy(data)  # (alive until sent)
        header, _ = self._msghdr(data, control)
        return self._retry(libc().sendmsg, self.fd, header, self.MSG_NOSIGNAL)

    def recvmsg(self, maxfds):
        """(the next message, up to maxfds fds sent with it); (b"", []) at EOF. Its size is
        asked first (MSG_PEEK | MSG_TRUNC): a buffer of the largest message's would be
        zeroed, and so made resident, at every call."""
        ctypes = ctypes_api()
        empty = (ctypes.c_char * 0)()
        # (the iovec alive until the call: freed, its memory may be another's by then)
        peek, iov = self._msghdr(empty, empty)
        size = self._retry(libc().recvmsg, self.fd, peek, self.MSG_PEEK | self.MSG_TRUNC)
        data = (ctypes.c_char * size)()
        control = (ctypes.c_char * (16 + (4 * maxfds + 7) // 8 * 8))()
        header, _ = self._msghdr(data, control)
        n = self._retry(libc().recvmsg, self.fd, header, self.MSG_CMSG_CLOEXEC)
        length = struct.unpack_from("Q", header, 40)[0]  # msg_controllen
        fds, at = [], 0
        while at + 16 <= length:
            cmsg_len, level, kind = struct.unpack_from("Qii", control, at)
            if level == self.SOL_SOCKET and kind == self.SCM_RIGHTS:
                fds += struct.unpack_from("%di" % ((cmsg_len - 16) // 4), control, at + 16)
            at += (cmsg_len + 7) // 8 * 8
        return data.raw[:n], fds


class _Sync:
    """One end of the setup socket (Msg): the runtime's, or the init's. An ERROR from the
    other side comes out of recv() as the Error it was on that side, one line."""

    def __init__(self, sock, program=None):
        self.sock = sock
        self.in_cgroup = False
        self.program = program  # the runtime's: process.args[0], for the helper's errno

    def send(self, kind, fds=(), **fields):
        fields["t"] = kind
        self.sock.sendmsg(json.dumps(fields).encode(), fds)

    def error(self, msg, code):
        """Tell the other side why we give up (or stderr, once nobody listens)."""
        try:
            self.send(Msg.ERROR, msg=msg, code=code)
        except OSError:  # nobody listens any more (create has returned): say it on stderr
            try:
                os.write(2, ("minicontainer: %s\n" % msg).encode())
            except OSError:
                pass

    def _recv(self):
        try:
            msg, fds = self.sock.recvmsg(4)
        except ConnectionResetError:
            # The peer exited with a message of ours unread (an init that failed before it
            # read IN_CGROUP): the kernel says so once, before what the peer sent last,
            # which is still queued for us (its error).
            msg, fds = self.sock.recvmsg(4)
        if len(msg) == 4 and msg[:1] != b"{":  # the exec helper's errno: its execve failed
            err = struct.unpack("<i", msg)[0]
            return {"t": Msg.ERROR, "msg": 'exec "%s": %s' % (self.program, os.strerror(err)),
                    "code": 127 if err == errno.ENOENT else 126}, fds
        return (json.loads(msg) if msg else None), fds

    def recv(self):
        """The next message and its fds; (None, []) at EOF; an ERROR raises its Error."""
        while True:
            msg, fds = self._recv()
            if msg is None:
                return None, fds
            if msg["t"] == Msg.ERROR:
                raise Error(msg["msg"], msg.get("code", 1))
            if msg["t"] != Msg.IN_CGROUP:  # the runtime says so whenever it is done
                return msg, fds
            self.in_cgroup = True

    def expect(self, kind, why):
        """The next message must be `kind`: else (EOF, another one) the Error `why`."""
        msg, fds = self.recv()
        if msg is None or msg["t"] != kind:
            raise Error(why)
        return msg, fds

    def serve(self, handlers, until=None):
        """Receive, each message to its handler(msg, fds), until `until` (returned) or EOF
        (None). The one receive loop of the runtime, for create and exec alike."""
        while True:
            msg, fds = self.recv()
            if msg is None or msg["t"] == until:
                return msg
            handler = handlers.get(msg["t"])
            if handler is None:
                raise Error("setup: unexpected message %r from the container" % msg["t"])
            handler(msg, fds)

    def wait_cgroup(self):
        """The init's side: until the runtime has moved it into the container's cgroup."""
        while not self.in_cgroup:
            msg, _ = self._recv()
            if msg is None or msg["t"] != Msg.IN_CGROUP:
                raise Error("setup: the runtime did not move the init into its cgroup")
            self.in_cgroup = True


class InitContext:
    """What a child of the runtime (create's init and first child, exec's middle process)
    takes across fork: the runtime fills it in, the child only reads it (but in_cgroup: set
    by a child born in the cgroup, whose "join cgroup" step has nothing left to do)."""
    __slots__ = ("config", "process", "plan", "rootfs", "cgroup", "sync", "lock",
                 "peer", "fifo_fd", "log_fds", "idmap_trees", "stdin_null", "preserve_fds",
                 "debug", "overlay", "hook_state", "seccomp", "nsfds", "in_cgroup",
                 "apparmor")

    def __init__(self, **fields):
        for name in self.__slots__:
            setattr(self, name, fields.pop(name, None))
        if fields:
            raise TypeError("InitContext: unknown fields %s" % ", ".join(fields))


# -- the setup plan: the config compiled once, before any fork, into ordered steps
# As bubblewrap compiles its argv into setup operations and then runs them: every step
# says who takes it (the runtime before the fork, the first child of a user namespace,
# the init, exec's middle process), what (an op of _STEP_OPS) on what, and the config
# field it comes from. The config is never edited after; --debug prints the plan.

class Step:
    __slots__ = ("who", "op", "field", "args")

    def __init__(self, who, op, field, *args):
        self.who, self.op, self.field, self.args = who, op, field, args

    def __str__(self):
        what = self.describe()
        if self.op == "mount":
            what += " (%s)" % (self.args[1].get("type") or "bind")
        return "%s: %s%s" % (self.who, what, " [%s]" % self.field if self.field else "")

    def describe(self):
        """The step in the user's words (container paths, the config's sources), as errors
        name it: "mount SOURCE to DEST: errno text", as crun says it."""
        op, args = self.op, self.args
        if op == "mount":
            m, source = args[1], args[2]
            return "mount %s to %s" % (source or m.get("source") or m.get("type"),
                                       m["destination"])
        words = _STEP_WORDS.get(op)
        if words is None:
            return " ".join([op] + [str(a) for a in args])
        args = args[:words.count("%s")]  # the devices and mount points lists go unsaid
        return words % tuple(", ".join(a) if isinstance(a, list) else a for a in args)


_STEP_WORDS = {  # Step.describe's, by op (args in order)
    "join cgroup": "join the container's cgroup", "join": "join the %s namespace %s",
    "device filter": "attach the cgroup's device filter",
    "unshare": "make namespaces (%s)", "overlay": "mount the image's overlay",
    "mount points": "make mount points", "cut from host": "cut / off the host's mounts",
    "userns": "make the user namespace", "become root": "become the user namespace's root",
    "time": "make the time namespace", "fork": "fork %s", "hooks": "run %s hooks",
    "slirp4netns": "attach slirp4netns to the network namespace",
    "cwd": "make process.cwd", "bind rootfs": "bind the rootfs on itself",
    "devices": "make the devices of /dev", "pivot_root": "pivot_root to %s",
    "move root": "move %s onto / (--no-pivot)", "chroot": "chroot to %s",
    "hostname": "set the hostname to %s", "domainname": "set the domainname to %s",
    "loopback up": "bring lo up", "sysctl": "set sysctl %s to %s",
    "readonly path": "make %s read-only", "mask path": "mask %s",
    "readonly root": "make / read-only", "root propagation": "make / %s",
}


class SetupPlan(list):
    """The steps, in order (Step)."""

    def steps(self, who):
        return [step for step in self if step.who == who]

    @property
    def first_child(self):
        """Whether a first child forks the init: with a user namespace (new or given by
        path), which it enters, so that what the init makes belongs to it; and rootless,
        where the runtime could not leave a pid namespace it made (_plan_first_child)."""
        return any(step.who == "first" for step in self)

    def mount_sources(self):
        return [step.args[2] for step in self if step.op == "mount" and step.args[2]]

    def add(self, who, op, field, *args):
        self.append(Step(who, op, field, *args))


def setup_plan(config, rootfs, bundle, network=None, etc_mounts=(), overlay=False,
               no_pivot=False, cgroup=True):
    """Container.create's plan for `config` (validated): see Step. network: state.network
    (network_setup's namespace, joined by path; or slirp4netns's); etc_mounts:
    write_etc_files's binds; overlay: whether the init mounts an image's overlay on rootfs;
    cgroup: whether the container has one (rootless, it may not).

    Rootless (unprivileged()), the plan differs, not the code that runs it: the overlay is
    mounted by the init in the user namespace, the first child is the user already (no
    mount points made before), it makes the pid namespace even without a user namespace
    of the config's (the runtime could not leave it), devices are bound."""
    linux = config.get("linux", {})
    plan = SetupPlan()
    namespaces = {ns["type"]: ns.get("path") for ns in linux.get("namespaces", [])}
    if network and network.get("netns"):
        namespaces["network"] = network["netns"]
    mounts = [(i, m, _bind_source(m, bundle))
              for i, m in enumerate(config.get("mounts", []) + list(etc_mounts))]
    done = _plan_first_child(plan, linux, namespaces, mounts, overlay, cgroup)
    _plan_namespaces(plan, linux, namespaces, done)
    if network and network["mode"] == "slirp4netns":
        plan.add("init", "slirp4netns", "linux.namespaces")
    plan.add("init", "reached", None, "unshare")
    if overlay and not any(step.op == "overlay" for step in plan):
        plan.add("init", "overlay", "root.path", False)
    hooks = config.get("hooks", {})
    if hooks.get("prestart") or hooks.get("createRuntime"):
        plan.add("init", "hooks", "hooks.createRuntime", "createRuntime")
    if "mount" in namespaces:
        plan.add("init", "cwd", "process.cwd")
        # in a user namespace (ours, or one the rootless runtime is in): no mknod, and
        # sysfs only with a network namespace of that user namespace's
        _plan_mounts(plan, linux, mounts, "user" in namespaces or unprivileged())
    if hooks.get("createContainer"):
        plan.add("init", "hooks", "hooks.createContainer", "createContainer")
    plan.add("init", "reached", None, "mounts")
    if "mount" not in namespaces:
        # the host's mount namespace, which is not ours to change: a root of its own only
        plan.add("init", "chroot", "root.path", rootfs)
    else:
        plan.add("init", "move root" if no_pivot else "pivot_root", "root.path", rootfs)
    if "uts" in namespaces:
        if config.get("hostname"):
            plan.add("init", "hostname", "hostname", config["hostname"])
        if config.get("domainname"):
            plan.add("init", "domainname", "domainname", config["domainname"])
    if "network" in namespaces and not namespaces["network"]:
        plan.add("init", "loopback up", "linux.namespaces")
    for key, value in linux.get("sysctl", {}).items():
        plan.add("init", "sysctl", "linux.sysctl", key, value)
    if "mount" in namespaces:
        _plan_paths(plan, config, linux)
    return plan


def _plan_first_child(plan, linux, namespaces, mounts, overlay, cgroup):
    """With a user namespace (or rootless), the first child's steps up to the init's fork;
    the namespaces it leaves the init done. (Otherwise the runtime itself makes the pid and
    time namespaces and forks the init: see _fork_init.)"""
    if "user" not in namespaces and not unprivileged():
        maker, done = "runtime", {"pid"}
    elif "user" not in namespaces:
        # Rootless in a user namespace of another's (podman's): the runtime could make the
        # pid namespace but never go back to its own, which belongs to the host's user
        # namespace (setns needs CAP_SYS_ADMIN there): a first child makes it and forks.
        maker, done = "first", {"pid"}
        if cgroup:
            plan.add("first", "join cgroup", "linux.cgroupsPath")
    else:
        maker, done = "first", {"user", "pid"}
        if cgroup:  # the cgroup files are the host's
            plan.add("first", "join cgroup", "linux.cgroupsPath")
        if overlay and not unprivileged():
            # Mounted as the host's root, in a mount namespace of ours that the init's
            # copies: the mount points below are then made in the overlay. (Rootless, the
            # init mounts it in the user namespace, of the user's own layers: 5.11+.)
            plan.add("first", "unshare", None, ["mount"])
            plan.add("first", "overlay", "root.path", True)
        if os.geteuid() == 0:  # (the container's root could not make them; a user is it)
            plan.add("first", "mount points", "mounts",
                     [(m, source) for _, m, source in mounts])
        # Namespaces given by path (a bridge's network namespace) belong to the host's
        # user namespace: join them while still the host's root, as runc does.
        for kind, path in namespaces.items():
            if path and kind not in ("user", "pid", "mount"):
                plan.add("first", "join", "linux.namespaces", kind, path)
                done.add(kind)
        sysfs = [entry for entry in mounts if entry[1].get("type") == "sysfs"]
        if "network" in done and sysfs:
            # sysfs may only be mounted by the owner of the network namespace, and one
            # joined by path is the host's: mount it now, as the host's root, in a mount
            # namespace of ours that the init's copies. (Else the init would have to bind
            # the host's /sys, which names the host's network interfaces.)
            if not overlay or unprivileged():  # with one, ours is made
                plan.add("first", "unshare", None, ["mount"])
                plan.add("first", "cut from host", "linux.rootfsPropagation")
            for i, m, source in sysfs:
                plan.add("first", "mount", "mounts[%d]" % i, i, m, source, False)
            mounts[:] = [entry for entry in mounts if entry[1].get("type") != "sysfs"]
        if namespaces["user"]:
            plan.add("first", "join", "linux.namespaces", "user", namespaces["user"])
        else:
            plan.add("first", "userns", "linux.uidMappings")
        plan.add("first", "become root", "linux.uidMappings")
    if "pid" in namespaces:
        if namespaces["pid"]:
            plan.add(maker, "join", "linux.namespaces", "pid", namespaces["pid"])
        else:
            plan.add(maker, "unshare", "linux.namespaces", ["pid"])
    if "time" in namespaces and not namespaces["time"]:
        plan.add(maker, "time", "linux.timeOffsets")
        done.add("time")
    plan.add(maker, "fork", None, "the init")
    return done


def _plan_namespaces(plan, linux, namespaces, done):
    """linux.namespaces the init joins by path, then those it makes, all at once."""
    for kind, path in namespaces.items():
        if path and kind not in done:
            plan.add("init", "join", "linux.namespaces", kind, path)
    plan.add("init", "unshare", "linux.namespaces",
             [kind for kind, path in namespaces.items() if not path and kind not in done])


def _plan_mounts(plan, linux, mounts, userns):
    """mounts, in order, on the rootfs (a mount point for pivot_root), then linux.devices."""
    plan.add("init", "cut from host", "linux.rootfsPropagation")
    plan.add("init", "bind rootfs", "root.path")
    dev_is_tmpfs = False
    for i, m, source in mounts:
        plan.add("init", "mount", "mounts[%d]" % i, i, m, source, userns)
        if os.path.normpath(m["destination"]) == "/dev" and m.get("type") == "tmpfs":
            dev_is_tmpfs = True
    if dev_is_tmpfs:
        plan.add("init", "devices", "linux.devices", linux.get("devices", []), userns)
    elif linux.get("devices"):
        raise Error("linux.devices needs /dev to be a tmpfs mount")


def _plan_paths(plan, config, linux):
    """Once inside: linux.readonlyPaths, linux.maskedPaths, root.readonly, then the root's
    linux.rootfsPropagation (see root_propagation)."""
    for path in linux.get("readonlyPaths", []):
        plan.add("init", "readonly path", "linux.readonlyPaths", path)
    for path in linux.get("maskedPaths", []):
        plan.add("init", "mask path", "linux.maskedPaths", path)
    if config.get("root", {}).get("readonly"):
        plan.add("init", "readonly root", "root.readonly")
    propagation = linux.get("rootfsPropagation") or "rprivate"
    if "shared" in propagation or "unbindable" in propagation:
        plan.add("init", "root propagation", "linux.rootfsPropagation", propagation)


def exec_plan(config, pid, network=None):
    """Container.exec's plan: its middle process joins the cgroup and the namespaces of the
    init `pid`, then forks the process. The user namespace is joined last: as the host's
    root we may enter all the others (a bridge's network namespace is the host's, which
    the container's root could not enter). Rootless, it is joined first: the others are
    its, which only its root may enter."""
    plan = SetupPlan()
    plan.add("exec", "join cgroup", "linux.cgroupsPath")
    kinds = [ns["type"] for ns in config.get("linux", {}).get("namespaces", [])]
    if network and "network" not in kinds:
        kinds.append("network")
    for kind in sorted(kinds, key=lambda kind: (kind == "user") != unprivileged()):
        plan.add("exec", "join", "linux.namespaces", kind,
                 "/proc/%d/ns/%s" % (pid, NAMESPACES[kind][1]))
    plan.add("exec", "fork", None, "the process")
    return plan


def debug_plan(plan):
    for step in plan:
        if step.op != "reached":
            debug("setup plan: %s" % step)


# ==== the container's init: what runs in the new namespaces, up to execve ====
# The runtime's children: the first child of a user namespace, the init, exec's middle
# process. Each takes its steps of the plan (_run_steps), then prepares the process and
# execs it once the runtime says so. Nothing here writes the state directory.

def _mounts_cgroupfs_in_host_cgroupns(config):
    """Whether the init mounts a cgroup filesystem from the host's cgroup namespace (see
    Container.create: that mount waits as a move does)."""
    return any(m.get("type") in ("cgroup", "cgroup2") for m in config.get("mounts", [])) \
        and not any(ns["type"] == "cgroup"
                    for ns in config.get("linux", {}).get("namespaces", []))


def _fork_init(ctx, into_cgroup=False):
    """Fork the container's init, in a new (or given) pid namespace if asked: it is pid 1.

    With a user namespace, a first child creates it (we write the id maps meanwhile) or
    joins the one given by path, and makes the pid namespace, owned by it (/proc can only
    be mounted by root of the user namespace that owns the pid namespace), and forks the
    init: the plan's "first" steps. Otherwise we take the "runtime" steps here, around
    one fork, and come back to our own pid and time namespaces.

    into_cgroup: fork the init into the container's cgroup v2 (fork_into_cgroup) where it
    can be. Returns the child's pid and whether it was born there (else it must be moved)."""
    if ctx.plan.first_child:
        prctl(PR_SET_CHILD_SUBREAPER, 1)  # the init's parent exits: we inherit the init
        pid, born_in_cgroup = fork_perhaps_into_cgroup(ctx.cgroup, into_cgroup)
        if pid == 0:
            ctx.in_cgroup = born_in_cgroup  # else it moves itself ("join cgroup")
            _container_init(ctx, _first_child_steps)
        return pid, born_in_cgroup
    saved = own_time = None
    try:
        for step in ctx.plan.steps("runtime"):
            if step.op in ("join", "unshare"):  # the pid namespace
                saved = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
                _take_step(ctx, None, step)
            elif step.op == "time":
                own_time = os.open("/proc/self/ns/time", os.O_RDONLY | os.O_CLOEXEC)
                _take_step(ctx, None, step)
            elif step.op == "fork":
                pid, born_in_cgroup = fork_perhaps_into_cgroup(ctx.cgroup, into_cgroup)
                if pid == 0:
                    _container_init(ctx)  # never returns
    finally:
        if saved is not None:
            # Our own children (hooks, later forks) stay in our pid namespace.
            setns(saved, CLONE_NEWPID)
            os.close(saved)
        if own_time is not None:
            setns(own_time, CLONE_NEWTIME)  # and in our time namespace
            os.close(own_time)
    return pid, born_in_cgroup


def _container_init(ctx, steps=None):
    """The runtime's child in create (the init, or the first child of a user namespace),
    between fork and exec. It never returns."""
    ctx.lock.close()  # a flock belongs to the open file, which fork shared with us
    # Only the runtime may hold its end: if it dies, we read EOF at our next wait for it.
    ctx.peer.close()
    # And until the container is created, its death is ours: setup may be long before that
    # next wait. (Never after: a created container outlives `create`. The init of a user
    # namespace, a grandchild, has EOF only: its parent exits by design.)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    _child(ctx, steps or _init_steps)


def _child(ctx, steps):
    """Run a forked child's steps; whatever happens, it ends here and says why."""
    if ctx.cgroup is not None:
        ctx.cgroup.close_warming()
    sync = _Sync(ctx.sync)
    code = 1
    try:
        # Inside the container, the host's Python library is out of reach: import now
        # whatever the steps will need.
        if ctx.debug:
            import traceback  # noqa: F401
        if ctx.config and ctx.config.get("hooks"):
            import subprocess  # noqa: F401
        steps(ctx, sync)
    except Error as e:
        code = e.code
        sync.error(str(e), code)
    except OSError as e:
        sync.error(str(e), code)
    except BaseException as e:
        if ctx.debug:
            import traceback
            traceback.print_exc()
        sync.error("container process: %s: %s" % (type(e).__name__, e), code)
    finally:
        os._exit(code)


def _send_namespaces(sync, kind, namespaces, **fields):
    """Send our namespaces as fds: our /proc files are not a rootless runtime's to open
    (we are not dumpable)."""
    fds = [os.open("/proc/self/ns/%s" % ns, os.O_RDONLY | os.O_CLOEXEC) for ns in namespaces]
    try:
        sync.send(kind, fds=fds, **fields)
    finally:
        for fd in fds:
            os.close(fd)


def _overlay_steps(ctx, sync, idmapped):
    """Mount the image's overlay on the rootfs directory, in the (new) mount namespace of
    this process: it goes when the namespace does, so no host mount outlives the container.
    Where the kernel refuses it, the runtime makes a private copy in its place instead.
    idmapped: the host's root mounts it for a user namespace (id-mapped layers)."""
    ov = ctx.overlay
    cut_from_host(ctx.config.get("linux", {}), [ov["target"]] + (  # before any mount
        ov["lower"] if idmapped else []))
    what, mapped = "refused", []
    if unprivileged():
        what = "refused in a user namespace (kernel 5.11+ allows it)"
    try:
        if settings().overlay == "fuse":
            what = "not used ($MINICONTAINER_OVERLAY=fuse)"
            raise OSError(errno.ENOSYS, "")
        if idmapped:
            # The layers are the host root's files; seen through mounts id-mapped like the
            # container, uid 0 on disk is the container's root (5.19+ for overlayfs's lowers).
            what = "with id-mapped layers refused"
            userns = mapped_userns(ctx.config["linux"])
            try:
                for layer in dict.fromkeys(os.path.realpath(p) for p in ov["lower"]):
                    idmapped_bind(layer, userns)  # on the layer, not on a short link
                    mapped.append(layer)
            finally:
                os.close(userns)
        mount_overlay(ov["lower"], ov["upper"], ov["work"], ov["target"])
    except OSError as e:
        if e.errno not in OVERLAY_REFUSED + (errno.ENOSYS,):
            raise
        _unmount_all(mapped)
        # with our namespaces, where the runtime mounts fuse-overlayfs
        _send_namespaces(sync, Msg.OVERLAY_REFUSED, ("user", "mnt"), msg="%s (%s)" % (
            what, os.strerror(e.errno)) if e.strerror else what)
        # mounted by fuse-overlayfs (by the runtime, in our namespaces), or copied
        sync.expect(Msg.OK, "overlayfs refused, and neither fuse-overlayfs nor a private "
                    "copy gave the image")
    # The overlay keeps private clones of its layers: the id-mapped mounts go, or the
    # container's root, owner of every layer file through them, could write the shared
    # store through a volume whose source holds it (-v /:/host binds recursively).
    _unmount_all(mapped)


def _unmount_all(paths):
    for path in paths:
        umount2(path, MNT_DETACH)


def _first_child_steps(ctx, sync):
    """The first child (a user namespace, or rootless): its steps of the plan (see
    _fork_init), the last a fork, whose child goes on as the init."""
    prctl(PR_SET_DUMPABLE, 0)
    apply_oom_score_adj(ctx.config["process"])
    _run_steps(ctx, sync, "first")
    sync.in_cgroup = True  # the first child moved itself there
    _init_steps(ctx, sync)


def _init_steps(ctx, sync):
    config, process = ctx.config, ctx.config["process"]
    hooks = config.get("hooks", {})
    os.setsid()
    # Until execve, this process is the host's python: no process of the container may open
    # it through /proc/PID/exe (the runc CVE-2019-5736 class). execve resets the flag.
    prctl(PR_SET_DUMPABLE, 0)
    # Through the magic link, whatever the mounts do to its path (see below, at READY).
    writable_python = unprivileged() and os.access("/proc/self/exe", os.W_OK)
    # Compiled here, not by the runtime: while the runtime moves us into the cgroup, which
    # takes longer. A bad profile fails `create` all the same.
    ctx.seccomp = _compile_seccomp(config.get("linux", {}))
    fifo = ctx.fifo_fd
    devnull = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC) if ctx.stdin_null else None
    if ctx.log_fds:
        os.dup2(ctx.log_fds[0], 1)
        os.dup2(ctx.log_fds[1], 2)
    # The plan's steps wait, where they must be inside the container's cgroup (a cgroup
    # namespace, rooted where we are; hooks), until the runtime has moved us there.
    _run_steps(ctx, sync, "init")
    debug_step("process")
    # The runtime's move of us into the cgroup waits for an RCU grace period (up to 13 ms
    # here on cgroup v1): the process's setup is done meanwhile, where nothing in it needs
    # the cgroup. A scheduler does (an RT task cannot move to a cgroup without RT runtime),
    # and a terminal's pty is opened under the container's devices cgroup, as runc's is.
    inside_first = bool(process.get("scheduler") or process.get("terminal"))
    if inside_first:
        sync.wait_cgroup()
    path, cwd_later = _prepare_process(process, sync, devnull)
    helper = exec_helper(ctx.sync.fileno())  # (before a seccomp filter may forbid it)
    # All that may fail is done before "ready", so that create reports it; what is left
    # for start is the wait, the startContainer hooks and execve (as runc leaves them).
    _drop_privileges(process, ctx.seccomp, sync, cwd_later, ctx.apparmor)
    sync.wait_cgroup()  # (under the seccomp filter, as the waits below are)
    debug_step("privileges")
    # Cleared before READY: the runtime may exit as soon as it has recorded us.
    prctl(PR_SET_PDEATHSIG, 0)
    if unprivileged() and not writable_python:
        # Else `exec` before `start` could not open our /proc/PID/ns as the user (runc
        # rootless can). Nothing to protect then: we hold the container's own credentials
        # already, and the python we run is not the user's to write (one that is, a
        # pyenv's in the user's home, could be rewritten through /proc/1/exe by the
        # container's root, the user, to run outside it later: then no exec before start).
        prctl(PR_SET_DUMPABLE, 1)
    sync.send(Msg.READY)
    # Recorded in the state, or the runtime died first (EOF): only a container that is
    # created may wait for start, for as long as it takes.
    sync.expect(Msg.CREATED, "setup: the runtime ended before the container was created")
    # A pid namespace's init gets no signal it has no handler for (but SIGKILL): `kill ID`
    # (SIGTERM) of a created container would change nothing, where runc's init (Go, which
    # handles them) ends. Ended so too, until execve gives the program its defaults.
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, lambda sig, frame: os._exit(128 + sig))
    # Wait for start: opening the fifo to write blocks until `start` opens it to read.
    fd = os.open("/proc/self/fd/%d" % fifo, os.O_WRONLY | os.O_CLOEXEC)
    os.write(fd, b"0")
    os.close(fd)
    os.close(fifo)
    if hooks.get("startContainer"):
        run_hooks(hooks["startContainer"], dict(ctx.hook_state, status="created",
                                                pid=os.getpid()), "startContainer")
    _exec(process, path, ctx.preserve_fds, ctx.sync, helper)


def _exec_steps(ctx, sync):
    """exec's middle process: its plan (exec_plan) joins the cgroup and namespaces and
    forks the process, which goes on here."""
    prctl(PR_SET_DUMPABLE, 0)  # see _init_steps
    apply_oom_score_adj(ctx.process)
    _run_steps(ctx, sync, "exec")
    devnull = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC) if ctx.stdin_null else None
    os.setsid()
    process = ctx.process
    path, cwd_later = _prepare_process(process, sync, devnull, init=False)
    helper = exec_helper(ctx.sync.fileno())
    _drop_privileges(process, ctx.seccomp, sync, cwd_later, ctx.apparmor)
    _exec(process, path, ctx.preserve_fds, ctx.sync, helper)


def _run_steps(ctx, sync, who):
    """Execute `who`'s steps of the plan (see Step), in order."""
    for step in ctx.plan:
        if step.who == who:
            _take_step(ctx, sync, step)


def _take_step(ctx, sync, step):
    """One step; what the kernel refuses is an Error in one shape: the step as the user
    knows it (Step.describe), then the errno's text."""
    try:
        _STEP_OPS[step.op](ctx, sync, *step.args)
    except OSError as e:
        raise Error("%s: %s" % (step.describe(), os.strerror(e.errno) if e.errno else e)
                    ) from None


def _step_device_filter(ctx, sync, rules):
    bpf_attach_device_filter(ctx.cgroup.v2, rules)


def _step_join_cgroup(ctx, sync):
    if ctx.cgroup is not None and not ctx.in_cgroup:
        ctx.cgroup.join(0)


def _step_join(ctx, sync, kind, path):
    fd = (ctx.nsfds or {}).pop(path, None)  # exec's, opened by the runtime
    if fd is None:
        _join_namespace(kind, path)
        return
    try:
        setns(fd, NAMESPACES[kind][0])
    finally:
        os.close(fd)


def _step_unshare(ctx, sync, kinds):
    flags = 0
    for kind in kinds:
        flags |= NAMESPACES[kind][0]
    if flags & CLONE_NEWCGROUP:
        sync.wait_cgroup()  # a cgroup namespace is rooted where we are
    unshare(flags)


def _step_userns(ctx, sync):
    unshare(CLONE_NEWUSER)
    # Our /proc files are root's while we are not dumpable: a rootless runtime (and
    # newuidmap, which it runs) could not write the maps. Dumpable only meanwhile, as runc.
    if unprivileged():
        prctl(PR_SET_DUMPABLE, 1)
    sync.send(Msg.USERNS)  # the runtime writes the id maps
    sync.expect(Msg.OK, "user namespace: the id maps were not written")
    prctl(PR_SET_DUMPABLE, 0)


def _step_slirp4netns(ctx, sync):
    _send_namespaces(sync, Msg.NETNS, ("net", "user"))  # the runtime attaches slirp4netns
    sync.expect(Msg.OK, "slirp4netns did not start")


def _step_become_root(ctx, sync):
    # The container's root: an unmapped uid may create nothing (EOVERFLOW).
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


def _step_fork(ctx, sync, what):
    """The first child forks the init (in the pid namespace it made), exec's middle process
    the container's process; the parent says which pid and goes, the child goes on."""
    pid = fork()
    if pid:
        sync.send(Msg.PID, pid=pid)
        os._exit(0)


def _step_hooks(ctx, sync, kind):
    sync.wait_cgroup()
    if kind == "createRuntime":  # and prestart: the runtime's, in its namespaces
        sync.send(Msg.HOOKS)
        sync.expect(Msg.OK, "createRuntime hooks failed")
    else:
        # pid as this process sees itself (1 in a new pid namespace), as runc passes it
        run_hooks(ctx.config["hooks"][kind], dict(ctx.hook_state, status="creating",
                                                  pid=os.getpid()), kind)


def _step_mount(ctx, sync, i, m, source, userns):
    mount_entry(m, ctx.rootfs, source, ctx.cgroup, userns, (ctx.idmap_trees or {}).get(i))


def _step_chroot(ctx, sync, rootfs):
    os.chroot(rootfs)
    os.chdir("/")


_STEP_OPS = {
    "device filter": _step_device_filter,
    "join cgroup": _step_join_cgroup,
    "join": _step_join,
    "unshare": _step_unshare,
    "overlay": _overlay_steps,
    "mount points": lambda ctx, sync, mounts: make_mount_points(mounts, ctx.config, ctx.rootfs),
    "cut from host": lambda ctx, sync: cut_from_host(ctx.config.get("linux", {}),
                                                     [ctx.rootfs]),
    "userns": _step_userns,
    "become root": _step_become_root,
    "slirp4netns": _step_slirp4netns,
    "time": lambda ctx, sync: unshare_time(ctx.config.get("linux", {})),
    "fork": _step_fork,
    "reached": lambda ctx, sync, name: debug_step(name),
    "hooks": _step_hooks,
    "cwd": lambda ctx, sync: make_cwd(ctx.config, ctx.rootfs),
    # pivot_root needs the new root to be a mount point
    "bind rootfs": lambda ctx, sync: mount(ctx.rootfs, ctx.rootfs, None, MS_BIND | MS_REC),
    "mount": _step_mount,
    "devices": lambda ctx, sync, devices, userns: create_devices(ctx.rootfs, devices, userns),
    "pivot_root": lambda ctx, sync, rootfs: enter_rootfs(rootfs),
    "move root": lambda ctx, sync, rootfs: move_root(rootfs),
    "chroot": _step_chroot,
    "hostname": lambda ctx, sync, name: sethostname(name),
    "domainname": lambda ctx, sync, name: sethostname(name, domain=True),
    "loopback up": lambda ctx, sync: loopback_up(),
    "sysctl": lambda ctx, sync, key, value: write_sysctl(key, value),
    "readonly path": lambda ctx, sync, path: readonly_path(path),
    "mask path": lambda ctx, sync, path: mask_path(path),
    "readonly root": lambda ctx, sync: _readonly_remount("/"),
    "root propagation": lambda ctx, sync, propagation: root_propagation(propagation),
}


def _prepare_process(process, sync, devnull, init=True):
    """Terminal, cwd, program and rlimits: what may still fail before the process is started
    (and so fail `create`), done inside the container's root. An exec'd process (not init)
    leaves /dev/console the init's, as runc's does."""
    if process.get("terminal"):
        master, slave, slave_path = open_pty()
        sync.send(Msg.PTY, fds=[master])
        os.close(master)
        setup_console(slave, slave_path, process.get("consoleSize"), bind_console=init)
    elif devnull is not None:
        os.dup2(devnull, 0)
    # As root first, as runc: a cwd the user may not enter (root's home) is entered all
    # the same; one only the user may (a volume of its own, root squashed) once it is the
    # user (cwd_later).
    cwd_later = not _chdir_inside(process.get("cwd", "/"), later_if_denied=True)
    if not os.path.isdir("/proc/self/fd"):  # here, and not after start, where none would hear
        raise Error("the container has no /proc: the runtime needs /proc/self/fd (mount proc "
                    "at /proc)")
    env = process.setdefault("env", [])  # this child's own copy of the process
    if not any(e.startswith("HOME=") and e != "HOME=" for e in env):  # empty is unset: runc
        env[:] = [e for e in env if e != "HOME="]
        env.append("HOME=" + home_directory(process.get("user", {}).get("uid", 0)))
    path = find_executable(process["args"], env)
    apply_rlimits(process.get("rlimits", []))
    apply_oom_score_adj(process)
    if process.get("scheduler"):
        apply_scheduler(process["scheduler"])
    if process.get("ioPriority"):
        apply_io_priority(process["ioPriority"])
    return path, cwd_later


def apply_oom_score_adj(process):
    """process.oomScoreAdj, which children inherit: written by the first child or exec's
    middle process already, as the host's root, before a user namespace (whose root may
    not write our /proc/self files, the host root's while we are not dumpable)."""
    value = process.get("oomScoreAdj")
    if value is None:
        return
    try:
        with open("/proc/self/oom_score_adj") as f:
            if int(f.read()) == value:
                return
        _write("/proc/self/oom_score_adj", value)
    except OSError as e:
        raise Error("set process.oomScoreAdj to %d: %s" % (value, os.strerror(e.errno))
                    ) from None


def _drop_privileges(process, seccomp, sync, cwd_later=False, apparmor=None):
    """no_new_privs, the user, the capability sets and the seccomp filter, whose listener
    (SCMP_ACT_NOTIFY) goes to the runtime to hand on. seccomp is (profile, program) or None.

    Without no_new_privs the filter needs CAP_SYS_ADMIN: loaded before the capabilities go;
    with it, after them. Either way the steps to execve run under it, as under runc. The
    AppArmor profile comes first, as runc's (apparmor_to_apply's, decided by the runtime)."""
    if apparmor:
        apply_apparmor(apparmor)
    if process.get("noNewPrivileges"):
        prctl(PR_SET_NO_NEW_PRIVS, 1)
    elif seccomp:
        _load_seccomp(seccomp, sync)
    apply_user_and_capabilities(process)
    os.umask(process.get("user", {}).get("umask", 0o022))
    if cwd_later:
        _chdir_inside(process.get("cwd", "/"))
    if seccomp and process.get("noNewPrivileges"):
        _load_seccomp(seccomp, sync)


def _load_seccomp(seccomp, sync):
    listener = apply_seccomp(*seccomp)
    if listener is not None:
        sync.send(Msg.SECCOMP, fds=[listener])
        os.close(listener)


# The program is started by a second execve, from a tiny static program in a sealed memfd,
# not by this process's: until execve this process is the host's python, so a program
# "/proc/self/exe" (or a script's "#!/proc/self/exe") would be the host's interpreter,
# running in the container, which could keep an fd of it and open it for writing once
# nothing runs it (runc's CVE-2019-5736; runc and crun execve from a sealed copy of
# themselves, which here would be a 6 MB copy and a second interpreter start). The helper's
# /proc/self/exe is its memfd, which nobody can write. It marks the setup socket (FD)
# close-on-exec, then execve(argv[0], argv + 1, envp); if either fails, it writes the errno
# (4 bytes) to the socket and exits 127. Assembled from (x86_64; aarch64 the same with
# svc #0 and fcntl 25, execve 221, write 64, exit_group 94):
#     mov edi,FD; mov esi,2 (F_SETFD); mov edx,1 (FD_CLOEXEC); mov eax,72 (fcntl); syscall
#     test eax,eax; jnz fail; mov rdi,[rsp+8]; lea rsi,[rsp+16]; mov rax,[rsp] (argc)
#     lea rdx,[rsp+rax*8+16] (envp); mov eax,59 (execve); syscall
#     fail: neg eax; push rax; mov edi,FD; mov rsi,rsp; mov edx,4; mov eax,1 (write)
#     syscall; mov edi,127; mov eax,231 (exit_group); syscall
# {fd} is the instruction word (aarch64) or operand (x86_64) that loads FD.
_EXEC_HELPERS = {
    "x86_64": (0x3E, lambda fd: fd,
               "bf{fd}be02000000ba01000000b8480000000f0585c0751a488b7c2408488d742410488b04"
               "24488d54c410b83b0000000f05f7d850bf{fd}4889e6ba04000000b8010000000f05bf7f00"
               "0000b8e70000000f05"),
    "aarch64": (0xB7, lambda fd: 0xD2800000 | fd << 5,  # movz x0, #FD
                "{fd}410080d2220080d2280380d2010000d4e00000b5e00740f9e1430091e30340f9220c03"
                "8ba81b80d2010000d4e003004be00f1ff8{fd}e1030091820080d2080880d2010000d4e00f"
                "80d2c80b80d2010000d4"),
}
MFD_EXEC = 0x10  # (6.3+: where vm.memfd_noexec is set, a memfd runs only if made so)


def exec_helper(report_fd):
    """A sealed memfd of the helper (above) for this machine, its FD `report_fd`; None where
    there is none: another architecture, or memfds that may not run (vm.memfd_noexec=2)."""
    helper = _EXEC_HELPERS.get(os.uname().machine)
    if helper is None or not 0 <= report_fd <= 0xFFFF:
        return None
    machine, load_fd, text = helper
    code = bytes.fromhex(text.format(fd=struct.pack("<I", load_fd(report_fd)).hex()))
    base, size = 0x400000, 64 + 56 + len(code)
    elf = struct.pack("<4s5B7xHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0,  # 64-bit LE
                      2, machine, 1, base + 64 + 56, 64, 0, 0, 64, 56, 1, 0, 0, 0) + \
        struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000) + code  # PT_LOAD r-x
    flags = os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
    try:
        try:
            fd = os.memfd_create("minicontainer-exec", flags | MFD_EXEC)
        except OSError as e:
            if e.errno != errno.EINVAL:  # (EINVAL: before 6.3)
                raise
            fd = os.memfd_create("minicontainer-exec", flags)
    except OSError:
        return None
    os.write(fd, elf)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK |
                fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
    return fd


def _exec(process, path, preserve_fds, sync_sock, helper):
    """The last step of every container process, init or exec'd: execve (through the
    helper, an fd of exec_helper's, where there is one)."""
    # The sync socket is close-on-exec: its closing tells the runtime that execve worked.
    _close_fds(3 + preserve_fds, keep=[sync_sock.fileno()])
    env = process.get("env", [])
    # execve keeps what is ignored: Python ignores SIGPIPE and SIGXFSZ (else `yes | head` in
    # the container would never end), and our caller may have ignored others (nohup's
    # SIGHUP). The program starts with every signal at its default.
    for sig in signal.valid_signals():
        if sig not in (signal.SIGKILL, signal.SIGSTOP) and \
                signal.getsignal(sig) == signal.SIG_IGN:
            signal.signal(sig, signal.SIG_DFL)
    debug_step("execve")
    env = dict(e.split("=", 1) for e in env if "=" in e)
    if helper is not None:
        os.set_inheritable(sync_sock.fileno(), True)  # until the helper's execve
        try:
            os.execve("/proc/self/fd/%d" % helper, [path] + process["args"], env)
        except OSError:  # (a security module that forbids running a memfd): as before
            os.set_inheritable(sync_sock.fileno(), False)
    try:
        os.execve(path, process["args"], env)
    except OSError as e:
        raise Error('exec "%s": %s' % (process["args"][0], e.strerror),
                    127 if e.errno == errno.ENOENT else 126) from None


def _chdir_inside(cwd, later_if_denied=False):
    """chdir to the process's cwd, which must be within the container's root: through an fd
    of ours ("/proc/self/fd/N" of a host directory, runc's CVE-2024-21626) it could be a
    directory of the host. getcwd() fails (ENOENT) for one the root cannot reach. False:
    denied, to be tried again (later_if_denied)."""
    try:
        os.chdir(cwd)
    except PermissionError:
        if later_if_denied:
            return False
        raise Error("process.cwd %s: chdir: Permission denied" % cwd) from None
    except OSError as e:  # engines read the reason ("no such file or directory": 127)
        raise Error("process.cwd %s: chdir: %s" % (cwd, e.strerror)) from None
    try:
        inside = os.getcwd().startswith("/")
    except FileNotFoundError:
        inside = False
    if not inside:
        raise Error("process.cwd %s: a directory outside the container's root" % cwd)
    return True


def _close_fds(first, keep=()):
    """Mark every fd from `first` on close-on-exec: the program gets only what it should.

    (runc's CVE-2024-21626 was an fd of the host's cgroupfs that leaked into the container.)"""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd >= first and fd not in keep:
            try:
                fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
            except OSError:
                pass
    for fd in range(3, first):
        os.set_inheritable(fd, True)


# ==== lifecycle: create, start, state, signals, delete ====

def default_state_root():
    if not unprivileged():
        return STATE_ROOT
    return os.path.join(rootless_runtime_dir(), "minicontainer")


_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.+-")


def _valid_id(cid):
    # [A-Za-z0-9][A-Za-z0-9_.+-]{0,127}, without the re module (~4 ms of every call)
    return isinstance(cid, str) and 0 < len(cid) <= 128 and cid[0] not in "_.+-" and \
        _ID_CHARS.issuperset(cid)


def no_rootfs(path):
    """The error of a rootfs that is no directory."""
    return Error("rootfs %s %s" % (path, "is not a directory" if os.path.lexists(path)
                                   else "does not exist"))


def check_id(cid):
    if not _valid_id(cid):
        raise Error("invalid container id %r: use letters, digits and _.+- (at most 128)" % cid)
    return cid


_STATE_FIELDS = {"pid": int, "start_time": int, "cgroup": dict, "network": dict,
                 "overlay": dict, "config": dict, "bundle": str, "rootfs": str, "created": str,
                 "annotations": dict, "run": dict}


def _state_shape_ok(state):
    """Whether a state.json's object is one this runtime wrote (its fields of their types):
    one of another shape is no container's, and reading it must not be a traceback."""
    if not isinstance(state, dict) or not all(
            state.get(k) is None or isinstance(state[k], t) for k, t in _STATE_FIELDS.items()):
        return False
    cgroup = state.get("cgroup")
    return cgroup is None or isinstance(cgroup.get("path"), str) and isinstance(
        cgroup.get("v1"), dict) and isinstance(cgroup.get("created", []), list)


class Container:
    """A container known to the state directory; the Python API of the runtime.

        c = Container.create("web", config, bundle="/srv/web")
        c.start(); c.processes(); c.stats(); c.pause(); c.resume()
        c.signal(signal.SIGTERM); c.destroy()
    """

    def __init__(self, cid, root=None):
        self.id = check_id(cid)
        self.root = root or default_state_root()
        self.dir = os.path.join(self.root, self.id)
        self.state = {}
        self._pidfd = None
        self.sync = None  # the setup socket, for the runtime that creates the container

    # -- state on disk
    @classmethod
    def load(cls, cid, root=None):
        if not _valid_id(cid):  # "", ".", "..", a path: never a container (the root itself)
            raise NotFound("container %s does not exist" % cid)
        c = cls(cid, root)
        if os.path.islink(c.dir):  # no container's (followed, gc and delete empty its target)
            raise Error("container %s: %s is a symbolic link, not a state directory"
                        % (cid, c.dir))
        try:
            with open(os.path.join(c.dir, "state.json")) as f:
                c.state = json.load(f)
        except FileNotFoundError:
            if not os.path.isdir(c.dir):
                raise NotFound("container %s does not exist" % cid) from None
        except ValueError:
            pass  # torn by a crash mid-create: delete still clears it
        if not _state_shape_ok(c.state):  # (written by another hand): as torn
            c.state = {}
        return c

    @classmethod
    def list(cls, root=None):
        root = root or default_state_root()
        try:
            names = sorted(os.listdir(root))
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            try:
                out.append(cls.load(name, root))
            except NotFound:
                pass  # removed while we listed
            except Error as e:  # skipped, as runc's list skips what it cannot load
                notice("skipped %s" % e)
            except OSError as e:
                notice("skipped container %s: %s: %s" % (name, e.filename, e.strerror))
        return out

    def save(self):
        write_atomic(os.path.join(self.dir, "state.json"), json.dumps(self.state))

    def lock(self):
        """An exclusive lock on this container's state, held until the returned fd closes."""
        try:
            fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFound("container %s does not exist" % self.id) from None
        fcntl.flock(fd, fcntl.LOCK_EX)
        # Whoever held the lock may have deleted the container (and a new one of the same id
        # may be there): the directory we locked must still be the one of that name.
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(self.dir))
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            raise NotFound("container %s does not exist" % self.id)
        # What we read before may be stale: whoever held the lock may have changed it.
        try:
            with open(os.path.join(self.dir, "state.json")) as f:
                state = json.load(f)
            self.state = state if _state_shape_ok(state) else {}
        except (OSError, ValueError):
            pass
        return _Lock(fd)

    @property
    def pid(self):
        return self.state.get("pid")

    @property
    def cgroup(self):
        cg = self.state.get("cgroup")
        return Cgroup.from_json(cg) if cg else None

    @property
    def fifo(self):
        return os.path.join(self.dir, "exec.fifo")

    @property
    def log(self):
        return os.path.join(self.dir, "container.log")

    def alive(self):
        """The init is ours (the start time recorded: not another process given its pid) and
        runs: neither a zombie nor exiting (PF_EXITING in the flags: past cgroup_exit, as good
        as dead; a pid namespace's init stays so until every other task of the namespace is
        reaped, which for one reparented to the host's init takes as long as that init
        takes). One read of /proc/PID/stat tells all three at one moment."""
        fields = proc_stat(self.pid) if self.pid else None
        return fields is not None and int(fields[19]) == self.state.get("start_time") and \
            fields[0] not in (b"Z", b"X") and not int(fields[6]) & 0x4

    def status(self):
        if not self.pid:
            return "creating"
        if not self.alive():
            return "stopped"
        if os.path.exists(self.fifo):
            return "created"
        cg = self.cgroup
        if cg and cg.frozen():
            return "paused"
        return "running"

    def oci_state(self):
        status = self.status()
        state = {"ociVersion": OCI_VERSION, "id": self.id, "status": status,
                 "pid": self.pid if status != "stopped" else 0,
                 "bundle": self.state.get("bundle", ""),
                 "rootfs": self.state.get("rootfs", ""),
                 "created": self.state.get("created", ""),
                 "owner": ""}
        if self.state.get("annotations"):
            state["annotations"] = self.state["annotations"]
        return state

    # -- creation
    @classmethod
    def create(cls, cid, config, bundle, root=None, console=None, stdin_null=False,
               pid_file=None, preserve_fds=0, cgroup_parent=None, debug=False, overlay=None,
               network=None, etc_files=None, log=None, no_pivot=False, carry=None, image=None,
               network_owner=False):
        """Set up a container whose init waits, fully configured, for start().

        console: None (keep our stdio), "self" (make a pty and keep its master in
        .console_master) or the path of a unix socket to send the master to, as runc does.
        overlay: an image's layer directories (bottom first). The rootfs (config.root.path
        is set) is then STATE/rootfs with an overlay of them mounted on it in the container's
        own mount namespace, the container's changes going to STATE/upper; where overlayfs
        is refused, a private copy of the layers in STATE/rootfs. carry: a directory holding
        the writable layer of this container's previous life (its `upper`, or its private
        copy `rootfs`), which it takes over: a restart keeps the changes, as docker's does.
        network: network_option's; etc_files: write_etc_files's spec (docker's /etc files).
        log: (stdout fd, stderr fd) for the process instead of ours (a detached run's pipes to
        its monitor); the caller keeps and closes them. no_pivot: move the rootfs onto / and
        chroot (move_root), not pivot_root. image: the manifest digest of the image whose
        layers `overlay` are (for rmi). network_owner: the caller holds (or hands on) the
        end of slirp4netns's --exit-fd, .network_exit (see slirp4netns_setup). The config
        is compiled into the setup plan (setup_plan), then never changed."""
        c = cls(cid, root)
        linux = config.get("linux", {})
        if "mount" not in {ns["type"] for ns in linux.get("namespaces", [])}:
            # Then the container lives in the host's mount namespace (chrooted, as runc
            # runs it): nothing may be mounted there.
            unmet = [name for name, value in (
                ("mounts", config.get("mounts")), ("linux.maskedPaths", linux.get(
                    "maskedPaths")), ("linux.readonlyPaths", linux.get("readonlyPaths")),
                ("linux.devices", linux.get("devices")), ("root.readonly", config.get(
                    "root", {}).get("readonly")), ("linux.rootfsPropagation", linux.get(
                        "rootfsPropagation")), ("an image's layers", overlay)) if value]
            if unmet:
                raise Error("linux.namespaces: without a mount namespace, %s would change the "
                            "host's mounts" % ", ".join(unmet))
        if overlay is not None:
            rootfs = config["root"]["path"] = os.path.join(os.path.abspath(c.dir), "rootfs")
        else:
            rootfs = config["root"]["path"]
            rootfs = os.path.realpath(os.path.join(bundle, rootfs))
            if not os.path.isdir(rootfs):
                raise no_rootfs(rootfs)
        process = config["process"]
        check_console(process, console)
        userns = new_userns(linux)
        os.makedirs(c.root, mode=0o711, exist_ok=True)
        try:
            os.mkdir(c.dir, 0o700)
        except FileExistsError:
            raise Error("container id %s is already in use" % cid) from None
        # No user of the host may walk in: a copy of the image, or what the container's root
        # writes to its upper directory, may hold setuid-root files. With a user namespace,
        # the container's root (the map's group) must reach its rootfs and bind sources.
        if userns:
            os.chown(c.dir, -1, host_owner(linux)[1])
            os.chmod(c.dir, 0o710)
        lock = c.lock()
        child = None
        try:
            cgroup = rootless_cgroup(linux, cid, cgroup_parent) if rootless() else \
                Cgroup(cgroup_path(linux.get("cgroupsPath"), cid, cgroup_parent))
            c.state = {"id": cid, "bundle": os.path.abspath(bundle), "rootfs": rootfs,
                       "created": timestamp(), "annotations": config.get("annotations", {}),
                       "cgroup": None, "config": config}
            c.save()  # before anything exists, so that delete can clean up a crashed create
            debug_step("state")
            if network:
                if network["mode"] == "bridge":  # a namespace made here, joined by path
                    network_setup(c, network)
                else:  # slirp4netns: on the init's namespace (Msg.NETNS)
                    c.state["network"] = dict(network)
                debug_step("network")
            etc_mounts = []
            if etc_files is not None:
                etc_mounts = write_etc_files(c, config, etc_files)
            ov = None
            if overlay is not None:
                ov = c._prepare_layers(overlay, carry, image)
                debug_step("layers")
            plan = setup_plan(config, rootfs, c.state["bundle"], c.state.get("network"),
                              etc_mounts, ov is not None, no_pivot, cgroup is not None)
            # On a pure v2 host the init (or the first child) can be born in its cgroup,
            # and nothing waits for the grace period of a move; but a cgroup filesystem
            # mounted outside a cgroup namespace waits for one the same way (it takes the
            # lock a move takes): then the move is begun early instead (warm). (In a user
            # namespace the init binds the container's cgroup there instead.)
            into_cgroup = cgroup is not None and cgroup.unified and (
                plan.first_child or not _mounts_cgroupfs_in_host_cgroupns(config))
            if cgroup is not None:
                c._make_cgroup(cgroup)
                # for the init's join, after the fork; but its thread would keep us from
                # going back to our own time namespace after forking the init in a new one
                # (EUSERS). Not rootless: untried there, and a delegated cgroup is rare.
                warm = not into_cgroup and not unprivileged() and not any(
                    step.op == "time" for step in plan.steps("runtime"))
                # v1's limits are written without the lock that the warming move holds
                # (cgroup_mutex) and so are written meanwhile; v2's device filter is not.
                if warm and not cgroup.unified:
                    cgroup.warm()
                rules = cgroup.apply(linux.get("resources"), device_filter=not into_cgroup)
                if rules:
                    # v2's device filter is then attached by the first process born there,
                    # as its first step, still the host's root: before any setup of the
                    # container's, as ever, and off the runtime's path (the program's build
                    # and load: a millisecond, and a quarter MiB of our peak memory). Not
                    # while a warming move holds the cgroups' lock: it would wait for it.
                    plan.insert(0, Step("first" if plan.first_child else "init",
                                        "device filter", "linux.resources.devices", rules))
                if warm and cgroup.unified:
                    cgroup.warm()
            debug_step("cgroup")
            if DEBUG_LOG:
                debug_plan(plan)
            os.mkfifo(c.fifo, 0o600)
            # The init opens it as the process's user, capabilities dropped (any user may:
            # the state directory, 0700, keeps everyone else from its path), as runc's.
            os.chmod(c.fifo, 0o622)
            if userns:  # the init opens it again as the container's root
                os.chown(c.fifo, *host_owner(linux))
                _check_reachable([rootfs] + plan.mount_sources(), linux)
            ours, theirs = SeqPacket.pair()
            # The init reopens it through this fd: the state directory need not be reachable
            # from the container's user namespace.
            fifo_fd = os.open(c.fifo, os.O_PATH | os.O_CLOEXEC)
            trees = mount_idmaps(config, c.state["bundle"])
            ctx = InitContext(
                config=config, plan=plan, idmap_trees=trees, rootfs=rootfs,
                cgroup=cgroup, sync=theirs, lock=lock, peer=ours,
                fifo_fd=fifo_fd, log_fds=log, stdin_null=stdin_null,
                preserve_fds=preserve_fds, debug=debug, overlay=ov,
                apparmor=apparmor_to_apply(config["process"]),
                hook_state={"ociVersion": OCI_VERSION, "id": cid, "bundle": c.state["bundle"],
                            "annotations": config.get("annotations", {})})
            try:
                child, born_in_cgroup = _fork_init(ctx, into_cgroup)
                first = child
            finally:  # only the children hold the fifo: gc takes its holders for theirs
                theirs.close()
                os.close(fifo_fd)
                for tree in trees.values():
                    os.close(tree)
            debug_step("fork")
            c.state["pid"] = None
            c._pidfd = pidfd_open(child)
            c.sync = _Sync(ours, process["args"][0])
            c.console_master = None
            c.network_exit = None
            if not plan.first_child:  # else it moved itself ("join cgroup")
                # The first move into a cgroup waits for an RCU grace period (~10 ms): done
                # from here, it overlaps the init's own setup, which waits for it only where
                # it must be inside (see _init_steps). (Rootless, there may be none.)
                try:
                    if cgroup is not None and not born_in_cgroup:
                        cgroup.join(child)
                    c.sync.send(Msg.IN_CGROUP)
                except (ProcessLookupError, BrokenPipeError, ConnectionResetError):
                    pass  # the init failed already: its message says why, below
                debug_step("in-cgroup")

            def userns_made(msg, fds):
                write_id_maps(first, linux)
                debug_step("userns")
                c.sync.send(Msg.OK)

            def overlay_refused(msg, fds):  # by the init, or the first child
                try:
                    why = c._fuse_layers(fds, ov, msg["msg"]) if ov and len(fds) == 2 \
                        else ""
                    if why is not None:
                        c._copy_layers(msg["msg"] + why)
                finally:
                    for fd in fds:
                        os.close(fd)
                c.sync.send(Msg.OK)

            def init_forked(msg, fds):  # the init, forked in the new user namespace
                nonlocal child
                child = msg["pid"]
                os.waitpid(first, 0)
                c._pidfd = pidfd_open(child)

            def hooks_due(msg, fds):
                hooks = config.get("hooks", {})
                state = dict(c.oci_state(), status="creating", pid=child)
                # prestart (deprecated) runs where createRuntime does, before it, as runc
                run_hooks(hooks.get("prestart", []), state, "prestart")
                run_hooks(hooks.get("createRuntime", []), state, "createRuntime")
                c.sync.send(Msg.OK)

            def seccomp_listener(msg, fds):
                send_seccomp_listener(linux["seccomp"], fds[0],
                                      dict(c.oci_state(), status="creating", pid=child))

            def netns_made(msg, fds):
                try:
                    c.network_exit = slirp4netns_setup(c, network, *fds, owned=network_owner)
                finally:
                    for fd in fds:
                        os.close(fd)
                c.sync.send(Msg.OK)

            if c.sync.serve({Msg.USERNS: userns_made, Msg.OVERLAY_REFUSED: overlay_refused,
                             Msg.PID: init_forked, Msg.HOOKS: hooks_due, Msg.NETNS: netns_made,
                             Msg.PTY: c._console_handler(console),
                             Msg.SECCOMP: seccomp_listener}, until=Msg.READY) is None:
                raise _init_died(cgroup, linux)
            debug_step("ready")
            c.state.update(pid=child, start_time=process_start_time(child))
            c.save()
            if pid_file:
                try:
                    write_atomic(os.path.abspath(pid_file), "%d" % child)
                except OSError as e:
                    raise Error("--pid-file %s: %s" % (pid_file, e.strerror)) from None
            try:
                c.sync.send(Msg.CREATED)
            except OSError:
                raise _init_died(cgroup, linux) from None
            debug_step("created")
        except BaseException:
            if getattr(c, "network_exit", None) is not None:
                os.close(c.network_exit)
                c.network_exit = None
            if child:
                kill_child(child)
                # its poststop hooks, as runc runs them whenever it destroys a container
                # (a prestart hook may have made what they undo)
                c.state["pid"] = c.state.get("pid") or child
            c._remove(quiet=True)
            raise
        finally:
            lock.close()
        return c

    def _make_cgroup(self, cgroup):
        # Said before it is made, so that gc removes what a crash left; not before it
        # could be another container's, which create() finds out.
        self.state["cgroup"] = cgroup.to_json()
        self.save()
        try:
            cgroup.create()
        except Error:  # it exists: another container's (its id in another state root)
            for d in reversed(cgroup.created):  # only what we made goes, not its processes
                try:
                    os.rmdir(d)
                except OSError:
                    pass
            self.state["cgroup"] = None
            self.save()
            raise
        self.state["cgroup"] = cgroup.to_json()
        self.save()

    # -- the root filesystem of an image
    def _prepare_layers(self, layers, carry=None, image=None):
        """STATE/rootfs, upper and work for the overlay (ctx.overlay for the init), after
        recording the layers in use in the store (rmi keeps them), and the image (its manifest
        digest, for rmi to know its containers). None when a copy is made
        straight away (asked by $MINICONTAINER_NO_OVERLAY, or an image without layers), or
        taken over from `carry`."""
        rootfs = os.path.join(self.dir, "rootfs")
        upper, work = os.path.join(self.dir, "upper"), os.path.join(self.dir, "work")
        os.mkdir(rootfs, 0o755)
        self.state["overlay"] = ov = {"layers": list(layers), "mode": "overlay",
                                      "image": image}
        if layers:
            import hashlib
            store = os.path.dirname(os.path.dirname(layers[0]))
            use = os.path.join(store, "containers",
                               hashlib.sha256(os.path.abspath(self.dir).encode()).hexdigest())
            os.makedirs(os.path.dirname(use), exist_ok=True)
            write_atomic(use, json.dumps({"state": os.path.abspath(self.dir),
                                          "layers": list(layers), "image": image}))
            ov["use"] = use
        self.save()
        if carry and os.path.isdir(os.path.join(carry, "rootfs")):
            os.rmdir(rootfs)
            os.rename(os.path.join(carry, "rootfs"), rootfs)
            ov["mode"] = "copy"
            self.save()
            return None
        if not layers or settings().no_overlay:
            self._copy_layers("not used ($MINICONTAINER_NO_OVERLAY=1)" if layers else "")
            return None
        # upper and work on one filesystem (overlayfs requires it); the upper directory's
        # owner, mode and times are those of the merged root, so they come from the image.
        os.mkdir(work, 0o700)
        if carry and os.path.isdir(os.path.join(carry, "upper")):
            os.rename(os.path.join(carry, "upper"), upper)
        else:
            os.mkdir(upper, 0o755)
            st = os.stat(layers[-1])
            os.chown(upper, *self._host_owner(st.st_uid, st.st_gid))
            os.chmod(upper, st.st_mode & 0o7777)
            os.utime(upper, ns=(st.st_atime_ns, st.st_mtime_ns))
        lower = unique_layers(layers)
        if len(overlay_options(lower, upper, work)) >= 4096:
            # Mount data is one page: past ~60 layers their names do not fit. Short links
            # to them do (docker's overlay2 does the same with its l/ directory).
            links = os.path.join(os.path.abspath(self.dir), "l")
            os.mkdir(links, 0o711)
            for i, layer in enumerate(lower):
                os.symlink(layer, os.path.join(links, "%x" % i))
            lower = [os.path.join(links, "%x" % i) for i in range(len(lower))]
        return {"lower": lower, "upper": upper, "work": work, "target": rootfs}

    def _host_owner(self, uid, gid):
        if unprivileged():  # the user's own store: its files are already the container root's
            return uid, gid
        return host_owner(self.state["config"].get("linux", {}), uid, gid)

    def _fuse_layers(self, nsfds, ov, why):
        """The first fallback: fuse-overlayfs mounts the image in the namespaces nsfds (user,
        mount) of the process that was refused the overlay, its daemon recorded for _remove
        and stopped. None once it serves; else why not, for _copy_layers to say (it is not
        installed, or it failed)."""
        program = host_program("fuse-overlayfs")
        if not program:
            return "; fuse-overlayfs is not installed"
        log = os.path.join(os.path.abspath(self.dir), "fuse-overlayfs.log")

        def started(daemon):
            self.state["overlay"]["helper"] = [daemon, process_start_time(daemon)]
            self.save()
            debug_step("fuse-overlayfs started")

        try:
            fuse_overlayfs_mount(program, nsfds, ov["lower"], ov["upper"], ov["work"],
                                 ov["target"], log, started)
        except Error as e:
            end_helper(self.state["overlay"].pop("helper", None))
            self.save()
            return "; fuse-overlayfs failed (%s)" % e
        self.state["overlay"]["mode"] = "fuse-overlayfs"
        self.save()
        debug_step("fuse-overlayfs")
        notice("overlayfs %s: fuse-overlayfs mounts the image instead" % why, "info")
        return None

    def _copy_layers(self, why):
        """The fallback: a private copy of the image in STATE/rootfs, said once (notice)."""
        layers = self.state["overlay"]["layers"]
        if why:
            notice("overlayfs %s: the container gets a private copy of the image" % why, "info")
        copy_layers(layers, os.path.join(self.dir, "rootfs"), self._host_owner)
        self.state["overlay"]["mode"] = "copy"
        self.save()

    # -- start and wait
    def start(self):
        import select
        with self.lock():
            status = self.status()
            if status != "created":
                raise Error("cannot start a container that is %s" % status)
            # Its path goes first, then it is opened to read, which lets the init go on: a
            # start that cannot say so (a read-only state root) starts nothing.
            held = os.open(self.fifo, os.O_PATH | os.O_CLOEXEC)
            try:
                os.unlink(self.fifo)
                fd = os.open("/proc/self/fd/%d" % held, os.O_RDONLY | os.O_NONBLOCK |
                             os.O_CLOEXEC)
            except OSError as e:
                raise Error("container %s: cannot start: %s" % (self.id, e.strerror)) from None
            finally:
                os.close(held)
            try:
                pidfd = self._pidfd if self._pidfd is not None else pidfd_open(self.pid)
                watch = [fd] + ([pidfd] if pidfd is not None else [])
                while True:
                    ready = select.select(watch, [], [], 0.5)[0]
                    if fd in ready:
                        data = os.read(fd, 1)
                        break
                    if ready or not self.alive():
                        data = b""
                        break
            finally:
                os.close(fd)
            if not data:
                raise Error("container %s: init exited before start" % self.id)
            hooks = self.state["config"].get("hooks", {})
            if hooks.get("poststart"):
                debug_step("poststart")
                try:
                    # "running", with its pid: the program was started, though it may have
                    # ended already (then oci_state says "stopped", pid 0)
                    run_hooks(hooks["poststart"], dict(self.oci_state(), status="running",
                                                       pid=self.pid), "poststart")
                except Error:
                    self._remove(quiet=True)
                    raise

    def exec_result(self):
        """After start(), for the runtime that created the container (it holds the setup
        socket): None once the container's program runs, or the Error that kept it from
        running."""
        if self.sync is None:
            raise Error("container %s: only the runtime that created it hears how its "
                        "program started" % self.id)
        try:
            self.sync.recv()  # EOF: execve worked, and closed the init's end
        except Error as e:
            return e
        finally:
            self.sync.sock.close()
            self.sync = None
        return None

    def _console_handler(self, console):
        """The PTY message's handler: the pty's master to `console` (see create)."""
        def handle(msg, fds):
            if console == "self":
                self.console_master = fds[0]
            else:
                send_console(console, fds[0])
        return handle

    # -- another process in a running container
    def exec(self, process, console=None, stdin_null=False, preserve_fds=0, debug=False):
        """Start `process` (an OCI process object) in the container's namespaces and cgroup.

        Returns its host pid once it runs; console works as for create(), and with "self"
        the pty's master is left in .console_master."""
        status = self.status()
        if status not in ("running", "created"):
            raise Error("cannot exec in a container that is %s" % status)
        validate(process, SCHEMA["process"], "process", "process")
        if not process.get("args"):
            raise Error("process.args must name the program to run")
        check_security_labels(process, {}, "process")
        check_user_ids(process.get("user", {}), self.state.get("config", {}).get("linux", {}),
                       "exec")
        check_console(process, console)
        cgroup = self.cgroup
        # The middle process is born in the cgroup on a pure v2 host (fork_into_cgroup: its
        # move would wait for a grace period); elsewhere its move is begun early (warm).
        into_cgroup = cgroup is not None and cgroup.unified
        if cgroup and not into_cgroup:
            cgroup.warm()
        config = self.state["config"]
        plan = exec_plan(config, self.pid, self.state.get("network"))
        if DEBUG_LOG:
            debug_plan(plan)
        # Every namespace is opened before the first setns: after setns into the container's
        # mount namespace, /proc/PID would name another process.
        nsfds = {}
        for step in plan.steps("exec"):
            if step.op == "join":
                kind, path = step.args
                try:
                    nsfds[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except OSError as e:
                    for fd in nsfds.values():
                        os.close(fd)
                    raise Error("exec: namespace %s of %s: %s" % (kind, self.id,
                                                                 e.strerror)) from None
        ours, theirs = SeqPacket.pair()
        # The process is a grandchild (it must be forked after setns to be in the pid
        # namespace): as a subreaper, we inherit it when its parent exits.
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        ctx = InitContext(process=process, plan=plan, nsfds=nsfds, cgroup=cgroup,
                          sync=theirs,
                          stdin_null=stdin_null, preserve_fds=preserve_fds, debug=debug,
                          seccomp=_compile_seccomp(config.get("linux", {})),
                          apparmor=apparmor_to_apply(process))
        mid, born_in_cgroup = fork_perhaps_into_cgroup(cgroup, into_cgroup)
        if mid == 0:
            ours.close()
            ctx.in_cgroup = born_in_cgroup
            _child(ctx, _exec_steps)
        theirs.close()
        for fd in nsfds.values():
            os.close(fd)
        sync = _Sync(ours, process["args"][0])
        pid, self.console_master = None, None

        def forked(msg, fds):
            nonlocal pid
            pid = msg["pid"]

        def seccomp_listener(msg, fds):
            send_seccomp_listener(config["linux"]["seccomp"], fds[0],
                                  dict(self.oci_state(), pid=pid))

        try:
            # EOF: both ends closed, the middle process exited, and execve worked
            sync.serve({Msg.PID: forked, Msg.PTY: self._console_handler(console),
                        Msg.SECCOMP: seccomp_listener})
        except Error:
            if pid:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
            raise
        finally:
            ours.close()
            os.waitpid(mid, 0)
        if pid is None:
            raise Error("exec: the process could not be started")
        return pid

    # -- management of a running container
    def processes(self):
        cg = self.cgroup
        pids = cg.procs() if cg else []
        return pids if pids or not self.alive() else [self.pid]

    def stats(self):
        return self._own_cgroup("read the stats of").stats()

    def pause(self):
        with self.lock():
            status = self.status()
            if status != "running":
                raise Error("cannot pause a container that is %s" % status)
            self._own_cgroup("pause").freeze(True)

    def resume(self):
        with self.lock():
            status = self.status()
            if status != "paused":
                raise Error("cannot resume a container that is %s" % status)
            self._own_cgroup("resume").freeze(False)

    def _own_cgroup(self, what):
        cg = self.cgroup
        if cg is None:  # rootless without a delegated cgroup v2 subtree
            raise Error("cannot %s container %s: it has no cgroup (rootless, no cgroup v2 "
                        "delegation)" % (what, self.id))
        return cg

    def signal(self, sig, all=False):
        # "container not running" as runc words it: shims match on those words.
        status = self.status()
        if all and self.cgroup and status != "creating":
            # What is left in the cgroup, even after the init exited (containerd kills a
            # --pid host container's processes so), as runc does.
            self.cgroup.kill_all(sig)
        elif status in ("stopped", "creating"):
            raise Error("%s: container not running" % self.id)
        else:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:  # it died (and was reaped) since status() looked
                raise Error("%s: container not running" % self.id) from None
        if status == "paused" and sig == signal.SIGKILL:
            self.cgroup.freeze(False)  # let the kill be delivered

    def wait_stopped(self, timeout=None):
        """Until the container's init has exited (True), or timeout seconds (False)."""
        import select
        pidfd = self._pidfd if self._pidfd is not None else \
            pidfd_open(self.pid) if self.alive() else None
        try:
            if pidfd is not None:  # readable once the process has exited
                return bool(select.select([pidfd], [], [], timeout)[0]) or not self.alive()
            deadline = None if timeout is None else time.monotonic() + timeout
            while self.alive():
                if deadline is not None and time.monotonic() > deadline:
                    return False
                time.sleep(0.05)
            return True
        finally:
            if pidfd is not None and pidfd != self._pidfd:
                os.close(pidfd)

    def wait(self, timeout=None):
        """Block until the container's init exits (or timeout seconds: TimeoutError); its
        exit status, 128+N for signal N. Known to the process that created the container
        (its parent); for others, what state.json records, None if it says nothing."""
        if not self.wait_stopped(timeout):
            raise TimeoutError("container %s still runs" % self.id)
        try:
            return exit_status(os.waitpid(self.pid, 0)[1])
        except ChildProcessError:
            return exit_code_of(self)

    def destroy(self, force=True):
        """Stop the container if asked to, and remove everything it holds."""
        with self.lock():
            status = self.status()
            if status in ("running", "paused") and not force:
                raise Error("cannot delete a container that is %s (use --force)" % status)
            self._remove()

    def stopped(self, record=None):
        """After its init exited, keep a container (state, rootfs changes) for `delete`:
        only its cgroup goes, since nothing can run in it any more. record: a function of
        the container called first under the lock, the cgroup still there (the exit's
        record); when it returns False, the container is not the one it was for: left alone."""
        with self.lock():
            if record is not None and not record(self):
                return
            self._kill_init()
            cg = self.cgroup
            if cg:
                cg.destroy()
                self.state["cgroup"] = None
                self.save()
            network_teardown(self.state.get("network"))  # its address is free again
            # fuse-overlayfs would serve the container's rootfs for ever (it holds a copy
            # of the mount in its own namespace)
            end_helper(self.state.get("overlay", {}).get("helper"))

    def _remove(self, quiet=False):
        kept = True  # the only record of the init and the cgroup: it goes after them
        try:
            self._kill_init()
            cg = self.cgroup
            if cg:
                cg.destroy()
            kept = False
            hooks = self.state.get("config", {}).get("hooks", {})
            if hooks.get("poststop") and self.state.get("pid"):
                run_hooks(hooks["poststop"], dict(self.oci_state(), status="stopped"),
                          "poststop")
        except Error:
            if not quiet:
                raise
        finally:
            network_teardown(self.state.get("network"))  # unmounts STATE/netns: before rmtree
            end_helper(self.state.get("overlay", {}).get("helper"))
            use = self.state.get("overlay", {}).get("use")
            if not kept:
                try:  # a bundle's state is files: shutil and the bz2 and lzma modules it
                    for name in os.listdir(self.dir):  # imports are ~2 ms of a delete
                        os.unlink(os.path.join(self.dir, name))
                    os.rmdir(self.dir)
                except OSError:  # a directory in it (an image's rootfs, upper, work), or gone
                    import shutil
                    shutil.rmtree(self.dir, ignore_errors=True)
                    linux = self.state.get("config", {}).get("linux", {})
                    if os.path.lexists(self.dir) and unprivileged() and new_userns(linux):
                        remove_as_container_root(self.dir, linux)
                    if os.path.lexists(self.dir) and not quiet:  # (a read-only state root)
                        try:
                            os.rmdir(self.dir)
                        except FileNotFoundError:
                            pass
                        except OSError as e:
                            raise Error("container %s: cannot remove %s: %s" % (
                                self.id, self.dir, e.strerror)) from None
            remove_with = self.state.get("remove_with") if not kept else None
            if remove_with:  # the anonymous volumes of a docker-like `run --rm`
                _remove_volumes([os.path.basename(path) for path in remove_with])
            if use and not kept:  # the image's layers are no longer this container's
                try:
                    os.unlink(use)
                except OSError:
                    pass

    def _kill_init(self):
        """SIGKILL the init if it lives, and wait until it is gone. It may die by itself (or
        by a concurrent kill) at any moment: then there is nothing left to do."""
        if self.alive():
            try:
                self.signal(signal.SIGKILL)
            except Error:
                pass  # not running any more
            self._wait_gone()

    def _wait_gone(self):
        for _ in range(5000):
            gone = not self.alive()  # a zombie counts as gone: reap it below if it is ours
            try:  # ours to reap when we created it: then gone once reaped
                if os.waitpid(self.pid, os.WNOHANG)[0] == 0:
                    gone = False
            except ChildProcessError:
                pass
            if gone:
                return
            time.sleep(0.002)
        raise Error("container %s: init did not die" % self.id)


class _Lock:
    def __init__(self, fd):
        self.fd = fd

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def check_console(process, console):
    """A terminal needs a console (ours, "self", or a socket to send its master to), and a
    console socket a terminal (it would get nothing: runc refuses it too)."""
    if process.get("terminal") and console is None:
        raise Error("process.terminal is set: give a console (-t or --console-socket)")
    if console not in (None, "self") and not process.get("terminal"):
        raise Error("--console-socket: process.terminal is not set (the socket is to get a "
                    "terminal's master)")


def _init_died(cgroup, linux):
    """The error of an init that died before it said why: the memory limit's OOM killer's
    work, when the cgroup says so (a limit too small for the runtime's own setup)."""
    try:
        oom = cgroup is not None and cgroup.oom_killed()
    except OSError:
        oom = False
    if oom:
        limit = ((linux.get("resources") or {}).get("memory") or {}).get("limit")
        return Error("container init died during setup: killed by the OOM killer, at "
                     "linux.resources.memory.limit %s" % (limit if limit else "(none)"))
    return Error("container init died during setup")


def cgroup_path(cgroups_path, cid, parent=None):
    """linux.cgroupsPath, or a path derived from the id under the chosen parent; cleaned as
    runc cleans it (a ".." stops at the hierarchy's root: never a directory above it)."""
    if cgroups_path:
        if cgroups_path.count(":") == 2 and not cgroups_path.startswith("/"):
            # systemd's slice:prefix:name, as podman writes it: placed as cgroupfs would.
            sl, prefix, name = cgroups_path.split(":")
            path = "/%s/%s-%s.scope" % (sl or "system.slice", prefix, name)
        else:
            path = cgroups_path
    else:
        path = "/%s/%s" % ((parent or DEFAULT_CGROUP_PARENT).strip("/"), cid)
    return os.path.normpath("/" + path).replace("//", "/")


def rootless_cgroup(linux, cid, parent=None):
    """A rootless container's cgroup: only in a cgroup v2 subtree delegated to the user
    (where it may make directories and move processes), as runc's rootless cgroup manager
    makes one only where it may. Elsewhere (v1, v2 without delegation) none: limits asked
    for are skipped with one warning, as runc rootless skips them."""
    cgroup = Cgroup(cgroup_path(linux.get("cgroupsPath"), cid, parent))
    if cgroup.unified and cgroup.v2:
        d = cgroup.v2
        while not os.path.isdir(d):
            d = os.path.dirname(d)
        if os.access(d, os.W_OK) and os.access(os.path.join(d, "cgroup.procs"), os.W_OK):
            return cgroup
    asked = sorted(key for key, value in (linux.get("resources") or {}).items()
                   if value and key != "devices")
    if asked:
        notice("rootless without a cgroup v2 subtree of yours (delegation): linux.resources "
               "%s not applied" % ", ".join(asked))
    return None


def send_console(path, master):
    import socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        socket.send_fds(s, [b"/dev/ptmx"], [master])
    except OSError as e:
        raise Error("console socket %s: %s" % (path, e.strerror)) from None
    finally:
        s.close()
        os.close(master)


def exit_code_of(c, settle=2.0):
    """A stopped container's exit code as state.json records it (who saw the exit writes
    it, maybe a moment after): None if it says nothing within `settle` seconds."""
    deadline = time.monotonic() + settle
    while True:
        try:
            code = Container.load(c.id, c.root).state.get("exit_code")
        except NotFound:
            return None
        if isinstance(code, int) or time.monotonic() > deadline:
            return code if isinstance(code, int) else None
        time.sleep(0.05)


# ==== image store (tools/ write it; run, images and rmi read it) ====
# The store is an OCI image layout (oci-layout, index.json, blobs/sha256/...) that skopeo and
# umoci can read, plus layers/<diff_id-hex>/ with each layer unpacked once, in overlayfs's
# form, whichever images share it (a container's rootfs is an overlay of them).  index.json
# holds one manifest descriptor per reference, named by the org.opencontainers.image.ref.name
# annotation (the full normalized reference).  The runtime only reads the store and collects
# its garbage (rmi): the writing, unpacking included, is tools/store_writer.py's, which the
# `pull` verb loads from beside this file; a runtime copied alone still runs bundles and
# rootfs directories.  Imports are local so that starting a container does not pay for them.

DEFAULT_REGISTRY = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_PULLED_DIGEST = "io.minicontainer.pulled-digest"  # the registry's manifest digest
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
_REF_PATTERNS = {}


def ref_patterns():
    """Compiled patterns of the grammar of github.com/distribution/reference (docker's)."""
    if not _REF_PATTERNS:
        import re
        alnum = r"[a-z0-9]+"
        sep = r"(?:[._]|__|[-]+)"
        component = r"%s(?:%s%s)*" % (alnum, sep, alnum)
        label = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
        host = r"(?:%s(?:\.%s)*|\[[a-fA-F0-9:]+\])" % (label, label)
        _REF_PATTERNS.update(
            domain=re.compile(r"%s(?::[0-9]+)?\Z" % host),
            path=re.compile(r"%s(?:/%s)*\Z" % (component, component)),
            tag=re.compile(r"[\w][\w.-]{0,127}\Z", re.ASCII),  # (\w is Unicode's else)
            digest=re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*"
                              r":[0-9a-fA-F]{32,}\Z"),
            sha256=re.compile(r"sha256:[0-9a-f]{64}\Z"),
            hex64=re.compile(r"[0-9a-f]{64}\Z"),
        )
    return _REF_PATTERNS


class ImageRef:
    """A parsed, normalized image reference (docker.io/library/alpine:latest)."""

    def __init__(self, registry, repository, tag=None, digest=None):
        self.registry, self.repository, self.tag, self.digest = registry, repository, tag, digest

    @property
    def name(self):
        """The full normalized reference, as stored in index.json."""
        s = "%s/%s" % (self.registry, self.repository)
        if self.tag:
            s += ":" + self.tag
        if self.digest:
            s += "@" + self.digest
        return s

    @property
    def api_host(self):
        """Where the registry API lives (Docker Hub's differs from its name)."""
        return DOCKER_HUB_API_HOST if self.registry == DEFAULT_REGISTRY else self.registry

    @property
    def reference(self):
        """What to ask the registry's manifests endpoint for: the digest if any, else the tag."""
        return self.digest or self.tag

    @property
    def familiar_repository(self):
        """The short form docker shows: alpine, not docker.io/library/alpine."""
        repo = self.repository
        if self.registry != DEFAULT_REGISTRY:
            return "%s/%s" % (self.registry, repo)
        if repo.startswith("library/") and repo.count("/") == 1:
            return repo[len("library/"):]
        return repo

    def __repr__(self):
        return "ImageRef(%r)" % self.name

    def __str__(self):
        return self.name


def parse_reference(ref):
    """Parse and normalize an image reference as docker does; raise Error if it is invalid.

    alpine -> docker.io/library/alpine:latest; a digest without a tag stays without one.
    """
    p = ref_patterns()
    if not isinstance(ref, str) or not ref:
        raise Error("invalid reference format: empty image reference")
    if p["hex64"].match(ref):
        raise Error("invalid repository name (%s), cannot specify 64-byte hexadecimal strings"
                    % ref)
    rest, digest = ref, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not p["digest"].match(digest):
            raise Error("invalid reference format: bad digest in %r" % ref)
        if not digest.startswith("sha256:"):
            raise Error("unsupported digest algorithm in %r (only sha256)" % ref)
        if not p["sha256"].match(digest):
            raise Error("invalid reference format: a sha256 digest is 64 lowercase hex "
                        "digits: %r" % ref)
    tag = None
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        rest, tag = rest[:colon], rest[colon + 1:]
        if not p["tag"].match(tag):
            raise Error("invalid reference format: bad tag %r in %r" % (tag, ref))
    slash = rest.find("/")
    first = rest[:slash]
    if slash == -1 or (not any(c in first for c in ".:") and first != "localhost"
                       and first.lower() == first):
        registry, repository = DEFAULT_REGISTRY, rest
    else:
        registry, repository = first, rest[slash + 1:]
    if registry == "index.docker.io":
        registry = DEFAULT_REGISTRY
    if registry == DEFAULT_REGISTRY and "/" not in repository:
        repository = "library/" + repository
    if not p["domain"].match(registry):
        raise Error("invalid reference format: bad registry host %r in %r" % (registry, ref))
    if repository.lower() != repository:
        raise Error("invalid reference format: repository name must be lowercase: %r" % ref)
    if not p["path"].match(repository):
        raise Error("invalid reference format: %r" % ref)
    if len(registry) + 1 + len(repository) > 255:
        raise Error("invalid reference format: repository name must not be more than 255 "
                    "characters")
    if tag is None and digest is None:
        tag = "latest"
    return ImageRef(registry, repository, tag, digest)


def platform_string(platform):
    """OS/ARCH[/VARIANT] of an (os, architecture, variant) tuple, as docker writes it."""
    return "/".join(x for x in platform if x)


def image_platform(config):
    """(os, architecture, variant) of an image config ("?" for what it lacks)."""
    config = config or {}
    return config.get("os", "?"), config.get("architecture", "?"), config.get("variant")


def store_dir():
    """The image store: $MINICONTAINER_STORE, else images/ beside this file; a rootless
    user's own, $XDG_DATA_HOME/minicontainer (~/.local/share/minicontainer), as podman keeps
    its storage there."""
    env = settings().store
    if env:
        return os.path.abspath(env)
    if unprivileged():
        data = os.environ.get("XDG_DATA_HOME") or os.path.join(
            os.path.expanduser("~"), ".local", "share")
        return os.path.join(os.path.abspath(data), "minicontainer")
    return os.path.join(os.path.dirname(os.path.realpath(__file__)), "images")


class ImageStore:
    """The on-disk store, as the runtime reads it (tools/store_writer.py's StoreWriter adds
    the writing).  Readers need no lock; pull holds the store lock shared for its whole run
    and rmi holds it exclusive, so rmi never deletes a blob a running pull relies on;
    index.json read-modify-write happens under a second, short exclusive lock."""

    def __init__(self, path=None):
        self.path = os.path.abspath(path or store_dir())

    def _p(self, *parts):
        return os.path.join(self.path, *parts)

    @property
    def tmp_dir(self):
        return self._p("tmp")

    def blob_path(self, digest):
        if not ref_patterns()["sha256"].match(digest or ""):
            raise Error("image store: bad digest %r" % (digest,))
        return self._p("blobs", "sha256", digest[7:])

    def layer_path(self, diff_id):
        """The directory of the layer whose uncompressed tar has this digest."""
        return self._p("layers", self.blob_path(diff_id).rsplit("/", 1)[1])

    def read_blob(self, digest):
        try:
            with open(self.blob_path(digest), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise Error("image store %s: blob %s is missing" % (self.path, digest)) from None

    def read_json_blob(self, digest):
        try:
            return json.loads(self.read_blob(digest))
        except ValueError:
            raise Error("image store %s: blob %s is not valid JSON"
                        % (self.path, digest)) from None

    def read_index(self):
        try:
            with open(self._p("index.json"), "rb") as f:
                index = json.load(f)
        except FileNotFoundError:
            return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
        except (ValueError, RecursionError):
            raise Error("image store %s: index.json is not valid JSON" % self.path) from None
        if not isinstance(index, dict):
            index = {"manifests": None}
        index.setdefault("manifests", [])
        if not isinstance(index["manifests"], list) or not all(
                isinstance(d, dict) and isinstance(d.get("digest"), str) and
                isinstance(d.get("annotations") or {}, dict) for d in index["manifests"]):
            raise Error("image store %s: index.json is not an OCI image index" % self.path)
        return index

    def lock(self, exclusive, name=".lock", blocking=True):
        """A context manager holding flock on a lock file of the store; it yields False
        instead of waiting when blocking is false and the lock is taken."""
        import contextlib

        @contextlib.contextmanager
        def held():
            os.makedirs(self.path, exist_ok=True)
            fd = os.open(self._p(name), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                try:
                    fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
                                | (0 if blocking else fcntl.LOCK_NB))
                except BlockingIOError:
                    yield False
                    return
                yield True
            finally:
                os.close(fd)
        return held()

    def update_index(self, change):
        """Apply change(index_dict) to index.json atomically, serialized with other writers."""
        with self.lock(True, ".index.lock"):
            index = self.read_index()
            change(index)
            write_atomic(self._p("index.json"), json.dumps(index, indent=2).encode() + b"\n",
                         durable=True)

    def entries(self):
        """(name, descriptor) for each named image in index.json."""
        return [((d.get("annotations") or {}).get(ANNOTATION_REF_NAME), d)
                for d in self.read_index()["manifests"]]

    def may_name(self, ref):
        """Whether ref might name an image here, told without parsing it (parse_reference
        imports re: a bundle's `run ID`, where the store has images, took 10 ms and 0.9 MiB
        more for it): a stored name must hold its last component, or a digest its hex
        digits. True may still be no image; False is none."""
        last = ref.rsplit("/", 1)[-1].partition("@")[0].partition(":")[0]
        digits = ref.rpartition(":")[2]
        return any(last in name or digits in desc.get("digest", "")
                   for name, desc in self.entries() if name)

    def referenced(self, diff_ids=None):
        """Blob digests and manifest digests that index.json reaches (and into diff_ids,
        a set, the layers their configs name)."""
        blobs, manifests = set(), set()
        for _, desc in self.entries():
            digest = desc.get("digest", "")
            manifests.add(digest)
            blobs.add(digest)
            try:
                manifest = self.read_json_blob(digest)
            except Error:
                continue
            blobs.add((manifest.get("config") or {}).get("digest"))
            blobs.update(layer.get("digest") for layer in manifest.get("layers") or ())
            if diff_ids is not None:
                try:
                    config = self.read_json_blob(manifest["config"]["digest"])
                    diff_ids.update(config["rootfs"]["diff_ids"])
                except (Error, KeyError, TypeError):
                    pass
        return blobs, manifests

    def layers_in_use(self):
        """Layer directories that containers use, by the files containers/ holds (one per
        container, naming its state directory and its layers); stale ones are removed."""
        used = set()
        users = self._p("containers")
        for name in os.listdir(users) if os.path.isdir(users) else ():
            path = os.path.join(users, name)
            try:
                with open(path) as f:
                    use = json.load(f)
            except (OSError, ValueError):
                continue
            if os.path.isdir(use.get("state", "")):
                used.update(use.get("layers", []))
            else:  # the container is gone without telling us (a killed runtime, rm -rf)
                try:
                    os.unlink(path)
                except OSError:
                    pass
        return used

    def collect_garbage(self):
        """Remove blobs, rootfs trees and temporary files that no image uses; returns the
        removed blob digests.  Call with the store lock held exclusive."""
        diff_ids = set()
        blobs, manifests = self.referenced(diff_ids)
        removed = []
        blob_dir = self._p("blobs", "sha256")
        for name in sorted(os.listdir(blob_dir)) if os.path.isdir(blob_dir) else ():
            if "sha256:" + name not in blobs:
                os.unlink(os.path.join(blob_dir, name))
                removed.append("sha256:" + name)
        # Flat trees of stores made before layers/ existed: nothing reads them any more.
        rootfs_dir = self._p("rootfs")
        for name in sorted(os.listdir(rootfs_dir)) if os.path.isdir(rootfs_dir) else ():
            remove_tree(os.path.join(rootfs_dir, name))
        if os.path.isdir(rootfs_dir):
            os.rmdir(rootfs_dir)
        layers_dir = self._p("layers")
        in_use = self.layers_in_use()
        for name in sorted(os.listdir(layers_dir)) if os.path.isdir(layers_dir) else ():
            path = os.path.join(layers_dir, name)
            if "sha256:" + name not in diff_ids and path not in in_use:
                remove_tree(path)
        for name in os.listdir(self.tmp_dir) if os.path.isdir(self.tmp_dir) else ():
            remove_tree(os.path.join(self.tmp_dir, name))
        return removed


def _mount_points_under(path):
    prefix = os.path.realpath(path).rstrip("/") + "/"
    try:
        points = [point for point, _, _ in mountinfo()]
    except OSError:
        return []
    return [p for p in points if p == prefix[:-1] or p.startswith(prefix)]


def remove_tree(path):
    """Remove a file or a directory tree without following symlinks or entering mounts.

    A rootfs may have a container's mounts in it; deleting through one would delete host
    files, so that is refused."""
    import shutil
    if not os.path.lexists(path):
        return
    if not os.path.isdir(path) or os.path.islink(path):
        os.unlink(path)
        return
    mounts = _mount_points_under(path)
    if mounts:
        raise Error("refusing to remove %s: %s is mounted inside it" % (path, mounts[0]))
    shutil.rmtree(path)  # uses the fd-based walk, which never follows symlinks


class StoredImage:
    """An image in the store, as run needs it."""

    def __init__(self, name, digest, layers, config, manifest, image_config, platform):
        self.name, self.digest = name, digest
        self.layers = layers                # layer directories, bottom first
        self.rootfs = None                  # no flat tree: a container overlays the layers
        self.config = config                # Entrypoint, Cmd, Env, WorkingDir, User, ...
        self.manifest = manifest
        self.image_config = image_config    # the whole config blob
        self.platform = platform

    def __repr__(self):
        return "StoredImage(%r, %r)" % (self.name, self.digest)


def _lookup(store, ref):
    """Index entries that ref names: a reference, or a manifest digest or a prefix of one."""
    import re
    entries = [(n, d) for n, d in store.entries() if n]
    try:
        name = parse_reference(ref).name
    except Error:
        name = None
    found = [(n, d) for n, d in entries if n == name]
    if not found and re.fullmatch(r"(sha256:)?[0-9a-f]{4,64}", ref):
        hexpart = ref.split(":")[-1]
        found = [(n, d) for n, d in entries if d.get("digest", "")[7:].startswith(hexpart)]
        if len({d["digest"] for _, d in found}) > 1:
            raise Error("image ID %s is ambiguous" % ref)
    if not found and name is None:
        parse_reference(ref)  # raises the reference's own error
    return found


def find_image(ref, store=None):
    """Return the StoredImage that ref names, or raise Error."""
    store = store if isinstance(store, ImageStore) else ImageStore(store)
    found = _lookup(store, ref)
    if not found:
        raise Error("no such image: %s (pull it with: minicontainer pull %s)" % (ref, ref))
    name, desc = found[0]
    digest = desc["digest"]
    manifest = store.read_json_blob(digest)
    config_digest = (manifest.get("config") or {}).get("digest")
    image_config = store.read_json_blob(config_digest)
    try:
        layers = [store.layer_path(d) for d in image_config["rootfs"]["diff_ids"]]
    except (KeyError, TypeError):
        raise Error("image %s: its config lists no layers (rootfs.diff_ids)" % name) from None
    for path in layers:
        if not os.path.isdir(path):
            raise Error("image %s: layer %s is missing from %s; pull it again"
                        % (name, os.path.basename(path)[:12], store.path))
    image = StoredImage(name, digest, layers, image_config.get("config") or {}, manifest,
                        image_config, platform_string(image_platform(image_config)))
    # the digest the registry knows it by (ours differs for a Docker manifest made OCI)
    image.pulled_digest = (desc.get("annotations") or {}).get(ANNOTATION_PULLED_DIGEST, digest)
    return image


def cmd_images(args, g):
    """images [-q] [--digests] [--format table|json|TEMPLATE] [--store DIR]: the images in
    the store."""
    store = ImageStore(args.store)
    rows, digests = [], {}
    for name, desc in store.entries():
        if not name:
            continue
        digest = desc.get("digest", "")
        try:
            manifest = store.read_json_blob(digest)
            config = store.read_json_blob(manifest["config"]["digest"])
            size = sum(int(layer.get("size", 0)) for layer in manifest.get("layers") or ())
            platform = platform_string(image_platform(config))
            created = (config.get("created") or "")[:19]
        except (Error, KeyError, TypeError):
            size, platform, created = 0, "?", "(damaged)"
        ref = parse_reference(name)
        rows.append((ref.familiar_repository, ref.tag or "<none>",
                     digest if args.digests else digest[7:19], platform,
                     created.replace("T", " "), human_size(size)))
        digests[rows[-1]] = digest
    if args.quiet:
        for row in rows:
            print(row[2])
        return 0
    header = ("REPOSITORY", "TAG", "DIGEST" if args.digests else "IMAGE ID", "PLATFORM",
              "CREATED", "SIZE")
    rows.sort()
    # docker's names, for its templates and its json (an object a line)
    data = [{"Repository": row[0], "Tag": row[1], "ID": digests[row][7:19],
             "Digest": digests[row], "Platform": row[3], "CreatedAt": row[4],
             "Size": row[5]} for row in rows]
    print_formatted(args.format, data, header, rows, headers={"ID": "IMAGE ID"},
                    json_lines=True)
    return 0


def cmd_rmi(args, g):
    """rmi [--store DIR] IMAGE...: untag images and delete the blobs no other image uses."""
    store = ImageStore(args.store)
    status = 0
    # Exclusive: waits for running pulls, whose blobs are not yet referenced by index.json.
    with store.lock(True):
        store.read_index()  # a store whose index is unreadable: said once, not per image
        for ref in args.images:
            try:
                found = _lookup(store, ref)
            except Error as e:
                print("minicontainer: %s" % e, file=sys.stderr)
                status = 1
                continue
            if not found:
                print("minicontainer: no such image: %s" % ref, file=sys.stderr)
                status = 1
                continue
            # as docker's: refused only for an image that loses its last name, and only when
            # a container (any state root's, kept ones too) was made from that image
            names = {n for n, _ in found}
            named = {d.get("digest") for n, d in store.entries() if n and n not in names}
            users = [] if args.force else _containers_using(
                store, [(n, d) for n, d in found if d.get("digest") not in named])
            if users:
                print("minicontainer: rmi %s: container %s uses it (remove the container "
                      "first, or rmi -f)" % (ref, users[0]), file=sys.stderr)
                status = 1
                continue
            store.update_index(lambda index: index.__setitem__("manifests", [
                d for d in index["manifests"]
                if (d.get("annotations") or {}).get(ANNOTATION_REF_NAME) not in names]))
            for n in sorted(names):
                print("Untagged: %s" % n)
        try:
            for digest in store.collect_garbage():
                print("Deleted: %s" % digest)
        except (Error, OSError) as e:
            print("minicontainer: %s" % e, file=sys.stderr)
            return 1
    return status


def _containers_using(store, found):
    """The ids of containers (of any state root) made from the images of index entries
    `found`, by the image each recorded in the store's containers/ (see _prepare_layers),
    or by their layers for a record of an older runtime."""
    digests = {d.get("digest") for _, d in found}
    images = []
    for _, desc in found:
        try:
            config = store.read_json_blob(store.read_json_blob(desc["digest"])["config"]
                                          ["digest"])
            images.append([store.layer_path(d) for d in config["rootfs"]["diff_ids"]])
        except (Error, KeyError, TypeError):
            continue
    store.layers_in_use()  # forgets the containers that are gone
    users = store._p("containers")
    ids = []
    for name in sorted(os.listdir(users)) if os.path.isdir(users) else ():
        try:
            with open(os.path.join(users, name)) as f:
                use = json.load(f)
        except (OSError, ValueError):
            continue
        if use.get("image") in digests if use.get("image") else use.get("layers") in images:
            ids.append(os.path.basename(use.get("state", "?")))
    return ids


def tools_puller():
    """The tools' puller, tools/pull.py beside this file (found through the link that
    `make install` leaves), imported; or an Error saying how to get it: a runtime copied
    alone runs bundles and rootfs directories, and pulls with the tools only."""
    tools = os.path.join(os.path.dirname(os.path.realpath(__file__)), "tools")
    if not os.path.isfile(os.path.join(tools, "pull.py")):
        raise Error("pulling images needs tools/pull.py beside %s: copy the whole "
                    "minicontainer checkout (this file alone runs --bundle and --rootfs)"
                    % os.path.realpath(__file__))
    if tools not in sys.path:
        sys.path.insert(0, tools)
    import importlib
    return importlib.import_module("pull")


def cmd_pull(argv):
    """minicontainer.py pull [--platform OS/ARCH] [-q] ... REF: tools/pull.py, in-process."""
    puller = tools_puller()
    ap = puller.parser("minicontainer pull")

    def error(message):  # one line, as the runtime's other usage errors
        raise Error("pull: %s" % message, 2)
    ap.error = error
    return puller.run(ap.parse_args(argv))


# ==== command line: runc's commands, and docker's flags for `run` ====

def parse_size(text):
    units = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    t = text.strip().lower()
    num = t.rstrip("bkmgt") if not t.endswith("b") or t[:-1].rstrip("kmgt") == t[:-1] \
        else t[:-1].rstrip("kmgt")
    unit = t[len(num):].rstrip("b") if t[len(num):] not in ("b",) else "b"
    try:
        size = int(float(num) * units[unit])
        if not 0 <= size < 1 << 63:  # (the kernel's counters are int64)
            raise ValueError
        return size
    except (ValueError, KeyError, OverflowError):
        raise Error("invalid size %r (use e.g. 512k, 64m, 1g)" % text) from None


def parse_signal(text):
    t = text.upper()
    if t.isdigit():
        if int(t) > getattr(signal, "SIGRTMAX", 64):
            raise Error("unknown signal %r" % text)
        return int(t)
    sig = signal_number(t if t.startswith("SIG") else "SIG" + t)
    if sig is None:
        raise Error("unknown signal %r" % text)
    return sig


def signal_number(name):
    """What signal.Signals[name] is: SIGKILL, SIGRTMIN, an alias (SIGIOT); never SIG_DFL."""
    sig = getattr(signal, name, None) if not name.startswith("SIG_") else None
    return sig if name.startswith("SIG") and isinstance(sig, int) else None


def _etc_lines(rootfs, name):
    """The lines of /etc/NAME of a rootfs directory, or of an image's layers (a list, bottom
    first), as the container would read it: a symlink is followed inside the root, never to
    the host's files; only a regular file is read (a fifo would hang us). [] if none."""
    path = "/etc/" + name
    for _ in range(40):
        if isinstance(rootfs, list):
            found = layers_lookup(rootfs, path)
            if found is None:
                return []
            try:
                fd = os.open(found, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as e:
                if e.errno != errno.ELOOP:
                    return []
                target = os.readlink(found)  # a symlink: looked up in the layers again
                path = target if target.startswith("/") else os.path.join(
                    os.path.dirname(path), target)
                continue
        else:
            try:
                fd = open_in_root(rootfs, path, os.O_RDONLY | os.O_NONBLOCK)
            except (OSError, Error):
                return []
        with open(fd, errors="replace") as f:
            return f.read(4 << 20).splitlines() if stat.S_ISREG(os.fstat(fd).st_mode) else []
    return []


def lookup_user(rootfs, spec):
    """docker's -u: UID[:GID] or NAME[:GROUP], names looked up in the rootfs's /etc files
    (rootfs: a directory, or an image's layer directories)."""
    user, _, group = spec.partition(":")

    def lookup(filename, name, field):
        try:
            for line in _etc_lines(rootfs, filename):
                parts = line.split(":")
                if len(parts) > 3 and parts[0] == name:
                    return int(parts[field]), parts
        except ValueError:
            pass
        raise Error("unable to find %s %s in the container's /etc/%s"
                    % ("user" if filename == "passwd" else "group", name, filename))

    if user.isdigit():
        uid, gid = int(user), None
    else:
        uid, entry = lookup("passwd", user, 2)
        gid = int(entry[3])
    if group:
        gid = int(group) if group.isdigit() else lookup("group", group, 2)[0]
    if gid is None:
        gid = 0
        try:
            for line in _etc_lines(rootfs, "passwd"):
                parts = line.split(":")
                if len(parts) > 3 and parts[2] == str(uid):
                    gid = int(parts[3])
                    break
        except ValueError:
            pass
    return {"uid": uid, "gid": gid}


def _set_env(env, pairs):
    for pair in pairs:
        key = pair.split("=", 1)[0]
        if not key or "\0" in pair:
            raise Error("-e %r: not a variable (NAME=VALUE, or NAME to pass ours)" % pair)
        if "=" not in pair:
            value = os.environ.get(key)
            if value is None:
                continue
            pair = "%s=%s" % (key, value)
        env[:] = [e for e in env if e.split("=", 1)[0] != key] + [pair]


def docker_capabilities(bounding, process):
    """The sets docker gives: root gets the bounding set as effective and permitted too, any
    other user the bounding set alone. Never inheritable or ambient (docker stopped setting
    them after CVE-2022-24769): ambient capabilities survive the switch to a non-root uid, so
    `-u 65534` would keep CAP_DAC_OVERRIDE and write to root's files through a volume."""
    if process.get("user", {}).get("uid", 0) != 0:
        return {"bounding": list(bounding)}
    return {kind: list(bounding) for kind in ("bounding", "effective", "permitted")}


class _RunConfig:
    """What `run` makes of its arguments: the config, shaped by each flag of RUN_FLAGS in
    turn, and what Container.create takes beside it (network, etc_files)."""

    def __init__(self, a, config, bundle, cid, image):
        self.a, self.config, self.bundle, self.cid, self.image = a, config, bundle, cid, image
        self.process, self.linux = config["process"], config.setdefault("linux", {})
        self.rootfs = os.path.join(bundle, config["root"]["path"])
        self.network = self.etc_files = None
        self.origins = {}  # config field: the flag its value came from, for check's errors
        self.volumes = []  # -v's and --mount's volumes, _add_volume's
        self.own_mounts = len(config.get("mounts", []))  # the flags' come after these

    def resources(self, key=None):
        res = self.linux.setdefault("resources", {})
        return res if key is None else res.setdefault(key, {})

    def check(self, v1, v2):
        """The one check of the final config, its resources as the host's cgroups would take
        them included; an error about a field a flag set names the flag."""
        try:
            check_config(self.config, "run")
            Cgroup("/", v1, v2).plan(self.resources())
        except Error as e:
            msg = str(e)
            msg = msg[len("run: "):] if msg.startswith("run: ") else msg
            for field in sorted(self.origins, key=len, reverse=True):
                if msg.startswith(field):
                    raise Error("%s: %s" % (self.origins[field], msg), e.code) from None
            raise


def _flag_dest(names, options):
    """argparse's name for a flag's value: its dest, else its first long name's words."""
    return options.get("dest") or next(n for n in names if n.startswith("--"))[2:].replace(
        "-", "_")


def run_config(a):
    """The config for `run`: a bundle's, a rootfs's or an image's, then docker's flags (the
    functions of RUN_FLAGS, in its order), then one check of the result. Returns a
    _RunConfig."""
    image, cid, command = None, None, a.args
    bundle = os.getcwd()
    if a.bundle and a.rootfs:
        raise Error("run: --bundle and --rootfs: give one")
    if a.bundle or a.rootfs or a.target is None:
        cid = a.target
        if a.bundle:
            bundle = os.path.abspath(a.bundle)
            config = load_config(bundle)
        elif a.rootfs:
            if not os.path.isdir(a.rootfs):
                raise no_rootfs(a.rootfs)
            config = _docker_spec(os.path.abspath(a.rootfs))
        elif os.path.exists("config.json"):
            config = load_config(bundle)
        else:
            raise Error("run: give an image, --rootfs DIR or --bundle DIR")
    else:
        try:
            if not os.path.exists("config.json"):
                image = image_for_run(a)
            elif ImageStore().may_name(a.target):  # else ID names no image
                image = find_image(a.target)
        except Error:
            if not os.path.exists("config.json"):
                raise
        if image is None:
            cid, config = a.target, load_config(bundle)  # runc's `run ID` in a bundle
        else:
            # The rootfs is made by Container.create (an overlay of image.layers): the path
            # is set there.
            config = _docker_spec("rootfs")
            ic = image.config or {}
            process = config["process"]
            _set_env(process["env"], ic.get("Env") or [])
            process["args"] = (ic.get("Entrypoint") or []) + (ic.get("Cmd") or [])
            if ic.get("WorkingDir"):
                process["cwd"] = ic["WorkingDir"]
            if ic.get("User"):
                process["user"] = lookup_user(image.layers, ic["User"])
            config.pop("hostname", None)  # run names it after the container
    run = _RunConfig(a, config, bundle, cid, image)
    if command:
        run.process["args"] = ((image.config or {}).get("Entrypoint") or [] if image else []) \
            + command
    run.resources()
    v1, v2 = cgroup_hierarchies()
    if not a.bundle and (a.rootfs or image) and v2 and not v1 and \
            not any(ns["type"] == "cgroup" for ns in run.linux.get("namespaces", [])):
        # docker's default on a v2 host (--cgroupns private): programs find their own limits
        # at /sys/fs/cgroup, and /proc/self/cgroup says "0::/". On v1 and hybrid hosts docker
        # keeps the host's cgroup namespace, and so do we.
        run.linux.setdefault("namespaces", []).append({"type": "cgroup"})
    for names, options, apply in RUN_FLAGS:
        if apply is None:
            continue
        flag = next(n for n in names if n.startswith("--"))
        value = getattr(a, _flag_dest(names, options))
        if value in (None, False, [], "") and not getattr(apply, "always", False):
            continue
        try:
            apply(run, value)
        except Error as e:
            if str(e).startswith("-"):  # it names its flag already
                raise
            raise Error("%s: %s" % (flag, e), e.code) from None
        if getattr(apply, "field", None):
            run.origins[apply.field] = flag
    caps = run.process.get("capabilities")
    if caps is not None and (a.rootfs or image is not None):
        run.process["capabilities"] = docker_capabilities(caps["bounding"], run.process)
        env = run.process["env"]
        if run.process.get("terminal") and not any(e.startswith("TERM=") for e in env):
            env.append("TERM=xterm")  # docker's, with -t only
    if not run.process.get("args"):
        raise Error("run: no command given and the image names none")
    run.check(v1, v2)
    return run


def _docker_spec(rootfs):
    """The config a docker-like run starts from: spec's, without its TERM=xterm, which
    docker sets for -t only (run_config adds it then)."""
    config = default_spec(rootfs=rootfs)
    config["process"]["env"].remove("TERM=xterm")
    return config


def _hostname(name):
    """-h/--hostname (docker's -h; --help is help): a name, no space or control character
    (it is a line of the container's /etc/hosts), 64 bytes at most (the kernel's)."""
    if not name or len(name.encode()) > 64 or any(c.isspace() or not c.isprintable()
                                                  for c in name):
        raise Error("%r is not a hostname (64 characters at most, no spaces)" % name)
    return name


def _sets(field, convert=None):
    """A flag's function that sets one config field ("process.oomScoreAdj") to its value
    (converted); a dict value is merged into the field's."""
    def apply(run, value):
        value = convert(value) if convert else value
        *path, key = field.split(".")
        d = run.config
        for part in path:
            d = d.setdefault(part, {})
        if isinstance(value, dict):
            d[key] = dict(d.get(key) or {}, **value)
        else:
            d[key] = value
    apply.field = field
    return apply


def _key_values(pairs):
    """--sysctl KEY=VALUE (repeated) as a dict."""
    out = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise Error("%r is not KEY=VALUE" % pair)
        out[key.strip()] = value
    return out


def _absolute_path(path):
    if not path.startswith("/"):
        raise Error("-w %s: the working directory must be an absolute path" % path)
    return path


def _flag_entrypoint(run, entrypoint):
    if entrypoint is not None:  # "" too: no entrypoint, the command alone
        run.process["args"] = ([entrypoint] if entrypoint else []) + run.a.args


_flag_entrypoint.always = True


def _flag_env(run, pairs):
    _set_env(run.process.setdefault("env", []), pairs)


def _flag_user(run, spec):
    run.process["user"] = lookup_user(run.image.layers if run.image else run.rootfs, spec)


_flag_user.field = "process.user"


def _flag_memory(run, size):
    mem = run.resources("memory")
    mem["limit"] = parse_size(size)
    mem["swap"] = 2 * mem["limit"]  # docker's default; --memory-swap says otherwise


_flag_memory.field = "linux.resources.memory"


def _flag_memory_swap(run, size):
    if not run.a.memory:
        raise Error("needs --memory (the limit of memory plus swap is above it)")
    run.resources("memory")["swap"] = parse_size(size)


_flag_memory_swap.field = "linux.resources.memory.swap"


def _flag_cpus(run, cpus):
    try:
        number = float(cpus)
    except ValueError:
        number = None
    if number is None or not 0 < number < 1e9:  # nan and inf compare False
        raise Error("--cpus %s: a number of CPUs above 0, e.g. 1.5" % cpus)
    if number > os.cpu_count():  # as docker: a quota no cgroup could use
        raise Error("--cpus %s: this machine has %d CPUs" % (cpus, os.cpu_count()))
    cpus = number
    run.resources("cpu").update(quota=int(cpus * 100000), period=100000)


def _flag_cpu_shares(run, shares):
    if shares:
        run.resources("cpu")["shares"] = shares


def _flag_cpuset_cpus(run, cpus):
    run.resources("cpu")["cpus"] = cpus


def _flag_pids_limit(run, limit):
    if limit:
        run.resources()["pids"] = {"limit": limit}


def _flag_tmpfs(run, specs):
    run.config["mounts"] += [_tmpfs_option(spec) for spec in specs]


def _flag_mount(run, specs):
    for spec in specs:
        m = _mount_option(spec)
        volume = m.pop("volume", None)
        if volume is not None:  # type=volume: one of the store's, as -v NAME:CTR
            _add_volume(run, volume["name"], m["destination"], volume["readonly"],
                        volume["nocopy"], "")
        else:
            run.config["mounts"].append(m)
    _shared_binds_share_the_root(run)


def _flag_volume(run, volumes):
    for vol in volumes:
        parts = vol.split(":")
        if len(parts) == 1 or not parts[0].startswith(("/", ".")):
            # docker's volumes: NAME:CTR[:OPTIONS] a named one, a lone CTR an anonymous one
            _volume_option(run, vol, parts)
            continue
        # (z and Z relabel for SELinux, which is not used here: ignored, as docker does
        # where SELinux is off)
        opts = parts[2].split(",") if len(parts) == 3 else []
        if len(parts) not in (2, 3) or not parts[0].startswith("/") or \
                not parts[1].startswith("/") or \
                any(o not in ("ro", "rw", "z", "Z") and o not in PROPAGATION for o in opts):
            raise Error("-v %s: use HOST:CONTAINER[:OPTIONS] with absolute paths, OPTIONS "
                        "ro or rw and a propagation (rprivate, rslave, rshared...)" % vol)
        if not os.path.exists(parts[0]):
            raise Error("-v %s: %s does not exist" % (vol, parts[0]))
        propagation = [o for o in opts if o in PROPAGATION][-1:] or ["rprivate"]
        run.config["mounts"].append({"destination": parts[1], "type": "bind",
                                     "source": parts[0], "options": [
                                         "rbind"] + _bind_mode("ro" in opts) + propagation})
    _shared_binds_share_the_root(run)


def _volume_option(run, vol, parts):
    """-v NAME:CTR[:ro|rw|nocopy,...] or -v CTR: a volume of the store's (see volume_dir),
    named, or anonymous (named when the container's id is known: _run_volumes)."""
    name, dest, opts = (None, parts[0], []) if len(parts) == 1 else \
        (parts[0], parts[1], parts[2].split(",") if len(parts) == 3 else [])
    if len(parts) > 3 or not dest.startswith("/") or \
            any(o not in ("ro", "rw", "z", "Z", "nocopy") for o in opts):
        raise Error("-v %s: use NAME:CONTAINER[:OPTIONS] (a volume) or HOST:CONTAINER[:OPTIONS] "
                    "with absolute paths, OPTIONS ro, rw or nocopy" % vol)
    if name is not None and not valid_volume_name(name):
        raise Error("-v %s: %r is no volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]+) nor an "
                    "absolute host path" % (vol, name))
    _add_volume(run, name, dest, "ro" in opts, "nocopy" in opts,
                ",".join(opts) if len(parts) == 3 else "z")


def _add_volume(run, name, dest, readonly, nocopy, mode):
    """A volume's bind in the config, its source set by _run_volumes."""
    m = {"destination": dest, "type": "bind", "source": volume_dir(name or "anonymous"),
         "options": ["rbind"] + _bind_mode(readonly) + ["rprivate"]}
    run.config["mounts"].append(m)
    run.volumes.append({"name": name, "destination": dest, "rw": not readonly,
                        "nocopy": nocopy, "mode": mode, "mount": m})


def _bind_mode(readonly):
    """A docker-like bind's: read-only is recursive, submounts too, as docker's (25+) is
    where the kernel can (5.12+); read-write leaves submounts as they are."""
    return ["rw"] if not readonly else ["ro", "rro"] if has_mount_setattr() else ["ro"]


def _shared_binds_share_the_root(run):
    """A bind that is to be shared with the host needs a shared root (see cut_from_host),
    which docker then asks for, as it does."""
    if any(m.get("type") == "bind" and {"shared", "rshared"} & set(m.get("options", []))
           for m in run.config["mounts"]):
        run.linux["rootfsPropagation"] = "rshared"


def _flag_read_only(run, _):
    run.config["root"]["readonly"] = True
    # Programs need somewhere to write: a tmpfs on /tmp and /run, as docker gives with
    # --tmpfs (unless a mount of the user's is there).
    taken = {os.path.normpath(m["destination"]) for m in run.config["mounts"]}
    for dest, mode in (("/tmp", "1777"), ("/run", "755")):
        if dest not in taken:
            run.config["mounts"].append({"destination": dest, "type": "tmpfs",
                                         "source": "tmpfs",
                                         "options": ["nosuid", "nodev", "mode=" + mode]})


def _cap_name(name):
    return ("CAP_" + name.upper()).replace("CAP_CAP_", "CAP_")


def _flag_caps(run, names, add):
    """--cap-drop, then --cap-add, on every set the config has; a docker-like container's
    seccomp profile follows (docker's opens syscalls by capability)."""
    caps = run.process.get("capabilities")
    if caps is None:
        return
    for name in names:
        cap_mask([name] if name.upper() != "ALL" else [], "--cap-add/--cap-drop")
    for kind in caps:
        current = caps[kind]
        if add:
            for c in names:
                new = ["CAP_" + n for n in CAPABILITIES[:cap_last_cap() + 1]] \
                    if c.upper() == "ALL" else [_cap_name(c)]
                current = current + [n for n in new if n not in current]
        elif any(c.upper() == "ALL" for c in names):
            current = []
        else:
            drop = {_cap_name(c) for c in names}
            current = [c for c in current if c not in drop]
        caps[kind] = current
    if not run.a.bundle and "seccomp" in run.linux:
        run.linux["seccomp"] = default_seccomp_profile(caps["bounding"])


def _flag_security_opt(run, opts):
    for opt in opts:
        key, _, value = opt.partition("=")
        if key == "no-new-privileges":
            run.process["noNewPrivileges"] = value in ("", "true")
        elif key == "seccomp":
            profile = seccomp_profile_for_option(
                value, run.process.get("capabilities", {}).get("bounding"))
            if profile is None:
                run.linux.pop("seccomp", None)
            else:
                run.linux["seccomp"] = profile
        else:
            raise Error("--security-opt %s: unknown option" % opt)


def _flag_userns(run, value):
    """--userns; and always for an unprivileged user's rootfs or image (rootless), whose
    maps are its own id and its subordinate ranges (rootless_id_maps)."""
    if unprivileged() and os.geteuid() != 0 and (run.a.rootfs or run.image is not None):
        uids, gids = rootless_id_maps()
    elif value:
        base, size = subordinate_ids()
        uids = gids = [{"containerID": 0, "hostID": base, "size": size}]
    else:
        return
    linux = run.linux
    linux["namespaces"] = [ns for ns in linux.get("namespaces", []) if ns["type"] != "user"]
    linux["namespaces"].insert(0, {"type": "user"})
    linux["uidMappings"], linux["gidMappings"] = uids, gids
    # A mount's uid= or gid= (devpts's gid=5) that the maps lack would be refused: dropped,
    # as runc's rootless spec drops them.
    for m in run.config.get("mounts", []):
        if m.get("options"):
            m["options"] = [o for o in m["options"] if not _unmapped_id_option(o, uids, gids)]


_flag_userns.always = True


def _unmapped_id_option(option, uids, gids):
    key, _, value = option.partition("=")
    if key not in ("uid", "gid") or not value.isdigit():
        return False
    return _host_id(uids if key == "uid" else gids, int(value)) < 0


def _flag_network(run, _):
    if run.a.publish_all and run.image is not None:  # -P: docker's, the image's EXPOSE
        run.a.publish = run.a.publish + sorted(
            (run.image.config or {}).get("ExposedPorts") or {})
    run.network = network_option(run.a, run.config)


def _flag_etc_files(run, _):
    run.etc_files = etc_files_option(run.a, run.image)


# What every run needs, flags given or not: the network namespace's mode, docker's /etc files.
_flag_network.always = _flag_etc_files.always = True


def _flag_env_file(run, paths):
    """docker's --env-file: KEY=VALUE lines (the value as it is), KEY alone for the caller's
    value, # comments and blank lines; before -e, which wins."""
    pairs = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as e:
            raise Error("%s: %s" % (path, e.strerror)) from None
        except UnicodeDecodeError as e:
            raise Error("%s: not UTF-8 text (byte %d)" % (path, e.start)) from None
        for n, line in enumerate(lines, 1):
            line = line.lstrip()
            if not line or line.startswith("#"):
                continue
            key, eq, value = line.partition("=")
            key = key if eq else key.rstrip()
            if not key or any(ch.isspace() for ch in key) or "\0" in line:
                raise Error("%s:%d: %r is not KEY=VALUE (or KEY, to pass ours)"
                            % (path, n, line))
            pairs.append(key + eq + value)
    _set_env(run.process.setdefault("env", []), pairs)


def _flag_label(run, labels):
    """-l KEY=VALUE (or KEY, empty): the config's annotations, inspect's Config.Labels."""
    for label in labels:
        key, _, value = label.partition("=")
        if not key.strip():
            raise Error("%r is not KEY=VALUE" % label)
        run.config.setdefault("annotations", {})[key.strip()] = value


# The reaping inits of the host that --init may bind into a container, best first: static,
# since a container's root has no libc of the host's.
HOST_INITS = ("/usr/bin/tini-static", "/usr/bin/catatonit", "/usr/libexec/podman/catatonit",
              "/usr/bin/tini", "/usr/sbin/tini", "/sbin/tini")


def static_executable(path):
    """Whether an ELF file has no program interpreter (PT_INTERP), i.e. needs no ld.so."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or len(head) < 64:
            return False
        end = "<" if head[5] == 1 else ">"
        if head[4] == 2:  # ELFCLASS64
            phoff, = struct.unpack_from(end + "Q", head, 32)
            size, count = struct.unpack_from(end + "HH", head, 54)
        else:
            phoff, = struct.unpack_from(end + "I", head, 28)
            size, count = struct.unpack_from(end + "HH", head, 42)
        f.seek(phoff)
        table = f.read(size * count)
    return not any(struct.unpack_from(end + "I", table, i * size)[0] == 3  # PT_INTERP
                   for i in range(len(table) // size if size else 0))


def host_init():
    dynamic = None
    for path in HOST_INITS:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            if static_executable(path):
                return path
            dynamic = dynamic or path
    if dynamic:
        raise Error("%s is linked dynamically: it cannot run in the container's root; "
                    "a static one is needed (tini-static of Debian's package tini, or "
                    "catatonit)" % dynamic)
    raise Error("needs tini-static or catatonit on the host (apt-get install tini)")


def _flag_init(run, _):
    """docker's --init: the host's tini-static (or catatonit), bound read-only on /dev/init
    (the container's own tmpfs: nothing is written in its root), is PID 1 and reaps."""
    run.config["mounts"].append({"destination": "/dev/init", "type": "bind",
                                 "source": host_init(), "options": ["bind", "ro", "nosuid"]})
    if run.process.get("args"):
        run.process["args"] = ["/dev/init", "--"] + run.process["args"]


def host_devices():
    """linux.devices of every character and block device in the host's /dev (--privileged)
    but the pty ones, which belong to the container's own devpts and console."""
    devices = []
    for top, dirs, files in os.walk("/dev"):
        dirs[:] = [d for d in dirs if os.path.join(top, d) not in
                   ("/dev/pts", "/dev/shm", "/dev/mqueue")]
        for name in sorted(files):
            path = os.path.join(top, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if path in ("/dev/ptmx", "/dev/console", "/dev/tty") or not (
                    stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
                continue
            devices.append({"path": path, "type": "c" if stat.S_ISCHR(st.st_mode) else "b",
                            "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
                            "fileMode": st.st_mode & 0o777, "uid": st.st_uid,
                            "gid": st.st_gid})
    return devices


def _flag_privileged(run, _):
    """docker's --privileged: every capability, no seccomp filter, no masked or read-only
    paths, /sys and the cgroup mount writable, every device of the host (no AppArmor here
    anyway)."""
    caps = run.process.get("capabilities")
    if caps is not None:  # every one that we hold: a container gets no more than its runtime
        with open("/proc/self/status") as f:
            held = int(next(line for line in f if line.startswith("CapBnd:")).split()[1], 16)
        every = ["CAP_" + n for i, n in enumerate(CAPABILITIES[:cap_last_cap() + 1])
                 if held >> i & 1]
        for kind in caps:
            caps[kind] = list(every)
    run.linux.pop("seccomp", None)
    run.linux["maskedPaths"], run.linux["readonlyPaths"] = [], []
    for m in run.config.get("mounts", []):
        if m.get("type") in ("sysfs", "cgroup"):
            m["options"] = [o for o in m.get("options", []) if o != "ro"]
    run.resources()["devices"] = [{"allow": True, "access": "rwm"}]
    run.linux["devices"] = host_devices()


def _platform_tuple(text):
    """(os, architecture) of OS/ARCH[/VARIANT] or ARCH, architectures by their OCI names."""
    parts = text.split("/")
    os_, arch = (parts[0], parts[1]) if len(parts) > 1 else ("linux", parts[0])
    return os_, OCI_ARCH.get(arch, arch)


def host_platform_string():
    machine = os.uname().machine
    return "linux/" + OCI_ARCH.get(machine, machine)


def pull_for_run(ref, platform=None):
    """run's --pull: tools/pull.py pulls ref, its progress on our stderr (our stdout is the
    container's, or run -d's id), as docker run does."""
    puller = tools_puller()
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)  # what the puller prints (progress, the name) goes to stderr
        code = puller.run(puller.parser().parse_args(
            (["--platform", platform] if platform else []) + [ref]))
        sys.stdout.flush()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    if code:
        raise Error("", code)  # the puller said why, in one line


def image_for_run(a):
    """The stored image that run's IMAGE names, pulled first as --pull asks (missing: when
    the store lacks it or has it for another platform than --platform's; always; never),
    with a one-line warning when it is not for this machine's platform."""
    policy, image = a.pull or "missing", None
    want = _platform_tuple(a.platform) if a.platform else None
    if policy != "always":
        try:
            image = find_image(a.target)
        except Error as e:
            if policy == "never" or "no such image" not in str(e):
                raise
        if image is not None and want and _platform_tuple(image.platform) != want:
            if policy == "never":
                raise Error("image %s is for %s, not %s (--pull never)"
                            % (a.target, image.platform, a.platform))
            image = None
    if image is None:
        if policy == "missing":
            sys.stderr.write("Unable to find image '%s' locally\n" % a.target)
        pull_for_run(a.target, a.platform)
        image = find_image(a.target)
    if _platform_tuple(image.platform) != _platform_tuple(host_platform_string()):
        sys.stderr.write("minicontainer: warning: image %s is for %s, this machine is %s: "
                         "its programs may fail to run (Exec format error)\n"
                         % (a.target, image.platform, host_platform_string()))
    return image


def _flag_restart(run, policy):
    name, colon, most = policy.partition(":")
    if name not in ("no", "on-failure", "always", "unless-stopped") or \
            colon and (name != "on-failure" or not most.isdigit()):
        raise Error("invalid restart policy %r (no, on-failure[:N], always, unless-stopped)"
                    % policy)
    run.restart = None if name == "no" else policy
    if run.restart and run.a.rm:
        raise Error("--restart and --rm conflict (a removed container cannot restart)")
    if run.restart and not run.a.detach:
        raise Error("--restart needs -d (the monitor of detached containers restarts them)")


def _flag_stop_signal(run, name):
    """The signal `stop` sends first: --stop-signal, else the image's StopSignal, SIGTERM."""
    name = name or ((run.image.config or {}).get("StopSignal") if run.image else None)
    sig = parse_signal(name or "SIGTERM")
    names = [n for n in dir(signal) if signal_number(n) == sig]
    if not names:
        raise Error("unknown signal %r" % name)
    run.stop_signal = min(names)  # of aliases, the name signal.Signals gives (SIGABRT)


def _flag_stop_timeout(run, seconds):
    if seconds is not None and seconds < 0:
        raise Error("give seconds, 0 or more (not %d)" % seconds)
    run.stop_timeout = 10 if seconds is None else seconds


def _flag_log_opt(run, opts):
    """docker's json-file options: max-size (default 10m) and max-file (default 3)."""
    run.log_opts = {"max_size": 10 << 20, "max_file": 3}
    for opt in opts:
        key, _, value = opt.partition("=")
        if key == "max-size":
            run.log_opts["max_size"] = parse_size(value)
        elif key == "max-file" and value.isdigit() and int(value) > 0:
            run.log_opts["max_file"] = int(value)
        else:
            raise Error("%r: the json-file log takes max-size=SIZE and max-file=N (N > 0)"
                        % opt)
    if run.log_opts["max_size"] <= 0:
        raise Error("max-size must be more than 0")


# Read by every run: what state.json records for stop, restart and the monitor.
_flag_restart.always = _flag_stop_signal.always = _flag_stop_timeout.always = True
_flag_log_opt.always = True


def _tmpfs_option(spec):
    """--tmpfs CTR[:OPTS]: OPTS as mount(8) takes them (size=64m,mode=1777,noexec...)."""
    dest, _, opts = spec.partition(":")
    if not dest.startswith("/"):
        raise Error("--tmpfs %s: the path in the container must be absolute" % spec)
    options = [o for o in opts.split(",") if o]
    parse_mount_options(options)  # refuses what the runtime can't do
    if not any(o.startswith("mode=") for o in options):
        options.append("mode=1777")
    return {"destination": dest, "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "nodev", "noexec"] + options}


def _mount_option(spec):
    """--mount type=bind|volume|tmpfs,source=...,target=...[,readonly]...: docker's syntax
    (a volume's is returned with its "volume": name, readonly, nocopy, for _flag_mount)."""
    import csv
    fields = {}
    try:
        items = next(csv.reader([spec]))
    except (csv.Error, StopIteration):
        items = []
    for item in items:
        key, eq, value = item.partition("=")
        key = {"src": "source", "dst": "target", "destination": "target",
               "ro": "readonly"}.get(key.strip().lower(), key.strip().lower())
        if key in fields:
            raise Error("--mount %s: %s given twice" % (spec, key))
        fields[key] = value if eq else None
    kind = fields.pop("type", "volume")
    target = fields.pop("target", None)
    if not target or not target.startswith("/"):
        raise Error("--mount %s: give target=PATH, an absolute path in the container" % spec)
    readonly = fields.pop("readonly", "false")
    if readonly not in (None, "true", "1", "false", "0"):
        raise Error("--mount %s: readonly takes true or false" % spec)
    readonly = readonly in (None, "true", "1")
    if kind == "bind":
        source = fields.pop("source", None)
        create = fields.pop("bind-create-src", "false") in (None, "true", "1")
        propagation = fields.pop("bind-propagation", None)
        if not source or not source.startswith("/"):
            raise Error("--mount %s: give source=PATH, an absolute path on the host" % spec)
        if propagation is not None and propagation not in PROPAGATION:
            raise Error("--mount %s: unknown bind-propagation %r" % (spec, propagation))
        if not os.path.exists(source):
            if not create:
                raise Error("--mount %s: bind source %s does not exist (add bind-create-src "
                            "to make it)" % (spec, source))
            os.makedirs(source, 0o755)
        options = ["rbind"] + _bind_mode(readonly) + [propagation or "rprivate"]  # docker's
        m = {"destination": target, "type": "bind", "source": source, "options": options}
    elif kind == "tmpfs":
        options = ["nosuid", "nodev", "noexec"] + (["ro"] if readonly else [])
        size, mode = fields.pop("tmpfs-size", None), fields.pop("tmpfs-mode", None)
        if size:
            options.append("size=%d" % parse_size(size))
        try:
            options.append("mode=%o" % (int(mode, 8) if mode else 0o1777))
        except ValueError:
            raise Error("--mount %s: tmpfs-mode takes an octal mode" % spec) from None
        m = {"destination": target, "type": "tmpfs", "source": "tmpfs", "options": options}
    elif kind == "volume":
        name = fields.pop("source", None) or None
        if name is not None and not valid_volume_name(name):
            raise Error("--mount %s: %r is no volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]+)"
                        % (spec, name))
        nocopy = fields.pop("volume-nocopy", "false") in (None, "true", "1")
        m = {"destination": target, "volume": {"name": name, "readonly": readonly,
                                                "nocopy": nocopy}}
    else:
        raise Error("--mount %s: type %s is not supported (bind, volume or tmpfs)"
                    % (spec, kind))
    if fields:
        raise Error("--mount %s: unknown option %s" % (spec, sorted(fields)[0]))
    return m


# -- docker's volumes: directories of the image store's volumes/ (docker's
# /var/lib/docker/volumes), each NAME/_data (what containers mount), NAME/volume.json (its
# creation time and labels) and NAME/users/ (a file per container that mounts it, naming
# its state directory: a volume in use is refused to `volume rm`, whatever the state root).
# volumes/ and NAME/ are 0701 and _data 0755, as docker makes them.

VOLUME_LABEL_ANONYMOUS = "com.docker.volume.anonymous"  # docker's label of an anonymous one


def valid_volume_name(name):
    """docker's rule for a local volume's name: [a-zA-Z0-9][a-zA-Z0-9_.-]+."""
    return isinstance(name, str) and len(name) > 1 and name[0].isascii() and \
        name[0].isalnum() and all(c.isascii() and (c.isalnum() or c in "_.-") for c in name)


def volume_dir(name=None, store=None):
    """The store's volumes/ directory, or that of the volume `name` (its data in _data)."""
    d = os.path.join(ImageStore(store).path, "volumes")
    return d if name is None else os.path.join(d, name)


def volume_create(name, labels=None, store=None):
    """The volume `name`, made (empty) unless it is there; its directory. Made in a
    temporary directory renamed into place, so that two runs making it agree."""
    if not valid_volume_name(name):
        raise Error("%r is no volume name: [a-zA-Z0-9][a-zA-Z0-9_.-]+" % name)
    top, d = volume_dir(store=store), volume_dir(name, store)
    if os.path.isdir(os.path.join(d, "_data")):
        return d
    if not os.path.isdir(top):
        os.makedirs(top, 0o701, exist_ok=True)
        os.chmod(top, 0o701)
    import tempfile
    tmp = tempfile.mkdtemp(prefix=".new-", dir=top)  # 0700: 0701 below, as docker's
    try:
        os.chmod(tmp, 0o701)
        os.mkdir(os.path.join(tmp, "_data"), 0o755)
        os.chmod(os.path.join(tmp, "_data"), 0o755)
        os.mkdir(os.path.join(tmp, "users"), 0o700)
        write_atomic(os.path.join(tmp, "volume.json"), json.dumps(
            {"CreatedAt": timestamp()[:19] + "Z", "Labels": labels or {}}), mode=0o600)
        try:
            os.rename(tmp, d)
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
    finally:
        if os.path.isdir(tmp):
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
    return d


def volume_names(store=None):
    top = volume_dir(store=store)
    return sorted(n for n in _listdir(top) if valid_volume_name(n) and
                  os.path.isdir(os.path.join(top, n, "_data")))


def volume_info(name, store=None):
    """docker volume inspect's object of a volume; a NotFound when there is none."""
    d = volume_dir(name, store)
    if not valid_volume_name(name) or not os.path.isdir(os.path.join(d, "_data")):
        raise NotFound("no such volume: %s" % name)
    try:
        with open(os.path.join(d, "volume.json")) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        meta = {}
    return {"CreatedAt": meta.get("CreatedAt", ""), "Driver": "local",
            "Labels": meta.get("Labels") or None, "Mountpoint": os.path.join(d, "_data"),
            "Name": name, "Options": None, "Scope": "local"}


def volume_users(name, store=None):
    """The ids of the containers (of any state root) that mount the volume; the records of
    those that are gone, or no longer name it, are removed."""
    users = os.path.join(volume_dir(name, store), "users")
    ids = []
    for entry in _listdir(users):
        path = os.path.join(users, entry)
        try:
            with open(path) as f:
                state_dir = f.read()
            with open(os.path.join(state_dir, "state.json")) as f:
                state = json.load(f)
        except (OSError, ValueError):
            state_dir = None if not os.path.isdir(state_dir or "") else state_dir
            state = {}
        if state_dir and ("run" not in state or name in [
                v.get("name") for v in state["run"].get("volumes") or []]):
            ids.append(os.path.basename(state_dir))  # (being made: no record yet)
            continue
        try:
            os.unlink(path)
        except OSError:
            pass
    return sorted(ids)


def volume_remove(name, store=None, force=False):
    """Remove a volume no container uses (any container with force)."""
    d = volume_dir(name, store)
    volume_info(name, store)
    users = [] if force else volume_users(name, store)
    if users:
        raise Error("remove %s: volume is in use - [%s]" % (name, ", ".join(users)))
    import shutil
    top = volume_dir(store=store)
    for stray in _listdir(top):  # what an earlier removal could not finish
        if stray.startswith(".gone-"):
            shutil.rmtree(os.path.join(top, stray), ignore_errors=True)
    gone = os.path.join(top, ".gone-" + os.urandom(6).hex())
    try:
        os.rename(d, gone)  # out of sight at once, then its files
        shutil.rmtree(gone)
    except OSError as e:  # (rmtree's names the entry alone: said with where it is)
        where = e.filename if os.path.isabs(e.filename or "") else d
        raise Error("remove %s: %s: %s" % (name, where, e.strerror)) from None


def _image_dirs(layers, path):
    """The directories of layers (bottom first) whose entries make the directory `path` of
    their merged view, bottom first: up to the one that hides the layers below (a whiteout,
    an opaque directory, a file on the way). Empty when the view has no directory there."""
    return [candidate for candidate, st in _layer_entries(layers, path)
            if stat.S_ISDIR(st.st_mode)][::-1]


def _volume_copy_up(data, layers, rootfs, path):
    """docker's copy of an image's content at a volume's path into the volume, when the
    volume is empty: files, owners, modes, times and xattrs, and the directory's own owner
    and mode. From the image's layers, else from the --rootfs directory."""
    if layers:
        dirs = _image_dirs(layers, path)
    else:
        dirs, d = [], rootfs
        for part in [p for p in os.path.normpath("/" + path).split("/") if p]:
            d = os.path.join(d, part)
            if os.path.islink(d) or not os.path.isdir(d):
                break
        else:
            dirs = [d] if rootfs else []
    if not dirs:
        return
    owner = _same_owner if not unprivileged() else (lambda uid, gid: (-1, -1))
    if layers:
        copy_layers(dirs, data, owner)
    else:
        _copy_dir(dirs[0], data, {}, owner, layer=False)
        _copy_metadata(dirs[0], data, os.lstat(dirs[0]), owner)


def _run_volumes(run, state_dir, created, layers):
    """The volumes of a run's -v and --mount, made if need be (an anonymous one named after
    the container's state directory, destination and creation time: the same again when its
    monitor makes it again), filled from the image when empty, the container recorded as a
    user; their binds' sources set. Returns the anonymous ones that this call made."""
    import hashlib
    made = []
    try:
        for v in run.volumes:
            name = v["name"]
            if name is None:
                name = v["name"] = hashlib.sha256(("%s\0%s\0%s" % (
                    state_dir, v["destination"], created)).encode()).hexdigest()
                v["anonymous"] = True
                if not os.path.isdir(volume_dir(name)):
                    made.append(name)
                volume_create(name, {VOLUME_LABEL_ANONYMOUS: ""})
            d = volume_create(name)
            data = os.path.join(d, "_data")
            # Not copied up into a volume another container has: the copy works by path,
            # which a running one could swap for a symlink to a host directory. (Asked
            # before ours is recorded: our state directory may not be there yet, and
            # volume_users forgets the records of those that are not.)
            others = set(volume_users(name)) - {os.path.basename(state_dir)}
            write_atomic(os.path.join(d, "users", hashlib.sha256(state_dir.encode())
                                      .hexdigest()), state_dir, mode=0o600)
            if not v["nocopy"]:
                fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)  # one copy at a time
                    if not others and not os.listdir(data):
                        _volume_copy_up(data, layers, run.rootfs if run.a.rootfs else None,
                                        v["destination"])
                finally:
                    os.close(fd)
            v["mount"]["source"] = data
    except BaseException:
        _remove_volumes(made)
        raise
    return made


def _volumes_record(run):
    return [dict({k: v[k] for k in ("name", "destination", "rw", "mode")},
                 anonymous=bool(v.get("anonymous"))) for v in run.volumes] or None


def _remove_volumes(names):
    for name in names:
        try:
            volume_remove(name, force=True)
        except NotFound:
            pass
        except Error as e:
            sys.stderr.write("minicontainer: volume %s: %s\n" % (name, e))


def cmd_volume(a, g):
    """docker's volume create|ls|rm|inspect|prune, of the store's volumes/."""
    a.volume_command = {"list": "ls", "remove": "rm"}.get(a.volume_command, a.volume_command)
    if a.volume_command == "create":
        name = a.name or os.urandom(32).hex()
        volume_create(name, _key_values(a.label) if a.label else None)
        print(name)
        return 0
    if a.volume_command == "ls":
        names = volume_names()
        data = []
        for info in map(volume_info, names):  # (ls shows its labels as docker's: k=v,...)
            data.append(dict(info, Labels=",".join(
                "%s=%s" % kv for kv in sorted((info["Labels"] or {}).items()))))
        if a.quiet:
            for n in names:
                print(n)
            return 0
        print_formatted(a.format, data, ("DRIVER", "VOLUME NAME"),
                        [("local", n) for n in names], widths=(9,),
                        headers={"Name": "VOLUME NAME"}, json_lines=True)
        return 0
    if a.volume_command == "inspect":
        found, status = [], 0
        for name in a.names:
            try:
                found.append(volume_info(name))
            except Error as e:
                sys.stderr.write("minicontainer: %s\n" % e)
                status = 1
        print_inspected(found, a.format)
        return status
    if a.volume_command == "rm":
        status = 0
        for name in a.names:
            try:
                volume_remove(name)
                print(name)
            except NotFound as e:
                if not a.force:
                    sys.stderr.write("minicontainer: %s\n" % e)
                    status = 1
            except Error as e:
                sys.stderr.write("minicontainer: %s\n" % e)
                status = 1
        return status
    # prune: as docker's since 23.0, the anonymous volumes no container uses (-a: all)
    unused = [n for n in volume_names() if not volume_users(n) and (
        a.all or VOLUME_LABEL_ANONYMOUS in (volume_info(n)["Labels"] or {}))]
    if not a.force:
        if not sys.stdin.isatty():
            raise Error("volume prune: removes %d unused volume(s); give -f to do so without "
                        "a terminal to ask on" % len(unused))
        try:
            answer = input("WARNING! This will remove %s volumes not used by at least one "
                           "container.\nAre you sure you want to continue? [y/N] "
                           % ("all local" if a.all else "anonymous local"))
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            return 1
    size, gone = 0, []
    for name in unused:
        try:
            size += _tree_size(os.path.join(volume_dir(name), "_data"))
            volume_remove(name)
            gone.append(name)
        except Error as e:
            sys.stderr.write("minicontainer: %s\n" % e)
        except OSError as e:
            sys.stderr.write("minicontainer: volume %s: %s\n" % (name, e.strerror))
    if gone:
        print("Deleted Volumes:\n" + "\n".join(gone) + "\n")
    print("Total reclaimed space: %s" % human_size(size))
    return 0


def _tree_size(path):
    """The bytes of the files under path (a hard link's once), as docker counts them."""
    size, seen = 0, set()
    for d, _, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(d, f))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                size += st.st_size
    return size


def subordinate_ids(user="root"):
    """(first host id, count) for --userns: root's range in /etc/subuid, else 100000:65536.

    The same range serves for gids: /etc/subgid is made alike by useradd."""
    return _subordinate_range("uid", (user,)) or (100000, 65536)


def _subordinate_range(kind, owners):
    """(first host id, count, at most 65536) of the first /etc/sub{kind} line whose owner
    (a name or a number) is one of `owners`; None without one."""
    try:
        with open("/etc/sub%s" % kind) as f:
            for line in f:
                name, _, rest = line.strip().partition(":")
                if name in owners and rest.count(":") == 1:
                    start, count = rest.split(":")
                    return int(start), min(int(count), 65536)
    except (OSError, ValueError):
        pass
    return None


def rootless_id_maps():
    """(uidMappings, gidMappings) of a rootless docker-like run: the user as root, then its
    /etc/subuid and /etc/subgid ranges as 1...N where it has both (and newuidmap and
    newgidmap, which write them), as podman maps them; else the user alone."""
    import pwd
    uid, gid = os.geteuid(), os.getegid()
    try:
        owners = (pwd.getpwuid(uid).pw_name, str(uid))
    except KeyError:
        owners = (str(uid),)
    maps = {kind: [{"containerID": 0, "hostID": own, "size": 1}]
            for kind, own in (("uid", uid), ("gid", gid))}
    ranges = {kind: _subordinate_range(kind, owners) for kind in maps}
    if all(ranges.values()) and host_program("newuidmap") and host_program("newgidmap"):
        for kind, (start, count) in ranges.items():
            maps[kind].append({"containerID": 1, "hostID": start, "size": count})
    return maps["uid"], maps["gid"]


def _forward_signals(pid, master):
    def forward(sig, frame):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def winch(sig, frame):
        size = get_winsize(0) or get_winsize(1)
        if size and master is not None:
            set_winsize(master, *size)
        forward(sig, frame)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
                signal.SIGUSR2):
        signal.signal(sig, forward)
    signal.signal(signal.SIGWINCH, winch)


def _wait_exit(pid):
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            return 255
    return exit_status(status)


def _relay_output(pid, pipes, log):
    """A kept foreground container's stdout and stderr, from their pipes (pipes[0], [1]) to
    ours and to its json-file log, until it exits; then its exit status. A closed stdout of
    ours (`| head`) ends our copy there, not the log's."""
    import select
    streams = {pipes[0]: [1, "stdout", b""], pipes[1]: [2, "stderr", b""]}
    pidfd = pidfd_open(pid)

    def copy(fd):
        out, name, buf = streams[fd]
        data = os.read(fd, 65536)
        if data:
            streams[fd][2] = log.records(name, buf + data)
            if out is not None:
                try:
                    write_all(out, data)
                except OSError:
                    streams[fd][0] = None
        elif buf:
            log.write(name, buf)
        return data
    try:
        watch = list(pipes)
        while watch:
            ready = select.select(watch + ([pidfd] if pidfd is not None else []), [], [],
                                  None if pidfd is not None else 0.1)[0]
            for fd in watch[:]:
                if fd in ready and not copy(fd):
                    watch.remove(fd)
            if pidfd in ready if pidfd is not None else process_state(pid) in (None, "Z"):
                # Its pid namespace ended with it: what the pipes hold is the last of it
                # (a process outside it that holds them is not waited for).
                for fd in watch:
                    os.set_blocking(fd, False)
                    try:
                        while copy(fd):
                            pass
                    except BlockingIOError:  # held open elsewhere: its unended line too
                        if streams[fd][2]:
                            log.write(streams[fd][1], streams[fd][2])
                break
    finally:
        log.close()
        for fd in pipes:
            os.close(fd)
        if pidfd is not None:
            os.close(pidfd)
    return _wait_exit(pid)


def _proxy_tty(pid, master, interactive, log=None):
    """Copy between our terminal and the container's pty until the container exits; what
    it writes to its log too (a _JsonLog: all of it stdout, as docker's)."""
    import select
    import termios
    import tty
    saved = None
    if interactive and os.isatty(0):
        saved = termios.tcgetattr(0)
        tty.setraw(0)
    size = get_winsize(0) or get_winsize(1)
    if size:
        set_winsize(master, *size)
    pidfd = pidfd_open(pid)
    pending = [b""]  # the log's line not ended yet

    def out(data):
        write_all(1, data)
        if log is not None:
            pending[0] = log.records("stdout", pending[0] + data)
    watch = [master, 0] if interactive else [master]
    if pidfd is not None:
        watch.append(pidfd)
    try:
        while True:
            try:
                ready = select.select(watch, [], [], None if pidfd is not None else 0.1)[0]
            except InterruptedError:
                continue
            if master in ready:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                if not data:
                    break
                out(data)
            if 0 in ready:
                data = os.read(0, 65536)
                if data:
                    os.write(master, data)
                else:
                    watch.remove(0)
                    os.write(master, b"\x04")  # end of input, as ^D would say
            if pidfd in ready if pidfd is not None else process_state(pid) in (None, "Z"):
                os.set_blocking(master, False)
                try:
                    while True:
                        data = os.read(master, 65536)
                        if not data:
                            break
                        out(data)
                except OSError:
                    pass
                break
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        if pidfd is not None:
            os.close(pidfd)
        if log is not None:
            if pending[0]:
                log.write("stdout", pending[0])
            log.close()
    return _wait_exit(pid)


def cmd_run(a, g):
    if a.rootfs and not a.dashdash and a.target is not None:
        # docker's order, the rootfs for the image: `run --rootfs DIR CMD...` (the id by
        # --name, or before a bare --: `run --rootfs DIR ID -- CMD...`)
        a.target, a.args = None, [a.target] + a.args
    try:
        return _run(a, g)
    except Error as e:
        if e.code == 1 and (a.rootfs or not a.bundle and a.target is not None and
                                 not os.path.exists("config.json")):
            e.code = 125  # docker's run: its own failure, not the container's (126, 127)
        raise


SCM_MAX_FD = 253  # the fds that one message of a unix socket may carry (include/net/scm.h)


def check_preserved_fds(count, detach=False):
    """--preserve-fds N: fds 3 to 3+N-1 are open (the init would fail at making a missing one
    inheritable: a bare "Bad file descriptor"); run -d hands them to the monitor with stdin,
    stdout and stderr in one message, and the kernel passes SCM_MAX_FD (253) fds at most."""
    if detach and count > SCM_MAX_FD - 3:
        raise Error("run -d --preserve-fds %d: at most %d (the fds are handed to the "
                    "monitor with stdin, stdout and stderr, and the kernel passes %d fds at "
                    "most)" % (count, SCM_MAX_FD - 3, SCM_MAX_FD))
    for fd in range(3, 3 + count):
        try:
            os.fstat(fd)
        except OSError:
            raise Error("--preserve-fds %d: fd %d is not open (the fds passed are 3 to %d)"
                        % (count, fd, 2 + count)) from None


def _run(a, g):
    check_preserved_fds(a.preserve_fds, a.detach and not a.console_socket)
    if a.detach and not a.console_socket and _MONITOR.get("channel") is None:
        # docker's -d: the state root's monitor runs it, in a child of its own, so that the
        # container's init is the monitor's (which records its exit and restarts it), and
        # nothing of the caller's session holds it. Its output and errors are the caller's.
        umask = os.umask(0o22)
        os.umask(umask)
        return _monitor_request(g.root, {"run": g.argv, "cwd": os.getcwd(), "umask": umask,
                                         "env": dict(os.environ)},
                                [0, 1, 2] + list(range(3, 3 + a.preserve_fds)))
    run = run_config(a)
    config, bundle, cid, image = run.config, run.bundle, run.cid, run.image
    if cid and a.name and cid != a.name:
        raise Error("run: two ids given (%s and --name %s)" % (cid, a.name))
    cid = a.name or cid or os.urandom(6).hex()
    layers, carry, created = _carried(image, cid)
    made = []  # the anonymous volumes this run made: removed if it fails
    if run.volumes:
        created = created or timestamp()  # (names its anonymous volumes: kept on restarts)
        made = _run_volumes(run, os.path.abspath(os.path.join(g.root, cid)), created,
                            layers)
    # as asked, before create adds mounts of its own; a bundle's run is runc's: no record
    record = run_record(run) if image is not None or a.rootfs else None
    if image is not None and not config.get("hostname"):
        # the container's name, as docker names it (its id); with the host's network the
        # host's name, as docker's
        config["hostname"] = os.uname().nodename if network_mode(a) == "host" else cid[:63]
    terminal = config["process"].get("terminal")
    if terminal and not a.console_socket and "consoleSize" not in config["process"]:
        # The pty gets our terminal's size before the program starts, not after (a race).
        size = get_winsize(0) or get_winsize(1)
        if size:
            config["process"]["consoleSize"] = {"height": size[0], "width": size[1]}
    console = a.console_socket or ("self" if terminal else None)
    preserve_fds = socket_activation(config["process"]) + a.preserve_fds
    # The output of a docker-like container goes to its json-file log: run -d's through
    # pipes to the monitor, which writes the log, never to the caller (whose $(...) would
    # wait for the container to end); a kept foreground one's through us, to our stdout and
    # stderr and to the log (a terminal's: its pty's, to ours and to the log).
    docker_like, monitor = bool(image or a.rootfs), _MONITOR.get("channel")
    logged = docker_like and not a.detach and not a.rm and monitor is None
    relay = logged and not terminal
    to_monitor = docker_like and a.detach and not terminal and monitor is not None
    pipes = [os.pipe(), os.pipe()] if relay or to_monitor else None
    try:
        c = Container.create(cid, config, bundle, g.root, console=console,
                             stdin_null=not a.interactive and bool(image or a.rootfs),
                             pid_file=a.pid_file, cgroup_parent=a.cgroup_parent,
                             debug=g.debug, preserve_fds=preserve_fds,
                             overlay=layers, carry=carry, image=image and image.digest,
                             network=run.network, etc_files=run.etc_files,
                             log=pipes and (pipes[0][1], pipes[1][1]), no_pivot=a.no_pivot,
                             # slirp4netns ends with us, or with the monitor we hand it to;
                             # with nobody's (-d --console-socket), ps and gc end it
                             network_owner=not a.detach or monitor is not None)
    except BaseException:
        for r, _ in pipes or []:
            os.close(r)
        _remove_volumes(made)
        raise
    finally:  # the container's now, and no other's: the monitor sees their end with it
        for _, w in pipes or []:
            os.close(w)
    # docker's semantics for images and rootfs directories: without --rm, the stopped
    # container and its changes stay until `delete`; runc's for a bundle: run removes it.
    keep = not a.rm and (image is not None or bool(a.rootfs) or a.keep)
    try:
        network_publish(c)
        if not a.detach:
            _forward_signals(c.pid, c.console_master)
        debug_step("start")
        try:
            c.start()
        except Error:
            # The init died after create: its own word on why (sent before it died) says
            # more than "stopped".
            err = c.exec_result() if c.status() == "stopped" else None
            if err:
                raise err from None
            raise
        debug_step("started")
        err = c.exec_result()
        if err:
            raise err
        debug_step("running")
        if image is not None or a.rootfs:  # docker-like: its readers want the records
            with c.lock():
                # a container the user keeps, not a crash's debris: gc leaves it
                c.state.update(_start_record(run, g, keep, logged), keep=keep, run=record)
                if created:  # made again by its monitor: docker's Created is the first's
                    c.state["created"] = created
                anonymous = [volume_dir(v["name"]) for v in run.volumes if v.get("anonymous")]
                if anonymous and not keep:  # --rm: they go with it (Container._remove)
                    c.state["remove_with"] = anonymous
                c.save()
    except BaseException:
        for r, _ in pipes or []:
            os.close(r)
        try:
            c.destroy()
        except NotFound:
            pass  # start removed it (a failing poststart hook)
        _remove_volumes(made)
        raise
    if a.detach:
        # the monitor logs what the container writes: on its pipes, or on its terminal
        output = [r for r, _ in pipes or []] or [c.console_master]
        try:
            _monitor_watch(c, run, [fd for fd in output if fd is not None], c.network_exit)
        finally:
            for fd in output + [c.network_exit]:
                if fd is not None:
                    os.close(fd)
            if docker_like:  # docker's run -d says the id; runc's says nothing (its stdout
                print(cid, flush=True)  # may be the container's)
        return 0
    pid, start, code = c.pid, c.state.get("start_time"), None
    try:
        log = _JsonLog(c.log, run.log_opts["max_size"], run.log_opts["max_file"]) \
            if logged else None
        if c.console_master is not None:
            code = _proxy_tty(c.pid, c.console_master, a.interactive, log)
        elif relay:
            code = _relay_output(c.pid, [r for r, _ in pipes], log)
        else:
            code = _wait_exit(c.pid)
    finally:
        if keep:
            c.stopped(None if code is None else lambda c: _exit_record(c, pid, start, code))
        else:
            c.destroy()
    return code


def run_record(run):
    """What ps and inspect show of how a docker-like container was asked for: the image as
    typed, its entrypoint and command, the user, the mounts and ports of the flags."""
    a, image = run.a, run.image
    ic = (image.config or {}) if image is not None else {}
    if a.entrypoint is not None:
        entrypoint, cmd = [a.entrypoint] if a.entrypoint else None, a.args
    elif image is not None:
        entrypoint, cmd = ic.get("Entrypoint") or None, a.args or ic.get("Cmd")
    else:
        entrypoint, cmd = None, run.process.get("args")
    return {"image": a.target if image is not None else "", "entrypoint": entrypoint,
            "cmd": cmd, "user": a.user or ic.get("User") or "",
            "binds": [v for v in a.volume if ":" in v] or None, "volumes": _volumes_record(run),
            "mounts": json.loads(json.dumps(run.config.get("mounts", [])[run.own_mounts:])),
            "network": network_mode(a), "privileged": a.privileged, "init": a.init}


class RunResult:
    """What run() returns: the container's exit status and output."""

    def __init__(self, exit_code, stdout, stderr):
        self.exit_code, self.stdout, self.stderr = exit_code, stdout, stderr

    def __repr__(self):
        return "RunResult(exit_code=%r, stdout=%r, stderr=%r)" % (
            self.exit_code, self.stdout, self.stderr)


def runtime_command():
    """This runtime as a program, started as the shell line at the top of the file starts
    it (its code taken from there), with this interpreter: the module's bytecode is cached,
    where `python3 minicontainer.py` compiles the whole file at every start (100 ms)."""
    path = os.path.realpath(__file__)
    with open(path) as f:
        boot = f.read(1000).split(" -c '", 1)[1].split("' \\\n", 1)[0].replace("\\\n", "")
    return [sys.executable, "-I", "-S", "-c", boot, path]


def run(image, args=(), flags=(), root=None, rm=True, input=None, timeout=None):
    """docker run from Python: a container from `image` (pulled if the store lacks it) runs
    `args` (the image's command if empty) with run's command-line `flags` (["-e", "A=1",
    "-m", "64m"]); returns a RunResult once it exits, its stdout and stderr captured (text).
    The runtime runs as a program of its own, so that the caller's signals, stdio and
    threads are left alone; rm=False keeps the stopped container, as `run` without --rm."""
    import subprocess
    cmd = runtime_command() + (["--root", root] if root else []) \
        + ["run"] + (["--rm"] if rm else []) + list(flags) + [image] \
        + (["--"] + list(args) if args else [])
    r = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout,
                       stdin=None if input is not None else subprocess.DEVNULL)
    return RunResult(r.returncode, r.stdout, r.stderr)


# ---- detached containers: the exit records, the monitor, logs, restart ----

def _start_record(run, g, keep, logged=False):
    """What state.json says of a container that started (the exit's fields come later):
    read by ps, inspect, wait, stop and the monitor. logged: a foreground one's output goes
    to its log too."""
    record = {"started_at": timestamp(), "restart_count": _MONITOR.get("restart_count", 0),
              "stop_signal": run.stop_signal, "stop_timeout": run.stop_timeout}
    detached = run.a.detach and _MONITOR.get("channel") is not None
    if detached:
        record.update(restart_policy=run.restart)
    if detached or logged:
        record.update(log_opts=run.log_opts)
    if detached or keep:
        # what the monitor needs to restart it (`restart`, or its policy), also after a
        # restart of the monitor; a kept foreground container comes back detached (docker's)
        record.update(relaunch={"argv": g.argv, "cwd": os.getcwd()})
    return record


def _carried(image, cid):
    """What a container that the monitor makes again keeps of its previous life: (its
    layers, the directory with its writable layer for Container.create's carry, its
    creation time). Its layers are those it had while the store holds them (its image may
    be tagged anew since: the container stays what it was, as docker's)."""
    layers, carry = (image.layers if image is not None else None), _MONITOR.get("carry")
    try:
        with open(os.path.join(carry, "life.json")) as f:
            life = json.load(f)
    except (TypeError, OSError, ValueError):
        return layers, None, None
    if image is None or not life.get("layers"):
        return layers, None, life.get("created")
    if all(os.path.isdir(layer) for layer in life["layers"]):
        return life["layers"], carry, life.get("created")
    warn("the layers of %s are no longer stored: it starts from %s as it is now, without "
         "its changes" % (cid, image.name))
    return layers, None, life.get("created")


def _exit_record(c, pid, start_time, code):
    """Under c's lock: record the exit of its init (pid, start_time) with status `code`,
    unless c is now another container of that id. Returns whether it did."""
    if c.pid != pid or c.state.get("start_time") != start_time:
        return False
    cg = c.cgroup
    # an exit not seen (code None: a monitor's that was killed) is when `stop` saw it
    c.state.update(finished_at=code is None and c.state.get("stopped_at") or timestamp(),
                   exit_code=code,
                   oom_killed=bool(cg and cg.oom_killed()))
    c.save()
    return True


_MONITOR = {}  # in a child of the monitor running a `run -d`: its channel to the monitor
MONITORS = "/run/minicontainer-monitors"
MONITOR_LOCK, MONITOR_SOCKET = "monitor", "monitor.sock"  # its lock holds its pid
# A client connects then sends at once: one that does not (stopped by Ctrl-Z) is dropped
# after this many seconds, not waited for by the loop that serves every container.
MONITOR_REQUEST_WAIT = 5
MONITOR_MAX_FDS = SCM_MAX_FD  # stdio and run -d --preserve-fds N (check_preserved_fds)
# The monitor is a new interpreter that imports this file, named by its path (as the runtime
# is: `gc` and tests find it so), with its state root.
MONITOR_MAIN = ("import os, sys; sys.path.insert(0, os.path.dirname(sys.argv[1])); "
                "import minicontainer; minicontainer._Monitor(sys.argv[2]).serve()")


def runtime_identity():
    """Which runtime this is, as the monitor compares it with its callers': the real path
    of this file and what changes when it is installed anew."""
    path = os.path.realpath(__file__)
    st = os.stat(path)
    return [path, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size]


def monitor_dir(root):
    """Where the monitor of a state root keeps its lock and socket: not in the state root,
    whose entries are containers (and a socket's path there could be too long)."""
    import hashlib
    monitors = os.path.join(rootless_runtime_dir(for_monitor=True), "minicontainer-monitors") \
        if unprivileged() else MONITORS
    check_own_dir(monitors, "where the monitors of run -d keep their sockets", unprivileged())
    return os.path.join(monitors, hashlib.sha256(os.path.realpath(root).encode()).hexdigest()[
        :32])


def _monitor_request(root, request, fds=()):
    """Hand a request to the monitor of a state root, starting it if none runs; returns the
    exit status it answers (that of the `run -d` it ran for us). A request the monitor did
    not take (it dropped us before we sent: we were stopped; it retired: it runs another
    runtime than ours) is sent again, to another monitor if need be. request["runtime"]:
    ours unless given (None: whichever runtime the monitor runs)."""
    import socket
    os.makedirs(root, mode=0o711, exist_ok=True)
    path = os.path.join(monitor_dir(root), MONITOR_SOCKET)
    request = dict(request, fds=len(fds))
    if "runtime" not in request:
        request["runtime"] = runtime_identity()
    data = json.dumps(request).encode()
    for _ in range(5):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        with sock:
            gate = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                # A monitor with nothing left to watch leaves only while no request is on
                # its way (see _Monitor.leave): then the next request starts another.
                fcntl.flock(gate, fcntl.LOCK_SH)
                for attempt in range(5):
                    try:
                        sock.connect(path)
                        break
                    except (FileNotFoundError, ConnectionRefusedError):
                        if attempt == 4:
                            raise Error("the monitor of %s does not start" % root) from None
                        _start_monitor(root)  # (or a gc held its lock: then again)
                try:
                    socket.send_fds(sock, [data], list(fds))
                except (BrokenPipeError, ConnectionResetError):
                    continue  # it closed the connection before we sent: nothing was taken
            finally:
                os.close(gate)
            try:
                answer = sock.recv(4096)
            except ConnectionResetError:
                continue  # closed with our request unread: not taken
        if not answer:
            raise Error("the monitor of %s ended before it answered" % root)
        code = _monitor_answer(root, answer)
        if code is not None:
            return code
    raise Error("the monitor of %s does not take the request" % root)


def _monitor_answer(root, answer):
    """The exit status in the monitor's answer (None: it retired, and did not take the
    request); an Error for a refusal, or for what is not an answer (a broken or foreign
    monitor's): one line, never a traceback."""
    try:
        answer = json.loads(answer)
        if answer.get("retired") is True:
            return None
        if "error" in answer:
            raise Error("the monitor of %s refused the request: %s" % (root, answer["error"]))
        code = answer["code"]
        if type(code) is int:
            return code
    except (ValueError, TypeError, KeyError, AttributeError):
        pass
    raise Error("the monitor of %s answered what is not an answer: %.60r" % (root, answer))


def _start_monitor(root):
    """Start the state root's monitor: a new interpreter (it holds little), in a session
    of its own, not our child; returns once it listens (or lost the race to another)."""
    r, w = os.pipe()
    pid = fork()
    if pid == 0:
        try:
            os.setsid()  # the caller's terminal, session and SIGHUP are not its
            if fork() == 0:
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                os.dup2(w, 3)  # closed when it listens
                os.closerange(4, os.sysconf("SC_OPEN_MAX"))
                os.chdir("/")  # holds no mount of the caller's busy
                # the caller's debug hooks are not to act on the restarts of others
                env = {k: v for k, v in os.environ.items() if not k.startswith(
                    ("MINICONTAINER_DEBUG_", "MINICONTAINER_TRACE"))}
                os.execve(sys.executable, [sys.executable, "-I", "-S", "-c", MONITOR_MAIN,
                                           os.path.realpath(__file__), os.path.abspath(root)],
                          env)
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    with open(r, "rb") as f:
        f.read()


def _monitor_child(pid, root):
    """Whether pid is the child of a monitor of root (or of one of its workers, forked from
    it): that monitor (one that retired) watches it."""
    try:
        with open("/proc/%s/cmdline" % int(proc_stat(pid)[1]), "rb") as f:
            argv = f.read().split(b"\0")
    except (OSError, TypeError, ValueError):
        return False
    return len(argv) > 6 and b"minicontainer._Monitor(" in argv[4] and \
        os.path.realpath(argv[6]) == os.path.realpath(root).encode()


class _JsonLog:
    """docker's json-file log: a JSON object a line ({"log", "stream", "time"}), rotated
    by size: container.log, then container.log.1 ... .N-1, oldest last."""

    def __init__(self, path, max_size, max_file):
        self.path, self.max_size, self.max_file = path, max_size, max_file
        self.fd = None

    def write(self, stream, data):
        line = (json.dumps({"log": data.decode("utf-8", "replace"), "stream": stream,
                            "time": timestamp()}) + "\n").encode()
        try:
            if self.fd is None:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND |
                                  os.O_CLOEXEC, 0o600)
                self.size = os.fstat(self.fd).st_size
            if self.size and self.size + len(line) > self.max_size:
                self.rotate()
            os.write(self.fd, line)
            self.size += len(line)
        except OSError:
            pass  # the container was removed meanwhile

    def records(self, stream, buf):
        """Write buf's whole lines as records of stream (a line longer than 16 KiB in
        pieces, as docker's); return the rest, a line not ended yet."""
        while True:
            cut = buf.find(b"\n") + 1 or (16384 if len(buf) >= 16384 else 0)
            if not cut:
                return buf
            self.write(stream, buf[:cut])
            buf = buf[cut:]

    def rotate(self):
        self.close()
        for i in range(self.max_file - 1, 0, -1):
            try:
                os.rename(self.path if i == 1 else "%s.%d" % (self.path, i - 1),
                          "%s.%d" % (self.path, i))
            except FileNotFoundError:
                pass
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND |
                          os.O_CLOEXEC, 0o600)
        self.size = 0

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def log_files(c):
    """A container's json-file log, oldest file first."""
    rotated = [name for name in _listdir(c.dir) if name.startswith("container.log.") and
               name.rpartition(".")[2].isdigit()]
    rotated.sort(key=lambda name: -int(name.rpartition(".")[2]))
    return [os.path.join(c.dir, name) for name in rotated] + [c.log]


def _listdir(path):
    try:
        return os.listdir(path)
    except OSError:
        return []


def _monitor_watch(c, run, pipes, network_exit=None):
    """In the monitor's child that ran `run -d`: hand the container (its init is ours, the
    monitor's once we exit), the read ends of its output's pipes and the end of its
    slirp4netns's --exit-fd (held until the container ends) to the monitor."""
    import socket
    channel = _MONITOR.get("channel")
    if channel is not None:
        socket.send_fds(channel, [json.dumps({
            "id": c.id, "pid": c.pid, "start_time": c.state.get("start_time"),
            "rm": run.a.rm, "log_opts": run.log_opts,
            "network_exit": network_exit is not None}).encode()],
            pipes + ([network_exit] if network_exit is not None else []))


class _Monitor:
    """The monitor of a state root's detached containers: one process for all of them.

    Each `run -d` runs in a child of it (which exits once the container started), so that
    every init is its child (it is a subreaper): it reaps them and records their exit in
    state.json, even when nobody waits; it writes their output, read from pipes, to their
    json-file logs; it removes --rm ones, and restarts those whose --restart policy says so.
    It leaves with the last container. A crashed one leaves a socket the next one removes,
    and containers that the next one adopts (see adopt)."""

    def __init__(self, root):
        import select
        import socket
        self.root, self.dir = root, monitor_dir(root)
        self.identity, self.retired = runtime_identity(), False
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        lock = os.path.join(self.dir, MONITOR_LOCK)
        while True:
            self.lock = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os._exit(0)  # another one runs, or starts: the caller connects to it
            try:
                if os.path.samestat(os.fstat(self.lock), os.stat(lock)):
                    break
            except FileNotFoundError:
                pass
            os.close(self.lock)  # the file of one that left (and removed it): again
        os.ftruncate(self.lock, 0)
        os.write(self.lock, b"%d\n" % os.getpid())
        self.path = os.path.join(self.dir, MONITOR_SOCKET)
        try:
            os.unlink(self.path)  # a crashed monitor's
        except FileNotFoundError:
            pass
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET |
                                      socket.SOCK_CLOEXEC)
        self.listener.bind(self.path)
        self.listener.listen(64)
        prctl(PR_SET_CHILD_SUBREAPER, 1)  # the inits whose runtime (our child) exited
        for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_IGN)
        wake, self.wake = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.poll = select.poll()
        self.handlers = {}
        self.watch(self.listener.fileno(), self.accept)
        self.watch(wake, lambda fd: os.read(fd, 4096))
        self.workers = {}  # pid: [client socket or None, channel, request]
        self.containers = {}  # init pid: what we know of it
        self.ended = {}  # pid: wait status, of a child not known (yet)
        self.timers = []  # [monotonic time, function]
        self.saved_logs = {}  # container id: the log of a container being restarted
        self.helpers = set()  # pids of our children that hand a restart over (see retire)
        os.close(3)  # the starter's pipe: we listen
        self.adopt()

    def adopt(self):
        """The detached containers of a monitor that died (killed, or out of memory): their
        inits are nobody's child that we know, so we learn of their end through a pidfd,
        without its exit status (recorded as unknown: ps says `Exited`, inspect's ExitCode
        is null); then --rm and --restart act as they would have. Those that ended while no
        monitor ran are recorded so now. Their output had only the dead monitor to go to."""
        for c in Container.list(self.root):
            if "log_opts" not in c.state or "finished_at" in c.state or not c.pid:
                continue  # not a detached one's, or its end is recorded
            if _monitor_child(c.pid, self.root):
                continue  # a monitor that retired watches it
            run = c.state.get("relaunch") or {}
            e = {"id": c.id, "pid": c.pid, "start_time": c.state.get("start_time"),
                 "rm": not c.state.get("keep"), "pipes": {}, "log": None,
                 "since": time.monotonic(), "request": {
                     "run": run.get("argv", []), "cwd": run.get("cwd", "/"),
                     "env": dict(os.environ)}}
            pidfd = pidfd_open(c.pid) if c.alive() else None
            if pidfd is not None and not c.alive():
                os.close(pidfd)  # it ended meanwhile
                pidfd = None
            self.containers[c.pid] = e
            if pidfd is None:
                self.guarded(self.exited, e, None)
                continue
            self.watch(pidfd, lambda fd, e=e: self.orphan_exited(e, fd))

    def orphan_exited(self, e, pidfd):
        self.unwatch(pidfd)
        os.close(pidfd)
        self.exited(e, None)

    def watch(self, fd, handler):
        import select
        self.handlers[fd] = handler
        self.poll.register(fd, select.POLLIN)

    def unwatch(self, fd):
        self.poll.unregister(fd)
        del self.handlers[fd]

    def guarded(self, fn, *args):
        """A mistake of ours about one container must not end the monitor of all."""
        import traceback
        try:
            fn(*args)
        except Exception:
            traceback.print_exc()  # on our stderr: /dev/null, or whoever debugs us

    def serve(self):
        while True:
            timeout = None
            if self.timers:
                timeout = max(0, (min(t[0] for t in self.timers) - time.monotonic()) * 1000)
            elif not self.workers and not self.containers and not self.helpers and \
                    self.leave():
                return
            try:
                events = self.poll.poll(timeout)
            except InterruptedError:
                events = []
            for fd, _ in events:
                if fd in self.handlers:
                    self.guarded(self.handlers[fd], fd)
            self.reap()
            now = time.monotonic()
            for timer in [t for t in self.timers if t[0] <= now]:
                self.timers.remove(timer)
                self.guarded(timer[1])

    def leave(self):
        """Whether we may go: nothing to watch, and no request on its way (its sender
        holds a shared lock on the state root from before it connects until it sent)."""
        if self.retired:
            return True  # requests are another monitor's, as are the lock and socket
        try:
            gate = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return True  # the state root is gone
        try:
            fcntl.flock(gate, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(gate)
            return False
        try:
            self.listener.setblocking(False)
            try:
                self.accept(None)  # sent before we locked: served
                return False
            except BlockingIOError:
                _remove_monitor_files(self.dir)  # the lock is ours: we hold it
                return True
            finally:
                self.listener.setblocking(True)
        finally:
            os.close(gate)

    def accept(self, _):
        """A client: its request is read when it comes, in the loop; one that sends nothing
        in time is dropped (its request, sent later, fails: it was not taken)."""
        conn, _ = self.listener.accept()
        conn.setblocking(False)
        timer = [time.monotonic() + MONITOR_REQUEST_WAIT, lambda: self.drop(conn)]
        self.timers.append(timer)
        self.watch(conn.fileno(), lambda fd: self.received(conn, timer))

    def retire(self):
        """A caller runs another runtime (another install, a fix since we started): none of
        its requests is served by our code. We stop being the state root's monitor (the
        caller starts a new one, which adopts none of ours: adopt), and only watch the
        containers we have until they end: their output, their exits; a restart of theirs
        (their policy) is made by the new monitor (hand_over)."""
        if self.retired:
            return
        self.retired = True
        self.unwatch(self.listener.fileno())
        try:
            os.unlink(self.path)  # ours: we hold the lock
        except FileNotFoundError:
            pass
        self.listener.close()  # a client it held but we did not accept asks again
        os.close(self.lock)  # a new monitor may start
        for e in self.containers.values():
            conn, fds = e.pop("restart_for", None) or (None, ())
            for fd in fds:
                os.close(fd)
            self.answer(conn, None)

    def hand_over(self, cid, request, restart_count):
        """Once we retired: the restart of a container of ours (its policy) asked of the
        monitor that runs now, by a child of ours (our loop goes on meanwhile)."""
        pid = fork()
        if pid == 0:
            code = 255
            try:
                signal.set_wakeup_fd(-1)
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                os.closerange(3, os.sysconf("SC_OPEN_MAX"))
                cold_code_fds_closed()
                code = _monitor_request(self.root, {
                    "restart": cid, "env": request["env"], "runtime": None,
                    "restart_count": restart_count, "quick": request.get("quick", 0)},
                    [0, 1, 2])
            finally:
                os._exit(code)
        self.helpers.add(pid)

    def drop(self, conn):
        self.unwatch(conn.fileno())
        conn.close()

    def received(self, conn, timer):
        import socket
        self.unwatch(conn.fileno())
        self.timers.remove(timer)
        try:
            # one fd more than a request may carry, to see one that carries too many
            msg, fds, flags, _ = socket.recv_fds(conn, 1 << 18, MONITOR_MAX_FDS + 1)
        except OSError:
            conn.close()
            return
        try:
            request = json.loads(msg)
            why = _monitor_refusal(request, fds, flags)
        except ValueError:
            request, why = None, "not JSON"
        if why is None and (self.retired or request.get("runtime") not in (
                None, self.identity)):
            for fd in fds:
                os.close(fd)
            self.retire()
            self.answer(conn, None)
        elif why is not None:
            for fd in fds:
                os.close(fd)
            self.answer(conn, 125, why)
        elif "run" in request:
            self.spawn(request, fds, conn)
        else:
            self.restart(request, fds, conn)

    def answer(self, conn, code, error=None):
        """code None: we retired, the request was not taken (the caller asks another)."""
        if conn is not None:
            try:
                conn.send(json.dumps({"retired": True} if code is None else {"code": code}
                                     if error is None else
                                     {"code": code, "error": error}).encode())
            except OSError:
                pass  # the caller left
            conn.close()

    def spawn(self, request, fds, conn, restart_count=0):
        """Run request["run"] (a `run -d` command line) in a child of ours, with the
        caller's fds as its stdio (and preserved fds), cwd, umask and environment."""
        import socket
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            pid = fork()
        except OSError as e:
            for fd in fds:
                os.close(fd)
            self.answer(conn, 125, "cannot run it: %s" % e.strerror)
            return
        if pid == 0:
            code = 255
            try:
                signal.set_wakeup_fd(-1)
                for sig in (signal.SIGCHLD, signal.SIGHUP, signal.SIGINT, signal.SIGQUIT,
                            signal.SIGPIPE):
                    signal.signal(sig, signal.SIG_DFL)
                high = [os.dup(fd) for fd in fds]
                for i, fd in enumerate(high):
                    os.dup2(fd, i)
                channel = os.dup(theirs.fileno())
                os.closerange(len(high), channel)
                os.closerange(channel + 1, os.sysconf("SC_OPEN_MAX"))
                cold_code_fds_closed()
                _MONITOR.update(channel=socket.socket(fileno=channel),
                                restart_count=restart_count, carry=request.get("carry"))
                os.chdir(request["cwd"])
                os.umask(request.get("umask", 0o22))
                os.environ.clear()
                os.environ.update(request["env"])
                code = main(request["run"])
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        theirs.close()
        for fd in fds:
            os.close(fd)
        self.workers[pid] = [conn, ours, request]
        self.watch(ours.fileno(), lambda fd: self.registered(pid))

    def registered(self, worker):
        """A container that our child `worker` started: watch its init and output."""
        import shutil
        import socket
        channel = self.workers[worker][1]
        try:
            msg, fds, _, _ = socket.recv_fds(channel, 65536, 3)
        except BlockingIOError:
            return False
        if not msg:
            if channel.fileno() in self.handlers:
                self.unwatch(channel.fileno())
            return False
        info = json.loads(msg)
        c = Container(info["id"], self.root)
        saved = self.saved_logs.pop(c.id, None)
        if saved:  # a restarted container's log goes on
            for name in _listdir(saved):
                if name.startswith("container.log"):
                    os.rename(os.path.join(saved, name), os.path.join(c.dir, name))
            shutil.rmtree(saved, ignore_errors=True)  # and a writable layer not taken
        opts = info["log_opts"]
        e = dict(info, request=self.workers[worker][2], since=time.monotonic(), pipes={},
                 log=_JsonLog(c.log, opts["max_size"], opts["max_file"]),
                 network_exit=fds.pop() if info.get("network_exit") and fds else None)
        self.containers[info["pid"]] = e
        for fd, stream in zip(fds, ("stdout", "stderr")):
            os.set_blocking(fd, False)
            e["pipes"][fd] = [stream, b""]
            self.watch(fd, lambda fd, e=e: self.output(e, fd))
        if info["pid"] in self.ended:
            self.exited(e, self.ended.pop(info["pid"]))
        return True

    def output(self, e, fd, drain=False):
        """Read what the container wrote on a pipe: each line a record of its log (a line
        longer than 16 KiB in pieces, as docker's); at its end, the rest."""
        stream, buf = e["pipes"][fd]
        while True:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                data = None
            except OSError:
                data = b""
            if data:
                buf = e["log"].records(stream, buf + data)
            if data == b"":
                if buf:
                    e["log"].write(stream, buf)
                self.unwatch(fd)
                os.close(fd)
                del e["pipes"][fd]
                return
            e["pipes"][fd][1] = buf
            if not drain or data is None:
                return

    def reap(self):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.workers:
                conn, channel, _ = self.workers[pid]
                channel.setblocking(False)
                while self.registered(pid):
                    pass  # what it said before it exited
                if channel.fileno() in self.handlers:
                    self.unwatch(channel.fileno())
                channel.close()
                del self.workers[pid]
                self.answer(conn, exit_status(status))
                if not self.workers:
                    self.ended.clear()  # none can be registered any more
            elif pid in self.helpers:
                self.helpers.discard(pid)
            elif pid in self.containers:
                self.guarded(self.exited, self.containers[pid], status)
            else:
                self.ended[pid] = status

    def exited(self, e, status):
        """Its init exited (with a wait status, None when not known): the rest of its output,
        then the record of its exit in state.json; then remove it (--rm) or restart it (as
        its policy or `restart` says)."""
        try:
            self._exited(e, status)
        finally:
            # a `restart` waiting for this exit, not made again (removed, another container
            # of that id now, a mistake of ours): answered, its fds not kept
            conn, fds = e.pop("restart_for", None) or (None, ())
            for fd in fds:
                os.close(fd)
            self.answer(conn, 1, "%s was not made again" % e["id"])

    def _exited(self, e, status):
        del self.containers[e["pid"]]
        if e.get("network_exit") is not None:  # slirp4netns ends with the container
            os.close(e.pop("network_exit"))
        for fd in list(e["pipes"]):
            self.output(e, fd, drain=True)
            if fd in e["pipes"]:  # still open in a process of the container: what it wrote
                stream, buf = e["pipes"].pop(fd)
                if buf:
                    e["log"].write(stream, buf)
                self.unwatch(fd)
                os.close(fd)
        if e["log"] is not None:
            e["log"].close()
        code = exit_status(status) if status is not None else None
        try:
            c = Container.load(e["id"], self.root)
            if e["rm"]:
                with c.lock():  # a container of the same id made since is not ours
                    if c.pid == e["pid"] and c.state.get("start_time") == e["start_time"]:
                        c._remove(quiet=True)
                return

            def record(c):
                e["recorded"] = _exit_record(c, e["pid"], e["start_time"], code)
                return e["recorded"]
            c.stopped(record)
        except Error:
            return  # removed meanwhile
        if not e.get("recorded"):
            return
        count = c.state.get("restart_count", 0)
        if e.get("restart_for"):  # the `restart` verb's: at once, not counted (as docker)
            self.recreate(c.id, e["request"], count, *e.pop("restart_for"))
        elif _restarts(c.state, code):
            # docker's back-off: 100 ms, doubled at each restart of one that ran < 10 s
            quick = 0 if time.monotonic() - e["since"] >= 10 else \
                e["request"].get("quick", 0) + 1
            delay = 0.1 * 2 ** min(max(quick - 1, 0), 9)
            self.timers.append([time.monotonic() + delay, lambda: self.recreate(
                c.id, dict(e["request"], quick=quick), count + 1)])

    def recreate(self, cid, request, restart_count, conn=None, fds=None):
        """A new init for a stopped container: the container is made again from its `run`
        command line, of the same id; its log goes on, and its writable layer with the
        layers under it (_carried) are kept, as docker keeps a container's files."""
        import tempfile
        if self.retired and conn is None:
            self.hand_over(cid, request, restart_count)
            return
        try:
            c = Container.load(cid, self.root)
            if c.status() != "stopped":
                raise Error("restart: %s is %s" % (cid, c.status()))
            # before anything of it is taken apart: a port its `run` will not get
            _check_ports_free((c.state.get("network") or {}).get("publish"))
            saved = tempfile.mkdtemp(prefix=".restart-", dir=self.root)
            for name in _listdir(c.dir):
                if name.startswith("container.log"):
                    os.rename(os.path.join(c.dir, name), os.path.join(saved, name))
            self.saved_logs[cid] = saved
            ov = c.state.get("overlay") or {}
            layer = {"overlay": "upper", "fuse-overlayfs": "upper",
                     "copy": "rootfs"}.get(ov.get("mode"))
            write_atomic(os.path.join(saved, "life.json"), json.dumps({
                "created": c.state.get("created"), "layers": ov.get("layers")}))
            if layer and os.path.isdir(os.path.join(c.dir, layer)):
                os.rename(os.path.join(c.dir, layer), os.path.join(saved, layer))
            request = dict(request, carry=saved)
            c.destroy(force=False)
        except Error as e:
            if conn is not None:
                try:
                    os.write(fds[2], b"minicontainer: %s\n" % str(e).encode())
                except (OSError, TypeError, IndexError):
                    pass
            for fd in fds or ():
                os.close(fd)
            self.answer(conn, 1)
            return
        argv = list(request["run"])
        at = _command_index(argv) + 1  # after `run`: detached, with the same id
        if argv[at:at + 3] != ["-d", "--name", cid]:
            argv[at:at] = ["-d", "--name", cid]
        null = [os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC) for _ in range(3)]
        self.spawn(dict(request, run=argv), fds or null, conn, restart_count)

    def restart(self, request, fds, conn):
        """The `restart` verb's: once the container is stopped (`restart` stopped it), make
        it again; the answer is the exit status of that `run -d`."""
        cid = request["restart"]
        for e in self.containers.values():
            if e["id"] == cid:  # its exit is not reaped yet: then
                e["restart_for"] = (conn, fds)
                return
        try:
            state = Container.load(cid, self.root).state
        except Error:
            state = {}
        run = state.get("relaunch") or {"argv": [], "cwd": "/"}
        # a retired monitor's hand-over of a restart by policy: counted, and its back-off
        self.recreate(cid, {"run": run["argv"], "cwd": run["cwd"], "env": request["env"],
                            "quick": request.get("quick", 0)},
                      request.get("restart_count", state.get("restart_count", 0)), conn, fds)


def _monitor_refusal(request, fds, flags=0):
    """Why the monitor does not take a request with these fds (None: it does). A request
    runs in a child whose fds 0 to N-1 are the ones given: each must be there."""
    import socket
    if flags & socket.MSG_CTRUNC or len(fds) > MONITOR_MAX_FDS:
        return "more than %d fds" % MONITOR_MAX_FDS
    if not isinstance(request, dict):
        return "not a request"
    env = request.get("env")
    if not isinstance(env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        return "no environment"
    if "run" in request:
        if not isinstance(request["run"], list) or not all(
                isinstance(arg, str) for arg in request["run"]) or not isinstance(
                request.get("cwd"), str) or type(request.get("umask", 0)) is not int:
            return "not a run command line"
    elif "restart" in request:
        if not isinstance(request["restart"], str) or not all(
                type(request.get(key, 0)) is int for key in ("restart_count", "quick")):
            return "not a container to restart"
    else:
        return "neither run nor restart"
    if not isinstance(request.get("runtime") or [], list):
        return "not a runtime"
    if len(fds) < 3 or len(fds) != request.get("fds", len(fds)):
        return "%d fds, not the %s it needs" % (len(fds), request.get("fds", "3 at least"))
    return None


def _restarts(state, code):
    """Whether a container that exited with `code` (None: not known, a failure) is restarted:
    its --restart policy, but never after `stop` (its "stopped_by_user"), as docker until
    its daemon restarts."""
    policy = state.get("restart_policy")
    if not policy or state.get("stopped_by_user"):
        return False
    name, _, most = policy.partition(":")
    if name == "on-failure":
        return code != 0 and (not most or state.get("restart_count", 0) < int(most))
    return name in ("always", "unless-stopped")


def cmd_gc(a, g):
    """Remove what crashes left: every container whose init is dead, but those the user
    kept (a docker-like run without --rm, once started: `prune` removes those) and those
    being created or deleted, whose state is locked; the processes that a create left
    behind; then what no container owns any more on the network side."""
    removed, live = [], set()
    holders = _fifo_holders(g.root)
    for c in Container.list(g.root):
        try:
            fd = os.open(c.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            c = Container.load(c.id, g.root)  # as it is now that it is ours
            if c.alive():
                live.add(c.id)  # its init holds the fifo until start
                continue
            if c.state.get("keep"):
                end_orphaned_slirp4netns(c, "stopped")
                continue  # a stopped container the user kept (run without --rm): prune's
            # Children of a create whose runtime died, not recorded (yet) or not in the
            # cgroup (yet): they go first.
            _kill_orphans(holders.pop(c.id, []))
            _umount_netns(os.path.join(c.dir, "netns"))  # a state torn before it said so
            c._remove(quiet=True)
            if not os.path.exists(c.dir):
                removed.append("container %s" % c.id)
        except BlockingIOError:
            live.add(c.id)  # being created, started or deleted: by a runtime and its children
        except Error:
            continue
        finally:
            os.close(fd)
    # What no state describes (a crash, an old gc). A holder of a live container's id (of an
    # earlier container of that id, or just opened by its runtime) waits for a later gc.
    for cid, procs in sorted(holders.items()):
        if cid not in live:
            removed.extend(_kill_orphans(procs, cgroup_name=cid))
    if not unprivileged():  # the bridge, its leases and its veths are root's
        network_gc(removed)
    removed.extend(_monitor_gc(g.root))
    for what in removed:
        print("removed", what)
    return 0


def _monitor_gc(root):
    """What a monitor that crashed left: its socket and lock, and the logs it kept aside
    in the state root for a restart (the next monitor would remove the socket too)."""
    import shutil
    d = monitor_dir(root)
    try:
        fd = os.open(os.path.join(d, MONITOR_LOCK), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # no monitor runs, nor starts
        removed = [os.path.join(d, MONITOR_SOCKET)] if os.path.exists(
            os.path.join(d, MONITOR_SOCKET)) else []
        _remove_monitor_files(d)
        for name in _listdir(root):
            if name.startswith(".restart-"):
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
                removed.append(os.path.join(root, name))
        return removed
    except BlockingIOError:
        return []
    finally:
        os.close(fd)


def _remove_monitor_files(d):
    """Under the monitor's lock: its socket, the lock itself (a monitor that opened it
    meanwhile finds it gone once it holds it, and tries again) and their directory."""
    for name in (MONITOR_SOCKET, MONITOR_LOCK):
        try:
            os.unlink(os.path.join(d, name))
        except FileNotFoundError:
            pass
    try:
        os.rmdir(d)
    except OSError:
        pass


def cmd_prune(a, g):
    """docker's `container prune`: every stopped container goes, after a question unless -f."""
    stopped = [c for c in Container.list(g.root) if c.status() == "stopped"]
    if not a.force:
        if not sys.stdin.isatty():
            raise Error("prune: removes %d stopped container(s); give -f to do so without a "
                        "terminal to ask on" % len(stopped))
        try:
            answer = input("This removes %d stopped container(s): %s. Go on? [y/N] " % (
                len(stopped), " ".join(c.id for c in stopped) or "none"))
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            return 1
    for c in stopped:
        try:
            c.destroy(force=False)  # one that started meanwhile stays
            print(c.id)
        except Error as e:
            sys.stderr.write("minicontainer: prune: %s\n" % e)
    return 0


def _fifo_holders(root):
    """{container id: [(pid, fd link, its target)]}: the processes holding an exec fifo of
    this state root, as every child of create does until its container's program runs."""
    root = os.path.realpath(root)
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            fds = os.listdir("/proc/%s/fd" % name)
        except OSError:
            continue
        for fd in fds:
            link = "/proc/%s/fd/%s" % (name, fd)
            try:
                target = os.readlink(link)
            except OSError:
                continue
            parts = target[len(root) + 1:].split("/")
            if target.startswith(root + "/") and len(parts) == 2 and \
                    parts[1] in ("exec.fifo", "exec.fifo (deleted)"):
                found.setdefault(parts[0], []).append((int(name), link, target))
    return found


def _kill_orphans(procs, cgroup_name=None):
    """SIGKILL processes that _fifo_holders found, and wait for their end. With
    cgroup_name, also remove each one's cgroup of that name (the container's), which no state
    knows any more, and which no other container can have (create would find it taken).
    Returns what went, for gc to say."""
    import select
    removed, cgroups = [], set()
    for pid, link, target in procs:
        pidfd = pidfd_open(pid)
        try:
            if os.readlink(link) != target:
                continue  # it ended, and its pid is another's
            with open("/proc/%d/cgroup" % pid) as f:
                cgroups.update(p for p in (line.rstrip("\n").split(":", 2)[2] for line in f)
                               if os.path.basename(p) == cgroup_name)
            if pidfd is None:
                os.kill(pid, signal.SIGKILL)
            else:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                select.select([pidfd], [], [], 5)  # readable once it has exited
            removed.append("process %d" % pid)
        except OSError:
            pass  # it ended by itself meanwhile
        finally:
            if pidfd is not None:
                os.close(pidfd)
    for path in sorted(cgroups):
        try:
            Cgroup(path).destroy()
            removed.append("cgroup %s" % path)
        except Error as e:
            sys.stderr.write("minicontainer: gc: %s\n" % e)
    return removed


def socket_activation(process):
    """systemd's socket activation, as runc passes it on: when we were started with
    LISTEN_FDS (for us: LISTEN_PID is ours), fds 3.. are the container's too, with
    LISTEN_FDS and LISTEN_PID=1 in its env. Returns how many."""
    try:
        n = int(getenv("LISTEN_FDS", "0"))
        mine = int(getenv("LISTEN_PID", "0")) == os.getpid()
    except ValueError:
        return 0
    if n <= 0 or not mine:
        return 0
    env = process.setdefault("env", [])
    env[:] = [e for e in env if not e.startswith(("LISTEN_FDS=", "LISTEN_PID="))] + [
        "LISTEN_FDS=%d" % n, "LISTEN_PID=1"]
    return n


def cmd_create(a, g):
    check_preserved_fds(a.preserve_fds)
    config = load_config(a.bundle)
    listen = socket_activation(config["process"])
    Container.create(a.id, config, a.bundle, g.root, console=a.console_socket,
                     pid_file=a.pid_file, preserve_fds=listen + a.preserve_fds, debug=g.debug,
                     no_pivot=a.no_pivot)
    return 0


def cmd_start(a, g):
    """runc's `start ID` of a created container; docker's of a stopped one that run made (it
    comes back detached), also of several (`start ID...`, their names printed), and `start
    -a ID`: its output ours until it stops, its exit status ours."""
    if len(a.ids) == 1 and not a.attach:
        c = Container.load(a.ids[0], g.root)
        if c.status() == "stopped" and c.state.get("relaunch"):
            return _relaunch(c, g.root)  # docker's start of a stopped one (runc's refuses)
        c.start()
        return 0
    if a.attach:
        if len(a.ids) > 1:
            raise Error("start -a: one container at a time (as docker's)")
        return _start_attached(load_container(a.ids[0], g.root), g)
    status = 0
    for word in a.ids:
        try:
            c = load_container(word, g.root)
            state = c.status()
            if state == "stopped" and c.state.get("relaunch"):
                status = _relaunch(c, g.root) and 1 or status  # (its id said by its run)
                continue
            if state not in ("running", "paused"):  # docker's: a running one is started
                c.start()
            print(word, flush=True)
        except Error as e:
            sys.stderr.write("minicontainer: %s\n" % e)
            status = 1
    return status


def _start_attached(c, g):
    """docker's start -a: start it (a stopped one of a docker-like run again, through its
    monitor), then print what it writes (its log, from now) until it stops; its exit status
    is ours. Our INT, TERM, ... go to it, as docker's --sig-proxy."""
    since, status = timestamp(), c.status()
    if status == "stopped" and not c.state.get("relaunch"):
        raise Error("start: %s was not made by run (an engine's container: start it "
                    "through the engine)" % c.id)
    if "log_opts" not in c.state:  # (before it is started, not after)
        raise Error("container %s keeps no log to attach to (those of a run of an image or "
                    "a --rootfs do, not a bundle's)" % c.id)
    if status == "stopped":
        code = _relaunch(c, g.root, quiet=True)
        if code:
            return code
    elif status == "created":
        c.start()
    c = Container.load(c.id, g.root)
    if not c.state.get("config", {}).get("process", {}).get("terminal"):
        _forward_signals(c.pid, None)
    _print_log(c, g.root, follow=True, since=since)
    code = exit_code_of(c)
    if code is None:
        raise Error("container %s stopped; its exit code was not recorded" % c.id)
    return code


def cmd_logs(a, g):
    """docker's logs: the records of a detached container's json-file log, its stdout's
    lines on stdout and its stderr's on stderr; -f: and what it writes until it stops."""
    c = load_container(a.id, g.root)
    if "log_opts" not in c.state:
        raise Error("container %s keeps no log (those of a run of an image or a --rootfs "
                    "do, not a bundle's)" % a.id)
    return _print_log(c, g.root, a.follow, a.tail, a.timestamps)


def _print_log(c, root, follow=False, tail=None, timestamps=False, since=None):
    """The records of c's log (its last `tail`, those written at `since` or later), each on
    its stream; with follow, and what it writes until it stops."""
    import collections
    outs = {"stdout": sys.stdout.buffer, "stderr": sys.stderr.buffer}

    def show(records):
        for line in records:
            try:
                r = json.loads(line)
                out, text = outs[r["stream"]], r["log"].encode()
                if since is not None and r["time"] < since:
                    continue
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # a line torn by a crash
            out.write(r["time"].encode() + b" " + text if timestamps else text)
        for out in outs.values():
            out.flush()

    lines = collections.deque(maxlen=tail)
    f = None
    for path in log_files(c):
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            continue
        lines.extend(f)  # a last line without its newline is being written: whole later
        if path != c.log:
            f.close()
            f = None
    if lines and not lines[-1].endswith(b"\n"):
        pending = lines.pop()
        if f is not None and follow:
            f.seek(-len(pending), os.SEEK_CUR)
    show(lines)
    while follow:
        # stopped, and its monitor done with it, before this read: then it is the last
        try:
            done = c.status() == "stopped" and "finished_at" in Container.load(
                c.id, root).state
        except NotFound:
            done = True
        if f is None:
            try:
                f = open(c.log, "rb")
            except FileNotFoundError:
                pass
        if f is not None:
            data = f.read()
            whole = data[:data.rfind(b"\n") + 1]
            f.seek(len(whole) - len(data), os.SEEK_CUR)
            show(whole.splitlines(True))
            try:
                rotated = os.stat(c.log).st_ino != os.fstat(f.fileno()).st_ino
            except FileNotFoundError:
                rotated = False
            if rotated:  # the rest of the old file, then the new one
                show(f.read().splitlines(True))
                f.close()
                f = None
                continue
        if done:
            break
        time.sleep(0.1)
    return 0


def cmd_restart(a, g):
    """docker's restart: stop, then the same container made again by its monitor (for those
    of a docker-like run: an engine restarts its own)."""
    for cid in a.ids:
        c = load_container(cid, g.root)
        if not c.state.get("relaunch"):
            raise Error("restart: %s was not made by run (an engine's container: restart it "
                        "through the engine)" % cid)
        stop_container(c, a.time)
        code = _relaunch(c, g.root)
        if code:
            return code
    return 0


def _check_ports_free(publish):
    """The host ports of -p given by number (not those the kernel picked): an Error for one
    that cannot be bound now, as the container's `run` would fail there."""
    for p in publish or []:
        if not p.get("picked"):
            bind_published(p).close()


def _relaunch(c, root, quiet=False):
    """A stopped container of a docker-like run made again by the monitor (restart, start):
    its id printed on our stdout (unless quiet), its errors on our stderr; its input nothing
    (that of `run -i` was a terminal)."""
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        return _monitor_request(root, {"restart": c.id, "env": dict(os.environ)},
                                [null, null if quiet else 1, 2])
    finally:
        os.close(null)


def cmd_state(a, g):
    print(json.dumps(Container.load(a.id, g.root).oci_state(), indent=2))
    return 0


def _format_option(parser):
    parser.add_argument("-f", "--format", type=_format, default="table",
                        help="table, json, or a Go template as docker's ('{{.ID}}')")


def _format(text):
    import argparse
    if text not in ("table", "json") and "{{" not in text:
        raise argparse.ArgumentTypeError("%r: table, json or a Go template ('{{.ID}}')" % text)
    return text


def cmd_list(a, g):
    states = [c.oci_state() for c in Container.list(g.root)]
    if a.quiet:
        for s in states:  # none: no line at all, as runc
            print(s["id"])
        return 0
    print_formatted(a.format, states, ("ID", "PID", "STATUS", "BUNDLE", "CREATED"),
                    [[s[k] for k in ("id", "pid", "status", "bundle", "created")]
                     for s in states], widths=(20, 8, 10, 40))
    return 0


def cmd_ps(a, g):
    """runc's `ps ID` (the container's processes), or docker's `ps [-a] [-q]` without one."""
    if a.id is None:
        return cmd_containers(a, g)
    if getattr(a, "ps_args", None):  # runc's ps ID PS_OPTIONS: the host's ps, filtered
        if a.format != "table":
            raise Error("ps: ps options are for the table format")
        host_ps(Container.load(a.id, g.root), a.ps_args, "ps")
        return 0
    pids = Container.load(a.id, g.root).processes()
    rows = []
    for pid in pids if a.format == "table" else ():
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                rows.append((pid, f.read().replace(b"\0", b" ").decode(errors="replace")
                             .strip()))
        except OSError:
            continue
    print_formatted(a.format, pids, ("PID", "CMD"), rows, widths=(8,))
    return 0


def cmd_stats(a, g):
    """runc's `stats ID` (the cgroup's statistics as JSON, what engines read), or docker's
    `stats [--no-stream] [--format F] [-a] [ID...]`: a table of CPU %, memory, network,
    block I/O and pids, of the running containers when no ID is given."""
    if len(a.ids) == 1 and not (a.no_stream or a.format or a.all or a.no_trunc):
        print(json.dumps(Container.load(a.ids[0], g.root).stats(), indent=2))
        return 0
    if a.format:
        check_template(a.format.replace("\\t", "\t").replace("\\n", "\n"))
    tty = not a.no_stream and sys.stdout.isatty()
    system, sampled = _stats_sample(a, g)
    while True:
        before = (system, {c.id: s for _, c, s in sampled})
        time.sleep(STATS_INTERVAL)  # docker's CPU %: the usage between two samples
        system, sampled = _stats_sample(a, g)
        if tty:
            sys.stdout.write("\033[2J\033[H")  # docker's: the screen cleared, at the top
        _print_stats(a, [_docker_stats(word, c, s, before[1].get(c.id), before[0], system)
                         for word, c, s in sampled])
        sys.stdout.flush()
        if a.no_stream:
            return 0


STATS_INTERVAL = 1.0  # seconds between the two samples of docker's CPU % (its daemon's)


def _stats_sample(a, g):
    """The containers that stats shows, each with its cgroup's statistics and its network
    counters, and the host's CPU time (docker's system usage), at one moment: (that
    time, [(the word naming it, the container, its statistics)])."""
    if a.ids:
        chosen = [(word, load_container(word, g.root)) for word in a.ids]
    else:
        chosen = [(c.id, c) for c in sorted(Container.list(g.root),
                                            key=lambda c: c.state.get("created") or "",
                                            reverse=True)
                  if a.all or c.status() in ("running", "paused")]
    system, sampled = _system_cpu_ns(), []
    for word, c in chosen:
        s = {}
        if c.status() in ("running", "paused") and c.cgroup is not None:
            try:
                s = c.stats()
                s["net"] = _net_bytes(c)
            except (Error, OSError):
                s = {}  # it stopped meanwhile
        sampled.append((word, c, s))
    return system, sampled


def _system_cpu_ns():
    """docker's system CPU usage: the first seven times of /proc/stat's cpu line, in ns."""
    with open("/proc/stat") as f:
        parts = f.readline().split()
    return sum(int(p) for p in parts[1:8]) * 10 ** 9 // os.sysconf("SC_CLK_TCK")


def _net_bytes(c):
    """(received, sent) bytes of the container's network interfaces but lo, as docker
    counts them; none with the host's network."""
    if not any(ns["type"] == "network"
               for ns in c.state.get("config", {}).get("linux", {}).get("namespaces", [])):
        return 0, 0
    rx = tx = 0
    with open("/proc/%d/net/dev" % c.pid) as f:
        for line in f.readlines()[2:]:
            name, _, counters = line.partition(":")
            fields = counters.split()
            if name.strip() != "lo" and len(fields) >= 9:
                rx, tx = rx + int(fields[0]), tx + int(fields[8])
    return rx, tx


def _binary_size(n):
    """docker's units.BytesSize: 5.629MiB, 1.952GiB, 0B."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return "%.4g%s" % (n, unit)
        n /= 1024


def _host_memory():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def _docker_stats(word, c, s, prev_s, prev_system, system):
    """docker stats' fields of one container, from its sample s and the one before (the
    host's CPU time at each: prev_system, system)."""
    cpu, mem = s.get("cpu") or {}, s.get("memory") or {}
    percent, prev_s = 0.0, prev_s or {}
    cpu_delta = (cpu.get("usage_ns") or 0) - ((prev_s.get("cpu") or {}).get("usage_ns") or 0)
    if prev_s and system > prev_system and cpu_delta > 0:
        percent = cpu_delta / (system - prev_system) * os.sysconf("SC_NPROCESSORS_ONLN") * 100
    stat = mem.get("stat") or {}
    usage = mem.get("usage") or 0
    cache = stat.get("total_inactive_file", stat.get("inactive_file", 0))
    usage = usage - cache if cache < usage else usage  # docker's: without the page cache
    limit = mem.get("limit")
    host = _host_memory() if s else 0
    limit = host if limit is None or host and limit > host else limit
    rx, tx = s.get("net") or (0, 0)
    blkio = s.get("blkio") or {}
    return {"Container": word, "Name": c.id, "ID": c.id, "CPUPerc": "%.2f%%" % percent,
            "MemUsage": "%s / %s" % (_binary_size(usage), _binary_size(limit)),
            "MemPerc": "%.2f%%" % (usage * 100 / limit if limit else 0),
            "NetIO": "%s / %s" % (human_size(rx), human_size(tx)),
            "BlockIO": "%s / %s" % (human_size(blkio.get("read_bytes") or 0),
                                    human_size(blkio.get("write_bytes") or 0)),
            "PIDs": str((s.get("pids") or {}).get("current") or 0)}


STATS_HEADERS = {"Container": "CONTAINER", "Name": "NAME", "ID": "CONTAINER ID",
                 "CPUPerc": "CPU %", "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %",
                 "NetIO": "NET I/O", "BlockIO": "BLOCK I/O", "PIDs": "PIDS"}


def _print_stats(a, data):
    if not a.no_trunc:
        for d in data:
            d["ID"] = d["ID"][:12]
    if a.format and a.format != "table":
        print_formatted(a.format, data, (), [], headers=STATS_HEADERS, json_lines=True)
        return
    keys = ("ID", "Name", "CPUPerc", "MemUsage", "MemPerc", "NetIO", "BlockIO", "PIDs")
    rows = [[STATS_HEADERS[k] for k in keys]] + [[d[k] for k in keys] for d in data]
    # docker's tabwriter: a column as wide as its widest cell and 3, 10 at least
    widths = [max(10, max(len(r[i]) for r in rows) + 3) for i in range(len(keys) - 1)]
    for r in rows:
        print("".join(cell.ljust(w) for cell, w in zip(r, widths)) + r[-1])


def cmd_pause(a, g):
    Container.load(a.id, g.root).pause()
    return 0


def cmd_resume(a, g):
    Container.load(a.id, g.root).resume()
    return 0


def cmd_delete(a, g):
    try:
        Container.load(a.id, g.root).destroy(force=a.force)
    except NotFound:
        if a.force:
            return 0  # nothing to do, or another delete did it first
        raise
    return 0


# -- docker's verbs: ps, stop, rm, kill ID..., inspect, wait, top, port. They take names and
# unique prefixes of ids (a container's name is its id here); runc's verbs take exact ids.

def resolve_id(word, root):
    """The container that `word` names: its id, else the one id it begins (docker's short
    ids); a NotFound, or an Error when several ids begin so."""
    if _valid_id(word) and os.path.isdir(os.path.join(root, word)):
        return word
    try:
        names = os.listdir(root) if word else []
    except FileNotFoundError:
        names = []
    found = sorted(n for n in names if n.startswith(word) and not n.startswith("."))
    if len(found) > 1:
        raise Error("%s is ambiguous: it begins %s" % (word, ", ".join(found[:5])))
    if not found:
        raise NotFound("container %s does not exist" % word)
    return found[0]


def load_container(word, root):
    """Container.load of a name or a unique id prefix (docker's verbs)."""
    return Container.load(resolve_id(word, root), root)


def _each(words, root, act):
    """Apply act(container) to each container named, as docker does: on stdout what act
    returns (None: the name), an error line for each other; exit status 1 if any failed."""
    status = 0
    for word in words:
        try:
            out = act(load_container(word, root))
            print(word if out is None else out, flush=True)
        except Error as e:
            sys.stderr.write("minicontainer: %s\n" % e)
            status = 1
    return status


def parse_timestamp(text):
    """Seconds since the epoch of an RFC 3339 UTC time as timestamp() writes it; None if
    missing or not one."""
    import calendar
    try:
        whole, _, frac = text.rstrip("Z").partition(".")
        t = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
        return t + (float("0." + frac) if frac.isdigit() else 0)
    except (AttributeError, ValueError):
        return None


def human_duration(seconds):
    """docker's units.HumanDuration."""
    s = int(seconds)
    minutes, hours = s // 60, int(round(seconds / 3600))
    if s < 1:
        return "Less than a second"
    if s < 60:
        return "1 second" if s == 1 else "%d seconds" % s
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return "%d minutes" % minutes
    if hours == 1:
        return "About an hour"
    for limit, unit, size in ((48, "hours", 1), (24 * 14, "days", 24),
                              (24 * 60, "weeks", 24 * 7), (24 * 730, "months", 24 * 30)):
        if hours < limit:
            return "%d %s" % (hours // size, unit)
    return "%d years" % (int(seconds // 3600) // 24 // 365)


def _ago(text, now):
    t = parse_timestamp(text)
    return None if t is None else human_duration(max(now - t, 0))


def docker_status(c, now):
    """ps's STATUS: `Up 3 minutes`, `Up 2 seconds (Paused)`, `Exited (5) 2 minutes ago`,
    `Created`; what state.json does not say (exit code, times) is left out."""
    status = c.status()
    if status in ("created", "creating"):
        return "Created"
    if status in ("running", "paused"):
        up = _ago(c.state.get("started_at") or c.state.get("created"), now)
        return "Up" + (" " + up if up else "") + (" (Paused)" if status == "paused" else "")
    code, ago = c.state.get("exit_code"), _ago(c.state.get("finished_at"), now)
    return ("Restarting" if _restarting(c) else "Exited") + \
        (" (%d)" % code if isinstance(code, int) else "") + (" %s ago" % ago if ago else "")


def _restarting(c):
    """Whether a stopped container is waiting for its monitor to start it again (its
    policy's back-off), which docker says as `Restarting`."""
    code = c.state.get("exit_code")
    return isinstance(code, int) and c.status() == "stopped" and _restarts(c.state, code)


def _run_record(c):
    """What a docker-like run recorded of how it was asked (see _run); {} for others."""
    return c.state.get("run") or {}


def _command_of(c):
    args = c.state.get("config", {}).get("process", {}).get("args") or []
    return " ".join(args)


def cmd_containers(a, g):
    """docker's ps: the running containers (-a: all), their ID, IMAGE, COMMAND, CREATED,
    STATUS, PORTS and NAMES; ids and commands shortened as docker does; the newest first."""
    now = time.time()
    rows, data = [], []
    filters = []
    for f in getattr(a, "filter", None) or []:
        key, eq, value = f.partition("=")
        if key not in ("name", "id", "status", "label", "ancestor") or not eq:
            raise Error("ps --filter %s: use name, id, status, label or ancestor=VALUE" % f)
        filters.append((key, value))
    # RFC 3339 times of one width: their order is the text's
    for c in sorted(Container.list(g.root), key=lambda c: c.state.get("created") or "",
                    reverse=True):
        status = c.status()
        end_orphaned_slirp4netns(c, status)
        if not (a.all or any(k == "status" for k, _ in filters)) and \
                status not in ("running", "paused"):
            continue
        if not all(_ps_filter(c, status, key, value) for key, value in filters):
            continue
        if a.quiet:
            print(c.id[:12])
            continue
        command = _command_of(c)
        short = command if len(command) <= 20 else command[:19] + "…"
        created = _ago(c.state.get("created"), now)
        ports = ", ".join("%s:%s->%s" % (b["HostIp"], b["HostPort"], key)  # docker ps's
                          for key, binds in sorted(_port_bindings(c).items())
                          for b in binds) if status in ("running", "paused") else ""
        row = [c.id[:12], _run_record(c).get("image") or "", json.dumps(short,
                                                                         ensure_ascii=False),
               created + " ago" if created else "", docker_status(c, now), ports, c.id]
        rows.append(row)
        data.append({"ID": c.id, "Image": row[1], "Command": json.dumps(command),
                     "CreatedAt": c.state.get("created", ""), "RunningFor": created or "",
                     "State": _docker_state(status, c), "Status": row[4], "Ports": ports,
                     "Names": c.id, "Labels": ",".join(
                         "%s=%s" % kv for kv in sorted((c.state.get("annotations") or {})
                                                       .items()))})
    if not a.quiet:
        print_formatted(a.format, data, ("CONTAINER ID", "IMAGE", "COMMAND", "CREATED",
                                         "STATUS", "PORTS", "NAMES"), rows,
                        headers={"ID": "CONTAINER ID", "RunningFor": "CREATED",
                                 "CreatedAt": "CREATED AT"}, json_lines=True)
    return 0


def _ps_filter(c, status, key, value):
    """docker's ps --filter KEY=VALUE, for one container (filters of one key: docker ORs
    them; here each must hold, which is the same for the one filter a key usually has)."""
    if key == "name":
        return value in c.id
    if key == "id":
        return c.id.startswith(value)
    if key == "status":
        return _docker_state(status, c) == value
    if key == "label":
        name, eq, want = value.partition("=")
        labels = c.state.get("annotations") or {}
        return name in labels and (not eq or labels[name] == want)
    return _run_record(c).get("image") == value  # ancestor


def _docker_state(status, c=None):
    """docker's word for a status; of container c, "restarting" in its policy's back-off."""
    if c is not None and _restarting(c):
        return "restarting"
    return {"stopped": "exited", "creating": "created"}.get(status, status)


def stop_container(c, timeout=None):
    """docker's stop: the container's stop signal (state's stop_signal, else SIGTERM), then
    SIGKILL after its stop timeout (state's stop_timeout, else 10 s). Said in state.json
    first (stopped_by_user), so that a restart policy leaves it stopped."""
    with c.lock():
        if c.status() not in ("running", "paused", "created"):
            return
        c.state["stopped_by_user"] = True
        c.save()
        init = c.pid, c.state.get("start_time")
    sig = parse_signal(c.state.get("stop_signal") or "SIGTERM")
    if timeout is None:
        timeout = c.state.get("stop_timeout")
        timeout = 10 if not isinstance(timeout, int) else timeout
    try:
        if c.status() == "created":
            sig = signal.SIGKILL  # nothing runs yet that could stop by itself
        c.signal(sig)
        if c.status() == "paused" and sig != signal.SIGKILL:
            c.signal(signal.SIGKILL)  # a frozen process handles no signal
        if timeout < 0 or not c.wait_stopped(timeout):
            c.signal(signal.SIGKILL)
    except Error:
        return  # it stopped meanwhile
    if not c.wait_stopped(10):
        raise Error("container %s did not stop" % c.id)
    try:
        # when it ended, for a monitor that learns of it later (one killed meanwhile)
        with c.lock():
            if (c.pid, c.state.get("start_time")) == init and "finished_at" not in c.state:
                c.state["stopped_at"] = timestamp()
                c.save()
    except Error:
        pass  # removed meanwhile (--rm)
    # Its published ports free when stop returns, as docker's (a `run -p` of them next
    # failed while its monitor had not yet ended the forwarder: it does so on the exit)
    end_helper((c.state.get("network") or {}).get("forwarder"))


def cmd_stop(a, g):
    return _each(a.ids, g.root, lambda c: stop_container(c, a.time))


def cmd_rm(a, g):
    def remove(c):
        status = c.status()
        if status in ("running", "paused") and not a.force:
            raise Error("cannot remove container %s: it is %s (stop it first, or rm -f)"
                        % (c.id, status))
        c.destroy(force=True)
        for v in _run_record(c).get("volumes") or () if a.volumes else ():
            if v.get("anonymous"):  # -v: its anonymous volumes, unless another uses one
                try:
                    volume_remove(v["name"])
                except NotFound:
                    pass
                except Error as e:
                    sys.stderr.write("minicontainer: %s\n" % e)
    return _each(a.ids, g.root, remove)


def cmd_kill(a, g):
    """runc's `kill [--all] ID [SIGNAL]` (one or two words, the second a signal; SIGTERM
    by default), or docker's `kill [-s SIGNAL] ID...` (SIGKILL by default), which prints
    the names. `kill ID` alone is docker's for a container of a docker-like run (engines
    always give runc's kill its signal), else runc's."""
    words = a.ids
    if len(words) == 1 and a.signal is None:
        try:
            docker_made = bool(_run_record(Container.load(words[0], g.root)))
        except NotFound:
            docker_made = True  # a name's prefix: docker's
    if a.signal is None and (len(words) == 2 or len(words) == 1 and not docker_made):
        try:
            sig = parse_signal(words[1]) if len(words) == 2 else signal.SIGTERM
        except Error as e:
            sig, bad_signal = None, e
            try:
                resolve_id(words[1], g.root)
            except Error:  # ID WORD where no container is WORD: runc's form, a bad signal
                load_container(words[0], g.root)  # (or no such container: said once)
                raise bad_signal from None
        if sig is not None:
            Container.load(words[0], g.root).signal(sig, all=a.all)
            return 0
    sig = parse_signal(a.signal or "SIGKILL")
    return _each(words, g.root, lambda c: c.signal(sig, all=a.all))


def _zero_time(text):
    return text or "0001-01-01T00:00:00Z"  # docker's for never


def _port_bindings(c):
    """docker's PortBindings: {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}]}."""
    out = {}
    for p in (c.state.get("network") or {}).get("publish") or _run_record(c).get("publish",
                                                                                 []):
        out.setdefault("%d/%s" % (p["ctr"], p["proto"]), []).append(
            {"HostIp": p["host_ip"], "HostPort": str(p["host"])})
    return out


def _port_lines(c, private=None):
    """docker port's lines: `80/tcp -> 0.0.0.0:8080`, of one private port if asked."""
    lines = []
    for key, binds in sorted(_port_bindings(c).items()):
        if private and key != private and key != private + "/tcp":
            continue
        lines += ["%s -> %s:%s" % (key, b["HostIp"], b["HostPort"]) for b in binds]
    return lines


def _docker_mounts(c):
    mounts = []
    volumes = {v["destination"]: v for v in _run_record(c).get("volumes") or []}
    for m in _run_record(c).get("mounts", []):
        opts = m.get("options", [])
        prop = next((o for o in opts if o in PROPAGATION), "rprivate")
        v = volumes.get(m["destination"])
        if v is not None and m["type"] == "bind":  # docker's, of a volume
            mounts.append({"Type": "volume", "Name": v["name"], "Source": m.get("source", ""),
                           "Destination": m["destination"], "Driver": "local",
                           "Mode": v.get("mode", ""), "RW": v.get("rw", True),
                           "Propagation": ""})
            continue
        mounts.append({"Type": m["type"], "Source": m.get("source", "")
                       if m["type"] == "bind" else "", "Destination": m["destination"],
                       "Mode": "ro" if "ro" in opts else "", "RW": "ro" not in opts,
                       "Propagation": prop if m["type"] == "bind" else ""})
    return mounts


def inspect_container(c):
    """docker inspect's object of a container, for the fields this runtime has; what
    state.json does not say is null (docker's zero time for times)."""
    status = c.status()
    config = c.state.get("config", {})
    process = config.get("process", {})
    res = config.get("linux", {}).get("resources", {})
    record = _run_record(c)
    cpu = res.get("cpu", {})
    network = c.state.get("network") or {}
    alive = status in ("running", "paused")
    code = c.state.get("exit_code")
    user = process.get("user", {})
    policy, _, most = (c.state.get("restart_policy") or "no").partition(":")
    networks = {}
    if network.get("mode") == "bridge" and network.get("ip") and alive:
        import ipaddress
        net = ipaddress.ip_network(network["subnet"])
        networks["bridge"] = {"IPAddress": network["ip"], "IPPrefixLen": net.prefixlen,
                              "Gateway": str(net.network_address + 1)}
    ports = _port_bindings(c)
    return {
        "Id": c.id, "Name": "/" + c.id, "Created": c.state.get("created", ""),
        "Image": (c.state.get("overlay") or {}).get("image") or "",
        "Platform": "linux", "Driver": (c.state.get("overlay") or {}).get("mode", ""),
        "LogPath": c.log if os.path.exists(c.log) else "",
        "Path": (process.get("args") or [""])[0], "Args": (process.get("args") or [])[1:],
        "State": {"Status": _docker_state(status, c), "Running": status == "running",
                  "Paused": status == "paused",
                  "Restarting": _docker_state(status, c) == "restarting",
                  "OOMKilled": bool(c.state.get("oom_killed")), "Dead": False,
                  "Pid": c.pid if alive else 0,
                  "ExitCode": 0 if status != "stopped" else code,
                  "Error": "", "StartedAt": _zero_time(c.state.get("started_at")),
                  "FinishedAt": _zero_time(c.state.get("finished_at"))},
        "RestartCount": c.state.get("restart_count", 0),
        "Config": {"Hostname": config.get("hostname", ""),
                   "User": record.get("user", "%s:%s" % (user.get("uid", 0),
                                                         user.get("gid", 0))),
                   "Env": process.get("env", []), "Cmd": record.get("cmd",
                                                                    process.get("args")),
                   "Image": record.get("image", ""), "WorkingDir": process.get("cwd", ""),
                   "Entrypoint": record.get("entrypoint"),
                   "Labels": c.state.get("annotations") or {},
                   "StopSignal": c.state.get("stop_signal", "SIGTERM"),
                   "Tty": bool(process.get("terminal")),
                   "Volumes": {v["destination"]: {} for v in record.get("volumes") or ()
                               if v.get("anonymous")} or None,
                   "ExposedPorts": {key: {} for key in ports} or None},
        "HostConfig": {"Memory": res.get("memory", {}).get("limit", 0),
                       "NanoCpus": int(cpu["quota"] * 10 ** 9 // cpu["period"])
                       if cpu.get("quota", 0) > 0 and cpu.get("period") else 0,
                       "PidsLimit": res.get("pids", {}).get("limit"),
                       "Binds": record.get("binds"),
                       "NetworkMode": record.get("network", network.get("mode", "")),
                       "PortBindings": _port_bindings(c),
                       "Privileged": bool(record.get("privileged")),
                       "Init": bool(record.get("init")),
                       "RestartPolicy": {"Name": policy,
                                         "MaximumRetryCount": int(most) if most else 0},
                       "AutoRemove": not c.state.get("keep", True),
                       "ReadonlyRootfs": bool(config.get("root", {}).get("readonly"))},
        "NetworkSettings": {"IPAddress": (network.get("ip") or "") if alive else "",
                            "Gateway": networks.get("bridge", {}).get("Gateway", ""),
                            "Ports": ports if alive else {}, "Networks": networks},
        "Mounts": _docker_mounts(c),
    }


def cmd_inspect(a, g):
    found, status = [], 0
    if a.format:
        check_template(a.format.replace("\\t", "\t").replace("\\n", "\n"))
    for word in a.ids:
        try:
            found.append(inspect_container(load_container(word, g.root)))
        except NotFound as e:
            try:  # docker's inspect takes an image too
                found.append(inspect_image(find_image(word)))
            except Error:
                sys.stderr.write("minicontainer: no such container or image: %s\n" % word
                                 if "does not exist" in str(e) else "minicontainer: %s\n" % e)
                status = 1
        except Error as e:
            sys.stderr.write("minicontainer: %s\n" % e)
            status = 1
    print_inspected(found, a.format)
    return status


def inspect_image(image):
    """docker image inspect's object of a stored image, for the fields the store has."""
    ic = image.image_config or {}
    store_names = [n for n, d in ImageStore().entries() if n and d.get("digest") == image.digest]
    return {"Id": (image.manifest.get("config") or {}).get("digest", ""),
            "RepoTags": store_names,
            "RepoDigests": [parse_reference(n).registry + "/" + parse_reference(n).repository +
                            "@" + image.digest for n in store_names],
            "Created": ic.get("created", ""), "Architecture": ic.get("architecture", ""),
            "Os": ic.get("os", ""), "Variant": ic.get("variant", ""),
            "Config": image.config, "Size": sum(int(layer.get("size", 0)) for layer in
                                                image.manifest.get("layers") or ()),
            "RootFS": {"Type": "layers", "Layers": (ic.get("rootfs") or {}).get("diff_ids",
                                                                                 [])}}


def cmd_wait(a, g):
    def wait(c):
        c.wait_stopped()
        code = exit_code_of(c)
        if code is None:
            raise Error("container %s stopped; its exit code was not recorded" % c.id)
        return code
    return _each(a.ids, g.root, wait)


def cmd_top(a, g):
    """docker's top: the host's `ps` (-ef unless other options are given), the container's
    processes only."""
    c = load_container(a.id, g.root)
    if c.status() not in ("running", "paused"):
        raise Error("container %s is not running" % c.id)
    host_ps(c, a.ps_args, "top")
    return 0


def host_ps(c, ps_args, command):
    """Print the host's `ps PS_ARGS` (-ef without), its lines of c's processes only."""
    import subprocess
    pids = {str(p) for p in c.processes()}
    try:
        out = subprocess.run(["ps"] + (ps_args or ["-ef"]), capture_output=True,
                             text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError) as e:
        said = (getattr(e, "stderr", None) or "").strip().splitlines()  # ps's usage: 11
        raise Error("%s: ps %s: %s" % (command, " ".join(ps_args or ["-ef"]),  # lines
                                       said[0] if said else e)) from None
    header = out[0].split() if out else []
    if "PID" not in header:
        raise Error("%s: the options of ps must show a PID column" % command)
    col = header.index("PID")
    print(out[0])
    for line in out[1:]:
        fields = line.split()
        if len(fields) > col and fields[col] in pids:
            print(line)


def cmd_port(a, g):
    c = load_container(a.id, g.root)
    lines = _port_lines(c, a.private) if c.status() in ("running", "paused") else []
    if a.private and not lines:
        raise Error("no public port %s published for %s" % (a.private, c.id))
    for line in lines:  # of one port, its addresses alone, as docker's
        print(line.split(" -> ")[1] if a.private else line)
    return 0


def _read_json_arg(path, what):
    try:
        if path == "-":
            return json.load(sys.stdin)
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        raise Error("%s %s: %s" % (what, path, e.strerror)) from None
    except ValueError as e:
        raise Error("%s %s: invalid JSON: %s" % (what, path, e)) from None
    except RecursionError:
        raise Error("%s %s: invalid JSON: nested too deep" % (what, path)) from None


def cmd_exec(a, g):
    c = load_container(a.id, g.root)
    if a.process:
        process = _read_json_arg(a.process, "--process")
        if not isinstance(process, dict):  # (runc: "cannot unmarshal array into ...")
            raise Error("exec --process %s: a JSON %s, not a process object" % (a.process, {
                list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
                    type(process), "number")))
        own = c.state.get("config", {}).get("process", {})
        if process.get("capabilities") is None:
            # the container's sets, as runc gives such a process (not none, as at create)
            process["capabilities"] = json.loads(json.dumps(own.get("capabilities") or {}))
        if not process.get("apparmorProfile") and own.get("apparmorProfile"):
            process["apparmorProfile"] = own["apparmorProfile"]  # (runc's: not unconfined)
    else:
        if not a.args:
            raise Error("exec: give a command, or --process FILE")
        process = json.loads(json.dumps(c.state.get("config", {}).get("process", {})))
        process.pop("consoleSize", None)
        process["args"] = a.args
        process["terminal"] = a.tty
        if a.cwd:
            process["cwd"] = a.cwd
        if a.user:
            process["user"] = dict(process.get("user", {}),
                                   **lookup_user(c.state.get("rootfs", "/"), a.user))
            caps = process.get("capabilities")
            if process["user"].get("uid", 0) != 0 and caps is not None:
                # What the kernel leaves a non-root user across execve: the bounding set, and
                # only what the ambient set carries (none for a docker-like container, as
                # docker's exec -u; a runc spec's ambient set, as runc's exec -u).
                ambient = caps.get("ambient", [])
                process["capabilities"] = {"bounding": caps.get("bounding", [])}
                if ambient:
                    process["capabilities"].update(
                        {kind: [c for c in caps.get(kind, []) if c in ambient]
                         for kind in ("effective", "permitted", "inheritable", "ambient")})
        _set_env(process.setdefault("env", []), a.env)
        if a.additional_gids:
            if not all(g.isdigit() for g in a.additional_gids):  # (its range: check_user_ids)
                raise Error("exec --additional-gids: a group id is a number, 0 to 4294967294")
            process["user"] = dict(process.get("user", {}),
                                   additionalGids=[int(g) for g in a.additional_gids])
        if a.cap:  # (not inheritable, as runc's since CVE-2022-29162: a non-root user's
            cap_mask(a.cap, "--cap")  # process gets none of them, there as here)
            caps = process.setdefault("capabilities", {})
            for kind in ("bounding", "effective", "permitted", "ambient"):
                caps[kind] = caps.get(kind, []) + [n for n in a.cap if n not in caps.get(kind, [])]
        if a.no_new_privs:
            process["noNewPrivileges"] = True
        if a.apparmor:
            process["apparmorProfile"] = a.apparmor
        if a.process_label:
            process["selinuxLabel"] = a.process_label
    check_preserved_fds(a.preserve_fds)
    console = a.console_socket or ("self" if process.get("terminal") else None)
    pid_file = os.path.abspath(a.pid_file) if a.pid_file else None
    if pid_file and not os.path.isdir(os.path.dirname(pid_file)):
        raise Error("--pid-file %s: no such directory" % a.pid_file)
    listen = socket_activation(process)
    ours = None
    if a.detach and console is None and "run" in c.state:
        # ours again once the process has its own; above the fds it is given
        ours = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3 + listen + a.preserve_fds)
                for fd in (0, 1, 2)]
        _detached_stdio()
    try:
        pid = c.exec(process, console=console, preserve_fds=listen + a.preserve_fds,
                     debug=g.debug)
    finally:
        for fd, saved in enumerate(ours or ()):
            os.dup2(saved, fd)
            os.close(saved)
    if pid_file:
        try:
            write_atomic(pid_file, "%d" % pid)
        except OSError as e:  # as runc: the process is not left running unrecorded
            os.kill(pid, signal.SIGKILL)
            raise Error("--pid-file %s: %s" % (a.pid_file, e.strerror)) from None
    if a.detach:
        if c.console_master is not None:
            os.close(c.console_master)
        return 0
    _forward_signals(pid, c.console_master)
    if c.console_master is not None:
        return _proxy_tty(pid, c.console_master, True)
    return _wait_exit(pid)


def _detached_stdio():
    """docker's exec -d in a docker-like container: the process's stdio is /dev/null, as
    docker's (not the container's log, which its monitor writes in json-file records; never
    the caller's). An engine's exec -d keeps the stdio it gives, as runc's."""
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def cmd_update(a, g):
    c = Container.load(a.id, g.root)
    res = _read_json_arg(a.resources, "--resources") if a.resources else {}
    validate(res, SCHEMA["linux"]["resources"], "resources", "linux.resources")
    mem, cpu = res.setdefault("memory", {}), res.setdefault("cpu", {})
    for value, section, key in ((a.memory, mem, "limit"), (a.memory_swap, mem, "swap"),
                                (a.memory_reservation, mem, "reservation")):
        if value is not None:
            section[key] = -1 if value == "-1" else parse_size(value)
    for value, key in ((a.cpu_shares, "shares"), (a.cpu_quota, "quota"),
                       (a.cpu_period, "period"), (a.cpu_rt_period, "realtimePeriod"),
                       (a.cpu_rt_runtime, "realtimeRuntime")):
        if value is not None:
            cpu[key] = value
    if a.kernel_memory is not None or a.kernel_memory_tcp is not None:
        warn("update: kernel memory settings are ignored: the kernel dropped kernel memory "
             "limits (as runc 1.1 ignores them)")
    if a.cpuset_cpus is not None:
        cpu["cpus"] = a.cpuset_cpus
    if a.cpuset_mems is not None:
        cpu["mems"] = a.cpuset_mems
    if a.pids_limit is not None:
        res["pids"] = {"limit": a.pids_limit}
    if a.blkio_weight is not None:
        res["blockIO"] = {"weight": a.blkio_weight}
    res = {k: v for k, v in res.items() if v}
    with c.lock():
        if c.status() == "stopped":
            raise Error("cannot update a container that is stopped")
        cgroup = c._own_cgroup("update")
        linux = c.state["config"].setdefault("linux", {})
        before = json.loads(json.dumps(linux.get("resources", {})))
        stored = linux.setdefault("resources", {})
        for key, value in res.items():
            stored[key] = dict(stored.get(key, {}), **value) if isinstance(value, dict) \
                else value
        c.save()  # first: an update that cannot be recorded (a full state root) changes nothing
        try:
            cgroup.apply(res)  # (which undoes its own writes when the kernel refuses one)
        except BaseException:
            linux["resources"] = before
            c.save()
            raise
    return 0


def _runc_stats(s):
    """Our stats in the shape of runc's `events` (what engines parse)."""
    mem, cpu = s.get("memory", {}), s.get("cpu", {})
    return {"cpu": {"usage": {"total": cpu.get("usage_ns") or 0,
                              "kernel": cpu.get("system_ns", 0), "user": cpu.get("user_ns", 0)},
                    "throttling": {}},
            "memory": {"usage": {"usage": mem.get("usage") or 0,
                                 "max": mem.get("max_usage") or 0,
                                 "limit": mem.get("limit") or 0},
                       "raw": mem.get("stat", {})},
            "pids": {"current": s.get("pids", {}).get("current") or 0,
                     "limit": s.get("pids", {}).get("limit") or 0},
            "blkio": {}, "hugetlb": {}}


def cmd_events(a, g):
    c = Container.load(a.id, g.root)
    interval = a.interval.rstrip("s") if a.interval else "5"
    try:
        interval = float(interval)
    except ValueError:
        interval = None
    if interval is None or not 0 < interval < 1e9:
        raise Error("--interval %s: use seconds above 0, e.g. 5s" % a.interval)
    while True:
        if c.status() == "stopped":
            raise Error("container %s is not running" % a.id)
        print(json.dumps({"type": "stats", "id": a.id, "data": _runc_stats(c.stats())}),
              flush=True)
        if a.stats:
            return 0
        time.sleep(interval)


def cmd_features(a, g):
    v1, v2 = cgroup_hierarchies()
    print(json.dumps({
        "ociVersionMin": "1.0.0", "ociVersionMax": OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer",
                  "poststart", "poststop"],
        "mountOptions": sorted(set(_MOUNT_FLAGS) | set(PROPAGATION) | {"tmpcopyup"}),
        "linux": {
            "namespaces": sorted(NAMESPACES),
            "capabilities": ["CAP_" + c for c in CAPABILITIES[:cap_last_cap() + 1]],
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False},
            "seccomp": {"enabled": True,
                        "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL",
                                    "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD",
                                    "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"],
                        "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
                                      "SCMP_CMP_LE", "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ",
                                      "SCMP_CMP_NE"],
                        "archs": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_X86", "SCMP_ARCH_X32",
                                  "SCMP_ARCH_X86_64"]},
            "apparmor": {"enabled": True}, "selinux": {"enabled": False},
        },
        "annotations": {"io.github.minicontainer.version": __version__},
    }, indent=2))
    return 0


def cmd_spec(a, g):
    path = os.path.join(a.bundle or ".", "config.json")
    if os.path.exists(path):
        raise Error("%s already exists; remove it first" % path)
    if not os.path.isdir(a.bundle or "."):
        raise Error("spec: bundle %s is not a directory" % a.bundle)
    spec = default_spec(rootfs=a.rootfs or "rootfs")
    v1, v2 = cgroup_hierarchies()
    if v2 and not v1:
        # as runc's: on a pure v2 host the container sees its own cgroup at /sys/fs/cgroup
        spec["linux"]["namespaces"].append({"type": "cgroup"})
    if a.rootless:
        rootless_spec(spec)
    with open(path, "w") as f:
        json.dump(spec, f, indent=2)
        f.write("\n")
    return 0


class _Unbuilt:
    """A stand-in for the parser of a command not asked for: argparse is slow to build."""

    def add_argument(self, *args, **kwargs):
        pass


def _tail(text):
    """logs --tail: a count, or docker's "all" (and -1)."""
    return None if text in ("all", "-1") else _count(text)


def _count(text):
    """argparse's type for a number of things: 0 or more (a negative --preserve-fds would
    close the container's stdout and stderr)."""
    import argparse
    if not text.isdigit():
        raise argparse.ArgumentTypeError("%r is not a count (0 or more)" % text)
    return int(text)


# run's flags, one row each: the flag's names, its argparse options, and the function that
# applies it to the config (run_config calls them in this order, for the flags given, and
# checks the result once). None: read where the row's comment says.
RUN_FLAGS = [
    (("--rootfs",), dict(help="run this root filesystem directory"), None),  # run_config
    (("-b", "--bundle"), dict(help="run the OCI bundle in this directory"), None),  # run_config
    (("--name",), dict(help="the container's id"), None),  # _run
    (("--entrypoint",), dict(), _flag_entrypoint),
    (("-h", "--hostname"), dict(), _sets("hostname", lambda name: _hostname(name))),
    (("--env-file",), dict(action="append", default=[], metavar="FILE",
                           help="KEY=VALUE lines (KEY alone: ours), before -e's"),
     _flag_env_file),
    (("-e", "--env"), dict(action="append", default=[], metavar="KEY=VAL"), _flag_env),
    (("-l", "--label"), dict(action="append", default=[], metavar="KEY=VALUE"), _flag_label),
    (("-w", "--workdir"), dict(), _sets("process.cwd", _absolute_path)),
    (("-u", "--user"), dict(metavar="UID[:GID]"), _flag_user),
    (("-m", "--memory"), dict(metavar="SIZE"), _flag_memory),
    (("--memory-swap",), dict(metavar="SIZE", help="memory plus swap"), _flag_memory_swap),
    (("--cpus",), dict(), _flag_cpus),
    (("--cpu-shares",), dict(type=int), _flag_cpu_shares),
    (("--cpuset-cpus",), dict(), _flag_cpuset_cpus),
    (("--pids-limit",), dict(type=int), _flag_pids_limit),
    (("--oom-score-adj",), dict(type=int, metavar="N", help="process.oomScoreAdj: -1000 "
                                "(never killed for memory) to 1000 (first)"),
     _sets("process.oomScoreAdj")),
    (("--sysctl",), dict(action="append", default=[], metavar="KEY=VALUE",
                         help="a namespaced sysctl (linux.sysctl): kernel.shm*, kernel.msg*, "
                         "kernel.sem, fs.mqueue.*, net.* (not with --network host)"),
     _sets("linux.sysctl", _key_values)),
    (("--tmpfs",), dict(action="append", default=[], metavar="CTR[:OPTS]"), _flag_tmpfs),
    (("--mount",), dict(action="append", default=[],
                        metavar="type=bind|volume|tmpfs,target=CTR[,source=HOST|NAME][,readonly]"),
     _flag_mount),
    (("-v", "--volume"), dict(action="append", default=[], metavar="HOST:CTR[:ro|rw,PROPAGATION]",
                              help="a bind of a host path; NAME:CTR[:ro|nocopy] a volume, "
                              "CTR alone an anonymous one (volume ls)"),
     _flag_volume),
    (("--read-only",), dict(action="store_true"), _flag_read_only),  # after the mounts
    (("--cap-drop",), dict(action="append", default=[]),
     lambda run, names: _flag_caps(run, names, add=False)),
    (("--cap-add",), dict(action="append", default=[]),  # after --cap-drop, as docker
     lambda run, names: _flag_caps(run, names, add=True)),
    (("--security-opt",), dict(action="append", default=[]), _flag_security_opt),
    (("--privileged",), dict(action="store_true", help="every capability and device, no "
                             "seccomp, masked or read-only paths"), _flag_privileged),
    (("--cgroup-parent",), dict(), None),  # _run
    (("--userns",), dict(action="store_true", help="a user namespace: root inside is an "
                         "unprivileged id outside"), _flag_userns),
    (("--network", "--net"), dict(choices=["none", "host", "bridge", "slirp4netns"],
                                  help="none: loopback only (the default); host: the host's; "
                                  "bridge: on the bridge %s (or $MINICONTAINER_BRIDGE); "
                                  "slirp4netns: a user-mode stack (rootless -p)" % BRIDGE),
     _flag_network),
    (("-p", "--publish"), dict(action="append", default=[],
                               metavar="[[HOSTIP:]HOSTPORT:]CTRPORT[/tcp|udp]"),
     None),  # network_option
    (("-P", "--publish-all"), dict(action="store_true",
                                   help="publish the image's exposed ports on ports the "
                                   "kernel picks"), None),  # _flag_network
    (("--subnet",), dict(help="the bridge's subnet (default $MINICONTAINER_SUBNET or %s)"
                         % DEFAULT_SUBNET), None),  # network_option
    (("--dns",), dict(action="append", default=[], metavar="IP",
                      help="a nameserver for the container's /etc/resolv.conf"),
     _flag_etc_files),
    (("--dns-search",), dict(action="append", default=[], metavar="DOMAIN"),
     None),  # etc_files_option
    (("--add-host",), dict(action="append", default=[], metavar="NAME:IP",
                           help="a line for the container's /etc/hosts"),
     None),  # etc_files_option
    (("-t", "--tty"), dict(action="store_true"), _sets("process.terminal")),
    (("--init",), dict(action="store_true", help="a reaping init (the host's tini-static or "
                       "catatonit) as PID 1"), _flag_init),  # after the mounts and command
    (("--pull",), dict(choices=["missing", "always", "never"], help="pull the image first: "
                       "when the store lacks it (the default), always, or never"),
     None),  # image_for_run
    (("--platform",), dict(metavar="OS/ARCH[/VARIANT]", help="the image's platform (pulled "
                           "when the stored one differs)"), None),  # image_for_run
    (("-i", "--interactive"), dict(action="store_true"), None),  # _run
    (("-d", "--detach"), dict(action="store_true"), None),  # _run
    # runc's run flags: a bundle's container kept when it exits (as an image's is), the
    # rootfs moved rather than pivoted into (create's), and two defaults here
    (("--keep",), dict(action="store_true", help="keep a bundle's container when it exits "
                       "(runc's)"), None),  # _run
    (("--no-pivot",), dict(action="store_true", help="move the rootfs to / and chroot, not "
                           "pivot_root (a rootfs on a ramfs)"), None),  # _run
    (("--no-new-keyring",), dict(action="store_true", help="the default here"), None),
    (("--no-subreaper",), dict(action="store_true", help="the default here: the runtime "
                               "reaps only the container's init"), None),
    (("--rm",), dict(action="store_true", help="remove the container when it exits (else it "
                     "stays, stopped, with its changes, until delete; a bundle's always goes)"),
     None),  # _run
    (("--restart",), dict(default="no", metavar="no|on-failure[:N]|always|unless-stopped",
                          help="restart a detached container when it exits (never after "
                          "stop; each time from its image again, as a new init)"),
     _flag_restart),
    (("--stop-signal",), dict(metavar="SIGNAL", help="the signal of stop (default: the "
                              "image's StopSignal, else SIGTERM)"), _flag_stop_signal),
    (("--stop-timeout",), dict(type=int, metavar="SECONDS", help="how long stop waits before "
                               "SIGKILL (default 10)"), _flag_stop_timeout),
    (("--log-opt",), dict(action="append", default=[], metavar="max-size=SIZE|max-file=N",
                          help="a detached container's json-file log: rotated at max-size "
                          "(10m), max-file files kept (3)"), _flag_log_opt),
    (("--pid-file",), dict(), None),  # _run
    (("--console-socket",), dict(), None),  # _run
    (("--preserve-fds",), dict(type=_count, default=0, help="pass fds 3 to 3+N-1 on to the "
                               "container (after socket activation's)"), None),  # _run
]


def _parser(only=None):
    """The command line; with `only`, just that command's part of it (all when unknown)."""
    import argparse

    class Formatter(argparse.HelpFormatter):
        # argparse makes one for every add_argument; its default asks shutil (imported for
        # it) for the terminal's width each time: ~3 ms of every start.
        def __init__(self, prog):
            columns = os.environ.get("COLUMNS", "")
            try:
                width = int(columns) if columns.isdigit() else os.get_terminal_size(1).columns
            except OSError:
                width = 80
            super().__init__(prog, width=max(width - 2, 40))

    class FormatOrFilter(argparse.Action):
        """ps -f: runc's --format (table, json, a template) and docker's --filter (KEY=VALUE)
        in one."""

        def __call__(self, parser, namespace, value, option_string=None):
            if "=" in value and "{{" not in value:
                namespace.filter = (getattr(namespace, "filter", None) or []) + [value]
                return
            try:
                namespace.format = _format(value)
            except argparse.ArgumentTypeError as e:
                raise argparse.ArgumentError(self, str(e)) from None

    class Parser(argparse.ArgumentParser):
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("formatter_class", Formatter)
            super().__init__(*args, **kwargs)

        def error(self, message):
            raise Error("%s: %s" % (self.prog[len("minicontainer "):] or "usage", message), 2)

    p = Parser(prog="minicontainer", description="A container runtime in one Python file.")
    p.add_argument("--root", help="state directory (default %s)" % STATE_ROOT)
    p.add_argument("--log", help="also write errors to this file")
    p.add_argument("--log-format", choices=["text", "json"], default="text")
    p.add_argument("--debug", action="store_true", help="tracebacks for errors")
    p.add_argument("--systemd-cgroup", action="store_true",
                   help="accepted; cgroups are always managed through cgroupfs")
    p.add_argument("--rootless", choices=["true", "false", "auto"], default="auto",
                   help="run as an unprivileged user would (auto: when not the host's root)")
    p.add_argument("-v", "--version", action="store_true")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    built = []

    def cmd(name, fn, help, ids=True, add_help=True):
        if only and name != only:
            return _Unbuilt()
        built.append(name)
        sp = sub.add_parser(name, help=help, add_help=add_help)
        sp.set_defaults(fn=fn)
        if ids:
            sp.add_argument("id", metavar="ID")
        return sp

    r = cmd("run", cmd_run, "run a container from an image, a rootfs or a bundle", ids=False,
            add_help=False)
    r.add_argument("--help", action="help", help="show this help message and exit")
    for names, options, _ in RUN_FLAGS if only in (None, "run") else ():
        r.add_argument(*names, **options)
    r.add_argument("target", nargs="?", metavar="IMAGE|ID")
    r.add_argument("args", nargs=argparse.REMAINDER)

    c = cmd("create", cmd_create, "create a container from a bundle (OCI)")
    c.add_argument("-b", "--bundle", default=".")
    c.add_argument("--pid-file")
    c.add_argument("--console-socket")
    c.add_argument("--no-pivot", action="store_true")
    c.add_argument("--no-new-keyring", action="store_true",
                   help="the default here: the container keeps the caller's session keyring "
                   "(no new one is made)")
    c.add_argument("--preserve-fds", type=_count, default=0)
    sta = cmd("start", cmd_start, "start a created container (or, as docker's, stopped ones "
              "that run made: they come back detached)", ids=False)
    sta.add_argument("-a", "--attach", action="store_true", help="docker's: its output ours "
                     "until it stops, its exit status ours")
    sta.add_argument("ids", nargs="+", metavar="ID")
    lg = cmd("logs", cmd_logs, "print what a detached container wrote (stdout and stderr)")
    lg.add_argument("-f", "--follow", action="store_true", help="and what it writes next")
    lg.add_argument("-n", "--tail", type=_tail, metavar="N",
                    help="only the last N lines (all: every line, as without it)")
    lg.add_argument("-t", "--timestamps", action="store_true",
                    help="each line after the time it was written (RFC 3339)")
    rs = cmd("restart", cmd_restart, "stop containers that run kept (-d, or not --rm), then "
             "start them again as new inits, their changes kept", ids=False)
    rs.add_argument("-t", "--time", type=_count, metavar="SECONDS",
                    help="how long to wait for the stop signal's effect (default: the "
                    "container's --stop-timeout)")
    rs.add_argument("ids", nargs="+", metavar="ID")
    cmd("state", cmd_state, "print a container's OCI state")
    ls = cmd("list", cmd_list, "list containers", ids=False)
    _format_option(ls)
    ls.add_argument("-q", "--quiet", action="store_true")
    ps = cmd("ps", cmd_ps, "list a container's processes (runc), or without ID the "
             "containers (docker)", ids=False)
    ps.add_argument("-f", "--format", action=FormatOrFilter, default="table",
                    help="table, json, or a Go template as docker's ('{{.ID}}'); KEY=VALUE "
                    "is a --filter, as docker's -f")
    ps.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                    help="without ID: only containers whose name (part of it), id (its "
                    "start), status, label (KEY or KEY=VALUE) or ancestor (the image as "
                    "given) is VALUE")
    ps.add_argument("-a", "--all", action="store_true", help="stopped containers too")
    ps.add_argument("-q", "--quiet", action="store_true", help="ids only")
    ps.add_argument("id", metavar="ID", nargs="?")
    ps.add_argument("ps_args", nargs=argparse.REMAINDER, metavar="PS_OPTIONS",
                    help="with ID: the host's ps with these options, the container's "
                    "processes only (runc's)")
    sts = cmd("stats", cmd_stats, "print a container's cgroup statistics as JSON (runc's "
              "stats ID), or docker's table of the containers' use (stats [--no-stream] "
              "[ID...])", ids=False)
    sts.add_argument("--no-stream", action="store_true", help="docker's table once, not "
                     "refreshed until Ctrl-C")
    sts.add_argument("-a", "--all", action="store_true", help="stopped containers too")
    sts.add_argument("--format", help="table, json, or a Go template as docker's "
                     "('{{.Name}} {{.CPUPerc}}')")
    sts.add_argument("--no-trunc", action="store_true", help="whole ids")
    sts.add_argument("ids", nargs="*", metavar="ID")
    cmd("pause", cmd_pause, "freeze every process of a container")
    cmd("resume", cmd_resume, "thaw a paused container")
    cmd("unpause", cmd_resume, "resume, as docker calls it")
    k = cmd("kill", cmd_kill, "send a signal to a container's init (or --all): runc's kill "
            "ID [SIGNAL] (SIGTERM), or docker's kill [-s SIGNAL] ID... (SIGKILL)", ids=False)
    k.add_argument("-a", "--all", action="store_true")
    k.add_argument("-s", "--signal", help="docker's form")
    k.add_argument("ids", nargs="+", metavar="ID")
    d = cmd("delete", cmd_delete, "remove a container and all it holds")
    d.add_argument("-f", "--force", action="store_true")
    st = cmd("stop", cmd_stop, "stop containers: their stop signal, then SIGKILL after the "
             "timeout", ids=False)
    st.add_argument("-t", "--time", type=int, metavar="SECONDS",
                    help="before SIGKILL (default: the container's stop timeout, or 10)")
    st.add_argument("ids", nargs="+", metavar="ID")
    rmc = cmd("rm", cmd_rm, "remove containers (running ones with -f)", ids=False)
    rmc.add_argument("-f", "--force", action="store_true", help="kill running ones first")
    rmc.add_argument("-v", "--volumes", action="store_true",
                     help="their anonymous volumes too")
    rmc.add_argument("ids", nargs="+", metavar="ID")
    ins = cmd("inspect", cmd_inspect, "print containers as docker inspect does (JSON)",
              ids=False)
    ins.add_argument("-f", "--format", help="a Go template, as docker's "
                     "('{{.State.Pid}}', '{{json .Config}}')")
    ins.add_argument("ids", nargs="+", metavar="ID")
    cmd("wait", cmd_wait, "wait until containers stop; print their exit codes",
        ids=False).add_argument("ids", nargs="+", metavar="ID")
    tp = cmd("top", cmd_top, "a container's processes, as the host's ps shows them")
    tp.add_argument("ps_args", nargs=argparse.REMAINDER, metavar="PS_OPTIONS",
                    help="options for the host's ps (default -ef), as docker top's")
    cmd("port", cmd_port, "a container's published ports").add_argument(
        "private", nargs="?", metavar="PRIVATE_PORT[/PROTO]")
    x = cmd("exec", cmd_exec, "run another process in a running container", ids=False)
    x.add_argument("-p", "--process", help="an OCI process JSON file")
    x.add_argument("-t", "--tty", action="store_true")
    x.add_argument("-i", "--interactive", action="store_true",
                   help="accepted: the process always has our stdin, as runc's exec")
    x.add_argument("--console-socket")
    x.add_argument("-d", "--detach", action="store_true")
    x.add_argument("--pid-file")
    x.add_argument("-e", "--env", action="append", default=[])
    x.add_argument("--cwd", "-w", "--workdir")
    x.add_argument("-u", "--user")
    x.add_argument("-g", "--additional-gids", action="append", default=[], metavar="GID",
                   help="a supplementary group of the process (runc's)")
    x.add_argument("-c", "--cap", action="append", default=[])
    x.add_argument("--no-new-privs", action="store_true")
    x.add_argument("--preserve-fds", type=_count, default=0)
    x.add_argument("--apparmor", help="the AppArmor profile of the process")
    x.add_argument("--process-label", help=argparse.SUPPRESS)  # SELinux's: refused
    x.add_argument("id", metavar="ID")
    x.add_argument("args", nargs=argparse.REMAINDER)
    u = cmd("update", cmd_update, "change a running container's resource limits")
    u.add_argument("-r", "--resources", help="linux.resources JSON file, or - for stdin")
    u.add_argument("-m", "--memory")
    for flag in ("--memory-swap", "--memory-reservation", "--cpuset-cpus", "--cpuset-mems"):
        u.add_argument(flag)
    for flag in ("--kernel-memory", "--kernel-memory-tcp"):
        u.add_argument(flag, help="ignored, as runc 1.1 ignores it (the kernel dropped "
                       "kernel memory limits); said in --debug and the --log file")
    for flag in ("--cpu-shares", "--cpu-quota", "--cpu-period", "--pids-limit",
                 "--blkio-weight"):
        u.add_argument(flag, type=int)
    for flag, name in (("--cpu-rt-period", "cpu.rt_period_us"),
                       ("--cpu-rt-runtime", "cpu.rt_runtime_us")):
        u.add_argument(flag, type=int, help="%s (cgroup v1)" % name)
    e = cmd("events", cmd_events, "print a container's statistics as events")
    e.add_argument("--stats", action="store_true", help="once, then exit")
    e.add_argument("--interval", default="5s")
    cmd("features", cmd_features, "print what this runtime supports (OCI features)", ids=False)
    cmd("gc", cmd_gc, "remove what crashed containers left: state, cgroups, mounts, network "
        "namespaces, veths, leases, port forwarders (never a container kept stopped)",
        ids=False)
    pr = cmd("prune", cmd_prune, "remove every stopped container, kept ones too", ids=False)
    pr.add_argument("-f", "--force", action="store_true", help="do not ask first")
    s = cmd("spec", cmd_spec, "write a default config.json", ids=False)
    s.add_argument("-b", "--bundle")
    s.add_argument("--rootfs")
    s.add_argument("--rootless", action="store_true",
                   help="for an unprivileged user: a user namespace mapping you to root, "
                   "no network namespace, no cgroup limits")
    im = cmd("images", cmd_images, "list stored images", ids=False)
    im.add_argument("-q", "--quiet", action="store_true", help="print image IDs only")
    im.add_argument("--digests", action="store_true", help="show full manifest digests")
    _format_option(im)
    im.add_argument("--store", help="the image store (default $MINICONTAINER_STORE, or images/ "
                    "beside the runtime)")
    vol = cmd("volume", cmd_volume, "manage volumes, as docker's (in the image store's "
              "volumes/)", ids=False)
    if not isinstance(vol, _Unbuilt):  # its own sub-commands
        vsub = vol.add_subparsers(dest="volume_command", metavar="COMMAND")
        vsub.required = True
        vc = vsub.add_parser("create", help="make a volume (a random name without NAME)")
        vc.add_argument("-d", "--driver", choices=["local"], default="local")
        vc.add_argument("-l", "--label", action="append", default=[], metavar="KEY=VALUE")
        vc.add_argument("name", nargs="?", metavar="NAME")
        vl = vsub.add_parser("ls", aliases=["list"], help="list volumes")
        vl.add_argument("-q", "--quiet", action="store_true", help="names only")
        _format_option(vl)
        vr = vsub.add_parser("rm", aliases=["remove"], help="remove volumes no container uses")
        vr.add_argument("-f", "--force", action="store_true", help="no error for a missing one")
        vr.add_argument("names", nargs="+", metavar="NAME")
        vi = vsub.add_parser("inspect", help="print volumes as docker's JSON")
        vi.add_argument("-f", "--format", help="a Go template, as docker's")
        vi.add_argument("names", nargs="+", metavar="NAME")
        vp = vsub.add_parser("prune", help="remove the anonymous volumes no container uses")
        vp.add_argument("-a", "--all", action="store_true", help="named ones too")
        vp.add_argument("-f", "--force", action="store_true", help="do not ask first")
    rm = cmd("rmi", cmd_rmi, "remove stored images, and the blobs no other image uses",
             ids=False)
    rm.add_argument("--store", help="the image store")
    rm.add_argument("-f", "--force", action="store_true",
                    help="also an image that containers use (they keep its layers)")
    rm.add_argument("images", nargs="+", metavar="IMAGE")
    if not only:  # for --help's list: a start (`run`, `create`) need not pay for it
        sub.add_parser("pull", help="pull an image into the store (with tools/pull.py)",
                       add_help=False)
    p.commands = built + ["pull"]
    return p if built or not only else _parser()


class _Args:
    """What argparse's parse_args returns (its Namespace), made by _quick_args."""

    def __init__(self, **values):
        self.__dict__.update(values)


# The engine's calls (and --version), read without argparse when they are plain: argparse,
# and the re module it imports, take ~5 ms, as long as start, state, kill or delete take
# themselves. For each command (None: the global options): its options (flag: dest and
# kind: bool a switch, str a value, int a count, list a repeated value, a tuple the values
# it may take), its positionals (NAME... takes the rest: kill's ids, exec's command) and
# the defaults that are not False, None or []: all as _parser says them. Anything else
# (another flag, --flag=VALUE, -h, --, a word too many or too few) is left to argparse,
# whose errors and help stay the only ones (tests/test_cli_scan.py holds both to one
# result).
_QUICK_COMMANDS = {
    None: ({"--root": ("root", str), "--log": ("log", str),
            "--log-format": ("log_format", ("text", "json")),
            "--debug": ("debug", bool), "--systemd-cgroup": ("systemd_cgroup", bool),
            "-v": ("version", bool), "--version": ("version", bool),
            "--rootless": ("rootless", ("true", "false", "auto"))}, (),
           {"log_format": "text", "rootless": "auto"}),
    "create": ({"-b": ("bundle", str), "--bundle": ("bundle", str),
                "--pid-file": ("pid_file", str), "--console-socket": ("console_socket", str),
                "--no-pivot": ("no_pivot", bool), "--no-new-keyring": ("no_new_keyring", bool),
                "--preserve-fds": ("preserve_fds", int)}, ("id",),
               {"bundle": ".", "preserve_fds": 0}),
    "start": ({"-a": ("attach", bool), "--attach": ("attach", bool)}, ("ids...",), {}),
    "list": ({"-f": ("format", ("table", "json")), "--format": ("format", ("table", "json")),
              "-q": ("quiet", bool), "--quiet": ("quiet", bool)}, (), {"format": "table"}),
    "state": ({}, ("id",), {}),
    "delete": ({"-f": ("force", bool), "--force": ("force", bool)}, ("id",), {}),
    "kill": ({"-a": ("all", bool), "--all": ("all", bool), "-s": ("signal", str),
              "--signal": ("signal", str)}, ("ids...",), {}),
    "exec": ({"-p": ("process", str), "--process": ("process", str), "-t": ("tty", bool),
              "--tty": ("tty", bool), "-i": ("interactive", bool),
              "--interactive": ("interactive", bool), "--console-socket": ("console_socket", str),
              "-d": ("detach", bool), "--detach": ("detach", bool), "--pid-file": ("pid_file", str),
              "-e": ("env", list), "--env": ("env", list), "--cwd": ("cwd", str),
              "-w": ("cwd", str), "--workdir": ("cwd", str), "-u": ("user", str),
              "--user": ("user", str), "-c": ("cap", list), "--cap": ("cap", list),
              "--no-new-privs": ("no_new_privs", bool), "--preserve-fds": ("preserve_fds", int),
              "-g": ("additional_gids", list), "--additional-gids": ("additional_gids", list),
              "--apparmor": ("apparmor", str), "--process-label": ("process_label", str)},
             ("id", "args..."), {"preserve_fds": 0}),
    # runc's run ID in a bundle; the other flags of RUN_FLAGS at their defaults
    "run": ({"-b": ("bundle", str), "--bundle": ("bundle", str), "--pid-file": ("pid_file", str),
             "--console-socket": ("console_socket", str), "-d": ("detach", bool),
             "--detach": ("detach", bool), "--preserve-fds": ("preserve_fds", int)},
            ("target",), {"args": []}),
}


def _quick_args(argv, at):
    """parse_args(argv) of _parser for the commands of _QUICK_COMMANDS, when argv is plain;
    else None."""
    command = argv[at] if at < len(argv) else None
    if command not in _QUICK_COMMANDS or "--" in argv:
        return None
    values = {"command": command}
    if command is not None:
        values["fn"] = globals()["cmd_" + command]
    if command == "run":
        for names, options, _ in RUN_FLAGS:
            values[_flag_dest(names, options)] = options.get(
                "default", False if options.get("action") == "store_true" else None)
    for name, words in ((None, argv[:at]), (command, argv[at + 1:])):
        options, positionals, defaults = _QUICK_COMMANDS[name]
        values.update(defaults)
        for dest, kind in options.values():
            if dest not in values:
                values[dest] = {bool: False, list: []}.get(kind)
        rest, i = [], 0
        while i < len(words):
            word = words[i]
            i += 1
            if rest and positionals[-1] == "args...":
                rest.append(word)  # argparse.REMAINDER: all after the id is the command's
            elif word[:1] != "-":
                rest.append(word)
            elif word not in options:
                return None
            else:
                dest, kind = options[word]
                if kind is bool:
                    values[dest] = True
                    continue
                if i == len(words) or words[i][:1] == "-":
                    return None
                value, i = words[i], i + 1
                if kind is int and not value.isdigit() or \
                        isinstance(kind, tuple) and value not in kind:
                    return None
                if kind is list:
                    values[dest] = values[dest] + [value]
                else:
                    values[dest] = int(value) if kind is int else value
        many = positionals and positionals[-1].endswith("...")
        if len(rest) < len(positionals) - (positionals[-1:] == ("args...",)) or \
                len(rest) > len(positionals) and not many:
            return None
        for j, dest in enumerate(positionals):
            values[dest.rstrip(".")] = rest[j:] if dest.endswith("...") else rest[j]
    if command is None and not values["version"]:
        return None  # the help
    return _Args(**values)


def _split_run_args(argv):
    """`run [opts] [ID] -- CMD`: what follows the first bare `--` is the command."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, None


def _command_index(argv):
    """Where the command word is: after the global options (some of which take a value)."""
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] in ("--root", "--log", "--log-format", "--criu", "--rootless") \
            else 1
    return i


def main(argv=None):
    debug_step("main")
    argv = sys.argv[1:] if argv is None else argv
    at = _command_index(argv)
    debug = "--debug" in argv[:at]
    # Errors go to --log too (engines read it), also those found while parsing the rest.
    log = [None, "text"]
    for i, word in enumerate(argv[:at]):
        if word in ("--log", "--log-format") and i + 1 < at:
            log[word == "--log-format"] = argv[i + 1]
    if log[0]:
        try:  # an engine that reads our errors there must not find nothing
            open(log[0], "a").close()
        except OSError as e:
            log[0] = None
            _log_error("--log %s: %s" % (e.filename, e.strerror), log)
            return 1
    if debug:
        DEBUG_LOG[:] = log  # debug()'s lines, where errors go
    try:
        return _main(argv, at, log, debug)
    finally:
        del DEBUG_LOG[:]
        for msg in WARNINGS:
            _log_error(msg, log, "warning", stderr=debug)
        for msg, level in NOTICES:
            _log_error(msg, log, level, stderr=False)
        del WARNINGS[:], NOTICES[:]


class Signalled(KeyboardInterrupt):
    """SIGTERM or SIGHUP while run, create or exec sets a container up (or a pull runs):
    unwound as Ctrl-C is, a KeyboardInterrupt, so that what was made is undone (the default
    action would end the process where it stands, its container half made, a partial blob
    in the store's tmp/). Once the container's process runs, `run` and `exec` forward them
    to it instead (_forward_signals)."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def unwind_on_signals():
    def unwind(signum, frame):
        raise Signalled(signum)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) == signal.SIG_DFL:  # (not one our caller ignores: nohup)
            signal.signal(sig, unwind)


def _main(argv, at, log, debug):
    original = list(argv)
    try:
        command = argv[at] if at < len(argv) else None
        if command in ("run", "create", "exec"):
            unwind_on_signals()
        after = None
        g = _quick_args(argv, at)
        if g is None:
            parser = _parser(command)
            if command is not None and command not in parser.commands:
                import difflib
                near = difflib.get_close_matches(command, parser.commands, 1, 0.6)
                raise Error("unknown command %r%s (minicontainer --help lists them)" % (
                    command, " — did you mean %r?" % near[0] if near else ""), 2)
            if command == "pull":  # tools/pull.py's arguments and its puller, in this process
                parser.parse_args(argv[:at])
                code = cmd_pull(argv[at + 1:])
                sys.stdout.flush()  # here, where a closed pipe is caught
                return code
            if command == "run":
                head, after = _split_run_args(argv[at + 1:])
                argv = argv[:at + 1] + head
            g = parser.parse_args(argv)
        g.argv = original  # for a `run -d` that the monitor runs, and restarts
        if g.version:
            print("minicontainer version %s\nspec: %s" % (__version__, OCI_VERSION))
            return 0
        if not g.command:
            parser.print_help()
            return 2
        if g.rootless != "auto":  # runc's flag: whether cgroups (and so on) are the user's
            _ROOTLESS[:] = [g.rootless == "true"]  # (not where the state lives: runc's alike)
        if g.root is None:
            g.root = default_state_root()
            check_own_dir(g.root, "the state root", private=True)
        elif unprivileged():  # (root's --root is root's choice)
            check_own_dir(g.root, "the state root", private=True)
        if g.systemd_cgroup and g.command in ("create", "run"):
            _log_error("--systemd-cgroup: systemd does not manage the cgroups here; they are "
                       "made through cgroupfs (a slice:prefix:name path as /slice/prefix-name"
                       ".scope)", log, "warning")
        if g.command == "run":
            # After a bare `--` comes the command; before it, an image's command may begin.
            g.dashdash = after is not None
            if after is not None:
                g.args = g.args + ["--"] + after if g.args else after
        code = g.fn(g, g)
        sys.stdout.flush()  # here, where a closed pipe is caught
        return code
    except Error as e:
        if str(e):  # else said already (by the puller)
            _log_error(str(e), log)
        if debug:
            raise
        return e.code
    except Signalled as e:  # (a KeyboardInterrupt too)
        return 128 + e.signum
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Our reader left (`list | head -1`): stop quietly, as a program killed by SIGPIPE,
        # and let the final flush of stdout go nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        return 128 + signal.SIGPIPE
    except OSError as e:
        if debug:
            raise
        _log_error("%s: %s" % (e.filename, e.strerror) if e.filename and e.strerror else str(e),
                   log)
        return 1


def exit(code):
    """sys.exit(code), but without the interpreter's finalization (~3 ms: it frees every
    object of every module) when nothing waits for it: no atexit handler (weakref.finalize's,
    tempfile's) and no threading thread (concurrent.futures', the port forwarder's)."""
    import atexit
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        sys.exit(code)  # said as Python says it
    if not atexit._ncallbacks() and "threading" not in sys.modules:
        os._exit(code)
    sys.exit(code)


ColdFunction.put_in_place()

if __name__ == "__main__":
    exit(main())
