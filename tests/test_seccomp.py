"""Seccomp: profiles compiled to BPF by minicontainer, loaded into forked children on the
real kernel; each child reports what its syscalls returned through a pipe."""
import ctypes
import errno
import json
import mmap
import os
import re
import shutil
import signal
import struct
import subprocess
import sys

import pytest

import minicontainer as mc
from conftest import mc as mc_cli
from conftest import mc_bg, mc_create, mc_sh, new_id, no_state, one_line_error, set_field
from conftest import ok as succeeded

pytestmark = pytest.mark.needs_root

MACHINE = os.uname().machine
x86_64_only = pytest.mark.skipif(MACHINE != "x86_64", reason="x86_64 only")

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
PR_SET_NO_NEW_PRIVS = 38
ALLOW = {"defaultAction": "SCMP_ACT_ALLOW"}


def nr(name):
    return mc.syscall_table(mc.native_arch())[name]


def all_but(*names):
    """Every syscall but `names`: the interpreter itself needs a good many."""
    return [n for n in mc.syscall_table(mc.native_arch()) if n not in names]


def sc(name_or_nr, *args):
    """Raw syscall: (return value, errno), errno 0 on success."""
    number = nr(name_or_nr) if isinstance(name_or_nr, str) else name_or_nr
    ctypes.set_errno(0)
    rc = libc.syscall(ctypes.c_long(number), *(ctypes.c_ulong(a & (1 << 64) - 1)
                                                for a in args))
    return rc, (ctypes.get_errno() if rc == -1 else 0)


