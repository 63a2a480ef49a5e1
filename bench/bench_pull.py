#!/usr/bin/env python3
"""Benchmark pull and unpack against skopeo, umoci and GNU tar, on a loopback registry.

    python3 bench/bench_pull.py [--dirs DIR ...] [--out DIR] [--runs N]

Builds a multi-layer image from system directories (one gzip layer per directory, as
`tar -cz` makes them), pushes it to a docker-registry started on a free loopback port, then
times, in N rounds (3 by default) whose order turns each round so that the machine's drift
hits each alike, medians printed:
  pull     tools/pull.py REF             (download, verify, unpack into the store)
  skopeo   skopeo copy docker://REF oci:DIR   (download and verify only; no unpack)
  tar      GNU tar -xzf of the same layers, in order
and once each:
  fetch    tools/pull.py REF again with the blobs deleted but the rootfs kept, so it only
           downloads, verifies and stores blobs: the same work as skopeo's
  unpack   store_writer.unpack_layer over the layers (what pull does after downloading)
  umoci    umoci unpack of skopeo's layout
and prints MB/s (compressed bytes for transfers, uncompressed for unpacking), files/s, the
ratios, the peak memory of pull.py and the processes it forks (sampled in a pull of its own,
untimed: the sampling takes CPU from what it samples; each page counted once), and the peak
RSS of skopeo and tar (GNU time's).  Needs root (ownership and device nodes are restored as
in real use).
"""
import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests"), os.path.join(ROOT, "tools")]

import store_writer  # noqa: E402
from fixtures_registry import Image, RegistryClient, RegistryServer  # noqa: E402

DEFAULT_DIRS = ["/usr/include", "/usr/share/locale", "/usr/share/doc", "/usr/share/man",
                "/usr/lib/python3.11", "/usr/share/perl"]


class FileLayer:
    """A gzip layer on disk: what fixtures_registry.Layer is, without holding it in memory."""

    def __init__(self, path, entries):
        self.path, self.entries = path, entries
        sha, usha, size, usize = hashlib.sha256(), hashlib.sha256(), 0, 0
        d = zlib.decompressobj(31)
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                sha.update(chunk)
                size += len(chunk)
                out = d.decompress(chunk)
                usha.update(out)
                usize += len(out)
        self.digest, self.diff_id = "sha256:" + sha.hexdigest(), "sha256:" + usha.hexdigest()
        self.size, self.usize, self.compression = size, usize, "gzip"

    @property
    def blob(self):
        with open(self.path, "rb") as f:
            return f.read()

    def descriptor(self, fmt):
        return {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": self.digest, "size": self.size}


def build_layers(dirs, out):
    layers = []
    for i, d in enumerate(dirs):
        if not os.path.isdir(d):
            continue
        path = os.path.join(out, f"layer{i}.tar.gz")
        parent, name = os.path.split(d.rstrip("/"))
        rel = os.path.relpath(os.path.join(parent, name), "/")
        if not os.path.exists(path):
            subprocess.run(f"tar -C / --numeric-owner -cf - {rel} | gzip -6 > {path}",
                           shell=True, check=True)
        entries = int(subprocess.run(f"tar -tzf {path} | wc -l", shell=True, check=True,
                                     capture_output=True, text=True).stdout)
        layers.append(FileLayer(path, entries))
        print(f"  layer {i}: {d}: {entries} entries, {layers[-1].size / 1e6:.0f} MB gzip, "
              f"{layers[-1].usize / 1e6:.0f} MB tar", flush=True)
    return layers


PEAK_MIB = {}  # label: the peak RSS of the commands run through measured()
# pull.py runs as a user's sudo runs it: without this session's PYTHON* variables (with
# PYTHONDONTWRITEBYTECODE, it compiled minicontainer.py at every start: 30 MiB more)
CLEAN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}


class TreeMemory:
    """The memory of a process and its descendants, sampled every 10 ms until stop(): their
    pages counted once (the process's RSS and the others' private pages: what forked
    children share with it counts once), and, for comparison, the sums of their RSS and of
    their PSS.  GNU time's peak is the largest single process: it would hide the unpacking
    processes pull.py forks."""

    def __init__(self, pid, interval=0.01):
        self.pid, self.interval = pid, interval
        self.peak = {"once": 0, "rss": 0, "pss": 0}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _tree(self):
        children = {}
        for name in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    ppid = int(f.read().rpartition(b")")[2].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(name))
        tree, todo = [], [self.pid]
        while todo:
            tree.append(todo.pop())
            todo.extend(children.get(tree[-1], ()))
        return tree

    def _run(self):
        while not self.stopping.is_set():
            now = dict.fromkeys(self.peak, 0)
            for pid in self._tree():
                try:
                    with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
                        fields = dict(line.split()[:2] for line in f if line.endswith(b"kB\n"))
                except OSError:
                    continue  # gone meanwhile
                now["rss"] += int(fields[b"Rss:"])
                now["pss"] += int(fields[b"Pss:"])
                now["once"] += int(fields[b"Rss:"]) if pid == self.pid else \
                    int(fields[b"Private_Clean:"]) + int(fields[b"Private_Dirty:"])
            for key, kib in now.items():
                self.peak[key] = max(self.peak[key], kib)
            time.sleep(self.interval)

    def stop(self):
        """{"once", "rss", "pss"}: the peaks, in MiB."""
        self.stopping.set()
        self.thread.join()
        return {key: kib / 1024 for key, kib in self.peak.items()}


