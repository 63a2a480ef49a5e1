#!/usr/bin/env python3
"""Pull an image through the registry HTTP API v2 into minicontainer's image store.

    python3 tools/pull.py [--platform OS/ARCH[/VARIANT]] [--store DIR] [-q]
                          [--registry [SCHEME://]HOST[:PORT]] [--insecure] REF

REF is parsed as docker parses it (alpine = docker.io/library/alpine:latest).  Every blob is
checked against its digest and every layer against the config's diff_ids before anything
enters the store.  Reference parsing and the store's layout are minicontainer.py's, so that
the runtime reads exactly what this writes; unpacking and committing are store_writer.py's,
which import_image.py shares.  `minicontainer.py pull` runs this in its own process.
"""
import argparse
import base64
import hashlib
import http.client
import ipaddress
import json
import os
import platform as platform_module
import queue
import socket
import ssl
import sys
import tempfile
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import minicontainer as mc  # noqa: E402
from minicontainer import human_size, platform_string  # noqa: E402
from store_writer import StoreWriter, UnpackProcesses, handled_signals_blocked  # noqa: E402

Error = mc.Error

MANIFEST_TYPES = (mc.OCI_INDEX, mc.DOCKER_MANIFEST_LIST, mc.OCI_MANIFEST, mc.DOCKER_MANIFEST)
INDEX_TYPES = (mc.OCI_INDEX, mc.DOCKER_MANIFEST_LIST)
LAYER_TYPES = {
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
}
MAX_MANIFEST = 4 << 20
MAX_CONFIG = 32 << 20
# Per request: a failed connection, a dropped one or a 5xx is tried again after each delay,
# so a registry that restarts has about 3.5 s to come back.
RETRY_DELAYS = (0.5, 1, 2)
ATTEMPTS = len(RETRY_DELAYS) + 1
CONNECT_TIMEOUT, READ_TIMEOUT = 15, 60
USER_AGENT = "minicontainer-pull/1"
PARALLEL_DOWNLOADS = 3  # as docker does
PARALLEL_UNPACKS = min(4, max(2, os.cpu_count() or 1))  # each with a decompressing thread
INTERRUPTED_CLEANUP = 0.2  # seconds of removing a Ctrl-C'd pull's files before exiting
CHUNK = 1 << 18  # a download's reads


class PullError(Error):
    pass


# ---- platforms ----

def host_platform():
    machine = platform_module.machine().lower()
    if machine.startswith("armv"):
        return ("linux", "arm", "v" + machine[4])
    return ("linux", mc.OCI_ARCH.get(machine, machine), None)


def parse_platform(text):
    parts = text.lower().split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise PullError(f"invalid platform {text!r}: expected OS/ARCH[/VARIANT], "
                        "e.g. linux/arm64")
    os_, arch = parts[0], mc.OCI_ARCH.get(parts[1], parts[1])
    return (os_, arch, parts[2] if len(parts) == 3 else None)


def _variant(arch, variant):
    # arm64 without a variant is v8, as in docker's platform matching
    return variant or ("v8" if arch == "arm64" else None)


def platform_matches(have, want):
    return (have[0] == want[0] and have[1] == want[1]
            and (want[2] is None or _variant(have[1], have[2]) == _variant(want[1], want[2])))


def descriptor_platform(desc):
    p = desc.get("platform") or {}
    return (p.get("os", ""), p.get("architecture", ""), p.get("variant") or None)


def choose_manifest(index, want, name):
    """The index entry for platform want, or a PullError listing what there is."""
    if not isinstance(index.get("manifests") or [], list):
        raise PullError(f"{name}: index has no list of manifests")
    for desc in index.get("manifests") or ():
        check_descriptor(desc, name)
    candidates = [d for d in index.get("manifests") or ()
                  if d.get("mediaType", mc.OCI_MANIFEST) in (mc.OCI_MANIFEST, mc.DOCKER_MANIFEST)]
    matching = [d for d in candidates if platform_matches(descriptor_platform(d), want)]
    if not matching:
        have = sorted({platform_string(descriptor_platform(d)) for d in candidates
                       if descriptor_platform(d)[0] not in ("", "unknown")})
        raise PullError(f"{name} has no image for {platform_string(want)}; available: "
                        f"{', '.join(have) or 'none'}")
    # Without a wanted variant prefer the arch's default one (arm: v7, arm64: v8).
    default = {"arm": "v7", "arm64": "v8"}.get(want[1])
    matching.sort(key=lambda d: _variant(want[1], descriptor_platform(d)[2]) != default)
    return matching[0]


# ---- registry access ----

def is_loopback(host):
    hostname = urllib.parse.urlsplit("//" + host).hostname or ""
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def docker_credentials(*hosts):
    """(user, password) for the first of hosts in ~/.docker/config.json auths, or None."""
    config_dir = os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker")
    try:
        with open(os.path.join(config_dir, "config.json")) as f:
            auths = json.load(f).get("auths") or {}
    except (OSError, ValueError, AttributeError):
        return None
    for host in hosts:
        names = {host, "https://" + host, "http://" + host}
        if host in ("docker.io", "registry-1.docker.io", "index.docker.io"):
            names |= {"https://index.docker.io/v1/", "index.docker.io", "docker.io"}
        for key, entry in auths.items():
            key_host = urllib.parse.urlsplit(key if "//" in key else "//" + key).netloc
            if (key in names or key_host == host) and isinstance(entry, dict):
                if entry.get("auth"):
                    try:
                        user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                    except (ValueError, UnicodeDecodeError):
                        continue
                    return user, password
                if entry.get("username"):
                    return entry["username"], entry.get("password", "")
    return None