def in_child(profile, probe, nnp=True):
    """Fork; the child sets no_new_privs, applies `profile`, runs `probe` and sends its
    JSON result back. Returns (result or None, wait status)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            if nnp:
                assert libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
            mc.apply_seccomp(profile)
            out = {"ok": probe()}
        except BaseException as e:  # noqa: BLE001 - the parent reports it
            out = {"exception": type(e).__name__, "message": str(e)}
        try:
            os.write(w, json.dumps(out).encode())
        except BaseException:  # noqa: BLE001
            code = 3
        os._exit(code)
    os.close(w)
    data = b""
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    return (json.loads(data) if data else None), status


def ok(profile, probe, nnp=True):
    result, status = in_child(profile, probe, nnp)
    assert result is not None, f"child died: status {status:#x}"
    assert "ok" in result, result
    return result["ok"]


def killed_by_sigsys(status):
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


# ---- actions -------------------------------------------------------------------------

def test_errno_with_errno_ret():
    profile = dict(ALLOW, syscalls=[
        {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 99},
        {"names": ["getpgid"], "action": "SCMP_ACT_ERRNO"}])
    res = ok(profile, lambda: [sc("getppid"), sc("getpgid", 0), sc("getpid")])
    assert res[0] == [-1, 99]
    assert res[1] == [-1, errno.EPERM]  # errnoRet defaults to EPERM
    assert res[2][0] > 0 and res[2][1] == 0


def test_default_errno_ret():
    profile = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 42,
               "syscalls": [{"names": all_but("getppid"), "action": "SCMP_ACT_ALLOW"}]}
    res = ok(profile, lambda: [sc("getppid"), sc("getpid")[1]])
    assert res == [[-1, 42], 0]


@pytest.mark.parametrize("action", ["SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD",
                                    "SCMP_ACT_KILL_PROCESS"])
def test_kill(action):
    profile = dict(ALLOW, syscalls=[{"names": ["getppid"], "action": action}])
    result, status = in_child(profile, lambda: sc("getppid"))
    assert result is None and killed_by_sigsys(status), status


def test_trap_delivers_sigsys_to_a_handler():
    def probe():
        hits = []
        signal.signal(signal.SIGSYS, lambda *a: hits.append(1))
        rc = sc("getppid")
        return [rc, len(hits)]
    profile = dict(ALLOW, syscalls=[{"names": ["getppid"], "action": "SCMP_ACT_TRAP"}])
    rc, hits = ok(profile, probe)
    assert hits == 1
    assert rc[0] != os.getpid()  # the call never ran


def test_log_allows_and_trace_without_tracer_is_enosys():
    profile = dict(ALLOW, syscalls=[{"names": ["getppid"], "action": "SCMP_ACT_LOG"},
                                    {"names": ["getpgid"], "action": "SCMP_ACT_TRACE"}])
    parent = os.getpid()
    res = ok(profile, lambda: [sc("getppid"), sc("getpgid", 0)])
    assert res[0] == [parent, 0]
    assert res[1] == [-1, errno.ENOSYS]


# ---- argument conditions ---------------------------------------------------------------

V = 0x1_0000_0005
PROBES = [0, 4, 5, 6, V - 1, V, V + 1, 0x2_0000_0000, 0x1_FFFF_FFFF, (1 << 64) - 1]
OPS = {"SCMP_CMP_EQ": lambda a: a == V, "SCMP_CMP_NE": lambda a: a != V,
       "SCMP_CMP_LT": lambda a: a < V, "SCMP_CMP_LE": lambda a: a <= V,
       "SCMP_CMP_GT": lambda a: a > V, "SCMP_CMP_GE": lambda a: a >= V}


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("index", [0, 5])
def test_64bit_comparisons(op, index):
    # getppid ignores its arguments, but seccomp sees the raw registers.
    profile = dict(ALLOW, syscalls=[{"names": ["getppid"], "action": "SCMP_ACT_ERRNO",
                                     "errnoRet": 77,
                                     "args": [{"index": index, "value": V, "op": op}]}])

    def probe():
        out = []
        for a in PROBES:
            args = [0] * 6
            args[index] = a
            out.append(sc("getppid", *args)[1] == 77)
        return out
    assert ok(profile, probe) == [OPS[op](a) for a in PROBES]


def test_masked_eq_64bit():
    mask, want = 0xF000_0000_0000_000F, 0x1000_0000_0000_0005
    profile = dict(ALLOW, syscalls=[{"names": ["getppid"], "action": "SCMP_ACT_ERRNO",
                                     "errnoRet": 78, "args": [
                                         {"index": 2, "value": mask, "valueTwo": want,
                                          "op": "SCMP_CMP_MASKED_EQ"}]}])
    probes = [want, 0x1234_5678_9ABC_DEF5 & ~mask | want, 0x1000_0000_0000_0004,
              0x2000_0000_0000_0005, 0x0000_0000_0000_0005, 0x1FFF_FFFF_FFFF_FFF5]
    res = ok(profile, lambda: [sc("getppid", 0, 0, a)[1] == 78 for a in probes])
    assert res == [(a & mask) == want for a in probes]


def test_conditions_on_different_args_are_anded_first_match_wins():
    profile = dict(ALLOW, syscalls=[
        {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 11,
         "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                  {"index": 1, "value": 2, "op": "SCMP_CMP_EQ"}]},
        {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 12,
         "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]},
        {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}])
    res = ok(profile, lambda: [sc("getppid", 1, 2)[1], sc("getppid", 1, 3)[1],
                               sc("getppid", 0, 2)[1]])
    assert res == [11, 12, 13]


def test_conditions_on_the_same_arg_are_alternatives_like_runc():
    profile = dict(ALLOW, syscalls=[
        {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 21,
         "args": [{"index": 0, "value": 3, "op": "SCMP_CMP_EQ"},
                  {"index": 0, "value": 7, "op": "SCMP_CMP_EQ"}]}])
    res = ok(profile, lambda: [sc("getppid", a)[1] for a in (3, 7, 5)])
    assert res == [21, 21, 0]


def test_big_program_needs_long_jumps():
    # A conditional rule for every syscall: ~3000 instructions, far past 8-bit jumps.
    magic = 0xDEAD_BEEF_CAFE
    table = mc.syscall_table(mc.native_arch())
    calls = [{"names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": 1 + n % 300,
              "args": [{"index": 5, "value": magic, "op": "SCMP_CMP_EQ"}]}
             for name, n in sorted(table.items())]
    profile = dict(ALLOW, syscalls=calls)
    assert len(mc.seccomp_program(profile)) // 8 > 2000
    names = ["getppid", "getpid", "read", "getcwd", "uname", "sched_yield"]
    res = ok(profile, lambda: [sc(n, 0, 0, 0, 0, 0, magic)[1] for n in names]
             + [sc("getppid")[1]])
    assert res == [1 + table[n] % 300 for n in names] + [0]


# ---- ABIs --------------------------------------------------------------------------------

@x86_64_only
def test_x32_numbers_are_killed_unless_listed():
    x32_getpid = 0x40000000 | 39
    result, status = in_child(ALLOW, lambda: sc(x32_getpid))
    assert result is None and killed_by_sigsys(status)
    result, status = in_child(mc.default_seccomp_profile(), lambda: sc(x32_getpid))
    assert result is None and killed_by_sigsys(status)
    # Listed: x32 gets its own (bit-30) numbers; this kernel may not run x32 at all.
    profile = dict(ALLOW, architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X32"], syscalls=[
        {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 55}])
    assert ok(profile, lambda: [sc(x32_getpid)[1], sc(x32_getpid + 1)[1] in (0, 38)]) \
        == [55, True]


def _int80(number):
    """Make an i386 syscall (int 0x80) from this 64-bit process; returns eax."""
    code = struct.pack("<BI", 0xB8, number) + b"\xcd\x80\xc3"  # mov eax, N; int 0x80; ret
    buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    buf.write(code)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    return ctypes.CFUNCTYPE(ctypes.c_int)(addr)()


@x86_64_only
def test_i386_is_killed_unless_listed():
    i386_getpid = mc.syscall_table("i386")["getpid"]
    if ok(None, lambda: _int80(i386_getpid)) <= 0:
        pytest.skip("kernel without IA32 emulation")
    result, status = in_child(mc.default_seccomp_profile(), lambda: _int80(i386_getpid))
    assert result is None and killed_by_sigsys(status)
    # i386 numbers differ (x86_64's 64 is semget): the rule must follow each ABI's table.
    i386_getppid = mc.syscall_table("i386")["getppid"]
    profile = dict(ALLOW, architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"], syscalls=[
        {"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 56}])
    res = ok(profile, lambda: [_int80(i386_getppid), _int80(i386_getpid), sc("getppid")[1],
                               sc(i386_getppid, 0, 0, 0)[1]])
    assert res[0] == -56 and res[1] > 0 and res[2] == 56 and res[3] != 56


def test_names_of_other_arches_and_unknown_names_are_skipped():
    profile = dict(ALLOW, syscalls=[{"names": ["socketcall", "arm_fadvise64_64", "getppid"],
                                     "action": "SCMP_ACT_ERRNO", "errnoRet": 5}])
    for arch in ("x86_64", "aarch64"):
        assert mc.seccomp_program(profile, arch)
    assert ok(profile, lambda: sc("getppid")[1]) == 5
    unknown = dict(ALLOW, syscalls=[{"names": ["nosuchcall", "getppid"],
                                     "action": "SCMP_ACT_ERRNO", "errnoRet": 7}])
    assert ok(unknown, lambda: sc("getppid")[1]) == 7
    with pytest.raises(mc.Error, match="not a string"):
        mc.seccomp_program(dict(ALLOW, syscalls=[{"names": [5], "action": "SCMP_ACT_ERRNO"}]))


def test_aarch64_program_checks_its_arch():
    prog = mc.seccomp_program(mc.default_seccomp_profile(), "aarch64")
    insns = [struct.unpack("<HBBI", prog[i:i + 8]) for i in range(0, len(prog), 8)]
    assert insns[0] == (0x20, 0, 0, 4)  # ld seccomp_data.arch
    assert insns[1][0] == 0x15 and insns[1][3] == 0xC00000B7  # AUDIT_ARCH_AARCH64
    assert 0xC000003E not in [k for code, _, _, k in insns if code == 0x15]


def test_future_syscalls_get_enosys_under_a_denying_default():
    profile = {"defaultAction": "SCMP_ACT_ERRNO",
               "syscalls": [{"names": all_but("getpid"), "action": "SCMP_ACT_ALLOW"}]}
    newest = max(mc.syscall_table(mc.native_arch()).values())
    assert ok(profile, lambda: [sc(newest + 1)[1], sc(newest + 100)[1], sc("getpid")[1]]) \
        == [errno.ENOSYS, errno.ENOSYS, errno.EPERM]


# ---- loading ----------------------------------------------------------------------------

def test_flags_are_honoured():
    profile = dict(ALLOW, flags=["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                                 "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
                   syscalls=[{"names": ["getppid"], "action": "SCMP_ACT_ERRNO",
                              "errnoRet": 31}])
    assert ok(profile, lambda: sc("getppid")[1]) == 31


def test_load_without_no_new_privs_or_cap_sys_admin_fails():
    def probe():
        os.setgid(65534)
        os.setuid(65534)  # drops every capability
        try:
            mc.apply_seccomp(dict(ALLOW, syscalls=[{"names": ["getppid"],
                                                    "action": "SCMP_ACT_ERRNO"}]))
        except mc.Error as e:
            return ["Error", str(e)]
        return ["loaded"]
    res = ok(None, probe, nnp=False)
    assert res[0] == "Error" and "no_new_privs" in res[1]


def test_none_means_unconfined():
    assert ok(None, lambda: sc("getppid")[0]) == os.getpid()


@pytest.mark.parametrize("profile, words", [
    ({"defaultAction": "SCMP_ACT_NOPE"}, "SCMP_ACT_NOPE"),
    ({}, "defaultAction"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "colour": 1}, "colour"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_Z80"]}, "SCMP_ARCH_Z80"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_X"]}, "FLAG_X"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "x.sock"}, "absolute path"),
    ({"defaultAction": "SCMP_ACT_NOTIFY"}, "SCMP_ACT_NOTIFY needs a listenerPath"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 5000}, "5000"),
    (dict(ALLOW, syscalls=[{"names": ["read"], "action": "SCMP_ACT_BOGUS"}]), "SCMP_ACT_BOGUS"),
    (dict(ALLOW, syscalls=[{"names": ["read"], "action": "SCMP_ACT_ERRNO",
                            "weird": 1}]), "weird"),
    (dict(ALLOW, syscalls=[{"names": [], "action": "SCMP_ACT_ERRNO"}]), "no syscall names"),
    (dict(ALLOW, syscalls=[{"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [
        {"index": 0, "value": 1, "op": "SCMP_CMP_SIMILAR"}]}]), "SCMP_CMP_SIMILAR"),
    (dict(ALLOW, syscalls=[{"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [
        {"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]), "index 6"),
    (dict(ALLOW, syscalls=[{"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [
        {"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}]}]), "-1"),
    (dict(ALLOW, syscalls=[{"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [
        {"index": 0, "value": 1, "op": "SCMP_CMP_EQ", "hint": 2}]}]), "hint"),
    ("not a dict", "object"),
])
def test_bad_profiles_are_errors(profile, words):
    with pytest.raises(mc.Error, match=re.escape(words)) as e:
        mc.seccomp_program(profile)
    assert str(e.value).startswith("seccomp: ")


# ---- the default profile ----------------------------------------------------------------

# Each with arguments that would fail harmlessly should the filter let the call through.
DENIED = [
    ("mount", 0, 0, 0, 0, 0), ("umount2", 0, 0), ("unshare", 0x10000000), ("setns", 9999, 0),
    ("pivot_root", 0, 0), ("kexec_load", 0, 0, 0, 0xFFFFFFFF), ("init_module", 0, 0, 0),
    ("finit_module", 9999, 0, 0), ("delete_module", 0, 0), ("bpf", 9999, 0, 0),
    ("perf_event_open", 0, 0, -1, -1, 0), ("ptrace", 0xFFFF, 0, 0, 0), ("keyctl", 9999),
    ("add_key", 0, 0, 0, 0, 0), ("request_key", 0, 0, 0, 0), ("reboot", 0, 0, 0, 0),
    ("swapon", 0, 0), ("swapoff", 0), ("acct", 1), ("settimeofday", 1, 1),
    ("clock_settime", 0, 1), ("open_by_handle_at", 9999, 0, 0), ("userfaultfd", 0xFFFF),
    ("process_vm_readv", 1, 0, 0, 0, 0, 0), ("io_uring_setup", 0, 0), ("fsopen", 0, 0),
    ("open_tree", 9999, 0, 0), ("move_mount", 9999, 0, 9999, 0, 0), ("chroot", 0),
    ("personality", 0x0040000), ("personality", 0x1_0000_0000),
    ("clone", 0x10000000 | signal.SIGCHLD, 0, 0, 0, 0),  # CLONE_NEWUSER
    ("clone", 0x20000 | signal.SIGCHLD, 0, 0, 0, 0),  # CLONE_NEWNS
    ("socket", 40, 1, 0),  # AF_VSOCK
]


def test_default_profile_denies_with_eperm():
    caps = set(mc.DEFAULT_CAPS) - {"CAP_SYS_CHROOT"}

    def probe():
        out = []
        for name, *args in DENIED:
            rc, err = sc(name, *args)
            if rc == 0 and name == "clone":
                os._exit(0)  # the filter failed and this is a child: don't run the tests
            out.append([name, rc, err])
        return out
    res = ok(mc.default_seccomp_profile(caps), probe)
    assert [r for r in res if r[1:] != [-1, errno.EPERM]] == []


def test_default_profile_clone3_is_enosys_and_threads_still_work():
    def probe():
        import threading
        got = []
        t = threading.Thread(target=lambda: got.append(sc("gettid")[0]))
        t.start()
        t.join()
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        _, status = os.waitpid(pid, 0)
        unix_socket = sc("socket", 1, 1, 0)[1]
        personality = nr("personality")  # PER_LINUX32 makes uname() say i686 from here
        return [sc("clone3", 0, 0), got[0] > 0, os.waitstatus_to_exitcode(status),
                [sc(personality, p)[1] for p in (0xFFFFFFFF, 0, 8, 0x20000, 0x20008, 0)],
                unix_socket]
    clone3, thread_ran, child_exit, personalities, unix_socket = \
        ok(mc.default_seccomp_profile(), probe)
    assert clone3 == [-1, errno.ENOSYS]
    assert thread_ran and child_exit == 7
    assert personalities == [0] * 6
    assert unix_socket == 0


def exec_under(profile, argv):
    """Exec argv in a child under `profile`; returns (exit status, stdout, stderr)."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            mc.apply_seccomp(profile)
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    os.close(out_w)
    os.close(err_w)
    with os.fdopen(out_r, "rb") as o, os.fdopen(err_r, "rb") as e:
        out, err = o.read().decode(), e.read().decode()
    _, status = os.waitpid(pid, 0)
    return status, out, err


