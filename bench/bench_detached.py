#!/usr/bin/env python3
"""What detached containers cost (issue 13, item 8): the runtime's own processes (the state
root's monitor) per `run -d` container, beyond the containers' own, with 1, 10 and 50 of them;
and how long a `run -d` takes, the first (which starts the monitor) and the next ones.

Target: on average at most 2 MiB of runtime processes per detached container.

    sudo python3 bench/bench_detached.py [--counts 1,10,50] [--json FILE]
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
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))

import mkrootfs  # noqa: E402

RUNTIME = os.path.join(ROOT, "minicontainer.py")
# Run as a program, as engines and bench_run.py do (its compiled form cached), with sudo's PATH
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
TARGET_KIB = 2048


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def runtime_processes(state):
    """The pids of the runtime's processes for this state root (the monitor)."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % name, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if state.encode() in argv and any(a.endswith(b"minicontainer.py") for a in argv):
            found.append(int(name))
    return found


def measure(count, rootfs, base):
    state = os.path.join(base, "state%d" % count)
    ids, times = [], []
    try:
        for i in range(count):
            t = time.monotonic()
            out = subprocess.run([RUNTIME, "--root", state, "run", "-d", "--rootfs", rootfs,
                                  "--", "sleep", "1000"], check=True, env=CLEAN_ENV,
                                 capture_output=True, text=True).stdout
            times.append((time.monotonic() - t) * 1000)
            ids.append(out.strip())
        time.sleep(0.2)
        procs = runtime_processes(state)
        total = sum(rss_kib(p) for p in procs)
        return {"containers": count, "runtime_processes": len(procs), "rss_kib": total,
                "rss_kib_per_container": total / count, "first_run_d_ms": times[0],
                "next_run_d_median_ms": statistics.median(times[1:]) if count > 1 else None}
    finally:
        for cid in ids:
            subprocess.run([RUNTIME, "--root", state, "delete", "-f", cid], env=CLEAN_ENV,
                           capture_output=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--counts", default="1,10,50")
    p.add_argument("--json")
    a = p.parse_args()
    base = tempfile.mkdtemp(prefix="mc-bench-detached-")
    try:
        rootfs = mkrootfs.make_rootfs(os.path.join(base, "rootfs"))
        results = [measure(int(n), rootfs, base) for n in a.counts.split(",")]
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print("detached containers: RSS of the runtime's processes (target: <= %d KiB a "
          "container)" % TARGET_KIB)
    for r in results:
        print("  %3d containers: %d process(es), %6d KiB, %6.0f KiB a container %s; run -d "
              "%.0f ms the first%s" % (
                  r["containers"], r["runtime_processes"], r["rss_kib"],
                  r["rss_kib_per_container"],
                  "ok" if r["rss_kib_per_container"] <= TARGET_KIB else "OVER",
                  r["first_run_d_ms"], ", %.0f ms the next (median)" % r["next_run_d_median_ms"]
                  if r["next_run_d_median_ms"] is not None else ""))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
