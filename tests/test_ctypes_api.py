"""minicontainer.ctypes_api() (the part of ctypes' API the runtime uses, made of its C half
alone, so that a start does not import the ctypes package) must behave as ctypes does."""
import ctypes
import errno
import json
import os
import subprocess
import sys

import pytest

import minicontainer as mc

api = mc.ctypes_api()


@pytest.mark.parametrize("init,size", [
    (b"", None), (b"abc", None), (b"a\x00b\x00", None), (b"abc", 3), (b"abc", 8),
    (b"\x00" * 5, 5), (0, None), (16, None), (b"", 4),
])
def test_create_string_buffer_as_ctypes(init, size):
    want = ctypes.create_string_buffer(init, size) if size is not None \
        else ctypes.create_string_buffer(init)
    got = api.create_string_buffer(init, size) if size is not None \
        else api.create_string_buffer(init)
    assert (got.raw, got.value, len(got)) == (want.raw, want.value, len(want))
    assert ctypes.sizeof(got) == ctypes.sizeof(want)


def test_a_buffer_too_small_is_refused_as_by_ctypes():
    with pytest.raises(ValueError) as want:
        ctypes.create_string_buffer(b"abcd", 3)
    with pytest.raises(ValueError) as got:
        api.create_string_buffer(b"abcd", 3)
    assert str(got.value) == str(want.value)


@pytest.mark.parametrize("name,values", [
    ("c_long", [0, -1, 2 ** 63 - 1, -2 ** 63, 2 ** 64 + 5]),
    ("c_ulong", [0, -1, 2 ** 64 - 1, 2 ** 64 + 5]),
    ("c_uint32", [0, -1, 2 ** 32 - 1, 2 ** 32 + 7]),
])
def test_scalar_types_as_ctypes(name, values):
    ours, theirs = getattr(api, name), getattr(ctypes, name)
    assert ctypes.sizeof(ours) == ctypes.sizeof(theirs)
    assert ctypes.alignment(ours) == ctypes.alignment(theirs)
    for v in values:
        assert ours(v).value == theirs(v).value
    array = (ours * 3)(1, 2, 3)
    assert bytes(array) == bytes((theirs * 3)(1, 2, 3))


def test_libc_calls_as_ctypes():
    theirs = ctypes.CDLL(None, use_errno=True)
    theirs.syscall.restype = ctypes.c_long
    brk = mc.syscall_nr("brk")
    # a pointer: above 4 GiB on a 64-bit process, cut short if the result were an int
    assert mc.libc().syscall(brk, 0) == theirs.syscall(brk, 0)
    assert mc.libc().getpid() == os.getpid()
    assert mc.libc().close(-1) == -1
    assert api.get_errno() == errno.EBADF
    # pull.py's fewer_malloc_arenas takes a missing function so (a libc without mallopt)
    with pytest.raises(AttributeError):
        mc.libc().no_such_function_here
    with pytest.raises(OSError) as e:
        mc.prctl(-1)
    assert e.value.errno == errno.EINVAL


def test_a_start_does_not_import_ctypes():
    """What the runtime calls through the bindings, in a fresh interpreter: the ctypes
    package stays unloaded."""
    code = ("import sys; sys.path.insert(0, %r); import minicontainer as mc\n"
            "mc.prctl(mc.PR_SET_KEEPCAPS, 0)\n"
            "caps = dict(line.split(':') for line in open('/proc/self/status'))\n"
            "mc.capset(*(int(caps[k], 16) for k in ('CapEff', 'CapPrm', 'CapInh')))\n"
            "mc.open_in_root('/', '/proc')\n"
            "mc.native_arch()\n"
            "print('ctypes' in sys.modules, mc.libc().getpid() == __import__('os').getpid())"
            % os.path.dirname(mc.__file__))
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                         text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