def parse_challenge(header):
    """('bearer', {realm, service, scope}) from a WWW-Authenticate header."""
    scheme, _, rest = header.strip().partition(" ")
    params, i = {}, 0
    while i < len(rest):
        eq = rest.find("=", i)
        if eq < 0:
            break
        key = rest[i:eq].strip().lstrip(",").strip().lower()
        i = eq + 1
        if rest[i:i + 1] == '"':
            end = rest.find('"', i + 1)
            end = len(rest) if end < 0 else end
            params[key], i = rest[i + 1:end], end + 1
        else:
            end = rest.find(",", i)
            end = len(rest) if end < 0 else end
            params[key], i = rest[i:end].strip(), end
        i = rest.find(",", i) + 1 if rest.find(",", i) >= 0 else len(rest)
    return scheme.lower(), params


# The exceptions a request or a body read raises when the network or the peer fails (refused,
# reset, timed out, closed early, a garbled answer): these are retried, anything else is not.
NET_ERRORS = (OSError, http.client.HTTPException)


class Response:
    """An answer whose connection is reused once its body has been read to the end."""

    def __init__(self, conn, raw):
        self.conn, self.raw = conn, raw
        self.status, self.headers = raw.status, raw.headers

    def readinto(self, buf):
        n = self.raw.readinto(buf)
        # http.client returns 0 at an early EOF of a Content-Length body instead of raising
        if not n and self.raw.length:
            raise http.client.IncompleteRead(b"", self.raw.length)
        return n

    def read(self, limit, what):
        """The whole body; more than limit bytes is a PullError."""
        data, buf = bytearray(), bytearray(65536)
        try:
            while n := self.readinto(buf):
                data += memoryview(buf)[:n]
                if len(data) > limit:
                    raise PullError(f"{what}: larger than {limit} bytes; refusing")
        except NET_ERRORS as e:
            raise PullError(f"{what}: connection lost ({_reason(e)})") from None
        finally:
            self.close()
        return bytes(data)

    def json(self, limit=1 << 20):
        """The body as JSON, or None if it is not (error bodies are optional)."""
        try:
            return json.loads(self.read(limit, "answer"))
        except (ValueError, PullError):
            return None

    def discard(self):
        """Drop the (short) body of a redirect, a 401 or a retried 5xx, keeping the
        connection when that is cheap."""
        try:
            if int(self.headers.get("Content-Length") or 1 << 20) <= 65536:
                self.raw.read()
        except (ValueError, *NET_ERRORS):
            pass
        self.close()

    def close(self):
        finished = self.raw.isclosed()
        self.raw.close()
        if not finished:  # unread body bytes on the socket would be taken for the next answer
            self.conn.close()


class _Timeouts:
    """A short timeout to connect, a longer one for each read (requests' (15, 60))."""

    def connect(self):
        super().connect()
        self.sock.settimeout(READ_TIMEOUT)


class _HTTPConnection(_Timeouts, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_Timeouts, http.client.HTTPSConnection):
    pass


def proxy_for(scheme, host):
    """The http:// proxy ($https_proxy, $http_proxy, less $no_proxy) to reach host through,
    or None; never one for loopback."""
    if is_loopback(host) or not any(k.lower().endswith("_proxy") for k in os.environ):
        return None  # (urllib.request, which reads them, is 1 MiB of a pull's memory)
    import urllib.request
    proxy = urllib.request.getproxies_environment().get(scheme)
    hostname = urllib.parse.urlsplit("//" + host).hostname or host
    if not proxy or urllib.request.proxy_bypass_environment(hostname):
        return None
    p = urllib.parse.urlsplit(proxy if "://" in proxy else "http://" + proxy)
    if p.scheme != "http" or not p.hostname:
        raise PullError(f"unsupported proxy {p.scheme}://{p.hostname or ''} for {host} "
                        "(only http:// proxies are)")
    return p