def test_default_profile_runs_busybox():
    busybox = shutil.which("busybox") or "/bin/busybox"
    status, out, err = exec_under(mc.default_seccomp_profile(),
                                  [busybox, "sh", "-c", ("echo ok; ls /; busybox id -u; "
                                   "busybox sleep 0.01 & wait; busybox ps >/dev/null && "
                                   "echo ps-ok")])
    assert os.waitstatus_to_exitcode(status) == 0, err
    lines = out.splitlines()
    assert lines[0] == "ok" and "proc" in lines and "0" in lines and "ps-ok" in lines


def test_default_profile_runs_glibc_programs_and_python():
    script = ("set -e; ls -l / >/dev/null; cat /etc/os-release | head -1; date >/dev/null; "
              "id -u; tar -cf - /etc/hostname 2>/dev/null | tar -tf - >/dev/null; "
              "sort </etc/passwd >/dev/null; echo glibc-ok")
    status, out, err = exec_under(mc.default_seccomp_profile(), ["/bin/sh", "-c", script])
    assert os.waitstatus_to_exitcode(status) == 0, err
    assert out.splitlines()[-1] == "glibc-ok"
    code = ("import subprocess, threading, socket, tempfile, os, multiprocessing\n"
            "t = threading.Thread(target=print, args=('thread',)); t.start(); t.join()\n"
            "print(subprocess.run(['/bin/echo', 'sub'], capture_output=True, text=True)"
            ".stdout.strip())\n"
            "with tempfile.TemporaryDirectory() as d: open(os.path.join(d, 'f'), 'w').close()\n"
            "a, b = socket.socketpair(); a.send(b'x'); print(b.recv(1).decode())\n"
            "with multiprocessing.Pool(2) as p: print(sum(p.map(abs, [-1, -2])))\n")
    status, out, err = exec_under(mc.default_seccomp_profile(), [sys.executable, "-c", code])
    assert os.waitstatus_to_exitcode(status) == 0, err
    assert out.split() == ["thread", "sub", "x", "3"]