def test_prlimit_as_the_resource_module():
    """minicontainer.prlimit, which spares the init loading the resource module."""
    import resource

    def theirs(n):
        return tuple(mc.RLIM_INFINITY if v == resource.RLIM_INFINITY else v
                     for v in resource.getrlimit(n))
    for name in ("RLIMIT_NOFILE", "RLIMIT_CORE", "RLIMIT_STACK", "RLIMIT_AS"):
        n = mc.RLIMITS[name]
        assert n == getattr(resource, name)
        assert mc.prlimit(n) == theirs(n)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # lowered in a child of ours: the test process keeps its limits
        try:
            n = mc.RLIMITS["RLIMIT_NOFILE"]
            mc.prlimit(n, (17, mc.prlimit(n)[1] - 1))
            os.write(w, json.dumps([theirs(n), mc.prlimit(n)]).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        got, ours = json.loads(f.read())
    os.waitpid(pid, 0)
    assert got == ours and got[0] == 17


def test_the_common_syscall_numbers_are_every_tables():
    """syscall_nr's numbers for calls added since Linux 5.1, given without a table: the
    same in each table of ours (x86_64, aarch64, and i386's for the 32-bit filters)."""
    for name, nr in mc._SYSCALLS_COMMON.items():
        assert mc.syscall_nr(name) == nr
        assert [mc.syscall_table(abi)[name] for abi in ("x86_64", "aarch64", "i386")] == \
            [nr] * 3, name


def test_seqpacket_as_socket():
    """The setup socket's end, on libc alone, against the socket module's on the same pair:
    messages keep their bounds and their fds (close-on-exec), EOF is (b"", []), a peer
    gone is BrokenPipeError or, with our message unread, ConnectionResetError once."""
    import socket
    ours, theirs = mc.SeqPacket.pair()
    peer = socket.socket(fileno=os.dup(theirs.fileno()))
    theirs.close()
    assert peer.type == socket.SOCK_SEQPACKET and peer.family == socket.AF_UNIX
    assert not os.get_inheritable(ours.fileno())
    r, w = os.pipe()
    try:
        ours.sendmsg(b'{"t": "pty"}', [r, w])
        ours.sendmsg(b"x" * 100000)  # larger than a page, and than socket's usual buffer
        msg, fds, _, _ = socket.recv_fds(peer, 1 << 20, 4)
        assert msg == b'{"t": "pty"}' and len(fds) == 2
        assert [os.path.sameopenfile(a, b) for a, b in zip(fds, (r, w))] == [True, True]
        for fd in fds:
            os.close(fd)
        assert socket.recv_fds(peer, 1 << 20, 4)[0] == b"x" * 100000
        socket.send_fds(peer, [b"back"], [w])
        peer.send(b"plain")
        msg, fds = ours.recvmsg(4)
        assert msg == b"back" and len(fds) == 1 and not os.get_inheritable(fds[0])
        os.close(fds[0])
        assert ours.recvmsg(4) == (b"plain", [])
        peer.send(b"last")
        ours.sendmsg(b"unread")
        peer.close()
        with pytest.raises(ConnectionResetError):
            ours.recvmsg(4)
        assert ours.recvmsg(4) == (b"last", [])  # still queued for us
        assert ours.recvmsg(4) == (b"", [])
        with pytest.raises(BrokenPipeError):
            ours.sendmsg(b"nobody")
    finally:
        ours.close()
        ours.close()  # twice: nothing (its fd is another's by now)
        os.close(r)
        os.close(w)


def test_seqpacket_keeps_its_buffers_alive_through_its_calls():
    """Under Python's debug allocator (-X dev), which fills what is freed with 0xDD, a
    buffer whose address the kernel is given but which is freed before the call is read as
    an iovec of garbage (EINVAL, or data written anywhere)."""
    code = ("import sys; sys.path.insert(0, %r); import minicontainer as mc\n"
            "ours, theirs = mc.SeqPacket.pair()\n"
            "theirs.sendmsg(b'{}', [0])\n"
            "msg, fds = ours.recvmsg(4)\n"
            "print(msg.decode(), len(fds))" % os.path.dirname(mc.__file__))
    done = subprocess.run([sys.executable, "-X", "dev", "-c", code], capture_output=True,
                          text=True)
    assert (done.returncode, done.stdout) == (0, "{} 1\n"), done.stderr
