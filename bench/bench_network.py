#!/usr/bin/env python3
"""Start-up cost of networking: `run --rm --network none` against `--network bridge`.

Each is `minicontainer run --rm --rootfs R --network MODE -- /bin/true`, and the same from R
imported as an image (`run --rm --network MODE IMAGE /bin/true`: the image's overlay too),
timed from exec of the runtime to its exit, interleaved (none bridge none bridge ...) so that
the machine's drift hits each alike. When podman is installed, `podman run --rm --runtime crun`
of the same rootfs (imported as an image) joins the rounds, with --network none and bridge
(netavark's).

R is the Alpine 3.20.3 minirootfs when ../shared/data holds it, else a busybox rootfs. As in
bench_run.py, everything runs in a private mount namespace with a tmpfs over
/sys/fs/cgroup/unified (crun refuses hybrid cgroup hosts). No packet leaves the machine:
/bin/true sends none, and the bridge's addresses are this machine's.

    sudo python3 bench/bench_network.py [--runs N] [--no-podman] [--json FILE]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench_run  # noqa: E402
import minicontainer  # noqa: E402  (bench_run put the repository on sys.path)
sys.path.insert(0, os.path.join(bench_run.ROOT, "tools"))
import import_image  # noqa: E402

PODMAN_IMAGE = "localhost/minicontainer-bench-network:latest"
# podman's defaults ask for more open files and processes than some sandboxes allow.
PODMAN_LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]


def timed(cmd, env=None):
    t = time.perf_counter()
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, env=env or bench_run.CLEAN_ENV)
    if r.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(cmd[:6]), r.stderr.decode().strip()))
    return time.perf_counter() - t


def podman_variants(rootfs):
    podman = shutil.which("podman")
    if not podman or not shutil.which("crun"):
        return {}, None
    tar = subprocess.Popen(["tar", "-C", rootfs, "-c", "."], stdout=subprocess.PIPE)
    r = subprocess.run([podman, "import", "-", PODMAN_IMAGE], stdin=tar.stdout,
                       capture_output=True)
    tar.wait()
    if r.returncode != 0:
        print("podman: import failed: %s" % r.stderr.decode().strip())
        return {}, None
    base = [podman, "run", "--rm", "--runtime", "crun"] + PODMAN_LIMITS
    return {"podman+crun none": base + ["--network", "none", PODMAN_IMAGE, "/bin/true"],
            "podman+crun bridge": base + ["--network", "bridge", PODMAN_IMAGE, "/bin/true"]}, \
        podman


def remove_bridge_if_unused(bridge=minicontainer.BRIDGE):
    with minicontainer._Leases(bridge) as leases, minicontainer.Netlink() as nl:
        links = minicontainer.rtm_getlink_all(nl)
        if bridge in links and not leases.leases and \
                not any(master == links[bridge][0] for _, master in links.values()):
            minicontainer.rtm_dellink(nl, bridge)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--no-podman", action="store_true")
    p.add_argument("--json")
    a = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_network: needs root")
    bench_run.bytecode.write(os.path.join(bench_run.ROOT, "minicontainer.py"))  # as installed
    work = tempfile.mkdtemp(prefix="mc-bench-net-")
    podman = None
    try:
        bundle = os.path.join(work, "bundle")
        what = bench_run.make_bundle(bundle)
        rootfs = os.path.join(bundle, "rootfs")
        bench_run.private_cgroup_view("v1")
        run = [os.path.join(bench_run.ROOT, "minicontainer.py"), "--root",
               os.path.join(work, "state"), "run", "--rm"]
        store = os.path.join(work, "store")
        image = import_image.import_image(rootfs, "bench:network", store).name
        variants, envs = {}, {}
        for mode in ("none", "bridge"):
            variants["minicontainer " + mode] = run + ["--network", mode, "--rootfs", rootfs,
                                                       "--", "/bin/true"]
            variants["minicontainer image " + mode] = run + ["--network", mode, image,
                                                             "/bin/true"]
            envs["minicontainer image " + mode] = dict(bench_run.CLEAN_ENV,
                                                       MINICONTAINER_STORE=store)
        if not a.no_podman:
            extra, podman = podman_variants(rootfs)
            for name, cmd in extra.items():
                try:
                    timed(cmd)  # and podman makes its network on first use
                    variants[name] = cmd
                except RuntimeError as e:
                    print("%s: left out: %s" % (name, e))
        for name, cmd in variants.items():  # warm caches: the first start compiles, ...
            timed(cmd, envs.get(name))
        results = {name: [] for name in variants}
        for _ in range(a.runs):
            for name, cmd in variants.items():
                results[name].append(timed(cmd, envs.get(name)))
        summary = {"rootfs": what, "runs": a.runs, "results": {}}
        print("rootfs: %s, %d interleaved runs of /bin/true" % (what, a.runs))
        print("%-28s %10s %10s %10s" % ("", "median", "mean", "min"))
        for name, times in results.items():
            ms = [t * 1000 for t in times]
            summary["results"][name] = {"median_ms": statistics.median(ms),
                                        "mean_ms": statistics.mean(ms), "min_ms": min(ms)}
            print("%-28s %7.1f ms %7.1f ms %7.1f ms" % (name, statistics.median(ms),
                                                       statistics.mean(ms), min(ms)))
        r = summary["results"]
        for who in ("minicontainer", "minicontainer image", "podman+crun"):
            if who + " bridge" in r:
                print("%s: bridge costs %.1f ms more than none (medians)" % (
                    who, r[who + " bridge"]["median_ms"] - r[who + " none"]["median_ms"]))
        if "podman+crun bridge" in r:
            print("from an image, bridged: minicontainer takes %.2fx podman+crun's time" % (
                r["minicontainer image bridge"]["median_ms"] /
                r["podman+crun bridge"]["median_ms"]))
        if a.json:
            with open(a.json, "w") as f:
                json.dump(summary, f, indent=2)
    finally:
        if podman:
            subprocess.run([podman, "rmi", "-f", PODMAN_IMAGE], capture_output=True)
        try:
            remove_bridge_if_unused()
        except OSError:
            pass
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