class Transport:
    """HTTP/1.1 with keep-alive: each thread has its own connection per host (so parallel
    downloads never share a socket).  cancel() shuts every open socket down, so a thread
    blocked reading a stalled answer returns at once instead of after the read timeout."""

    def __init__(self):
        self.local = threading.local()
        self.lock = threading.Lock()
        self.open = set()
        self.cancelled = threading.Event()
        self.tls = None

    def _connection(self, scheme, netloc):
        pool = self.local.__dict__.setdefault("pool", {})
        conn = pool.get((scheme, netloc))
        if conn is None:
            proxy = proxy_for(scheme, netloc)
            if scheme == "https":
                if self.tls is None:
                    self.tls = ssl.create_default_context()
                conn = _HTTPSConnection(proxy.hostname if proxy else netloc,
                                        (proxy.port or 80) if proxy else None,
                                        timeout=CONNECT_TIMEOUT, context=self.tls)
                if proxy:
                    conn.set_tunnel(netloc, headers=_proxy_headers(proxy))
            else:
                conn = _HTTPConnection(proxy.hostname if proxy else netloc,
                                       (proxy.port or 80) if proxy else None,
                                       timeout=CONNECT_TIMEOUT)
            conn.via_proxy = bool(proxy) and scheme == "http"
            conn.proxy_headers = _proxy_headers(proxy) if conn.via_proxy else {}
            conn.used = False
            pool[(scheme, netloc)] = conn
            with self.lock:
                self.open.add(conn)
        return conn

    def request(self, method, url, headers=None, body=None):
        """Send one request (no redirects followed) and return its Response.  A kept-alive
        connection that the server closed meanwhile is replaced once, as browsers do."""
        if self.cancelled.is_set():
            raise PullError("cancelled")
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.netloc:
            raise PullError(f"cannot follow URL {url[:200]!r}")
        h = {"User-Agent": USER_AGENT, **(headers or {})}
        for retry_stale in (True, False):
            if self.cancelled.is_set():  # a retry after cancel() shut the socket
                raise PullError("cancelled")
            conn = self._connection(u.scheme, u.netloc)
            target = (u.path or "/") + ("?" + u.query if u.query else "")
            if conn.via_proxy:
                target, h = url, {**h, "Host": u.netloc, **conn.proxy_headers}
            reused, conn.used = conn.used and conn.sock is not None, True
            try:
                if conn.sock is None:
                    # Connected here, not inside request(): a cancel() that came while we
                    # connected found no socket to shut, and must be seen now.
                    conn.connect()
                    if self.cancelled.is_set():
                        raise PullError("cancelled")
                conn.request(method, target, body=body, headers=h)
                return Response(conn, conn.getresponse())
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                if not (reused and retry_stale):
                    raise
            except ssl.SSLError:  # a ValueError too when it is a certificate's
                conn.close()
                raise
            except (ValueError, OverflowError) as e:  # a port out of range, a bad header
                conn.close()
                raise PullError(f"cannot request {u.netloc}: {e}") from None
            except BaseException:
                conn.close()
                raise
        raise AssertionError("unreachable")

    def cancel(self):
        self.cancelled.set()
        with self.lock:
            for conn in self.open:
                sock = conn.sock
                if sock is not None:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

    def close(self):
        with self.lock:
            for conn in self.open:
                conn.close()
            self.open.clear()


def _proxy_headers(proxy):
    if not proxy or proxy.username is None:
        return {}
    user = urllib.parse.unquote(proxy.username)
    password = urllib.parse.unquote(proxy.password or "")
    return {"Proxy-Authorization": "Basic " + base64.b64encode(
        f"{user}:{password}".encode()).decode()}


