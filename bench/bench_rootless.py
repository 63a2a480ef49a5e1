#!/usr/bin/env python3
"""Rootless start next to rootful: `run` of /bin/true, as root and as an unprivileged user.

Measures, from one interleaved run (A B C D A B C D ...), medians in ms:
  bundle        `run ID` of a bundle: root's (`spec`) as root; `spec --rootless`'s as the
                user (a user namespace mapping it to root, no cgroup, /sys bound)
  bundle+maps   the rootless bundle with two mappings (root to the user, 1-65536 to its
                /etc/subuid range), which newuidmap and newgidmap write
  rootfs        docker-like `run --rm --rootfs DIR -- /bin/true`: as root, and as the user
                (its subordinate range, through newuidmap)
and runc on the same bundles, as root and as the user. Every command, root's too, goes
through the same `setpriv ... env -i` so that only the runtime's work differs.

The user is made for the benchmark (useradd, a subuid range, $XDG_RUNTIME_DIR) and removed
after it; the runtime is copied where it can read it.

    sudo python3 bench/bench_rootless.py [--runs N] [--json FILE]
"""
import argparse
import compileall
import json
import os
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))

import bytecode  # noqa: E402
import minicontainer  # noqa: E402
import mkrootfs  # noqa: E402

PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
SUBIDS = (2000000, 65536)


class User:
    """A user of the benchmark's own, with a subordinate range and a runtime dir."""

    def __init__(self, base):
        self.name = "mcbench%d" % os.getpid()
        subprocess.run(["useradd", "--no-create-home", "--home-dir", base, "--user-group",
                        self.name], check=True, capture_output=True)
        pw = pwd.getpwnam(self.name)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self.subids(True)
        self.xdg = os.path.join(base, "xdg")
        os.mkdir(self.xdg, 0o700)
        os.chown(self.xdg, self.uid, self.gid)

    def subids(self, add):
        for path in ("/etc/subuid", "/etc/subgid"):
            with open(path) as f:
                lines = [x for x in f.read().splitlines() if x.split(":")[0] != self.name]
            if add:
                lines.append("%s:%d:%d" % ((self.name,) + SUBIDS))
            with open(path + ".mc-tmp", "w") as f:
                f.write("".join(x + "\n" for x in lines))
            os.chmod(path + ".mc-tmp", 0o644)
            os.rename(path + ".mc-tmp", path)

    def remove(self):
        self.subids(False)
        subprocess.run(["userdel", self.name], capture_output=True)


def as_user(uid, gid, env, argv):
    return ["setpriv", "--reuid", str(uid), "--regid", str(gid), "--init-groups", "--",
            "env", "-i"] + ["%s=%s" % kv for kv in env.items()] + argv


def timed(cmd, cwd):
    t = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def bundle(path, rootfs, config):
    os.makedirs(path)
    config["root"]["path"] = rootfs
    config["process"]["args"] = ["/bin/true"]
    config["process"]["terminal"] = False
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    return path


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--json")
    a = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_rootless: needs root (it makes a user)")
    work = tempfile.mkdtemp(prefix="mc-bench-rootless-", dir="/tmp")
    os.chmod(work, 0o755)
    user = None
    try:
        user = User(work)
        code = os.path.join(work, "code")
        os.mkdir(code)
        shutil.copy2(os.path.join(ROOT, "minicontainer.py"), code)
        compileall.compile_dir(code, quiet=1)
        runtime = os.path.join(code, "minicontainer.py")
        bytecode.write(runtime)  # split, as make install caches it
        rootfs = os.path.join(work, "rootfs")
        mkrootfs.make_rootfs(rootfs)
        subprocess.run(["chown", "-R", "%d:%d" % (user.uid, user.gid), rootfs], check=True)
        os.setegid(user.gid)  # what spec --rootless writes is the caller's
        os.seteuid(user.uid)
        try:
            rootless = minicontainer.rootless_spec(minicontainer.default_spec())
        finally:
            os.seteuid(0)
            os.setegid(0)
        maps = json.loads(json.dumps(rootless))
        for kind, own in (("uid", user.uid), ("gid", user.gid)):
            maps["linux"][kind + "Mappings"] = [
                {"containerID": 0, "hostID": own, "size": 1},
                {"containerID": 1, "hostID": SUBIDS[0], "size": SUBIDS[1]}]
        b_root = bundle(os.path.join(work, "b-root"), rootfs, minicontainer.default_spec())
        b_user = bundle(os.path.join(work, "b-user"), rootfs, rootless)
        b_maps = bundle(os.path.join(work, "b-maps"), rootfs, maps)
        for b in (b_user, b_maps):
            os.chown(b, user.uid, user.gid)
        root_env = {"PATH": PATH}
        user_env = {"PATH": PATH, "XDG_RUNTIME_DIR": user.xdg, "HOME": work}
        mc_root = as_user(0, 0, root_env, [runtime, "--root", os.path.join(work, "st")])
        mc_user = as_user(user.uid, user.gid, user_env, [runtime])
        runc_root = as_user(0, 0, root_env, ["runc", "--root", os.path.join(work, "runc")])
        runc_user = as_user(user.uid, user.gid, user_env,
                            ["runc", "--root", os.path.join(user.xdg, "runc")])
        cases = {
            "bundle, root": (mc_root, ["run", "--bundle", b_root], b_root),
            "bundle, user": (mc_user, ["run", "--bundle", b_user], b_user),
            "bundle+maps, user": (mc_user, ["run", "--bundle", b_maps], b_maps),
            "rootfs, root": (mc_root, ["run", "--rm", "--rootfs", rootfs, "--", "/bin/true"],
                             work),
            "rootfs, user": (mc_user, ["run", "--rm", "--rootfs", rootfs, "--", "/bin/true"],
                             work),
        }
        if shutil.which("runc"):
            cases.update({
                "runc bundle, root": (runc_root, ["run", "--bundle", b_root], b_root),
                "runc bundle, user": (runc_user, ["run", "--bundle", b_user], b_user),
                "runc bundle+maps, user": (runc_user, ["run", "--bundle", b_maps], b_maps),
            })
        times = {k: [] for k in cases}
        for i in range(a.runs):
            for k, (base, args, cwd) in cases.items():
                cid = []
                if args[:2] == ["run", "--bundle"]:
                    cid = ["bench-%d-%d" % (len(times[k]), i)]
                times[k].append(timed(base + args + cid, cwd))
        ms = {k: statistics.median(v) * 1000 for k, v in times.items()}
        print("rootless next to rootful: %d interleaved runs of /bin/true, medians in ms"
              % a.runs)
        for k, v in ms.items():
            print("  %-24s %7.1f" % (k, v))
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"runs": a.runs, "medians_ms": ms}, f, indent=1)
    finally:
        if user is not None:
            user.remove()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
