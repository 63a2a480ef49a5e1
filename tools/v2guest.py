#!/usr/bin/env python3
"""Run a command in a pure cgroup v2 Debian 12 guest under QEMU, on a copy of a checkout.

    tools/v2guest.py build                      build (once) the guest image
    tools/v2guest.py run [DIR] -- COMMAND...    run COMMAND in the guest, in DIR's copy

The guest is what a stock Debian 12 boots into: its kernel (linux-image-amd64), systemd as
PID 1, cgroup2 alone at /sys/fs/cgroup.  The image is built once with debootstrap from the
Debian mirror the host's apt uses, with the packages the checkout's Makefile lists (every
`*PACKAGES` variable) plus EXTRA_PACKAGES, and cached under CACHE, keyed by that list; a
changed list builds a new image.  Run as root.  Needs debootstrap, qemu-system-x86 (qemu-img)
and e2fsprogs (mkfs.ext4 -d): no loop or nbd device, no mount on the host.

Each run boots the cached image through its own qcow2 overlay (discarded afterwards), with
KVM when /dev/kvm opens (and is not PVM's), else TCG; 2 vCPUs, 4 GiB, the kernel and
initrd passed directly.
DIR (default: the current directory) is exported read-only over virtio-9p and copied in the
guest to the same path, so nothing is written back to it; DIR/../shared/data, if present, is
mounted read-only beside it.  COMMAND's words are joined with spaces and run by `sh -c` as
root in that copy, by a systemd unit after boot (in system.slice, like any service); the
guest then powers off.  COMMAND's output is streamed to stdout, and its exit status is
ours (125 if the guest never reported one).  The serial console goes to a log, kept when
the run fails.  The guest has one NIC, like a real machine: QEMU's user-mode network with
restrict=on, configured by DHCP as the Debian installer sets it up; it reaches nothing.
One guest at a time (V2GUEST_SLOTS=N allows N, sharing the host's cores): a run waits for
a free slot.
"""
import argparse
import fcntl
import glob
import hashlib
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import time

CACHE = os.environ.get("V2GUEST_CACHE", "/var/tmp/minicontainer-v2guest")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUITE = "bookworm"
# What the tests import beyond the standard library (requirements-dev.txt, as Debian packages).
EXTRA_PACKAGES = ["python3-pytest", "python3-zstandard", "python3-requests"]
# The guest's own needs: its kernel, and systemd as init (the debootstrap default has it).
BASE_PACKAGES = ["linux-image-amd64", "systemd-sysv", "udev", "kmod", "initramfs-tools"]
# Bump when the recipe below changes, so that cached images are rebuilt.
RECIPE = 2
IMAGE_SIZE = "12G"
KEEP = 3
# Guests at once (a run waits for a free slot): each takes 2 vCPUs and 4 GiB.
SLOTS = int(os.environ.get("V2GUEST_SLOTS", "1"))
MEMORY = "4096"
CPUS = "2"
NIC = "ens3"   # the name udev gives the virtio NIC at PCI slot 3 (addr=0x3 below)

GUEST_RUNNER = r"""#!/bin/sh
# Runs the host's command (v2guest-run.service), then powers off.  Written by tools/v2guest.py.
c=/run/v2guest/control
mkdir -p $c /run/v2guest/src
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 control $c || exit 1
. $c/env
echo "v2guest: copying $DIR" >/dev/console
mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=262144 checkout /run/v2guest/src &&
    mkdir -p "$DIR" && cp -a /run/v2guest/src/. "$DIR"/ && umount /run/v2guest/src || {
    echo 125 >$c/rc; exit 1; }
if [ "$SHARED" ]; then
    mkdir -p "$SHARED"
    mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=262144 shared "$SHARED" || {
        echo 125 >$c/rc; exit 1; }
fi
echo "v2guest: running the command" >/dev/console
cd "$DIR" && HOME=/root LANG=C.UTF-8 sh $c/cmd </dev/null >$c/output 2>&1
echo $? >$c/rc.tmp && mv $c/rc.tmp $c/rc
sync
umount $c
echo "v2guest: done" >/dev/console
"""

