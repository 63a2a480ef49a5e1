"""tools/pull.py as a docker user sees it: on a real pseudo-terminal of 60 and 80 columns
(lines redrawn in place, cut to the width), an image that is up to date, -q, and Ctrl-C."""
import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest

import minicontainer as mc
import pull
from fixtures_registry import PULL, Image, entry, run_pull, store_snapshot, tar_layer
from store_writer import StoreWriter
from test_pull import blob_gets, ok, repo
from test_unpack import gone

pytestmark = pytest.mark.needs_root

CSI = re.compile(r"\x1b\[(\d*)([A-Za-z])")


def pty_pull(args, columns, until=None, timeout=60):
    """Run pull.py with its output on a pseudo-terminal of `columns` columns (set with
    TIOCSWINSZ before it starts).  until(output so far) -> True sends SIGINT then.  Returns
    (exit status, output, seconds from SIGINT to exit or None)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen([sys.executable, PULL] + args, stdin=slave, stdout=slave,
                            stderr=slave, env=env, start_new_session=True)
    os.close(slave)
    out, sent, deadline = b"", None, time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if sent is None and until and until(out.decode(errors="replace")):
                proc.send_signal(signal.SIGINT)
                sent = time.monotonic()
            if select.select([master], [], [], 0.01)[0]:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the last holder of the terminal has closed it
                    break
                if not data:
                    break
                out += data
        status = proc.wait(timeout=max(1, deadline - time.monotonic()))
        stopped = time.monotonic() - sent if sent is not None else None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return status, out.decode(), stopped


def screen(output, columns):
    """What a terminal of `columns` columns shows after output (\\r, \\n, cursor up, erase
    line; a character past the last column wraps, as terminals do): its rows, and whether
    anything wrapped."""
    rows, row, col, wrapped = [""], 0, 0, False
    i = 0
    while i < len(output):
        m = CSI.match(output, i)
        if m:
            n, op = int(m.group(1) or 1), m.group(2)
            if op == "A":
                row = max(0, row - n)
            elif op == "K":
                rows[row] = rows[row][:col] if m.group(1) in ("", "0") else ""
            i = m.end()
            continue
        c = output[i]
        i += 1
        if c == "\r":
            col = 0
        elif c == "\n":
            row += 1
            if row == len(rows):
                rows.append("")
        else:
            if col == columns:
                wrapped, col, row = True, 0, row + 1
                if row == len(rows):
                    rows.append("")
            rows[row] = rows[row][:col].ljust(col) + c + rows[row][col + 1:]
            col += 1
    return [r.rstrip() for r in rows if r.strip()], wrapped


@pytest.mark.parametrize("columns", [60, 80])
def test_progress_on_a_terminal(columns, registry, store):
    layers = [tar_layer([entry(f"f{i}", data=os.urandom(3 << 20))], None) for i in range(3)]
    name = repo("tty")
    registry.client.push_image(name, "v", Image(layers))
    ref = f"{registry.host}/{name}:v"
    status, out, _ = pty_pull(["--store", store, ref], columns)
    assert status == 0, out
    keys = [layer.digest[7:19] for layer in layers]
    assert "\x1b[" in out and re.search(r"Downloading \[=*>? *\] ", out)
    # Every redrawn line fits: it can't wrap and leave copies behind.
    for line in out.split("\n"):
        if "\x1b[" in line:
            assert len(CSI.sub("", line).replace("\r", "")) < columns, line
    rows, _ = screen(out, columns)
    # On the screen at the end: each layer once, complete; Digest and Status last, then the
    # reference (the digest line may wrap: it is printed once, whole).
    digest = Image(layers).digest
    assert rows[:4] == [f"v: Pulling from {name}"] + [f"{k}: Pull complete" for k in keys]
    assert "".join(rows[4:]) == (f"Digest: {digest}Status: Downloaded newer image for "
                                 f"{ref}{ref}")


def test_up_to_date_transfers_no_blob(proxy, registry, store):
    layer = tar_layer([entry("f", data=os.urandom(100000))])
    image = Image([layer])
    name = repo("uptodate")
    registry.client.push_image(name, "v", image)
    ref = f"{proxy.host}/{name}:v"
    ok(run_pull(ref, store=store))
    before = store_snapshot(store)
    proxy.log.clear()
    r = ok(run_pull(ref, store=store))
    assert r.stdout.splitlines() == [f"v: Pulling from {name}", f"Digest: {image.digest}",
                                     f"Status: Image is up to date for {ref}", ref]
    assert blob_gets(proxy.log) == []
    assert [p for m, p, _ in proxy.log if m == "GET"] == [f"/v2/{name}/manifests/v"]
    assert store_snapshot(store) == before
    # another image under the same name is no longer up to date
    registry.client.push_image(name, "v", Image([tar_layer([entry("g", data=b"new")])]))
    r = ok(run_pull(ref, store=store))
    assert r.stdout.splitlines()[-2:] == [f"Status: Downloaded newer image for {ref}", ref]


def test_quiet_prints_the_reference(registry, store):
    name = repo("quiet")
    registry.client.push_image(name, "latest", Image([tar_layer([entry("f", data=b"q")])]))
    r = ok(run_pull("-q", f"{registry.host}/{name}", store=store))
    assert (r.stdout, r.stderr) == (f"{registry.host}/{name}:latest\n", "")
    r = ok(run_pull(f"{registry.host}/{name}", store=store))
    assert r.stdout.splitlines()[0] == "Using default tag: latest"


HELD = (1 << 20) + 65536


def pulls_into(store):
    """The processes running pull.py with --store store."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if PULL in argv and store in argv and not gone(int(pid)):
            found.append(int(pid))
    return found


