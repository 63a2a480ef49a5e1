#!/usr/bin/env python3
"""Store a root filesystem (a directory or a tarball) as an image, as `docker import` does.

    python3 tools/import_image.py [--store DIR] [--cmd CMD] SOURCE NAME[:TAG]

The image is one gzip layer with a config and an OCI manifest, committed to the store by
store_writer.py as pull.py's images are, so `minicontainer.py run NAME` can run it. The demo uses
it for its local image when Docker Hub cannot be reached.
"""
import argparse
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import minicontainer as mc  # noqa: E402
from store_writer import StoreWriter  # noqa: E402

ARCH = mc.OCI_ARCH.get(os.uname().machine, os.uname().machine)


def layer_from(source):
    """The layer as gzip bytes: a tarball is taken as it is (gzipped if plain), a directory
    is archived with numeric owners and paths starting with ./ as in Alpine's tarballs."""
    if os.path.isdir(source):
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
            t.add(source, arcname=".", filter=_numeric)
        data = raw.getvalue()
    else:
        with open(source, "rb") as f:
            data = f.read()
    if data[:2] == b"\x1f\x8b":
        try:
            return data, gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as e:  # cut short, or no gzip after all
            raise mc.Error("%s: not a whole gzip file (%s)" % (source, e)) from None
    return gzip.compress(data, 6, mtime=0), data


def _numeric(info):
    info.uname = info.gname = ""
    return info


def import_image(source, name, store=None, cmd=("/bin/sh",)):
    ref = mc.parse_reference(name)
    store = StoreWriter(store)
    store.ensure_layout()
    layer, tar = layer_from(source)
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    diff_id = "sha256:" + hashlib.sha256(tar).hexdigest()
    config = json.dumps({
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "architecture": ARCH, "os": "linux",
        "config": {"Env": ["PATH=" + mc.DEFAULT_PATH], "Cmd": list(cmd)},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "import_image.py %s" % os.path.basename(source)}],
    }, sort_keys=True).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": mc.OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest, "size": len(layer)}],
    }, sort_keys=True).encode()
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    with store.lock(False):
        work = tempfile.mkdtemp(prefix="import-", dir=store.tmp_dir)
        try:
            unpacked = None if store.has_layer(diff_id) else \
                store.unpack_layer(io.BytesIO(layer), diff_id, name, work)
            store.commit(ref.name, {"mediaType": mc.OCI_MANIFEST, "digest": digest,
                                    "size": len(manifest),
                                    "platform": {"os": "linux", "architecture": ARCH}},
                         [diff_id], [unpacked],
                         documents=((layer_digest, layer), (config_digest, config),
                                    (digest, manifest)))
        finally:
            mc.remove_tree(work)
    return mc.find_image(ref.name, store.path)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="import_image.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", help="image store (default: $MINICONTAINER_STORE or images/)")
    ap.add_argument("--cmd", default="/bin/sh", help="the image's default command")
    ap.add_argument("source", help="a root filesystem directory or tarball")
    ap.add_argument("name", help="NAME[:TAG] to store it under")
    a = ap.parse_args(argv)
    try:
        if not os.path.exists(a.source):
            raise mc.Error("%s does not exist" % a.source)
        image = import_image(a.source, a.name, a.store, a.cmd.split())
    except mc.Error as e:
        print("import_image: %s" % e, file=sys.stderr)
        return 1
    except OSError as e:  # an unreadable source, a store it may not write...
        print("import_image: %s%s" % (e.strerror or e, ": " + e.filename if e.filename
                                      else ""), file=sys.stderr)
        return 1
    print("%s %s" % (image.name, image.digest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
