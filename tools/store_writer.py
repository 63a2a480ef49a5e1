"""The image store's writing: unpacking layers and committing images, for pull.py and
import_image.py.

The runtime (minicontainer.py) reads the store: it finds an image, its layers, and makes a
rootfs of them; it never writes one.  Everything an image brings into the store goes
through StoreWriter.commit, in the one order that keeps the store consistent at every
instant (blobs, layers, then config and manifest, then the name in index.json): a killed
pull leaves at most unreferenced files, which the next rmi collects.  See images/README.md
for the layout.
"""
import contextlib
import errno
import gc
import hashlib
import io
import json
import os
import queue
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import minicontainer as mc  # noqa: E402


class StoreWriter(mc.ImageStore):
    """The store, with what pull and import write into it.  Hold store.lock(False) (shared)
    from the first file written to the commit: rmi, holding it exclusive, then never
    collects what is not yet referenced."""

    def __init__(self, path=None):
        super().__init__(path)
        self._implicit = {}  # unpacked layer -> its implicit directories, for commit_layer

    def ensure_layout(self):
        for d in ("blobs/sha256", "layers", "tmp"):
            os.makedirs(os.path.join(self.path, d), exist_ok=True)
        # An image's layers hold what it says: setuid-root programs, device nodes (mknod
        # takes any numbers). Only the store's owner may walk in, as /var/lib/docker's; the
        # containers reach them through their mounts, which root makes.
        for d in ("layers", "tmp"):
            if os.stat(os.path.join(self.path, d)).st_mode & 0o077:
                os.chmod(os.path.join(self.path, d), 0o700)
        layout, index = os.path.join(self.path, "oci-layout"), os.path.join(self.path, "index.json")
        if not os.path.exists(layout):
            mc.write_atomic(layout, b'{"imageLayoutVersion": "1.0.0"}\n', durable=True)
        if not os.path.exists(index):
            mc.write_atomic(index, json.dumps({"schemaVersion": 2, "mediaType": mc.OCI_INDEX,
                                               "manifests": []}, indent=2).encode() + b"\n",
                            durable=True)

    def has_blob(self, digest):
        return os.path.isfile(self.blob_path(digest))

    def has_layer(self, diff_id):
        return os.path.isdir(self.layer_path(diff_id))

    def unpack_layer(self, src, diff_id, layer_name, work, stop=None, report=None,
                     processes=None):
        """Unpack a layer (a blob path or file object) in overlay form into a new directory
        under work (a directory of tmp/), check it against diff_id and return the directory,
        for commit once every layer of the image is ready. stop: see unpack_layer below;
        report(n) is told the compressed bytes read so far; processes, UnpackProcesses: one
        of them unpacks it (src a path)."""
        self.layer_path(diff_id)  # a malformed diff_id fails before any work
        dest = tempfile.mkdtemp(prefix="layer-", dir=work)
        os.chmod(dest, 0o755)
        if processes is not None:
            got, implicit = processes.unpack(src, dest, layer_name, report)
        else:
            implicit = []
            with ReportedFile(src, stop, report) as reported:
                got = unpack_layer(reported, dest, layer_name, overlay=True, implicit=implicit,
                                   stop=stop)
        if got != diff_id:
            raise UnpackError(f"{layer_name}: uncompressed content does not match the "
                              "config's diff_id")
        self._implicit[dest] = implicit
        return dest

    def commit_layer(self, path, diff_id, lower=()):
        """Rename an unpacked layer into layers/: a layer directory is complete or absent,
        and of two pulls storing the same layer at once the first rename wins.

        lower: the layer directories below it in the image being stored.  A directory the
        layer has only because it holds entries (a tar without the parent's own entry) takes
        their owner, mode and times: in an overlay the topmost layer's directory decides
        them, and a flat unpack would have kept the lower one's."""
        for parts in self._implicit.pop(path, ()):
            below = mc.layers_lookup(list(lower), "/".join(parts)) if parts else \
                (lower[-1] if lower else None)
            if below and os.path.isdir(below) and not os.path.islink(below):
                st = os.lstat(below)
                target = os.path.join(path, *parts)
                os.chown(target, st.st_uid, st.st_gid)
                os.chmod(target, st.st_mode & 0o7777)
                os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
        final = self.layer_path(diff_id)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        try:
            os.rename(path, final)
        except OSError:
            if not os.path.isdir(final):  # else a concurrent pull stored it first
                raise
            mc.remove_tree(path)
        return final

    def tag(self, name, descriptor):
        """Point name at descriptor (a manifest descriptor), replacing what it named before."""
        desc = dict(descriptor)
        desc["annotations"] = {**(desc.get("annotations") or {}),
                               mc.ANNOTATION_REF_NAME: name}

        def change(index):
            index["manifests"] = [
                d for d in index["manifests"]
                if (d.get("annotations") or {}).get(mc.ANNOTATION_REF_NAME) != name]
            index["manifests"].append(desc)
        self.update_index(change)

    def commit(self, name, descriptor, diff_ids, unpacked, downloaded=(), documents=(),
               layer_done=None):
        """Store an image whose pieces are ready, in the order that keeps the store
        consistent: blobs, layers, then config and manifest, then name in index.json.  A kill
        in between leaves only unreferenced files (each layer directory complete), which rmi
        collects.

        diff_ids: the image's layers, bottom first; unpacked: for each, the directory
        unpack_layer made, or None when the layer was in the store already; downloaded:
        (file, digest) of the blobs fetched into a work directory; documents: (digest,
        bytes) of the blobs held in memory, the config and the manifest (and an imported
        layer); descriptor: the manifest's, for index.json.  layer_done(i) is called as
        layer i is stored."""
        for path, digest in downloaded:
            os.replace(path, self.blob_path(digest))
        for i, (diff_id, path) in enumerate(zip(diff_ids, unpacked)):
            if path:
                self.commit_layer(path, diff_id, [self.layer_path(d) for d in diff_ids[:i]])
            if layer_done:
                layer_done(i)
        for digest, data in documents:
            if not self.has_blob(digest):
                mc.write_atomic(self.blob_path(digest), data, durable=True)
        self.tag(name, descriptor)