def test_default_profile_with_cap_sys_admin_allows_namespaces():
    profile = mc.default_seccomp_profile(set(mc.DEFAULT_CAPS) | {"CAP_SYS_ADMIN"})
    res = ok(profile, lambda: [sc("unshare", 0)[1], sc("clone3", 0, 0)[1]])
    assert res == [0, errno.EINVAL]  # reached the kernel


def test_default_profile_names_all_resolve_and_compile_for_both_arches():
    profile = mc.default_seccomp_profile(set(mc._DEFAULT_BY_CAP) | set(mc.DEFAULT_CAPS))
    for arch in ("x86_64", "aarch64"):
        assert 0 < len(mc.seccomp_program(profile, arch)) // 8 < 1000
    names = [n for call in profile["syscalls"] for n in call["names"]]
    for name in ("read", "write", "execve", "openat", "clone", "exit_group", "futex"):
        assert name in mc.syscall_table("aarch64")
        assert name in mc.syscall_table("x86_64")
    missing = [n for n in names if not any(n in mc.syscall_table(a)
                                           for a in ("x86_64", "i386", "aarch64"))]
    assert missing == []


# ---- --security-opt seccomp=... --------------------------------------------------------

def test_option_values(tmp_path):
    assert mc.seccomp_profile_for_option("unconfined") is None
    assert mc.seccomp_profile_for_option(None) == mc.default_seccomp_profile()
    oci = tmp_path / "oci.json"
    oci.write_text(json.dumps(dict(ALLOW, syscalls=[{"names": ["getppid"],
                                                     "action": "SCMP_ACT_ERRNO"}])))
    assert mc.seccomp_profile_for_option(str(oci))["syscalls"][0]["names"] == ["getppid"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"defaultAction": "SCMP_ACT_MAYBE"}')
    with pytest.raises(mc.Error, match="SCMP_ACT_MAYBE"):
        mc.seccomp_profile_for_option(str(bad))
    with pytest.raises(mc.Error, match="cannot read"):
        mc.seccomp_profile_for_option(str(tmp_path / "absent.json"))