class Registry:
    """One repository on one registry, with docker's auth flows.  Tokens live only in memory
    and in request headers: they are never printed, logged or put in an error."""

    def __init__(self, host, repository, insecure=False, transport=None, scheme=None):
        self.host, self.repository = host, repository
        self.scheme = scheme or ("http" if insecure or is_loopback(host) else "https")
        self.base = f"{self.scheme}://{host}"
        self.credentials = docker_credentials(host)
        self.authorization = None
        self.lock = threading.Lock()
        self.http = transport or Transport()

    def _same_origin(self, url):
        u = urllib.parse.urlsplit(url)
        return f"{u.scheme}://{u.netloc}" == self.base

    def follow(self, method, url, headers=None, authorization=None, origin=None):
        """Send a request, following redirects; authorization goes only to origin (a
        scheme://host), never to blob storage elsewhere that a registry redirects to."""
        for _ in range(6):
            h = dict(headers or {})
            u = urllib.parse.urlsplit(url)
            if authorization and f"{u.scheme}://{u.netloc}" == origin:
                h["Authorization"] = authorization
            try:
                resp = self.http.request(method, url, h)
            except ssl.SSLError as e:
                raise PullError(f"TLS error talking to {u.netloc} ({_reason(e)}); for a "
                                "plain-http registry use --insecure") from None
            location = resp.headers.get("Location")
            if resp.status not in (301, 302, 303, 307, 308) or not location:
                return resp
            resp.discard()
            url = urllib.parse.urljoin(url, location)
        raise PullError(f"too many redirects from {self.host}")

    def request(self, method, path, headers=None):
        """follow() with the registry's authorization, renewed once on a 401."""
        url = path if "://" in path else self.base + path
        for auth_try in range(2):
            sent_auth = self.authorization
            resp = self.follow(method, url, headers, sent_auth, self.base)
            if resp.status != 401 or auth_try:
                return resp
            challenge = resp.headers.get("WWW-Authenticate", "")
            resp.discard()
            self._authenticate(challenge, sent_auth)
        return resp

    def _authenticate(self, challenge, failed):
        with self.lock:
            if self.authorization != failed:
                return  # another thread already renewed it
            scheme, params = parse_challenge(challenge)
            if scheme == "bearer" and params.get("realm"):
                self.authorization = "Bearer " + self._fetch_token(params)
            elif scheme == "basic":
                if not self.credentials:
                    raise PullError(f"{self.host} requires a login (no credentials for it in "
                                    "~/.docker/config.json)")
                if failed and failed.startswith("Basic "):
                    raise PullError(f"{self.host}: login failed (credentials rejected)")
                self.authorization = _basic(*self.credentials)
            else:
                raise PullError(f"{self.host} asks for authentication this tool can't do "
                                f"({scheme or 'no WWW-Authenticate header'})")

    def _fetch_token(self, params):
        realm = params["realm"]
        r = urllib.parse.urlsplit(realm)
        realm_host = r.netloc
        if r.scheme == "http" and self.scheme == "https" and not is_loopback(realm_host):
            raise PullError(f"{self.host} wants a token from a plain-http realm; refusing")
        query = urllib.parse.urlencode({
            "service": params.get("service", ""),
            "scope": params.get("scope") or f"repository:{self.repository}:pull"})
        url = realm + ("&" if r.query else "?") + query
        auth = self.credentials
        try:
            resp = self.follow("GET", url, authorization=auth and _basic(*auth),
                               origin=f"{r.scheme}://{r.netloc}")
        except NET_ERRORS as e:
            raise PullError(f"cannot get a token from {realm_host}: {_reason(e)}") from None
        if resp.status in (401, 403):
            resp.discard()
            raise PullError(f"{self.host}: authentication failed: the token service refused "
                            f"{'these credentials' if auth else 'anonymous access'} "
                            f"(HTTP {resp.status})")
        if resp.status != 200:
            resp.discard()
            raise PullError(f"token service {realm_host} answered HTTP {resp.status}")
        body = resp.json()
        token = (body.get("token") or body.get("access_token")) if isinstance(body, dict) \
            else None
        if not token or not isinstance(token, str):
            raise PullError(f"token service {realm_host} gave no token")
        return token

    def _backoff(self, attempt):
        if self.http.cancelled.wait(RETRY_DELAYS[attempt - 1]):
            raise PullError("cancelled")

    def get(self, path, headers=None):
        """GET with retries (backing off) of failed connections and 5xx answers."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                resp = self.request("GET", path, headers)
            except NET_ERRORS as e:
                if attempt == ATTEMPTS:
                    raise PullError(f"cannot reach registry {self.host}: {_reason(e)}") from None
                self._backoff(attempt)
                continue
            if resp.status >= 500 and attempt < ATTEMPTS:
                resp.discard()
                self._backoff(attempt)
                continue
            return resp
        raise AssertionError("unreachable")

    def check(self, resp, what):
        if resp.status in (200, 206):
            return resp
        status = resp.status
        body = resp.json(65536)
        errors = (body.get("errors") if isinstance(body, dict) else None) or []
        detail = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ")
                           for e in errors if isinstance(e, dict)) if isinstance(errors, list) \
            else ""
        if status == 404:
            raise PullError(f"{what}: not found ({detail or 'HTTP 404'})")
        if status == 401 and (self.authorization or "").startswith("Basic "):
            raise PullError(f"{what}: login to {self.host} failed (the credentials in "
                            "~/.docker/config.json were rejected)")
        if status in (401, 403):
            raise PullError(f"{what}: access denied by {self.host} (HTTP {status}"
                            f"{': ' + detail if detail else ''})")
        raise PullError(f"{what}: registry {self.host} answered HTTP {status}"
                        f"{': ' + detail if detail else ''}")

    def manifest(self, reference, what):
        """(bytes, media type, digest) of a manifest or index; a digest reference is checked."""
        resp = self.check(self.get(f"/v2/{self.repository}/manifests/{reference}",
                                   {"Accept": ", ".join(MANIFEST_TYPES)}), what)
        content_type = resp.headers.get("Content-Type", "")
        body = resp.read(MAX_MANIFEST, what)
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise PullError(f"{what}: manifest digest mismatch (registry sent {digest})")
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            raise PullError(f"{what}: manifest is not JSON") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("mediaType") or "", str):
            raise PullError(f"{what}: manifest is not a manifest's or an index's JSON object")
        media_type = doc.get("mediaType") or content_type.split(";")[0]
        if doc.get("schemaVersion") == 1 or "schema1" in media_type or "prettyjws" in media_type:
            raise PullError(f"{what}: schema 1 manifests are not supported")
        if media_type not in MANIFEST_TYPES:
            media_type = mc.OCI_INDEX if "manifests" in doc else mc.OCI_MANIFEST
        return body, doc, media_type, digest

    def small_blob(self, desc, limit, what):
        resp = self.check(self.get(f"/v2/{self.repository}/blobs/{desc['digest']}"), what)
        body = resp.read(limit, what)
        if "sha256:" + hashlib.sha256(body).hexdigest() != desc["digest"]:
            raise PullError(f"{what}: digest mismatch, the registry sent other content")
        return body

    def download(self, desc, path, progress, stop):
        """Stream a blob to path, resuming with Range after a dropped connection, and check
        its size and sha256; return path.  progress(status, bytes so far) tells docker's
        "Downloading" as data comes, then "Verifying Checksum".  Errors writing path (a full
        disk) are not retried: they raise as the OSError they are."""
        digest, size = desc["digest"], desc.get("size")
        what = f"blob {digest[:19]}"
        sha, have, failures = hashlib.sha256(), 0, 0
        buf = memoryview(bytearray(CHUNK))
        with open(path, "wb") as f:
            while True:
                if stop.is_set():
                    raise PullError("cancelled")
                headers = {"Range": f"bytes={have}-"} if have else {}
                resp = self.get(f"/v2/{self.repository}/blobs/{digest}", headers)
                if resp.status == 416 and have:
                    resp.discard()
                    raise PullError(f"{what}: size mismatch: the registry has no data past "
                                    f"byte {have}, the manifest says {size}")
                self.check(resp, what)
                if have and resp.status != 206:  # no resume: start again
                    f.seek(0)
                    f.truncate()
                    sha, have = hashlib.sha256(), 0
                total = _total_length(resp, have)
                if size is not None and total is not None and total != size:
                    resp.close()
                    raise PullError(f"{what}: size mismatch: the registry has {total} bytes, "
                                    f"the manifest says {size}")
                error = None
                try:
                    while True:
                        try:
                            n = resp.readinto(buf)
                        except NET_ERRORS as e:
                            error = e
                            break
                        if not n:
                            break
                        have += n
                        if size is not None and have > size:
                            raise PullError(f"{what}: the registry sent more than its "
                                            f"{size} bytes")
                        sha.update(buf[:n])
                        f.write(buf[:n])
                        progress("Downloading", have)
                        if stop.is_set():
                            break
                finally:
                    resp.close()
                if stop.is_set():  # cancel() cut the connection: that is no network error
                    raise PullError("cancelled")
                if error is None and (size is None or have == size):
                    break
                failures += 1
                if failures >= ATTEMPTS:
                    raise PullError(f"{what}: download failed after {failures} attempts "
                                    f"({_reason(error) if error else 'connection closed early'})")
                self._backoff(failures)
        progress("Verifying Checksum", have)
        if "sha256:" + sha.hexdigest() != digest:
            raise PullError(f"{what}: digest mismatch, the downloaded data is not the blob "
                            "the manifest names")
        return path


def _basic(user, password):
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _total_length(resp, offset):
    """The blob's full length as this answer tells it (Content-Range's total, or offset plus
    Content-Length), or None."""
    if resp.status == 206:
        total = (resp.headers.get("Content-Range") or "").rpartition("/")[2]
        return int(total) if total.isdigit() else None
    length = resp.headers.get("Content-Length") or ""
    return int(length) if length.isdigit() else None


def _reason(exc):
    """A one-line reason for a network error."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(exc, http.client.IncompleteRead):
        return "connection closed early"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "remote end closed the connection"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the name ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    text = str(exc)
    return text.splitlines()[0][:200] if text else type(exc).__name__


