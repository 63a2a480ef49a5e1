"""Fixtures for image tests: a real docker-registry on loopback, a token-auth variant with a
small token issuer, a fault-injecting proxy, and helpers that build images and push them
through the registry API."""
import base64
import collections
import gzip
import hashlib
import http.client
import http.server
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.parse

import pytest

import pull

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PULL = os.path.join(ROOT, "tools", "pull.py")
REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
LAYER_TYPES = {
    ("oci", "gzip"): "application/vnd.oci.image.layer.v1.tar+gzip",
    ("oci", "zstd"): "application/vnd.oci.image.layer.v1.tar+zstd",
    ("oci", None): "application/vnd.oci.image.layer.v1.tar",
    ("docker", "gzip"): "application/vnd.docker.image.rootfs.diff.tar.gzip",
    ("docker", None): "application/vnd.docker.image.rootfs.diff.tar",
}


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def free_port(host="127.0.0.1"):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# ---- building images ----

class Layer:
    """A layer blob: compressed bytes, digest, diff_id."""

    def __init__(self, tar_bytes, compression="gzip", blob=None):
        self.tar = tar_bytes
        self.compression = compression
        if blob is not None:
            self.blob = blob
        elif compression == "gzip":
            self.blob = gzip.compress(tar_bytes, 6, mtime=0)
        elif compression == "zstd":
            import zstandard
            self.blob = zstandard.ZstdCompressor().compress(tar_bytes)
        else:
            self.blob = tar_bytes
        self.digest = sha256(self.blob)
        self.diff_id = sha256(tar_bytes)

    @classmethod
    def from_tarball(cls, path):
        """An existing .tar.gz used as is (like ADD rootfs.tar.gz in a Dockerfile)."""
        with open(path, "rb") as f:
            blob = f.read()
        return cls(gzip.decompress(blob), "gzip", blob)

    def descriptor(self, fmt):
        return {"mediaType": LAYER_TYPES[(fmt, self.compression)], "digest": self.digest,
                "size": len(self.blob)}


def entry(name, kind="file", data=b"", mode=None, uid=0, gid=0, link="", mtime=1700000000,
          xattrs=None, dev=(0, 0)):
    """A (TarInfo, data) pair for tar_layer."""
    info = tarfile.TarInfo(name)
    info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                 "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE,
                 "char": tarfile.CHRTYPE, "block": tarfile.BLKTYPE}[kind]
    info.mode = mode if mode is not None else (0o755 if kind == "dir" else 0o644)
    info.uid, info.gid, info.mtime, info.linkname = uid, gid, mtime, link
    info.devmajor, info.devminor = dev
    if kind == "file":
        info.size = len(data)
    if xattrs:
        info.pax_headers = {"SCHILY.xattr." + k: v for k, v in xattrs.items()}
    return info, (data if kind == "file" else None)


def tar_bytes(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def tar_layer(entries, compression="gzip"):
    return Layer(tar_bytes(entries), compression)


def dir_layer(path, compression="gzip"):
    """A layer of everything under path (hardlinks, symlinks and modes as they are)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(os.listdir(path)):
            tar.add(os.path.join(path, name), arcname=name)
    return Layer(buf.getvalue(), compression)


def image_config(layers, os_="linux", arch="amd64", variant=None, config=None):
    cfg = {"architecture": arch, "os": os_, "created": "2024-01-01T00:00:00Z",
           "config": config or {"Cmd": ["/bin/sh"],
                                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:"
                                        "/usr/bin:/sbin:/bin"]},
           "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
           "history": [{"created_by": f"layer {i}"} for i in range(len(layers))]}
    if variant:
        cfg["variant"] = variant
    return json.dumps(cfg, indent=1).encode()


class Image:
    """One platform's image: layers + config, and its manifest in OCI or Docker format."""

    def __init__(self, layers, fmt="oci", arch="amd64", variant=None, config=None,
                 config_bytes=None):
        self.layers, self.fmt, self.arch, self.variant = layers, fmt, arch, variant
        self.config = config_bytes or image_config(layers, arch=arch, variant=variant,
                                                   config=config)
        self.manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST if fmt == "oci" else DOCKER_MANIFEST,
            "config": {"mediaType": OCI_CONFIG if fmt == "oci" else DOCKER_CONFIG,
                       "digest": sha256(self.config), "size": len(self.config)},
            "layers": [layer.descriptor(fmt) for layer in layers],
        }, indent=2).encode()
        self.media_type = OCI_MANIFEST if fmt == "oci" else DOCKER_MANIFEST
        self.digest = sha256(self.manifest)

    def platform(self):
        p = {"architecture": self.arch, "os": "linux"}
        if self.variant:
            p["variant"] = self.variant
        return p