def test_docker_format_profile_is_resolved(tmp_path):
    docker = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "archMap": [{"architecture": "SCMP_ARCH_X86_64",
                     "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
                    {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
        "syscalls": [
            {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["mount"], "action": "SCMP_ACT_ALLOW",
             "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38,
             "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
            {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW",
             "includes": {"arches": ["amd64", "x32"]}},
            {"names": ["cacheflush"], "action": "SCMP_ACT_ALLOW",
             "includes": {"arches": ["arm", "arm64"]}},
        ]}
    path = tmp_path / "docker.json"
    path.write_text(json.dumps(docker))
    plain = mc.seccomp_profile_for_option(str(path), caps=["CAP_CHOWN"])
    names = [n for c in plain["syscalls"] for n in c["names"]]
    assert "mount" not in names and "clone3" in names and "ptrace" in names
    assert ("arch_prctl" in names) == (MACHINE == "x86_64")
    assert ("cacheflush" in names) == (MACHINE == "aarch64")
    assert plain["architectures"][0] == ("SCMP_ARCH_X86_64" if MACHINE == "x86_64"
                                         else "SCMP_ARCH_AARCH64")
    admin = mc.seccomp_profile_for_option(str(path), caps=["CAP_SYS_ADMIN"])
    names = [n for c in admin["syscalls"] for n in c["names"]]
    assert "mount" in names and "clone3" not in names


# ---- tables -----------------------------------------------------------------------------

def _header(path):
    with open(path) as f:
        return {m[0]: int(m[1]) for m in re.findall(
            r"#define __NR_(\w+)\s+(?:\(__X32_SYSCALL_BIT \+ )?(\d+)", f.read())}


HEADERS = "/usr/include/x86_64-linux-gnu/asm"


@pytest.mark.parametrize("abi, header, bit", [("x86_64", "unistd_64.h", 0),
                                              ("i386", "unistd_32.h", 0),
                                              ("x32", "unistd_x32.h", 0x40000000)])
def test_tables_match_the_installed_x86_headers(abi, header, bit):
    path = os.path.join(HEADERS, header)
    if not os.path.exists(path):
        pytest.skip(f"{path} absent (linux-libc-dev)")
    want = {name: n | bit for name, n in _header(path).items()}
    table = mc.syscall_table(abi)
    assert {n: table.get(n) for n in want if table.get(n) != want[n]} == {}
    assert max(table.values()) >= max(want.values())


def test_aarch64_table_matches_the_generic_header():
    if not shutil.which("cpp") or not os.path.exists("/usr/include/asm-generic/unistd.h"):
        pytest.skip("needs cpp and asm-generic/unistd.h")
    # arm64's uapi asm/unistd.h selects these before including the generic table.
    src = "".join(f"#define {w}\n" for w in (
        "__ARCH_WANT_RENAMEAT", "__ARCH_WANT_NEW_STAT", "__ARCH_WANT_SET_GET_RLIMIT",
        "__ARCH_WANT_SYS_CLONE3", "__ARCH_WANT_MEMFD_SECRET")) + \
        "#define __BITS_PER_LONG 64\n#include <asm-generic/unistd.h>\n"
    macros = dict(re.findall(r"#define (__NR\w+) (.*)", subprocess.run(
        ["cpp", "-dM", "-P", "-"], input=src, capture_output=True, text=True,
        check=True).stdout))

    def value(v):
        v = v.replace(" ", "")
        if v.isdigit():
            return int(v)
        if v in macros:
            return value(macros[v])
        base, add = re.fullmatch(r"\((\w+)\+(\d+)\)", v).groups()
        return value(base) + int(add)
    want = {k[5:]: value(v) for k, v in macros.items()
            if k.startswith("__NR_") and k not in ("__NR_syscalls", "__NR_arch_specific_syscall")}
    table = mc.syscall_table("aarch64")
    assert {n: table.get(n) for n in want if table.get(n) != want[n]} == {}


def test_tables_are_parsed_lazily():
    code = ("import minicontainer as m; assert m._syscall_tables == {}, 'parsed at import'; "
            "m.syscall_table('aarch64'); assert list(m._syscall_tables) == ['aarch64']")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(mc.__file__)))
    subprocess.run([sys.executable, "-c", code], check=True, env=env,
                   cwd=os.path.dirname(os.path.abspath(mc.__file__)))


# ---- a real musl userland: Alpine's minirootfs, chrooted ---------------------------------

ALPINE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..",
                      "shared", "data", f"alpine-minirootfs-3.20.3-{MACHINE}.tar.gz")