# ---- progress ----

def terminal_size(out):
    """(columns, lines) of the terminal out writes to: its own size, else $COLUMNS and
    $LINES, else 80x24."""
    try:
        size = os.get_terminal_size(out.fileno())
    except (OSError, ValueError, AttributeError):
        size = os.terminal_size((0, 0))
    env = [os.environ.get(name, "") for name in ("COLUMNS", "LINES")]
    return tuple(have or (int(text) if text.isdigit() else 0) or default
                 for have, text, default in zip(size, env, (80, 24)))


class Progress:
    """docker pull's display.  On a terminal ("tty"): a line per layer, redrawn in place, each
    cut to the terminal's width (a line that wraps takes two rows, and the next redraw, going
    up one row per layer, would then leave copies behind); elsewhere ("lines"): a plain line
    per state change, no control sequences; nothing with "quiet".  mode None: "tty" if out
    is a terminal, else "lines"."""

    def __init__(self, mode=None, out=sys.stdout):
        self.mode = mode or ("tty" if out.isatty() else "lines")
        self.out = out
        self.rows, self.order = {}, []
        self.drawn, self.last = 0, 0.0  # layer lines on the screen, above the cursor
        self.lock = threading.Lock()

    def say(self, text):
        """A line of its own, below the layer lines: those are final by then (docker's
        messages without a layer end the redrawn block too).  Printed whole, never cut:
        it is not redrawn, and a cut digest is of no use."""
        if self.mode == "quiet":
            return
        with self.lock:
            if self.mode == "tty" and self.order:
                self._redraw()
            self.rows, self.order, self.drawn = {}, [], 0
            print(text, file=self.out, flush=True)

    def set(self, key, status, current=None, total=None):
        if self.mode == "quiet":
            return
        with self.lock:
            if key not in self.rows:
                self.order.append(key)
            changed = (self.rows.get(key) or (None,))[0] != status
            self.rows[key] = (status, current, total)
            if self.mode == "lines":
                if changed:
                    print(f"{key}: {status}", file=self.out, flush=True)
            elif changed or time.monotonic() - self.last > 0.1:
                self._redraw()

    def _redraw(self):
        columns, rows = terminal_size(self.out)
        # The cursor cannot go above the screen's top: lines that scrolled out of it stay as
        # they were last drawn.
        up = min(self.drawn, rows - 1)
        text = f"\x1b[{up}A" if up else ""
        for key in self.order[self.drawn - up:]:
            # one column short of the width: some terminals wrap as soon as the last is written
            text += f"\r\x1b[2K{self.line(key, columns - 1)}\n"
        self.out.write(text)
        self.out.flush()
        self.drawn = len(self.order)
        self.last = time.monotonic()

    def line(self, key, width):
        """A layer's line in at most width characters: docker's bar when there is room for
        one of at least 10 columns (at most 50), else only the numbers."""
        status, current, total = self.rows[key]
        line = f"{key}: {status}"
        if current is not None and total:
            numbers = f"{human_size(current, 4)}/{human_size(total, 4)}"
            bar_width = min(50, width - len(line) - len(numbers) - 4)  # " [", "] "
            if bar_width >= 10:
                filled = min(bar_width, int(bar_width * current / total))
                bar = "=" * max(filled - 1, 0) + (">" if filled < bar_width else "=")
                line += f" [{bar:<{bar_width}}] {numbers}"
            else:
                line += f" {numbers}"
        return line[:width]