# ---- unpacking layers ----
# Every path is resolved from a directory fd of the rootfs, one component at a time with
# O_NOFOLLOW, and every object is created with *at() calls relative to its parent's fd, so no
# entry can reach outside the rootfs: '..' and absolute names are refused, and a symlink met
# as a parent component is an error, whoever planted it.  Existing files are unlinked before
# they are replaced, never opened for writing, so a hardlink can't redirect a write either.

class UnpackError(mc.Error):
    pass


_MAX_METADATA = 1 << 20  # the largest pax or GNU long-name header read (a path is < 4 KiB)


class _StreamError(UnpackError):
    """A fault of a layer's compressed stream, found where its name is not known: unpack_layer
    says whose."""


_GZIP, _ZSTD, _BZIP2, _XZ = b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"BZh", b"\xfd7zXZ\x00"
# The unit of a layer's reading, decompressing and writing: a pull unpacks layers in
# parallel, each holding a few of these and up to PREFETCH in its queue, which is most of an
# unpack's memory (4 MiB out of zlib and 8 queued: 111 MiB with 4 layers at once; 1 MiB and
# 2: 58 MiB). 128 KiB blocks and 2 queued took the same time as 1 MiB ones and 4 in
# bench_pull's image, and 1.5 MiB less in each unpacking process.
BLOCK, PREFETCH = 1 << 17, 2


class ReportedFile(io.RawIOBase):
    """A layer's compressed bytes as the unpacker reads them (from a path, or a binary file
    that stays the caller's): each read tells report(n) the bytes read so far (docker's
    "Extracting" bar), and once stop (a threading.Event) is set it reads as the end of the
    file, so that an unpack in progress fails within a read instead of running to its end:
    every decompressor and the tar reader fail on a truncated layer, and the diff_id check
    on whatever else."""

    def __init__(self, src, stop=None, report=None):
        self.own = isinstance(src, (str, bytes, os.PathLike))
        self.file = open(src, "rb", buffering=0) if self.own else src
        self.stop, self.report, self.done = stop, report, 0

    def readable(self):
        return True

    def readinto(self, buf):
        if self.stop is not None and self.stop.is_set():
            return 0
        n = self.file.readinto(buf)
        self.done += n
        if self.report is not None:
            self.report(self.done)
        return n

    def close(self):
        if self.own:
            self.file.close()
        super().close()


class _ZlibReader:
    """Decompress a (possibly multi-member) gzip stream in big chunks."""

    def __init__(self, raw):
        self._zlib, self.raw = zlib, raw
        self.d = zlib.decompressobj(31)
        self.buf, self.pos = b"", 0

    def _more(self):
        d = self.d
        while True:
            if d.unconsumed_tail:
                out = d.decompress(d.unconsumed_tail, BLOCK)
            elif d.eof:
                rest = d.unused_data or self.raw.read(1 << 18)
                if not rest.strip(b"\0"):
                    return b""  # end, or zero padding after the last member
                d = self.d = self._zlib.decompressobj(31)
                out = d.decompress(rest, BLOCK)
            else:
                chunk = self.raw.read(1 << 18)
                if not chunk:
                    raise _StreamError("compressed layer is truncated")
                out = d.decompress(chunk, BLOCK)  # bounded: a zip bomb can't fill memory
            if out:
                return out

    def read(self, n=-1):
        if self.pos >= len(self.buf):
            self.buf, self.pos = self._more(), 0
        if n is None or n < 0 or (self.pos == 0 and n >= len(self.buf)):
            data, self.buf, self.pos = self.buf[self.pos:], b"", 0
            return data
        data = self.buf[self.pos:self.pos + n]
        self.pos += len(data)
        return data


class _ProcessReader:
    """Decompress through an external program (zstd -dc) when no Python module can."""

    def __init__(self, argv, raw):
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL)
        except OSError as e:  # no process to spare (EAGAIN), the program gone...
            raise _StreamError(f"cannot start {argv[0]} to decompress the layer: "
                               f"{e.strerror or e}") from None

        def feed():
            try:
                while chunk := raw.read(1 << 20):
                    self.proc.stdin.write(chunk)
            except (BrokenPipeError, ValueError):
                pass
            finally:
                try:
                    self.proc.stdin.close()
                except OSError:
                    pass
        self.feeder = threading.Thread(target=feed, daemon=True)
        self.feeder.start()

    def read(self, n=-1):
        data = self.proc.stdout.read1(n if n and n > 0 else 1 << 20)
        if not data and self.proc.wait() != 0:
            raise _StreamError("zstd could not decompress the layer")
        return data

    def close(self):
        self.proc.stdout.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.feeder.join()