@pytest.mark.skipif(not os.path.exists(ALPINE), reason="no Alpine minirootfs in shared/data")
def test_default_profile_runs_alpine_apk_and_musl(tmp_path):
    subprocess.run(["tar", "-xzf", ALPINE, "-C", str(tmp_path)], check=True)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(w, 1)
            os.dup2(w, 2)
            os.chroot(str(tmp_path))
            os.chdir("/")
            libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
            mc.apply_seccomp(mc.default_seccomp_profile())
            os.execve("/bin/sh", ["sh", "-c", (
                "set -e; apk --version; apk info | grep -qx musl; apk verify >/dev/null; "
                "ls / >/dev/null; (sleep 0.01 & wait); unshare -U true 2>/dev/null && exit 9; "
                "echo alpine-ok")], {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        finally:
            os._exit(127)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out
    assert out.startswith("apk-tools") and out.splitlines()[-1] == "alpine-ok", out


# ---- containers: `minicontainer.py run` ------------------------------------------------

def denying_mkdir(tmp_path):
    """The default profile, mkdir denied with EACCES first: a profile file's path."""
    profile = mc.default_seccomp_profile()
    profile["syscalls"].insert(0, {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                                   "errnoRet": errno.EACCES})
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile))
    return path


def test_container_with_a_profile_file(busybox_rootfs, tmp_path):
    path = denying_mkdir(tmp_path)
    r = mc_sh("mkdir /tmp/x; echo rc=$?; unshare -U true; echo rc=$?; echo ok",
              "--security-opt", f"seccomp={path}", rootfs=busybox_rootfs,
              state_root=str(tmp_path / "state"))
    assert r.stdout.split() == ["rc=1", "rc=1", "ok"], r.stderr
    assert "Permission denied" in r.stderr and "Operation not permitted" in r.stderr