GUEST_UNIT = """[Unit]
Description=Run the command of tools/v2guest.py, then power off
After=multi-user.target
SuccessAction=poweroff
FailureAction=poweroff

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/v2guest-run
TimeoutStartSec=infinity
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
"""


def log(msg):
    print("v2guest: " + msg, file=sys.stderr, flush=True)


def sh(*cmd, **kw):
    kw.setdefault("check", True)
    return subprocess.run(cmd, **kw)


def makefile_packages(makefile):
    """The words of every `NAME_PACKAGES = ...` (or `PACKAGES`) assignment in the Makefile."""
    text = re.sub(r"\\\n", " ", open(makefile).read())
    words = []
    for m in re.finditer(r"^\s*\w*PACKAGES\s*[:+?]?=(.*)$", text, re.M):
        words += [w for w in m.group(1).split("#")[0].split() if not w.startswith("$")]
    return words


def package_list(checkout):
    makefile = os.path.join(checkout, "Makefile")
    if not os.path.exists(makefile):
        makefile = os.path.join(ROOT, "Makefile")
    return sorted(set(BASE_PACKAGES + EXTRA_PACKAGES + makefile_packages(makefile)))


def host_mirrors():
    """The Debian archive and security URIs from the host's apt sources (one-line and deb822
    formats); deb.debian.org where the host has none (e.g. an Ubuntu host)."""
    uris = []
    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*")):
        try:
            text = open(path).read()
        except OSError:
            continue
        for line in text.splitlines():
            line = line.split("#")[0].strip()
            if line.startswith("URIs:"):
                uris += line.split()[1:]
            elif line.startswith("deb "):
                uris += [w for w in line.split()[1:] if "://" in w][:1]
    main = [u.rstrip("/") for u in uris if u.rstrip("/").endswith("/debian")]
    sec = [u.rstrip("/") for u in uris if u.rstrip("/").endswith("/debian-security")]
    return (main[0] if main else "http://deb.debian.org/debian",
            sec[0] if sec else "http://deb.debian.org/debian-security")


def host_apt_options():
    """The host's apt settings on the archive's dates (a mirror serving a snapshot may need
    them off) as apt-get options, so that the chroot's apt sees the mirror as the host's."""
    opts = []
    for key in ("Acquire::Check-Valid-Until", "Acquire::Check-Date"):
        if shutil.which("apt-config"):
            out = subprocess.run(["apt-config", "shell", "v", key], capture_output=True,
                                 text=True).stdout.strip()
            if out.startswith("v="):
                opts += ["-o", "%s=%s" % (key, shlex.split(out[2:])[0])]
    return opts


def image_dir(packages):
    mirror, security = host_mirrors()
    key = "\n".join([SUITE, str(RECIPE), mirror, security] + packages)
    return os.path.join(CACHE, "image-" + hashlib.sha256(key.encode()).hexdigest()[:16])


def build(packages):
    """Build the image for this package list into its cache directory, unless it is there."""
    dest = image_dir(packages)
    if os.path.exists(os.path.join(dest, "base.qcow2")):
        os.utime(dest)
        return dest
    for tool in ("debootstrap", "qemu-img", "mkfs.ext4", "unshare"):
        if not shutil.which(tool):
            sys.exit("v2guest: %s is missing (apt-get install debootstrap qemu-system-x86 "
                     "qemu-utils e2fsprogs util-linux)" % tool)
    work = os.path.join(CACHE, "build")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    started = time.monotonic()
    log("building the guest image in %s (packages: %s)" % (dest, " ".join(packages)))
    # The debootstrap and chroot steps run in a private mount namespace: their mounts (proc,
    # sys, dev in the chroot) can neither show on the host nor outlive the build.
    sh("unshare", "--mount", "--propagation", "private", sys.executable,
       os.path.abspath(__file__), "_rootfs", os.path.join(work, "root"), *packages)
    root = os.path.join(work, "root")
    kernel = sorted(glob.glob(os.path.join(root, "boot/vmlinuz-*")))[-1]
    initrd = sorted(glob.glob(os.path.join(root, "boot/initrd.img-*")))[-1]
    shutil.copy(kernel, os.path.join(work, "vmlinuz"))
    shutil.copy(initrd, os.path.join(work, "initrd.img"))
    raw = os.path.join(work, "root.ext4")
    sh("mkfs.ext4", "-q", "-L", "v2guest", "-d", root, raw, IMAGE_SIZE)
    sh("qemu-img", "convert", "-O", "qcow2", raw, os.path.join(work, "base.qcow2"))
    os.unlink(raw)
    shutil.rmtree(root)
    with open(os.path.join(work, "packages"), "w") as f:
        f.write("\n".join(packages) + "\n")
    os.rename(work, dest)
    # Keep the last KEEP images used (checkouts with different package lists take turns; a
    # running guest's was touched when it started).
    images = sorted(glob.glob(os.path.join(CACHE, "image-*")), key=os.path.getmtime)
    for old in images[:-KEEP]:
        shutil.rmtree(old)
    log("image built in %.0f s" % (time.monotonic() - started))
    return dest