# ---- pull ----

def resolve(registry, ref, want):
    """The platform's manifest: (bytes, dict, media type, digest, digest of what ref names)."""
    body, doc, media_type, digest = registry.manifest(ref.reference, ref.name)
    top_digest = digest
    if media_type in INDEX_TYPES:
        desc = choose_manifest(doc, want, ref.name)
        body, doc, media_type, digest = registry.manifest(desc["digest"], ref.name)
        if media_type in INDEX_TYPES:
            raise PullError(f"{ref.name}: nested indexes are not supported")
        if desc.get("mediaType") and desc["mediaType"] != media_type:
            raise PullError(f"{ref.name}: the index and the manifest disagree on its type")
    return body, doc, media_type, digest, top_digest


DOCKER_TO_OCI = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip":
        "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar": "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.docker.container.image.v1+json": "application/vnd.oci.image.config.v1+json",
}


def to_oci(manifest):
    """A Docker schema2 manifest as the equivalent OCI manifest (same config and layer blobs,
    as skopeo converts it): an OCI layout lists only OCI manifests, or skopeo and umoci
    can't read it."""
    def convert(desc):
        return {**desc, "mediaType": DOCKER_TO_OCI.get(desc.get("mediaType"),
                                                       desc.get("mediaType"))}
    oci = {"schemaVersion": 2, "mediaType": mc.OCI_MANIFEST,
           "config": convert(manifest["config"]),
           "layers": [convert(layer) for layer in manifest["layers"]]}
    if manifest.get("annotations"):
        oci["annotations"] = manifest["annotations"]
    return json.dumps(oci, indent=2).encode()


def check_descriptor(desc, name):
    """A manifest's or an index's descriptor: an object, its digest sha256's (what is
    fetched by it is checked against it: a tag there would be fetched unchecked), its size
    a count, its media type and platform what they should be."""
    if not isinstance(desc, dict) or not isinstance(desc.get("digest"), str):
        raise PullError(f"{name}: manifest has a malformed descriptor")
    if not mc.ref_patterns()["sha256"].match(desc["digest"]):
        raise PullError(f"{name}: unsupported or malformed digest {desc['digest'][:80]!r}")
    if not isinstance(desc.get("size", 0), int) or desc.get("size", 0) < 0:
        raise PullError(f"{name}: manifest has a malformed size")
    if not isinstance(desc.get("mediaType", ""), str) or \
            not isinstance(desc.get("platform") or {}, dict):
        raise PullError(f"{name}: manifest has a malformed descriptor")


def check_manifest(doc, name):
    config = doc.get("config")
    layers = doc.get("layers")
    if not isinstance(config, dict) or not isinstance(layers, list):
        raise PullError(f"{name}: manifest has no config or no layers")
    for desc in [config] + layers:
        check_descriptor(desc, name)
    for layer in layers:
        media_type = layer.get("mediaType", "")
        if "foreign" in media_type:
            raise PullError(f"{name}: foreign layers (Windows images) are not supported")
        if media_type not in LAYER_TYPES:
            raise PullError(f"{name}: unsupported layer type {media_type!r}")


def familiar(ref):
    """The reference as docker's messages write it: alpine:latest, not
    docker.io/library/alpine:latest."""
    return ref.familiar_repository + (":" + ref.tag if ref.tag else "") + \
        ("@" + ref.digest if ref.digest else "")


def pull(reference, platform=None, store=None, registry_host=None, insecure=False,
         progress=None):
    """Pull reference into the store; return the StoredImage.  An image stored already
    under this reference, with the manifest the registry names now, is up to date: only
    the manifest is fetched."""
    ref = mc.parse_reference(reference)
    want = parse_platform(platform) if platform else host_platform()
    progress = progress or Progress("quiet")
    if not ref.digest and not reference.rpartition("/")[2].count(":"):
        progress.say(f"Using default tag: {ref.tag}")
    store = StoreWriter(store)
    host, scheme = registry_host or ref.api_host, None
    if "://" in host:
        scheme, _, host = host.partition("://")
        if scheme not in ("http", "https"):
            raise PullError(f"--registry {registry_host}: the scheme must be http or https")
    registry = Registry(host.rstrip("/"), ref.repository, insecure, scheme=scheme)
    try:
        store.ensure_layout()
        _pull_into(store, registry, ref, want, platform, progress)
    except OSError as e:  # network errors are PullErrors by now: this is the store's disk
        where = f" ({e.filename})" if e.filename else ""
        raise PullError(f"image store {store.path}: {e.strerror or e}{where}") from None
    finally:
        registry.http.close()
    return mc.find_image(ref.name, store)


