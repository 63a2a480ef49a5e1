#!/usr/bin/env python3
"""Build a small root filesystem from Debian's busybox-static.

Tests, the demo and the image tooling use it so that everything works on a fresh machine
without reaching any registry:  python3 tools/mkrootfs.py DIR
"""
import os
import shutil
import subprocess
import sys

BUSYBOX = "/bin/busybox"

PASSWD = """root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
user:x:1000:1000:user:/home/user:/bin/sh
"""
GROUP = """root:x:0:
daemon:x:1:
tty:x:5:
users:x:100:
nogroup:x:65534:
user:x:1000:
"""


def busybox_path():
    for p in (BUSYBOX, "/usr/bin/busybox"):
        if os.path.exists(p):
            return p
    raise SystemExit("mkrootfs: busybox not found; install Debian's busybox-static")


def make_rootfs(root):
    """Create a busybox rootfs in `root` (which may exist but should be empty)."""
    bb = busybox_path()
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp",
              "root", "home/user", "var/tmp", "run"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    os.chmod(os.path.join(root, "tmp"), 0o1777)
    shutil.copy2(bb, os.path.join(root, "bin/busybox"))
    applets = subprocess.run([bb, "--list-full"], check=True, capture_output=True,
                             text=True).stdout.split()
    for applet in applets:
        link = os.path.join(root, applet)
        if applet == "bin/busybox" or os.path.lexists(link):
            continue
        os.makedirs(os.path.dirname(link), exist_ok=True)
        depth = applet.count("/")
        os.symlink("../" * depth + "bin/busybox", link)
    with open(os.path.join(root, "etc/passwd"), "w") as f:
        f.write(PASSWD)
    with open(os.path.join(root, "etc/group"), "w") as f:
        f.write(GROUP)
    with open(os.path.join(root, "etc/hostname"), "w") as f:
        f.write("busybox\n")
    if os.geteuid() == 0:
        os.chown(os.path.join(root, "home/user"), 1000, 1000)
    return root


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):  # --help is no directory to make
        raise SystemExit("usage: mkrootfs.py DIR")
    make_rootfs(sys.argv[1])
