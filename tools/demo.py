#!/usr/bin/env python3
"""The main job: pull alpine and run it; where Docker Hub cannot be reached, say so and run
a local image built from Debian's busybox-static instead.    sudo python3 tools/demo.py
"""
import os
import subprocess
import sys
import tempfile

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TOOLS)
sys.path.insert(0, ROOT)
sys.path.insert(0, TOOLS)

import import_image  # noqa: E402
import minicontainer as mc  # noqa: E402
import mkrootfs  # noqa: E402
import pull  # noqa: E402

RUNTIME = os.path.join(ROOT, "minicontainer.py")
SCRIPT = """echo "hello from $(hostname), $(head -1 /etc/os-release 2>/dev/null || echo busybox)"
id; echo "processes I can see:"; ps -o pid,comm; grep -E '^Cap(Eff|Bnd)' /proc/self/status
echo "memory limit: $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes \
/sys/fs/cgroup/memory.max 2>/dev/null | head -1)"
"""


def step(text):
    print("\n== %s" % text, flush=True)


def local_image():
    with tempfile.TemporaryDirectory() as tmp:
        rootfs = mkrootfs.make_rootfs(os.path.join(tmp, "rootfs"))
        return import_image.import_image(rootfs, "localhost/busybox:latest").name


def mc_run(*args, check=True):
    return subprocess.run([sys.executable, RUNTIME] + list(args), check=check)


def main():
    if os.geteuid() != 0:
        sys.exit("demo: needs root (sudo python3 tools/demo.py)")
    step("pull alpine from Docker Hub")
    try:
        mode = "tty" if sys.stdout.isatty() else "lines"
        image = pull.pull("alpine", progress=pull.Progress(mode)).name
    except mc.Error as e:
        print("demo: cannot pull alpine (%s);\n      using a local image built from "
              "busybox-static instead" % e)
        image = local_image()
    step("images in the store")
    mc_run("images")
    step("run %s: its own hostname, pid namespace, capabilities and a 64 MiB limit" % image)
    mc_run("run", "--rm", "-m", "64m", image, "sh", "-c", SCRIPT)
    step("a detached container: list, ps, pause, resume, delete")
    mc_run("run", "-d", "--name", "demo", image, "sleep", "30")
    try:
        mc_run("list")
        mc_run("ps", "demo")
        mc_run("pause", "demo")
        mc_run("state", "demo")
        mc_run("resume", "demo")
    finally:
        mc_run("delete", "-f", "demo", check=False)
    print("\ndemo: done")


if __name__ == "__main__":
    try:
        main()
    except subprocess.CalledProcessError as e:
        sys.exit("demo: %s exited with %d" % (" ".join(e.cmd[2:4]), e.returncode))
