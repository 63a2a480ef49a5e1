"""Faults of a pull, on the real kernel and a real docker-registry: a disk that fills, a
registry killed mid-blob (restarted, or gone), Ctrl-C.  Whatever happens, the store is left
consistent (no name pointing at missing blobs or layers, no half-made layer, nothing in tmp/)
and the next pull succeeds."""
import glob
import os
import signal
import subprocess
import sys
import time

import pytest

import minicontainer as mc
from conftest import wait_for
from fixtures_registry import (PULL, FaultProxy, Image, RegistryClient, RegistryServer, entry,
                               run_pull, store_snapshot, tar_layer)
from store_writer import StoreWriter
from test_pull import _pull_fails, failed, ok, repo

pytestmark = pytest.mark.needs_root


def big_image(client, data, compression=None):
    """A small layer and one holding data as the file /big, pushed under a new name."""
    small = tar_layer([entry("etc/motd", data=b"hello\n")])
    big = tar_layer([entry("big", data=data)], compression)
    image = Image([small, big])
    name = repo("faults")
    client.push_image(name, "v", image)
    return name, big


def check_pulled(ref, store, data):
    image = mc.find_image(ref, store)
    with open(mc.layers_lookup(image.layers, "big"), "rb") as f:
        assert f.read() == data
    assert open(mc.layers_lookup(image.layers, "etc/motd")).read() == "hello\n"
    assert os.listdir(os.path.join(store, "tmp")) == []


# ---- a disk that fills ----

@pytest.fixture
def small_disk(tmp_path):
    """A 12 MiB tmpfs for the store (unmounted at the end, whatever happened)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m,mode=0755", "pull-test-disk",
                    str(disk)], check=True)
    try:
        yield str(disk)
    finally:
        subprocess.run(["umount", str(disk)], check=True)


@pytest.mark.parametrize("where", ["download", "unpack"])
def test_disk_full(where, registry, small_disk, monkeypatch):
    """download: a 20 MiB incompressible blob does not fit; unpack: a small gzip blob of
    40 MiB of zeros fits, its unpacked layer does not."""
    store = os.path.join(small_disk, "store")
    monkeypatch.setenv("MINICONTAINER_STORE", store)
    data = os.urandom(20 << 20) if where == "download" else bytes(40 << 20)
    name, big = big_image(registry.client, data, None if where == "download" else "gzip")
    assert (len(big.blob) > 12 << 20) == (where == "download")
    ref = f"{registry.host}/{name}:v"

    # A full disk is the store's fault, said so, not a network error retried as one.
    _pull_fails(ref, store, r"image store .*: No space left on device$" if where == "download"
                else r"layer 2 \(\w+\): .*No space left on device")
    assert os.listdir(os.path.join(store, "tmp")) == []  # the snapshot has the skeleton

    subprocess.run(["mount", "-o", "remount,size=128m", small_disk], check=True)
    ok(run_pull(ref, store=store))
    check_pulled(ref, store, data)


# ---- a registry killed while it sends a blob ----

@pytest.fixture
def own_registry(tmp_path):
    """A registry of this test's own (it gets killed) and a proxy in front of it."""
    server = RegistryServer(str(tmp_path / "registry"))
    proxy = FaultProxy(server.host)
    yield server, proxy
    proxy.stop()
    server.stop()


HELD = (1 << 20) + 65536  # past pull.py's first 1 MiB read, so that it waits in the second


@pytest.fixture
def held_pull(own_registry, store):
    """A pull through the proxy, held with HELD bytes of a 32 MiB blob sent: the registry is
    blocked mid-answer (more than the sockets' buffers are left to send), and pull.py has
    written the first MiB and waits for more.  Yields (server, proxy, Popen, ref, data,
    store snapshot before)."""
    server, proxy = own_registry
    data = os.urandom(32 << 20)
    name, big = big_image(RegistryClient(server.base), data)
    held = []

    def rule(method, path, headers):
        if method == "GET" and path.endswith(big.digest) and not held:
            held.append(path)
            return ("hold", HELD)
    proxy.rule = rule
    StoreWriter(store).ensure_layout()
    before = store_snapshot(store)
    ref = f"{proxy.host}/{name}:v"
    proc = subprocess.Popen([sys.executable, PULL, "--store", store, ref],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proxy.holding.wait(30), "the pull never got to the big blob"
        partial = os.path.join(store, "tmp", "pull-*", big.digest[7:])
        wait_for(lambda: any(os.path.getsize(p) >= 1 << 20 for p in glob.glob(partial)),
                 timeout=30, what="the first MiB of the blob written")
        yield server, proxy, proc, ref, data, before
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def finish(proc, timeout=60):
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def blob_ranges(proxy, digest):
    return [h.get("Range") for m, p, h in proxy.log if m == "GET" and p.endswith(digest)]


def test_registry_restarted_mid_blob(held_pull, store):
    """The registry dies with the blob half sent and comes back on the same port and
    storage: the pull resumes the blob where it was cut and completes."""
    server, proxy, proc, ref, data, _ = held_pull
    server.restart()
    proxy.release.set()
    ok(finish(proc))
    digest = mc.find_image(ref, store).manifest["layers"][1]["digest"]
    ranges = blob_ranges(proxy, digest)
    assert ranges[0] is None and len(ranges) == 2 and ranges[1].startswith("bytes=")
    assert int(ranges[1][6:-1]) >= HELD  # what had come was kept
    check_pulled(ref, store, data)


def test_registry_gone_mid_blob(held_pull, store):
    """The registry dies and stays down: after its retries the pull fails with one line,
    the store as it was; once the registry is back, the pull succeeds."""
    server, proxy, proc, ref, data, before = held_pull
    server.kill()
    proxy.release.set()
    failed(finish(proc), r"blob sha256:[0-9a-f]{12}: registry .* answered HTTP 502")
    assert store_snapshot(store) == before
    server.start()
    ok(run_pull(ref, store=store))
    check_pulled(ref, store, data)


# ---- Ctrl-C ----

@pytest.mark.parametrize("sig, code, said", [(signal.SIGINT, 130, "interrupted"),
                                            (signal.SIGTERM, 143, "terminated")])
def test_interrupted_mid_blob(held_pull, store, sig, code, said):
    """SIGINT (or SIGTERM: timeout's, systemd's) while a download is stalled: the pull stops
    at once (its sockets are shut down, it does not wait out the read timeout), says so in
    one line and leaves the store as it was (SIGTERM's default left a partial blob)."""
    server, proxy, proc, ref, data, before = held_pull
    start = time.monotonic()
    proc.send_signal(sig)
    result = finish(proc, timeout=20)
    assert time.monotonic() - start < 5
    assert result.returncode == code, result.stderr
    assert result.stderr == "pull: %s\n" % said
    assert store_snapshot(store) == before
    proxy.rule = lambda m, p, h: None
    proxy.release.set()
    ok(run_pull(ref, store=store))
    check_pulled(ref, store, data)