def index_bytes(images, fmt="oci"):
    return json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX if fmt == "oci" else DOCKER_LIST,
        "manifests": [{"mediaType": im.media_type, "digest": im.digest,
                       "size": len(im.manifest), "platform": im.platform()} for im in images],
    }, indent=2).encode()


# ---- talking to the registry (test side: pushing) ----

Reply = collections.namedtuple("Reply", "status headers body")


def http_request(transport, method, url, headers=None, body=None):
    """One request through pull.py's transport; the Reply with the whole body."""
    resp = transport.request(method, url, headers, body)
    return Reply(resp.status, resp.headers, resp.read(1 << 30, url))


class RegistryClient:
    """Pushes through the registry HTTP API v2, doing the token flow when asked; basic, if
    set to (user, password), goes with every request (an htpasswd registry)."""

    def __init__(self, base, credentials=None):
        self.base, self.credentials = base, credentials
        self.http = pull.Transport()
        self.basic = None
        self.token = None

    def request(self, method, url, body=None, headers=None):
        url = url if "://" in url else self.base + url
        for _ in range(2):
            h = dict(headers or {})
            if self.token:
                h["Authorization"] = "Bearer " + self.token
            elif self.basic:
                h["Authorization"] = pull._basic(*self.basic)
            r = http_request(self.http, method, url, h, body)
            if r.status != 401 or "Bearer" not in r.headers.get("WWW-Authenticate", ""):
                return r
            params = pull.parse_challenge(r.headers["WWW-Authenticate"])[1]
            query = urllib.parse.urlencode({"service": params["service"],
                                            "scope": params.get("scope", "")})
            t = http_request(self.http, "GET", params["realm"] + "?" + query,
                             {"Authorization": pull._basic(*self.credentials)}
                             if self.credentials else {})
            assert t.status == 200, t
            self.token = json.loads(t.body)["token"]
        return r

    def push_blob(self, repo, data):
        digest = sha256(data)
        if self.request("HEAD", f"/v2/{repo}/blobs/{digest}").status == 200:
            return digest
        r = self.request("POST", f"/v2/{repo}/blobs/uploads/")
        assert r.status == 202, r
        loc = urllib.parse.urljoin(self.base + "/", r.headers["Location"])
        sep = "&" if "?" in loc else "?"
        r = self.request("PUT", f"{loc}{sep}digest={digest}", data,
                         {"Content-Type": "application/octet-stream"})
        assert r.status == 201, r
        return digest

    def push_manifest(self, repo, reference, body, media_type):
        r = self.request("PUT", f"/v2/{repo}/manifests/{reference}", body,
                         {"Content-Type": media_type})
        assert r.status == 201, r
        return r.headers.get("Docker-Content-Digest")

    def push_image(self, repo, tag, image):
        for layer in image.layers:
            self.push_blob(repo, layer.blob)
        self.push_blob(repo, image.config)
        self.push_manifest(repo, image.digest, image.manifest, image.media_type)
        if tag:
            self.push_manifest(repo, tag, image.manifest, image.media_type)
        return image.digest

    def push_index(self, repo, tag, images, fmt="oci"):
        for image in images:
            self.push_image(repo, None, image)
        body = index_bytes(images, fmt)
        self.push_manifest(repo, tag, body, OCI_INDEX if fmt == "oci" else DOCKER_LIST)
        return sha256(body)


