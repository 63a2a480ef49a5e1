"""tools/pull.py against a real docker-registry on loopback."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import pytest

import minicontainer as mc
from conftest import ROOT, RUNTIME, SHARED_DATA, mc as run_mc, one_line_error
import pull
from store_writer import StoreWriter
from fixtures_registry import (PULL, FaultProxy, Image, Layer, RegistryClient, RegistryServer,
                               TunnelProxy, dir_layer, entry, free_port, http_request,
                               run_pull, store_snapshot, tar_layer, tree_snapshot)
from test_unpack import hostile_layers

ALPINE = {arch: os.path.join(SHARED_DATA, f"alpine-minirootfs-3.20.3-{arch}.tar.gz")
          for arch in ("x86_64", "aarch64")}
have_alpine = pytest.mark.skipif(not all(map(os.path.exists, ALPINE.values())),
                                 reason="no Alpine minirootfs in ../shared/data")
CONFIG = {"Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hello from the image"],
          "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "GREETING=hi"],
          "WorkingDir": "/work", "User": "1000:1000"}


def repo(prefix="test"):
    return f"{prefix}/{uuid.uuid4().hex[:10]}"


def ok(result):
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


def failed(result, pattern):
    """A user error: exit 1, one line on stderr matching pattern, no traceback."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pull: ")
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


def blob_gets(log):
    return [path for method, path, _ in log if method == "GET" and "/blobs/" in path]


@pytest.fixture(scope="module")
def layers(image_rootfs):
    """Three layers over a busybox rootfs: symlinks, hardlinks, whiteouts, an opaque dir;
    gzip, uncompressed and zstd."""
    base = dir_layer(image_rootfs, "gzip")
    second = tar_layer([
        entry("work", "dir", mode=0o755, uid=1000, gid=1000),
        entry("etc/motd", data=b"welcome\n"),
        entry("data/a", data=b"shared inode\n"),
        entry("data/b", "hardlink", link="data/a"),
        entry("data/link", "symlink", link="a"),
        entry("data/gone-later", data=b"x"),
        entry("bin/.wh.vi"),                     # whiteout of a busybox applet
        entry("home/user", "dir", mode=0o755, uid=1000, gid=1000),
        entry("home/user/.wh..wh..opq"),
        entry("home/user/.profile", data=b"export PS1='$ '\n", uid=1000, gid=1000),
        entry("usr/bin/suid", data=b"#!/bin/sh\n", mode=0o4755),
    ], compression=None)
    third_tar = [entry("data/.wh.gone-later"), entry("etc/motd", data=b"welcome, again\n")]
    return {"oci": [base, second, tar_layer(third_tar, "zstd")],
            "docker": [base, second, tar_layer(third_tar, "gzip")]}


def merged_view(image):
    """The image's tree as a container sees it: its layers applied in order (copy_layers,
    the runtime's fallback, whose equality with the overlay test_overlay.py shows)."""
    store = os.path.dirname(os.path.dirname(image.layers[0]))
    dest = tempfile.mkdtemp(prefix="view-", dir=os.path.dirname(store))
    mc.copy_layers(image.layers, dest)
    return dest


def check_rootfs(root):
    assert os.path.isfile(os.path.join(root, "bin/busybox"))
    assert os.readlink(os.path.join(root, "bin/sh")).endswith("busybox")
    assert not os.path.lexists(os.path.join(root, "bin/vi"))
    assert open(os.path.join(root, "etc/motd")).read() == "welcome, again\n"
    assert os.stat(os.path.join(root, "data/a")).st_ino == \
        os.stat(os.path.join(root, "data/b")).st_ino
    assert os.readlink(os.path.join(root, "data/link")) == "a"
    assert not os.path.lexists(os.path.join(root, "data/gone-later"))
    assert os.listdir(os.path.join(root, "home/user")) == [".profile"]
    assert os.stat(os.path.join(root, "usr/bin/suid")).st_mode & 0o7777 == 0o4755
    assert os.stat(os.path.join(root, "work")).st_uid == 1000


@pytest.mark.parametrize("fmt", ["oci", "docker"])
def test_pull_multiarch_multilayer(fmt, registry, store, layers):
    name = repo()
    amd64 = Image(layers[fmt], fmt, "amd64", config=CONFIG)
    arm64 = Image([tar_layer([entry("etc/arch", data=b"arm64\n")])], fmt, "arm64", "v8")
    registry.client.push_index(name, "v1", [arm64, amd64], fmt)
    ref = f"{registry.host}/{name}:v1"

    out = ok(run_pull("--platform", "linux/amd64", ref, store=store))
    assert out.stdout.strip().splitlines()[-1] == ref
    image = mc.find_image(ref, store)
    assert image.pulled_digest == amd64.digest
    assert image.config == CONFIG
    check_rootfs(merged_view(image))

    # the store is an OCI layout that skopeo and umoci read
    inspect = subprocess.run(["skopeo", "inspect", f"oci:{store}:{ref}"], capture_output=True,
                             text=True)
    assert inspect.returncode == 0, inspect.stderr
    assert json.loads(inspect.stdout)["Architecture"] == "amd64"

    ok(run_pull("--platform", "linux/arm64", ref, store=store))
    image = mc.find_image(ref, store)
    assert image.pulled_digest == arm64.digest and image.platform == "linux/arm64/v8"
    assert open(mc.layers_lookup(image.layers, "etc/arch")).read() == "arm64\n"

    failed(run_pull("--platform", "linux/s390x", ref, store=store),
           r"no image for linux/s390x; available: linux/amd64, linux/arm64/v8")


