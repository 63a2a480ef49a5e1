#!/usr/bin/env python3
"""Start-up benchmark: minicontainer against runc and crun on the same bundle.

Measures, each from one interleaved run (A B C A B C ...), so that the machine's drift hits
every runtime alike:
  run     `RUNTIME run ID` of /bin/true, from exec of the runtime to its exit
  cycle   `create` + `start` + `delete` of /bin/true, as youki and crun publish it (an engine's
          path: three processes)
  create, start, state, list, kill, delete: each call of that cycle alone (state and list
          while the container is created; kill while it runs `sleep`)
  exec    `exec ID /bin/true` into a running container
  rss     the peak resident set of `run` (the runtime and its children, from wait4)
Next to them: the bare interpreter (`python3 -I -S -c pass`), the floor of a Python runtime,
and `python3 minicontainer.py run` (the form that compiles the whole file at every call).

The bundle's rootfs is the real Alpine 3.20.3 minirootfs when ../shared/data holds it, else
a busybox rootfs. crun refuses hybrid cgroup hosts, so on one the whole benchmark runs in a
private mount namespace where every runtime sees one cgroup version: v1 (--cgroup v1, the
default: a tmpfs over /sys/fs/cgroup/unified) or v2 (--cgroup v2: the cgroup2 mount over
/sys/fs/cgroup, with the controllers v1 does not hold). A pure host is used as it is.
--cgroupns gives the containers a cgroup namespace (docker's and podman's default on v2).
--bytecode whole caches the runtime's bytecode as Python does, all of it loaded at every
start (and leaves it so, until the next `make install`); by default it is cached split, as
`make install` caches it (tools/bytecode.py).
--pause S sleeps S seconds before each timed call: the first move of a process into a
cgroup waits for an RCU grace period unless another went just before, which calls in a
row (a burst of an engine's) often spare; a lone call on a quiet machine pays it.

    sudo python3 bench/bench_run.py [--runs N] [--json FILE] [--cgroup v1|v2] [--cgroupns]
                                    [--pause S] [--bytecode split|whole]

The runtime's container ends when its program does, so `kill` and `exec` run against a bundle
whose process is `sleep 1000`.
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

import bytecode  # noqa: E402
import minicontainer  # noqa: E402
import mkrootfs  # noqa: E402

ALPINE = os.path.join(os.path.dirname(ROOT), "shared", "data",
                      "alpine-minirootfs-3.20.3-x86_64.tar.gz")
# Engines run the runtime as a program with an almost empty environment: so do we (and so a
# pyenv shim on PATH, ~100 ms a start, does not stand in for the interpreter).
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


def make_bundle(path, cgroupns=False):
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
    write_spec(path, "rootfs", ["/bin/true"], cgroupns)
    return what


def write_spec(path, rootfs, args, cgroupns):
    spec = minicontainer.default_spec(rootfs=rootfs, args=args)
    if cgroupns:
        spec["linux"]["namespaces"].append({"type": "cgroup"})
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(spec, f)


def private_cgroup_view(version):
    """A mount namespace of our own where every runtime sees one cgroup version; returns
    what it is."""
    minicontainer.unshare(minicontainer.CLONE_NEWNS)
    minicontainer.mount(None, "/", None, minicontainer.MS_REC | minicontainer.MS_PRIVATE)
    if not os.path.ismount("/sys/fs/cgroup/unified"):
        v1, v2 = minicontainer.cgroup_hierarchies()
        return "the host's (%s)" % ("v2" if v2 and not v1 else "v1")
    if version == "v1":
        minicontainer.mount("tmpfs", "/sys/fs/cgroup/unified", "tmpfs", 0, "mode=755")
        return "v1 (a hybrid host's, its cgroup2 mount hidden)"
    minicontainer.mount("cgroup2", "/sys/fs/cgroup", "cgroup2", 0)
    return "v2 (a hybrid host's cgroup2 mount alone, over /sys/fs/cgroup)"


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


def peak_rss(cmd, cwd):
    """Peak RSS in KiB of cmd (the largest of it and the children it waited for), through GNU
    time: a process forked from this benchmark would count the benchmark's own pages."""
    with tempfile.NamedTemporaryFile("r") as out:
        subprocess.run(["/usr/bin/time", "-f", "%M", "-o", out.name] + cmd, cwd=cwd,
                       check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       env=CLEAN_ENV)
        return int(out.read().split()[-1])