def _zstd_reader(raw):
    try:
        from compression import zstd  # Python 3.14+
        return zstd.ZstdFile(raw)
    except ImportError:
        pass
    # The runtime takes nothing from outside the standard library: before 3.14, the program.
    if shutil.which("zstd"):
        return _ProcessReader(["zstd", "-dcq"], raw)
    raise _StreamError("layer is zstd-compressed, but this Python has no compression.zstd "
                      "(3.14+) and there is no zstd program (apt install zstd)")


def open_layer(raw):
    """A reader of the uncompressed tar in the binary file raw (gzip, zstd, bzip2, xz, plain)."""
    if not hasattr(raw, "peek"):
        raw = io.BufferedReader(raw, BLOCK)
    magic = raw.peek(6)[:6]
    if magic.startswith(_GZIP):
        return _ZlibReader(raw)
    if magic.startswith(_ZSTD):
        return _zstd_reader(raw)
    if magic.startswith(_BZIP2):
        import bz2
        return bz2.BZ2File(raw)
    if magic.startswith(_XZ):
        import lzma
        return lzma.LZMAFile(raw)
    return raw


class _Prefetcher:
    """Decompress and hash in a thread: zlib, zstd and hashlib release the GIL, so this runs
    on another core while the caller creates files, as tar -z does with a gzip process."""

    def __init__(self, stream):
        self.queue, self.full = queue.Queue(maxsize=PREFETCH), queue.Full
        self.sha = hashlib.sha256()
        self.stopping = threading.Event()
        self.buf, self.pos, self.done = b"", 0, False
        self.thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self.thread.start()

    def _run(self, stream):
        try:
            while not self.stopping.is_set():
                data = stream.read(BLOCK)
                self.sha.update(data)
                self._put(data)
                if not data:
                    return
        except BaseException as e:  # handed to the reader, which raises it
            self._put(e)

    def _put(self, item):
        while not self.stopping.is_set():
            try:
                return self.queue.put(item, timeout=0.1)
            except self.full:
                pass

    def read(self, n):
        if self.pos >= len(self.buf):
            if self.done:
                return b""
            item = self.queue.get()
            if isinstance(item, BaseException):
                self.done = True
                raise item
            if not item:
                self.done = True
                return b""
            self.buf, self.pos = item, 0
        data = self.buf[self.pos:self.pos + n]
        self.pos += len(data)
        return data

    def close(self):
        self.stopping.set()
        self.thread.join()


def _tar_reader(stream):
    """A forward-only reader over the decompressed stream: reads are buffered in C, seek
    only skips ahead, and every byte is hashed once (in the prefetch thread)."""

    class Raw(io.RawIOBase):
        def __init__(self):
            self.prefetch = _Prefetcher(stream)
            self.sha = self.prefetch.sha

        def readable(self):
            return True

        def readinto(self, b):
            data = self.prefetch.read(len(b))
            n = len(data)
            b[:n] = data
            return n

    class Forward:
        def __init__(self):
            self.raw = Raw()
            self.buf = io.BufferedReader(self.raw, BLOCK)
            self.pos = 0

        def read(self, n=-1):
            data = self.buf.read(n)
            self.pos += len(data)
            return data

        def tell(self):
            return self.pos

        def seek(self, offset, whence=0):
            if whence == 1:
                offset += self.pos
            if whence == 2 or offset < self.pos:
                raise io.UnsupportedOperation("layer streams only seek forward")
            while self.pos < offset:
                if not self.read(min(offset - self.pos, 1 << 20)):
                    break
            return self.pos

        def drain(self):
            while self.read(1 << 20):
                pass
            return "sha256:" + self.raw.sha.hexdigest()

        def close(self):
            self.raw.prefetch.close()

    return Forward()