def test_pull_single_manifest_by_tag_and_digest(registry, store, layers):
    name = repo()
    image = Image(layers["docker"], "docker", config=CONFIG)
    registry.client.push_image(name, "latest", image)
    ok(run_pull("-q", f"{registry.host}/{name}", store=store))
    assert mc.find_image(f"{registry.host}/{name}:latest", store).pulled_digest == image.digest
    by_digest = f"{registry.host}/{name}@{image.digest}"
    result = ok(run_pull("-q", by_digest, store=store))
    assert result.stdout == by_digest + "\n"  # -q prints the reference only
    assert mc.find_image(by_digest, store).pulled_digest == image.digest
    # an explicit platform that the single-platform image doesn't have is an error
    failed(run_pull("--platform", "linux/arm64", f"{registry.host}/{name}", store=store),
           "is for linux/amd64, not linux/arm64")


def test_pull_called_by_a_program_with_threads_unpacks_in_threads(registry, store, layers,
                                                                    monkeypatch):
    """pull() unpacks in processes forked before its threads; called by a program that has
    threads of its own already, it must not fork (a lock one of them holds would stay held
    in the child for ever): it unpacks in threads, to the same image."""
    name = repo()
    registry.client.push_image(name, "v", Image(layers["oci"], config=CONFIG))
    forks, real_fork = [], os.fork
    monkeypatch.setattr(os, "fork", lambda: forks.append(1) or real_fork())
    other = threading.Event()
    thread = threading.Thread(target=other.wait)
    thread.start()
    try:
        assert not pull.UnpackProcesses.possible()
        pull.pull(f"{registry.host}/{name}:v", store=store)
    finally:
        other.set()
        thread.join()
    assert forks == []
    check_rootfs(merged_view(mc.find_image(f"{registry.host}/{name}:v", store)))
    pull.pull(f"{registry.host}/{name}:v", store=store)  # up to date: no unpack, no fork
    assert forks == []


# fork fails in it as it does with no process to spare (EAGAIN), while threads are still
# made: clone without CLONE_THREAD refused, clone3 (whose flags a filter cannot read) unknown,
# so that glibc makes threads through clone
NO_FORK = r"""
import os, runpy, sys
sys.path.insert(0, %(root)r)
import minicontainer as mc
mc.prctl(mc.PR_SET_NO_NEW_PRIVS, 1)
mc.apply_seccomp({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
    {"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": 11, "args": [
        {"index": 0, "value": 0x10000, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
    {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38},
    {"names": ["fork", "vfork"], "action": "SCMP_ACT_ERRNO", "errnoRet": 11}]})
try:
    if os.fork() == 0:
        os._exit(0)
    sys.exit("fork still works")
except BlockingIOError:
    pass
sys.argv[0] = %(pull)r
sys.path.insert(0, os.path.dirname(%(pull)r))  # as for the script run as a program
runpy.run_path(%(pull)r, run_name="__main__")
"""


@pytest.mark.parametrize("fmt", ["docker", "oci"])
def test_pull_with_no_process_to_spare_unpacks_in_threads(fmt, registry, store, layers):
    """Where no process can be forked (RLIMIT_NPROC, a pids limit: fork fails with EAGAIN),
    the pull's unpacking processes are not made, and its threads unpack, to the same image;
    but for a zstd layer (oci's third), which needs the zstd program before Python 3.14: that
    one is said in a line, and the store keeps nothing of the pull."""
    name = repo()
    registry.client.push_image(name, "v", Image(layers[fmt], config=CONFIG))
    ref = f"{registry.host}/{name}:v"
    before = store_snapshot(store)
    r = subprocess.run([sys.executable, "-c", NO_FORK % {"root": ROOT, "pull": PULL}, "-q",
                        "--store", store, ref], capture_output=True, text=True, timeout=120)
    zstd_needs_a_process = fmt == "oci" and sys.version_info < (3, 14)
    if zstd_needs_a_process:
        failed(r, r"^pull: .* layer 3 \(\w+\): cannot start zstd to decompress the layer: "
               r"Resource temporarily unavailable$")
        assert os.listdir(os.path.join(store, "tmp")) == []
        with pytest.raises(mc.Error):
            mc.find_image(ref, store)
        return
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    assert os.listdir(os.path.join(store, "tmp")) == []
    assert store_snapshot(store) != before
    check_rootfs(merged_view(mc.find_image(ref, store)))


