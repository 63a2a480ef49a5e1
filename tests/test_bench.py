"""`make bench`'s benchmarks run to their end (with their smallest settings): one that falls
behind the code it measures (bench_network did, for a day, on a changed helper) fails here
rather than on the day someone needs its figures. Nothing here is timed."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.needs_root

SMALL_DIR = "/usr/share/perl" if os.path.isdir("/usr/share/perl") else "/usr/include"


def bench(tmp_path, name, *args):
    with open(tmp_path / "out", "w+") as out:  # a file: a runtime's children may hold it
        r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", name)] + list(args),
                           stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           timeout=300)
        out.seek(0)
        said = out.read()
    assert r.returncode == 0, said
    return said


@pytest.mark.parametrize("args, summary", [
    (["--runs", "1"], "minicontainer / runc: run "),
    (["--runs", "1", "--cgroup", "v2", "--cgroupns", "--pause", "0.01"],
     "minicontainer over the bare interpreter: "),
], ids=["v1", "v2-cgroupns"])
def test_bench_run(tmp_path, args, summary):
    assert summary in bench(tmp_path, "bench_run.py", *args)


def test_bench_network(tmp_path):
    said = bench(tmp_path, "bench_network.py", "--runs", "1", "--no-podman")
    assert "minicontainer image: bridge costs" in said, said


def test_bench_overlay(tmp_path):
    assert "overlay mount(2):" in bench(tmp_path, "bench_overlay.py", "--runs", "1")


def test_bench_detached(tmp_path):
    assert "1 containers: 1 process(es)" in bench(tmp_path, "bench_detached.py", "--counts",
                                                   "1")


def test_bench_rootless(tmp_path):
    assert "rootless next to rootful" in bench(tmp_path, "bench_rootless.py", "--runs", "1")


def test_bench_pull(tmp_path):
    out = str(tmp_path / "pull")
    said = bench(tmp_path, "bench_pull.py", "--dirs", SMALL_DIR, "--runs", "1", "--out", out)
    assert "pull.py with unpack / (skopeo copy + GNU tar -xzf):" in said, said
    said = bench(tmp_path, "bench_pull_interrupt.py", "--dirs", SMALL_DIR, "--runs", "1",
                 "--out", out)
    assert "the next pull completes, and leaves tmp/ empty" in said, said