def test_ctrl_c_while_extracting(proxy, registry, store):
    """Ctrl-C while a layer of many files is being unpacked and another is still coming:
    the pull stops at once (not after the unpack and the download), says so in one line,
    and leaves no image, no layer and no blob; the next pull completes and cleans tmp/.
    The half second it takes is measured by bench/bench_pull_interrupt.py."""
    many = tar_layer([entry(f"d{i // 1000}/f{i}", data=os.urandom(200)) for i in range(30000)])
    big = tar_layer([entry("big", data=os.urandom(8 << 20))], None)
    name = repo("ctrlc")
    registry.client.push_image(name, "v", Image([many, big]))
    proxy.rule = lambda m, p, h: ("hold", HELD) if m == "GET" and p.endswith(big.digest) \
        else None
    StoreWriter(store).ensure_layout()
    before = store_snapshot(store)
    ref = f"{proxy.host}/{name}:v"
    pulls = []  # pull.py and its unpacking processes, while it extracts

    def extracting(out):
        if f"{many.digest[7:19]}: Extracting" not in out:
            return False
        pulls.extend(pulls_into(store))
        return True
    status, out, stopped = pty_pull(["--store", store, ref], 80, until=extracting)
    assert stopped is not None, out
    assert status == 130, out
    assert len(pulls) == 1 + pull.PARALLEL_UNPACKS  # a layer unpacks in a process of its own
    assert pulls_into(store) == []  # Ctrl-C ended them all
    assert out.rstrip("\r\n").splitlines()[-1] == "pull: interrupted"
    assert stopped < 2, f"took {stopped:.2f} s to stop"  # about 0.3 s; 8-10 s before
    after = store_snapshot(store)
    assert {k: v for k, v in after.items() if not k.startswith("tmp/")} == \
        {k: v for k, v in before.items() if not k.startswith("tmp/")}
    with pytest.raises(mc.Error, match="no such image"):
        mc.find_image(ref, store)
    proxy.rule = lambda m, p, h: None
    proxy.release.set()
    ok(run_pull(ref, store=store))
    assert os.listdir(os.path.join(store, "tmp")) == []
    assert mc.find_image(ref, store).digest