class _Unpacker:
    MAX_CACHED_DIRS = 128

    def __init__(self, root_fd, layer_name, same_owner, overlay=False):
        self.os, self.root_fd, self.layer = os, root_fd, layer_name
        self.same_owner = same_owner
        # overlay: the layer alone, in its own directory, whiteouts kept in overlayfs's form
        # (0/0 character devices, the opaque xattr) for the kernel to apply when it merges.
        self.overlay = overlay
        self.implicit = set()       # directories made for an entry below them, not by one
        self.dirs = {(): root_fd}   # dir fds by path tuple, each opened with O_NOFOLLOW
        self.retired = []           # evicted fds, closed once no caller can hold them
        # paths this layer made, and directories holding some: whiteouts spare them (made)
        self.created = set()
        self.holding = set()
        self.dir_times = []         # (path tuple, mtime, mode) applied at the end
        self.warned = set()

    def made(self, parts):
        """Record that this layer made parts, for a flat unpack's whiteouts: "/".join(parts),
        one object (a tuple of its parts' strings took four times the memory: 11 MiB for 24k
        files). In overlay form the layer's directory started empty: what is in it, the
        layer made (overlay_whiteout looks), and a record would be 4 MiB for 24k files."""
        if not self.overlay:
            self.created.add("/".join(parts))
            for i in range(len(parts) - 1, 0, -1):
                above = "/".join(parts[:i])
                if above in self.holding:
                    break
                self.holding.add(above)

    def fail(self, name, why):
        raise UnpackError(f"{self.layer}: refusing entry {name!r}: {why}")

    def reap(self):
        for fd in self.retired:
            self.os.close(fd)
        self.retired = []

    def close(self):
        self.retired += [fd for key, fd in self.dirs.items() if key]
        self.dirs = {(): self.root_fd}
        self.reap()

    def split(self, name, what="path", entry_name=None):
        if name.startswith("/"):
            self.fail(entry_name or name, f"absolute {what} {name!r}")
        parts = tuple(p for p in name.split("/") if p not in ("", "."))
        if ".." in parts:
            self.fail(entry_name or name, f"'..' in {what} {name!r}")
        if "\0" in name or len(parts) > 256:
            self.fail(entry_name or name, f"unusable {what} (a NUL byte, or too deep)")
        return parts

    def dir_fd(self, parts, name, create=True):
        """fd of the directory parts (a path tuple), resolved without following symlinks;
        missing directories are made (as tar does) unless create is false (then None)."""
        fd = self.dirs.get(parts)
        if fd is not None:
            return fd
        parent = self.dir_fd(parts[:-1], name, create)
        if parent is None:
            return None
        os = self.os
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(parts[-1], flags, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                return None
            os.mkdir(parts[-1], 0o755, dir_fd=parent)
            self.made(parts)
            self.implicit.add(parts)
            fd = os.open(parts[-1], flags, dir_fd=parent)
        except OSError as e:
            if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            st = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                self.fail(name, f"{'/'.join(parts)} is a symlink, and symlinks are never "
                          "followed while unpacking")
            if not (create and self.overlay and stat.S_ISCHR(st.st_mode) and st.st_rdev == 0):
                self.fail(name, f"{'/'.join(parts)} is not a directory")
            # Where this layer put a whiteout: a directory that starts empty, as in a flat
            # unpack, where the whiteout had removed the lower one (opaque: overlayfs would
            # merge it in); its own, not the lower one's owner and mode (not implicit).
            os.unlink(parts[-1], dir_fd=parent)
            os.mkdir(parts[-1], 0o755, dir_fd=parent)
            fd = os.open(parts[-1], flags, dir_fd=parent)
            self.opaque(fd, name)
        if len(self.dirs) >= self.MAX_CACHED_DIRS:
            self.retired += [f for key, f in self.dirs.items() if key and key != parts[:-1]]
            self.dirs = {(): self.root_fd, parts[:-1]: parent}
        self.dirs[parts] = fd
        return fd

    def forget(self, parts):
        """Drop cached fds of parts and below, and the directories among them that were
        made for entries below them: that tree is being removed (commit_layer would give
        a file in their place, or nothing, the owner and mode of a lower directory)."""
        n = len(parts)
        for key in [k for k in self.dirs if k[:n] == parts]:
            self.retired.append(self.dirs.pop(key))
        self.implicit -= {k for k in self.implicit if k is not None and k[:n] == parts}

    def remove(self, parent_fd, parts):
        """Remove whatever is at parts (in parent_fd) without following symlinks."""
        os = self.os
        try:
            st = os.stat(parts[-1], dir_fd=parent_fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            self.forget(parts)
            shutil.rmtree(parts[-1], dir_fd=parent_fd)  # fd-based, never follows symlinks
        else:
            os.unlink(parts[-1], dir_fd=parent_fd)

    def whiteout(self, member, parts):
        base = parts[-1]
        if base.startswith(".wh..wh.") and base != ".wh..wh..opq":
            return  # aufs bookkeeping (.wh..wh.plnk etc.), meaningless here
        target = base[4:]
        if base != ".wh..wh..opq" and target in ("", ".", ".."):
            self.fail(member.name, "a whiteout must name a file in its directory")
        if self.overlay:
            self.overlay_whiteout(member, parts, target)
            return
        parent = self.dir_fd(parts[:-1], member.name, create=False)
        if parent is None:
            return  # nothing below to hide
        where = parts[:-1] + (target,)
        path = "/".join(where)
        if base == ".wh..wh..opq":
            self.clear_lower(parent, parts[:-1])
        elif path in self.created or path in self.holding:
            # What this layer put there stays, wherever the whiteout sits in it (a whiteout
            # hides lower layers only); of a directory, what lower layers put in it goes.
            try:
                st = self.os.stat(target, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                return
            if stat.S_ISDIR(st.st_mode):
                self.clear_lower(self.dir_fd(where, member.name), where)
        else:
            self.remove(parent, where)

    def overlay_whiteout(self, member, parts, target):
        os = self.os
        parent = self.dir_fd(parts[:-1], member.name)  # the whiteout must sit where it hides
        if parts[-1] == ".wh..wh..opq":
            self.opaque(parent, member.name)
            return
        where = parts[:-1] + (target,)
        try:
            st = os.stat(target, dir_fd=parent, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                # made by this layer, which keeps it and what it put in it: the lower one's
                # entries go, as in a flat unpack (opaque)
                self.opaque(self.dir_fd(where, member.name), member.name)
                return
            if not (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0):  # not a whiteout
                return  # made by this layer: as in a flat unpack, a whiteout hides lower ones
        except FileNotFoundError:
            pass
        self.remove(parent, where)
        try:
            os.mknod(target, stat.S_IFCHR, os.makedev(0, 0), dir_fd=parent)
        except PermissionError:
            self.fail(member.name, "storing a whiteout needs root (mknod of a 0/0 device)")

    def opaque(self, fd, name):
        # Only the host's root may set trusted.* xattrs: a rootless user's store (also root
        # of a user namespace of another's) marks them in user.*, which its overlay reads,
        # mounted with userxattr (Linux 5.11+).
        trusted, user = mc.OVERLAY_OPAQUE
        xattr = user if mc.unprivileged() else trusted
        try:
            self.os.setxattr(fd, xattr, b"y")
        except OSError as e:
            self.fail(name, f"cannot mark an opaque directory ({e.strerror}): the {xattr} "
                      "xattr needs a filesystem with xattrs")

    def clear_lower(self, fd, parts):
        """Opaque directory: remove what lower layers put under parts."""
        os = self.os
        for entry in os.scandir(fd):
            sub = parts + (entry.name,)
            path = "/".join(sub)
            if path not in self.created and path not in self.holding:
                self.remove(fd, sub)
            elif entry.is_dir(follow_symlinks=False):
                subfd = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW |
                                os.O_CLOEXEC, dir_fd=fd)
                try:
                    self.clear_lower(subfd, sub)
                finally:
                    os.close(subfd)

    def own(self, member, fd=None, name=None, parent=None, mode=True):
        """Owner, then mode (chown clears setuid/setgid), of an fd or of name in parent."""
        os = self.os
        if fd is not None:
            if self.same_owner:
                os.fchown(fd, member.uid, member.gid)
            if mode:
                os.fchmod(fd, member.mode & 0o7777)
        else:
            if self.same_owner:
                os.chown(name, member.uid, member.gid, dir_fd=parent, follow_symlinks=False)
            if mode:
                os.chmod(name, member.mode & 0o7777, dir_fd=parent)

    def xattrs(self, fd, member):
        os = self.os
        for key, value in member.pax_headers.items():
            if not key.startswith("SCHILY.xattr."):
                continue
            if key[13:].startswith(("trusted.overlay.", "user.overlay.")):
                # overlayfs would obey them (redirects, opaque, metacopy): only whiteout
                # entries of the tar may say what is hidden.
                self.warn(key, f"ignoring xattr {key[13:]} on {member.name}")
                continue
            try:
                os.setxattr(fd, key[13:], value.encode("utf-8", "surrogateescape"))
            except OSError as e:
                if e.errno not in (errno.ENOTSUP, errno.EPERM, errno.EOPNOTSUPP):
                    raise
                self.warn(key, f"cannot set xattr {key[13:]} on {member.name}: {e.strerror}")

    def warn(self, key, message):
        if key not in self.warned:
            self.warned.add(key)
            print(f"warning: {self.layer}: {message}", file=sys.stderr)

    def entry(self, reader, member):
        os = self.os
        self.reap()
        name = member.name
        parts = self.split(name)
        if not parts:
            if not member.isdir():
                self.fail(name, "the root must be a directory")
            self.implicit.add(None)  # None: the root was given
            self.own(member, fd=self.root_fd)
            self.dir_times.append(((), int(member.mtime * 1_000_000_000), member.mode & 0o7777))
            return
        if parts[-1].startswith(".wh."):
            self.whiteout(member, parts)
            return
        parent = self.dir_fd(parts[:-1], name)
        base = parts[-1]
        mtime_ns = int(member.mtime * 1_000_000_000) if member.mtime else 0
        if member.isdir():
            replaced = False
            try:
                if not stat.S_ISDIR(os.stat(base, dir_fd=parent, follow_symlinks=False).st_mode):
                    self.remove(parent, parts)
                    replaced = True
                    raise FileNotFoundError
            except FileNotFoundError:
                os.mkdir(base, 0o700, dir_fd=parent)
            fd = self.dir_fd(parts, name)
            self.implicit.discard(parts)
            if replaced and self.overlay:
                # A directory replacing what this layer put there (a whiteout, a file) starts
                # empty, as in a flat unpack, where that had removed the lower one:
                # overlayfs would merge the lower one in unless opaque.
                self.opaque(fd, name)
            self.own(member, fd=fd, mode=False)
            # Unprivileged, a read-only directory could not be filled: its mode comes last.
            os.fchmod(fd, member.mode & 0o7777 | (0 if self.same_owner else 0o700))
            self.xattrs(fd, member)
            self.dir_times.append((parts, mtime_ns, member.mode & 0o7777))
        elif member.isreg():
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                fd = os.open(base, flags, 0o600, dir_fd=parent)
            except FileExistsError:
                self.remove(parent, parts)
                fd = os.open(base, flags, 0o600, dir_fd=parent)
            try:
                reader.seek(member.offset_data)
                left = member.size
                while left > 0:
                    chunk = reader.read(min(left, BLOCK))
                    if not chunk:
                        raise UnpackError(f"{self.layer}: layer is truncated (in {name!r})")
                    mc.write_all(fd, chunk)
                    left -= len(chunk)
                self.own(member, fd=fd)
                self.xattrs(fd, member)
                os.utime(fd, ns=(mtime_ns, mtime_ns))
            finally:
                os.close(fd)
        elif member.issym():
            try:
                os.symlink(member.linkname, base, dir_fd=parent)
            except FileExistsError:
                self.remove(parent, parts)
                os.symlink(member.linkname, base, dir_fd=parent)
            self.own(member, name=base, parent=parent, mode=False)
            os.utime(base, ns=(mtime_ns, mtime_ns), dir_fd=parent, follow_symlinks=False)
        elif member.islnk():
            target = self.split(member.linkname, "hardlink target", name)
            if not target or target == parts:
                self.fail(name, f"bad hardlink target {member.linkname!r}")
            tparent = self.dir_fd(target[:-1], name, create=False)
            if tparent is None:
                self.fail(name, f"hardlink target {member.linkname!r} does not exist")
            self.remove(parent, parts)
            try:
                # linkat without AT_SYMLINK_FOLLOW: links the entry itself, never through it
                os.link(target[-1], base, src_dir_fd=tparent, dst_dir_fd=parent,
                        follow_symlinks=False)
            except FileNotFoundError:
                self.fail(name, f"hardlink target {member.linkname!r} does not exist")
            except PermissionError:
                self.fail(name, f"cannot hardlink to {member.linkname!r} (a directory?)")
        elif member.ischr() or member.isblk() or member.isfifo():
            self.remove(parent, parts)
            try:
                if member.isfifo():
                    os.mkfifo(base, 0o600, dir_fd=parent)
                else:
                    kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
                    os.mknod(base, kind | 0o600, os.makedev(member.devmajor, member.devminor),
                             dir_fd=parent)
            except PermissionError:
                self.warn("mknod", f"cannot create device {name} (not root); skipping devices")
                return
            self.own(member, name=base, parent=parent)
            os.utime(base, ns=(mtime_ns, mtime_ns), dir_fd=parent, follow_symlinks=False)
        else:
            return  # other tar types (volume labels, ...) make no file
        self.made(parts)

    def finish(self):
        """Directory mtimes (and unprivileged, modes) last: filling them changed them."""
        os = self.os
        for parts, mtime_ns, mode in reversed(self.dir_times):
            self.reap()
            try:
                fd = self.dir_fd(parts, "/".join(parts), create=False)
            except UnpackError:
                continue  # replaced by a symlink later in the layer
            if fd is None:
                continue
            if not self.same_owner:
                os.fchmod(fd, mode)
            os.utime(fd, ns=(mtime_ns, mtime_ns))


class _Member:
    """A tar header, with the parts of tarfile.TarInfo's interface that unpacking uses."""
    __slots__ = ("name", "linkname", "type", "mode", "uid", "gid", "size", "mtime",
                 "devmajor", "devminor", "pax_headers", "offset_data")

    def isreg(self):
        return self.type in b"07\0"

    def isdir(self):
        return self.type == b"5"

    def issym(self):
        return self.type == b"2"

    def islnk(self):
        return self.type == b"1"

    def ischr(self):
        return self.type == b"3"

    def isblk(self):
        return self.type == b"4"

    def isfifo(self):
        return self.type == b"6"


def _tar_members(reader, layer_name):
    """Parse tar headers (ustar, GNU long names, pax) from reader, yielding _Member objects
    whose data the caller may read or leave: the next header is found by seeking past it.
    tarfile does the same but slower, and it takes a damaged header for the archive's end."""
    def bad(why):
        return UnpackError(f"{layer_name}: not a valid tar archive: {why}")

    def number(field):
        if field[:1] in (b"\x80", b"\xff"):  # base-256, for values octal can't hold
            value = int.from_bytes(field[1:], "big")
            return value - 256 ** (len(field) - 1) if field[0] == 0xFF else value
        field = field.rstrip(b" \0")
        try:
            return int(field, 8) if field else 0
        except ValueError:
            raise bad(f"bad number field {field[:20]!r}") from None

    def text(field):
        return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")

    def data(size):
        raw = reader.read(size)
        if len(raw) < size:
            raise UnpackError(f"{layer_name}: layer is truncated")
        reader.seek(reader.tell() + (-size % 512))
        return raw

    def pax(raw):
        records, i = {}, 0
        while i < len(raw):
            space = raw.find(b" ", i)
            if space < 0:
                raise bad("malformed pax header")
            length = int(raw[i:space])
            key, _, value = raw[space + 1:i + length - 1].partition(b"=")
            if length <= 0:
                raise bad("malformed pax header")
            records[key.decode("utf-8", "surrogateescape")] = \
                value.decode("utf-8", "surrogateescape")
            i += length
        return records

    global_pax, pax_next, long_name, long_link = {}, {}, None, None
    while True:
        header = reader.read(512)
        if len(header) < 512:
            if not header:
                return  # no end-of-archive blocks: tolerated, as GNU tar does
            raise UnpackError(f"{layer_name}: layer is truncated")
        if header == bytes(512):
            return  # end of archive; what follows is padding
        stored = number(header[148:156])
        unsigned = sum(header) - sum(header[148:156]) + 256
        if stored != unsigned and stored != unsigned - 256 * sum(b > 127 for b in header):
            raise bad("header checksum mismatch")  # (the second: old tars summed signed)
        kind = header[156:157]
        size = number(header[124:136])
        if size < 0:
            raise bad("negative size")
        if kind in (b"x", b"g", b"L", b"K") and size > _MAX_METADATA:
            # read whole: a gigabyte of zeros compresses to megabytes (a memory bomb)
            raise bad("a %s header of %d bytes (more than %d)" % (
                "pax" if kind in (b"x", b"g") else "long name", size, _MAX_METADATA))
        if kind in (b"x", b"g"):
            records = pax(data(size))
            (global_pax if kind == b"g" else pax_next).update(records)
            continue
        if kind in (b"L", b"K"):
            value = text(data(size))
            if kind == b"L":
                long_name = value
            else:
                long_link = value
            continue
        if kind == b"S" or "GNU.sparse.map" in pax_next or "GNU.sparse.size" in pax_next:
            raise bad("sparse files are not supported")
        m = _Member()
        name = text(header[0:100])
        if kind == b"\0" and name.endswith("/"):
            kind = b"5"  # pre-POSIX tars marked directories so
        m.type = kind
        if header[257:263] == b"ustar\0" and header[345:346] != b"\0":
            name = text(header[345:500]) + "/" + name
        headers = {**global_pax, **pax_next}
        m.name = headers.get("path", long_name if long_name is not None else name)
        m.linkname = headers.get("linkpath",
                                 long_link if long_link is not None else text(header[157:257]))
        m.mode = number(header[100:108])
        m.uid = int(headers["uid"]) if "uid" in headers else number(header[108:116])
        m.gid = int(headers["gid"]) if "gid" in headers else number(header[116:124])
        m.size = int(headers["size"]) if "size" in headers else size
        m.mtime = float(headers["mtime"]) if "mtime" in headers else number(header[136:148])
        m.devmajor, m.devminor = number(header[329:337]), number(header[337:345])
        m.pax_headers = headers
        m.offset_data = reader.tell()
        pax_next, long_name, long_link = {}, None, None
        if not m.isreg():
            m.size = 0 if kind in b"123456" else m.size
        yield m
        reader.seek(m.offset_data + m.size + (-m.size % 512))


def unpack_layer(src, dest, layer_name="layer", same_owner=None, overlay=False, implicit=None,
                 stop=None):
    """Apply one layer (a path or a binary file object: gzip, zstd, bzip2, xz or plain tar)
    onto the existing directory dest, whiteouts included, and return the sha256 digest of the
    uncompressed tar (the layer's diff_id, for the caller to check).  A hostile or broken
    layer raises UnpackError and leaves dest half-written: the caller discards it.

    overlay: dest is the layer's own empty directory, and whiteouts are stored in overlayfs's
    form instead of applied, so that an overlay mount of such directories (or copy_layers)
    gives the same tree as applying the layers in order onto one directory.  implicit, a
    list, gets the directories the layer has without an entry of their own (path tuples;
    () for the root): their owner and mode must come from the layers below.

    stop, a threading.Event: once set, the unpack fails before its next entry (what is
    decompressed already holds thousands of small files: seconds of work after a Ctrl-C)."""
    if same_owner is None:
        same_owner = os.geteuid() == 0
    own = isinstance(src, (str, bytes, os.PathLike))
    raw = open(src, "rb") if own else src
    stream = reader = None
    root_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    unpacker = _Unpacker(root_fd, layer_name, same_owner, overlay)
    try:
        stream = open_layer(raw)
        reader = _tar_reader(stream)
        for member in _tar_members(reader, layer_name):
            if stop is not None and stop.is_set():
                raise UnpackError(f"{layer_name}: cancelled")
            unpacker.entry(reader, member)
        unpacker.finish()
        if implicit is not None:
            implicit.extend(sorted(p for p in unpacker.implicit if p is not None))
            if None not in unpacker.implicit:
                implicit.insert(0, ())
        return reader.drain()
    except zlib.error as e:
        raise UnpackError(f"{layer_name}: corrupt gzip data ({e})") from None
    except _StreamError as e:
        raise UnpackError(f"{layer_name}: {e}") from None
    except UnpackError:
        raise
    except Exception as e:
        if type(e).__name__ == "ZstdError":
            raise UnpackError(f"{layer_name}: corrupt zstd data ({e})") from None
        if isinstance(e, (OSError, ValueError, EOFError, OverflowError)):
            # ENOSPC, a bad bzip2 stream, a pax mtime or uid no system call takes...
            raise UnpackError(f"{layer_name}: {e}") from None
        raise
    finally:
        if reader is not None:
            reader.close()
        unpacker.close()
        os.close(root_fd)
        if isinstance(stream, _ProcessReader):
            stream.close()
        if own:
            raw.close()


# ---- unpacking layers side by side, in processes ----
# A layer's unpack is Python work for every entry between the system calls that make the
# file: threads unpacking two layers take turns at the GIL, and in bench_pull's image two of
# them took as long as one after the other; two processes took 0.6x (2 cores).

@contextlib.contextmanager
def handled_signals_blocked():
    """Block, in this thread, every signal that has a Python handler (Ctrl-C's SIGINT...),
    until the block ends: a thread started or a process forked meanwhile inherits the
    block, and one that arrives meanwhile is taken (its handler run) when it ends.  Yields
    the mask from before."""
    handled = {s for s in signal.valid_signals() if callable(signal.getsignal(s))}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, handled)
    try:
        yield old
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class UnpackProcesses:
    """Processes forked to unpack layers, one layer at a time each.  They are forked before
    the caller starts any thread: a fork copies only the thread that calls it, and a lock
    another one held then (malloc's, OpenSSL's, the interpreter's own) stays held in the
    child for ever.  possible() says whether that is still so.  They share the caller's pages
    (its interpreter and modules) until one of them writes to them; what each one's unpack
    needs is its own.  A process that the caller's death, kill() or close() ends takes no
    layer half-way into the store: it writes only into the caller's work directory.

    Ctrl-C is held off while they are forked: a KeyboardInterrupt between a fork and the
    record of its child would leave the child unknown, and one in the child before it is
    set up would run the caller's code there.  The caller holds it off until the object is
    its own too (handled_signals_blocked)."""

    @staticmethod
    def possible():
        return hasattr(os, "fork") and threading.active_count() == 1

    def __init__(self, count):
        self.idle, self.all = queue.SimpleQueue(), []
        frozen = gc.get_freeze_count()  # a launcher's freeze (minicontainer's) stays
        gc.freeze()  # a collection in a child would write to every object: to every page
        try:
            with handled_signals_blocked() as mask:
                for _ in range(count):
                    self.all.append(_UnpackProcess([fd for p in self.all for fd in p.fds()],
                                                   mask))
                    self.idle.put(self.all[-1])
        except BaseException:
            self.close(kill=True)
            raise
        finally:
            if not frozen:
                gc.unfreeze()

    def unpack(self, path, dest, layer_name, report=None):
        """Unpack the layer at path into dest (overlay form) in the next free process: return
        its diff_id and the directories it has implicitly (unpack_layer's implicit)."""
        process = self.idle.get()
        try:
            return process.unpack(path, dest, layer_name, report)
        finally:
            self.idle.put(process)  # (one that failed mid-job is dead: it fails at once)

    def kill(self):
        """End every process at once (the pull stops): unpack() then raises in each caller."""
        for process in self.all:
            process.kill()

    def close(self, kill=False):
        """End them (at once if kill) and reap them."""
        for process in self.all:
            if kill:
                process.kill()
            process.end()
        for process in self.all:
            process.reap()


class _UnpackProcess:
    """One forked unpacker: it reads a JSON job per line and answers "R <bytes read>" lines
    while it reads the layer, then one "D <json>" (done), "E <json message>" (the layer's
    fault: UnpackError) or "X <json traceback>" (ours)."""

    def __init__(self, others, mask):
        fds = []
        try:
            fds += os.pipe2(os.O_CLOEXEC)
            fds += os.pipe2(os.O_CLOEXEC)
            job_r, job_w, reply_r, reply_w = fds
            parent = os.getpid()
            self.pid = os.fork()
        except OSError:  # no fd or no process to spare
            for fd in fds:
                os.close(fd)
            raise
        if self.pid == 0:
            status = 1
            try:
                for fd in [job_w, reply_r] + others:  # another's jobs would never end
                    os.close(fd)
                _serve_unpacks(parent, mask, job_r, reply_w)
                status = 0
            finally:
                os._exit(status)
        os.close(job_r)
        os.close(reply_w)
        self.jobs, self.replies = job_w, open(reply_r, "rb")
        self.dead = self.reaped = False

    def fds(self):
        return [self.jobs, self.replies.fileno()]

    def unpack(self, path, dest, layer_name, report):
        job = {"path": os.fspath(path), "dest": dest, "layer_name": layer_name}
        try:
            kind, text = self._ask(json.dumps(job).encode() + b"\n", report)
        except BaseException:  # report() failed (stdout closed), Ctrl-C...: it is mid-job, and
            self.kill()        # its next answers would be this job's: it takes no other
            raise
        if kind == b"D":
            return text["digest"], [tuple(p) for p in text["implicit"]]
        if kind == b"E":
            raise UnpackError(text)
        if kind == b"X":
            raise RuntimeError(f"{layer_name}: the unpacking process failed:\n{text}")
        self.kill()
        raise UnpackError(f"{layer_name}: the unpacking process ended")

    def _ask(self, job, report):
        """Send a job, tell report() its progress, and return its answer: (kind, its JSON
        value), or (None, None) when the process ended first or in the middle of it."""
        if self.dead:
            return None, None
        try:
            mc.write_all(self.jobs, job)
        except BrokenPipeError:
            return None, None
        for line in self.replies:
            kind, _, data = line.partition(b" ")
            if not line.endswith(b"\n"):
                break  # cut short: killed while it answered
            if kind != b"R":
                return kind, json.loads(data)
            if report is not None:
                report(int(data))
        return None, None

    def kill(self):
        self.dead = True
        if not self.reaped:  # else its pid may be another process's now
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def end(self):
        """Close its jobs' pipe: once its job is done, it ends."""
        if self.jobs is not None:
            os.close(self.jobs)
            self.jobs = None

    def reap(self):
        if not self.reaped:
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:  # reaped by the kernel: SIGCHLD ignored, inherited
                pass
            self.reaped = True
            self.replies.close()


def _serve_unpacks(parent, mask, job_r, reply_w):
    """A forked unpacker's life: its jobs until their pipe ends.  Ctrl-C reaches the whole
    process group: the pull takes it and kills us, we ignore it (it was blocked since the
    fork, and may be pending).  We die with the pull."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for sig in (signal.SIGTERM, signal.SIGHUP):  # not the pull's handler: end, as it does
        signal.signal(sig, signal.SIG_DFL)
    mc.prctl(mc.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the line above
        return
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def report(n):
        mc.write_all(reply_w, b"R %d\n" % n)
    for line in open(job_r, "rb"):
        job = json.loads(line)
        try:
            implicit = []
            with ReportedFile(job["path"], None, report) as src:
                digest = unpack_layer(src, job["dest"], job["layer_name"], overlay=True,
                                      implicit=implicit)
            reply = b"D " + json.dumps({"digest": digest, "implicit": implicit}).encode()
        except mc.Error as e:
            reply = b"E " + json.dumps(str(e)).encode()
        except OSError as e:  # the blob could not be opened
            reply = b"E " + json.dumps(f"{job['layer_name']}: {e}").encode()
        except Exception:
            import traceback
            reply = b"X " + json.dumps(traceback.format_exc()).encode()
        mc.write_all(reply_w, reply + b"\n")