def _pull_into(store, registry, ref, want, platform, progress):
    with store.lock(True, blocking=False) as alone:
        if alone:  # nobody else is using the store: leftovers of killed pulls can go
            for name in os.listdir(store.tmp_dir):
                mc.remove_tree(os.path.join(store.tmp_dir, name))
    with store.lock(False):  # shared: other pulls may run, rmi waits for us
        progress.say(f"{ref.tag or ref.digest}: Pulling from {ref.repository}")
        manifest_bytes, manifest, media_type, pulled, top = resolve(registry, ref, want)
        check_manifest(manifest, ref.name)
        if media_type == mc.DOCKER_MANIFEST:
            manifest_bytes = to_oci(manifest)
        digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
        config_desc = manifest["config"]
        if store.has_blob(config_desc["digest"]):
            config_bytes = store.read_blob(config_desc["digest"])
        else:
            config_bytes = registry.small_blob(config_desc, MAX_CONFIG, f"{ref.name} config")
        try:
            config = json.loads(config_bytes)
            diff_ids = config["rootfs"]["diff_ids"]
        except (ValueError, KeyError, TypeError, RecursionError):
            raise PullError(f"{ref.name}: image config is malformed") from None
        # what the runtime reads of it, checked before it is stored: a number for an
        # architecture, a list for the config, stored, made the image one that every run
        # failed on (a traceback)
        if not isinstance(diff_ids, list) or not all(
                isinstance(d, str) and mc.ref_patterns()["sha256"].match(d) for d in diff_ids) \
                or not all(isinstance(config.get(k, ""), (str, type(None)))
                           for k in ("os", "architecture", "variant", "created")) \
                or not isinstance(config.get("config", {}), (dict, type(None))):
            raise PullError(f"{ref.name}: image config is malformed")
        layers = manifest["layers"]
        if len(diff_ids) != len(layers):
            raise PullError(f"{ref.name}: config lists {len(diff_ids)} diff_ids for "
                            f"{len(layers)} layers")
        have = (config.get("os", ""), config.get("architecture", ""), config.get("variant"))
        if platform and not platform_matches(have, want):
            raise PullError(f"{ref.name} is for {platform_string(have)}, not "
                            f"{platform_string(want)}")
        if stored_digest(store, ref) == digest:  # its config came from the store: no blob GET
            progress.say(f"Digest: {top}")
            progress.say(f"Status: Image is up to date for {familiar(ref)}")
            return

        work, budget = tempfile.mkdtemp(prefix=f"pull-{os.getpid()}-", dir=store.tmp_dir), None
        fewer_malloc_arenas()
        stop = threading.Event()
        # Layers are independent directories: each is unpacked as soon as it is downloaded,
        # several at once, in processes forked now, before any thread (see UnpackProcesses);
        # in threads when that can no longer be (pull() called by a program with threads).
        processes = pool = unpackers = None
        try:
            if UnpackProcesses.possible():
                try:
                    with handled_signals_blocked():  # a Ctrl-C comes once they are ours
                        processes = UnpackProcesses(PARALLEL_UNPACKS)
                except OSError:  # none to spare (EAGAIN, ENOMEM): threads unpack
                    pass
            pool = Workers(PARALLEL_DOWNLOADS)
            unpackers = Workers(PARALLEL_UNPACKS)
            sources = []   # per layer: a path to read it from once it is there
            downloaded = []
            for layer in layers:
                key = layer["digest"][7:19]
                if store.has_blob(layer["digest"]):
                    progress.set(key, "Already exists")
                    sources.append(store.blob_path(layer["digest"]))
                    continue
                progress.set(key, "Pulling fs layer")
                path = os.path.join(work, layer["digest"][7:])
                downloaded.append((path, layer["digest"]))

                def report(status, n, key=key, total=layer.get("size")):
                    progress.set(key, status, n if status == "Downloading" else None, total)

                def fetch(layer=layer, path=path, key=key, report=report):
                    registry.download(layer, path, report, stop)
                    progress.set(key, "Download complete")
                    return path
                sources.append(pool.submit(fetch))

            def unpack(i, layer, source):
                path = source.result() if isinstance(source, Job) else source
                key = layer["digest"][7:19]
                if stop.is_set() or store.has_layer(diff_ids[i]):
                    return None  # stored by an earlier pull of an image that shares it
                size = os.path.getsize(path)
                return store.unpack_layer(path, diff_ids[i], f"{ref.name} layer {i + 1} ({key})",
                                          work, stop,
                                          lambda n: progress.set(key, "Extracting", n, size),
                                          processes)
            for diff_id in diff_ids:
                store.layer_path(diff_id)  # a malformed diff_id is an error before any work
            unpacked = [unpackers.submit(unpack, i, layer, source)
                        for i, (layer, source) in enumerate(zip(layers, sources))]
            for future in unpacked:  # the first failure, in layer order, is the one told
                future.result()

            plat = {"os": have[0], "architecture": have[1], "variant": have[2]}
            descriptor = {"mediaType": mc.OCI_MANIFEST, "digest": digest,
                          "size": len(manifest_bytes),
                          "platform": {k: v for k, v in plat.items() if v},
                          "annotations": {mc.ANNOTATION_PULLED_DIGEST: pulled}}
            store.commit(ref.name, descriptor, diff_ids, [f.result() for f in unpacked],
                         downloaded, ((config_desc["digest"], config_bytes),
                                      (digest, manifest_bytes)),
                         lambda i: progress.set(layers[i]["digest"][7:19], "Pull complete"))
        except BaseException as e:  # an error, or Ctrl-C in the main thread: the others stop
            stop.set()
            registry.http.cancel()
            if processes is not None:
                processes.kill()
            if isinstance(e, KeyboardInterrupt):
                budget = INTERRUPTED_CLEANUP
            raise
        finally:
            try:
                for workers in (pool, unpackers):
                    if workers is not None:
                        workers.shutdown()
                if processes is not None:
                    processes.close()
            finally:
                remove_work(work, budget)
        progress.say(f"Digest: {top}")
        progress.say(f"Status: Downloaded newer image for {familiar(ref)}")


