"""Device cgroup rules as engines write them (issue 11 item 8): deny all, then allow lists,
wildcards (a type of "a", a major or minor of -1), subsets of "rwm"; the last rule that
matches decides, on v1 (the devices controller's lists) and on v2 (the eBPF program).

Only the host's block device is used, and only opened to read or made with mknod: nothing
here writes to a disk."""
import os

import pytest

import minicontainer as mcmod
from conftest import host_block_device, mc, new_id, set_field, write_bundle

pytestmark = [pytest.mark.needs_root, pytest.mark.usefixtures("no_leaks")]

V2 = "/sys/fs/cgroup/unified"
SCRIPT = ("mknod /dev/blk b {M} {N} 2>/dev/null && echo made || echo no-mknod; "
          "head -c 1 /dev/blk >/dev/null 2>&1 && echo read || echo no-read; "
          "head -c 1 /dev/zero >/dev/null && echo zero")


def rule(allow, kind="a", major=None, minor=None, access="rwm"):
    r = {"allow": allow, "type": kind, "access": access}
    if major is not None:
        r["major"] = major
    if minor is not None:
        r["minor"] = minor
    return r


@pytest.fixture(params=["v1", "v2"])
def layout(request):
    """The environment that makes the runtime use v1's lists or v2's program."""
    v1, v2 = mcmod.cgroup_hierarchies()
    if request.param == "v1":
        if "devices" not in v1:
            pytest.skip("no v1 devices controller")
        return None
    if "MINICONTAINER_CGROUP2" not in os.environ and v1:
        if not os.path.exists(os.path.join(V2, "cgroup.procs")):
            pytest.skip("no cgroup2 mount")
        return dict(os.environ, MINICONTAINER_CGROUP2=V2)
    return None


# The runtime's defaults (c *:* m, b *:* m and the standard character devices) come after
# the config's rules, as runc adds them: mknod of any device stays allowed, where the kernel
# lets a later rule win.
@pytest.mark.parametrize("rules, v1_expected, v2_expected", [
    # docker's shape: deny all, then allow lists
    ([rule(False)], ["made", "no-read", "zero"], None),
    # a wildcard minor (-1), mknod and read
    ([rule(False), rule(True, "b", "M", -1, "rm")], ["made", "read", "zero"], None),
    # the exact device, mknod only
    ([rule(False), rule(True, "b", "M", "N", "m")], ["made", "no-read", "zero"], None),
    # every block device, then one denied reading: the last match decides on v2; v1 cannot
    # punch a hole in a wildcard exception, so it is refused (as runc refuses it)
    ([rule(False), rule(True, "b", -1, -1, "rwm"), rule(False, "b", "M", "N", "r")],
     "cannot punch a hole", ["made", "no-read", "zero"]),
    # "a" allows everything; a later deny of that major takes it back; the default
    # "b *:* m" after it gives mknod back on v2 (last match), not on v1 (no exact match)
    ([rule(True), rule(False, "b", "M", None, "rwm")], ["no-mknod", "no-read", "zero"],
     ["made", "no-read", "zero"]),
])
def test_device_rules(layout, busybox_rootfs, tmp_path, state_root, rules, v1_expected,
                      v2_expected):
    major, minor = (int(n) for n in host_block_device())
    fill = {"M": major, "N": minor}
    resolved = [dict(r, **{k: fill.get(r[k], r[k]) for k in ("major", "minor") if k in r})
                for r in rules]
    b = write_bundle(tmp_path, ["sh", "-c", SCRIPT.format(M=major, N=minor)],
                     set_field("linux.resources.devices", resolved), busybox_rootfs)
    r = mc("run", "-b", b, new_id(), state_root=state_root, env=layout)
    unified = layout is not None or not mcmod.cgroup_hierarchies()[0]
    expected = (v2_expected or v1_expected) if unified else v1_expected
    if isinstance(expected, str):
        assert r.returncode == 1 and expected in r.stderr, (r.stdout, r.stderr)
        return
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == expected