def chroot_dev(dev):
    """Mount at DEV a /dev of our own: a tmpfs with the usual nodes, their modes set here,
    a devpts instance of its own and a /dev/shm.  Not the host's devtmpfs: its nodes are the
    host's /dev, modes included, and a host whose /dev/null is not 0666 (seen: 0755) makes
    every write to /dev/null fail in the chroot for any user but root; apt's methods run as
    _apt, and apt-key's `command -v gpgv >/dev/null` then fails, which apt reports as "gpgv,
    gpgv2 or gpgv1 required for verification, but neither seems installed"."""
    sys.path.insert(0, ROOT)
    import minicontainer as mc  # its /dev: the nodes and links every container gets
    sh("mount", "-t", "tmpfs", "-o", "mode=755,nosuid", "tmpfs", dev)
    for path, _, major, minor, mode in [d + (0o666,) for d in mc.DEFAULT_DEVICES] + [
            ("/dev/console", "c", 5, 1, 0o600)]:
        path = os.path.join(dev, os.path.basename(path))
        os.mknod(path, stat.S_IFCHR | mode, os.makedev(major, minor))
        os.chmod(path, mode)   # mknod's mode went through our umask
    for target, link in mc.DEV_SYMLINKS:
        if link != "/dev/core":
            os.symlink(target, os.path.join(dev, os.path.basename(link)))
    os.mkdir(os.path.join(dev, "pts"))
    os.mkdir(os.path.join(dev, "shm"))
    sh("mount", "-t", "devpts", "-o", "newinstance,ptmxmode=666,mode=620,gid=5", "devpts",
       os.path.join(dev, "pts"))
    sh("mount", "-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", os.path.join(dev, "shm"))