# ---- the registry process ----

class RegistryServer:
    def __init__(self, workdir, auth=None, tls=None):
        """tls: (certificate file, key file) to serve https with."""
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.base = f"{'https' if tls else 'http'}://{self.host}"
        self.storage = os.path.join(workdir, "storage")
        os.makedirs(self.storage, exist_ok=True)
        config = {
            "version": 0.1,
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": self.storage},
                        "delete": {"enabled": True}},
            "http": {"addr": self.host, "secret": "test-secret"},
        }
        if auth:
            config["auth"] = auth
        if tls:
            config["http"]["tls"] = {"certificate": tls[0], "key": tls[1]}
        self.config_path = os.path.join(workdir, "config.yml")
        with open(self.config_path, "w") as f:
            json.dump(config, f)  # JSON is YAML
        self.log_path = os.path.join(workdir, "registry.log")
        self.proc = None
        self.start()

    def start(self):
        """Start docker-registry (again) on this port and storage; return once it answers."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([REGISTRY_BIN, "serve", self.config_path],
                                         stdout=log, stderr=subprocess.STDOUT)
        probe = pull.Transport()
        deadline = time.monotonic() + 20
        try:
            while True:
                try:
                    if http_request(probe, "GET", self.base + "/v2/").status in (200, 401):
                        return
                except pull.NET_ERRORS:
                    pass
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    with open(self.log_path, "rb") as f:
                        raise RuntimeError("docker-registry did not start: " +
                                           f.read().decode())
                time.sleep(0.05)
        finally:
            probe.close()

    def kill(self):
        """SIGKILL, as a crash or a host going down: open connections are cut mid-answer."""
        self.proc.kill()
        self.proc.wait()

    def restart(self):
        self.kill()
        self.start()

    def blob_file(self, digest):
        """Where the registry keeps a blob's bytes (tests corrupt it there)."""
        hexd = digest[7:]
        return os.path.join(self.storage, "docker/registry/v2/blobs/sha256", hexd[:2], hexd,
                            "data")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="session")
def registry(tmp_path_factory):
    """A plain (no auth) docker-registry on a free loopback port; repos are per test."""
    server = RegistryServer(str(tmp_path_factory.mktemp("registry")))
    server.client = RegistryClient(server.base)
    yield server
    server.stop()


# ---- token auth: a tiny issuer of registry JWTs ----