def tree_measured(label, cmd):
    """subprocess.run(cmd) (in CLEAN_ENV), its process tree's memory in PEAK_MIB[label]."""
    proc = subprocess.Popen(cmd, env=CLEAN_ENV, stdout=subprocess.DEVNULL)
    memory = TreeMemory(proc.pid)
    status = proc.wait()
    PEAK_MIB[label] = memory.stop()
    if status:
        raise subprocess.CalledProcessError(status, cmd)


def measured(label, cmd, **kwargs):
    """subprocess.run(cmd) through GNU time, which keeps its peak RSS (the largest of it and
    the children it waited for) in PEAK_MIB[label], the largest of its calls."""
    with tempfile.NamedTemporaryFile("r") as out:
        subprocess.run(["/usr/bin/time", "-f", "%M", "-o", out.name] + cmd, check=True,
                       **kwargs)
        PEAK_MIB[label] = max(PEAK_MIB.get(label, 0), int(out.read().split()[-1]) / 1024)


def timed(label, fn):
    subprocess.run(["sync"], check=True)  # earlier steps' writeback must not be billed here
    time.sleep(2)
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    print(f"  {label}: {elapsed:.2f} s", flush=True)
    return elapsed


def fresh(path):
    if os.path.lexists(path):
        shutil.rmtree(path)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dirs", nargs="+", default=DEFAULT_DIRS)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "out"))
    ap.add_argument("--runs", type=int, default=3, help="rounds of pull, skopeo and tar")
    ap.add_argument("--unpack-dir", help="where the unpack comparisons write (default: --out;"
                    " /dev/shm takes the disk out and compares CPU cost only)")
    args = ap.parse_args()
    unpack_dir = args.unpack_dir or args.out
    os.makedirs(args.out, exist_ok=True)
    for old in ("store", "skopeo", "unpack-ours", "umoci-bundle", "unpack-tar", "registry"):
        fresh(os.path.join(args.out, old))
        fresh(os.path.join(unpack_dir, old))  # before timing: deleting costs the disk too
    print("building layers", flush=True)
    layers = build_layers(args.dirs, args.out)
    gz = sum(layer.size for layer in layers)
    raw = sum(layer.usize for layer in layers)
    files = sum(layer.entries for layer in layers)
    print(f"image: {len(layers)} layers, {files} entries, {gz / 1e6:.0f} MB compressed, "
          f"{raw / 1e6:.0f} MB uncompressed", flush=True)

    server = RegistryServer(fresh(os.path.join(args.out, "registry")))
    try:
        image = Image(layers, "oci", config={"Cmd": ["/bin/sh"]})
        RegistryClient(server.base).push_image("bench/big", "v1", image)
        ref = f"{server.host}/bench/big:v1"
        store = fresh(os.path.join(args.out, "store"))
        skopeo_dir = fresh(os.path.join(args.out, "skopeo"))
        print("timing", flush=True)
        pull = [sys.executable, os.path.join(ROOT, "tools", "pull.py"), "-q", "--store", store,
                ref]
        subprocess.run([sys.executable, "-m", "compileall", "-q", ROOT + "/minicontainer.py",
                        ROOT + "/tools"], check=True)  # as a first pull would
        tar_dir = os.path.join(unpack_dir, "unpack-tar")

        def run_pull():
            subprocess.run(pull, check=True, env=CLEAN_ENV, stdout=subprocess.DEVNULL)

        def run_skopeo():
            measured("skopeo", ["skopeo", "copy", "-q", "--src-tls-verify=false",
                                f"docker://{ref}", f"oci:{skopeo_dir}:bench"])

        def run_tar():
            for layer in layers:
                measured("tar", ["tar", "-xzf", layer.path, "-C", tar_dir, "--numeric-owner"])
        steps = [("pull", "tools/pull.py", store, run_pull),
                 ("skopeo", "skopeo copy", skopeo_dir, run_skopeo),
                 ("tar", "GNU tar -xzf", tar_dir, run_tar)]
        times = {key: [] for key, *_ in steps}
        for i in range(args.runs):
            for key, label, out, fn in steps[i % 3:] + steps[:i % 3]:
                fresh(out)  # before timing: deleting costs the disk too
                if key == "tar":
                    os.makedirs(out)
                times[key].append(timed(f"{label} ({i + 1})", fn))
        results = {key: statistics.median(t) for key, t in times.items()}
        fresh(store)
        print("  tools/pull.py, its memory sampled (untimed)", flush=True)
        tree_measured("pull", pull)
        for name in os.listdir(os.path.join(store, "blobs", "sha256")):
            os.unlink(os.path.join(store, "blobs", "sha256", name))
        results["fetch"] = timed("tools/pull.py, rootfs kept", lambda: subprocess.run(
            pull, check=True, env=CLEAN_ENV, stdout=subprocess.DEVNULL))

        ours = fresh(os.path.join(unpack_dir, "unpack-ours"))
        os.makedirs(ours)
        results["unpack"] = timed("unpack_layer", lambda: [
            store_writer.unpack_layer(layer.path, ours) for layer in layers])
        bundle = fresh(os.path.join(unpack_dir, "umoci-bundle"))
        results["umoci"] = timed("umoci unpack", lambda: subprocess.run(
            ["umoci", "unpack", "--image", f"{skopeo_dir}:bench", bundle], check=True,
            stdout=subprocess.DEVNULL))
    finally:
        server.stop()
        # what it wrote goes (gigabytes, perhaps on tmpfs); the layers stay for the next run
        for name in ("store", "skopeo", "registry", "unpack-tar", "unpack-ours",
                     "umoci-bundle"):
            fresh(os.path.join(args.out, name))
            fresh(os.path.join(unpack_dir, name))
        if args.unpack_dir and not os.listdir(unpack_dir):
            os.rmdir(unpack_dir)

    def row(label, seconds, nbytes):
        return (f"| {label} | {seconds:.2f} s | {nbytes / 1e6 / seconds:.0f} MB/s | "
                f"{files / seconds:.0f} files/s |")
    print()
    print(f"Unpacking into {unpack_dir}; pull, skopeo and tar: medians of {args.runs} "
          "interleaved rounds.")
    print(f"Image: {len(layers)} gzip layers, {files} entries, {gz / 1e6:.0f} MB compressed, "
          f"{raw / 1e6:.0f} MB uncompressed.")
    print()
    print("| step | time | throughput | files |")
    print("|---|---|---|---|")
    print(row("pull.py (download+verify+unpack)", results["pull"], gz))
    print(row("pull.py, rootfs kept (download+verify)", results["fetch"], gz))
    print(row("skopeo copy (download+verify)", results["skopeo"], gz))
    print(row("unpack_layer (all layers)", results["unpack"], raw))
    print(row("umoci unpack", results["umoci"], raw))
    print(row("GNU tar -xzf (all layers)", results["tar"], raw))
    print()
    print(f"pull.py download+verify / skopeo copy: "
          f"{results['fetch'] / results['skopeo']:.2f}x the time")
    print(f"pull.py with unpack / skopeo copy: {results['pull'] / results['skopeo']:.2f}x")
    print(f"pull.py with unpack / (skopeo copy + GNU tar -xzf): "
          f"{results['pull'] / (results['skopeo'] + results['tar']):.2f}x the time (by round: "
          + ", ".join(f"{p / (k + t):.2f}x" for p, k, t in zip(
              times["pull"], times["skopeo"], times["tar"])) + ")")
    print("peak memory of pull.py with unpack and its unpacking processes: %.1f MiB, each "
          "page counted once (sums of their RSS %.1f MiB, of their PSS %.1f MiB); peak RSS of "
          "skopeo copy %.1f MiB, of GNU tar -xzf %.1f MiB" % (
              PEAK_MIB["pull"]["once"], PEAK_MIB["pull"]["rss"], PEAK_MIB["pull"]["pss"],
              PEAK_MIB["skopeo"], PEAK_MIB["tar"]))
    print(f"unpack_layer / GNU tar: {results['unpack'] / results['tar']:.2f}x the time")
    print(f"unpack_layer / umoci unpack: {results['unpack'] / results['umoci']:.2f}x the time")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"layers": len(layers), "entries": files, "compressed": gz,
                   "uncompressed": raw, "seconds": results, "rounds": times,
                   "peak_rss_mib": PEAK_MIB}, f, indent=2)


if __name__ == "__main__":
    main()