def measure_once(name, base, bundle, sleeper, i, results, pause):
    r = results[name]

    def one(key, args, cwd=bundle):
        time.sleep(pause)
        r.setdefault(key, []).append(timed(base + args, cwd))

    cid = "bench-%s-%d" % (name, i)
    one("run", ["run", cid])
    if os.path.exists("/usr/bin/time"):
        r.setdefault("rss", []).append(peak_rss(base + ["run", cid + "m"], bundle))
    for done in (cid, cid + "m"):
        subprocess.run(base + ["delete", "-f", done], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    cid += "c"
    one("create", ["create", "--bundle", bundle, cid])
    one("state", ["state", cid])
    one("list", ["list"])
    one("start", ["start", cid])
    one("delete", ["delete", "-f", cid])
    r.setdefault("cycle", []).append(sum(r[k][-1] for k in ("create", "start", "delete")))
    cid += "s"
    for step in (["create", "--bundle", sleeper, cid], ["start", cid]):
        subprocess.run(base + step, check=True, cwd=sleeper, env=CLEAN_ENV,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    one("exec", ["exec", cid, "/bin/true"], cwd=sleeper)
    one("kill", ["kill", cid, "KILL"], cwd=sleeper)
    subprocess.run(base + ["delete", "-f", cid], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


KEYS = ("run", "cycle", "create", "start", "state", "list", "kill", "delete", "exec")


def remove_cgroups(prefix):
    """The (empty) cgroups a runtime that failed left, named after its containers' ids: at
    the top of each hierarchy, where runc and crun make them without a cgroupsPath."""
    v1, v2 = minicontainer.cgroup_hierarchies()
    for root in set(v1.values()) | ({v2} if v2 else set()):
        for name in os.listdir(root):
            if name.startswith(prefix):
                try:
                    os.rmdir(os.path.join(root, name))
                except OSError:
                    pass


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--json")
    p.add_argument("--cgroup", choices=("v1", "v2"), default="v1")
    p.add_argument("--cgroupns", action="store_true")
    p.add_argument("--pause", type=float, default=0)
    p.add_argument("--bytecode", choices=("split", "whole"), default="split")
    a = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_run: needs root")
    runtime = os.path.join(ROOT, "minicontainer.py")
    if a.bytecode == "split":
        bytecode.write(runtime)
    else:
        import py_compile
        pyc = py_compile.compile(runtime, doraise=True)
        if os.path.exists(pyc[:-4] + ".cold"):
            os.unlink(pyc[:-4] + ".cold")
    work = tempfile.mkdtemp(prefix="mc-bench-")
    try:
        bundle = os.path.join(work, "bundle")
        what = make_bundle(bundle, a.cgroupns)
        sleeper = os.path.join(work, "sleeper")
        os.makedirs(sleeper)
        write_spec(sleeper, os.path.join(bundle, "rootfs"), ["/bin/sleep", "1000"], a.cgroupns)
        what += ", bytecode %s, cgroups %s%s%s" % (a.bytecode, private_cgroup_view(a.cgroup),
                                                   ", a cgroup namespace"
                                      if a.cgroupns else "", ", %.2f s before each timed call"
                                      % a.pause if a.pause else "")
        # State on tmpfs, where engines keep it (/run on a systemd host): on ext4 (/tmp here,
        # /run too on this VM), unlinking a state.json just renamed into place waits ~0.5 ms
        # for the writeback the rename started (auto_da_alloc), in every delete of every
        # runtime. The mount namespace is private_cgroup_view's, gone with this process.
        state = os.path.join(work, "state")
        os.mkdir(state)
        minicontainer.mount("tmpfs", state, "tmpfs", 0, "mode=700")
        what += ", state on tmpfs"
        rts = runtimes(state)
        results = {name: {} for name in rts}
        floor = {"interpreter": [], "python3 minicontainer.py run": []}
        slow_rss = []
        slow = [PYTHON, os.path.join(ROOT, "minicontainer.py"), "--root",
                os.path.join(work, "state", "slow")]
        for i in range(a.runs):
            for name, base in list(rts.items()):
                try:
                    measure_once(name, base, bundle, sleeper, i, results, a.pause)
                except subprocess.CalledProcessError as e:
                    if name == "minicontainer" or i > 0:
                        raise
                    # e.g. crun on v2 here: it raises RLIMIT_MEMLOCK, which root without
                    # CAP_SYS_RESOURCE may not
                    print("bench_run: %s fails here (%s, its message above): left out"
                          % (name, " ".join(e.cmd[3:])), file=sys.stderr)
                    del rts[name], results[name]
                    remove_cgroups("bench-%s-" % name)  # what it made before it failed
            floor["interpreter"].append(timed([PYTHON, "-I", "-S", "-c", "pass"], bundle))
            time.sleep(a.pause)
            floor["python3 minicontainer.py run"].append(
                timed(slow + ["run", "slow-%d" % i], bundle))
            if os.path.exists("/usr/bin/time"):
                slow_rss.append(peak_rss(slow + ["run", "slow-%dm" % i], bundle))
            for done in ("slow-%d" % i, "slow-%dm" % i):
                subprocess.run(slow + ["delete", "-f", done], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        report(what, a, rts, results, floor, slow_rss)
    finally:
        if os.path.ismount(os.path.join(work, "state")):
            minicontainer.umount2(os.path.join(work, "state"), minicontainer.MNT_DETACH)
        shutil.rmtree(work, ignore_errors=True)


def report(what, a, rts, results, floor, slow_rss):
    ms = {name: {k: statistics.median(v) * 1000 for k, v in r.items() if k != "rss"}
          for name, r in results.items()}
    rss = {name: max(r.get("rss") or [0]) / 1024 for name, r in results.items()}
    summary = {"rootfs": what, "runs": a.runs, "medians_ms": ms, "peak_rss_mib": rss,
               "floor_ms": {k: statistics.median(v) * 1000 for k, v in floor.items()},
               "python3 minicontainer.py run peak_rss_mib": max(slow_rss or [0]) / 1024}
    print("rootfs: %s, %d interleaved runs, medians in ms" % (what, a.runs))
    print("%-14s" % "runtime" + "".join("%9s" % k for k in KEYS) + "  peak RSS")
    for name in rts:
        print("%-14s" % name + "".join("%9.1f" % ms[name][k] for k in KEYS)
              + "  %5.1f MiB" % rss[name])
    for k, v in summary["floor_ms"].items():
        print("%-30s %7.1f ms" % (k, v))
    print("%-30s %7.1f MiB peak RSS" % ("python3 minicontainer.py run",
                                        summary["python3 minicontainer.py run peak_rss_mib"]))
    ours = ms["minicontainer"]
    for name in rts:
        if name != "minicontainer":
            print("minicontainer / %s: run %.2fx, create+start+delete %.2fx, exec %.2fx, "
                  "peak RSS %.2fx" % (name, ours["run"] / ms[name]["run"],
                                      ours["cycle"] / ms[name]["cycle"],
                                      ours["exec"] / ms[name]["exec"],
                                      rss["minicontainer"] / (rss[name] or 1)))
    bare = summary["floor_ms"]["interpreter"]
    print("minicontainer over the bare interpreter: " + ", ".join(
        "%s +%.1f ms" % (k, ours[k] - bare) for k in ("start", "state", "list", "kill",
                                                       "delete")))
    print()
    print_table(rts, ms, rss, summary)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(summary, f, indent=2)


def print_table(rts, ms, rss, summary):
    """README's table: the other runtimes, ours run as a program and as `python3 FILE`."""
    others = [name for name in ("crun", "runc") if name in rts]
    slow = summary["floor_ms"]["python3 minicontainer.py run"]

    def vs_runc(value, key):
        return " (%.2fx runc)" % (value / ms["runc"][key]) if "runc" in ms else ""
    print("| | " + " | ".join(others) + " | minicontainer, executed directly | "
          "`python3 minicontainer.py` |")
    print("|---" * (len(others) + 3) + "|")
    for key, label in (("run", "`run`"), ("cycle", "`create` + `start` + `delete -f` (an "
                                           "engine's path: three calls)"),
                       ("exec", "`exec` into a running container")):
        ours = ms["minicontainer"][key]
        print("| %s | " % label + " | ".join("%.1f ms" % ms[n][key] for n in others)
              + " | %.1f ms%s | %s |" % (ours, vs_runc(ours, key), "%.1f ms%s" % (
                  slow, vs_runc(slow, "run")) if key == "run" else "—"))
    print("| peak RSS of `run` | " + " | ".join("%.1f MiB" % rss[n] for n in others)
          + " | %.1f MiB | %.1f MiB |" % (rss["minicontainer"],
                                         summary["python3 minicontainer.py run peak_rss_mib"]))


if __name__ == "__main__":
    main()