def rootfs(root, packages):
    """In a private mount namespace: debootstrap ROOT, install PACKAGES, set the guest up."""
    mirror, security = host_mirrors()
    sh("debootstrap", "--include=" + ",".join(BASE_PACKAGES[1:]), SUITE, root, mirror)

    def write(path, text, mode=0o644):
        path = os.path.join(root, path.lstrip("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)

    write("/etc/apt/sources.list", "")
    write("/etc/apt/sources.list.d/debian.sources",
          "Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\n"
          "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
          "Types: deb\nURIs: %s\nSuites: %s-security\nComponents: main\n"
          "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
          % (mirror, SUITE, SUITE, security, SUITE))
    write("/etc/initramfs-tools/modules", "virtio_pci\nvirtio_blk\next4\n")
    write("/etc/hostname", "v2guest\n")
    write("/etc/hosts", "127.0.0.1\tlocalhost\n127.0.1.1\tv2guest\n"
          "::1\tlocalhost ip6-localhost ip6-loopback\n")
    write("/etc/fstab", "LABEL=v2guest / ext4 errors=remount-ro 0 1\n")
    # As the Debian installer writes it for a machine with one NIC.
    write("/etc/network/interfaces",
          "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\n"
          "allow-hotplug %s\niface %s inet dhcp\n" % (NIC, NIC))
    write("/usr/sbin/policy-rc.d", "#!/bin/sh\nexit 101\n", 0o755)  # no daemon starts here
    for fs, where in (("proc", "proc"), ("sysfs", "sys"), ("tmpfs", "run")):
        os.makedirs(os.path.join(root, where), exist_ok=True)
        sh("mount", "-t", fs, fs, os.path.join(root, where))
    chroot_dev(os.path.join(root, "dev"))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive", LANG="C.UTF-8",
               PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    chroot = ["chroot", root]
    apt = [*chroot, "apt-get", "-q", *host_apt_options()]
    sh(*apt, "update", env=env)
    # Like `make setup`: recommended packages too (and the kernel's: apparmor, as stock).
    sh(*apt, "install", "-y", *packages, env=env)
    sh(*chroot, "apt-get", "clean", env=env)
    sh(*chroot, "systemd-machine-id-setup", env=env)
    sh(*chroot, "passwd", "-d", "root", env=env)   # a console login for debugging
    os.unlink(os.path.join(root, "usr/sbin/policy-rc.d"))
    write("/etc/resolv.conf", "")   # debootstrap's copy of the host's; the guest's DHCP writes it
    write("/usr/local/sbin/v2guest-run", GUEST_RUNNER, 0o755)
    write("/etc/systemd/system/v2guest-run.service", GUEST_UNIT)
    sh(*chroot, "systemctl", "enable", "v2guest-run.service", env=env)
    # The tests start their own dockerd and containerd: the packaged services would run the
    # machine's (docker sets iptables' FORWARD policy to DROP, which drops what crosses any
    # other bridge, ours included; the README says how a Docker host lets ours through).
    sh(*chroot, "systemctl", "mask", "docker.service", "docker.socket", "containerd.service",
       env=env)
    for where in ("run", "dev/shm", "dev/pts", "dev", "sys", "proc"):
        sh("umount", "-l", os.path.join(root, where))


def kvm_usable():
    """Whether /dev/kvm opens and can run a stock kernel.  Under kvm_pvm (PVM, the nested
    virtualization some cloud sandboxes offer) only PVM-enabled guest kernels boot: Debian's
    hangs in its decompressor, so we emulate (TCG) there."""
    if os.path.exists("/sys/module/kvm_pvm"):
        return False
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
        return True
    except OSError:
        return False


def take_slot(slots):
    """One of SLOTS lock files (`lock`, `lock.1`, ...), waiting until one is free."""
    names = ["lock"] + ["lock.%d" % i for i in range(1, slots)]
    waited = False
    while True:
        for name in names:
            f = open(os.path.join(CACHE, name), "w")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return f
            except BlockingIOError:
                f.close()
        if not waited:
            log("%d guest(s) running (V2GUEST_SLOTS=%d); waiting" % (slots, slots))
            waited = True
        time.sleep(2)


def run(checkout, command, timeout, accel="auto"):
    """Boot the guest on an overlay of the image, run COMMAND in CHECKOUT's copy; its status."""
    checkout = os.path.realpath(checkout)
    packages = package_list(checkout)
    os.makedirs(CACHE, exist_ok=True)
    slot = take_slot(SLOTS)  # a file object whose lock is ours until it closes
    with open(os.path.join(CACHE, "build.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        image = build(packages)
    rundir = os.path.join(CACHE, "run-%d" % os.getpid())
    shutil.rmtree(rundir, ignore_errors=True)
    control = os.path.join(rundir, "control")
    os.makedirs(control)
    shared = os.path.join(os.path.dirname(checkout), "shared", "data")
    shared = shared if os.path.isdir(shared) else ""
    with open(os.path.join(control, "env"), "w") as f:
        f.write("DIR=%s\nSHARED=%s\n" % (shlex.quote(checkout), shlex.quote(shared)))
    with open(os.path.join(control, "cmd"), "w") as f:
        f.write(command + "\n")
    overlay = os.path.join(rundir, "overlay.qcow2")
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
       os.path.join(image, "base.qcow2"), overlay)
    console = os.path.join(rundir, "console.log")
    kvm = {"kvm": True, "tcg": False}.get(accel, None)
    kvm = kvm_usable() if kvm is None else kvm
    qemu = ["qemu-system-x86_64", "-name", "v2guest",
            "-accel", "kvm" if kvm else "tcg", "-cpu", "host" if kvm else "max",
            "-smp", CPUS, "-m", MEMORY, "-nographic", "-monitor", "none", "-no-reboot",
            "-serial", "file:" + console,
            "-kernel", os.path.join(image, "vmlinuz"), "-initrd", os.path.join(image, "initrd.img"),
            "-append", "root=LABEL=v2guest ro console=ttyS0",
            "-drive", "file=%s,if=virtio,format=qcow2,cache=unsafe" % overlay,
            "-netdev", "user,id=n0,restrict=on",
            "-device", "virtio-net-pci,netdev=n0,addr=0x3,romfile=",
            "-virtfs", "local,path=%s,mount_tag=control,security_model=none" % control,
            "-virtfs", "local,path=%s,mount_tag=checkout,security_model=none,readonly=on"
            % checkout]
    if shared:
        qemu += ["-virtfs", "local,path=%s,mount_tag=shared,security_model=none,readonly=on"
                 % shared]
    log("booting (%s) to run in %s: %s" % ("KVM" if kvm else "TCG, slow", checkout, command))
    started = time.monotonic()
    proc = subprocess.Popen(qemu, stdin=subprocess.DEVNULL)
    # Killed (timeout(1), a closed terminal), stop the guest too, and let the finally clean up.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    output, rcfile = os.path.join(control, "output"), os.path.join(control, "rc")
    pos, first = 0, None
    try:
        while True:
            done = proc.poll() is not None
            if os.path.exists(output):
                if first is None:
                    first = time.monotonic()
                    log("command started %.1f s after boot" % (first - started))
                with open(output, "rb") as f:
                    f.seek(pos)
                    chunk = f.read()
                pos += len(chunk)
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
            if done:
                break
            if time.monotonic() - started > timeout:
                log("timed out after %d s; stopping the guest" % timeout)
                proc.terminate()
                proc.wait()
                break
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
            kept = os.path.join(CACHE, "console-%d.log" % os.getpid())
            shutil.copy(console, kept)
            log("stopped; the guest's console is in %s" % kept)
            shutil.rmtree(rundir, ignore_errors=True)
    try:
        rc = int(open(rcfile).read())
    except (OSError, ValueError):
        rc = 125
    end = time.monotonic()
    log("exit status %d; command ran %.0f s, guest ran %.0f s"
        % (rc, end - (first or end), end - started))
    if rc == 125 or proc.returncode != 0:
        kept = os.path.join(CACHE, "console-%d.log" % os.getpid())
        shutil.copy(console, kept)
        log("qemu exited %s; the guest's console is in %s" % (proc.returncode, kept))
    shutil.rmtree(rundir)
    slot.close()
    return rc


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "_rootfs":
        return rootfs(sys.argv[2], sys.argv[3:])
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    b = sub.add_parser("build", help="build the guest image unless it is cached")
    b.add_argument("dir", nargs="?", default=".", help="checkout whose Makefile lists packages")
    r = sub.add_parser("run", help="run a command in the guest, in a copy of DIR")
    r.add_argument("--timeout", type=int, default=4 * 3600, help="seconds (default 4 h)")
    r.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto",
                   help="auto: KVM when /dev/kvm opens (and is not PVM's), else TCG")
    r.add_argument("dir", nargs="?", default=".", help="checkout (default: .)")
    r.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND...")
    a = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("v2guest: run as root")
    if a.what == "build":
        os.makedirs(CACHE, exist_ok=True)
        with open(os.path.join(CACHE, "build.lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            print(build(package_list(os.path.realpath(a.dir))))
        return 0
    command = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not command:
        p.error("run: no command")
    return run(a.dir, " ".join(command), a.timeout, a.accel)


if __name__ == "__main__":
    sys.exit(main())