def fewer_malloc_arenas():
    """glibc gives each thread that allocates a malloc arena of its own, where what it frees
    stays for its next allocations: the eight threads of a pull held 10 MiB more in theirs
    than in two arenas shared, for no measurable speed (their blocks are few and large)."""
    try:
        mc.libc().mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass  # not glibc: musl's allocator has no arenas per thread


class Job:
    """A call given to Workers; result() waits for its value or raises its exception."""

    def __init__(self, fn, args):
        self.fn, self.args, self.done = fn, args, threading.Event()
        self.value = self.error = None

    def result(self):
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.value


class Workers:
    """Threads that take Jobs in the order given: what a pull needs of concurrent.futures'
    ThreadPoolExecutor, which imports logging (0.85 MiB of a pull's memory).

    They start with every signal that has a Python handler blocked, so that the kernel gives
    those to the main thread, whose wait for a Job they interrupt: its handler runs at once
    (Ctrl-C's KeyboardInterrupt). A signal that another thread takes waits for the main
    thread's next bytecode, and CPython (3.11) can miss it while the workers hold the
    interpreter: Ctrl-C was then lost until the pull ended."""

    def __init__(self, count):
        self.jobs, self.stopping = queue.SimpleQueue(), False
        with handled_signals_blocked():  # what the threads inherit
            self.threads = [threading.Thread(target=self._work, daemon=True)
                            for _ in range(count)]
            for t in self.threads:
                t.start()

    def submit(self, fn, *args):
        job = Job(fn, args)
        self.jobs.put(job)
        return job

    def _work(self):
        while (job := self.jobs.get()) is not None:
            try:
                if self.stopping:
                    raise PullError("cancelled")
                job.value = job.fn(*job.args)
            except BaseException as e:
                job.error = e
            finally:
                job.done.set()

    def shutdown(self):
        """Cancel the jobs not begun, and wait for the others."""
        self.stopping = True
        for _ in self.threads:
            self.jobs.put(None)
        for t in self.threads:
            t.join()


def remove_work(work, budget=None):
    """Remove a pull's work directory.  With a budget (seconds; Ctrl-C's answer must not wait
    for thousands of unlinks in half-unpacked layers), stop once it is spent: the rest stays
    in tmp/, referenced by nothing, and the next pull removes it as it does a killed pull's."""
    if budget is None:
        return mc.remove_tree(work)
    deadline = time.monotonic() + budget
    try:
        for top, dirs, files in os.walk(work, topdown=False):
            for name in files + dirs:  # bottom up: the directories are empty by now
                path = os.path.join(top, name)
                (os.rmdir if name in dirs and not os.path.islink(path) else os.unlink)(path)
            if time.monotonic() > deadline:
                return
        os.rmdir(work)
    except OSError:
        pass  # left for the next pull, as the rest


def stored_digest(store, ref):
    """The digest of the manifest that ref names in the store, if it is there whole."""
    try:
        return mc.find_image(ref.name, store).digest
    except mc.Error:
        return None


def parser(prog="pull.py"):
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    ap.add_argument("--platform", help="OS/ARCH[/VARIANT] to pull (default: this machine's)")
    ap.add_argument("--store", help="image store directory (default: $MINICONTAINER_STORE or "
                    "images/ beside minicontainer.py)")
    ap.add_argument("-q", "--quiet", action="store_true",
                    help="print no progress, only the image's full reference (as docker)")
    ap.add_argument("--registry", metavar="[SCHEME://]HOST[:PORT]",
                    help="fetch from this registry or mirror instead of the reference's "
                    "(https:// or http:// chooses the protocol, loopback's too)")
    ap.add_argument("--insecure", action="store_true",
                    help="speak plain http (always done for registries on loopback)")
    ap.add_argument("reference", metavar="REF")
    return ap


def main(argv=None):
    return run(parser().parse_args(argv))


def run(args):
    """Pull as the command line asked (args from parser()); the exit status."""
    mc.unwind_on_signals()  # SIGTERM (timeout's, systemd's) undoes what it began, as Ctrl-C
    try:
        image = pull(args.reference, args.platform, args.store, args.registry, args.insecure,
                     Progress("quiet" if args.quiet else None))
    except Error as e:
        print(f"pull: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the store's disk: full, read-only, not ours...
        where = f": {e.filename}" if e.filename else ""
        print(f"pull: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except mc.Signalled as e:
        print("pull: terminated", file=sys.stderr)
        return 128 + e.signum
    except KeyboardInterrupt:
        print("pull: interrupted", file=sys.stderr)
        return 130
    print(image.name)  # last, whole: what docker prints, and what -q leaves
    return 0


if __name__ == "__main__":
    sys.exit(main())