def test_pull_with_sigchld_ignored(registry, store, layers):
    """SIGCHLD ignored is inherited across exec (some supervisors start programs so): the
    kernel then reaps pull's unpacking processes itself, and pull must not fail on reaping
    them after the image is stored."""
    name = repo()
    registry.client.push_image(name, "v", Image(layers["oci"], config=CONFIG))
    ref = f"{registry.host}/{name}:v"
    r = subprocess.run([sys.executable, PULL, "-q", "--store", store, ref],
                       capture_output=True, text=True, timeout=120,
                       preexec_fn=lambda: signal.signal(signal.SIGCHLD, signal.SIG_IGN))
    assert (r.returncode, r.stderr) == (0, ""), r.stderr
    assert os.listdir(os.path.join(store, "tmp")) == []
    check_rootfs(merged_view(mc.find_image(ref, store)))


@pytest.mark.parametrize("body, words", [
    (b"[]", "manifest is not a manifest's or an index's JSON object"),
    (b'{"mediaType": 5, "schemaVersion": 2}', "manifest is not a manifest's or an index's"),
    (b'{"schemaVersion": 2, "mediaType": "%s", "manifests": {"a": 1}}' % mc.OCI_INDEX.encode(),
     "index has no list of manifests"),
    (b'{"schemaVersion": 2, "mediaType": "%s", "manifests": [5]}' % mc.OCI_INDEX.encode(),
     "manifest has a malformed descriptor"),
    # an entry naming a tag, not a digest: fetched by it, it would be checked against nothing
    (b'{"schemaVersion": 2, "mediaType": "%s", "manifests": [{"mediaType": "%s", "digest": '
     b'"other", "size": 1, "platform": {"os": "linux", "architecture": "amd64"}}]}'
     % (mc.OCI_INDEX.encode(), mc.OCI_MANIFEST.encode()),
     "unsupported or malformed digest 'other'"),
    (b'{"schemaVersion": 2, "mediaType": "%s", "manifests": [{"mediaType": "%s", "digest": '
     b'"sha256:%s", "size": 1, "platform": "linux/amd64"}]}'
     % (mc.OCI_INDEX.encode(), mc.OCI_MANIFEST.encode(), b"0" * 64),
     "manifest has a malformed descriptor"),
])
def test_malformed_registry_documents_are_one_line(proxy, store, body, words):
    """What a registry (or what answers in its name) sends that is no manifest or index:
    one line, nothing stored (they were AttributeError's and TypeError's tracebacks)."""
    name = repo()
    proxy.rule = lambda method, path, headers: ("body", body, mc.OCI_INDEX) \
        if "/manifests/" in path else None
    line = failed(run_pull(f"{proxy.host}/{name}:v", store=store), re.escape(words))
    assert line.startswith("pull: ")
    assert os.listdir(os.path.join(store, "tmp")) == []


def test_second_pull_downloads_no_layer(proxy, registry, store, layers):
    name = repo()
    first = Image(layers["oci"], config=CONFIG)
    registry.client.push_image(name, "one", first)
    # a second image sharing the two lower layers
    second = Image(layers["oci"][:2] + [tar_layer([entry("extra", data=b"2")])])
    registry.client.push_image(name, "two", second)

    ok(run_pull(f"{proxy.host}/{name}:one", store=store))
    layer_gets = [p for p in blob_gets(proxy.log) if "sha256:" in p]
    assert len(layer_gets) == 4  # three layers and the config
    proxy.log.clear()
    out = ok(run_pull(f"{proxy.host}/{name}:one", store=store))
    assert "Image is up to date for" in out.stdout
    assert blob_gets(proxy.log) == []  # only the manifest was asked for
    proxy.log.clear()
    out = ok(run_pull(f"{proxy.host}/{name}:two", store=store))
    assert out.stdout.count("Already exists") == 2
    fetched = blob_gets(proxy.log)
    assert f"/v2/{name}/blobs/{second.layers[2].digest}" in fetched
    assert not any(layer.digest in p for layer in second.layers[:2] for p in fetched)