def test_container_with_a_filter_near_the_kernels_limit(busybox_rootfs, tmp_path):
    """A filter of nearly 4096 instructions (far past 8-bit jumps) is loaded whole by the
    container's init and applies."""
    magic = 0xDEAD_BEEF_CAFE
    names = sorted(mc.syscall_table(mc.native_arch()))
    calls = [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
              "errnoRet": errno.EACCES}]
    for index, count in ((5, 400), (4, 150)):  # rules that never match: an argument is magic
        calls += [{"names": [name], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                   "args": [{"index": index, "value": magic, "op": "SCMP_CMP_EQ"}]}
                  for name in names[:count]]
    profile = dict(ALLOW, syscalls=calls)
    assert len(mc.seccomp_program(profile)) // 8 > 4000
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile))
    r = mc_sh("mkdir /tmp/x; echo rc=$?; echo ok", "--security-opt", f"seccomp={path}",
              rootfs=busybox_rootfs, state_root=str(tmp_path / "state"))
    assert r.stdout.split() == ["rc=1", "ok"], r.stderr
    assert "Permission denied" in r.stderr


def test_filter_reaches_a_user_namespaces_init_and_execs_process(walkable_rootfs, tmp_path):
    """The filter applies to the init of a user namespace (forked by the namespace's first
    child) and to exec's process (forked by its middle process) alike."""
    path, state_root = denying_mkdir(tmp_path), str(tmp_path / "state")
    r = mc_sh("mkdir /tmp/x; echo rc=$?", "--userns", "--security-opt", f"seccomp={path}",
              rootfs=walkable_rootfs, state_root=state_root)
    assert r.stdout == "rc=1\n" and "Permission denied" in r.stderr, (r.stdout, r.stderr)
    cid = new_id()
    succeeded(mc_bg("run", "-d", "--name", cid, "--security-opt", f"seccomp={path}", "--rootfs",
                    walkable_rootfs, "--", "sleep", "1000", state_root=state_root))
    try:
        r = mc_cli("exec", cid, "sh", "-c", "mkdir /tmp/y; echo rc=$?", state_root=state_root)
        assert r.stdout == "rc=1\n" and "Permission denied" in r.stderr, (r.stdout, r.stderr)
    finally:
        succeeded(mc_cli("delete", "-f", cid, state_root=state_root))


