#!/usr/bin/env python3
"""How long tools/pull.py takes to stop on Ctrl-C (SIGINT), on a loopback registry.

    python3 bench/bench_pull_interrupt.py [--dirs DIR ...] [--out DIR] [--runs N]

Builds bench_pull.py's image (one gzip layer per directory), pushes it to a docker-registry
started on a free loopback port, and pulls it into a fresh store --runs times for each of:
  downloading  SIGINT while a blob is coming (a proxy holds the largest one mid-way)
  extracting   SIGINT as soon as a layer is being unpacked (the registry sends at full speed)
timing from the signal to the process's exit; then checks that the store has no image, and
that a pull afterwards completes.  The goal (issue 13) is half a second.  Needs root.
"""
import argparse
import os
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests"), os.path.join(ROOT, "tools"),
                os.path.join(ROOT, "bench")]

import minicontainer as mc  # noqa: E402
from bench_pull import DEFAULT_DIRS, build_layers, fresh  # noqa: E402
from fixtures_registry import FaultProxy, Image, RegistryClient, RegistryServer  # noqa: E402

PULL = os.path.join(ROOT, "tools", "pull.py")


def interrupted(ref, store, when):
    """Seconds from SIGINT (sent when the output has a line containing when) to exit."""
    proc = subprocess.Popen([sys.executable, PULL, "--store", store, ref],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if when in line:
            break
    else:
        raise SystemExit(f"the pull ended before {when!r}: {proc.stderr.read()}")
    start = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    proc.wait()
    elapsed = time.perf_counter() - start
    proc.stdout.read()
    err = proc.stderr.read()
    if proc.returncode != 130 or err != "pull: interrupted\n":
        raise SystemExit(f"unexpected end: exit {proc.returncode}: {err}")
    try:
        mc.find_image(ref, store)
        raise SystemExit("an interrupted pull left an image")
    except mc.Error:
        pass
    return elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dirs", nargs="+", default=DEFAULT_DIRS)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "out"))
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    layers = build_layers(args.dirs, args.out)
    server = RegistryServer(fresh(os.path.join(args.out, "registry-interrupt")))
    proxy = FaultProxy(server.host)
    proxy.server.handle_error = lambda *a: None  # a pull that stops cuts what it was sent
    try:
        RegistryClient(server.base).push_image("bench/interrupt", "v1", Image(layers))
        largest = max(layers, key=lambda layer: layer.size)
        results = {}
        for case, when, rule in (
                ("downloading", "Downloading",
                 lambda m, p, h: ("hold", 4 << 20) if p.endswith(largest.digest) else None),
                ("extracting", "Extracting", lambda m, p, h: None)):
            times = []
            for _ in range(args.runs):
                proxy.holding.clear()
                proxy.release.clear()
                proxy.rule = rule
                store = fresh(os.path.join(args.out, "store-interrupt"))
                try:
                    times.append(interrupted(f"{proxy.host}/bench/interrupt:v1", store, when))
                finally:
                    proxy.release.set()
            results[case] = times
            print(f"  SIGINT while {case}: median {statistics.median(times):.3f} s, "
                  f"max {max(times):.3f} s ({args.runs} runs)", flush=True)
        proxy.rule = lambda m, p, h: None
        subprocess.run([sys.executable, PULL, "-q", "--store", store,
                        f"{proxy.host}/bench/interrupt:v1"], check=True,
                       stdout=subprocess.DEVNULL)
        assert os.listdir(os.path.join(store, "tmp")) == []
        print("  the next pull completes, and leaves tmp/ empty")
    finally:
        proxy.stop()
        server.stop()
        fresh(os.path.join(args.out, "store-interrupt"))
        fresh(os.path.join(args.out, "registry-interrupt"))


if __name__ == "__main__":
    main()