def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenIssuer:
    """Issues RS256 JWTs the registry trusts (its cert is the registry's rootcertbundle).
    Anonymous callers may pull repositories outside private/; users may pull and push."""

    SERVICE, ISSUER = "minicontainer-test-registry", "minicontainer-test-issuer"

    def __init__(self, workdir, users):
        self.users = users
        self.key = os.path.join(workdir, "token.key")
        self.cert = os.path.join(workdir, "token.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                        self.key, "-out", self.cert, "-days", "2", "-subj", "/CN=token-issuer"],
                       check=True, capture_output=True)
        der = subprocess.run(["openssl", "x509", "-in", self.cert, "-outform", "DER"],
                             check=True, capture_output=True).stdout
        self.x5c = base64.b64encode(der).decode()
        self.issued, self.requests = [], []
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                issuer.handle(self)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def sign(self, claims):
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        payload = (_b64url(json.dumps(header).encode()) + "." +
                   _b64url(json.dumps(claims).encode())).encode()
        sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", self.key], input=payload,
                             check=True, capture_output=True).stdout
        return payload.decode() + "." + _b64url(sig)

    def handle(self, req):
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(req.path).query)
        user = None
        auth = req.headers.get("Authorization", "")
        self.requests.append({"path": req.path, "auth": bool(auth)})
        if auth.startswith("Basic "):
            name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            if self.users.get(name) != password:
                req.send_response(401)
                req.end_headers()
                return
            user = name
        access = []
        for scope in query.get("scope", []):
            for item in scope.split(" "):
                kind, _, rest = item.partition(":")
                name, _, actions = rest.rpartition(":")
                wanted = set(actions.split(","))
                allowed = {"pull", "push"} if user else (
                    set() if name.startswith("private/") else {"pull"})
                if kind == "repository" and wanted & allowed:
                    access.append({"type": kind, "name": name,
                                   "actions": sorted(wanted & allowed)})
        if not user and any(s.split(":")[1].startswith("private/")
                            for s in query.get("scope", []) if s.count(":") >= 2):
            req.send_response(401)
            req.end_headers()
            return
        now = int(time.time())
        token = self.sign({"iss": self.ISSUER, "sub": user or "", "aud": self.SERVICE,
                           "exp": now + 300, "nbf": now - 10, "iat": now,
                           "jti": os.urandom(8).hex(), "access": access})
        self.issued.append(token)
        body = json.dumps({"token": token, "expires_in": 300}).encode()
        req.send_response(200)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory):
    """docker-registry in `auth: token` mode, with TokenIssuer as its realm."""
    workdir = str(tmp_path_factory.mktemp("token-registry"))
    issuer = TokenIssuer(workdir, {"pusher": "push-secret", "reader": "read-secret"})
    try:
        server = RegistryServer(workdir, auth={"token": {
            "realm": issuer.realm, "service": issuer.SERVICE, "issuer": issuer.ISSUER,
            "rootcertbundle": issuer.cert}})
    except BaseException:
        issuer.stop()
        raise
    server.issuer = issuer
    server.client = RegistryClient(server.base, ("pusher", "push-secret"))
    yield server
    server.stop()
    issuer.stop()


# ---- a proxy in front of a registry, to inject faults and redirects ----