def test_a_bad_profile_fails_create_and_leaves_nothing(bundle, state_root, no_leaks):
    b = bundle(edit=set_field("linux.seccomp", {"defaultAction": "SCMP_ACT_SOMETIMES"}))
    _, r = mc_create(b, state_root=state_root, check=False)
    assert "SCMP_ACT_SOMETIMES" in one_line_error(r)
    assert no_state(state_root)


def test_container_unconfined_reaches_the_kernel(busybox_rootfs, tmp_path):
    r = mc_sh("unshare -U true; echo rc=$?", "--security-opt", "seccomp=unconfined",
              rootfs=busybox_rootfs, state_root=str(tmp_path / "state"))
    assert r.stdout == "rc=0\n", r.stderr


# ---- seccomp notify: an agent answers the container's calls ------------------------------

SECCOMP_IOCTL_NOTIF_RECV = 0xc0502100  # _IOWR('!', 0, struct seccomp_notif), 80 bytes
SECCOMP_IOCTL_NOTIF_SEND = 0xc0182101  # _IOWR('!', 1, struct seccomp_notif_resp), 24 bytes


def seccomp_agent(path, got, answer_errno):
    """A seccomp agent on a unix socket: takes one listener (with its state, as the runtime
    spec's containerProcessState), then fails every call it is asked about with
    answer_errno until the listener closes (the container ended)."""
    import fcntl
    import socket
    import threading
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen()

    def serve():
        conn, _ = server.accept()
        msg, fds, _, _ = socket.recv_fds(conn, 65536, 1)
        conn.close()
        got["state"], got["calls"] = json.loads(msg), []
        listener = fds[0]
        while True:
            req = bytearray(80)
            try:
                fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, req)
            except OSError:
                break  # no process left under the filter
            notif_id, pid = struct.unpack_from("QI", req)
            got["calls"].append(struct.unpack_from("i", req, 16)[0])  # data.nr
            resp = struct.pack("QqiI", notif_id, 0, -answer_errno, 0)
            try:
                fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, bytearray(resp))
            except OSError:
                pass  # the caller died meanwhile
        os.close(listener)
        server.close()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_seccomp_notify_hands_the_listener_to_an_agent(busybox_rootfs, tmp_path):
    sock = str(tmp_path / "agent.sock")
    got = {}
    agent = seccomp_agent(sock, got, errno.EROFS)
    profile = mc.default_seccomp_profile()
    profile["syscalls"].insert(0, {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"})
    profile.update(listenerPath=sock, listenerMetadata="from-the-test")
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile))
    r = mc_sh("mkdir /tmp/x; echo rc=$?; test -d /tmp/x || echo no-dir", "--security-opt",
              f"seccomp={path}", rootfs=busybox_rootfs, state_root=str(tmp_path / "state"),
              name="notified")
    agent.join(timeout=30)
    assert r.stdout.split() == ["rc=1", "no-dir"], r.stderr
    assert "Read-only file system" in r.stderr  # the agent's answer, not the kernel's
    assert got["calls"] and set(got["calls"]) <= {nr("mkdir"), nr("mkdirat")}
    state = got["state"]
    assert state["fds"] == ["seccompFd"] and state["metadata"] == "from-the-test"
    assert state["state"]["id"] == "notified" and state["pid"] == state["state"]["pid"] > 0
