#!/usr/bin/env python3
"""What the copy-on-write rootfs costs at start: `run --rm IMAGE /bin/true` on an overlay
of the image's layers against the private-copy fallback ($MINICONTAINER_NO_OVERLAY=1), and
the overlay mount(2) alone (in a private mount namespace, mount + umount timed apart).

    sudo python3 bench/bench_overlay.py [--runs N] [--image-tarball ALPINE.tar.gz]

The image is the given rootfs tarball, else the Alpine 3.20.3 minirootfs when ../shared/data
holds it, else a busybox rootfs (tools/mkrootfs.py), stored with tools/import_image.py in a
temporary store; runs are interleaved so drift hits both alike. The runtime is run as a
program with an almost empty environment, as engines (and bench_run.py) run it.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))

import import_image  # noqa: E402
import minicontainer as mc  # noqa: E402
import mkrootfs  # noqa: E402

ALPINE = os.path.join(os.path.dirname(ROOT), "shared", "data",
                      "alpine-minirootfs-3.20.3-%s.tar.gz" % os.uname().machine)


def ms(seconds):
    return "%.2f ms" % (seconds * 1000)


def time_run(state, image, env):
    target = ["--rootfs", image, "--"] if image.startswith("/") else [image]
    # As engines and bench_run.py run it: a program, with an almost empty environment.
    cmd = [os.path.join(ROOT, "minicontainer.py"), "--root", state, "run",
           "--rm"] + target + ["/bin/true"]
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit("run failed: %s" % r.stderr.decode())
    return elapsed


def time_mount(layers, tmp, runs):
    """mount(2) of the overlay and its umount, in a child with a private mount namespace."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            mc.unshare(mc.CLONE_NEWNS)
            mc.mount(None, "/", None, mc.MS_REC | mc.MS_PRIVATE)
            mounts, umounts = [], []
            for i in range(runs):
                d = os.path.join(tmp, "m%d" % i)
                for sub in ("rootfs", "upper", "work"):
                    os.makedirs(os.path.join(d, sub))
                t = time.perf_counter()
                mc.mount_overlay(layers, os.path.join(d, "upper"), os.path.join(d, "work"),
                                 os.path.join(d, "rootfs"))
                mounts.append(time.perf_counter() - t)
                t = time.perf_counter()
                mc.umount2(os.path.join(d, "rootfs"))
                umounts.append(time.perf_counter() - t)
            os.write(w, ("%r %r" % (statistics.median(mounts), statistics.median(umounts)))
                     .encode())
        finally:
            os._exit(0)
    os.close(w)
    out = os.read(r, 4096).decode().split()
    os.waitpid(pid, 0)
    return float(out[0]), float(out[1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--image-tarball", help="a rootfs tarball to use as the image")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_overlay: run as root")
    tmp = tempfile.mkdtemp(prefix="bench-overlay-")
    try:
        store, state = os.path.join(tmp, "store"), os.path.join(tmp, "state")
        source = a.image_tarball or (ALPINE if os.path.exists(ALPINE) else
                                     mkrootfs.make_rootfs(os.path.join(tmp, "rootfs")))
        image = import_image.import_image(source, "bench:overlay", store)
        files = sum(len(f) + len(d) for _, d, f in os.walk(image.layers[0]))
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "MINICONTAINER_STORE": store}
        copy_env = dict(env, MINICONTAINER_NO_OVERLAY="1")
        flat = os.path.join(tmp, "flat")  # the baseline: a rootfs directory, no image
        os.mkdir(flat)
        mc.copy_layers(image.layers, flat)
        for e in (env, copy_env):  # warm caches (bytecode, page cache)
            time_run(state, image.name, e)
        overlay, copy, direct = [], [], []
        for _ in range(a.runs):
            overlay.append(time_run(state, image.name, env))
            copy.append(time_run(state, image.name, copy_env))
            direct.append(time_run(state, flat, env))
        mount, umount = time_mount(image.layers, os.path.join(tmp, "mnt"), a.runs)
        o, c = statistics.median(overlay), statistics.median(copy)
        print("image: %s (%d entries in %d layer(s)), %d runs each, medians"
              % (os.path.basename(source), files, len(image.layers), a.runs))
        print("  run --rm IMAGE /bin/true, overlay:      %s" % ms(o))
        print("  run --rm IMAGE /bin/true, private copy: %s" % ms(c))
        print("  run --rm --rootfs DIR /bin/true (no image, the baseline): %s"
              % ms(statistics.median(direct)))
        print("  overlay mount(2): %s (%.1f%% of the overlay start), umount: %s"
              % (ms(mount), 100 * mount / o, ms(umount)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