class FaultProxy:
    """Forwards GET/HEAD to a registry.  `rule(method, path, headers)` may return None
    (forward), ("status", code), ("drop", nbytes) to cut the body after nbytes, or
    ("redirect", url) to answer a successful blob GET with a 307 there, or ("stall",
    nbytes) to send nbytes of the body and then hang until the proxy stops, or ("hold",
    nbytes) to send nbytes, set `holding` and read nothing more from the registry (which
    is left blocked mid-answer) until `release` is set, or ("body", bytes, content type) to
    answer that instead of the registry.  A registry that cannot be reached
    is answered 502, and a body that it cuts short is cut short, as a proxy would."""

    def __init__(self, upstream_host, bind="127.0.0.1"):
        self.upstream = upstream_host
        self.rule = lambda method, path, headers: None
        self.log = []
        self.stopping = threading.Event()
        self.holding, self.release = threading.Event(), threading.Event()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                proxy.handle(self)

            do_HEAD = do_GET

        self.server = http.server.ThreadingHTTPServer((bind, 0), Handler)
        self.server.daemon_threads = True
        self.host = f"{bind}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @staticmethod
    def answer(req, status, message):
        body = json.dumps({"errors": [{"code": "UNKNOWN", "message": message}]}).encode()
        req.send_response(status)
        req.send_header("Content-Length", str(len(body)))
        req.send_header("Content-Type", "application/json")
        req.end_headers()
        req.wfile.write(body)

    @staticmethod
    def cut(req):
        req.close_connection = True
        req.connection.shutdown(socket.SHUT_RDWR)

    def handle(self, req):
        self.log.append((req.command, req.path, dict(req.headers)))
        action = self.rule(req.command, req.path, req.headers)
        if action and action[0] == "status":
            self.answer(req, action[1], "injected failure")
            return
        if action and action[0] == "body":  # ("body", bytes, content type): a registry's
            req.send_response(200)          # answer that no real one would push
            req.send_header("Content-Type", action[2])
            req.send_header("Content-Length", str(len(action[1])))
            req.end_headers()
            req.wfile.write(action[1] if req.command == "GET" else b"")
            return
        conn = http.client.HTTPConnection(self.upstream, timeout=30)
        headers = {k: v for k, v in req.headers.items() if k.lower() != "host"}
        try:
            conn.request(req.command, req.path, headers=headers)
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            self.answer(req, 502, f"bad gateway: {e}")
            return
        if action and action[0] == "redirect" and resp.status == 200:
            resp.read()
            req.send_response(307)
            req.send_header("Location", action[1])
            req.send_header("Content-Length", "0")
            req.end_headers()
            conn.close()
            return
        req.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("connection", "transfer-encoding", "keep-alive"):
                req.send_header(k, v)
        if resp.getheader("Content-Length") is None:
            req.send_header("Connection", "close")
            req.close_connection = True
        req.end_headers()
        limit = action[1] if action and action[0] in ("drop", "stall", "hold") else None
        sent = 0
        while req.command != "HEAD":
            try:
                chunk = resp.read(65536)
            except (OSError, http.client.HTTPException):
                chunk = b""
            if not chunk:
                if resp.length:  # the registry's answer ended early
                    self.cut(req)
                break
            if limit is not None and sent + len(chunk) > limit:
                req.wfile.write(chunk[:limit - sent])
                req.wfile.flush()
                if action[0] == "hold":
                    self.holding.set()
                    self.release.wait(60)
                    req.wfile.write(chunk[limit - sent:])
                    sent, limit = sent + len(chunk), None
                    continue
                if action[0] == "stall":
                    self.stopping.wait(60)
                self.cut(req)
                break
            req.wfile.write(chunk)
            sent += len(chunk)
        conn.close()

    def stop(self):
        self.stopping.set()
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class TunnelProxy:
    """An HTTP CONNECT proxy (as $https_proxy names) that tunnels every CONNECT to upstream,
    whatever host it asks for; `requests` lists the request lines it got."""

    def __init__(self, upstream):
        self.upstream, self.requests = upstream, []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # stopped
            threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client):
        head = b""
        while b"\r\n\r\n" not in head:
            data = client.recv(4096)
            if not data:
                client.close()
                return
            head += data
        self.requests.append(head.split(b"\r\n")[0].decode())
        server = socket.create_connection(self.upstream)
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")

        def pipe(src, dst):
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        threading.Thread(target=pipe, args=(server, client), daemon=True).start()
        pipe(client, server)

    def stop(self):
        self.listener.close()


@pytest.fixture
def proxy(registry):
    p = FaultProxy(registry.host)
    yield p
    p.stop()


# ---- the store and the CLI ----

@pytest.fixture
def store(tmp_path, monkeypatch):
    """An empty image store, also set as $MINICONTAINER_STORE for subprocesses."""
    path = tmp_path / "store"
    monkeypatch.setenv("MINICONTAINER_STORE", str(path))
    return str(path)


def run_pull(*args, store=None, env=None, timeout=120):
    cmd = [sys.executable, PULL] + (["--store", store] if store else []) + list(args)
    e = dict(os.environ if env is None else env)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e)


def tree_snapshot(path):
    """{relative path: (type and mode, size, content hash)} of everything under path."""
    snap = {}
    if not os.path.lexists(path):
        return snap
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            digest = None
            if os.path.isfile(full) and not os.path.islink(full):
                with open(full, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
            snap[os.path.relpath(full, path)] = (st.st_mode, st.st_size, digest)
    return snap


def store_snapshot(path):
    """The store's contents, lock files aside (their existence says nothing)."""
    return {k: v for k, v in tree_snapshot(path).items()
            if k not in (".lock", ".index.lock")}


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_root: the test needs to run as root")