@have_alpine
def test_real_alpine_multiarch(registry, store, tmp_path):
    name = "library/alpine"
    images = [Image([Layer.from_tarball(ALPINE["x86_64"])], "docker", "amd64",
                    config={"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/bin:/bin"]}),
              Image([Layer.from_tarball(ALPINE["aarch64"])], "docker", "arm64", "v8",
                    config={"Cmd": ["/bin/sh"]})]
    registry.client.push_index(name, "3.20.3", images, "docker")
    ok(run_pull("--registry", registry.host, "alpine:3.20.3", store=store))
    image = mc.find_image("alpine:3.20.3", store)
    assert image.name == "docker.io/library/alpine:3.20.3"
    root = merged_view(image)
    assert open(os.path.join(root, "etc/alpine-release")).read() == "3.20.3\n"
    assert open(os.path.join(root, "etc/apk/arch")).read() == "x86_64\n"
    assert os.readlink(os.path.join(root, "bin/sh")) == "/bin/busybox"

    ok(run_pull("--registry", registry.host, "--platform", "linux/arm64/v8",
                "alpine:3.20.3", store=store))
    image = mc.find_image("alpine:3.20.3", store)
    assert open(mc.layers_lookup(image.layers, "etc/apk/arch")).read() == "aarch64\n"

    # umoci unpacks what we stored
    bundle = tmp_path / "bundle"
    r = subprocess.run(["umoci", "unpack", "--image",
                        f"{store}:docker.io/library/alpine:3.20.3", str(bundle)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (bundle / "rootfs/etc/alpine-release").read_text() == "3.20.3\n"


@have_alpine
@pytest.mark.needs_root
def test_run_pulled_alpine(registry, store):
    """The whole path: pull, then minicontainer.py run IMAGE with the image's defaults."""
    name = "library/alpine"
    image = Image([Layer.from_tarball(ALPINE["x86_64"])], "oci", "amd64",
                  config={"Cmd": ["cat", "/etc/alpine-release"], "WorkingDir": "/etc",
                          "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "FROM_IMAGE=yes"]})
    registry.client.push_image(name, "run", image)
    ok(run_pull(f"{registry.host}/{name}:run", store=store))
    env = dict(os.environ, MINICONTAINER_STORE=store)
    r = run_mc("run", "--rm", f"{registry.host}/{name}:run", env=env, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "3.20.3\n"
    r = run_mc("run", "--rm", f"{registry.host}/{name}:run", "sh", "-c",
               "echo $FROM_IMAGE $(pwd)", env=env)
    assert (r.returncode, r.stdout) == (0, "yes /etc\n"), r.stderr


# ---- references and the command line ----

@pytest.mark.parametrize("ref,pattern", [
    ("Alpine", "must be lowercase"),
    ("alpine:bad:tag", "invalid reference format"),
    ("alpine@sha256:1234", "bad digest"),
    ("alpine@sha256:" + "A" * 64, "64 lowercase hex"),
    ("alpine@md5:" + "0" * 32, "unsupported digest algorithm"),
    ("a" * 64, "64-byte hexadecimal"),
    ("", "empty image reference"),
    ("host:99999999999999999999x/repo", "invalid reference format"),
    ("alpine:l\u00e4test", "bad tag"),  # docker's tags are ASCII ([\w] is Unicode's in re)
])
def test_invalid_reference(ref, pattern, store):
    failed(run_pull(ref, store=store), pattern)
    assert not os.path.exists(os.path.join(store, "index.json")) or \
        mc.ImageStore(store).entries() == []


def test_reference_parsing():
    cases = {
        "alpine": ("docker.io", "library/alpine", "latest", None, "registry-1.docker.io"),
        "nginx:1.27": ("docker.io", "library/nginx", "1.27", None, "registry-1.docker.io"),
        "user/app": ("docker.io", "user/app", "latest", None, "registry-1.docker.io"),
        "index.docker.io/library/x:y": ("docker.io", "library/x", "y", None,
                                        "registry-1.docker.io"),
        "ghcr.io/owner/name:tag": ("ghcr.io", "owner/name", "tag", None, "ghcr.io"),
        "localhost/foo": ("localhost", "foo", "latest", None, "localhost"),
        "localhost:5000/a/b/c:1": ("localhost:5000", "a/b/c", "1", None, "localhost:5000"),
        "[::1]:5000/x": ("[::1]:5000", "x", "latest", None, "[::1]:5000"),
        "alpine@sha256:" + "a" * 64: ("docker.io", "library/alpine", None, "sha256:" + "a" * 64,
                                      "registry-1.docker.io"),
        "a.b/c:t@sha256:" + "b" * 64: ("a.b", "c", "t", "sha256:" + "b" * 64, "a.b"),
    }
    for text, want in cases.items():
        ref = mc.parse_reference(text)
        assert (ref.registry, ref.repository, ref.tag, ref.digest, ref.api_host) == want
    assert mc.parse_reference("alpine").name == "docker.io/library/alpine:latest"
    assert mc.parse_reference("alpine").familiar_repository == "alpine"
    for bad in ("UPPER", "a//b", "-a", "a:", "a@", "a/b:" + "t" * 129, "x/" + "a" * 256):
        with pytest.raises(mc.Error):
            mc.parse_reference(bad)


def test_unknown_tag_and_repository(registry, store, layers):
    name = repo()
    registry.client.push_image(name, "exists", Image(layers["oci"][:1]))
    StoreWriter(store).ensure_layout()
    before = store_snapshot(store)
    failed(run_pull(f"{registry.host}/{name}:nope", store=store), "not found.*MANIFEST_UNKNOWN")
    failed(run_pull(f"{registry.host}/no/such-repo", store=store), "not found")
    assert store_snapshot(store) == before


def test_registry_down(store):
    port = free_port()
    failed(run_pull(f"127.0.0.1:{port}/x/y", store=store), "cannot reach registry.*refused")


def test_non_loopback_registry_needs_insecure_for_http():
    from pull import Registry, is_loopback
    assert is_loopback("127.0.0.1:5000") and is_loopback("127.1.2.3") and is_loopback("[::1]:5")
    assert is_loopback("localhost:5000") and not is_loopback("10.0.0.1:5000")
    assert Registry("localhost:5000", "x").base == "http://localhost:5000"
    assert Registry("registry.example:5000", "x").base == "https://registry.example:5000"
    assert Registry("registry.example:5000", "x", insecure=True).base == \
        "http://registry.example:5000"


def test_tls_registry(tmp_path, store, layers, monkeypatch):
    """https through ssl's default context: a registry whose certificate the system trusts
    ($SSL_CERT_FILE here) is pulled from, directly or through $https_proxy's CONNECT tunnel;
    one it does not trust is a one-line TLS error."""
    cert, key = str(tmp_path / "tls.pem"), str(tmp_path / "tls.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1", "-addext",
                    "subjectAltName=IP:127.0.0.1,DNS:registry.invalid"],
                   check=True, capture_output=True)
    monkeypatch.setenv("SSL_CERT_FILE", cert)
    server = RegistryServer(str(tmp_path / "reg"), tls=(cert, key))
    try:
        image = Image(layers["oci"], config=CONFIG)
        RegistryClient(server.base).push_image("tls/app", "1", image)
        ref = f"{server.host}/tls/app:1"
        ok(run_pull("--registry", server.base, ref, store=store))
        check_rootfs(merged_view(mc.find_image(ref, store)))
        untrusted = {k: v for k, v in os.environ.items() if k != "SSL_CERT_FILE"}
        failed(run_pull("--registry", server.base, ref, store=store + "2", env=untrusted),
               r"TLS error talking to 127\.0\.0\.1:\d+ \(certificate verify failed")
        failed(run_pull("--registry", server.base.replace("https", "ftp"), ref, store=store),
               "scheme must be http or https")

        # off loopback (a name only the proxy reaches), https goes through the tunnel
        tunnel = TunnelProxy(("127.0.0.1", server.port))
        try:
            for key in ("no_proxy", "NO_PROXY"):
                monkeypatch.delenv(key, raising=False)
            monkeypatch.setenv("https_proxy", f"http://{tunnel.host}")
            ok(run_pull("registry.invalid:5000/tls/app:1", store=store + "3"))
            check_rootfs(merged_view(mc.find_image("registry.invalid:5000/tls/app:1",
                                                   store + "3")))
            # the main thread's connection and the downloaders' own
            assert len(tunnel.requests) >= 2
            assert all(r.startswith("CONNECT registry.invalid:5000 ") for r in tunnel.requests)
        finally:
            tunnel.stop()
    finally:
        server.stop()


def test_http_proxy_from_environment(proxy, registry, store, layers, monkeypatch):
    """$http_proxy carries the requests for a registry off loopback, in absolute form: here a
    name that cannot resolve, which only the proxy (forwarding to the test registry) reaches."""
    name = repo()
    image = Image(layers["oci"][:2])
    registry.client.push_image(name, "v", image)
    for key in ("no_proxy", "NO_PROXY", "HTTP_PROXY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("http_proxy", f"http://{proxy.host}")
    ref = f"registry.invalid:5000/{name}:v"
    ok(run_pull("--insecure", ref, store=store))
    assert mc.find_image(ref, store).pulled_digest == image.digest
    assert proxy.log and all(p.startswith("http://registry.invalid:5000/v2/") and
                             h["Host"] == "registry.invalid:5000" for _, p, h in proxy.log)
    assert pull.proxy_for("http", "registry.invalid:5000").port == proxy.server.server_address[1]
    assert pull.proxy_for("http", "127.0.0.1:5000") is None  # never for loopback
    monkeypatch.setenv("no_proxy", "example.org,.invalid")
    assert pull.proxy_for("http", "registry.invalid:5000") is None


# ---- faults: nothing half-made may remain ----

def _pull_fails(ref, store, pattern):
    StoreWriter(store).ensure_layout()  # an empty store's skeleton is not a leftover
    before = store_snapshot(store)
    line = failed(run_pull(ref, store=store), pattern)
    after = store_snapshot(store)
    assert after == before, set(after) ^ set(before)
    return line


@pytest.fixture
def pushed(registry, layers, store):
    """A three-layer image in a fresh repository, and the store already holding another."""
    other = repo()
    registry.client.push_image(other, "x", Image([tar_layer([entry("o", data=b"o")])]))
    ok(run_pull(f"{registry.host}/{other}:x", store=store))
    name = repo()
    image = Image(layers["oci"], config=CONFIG)
    registry.client.push_image(name, "v", image)
    return name, image


def test_corrupt_blob_in_registry(registry, store, pushed):
    name, image = pushed
    path = registry.blob_file(image.layers[1].digest)
    original = open(path, "rb").read()
    try:
        with open(path, "r+b") as f:
            f.seek(100)
            f.write(b"\xff" * 16)
        _pull_fails(f"{registry.host}/{name}:v", store, "digest mismatch")
    finally:
        with open(path, "wb") as f:
            f.write(original)


def test_truncated_blob_in_registry(registry, store, pushed):
    name, image = pushed
    path = registry.blob_file(image.layers[0].digest)
    original = open(path, "rb").read()
    try:
        with open(path, "r+b") as f:
            f.truncate(len(original) // 2)
        _pull_fails(f"{registry.host}/{name}:v", store, "blob sha256:.*(failed|mismatch)")
    finally:
        with open(path, "wb") as f:
            f.write(original)


def test_diff_id_mismatch(registry, store, layers):
    name = repo()
    good = Image(layers["oci"][:2])
    cfg = json.loads(good.config)
    cfg["rootfs"]["diff_ids"][1] = "sha256:" + "0" * 64
    registry.client.push_image(name, "v", Image(layers["oci"][:2],
                                                config_bytes=json.dumps(cfg).encode()))
    _pull_fails(f"{registry.host}/{name}:v", store, "layer 2 .*does not match the config's diff_id")


@pytest.mark.parametrize("field, value", [("architecture", {"a": 1}), ("os", ["linux"]),
                                          ("config", []), ("created", 5)])
def test_a_config_the_runtime_cannot_read_is_not_stored(registry, store, layers, field,
                                                        value):
    """An image config whose fields are of the wrong type: refused before anything is
    stored (it was stored, and every run of the image failed with a traceback)."""
    name = repo()
    cfg = json.loads(Image(layers["oci"][:1]).config)
    cfg[field] = value
    registry.client.push_image(name, "v", Image(layers["oci"][:1],
                                                config_bytes=json.dumps(cfg).encode()))
    _pull_fails(f"{registry.host}/{name}:v", store, "image config is malformed")
    with pytest.raises(mc.Error):
        mc.find_image(f"{registry.host}/{name}:v", store)


def test_dropped_connection_is_resumed(proxy, store, pushed):
    name, image = pushed
    big = image.layers[0]
    drops = []

    def rule(method, path, headers):
        if method == "GET" and path.endswith(big.digest) and not drops:
            drops.append(path)
            return ("drop", len(big.blob) // 3)
    proxy.rule = rule
    ok(run_pull(f"{proxy.host}/{name}:v", store=store))
    ranged = [h.get("Range") for m, p, h in proxy.log if p.endswith(big.digest)]
    assert ranged[0] is None and ranged[1] == f"bytes={len(big.blob) // 3}-"
    check_rootfs(merged_view(mc.find_image(f"{proxy.host}/{name}:v", store)))


def test_connection_dropped_every_time(proxy, store, pushed):
    name, image = pushed
    proxy.rule = lambda m, p, h: ("drop", 1000) if p.endswith(image.layers[0].digest) else None
    _pull_fails(f"{proxy.host}/{name}:v", store, "download failed after 4 attempts")


@pytest.mark.parametrize("what", ["manifest", "blob"])
def test_server_error(proxy, store, pushed, what):
    name, image = pushed
    target = "/manifests/" if what == "manifest" else image.layers[2].digest
    proxy.rule = lambda m, p, h: ("status", 500) if target in p else None
    _pull_fails(f"{proxy.host}/{name}:v", store, "answered HTTP 500.*injected failure")


@pytest.mark.parametrize("case", sorted(hostile_layers("/x")))
def test_hostile_layer_through_registry(case, registry, store, tmp_path, image_rootfs):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"original")
    before = tree_snapshot(str(outside))
    layers = [dir_layer(image_rootfs)] + [tar_layer(e) for e in
                                            hostile_layers(str(outside))[case]]
    name = repo("hostile")
    registry.client.push_image(name, "v", Image(layers))
    if case.startswith(CROSS_LAYER):
        # Layers are stored apart, so a later layer never meets an earlier one's symlink:
        # its entries land in its own directory, and the merged view has a directory where
        # the symlink was, as with docker's overlay2. Nothing outside is touched either way.
        ok(run_pull(f"{registry.host}/{name}:v", store=store))
        view = merged_view(mc.find_image(f"{registry.host}/{name}:v", store))
        top = "d/evil" if "relative" in case else "evil"
        assert os.path.isdir(os.path.join(view, top)) and \
            not os.path.islink(os.path.join(view, top))
    else:
        _pull_fails(f"{registry.host}/{name}:v", store, "refusing entry")
    assert tree_snapshot(str(outside)) == before


CROSS_LAYER = ("symlink-earlier-layer", "symlink-dir-then-mkdir", "whiteout-through-symlink",
               "opaque-through-symlink")


def test_killed_pull_leaves_store_consistent(proxy, store, pushed):
    name, image = pushed
    proxy.rule = lambda m, p, h: ("stall", 5000) if p.endswith(image.layers[0].digest) else None
    index_before = open(os.path.join(store, "index.json")).read()
    proc = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(mc.__file__),
                                                          "tools/pull.py"),
                             "--store", store, f"{proxy.host}/{name}:v"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not any(p.endswith(image.layers[0].digest) for _, p, _ in proxy.log):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert open(os.path.join(store, "index.json")).read() == index_before
    # layers finish on their own (each complete or absent); the stalled one never came
    assert not os.path.exists(mc.ImageStore(store).layer_path(image.layers[0].diff_id))
    with pytest.raises(mc.Error, match="no such image"):
        mc.find_image(f"{proxy.host}/{name}:v", store)
    # the next pull cleans up what the killed one left and completes
    proxy.rule = lambda m, p, h: None
    ok(run_pull(f"{proxy.host}/{name}:v", store=store))
    assert os.listdir(os.path.join(store, "tmp")) == []
    check_rootfs(merged_view(mc.find_image(f"{proxy.host}/{name}:v", store)))


# ---- auth ----

def _docker_config(tmp_path, host, user, password):
    import base64
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (home / ".docker/config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return dict(os.environ, HOME=str(home))


def test_token_auth_anonymous(token_registry, store, layers):
    name = repo("public")
    image = Image(layers["oci"], config=CONFIG)
    token_registry.client.push_image(name, "v", image)
    issued_before = len(token_registry.issuer.issued)
    result = ok(run_pull(f"{token_registry.host}/{name}:v", store=store))
    assert len(token_registry.issuer.issued) > issued_before  # the token flow really ran
    check_rootfs(merged_view(mc.find_image(f"{token_registry.host}/{name}:v", store)))
    for token in token_registry.issuer.issued:
        assert token not in result.stdout and token not in result.stderr
        assert token.split(".")[2] not in result.stdout + result.stderr
    # a pull straight from the registry without a token is refused, so the flow was needed
    r = http_request(pull.Transport(), "GET", f"{token_registry.base}/v2/{name}/manifests/v")
    assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer realm=")


def test_token_auth_private_needs_credentials(token_registry, store, layers, tmp_path):
    name = repo("private")
    image = Image(layers["oci"][:1])
    token_registry.client.push_image(name, "v", image)
    ref = f"{token_registry.host}/{name}:v"
    env = dict(os.environ, HOME=str(tmp_path))  # no docker config
    StoreWriter(store).ensure_layout()
    before = store_snapshot(store)
    line = failed(run_pull(ref, store=store, env=env), "authentication failed.*anonymous")
    assert store_snapshot(store) == before
    bad = _docker_config(tmp_path / "bad", token_registry.host, "reader", "wrong")
    failed(run_pull(ref, store=store, env=bad), "refused these credentials")
    good = _docker_config(tmp_path / "good", token_registry.host, "reader", "read-secret")
    result = ok(run_pull(ref, store=store, env=good))
    assert mc.find_image(ref, store).pulled_digest == image.digest
    assert "read-secret" not in result.stdout + result.stderr + line


def bcrypt_line(user, password):
    """An htpasswd line (the registry takes bcrypt only): libcrypt through Python's crypt
    module, or apache2-utils' htpasswd where Python has no crypt module any more."""
    import shutil
    import warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import crypt
        return f"{user}:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n"
    except ImportError:
        if not shutil.which("htpasswd"):
            pytest.skip("no bcrypt: neither Python's crypt module nor htpasswd")
        return subprocess.run(["htpasswd", "-nbB", user, password], check=True,
                              capture_output=True, text=True).stdout.strip() + "\n"


def test_basic_auth_registry(tmp_path, store, layers):
    (tmp_path / "htpasswd").write_text(bcrypt_line("alice", "basic-secret"))
    server = RegistryServer(str(tmp_path / "reg"), auth={"htpasswd": {
        "realm": "test", "path": str(tmp_path / "htpasswd")}})
    try:
        client = RegistryClient(server.base)
        client.basic = ("alice", "basic-secret")
        image = Image(layers["docker"][:2], "docker")
        client.push_image("team/app", "1", image)
        ref = f"{server.host}/team/app:1"
        failed(run_pull(ref, store=store, env=dict(os.environ, HOME=str(tmp_path))),
               "requires a login")
        env = _docker_config(tmp_path / "c", server.host, "alice", "basic-secret")
        ok(run_pull(ref, store=store, env=env))
        assert mc.find_image(ref, store).pulled_digest == image.digest
        env = _docker_config(tmp_path / "d", server.host, "alice", "nope")
        failed(run_pull(f"{server.host}/team/app:1", store=store + "2", env=env),
               "login to .* failed")
    finally:
        server.stop()


def test_redirect_to_blob_storage_gets_no_token(token_registry, store, layers):
    """Blob GETs answered with 307 to another host: followed, without the registry's token."""
    seen = []

    import http.server

    class Storage(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            seen.append(self.headers.get("Authorization"))
            digest = self.path.rsplit("/", 1)[1]
            data = open(token_registry.blob_file(digest), "rb").read()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    storage = http.server.ThreadingHTTPServer(("127.0.0.2", 0), Storage)
    threading.Thread(target=storage.serve_forever, daemon=True).start()
    front = FaultProxy(token_registry.host)
    try:
        name = repo("public")
        image = Image(layers["oci"])
        token_registry.client.push_image(name, "v", image)
        base = f"http://127.0.0.2:{storage.server_address[1]}/storage"
        front.rule = lambda m, p, h: ("redirect", base + "/" + p.rsplit("/", 1)[1]) \
            if "/blobs/" in p else None
        ok(run_pull(f"{front.host}/{name}:v", store=store))
        assert len(seen) == 4 and seen == [None] * 4
        assert any(h.get("Authorization", "").startswith("Bearer ")
                   for m, p, h in front.log if "/blobs/" in p)
        check_rootfs(merged_view(mc.find_image(f"{front.host}/{name}:v", store)))
    finally:
        front.stop()
        storage.shutdown()
        storage.server_close()


# ---- `minicontainer.py pull`: the runtime's verb runs the tools' puller ----

def system_path_env():
    """The environment with sudo's PATH: the runtime, run as a program, finds python3 there."""
    return dict(os.environ, PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")


def test_runtime_pull_verb(registry, store, layers, tmp_path):
    name = repo()
    image = Image(layers["oci"], config=CONFIG)
    registry.client.push_image(name, "v", image)
    ref = f"{registry.host}/{name}:v"
    # run as a program through a link, as `make install` leaves it: the tools are found
    # beside the link's target
    link = tmp_path / "bin" / "minicontainer"
    link.parent.mkdir()
    link.symlink_to(RUNTIME)
    r = subprocess.run([str(link), "pull", "-q", ref], capture_output=True, text=True,
                       cwd="/", timeout=120, env=system_path_env())
    assert r.returncode == 0 and r.stdout == ref + "\n" and r.stderr == "", r.stderr
    assert mc.find_image(ref, store).pulled_digest == image.digest
    check_rootfs(merged_view(mc.find_image(ref, store)))
    out = ok(run_mc("pull", "--store", store, ref))  # again: everything is there already
    assert out.stdout.strip().splitlines()[-2:] == [f"Status: Image is up to date for {ref}",
                                                    ref]
    assert f"{registry.host}/{name}" in run_mc("images").stdout

    # the puller's errors, and the runtime's usage errors, are one line
    failed(run_mc("pull", f"{registry.host}/{name}:nope"), "not found.*MANIFEST_UNKNOWN")
    for args in ([], ["--no-such-flag", ref], ["--platform"]):
        r = run_mc("pull", *args)
        assert one_line_error(r).startswith("minicontainer: pull: ") and r.returncode == 2


def test_runtime_pull_as_a_user_needs_a_store_of_its_own(tmp_path):
    """An ordinary user pulls into its own store (~/.local/share/minicontainer): one it
    may not write is a one-line error (tests/test_rootless.py pulls as a user)."""
    def drop():
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    r = subprocess.run(["/usr/bin/python3", RUNTIME, "pull", "alpine"], capture_output=True,
                       text=True, preexec_fn=drop, cwd="/", timeout=30,
                       env={"HOME": "/root", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert lines == ["pull: image store /root/.local/share/minicontainer: Permission denied "
                     "(/root/.local)"], r.stderr
    assert not os.path.exists("/root/.local/share/minicontainer")


def test_runtime_without_tools(tmp_path, busybox_rootfs):
    """A runtime copied alone says how to get the puller, and still runs a rootfs."""
    alone = tmp_path / "minicontainer.py"
    shutil.copy2(RUNTIME, alone)
    assert os.path.isdir(os.path.join(ROOT, "tools"))  # what the copy lacks
    for cmd in ([str(alone)], [sys.executable, str(alone)]):
        r = subprocess.run(cmd + ["pull", "alpine"], capture_output=True, text=True,
                           cwd=str(tmp_path), timeout=30, env=system_path_env())
        line = one_line_error(r)
        assert r.returncode == 1
        assert f"tools/pull.py beside {alone}" in line and "--rootfs" in line, line
    state = tmp_path / "state"
    r = subprocess.run([str(alone), "--root", str(state), "run", "--rm", "--rootfs",
                        busybox_rootfs, "--", "echo", "alone"], capture_output=True,
                       text=True, timeout=60, env=system_path_env())
    assert r.returncode == 0 and r.stdout == "alone\n", r.stderr
