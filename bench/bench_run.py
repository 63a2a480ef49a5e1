#!/usr/bin/env python3
"""Start-up benchmark: minicontainer against runc and crun on the same bundle.

Two measures, each from one interleaved run (A B C A B C ...), so that the machine's drift
hits every runtime alike:
  run     `RUNTIME run ID` of /bin/true, from exec of the runtime to its exit
  cycle   `create` + `start` + `delete` of /bin/true, as youki and crun publish it

The bundle's rootfs is the real Alpine 3.20.3 minirootfs when ../shared/data holds it, else
a busybox rootfs. crun refuses hybrid cgroup hosts, so the whole benchmark runs in a private
mount namespace with a tmpfs over /sys/fs/cgroup/unified (every runtime sees the same).

    sudo python3 bench/bench_run.py [--runs N] [--json FILE]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))

import minicontainer  # noqa: E402
import mkrootfs  # noqa: E402

ALPINE = os.path.join(os.path.dirname(ROOT), "shared", "data",
                      "alpine-minirootfs-3.20.3-x86_64.tar.gz")
# Engines run the runtime as a program with an almost empty environment: so do we (and so a
# pyenv shim on PATH, ~100 ms a start, does not stand in for the interpreter).
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


def make_bundle(path):
    rootfs = os.path.join(path, "rootfs")
    os.makedirs(rootfs)
    if os.path.exists(ALPINE) and os.uname().machine == "x86_64":
        with tarfile.open(ALPINE) as t:
            t.extractall(rootfs, filter="fully_trusted") if hasattr(tarfile, "data_filter") \
                else t.extractall(rootfs)
        what = "alpine 3.20.3"
    else:
        mkrootfs.make_rootfs(rootfs)
        what = "busybox"
    spec = minicontainer.default_spec(rootfs="rootfs", args=["/bin/true"])
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(spec, f)
    return what


def private_cgroup_view():
    """A mount namespace of our own where /sys/fs/cgroup/unified is an empty tmpfs."""
    minicontainer.unshare(minicontainer.CLONE_NEWNS)
    minicontainer.mount(None, "/", None, minicontainer.MS_REC | minicontainer.MS_PRIVATE)
    if os.path.ismount("/sys/fs/cgroup/unified"):
        minicontainer.mount("tmpfs", "/sys/fs/cgroup/unified", "tmpfs", 0, "mode=755")


def runtimes(state):
    out = {"minicontainer": [os.path.join(ROOT, "minicontainer.py"), "--root",
                             os.path.join(state, "mc")]}
    for name in ("runc", "crun"):
        exe = shutil.which(name)
        if exe:
            out[name] = [exe, "--root", os.path.join(state, name)]
    return out


def timed(cmd, cwd):
    t = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, env=CLEAN_ENV)
    return time.perf_counter() - t


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--json")
    a = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_run: needs root")
    work = tempfile.mkdtemp(prefix="mc-bench-")
    try:
        bundle = os.path.join(work, "bundle")
        what = make_bundle(bundle)
        private_cgroup_view()
        rts = runtimes(os.path.join(work, "state"))
        results = {name: {"run": [], "cycle": []} for name in rts}
        for i in range(a.runs):
            for name, base in rts.items():
                cid = "bench-%s-%d" % (name, i)
                results[name]["run"].append(timed(base + ["run", cid], bundle))
                subprocess.run(base + ["delete", "-f", cid], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
                cid += "c"
                t = time.perf_counter()
                for step in (["create", "--bundle", bundle, cid], ["start", cid],
                             ["delete", "-f", cid]):
                    subprocess.run(base + step, check=True, cwd=bundle, env=CLEAN_ENV,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
                results[name]["cycle"].append(time.perf_counter() - t)
        summary = {"rootfs": what, "runs": a.runs, "results": {}}
        print("rootfs: %s, %d interleaved runs" % (what, a.runs))
        print("%-14s %12s %12s %16s %16s" % ("runtime", "run median", "run mean",
                                            "cycle median", "cycle mean"))
        for name, r in results.items():
            med = {k: statistics.median(v) * 1000 for k, v in r.items()}
            mean = {k: statistics.mean(v) * 1000 for k, v in r.items()}
            summary["results"][name] = {"run_median_ms": med["run"], "cycle_median_ms":
                                        med["cycle"], "run_mean_ms": mean["run"],
                                        "cycle_mean_ms": mean["cycle"]}
            print("%-14s %9.1f ms %9.1f ms %13.1f ms %13.1f ms" % (
                name, med["run"], mean["run"], med["cycle"], mean["cycle"]))
        ours = summary["results"]["minicontainer"]
        for name in rts:
            if name != "minicontainer":
                theirs = summary["results"][name]
                print("minicontainer / %s: run %.2fx, create+start+delete %.2fx" % (
                    name, ours["run_median_ms"] / theirs["run_median_ms"],
                    ours["cycle_median_ms"] / theirs["cycle_median_ms"]))
        if a.json:
            with open(a.json, "w") as f:
                json.dump(summary, f, indent=2)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
