"""cgroups: limits written for real in the host's own layout (v1 files on a v1 or hybrid host,
v2 files on a v2 one), v2 file formats on a fake tree, and the v2 code for real on the host's
cgroup2 mount (on a hybrid host through MINICONTAINER_CGROUP2): membership, cgroup.freeze,
the eBPF device filter, the error for a missing controller, and what a container sees at
/sys/fs/cgroup (its own cgroup namespace, docker's default on v2)."""
import json
import os
import struct
import subprocess
import sys
import time

import pytest

import minicontainer as mcmod
from conftest import (host_block_device, mc, mc_argv, mc_bg, new_id, ok, one_line_error,
                      set_field, wait_for, write_bundle)

pytestmark = [pytest.mark.needs_root, pytest.mark.usefixtures("no_leaks")]


def read(path):
    with open(path) as f:
        return f.read().strip()


@pytest.fixture
def created(busybox_rootfs, state_root, tmp_path):
    """created(config_edit) -> a container created through the API (not started)."""
    made = []

    def create(edit=None, args=("sleep", "1000")):
        config = mcmod.default_spec(rootfs=busybox_rootfs, args=list(args))
        if edit:
            edit(config)
        c = mcmod.Container.create(new_id(), config, str(tmp_path), root=state_root,
                                   stdin_null=True)
        made.append(c)
        return c
    yield create
    for c in made:
        if os.path.isdir(c.dir):
            c.destroy()


# ---- the host's layout, for real ----

def test_limits_are_written_in_the_hosts_formats(created, cgroups):
    cgroups.need("memory", "cpu", "cpuset", "pids")
    memory = {"limit": 32 << 20, "swap": 64 << 20, "reservation": 16 << 20}
    if not cgroups.unified:
        memory["swappiness"] = 10  # v1 only

    def edit(config):
        config["linux"]["resources"].update(
            memory=memory, pids={"limit": 42},
            cpu={"shares": 512, "quota": 50000, "period": 200000, "cpus": "0", "mems": "0"})
    c = created(edit)
    path = "/minicontainer/" + c.id
    assert c.cgroup.path == path
    if cgroups.unified:
        expected = {("memory", "memory.max"): str(32 << 20),
                    ("memory", "memory.low"): str(16 << 20),
                    ("cpu", "cpu.weight"): "20",  # 1 + (512 - 2) * 9999 // 262142
                    ("cpu", "cpu.max"): "50000 200000"}
        if os.path.exists(os.path.join(cgroups.dir("memory", path), "memory.swap.max")):
            expected["memory", "memory.swap.max"] = str(32 << 20)  # v2 counts swap alone
    else:
        expected = {("memory", "memory.limit_in_bytes"): str(32 << 20),
                    ("memory", "memory.memsw.limit_in_bytes"): str(64 << 20),
                    ("memory", "memory.soft_limit_in_bytes"): str(16 << 20),
                    ("memory", "memory.swappiness"): "10",
                    ("cpu", "cpu.shares"): "512",
                    ("cpu", "cpu.cfs_quota_us"): "50000",
                    ("cpu", "cpu.cfs_period_us"): "200000"}
        if not os.path.exists(os.path.join(cgroups.dir("memory", path),
                                           "memory.memsw.limit_in_bytes")):
            del expected["memory", "memory.memsw.limit_in_bytes"]  # no swap accounting
    expected.update({("cpuset", "cpuset.cpus"): "0", ("cpuset", "cpuset.mems"): "0",
                     ("pids", "pids.max"): "42"})
    assert {k: cgroups.read(k[0], path, k[1]) for k in expected} == expected
    if not cgroups.unified:  # on v2 the device rules are an eBPF program (tests below)
        devices = cgroups.read("devices", path, "devices.list").splitlines()
        assert "a *:* rwm" not in devices
        for rule in ("c 1:3 rwm", "c 1:5 rwm", "c 1:9 rwm", "c 136:* rwm", "b *:* m",
                     "c *:* m"):
            assert rule in devices, devices
    # the init is a member of every hierarchy (on a hybrid host, of the v2 one for
    # membership only), and of nothing else
    dirs = set(c.cgroup.dirs())
    assert dirs == {cgroups.dir(ctrl, path) for ctrl in cgroups.v1} | \
        ({cgroups.v2 + path} if cgroups.v2 else set())
    for d in dirs:
        assert read(d + "/cgroup.procs").split() == [str(c.pid)], d
    assert cgroups.member(path, c.pid)


def test_unlimited_values(created, cgroups):
    cgroups.need("memory", "cpu", "pids")

    def edit(config):
        config["linux"]["resources"].update(memory={"limit": -1}, pids={"limit": 0},
                                            cpu={"quota": -1})
    c = created(edit)
    path = "/minicontainer/" + c.id
    assert cgroups.read("pids", path, "pids.max") == "max"
    if cgroups.unified:
        assert cgroups.read("cpu", path, "cpu.max") == "max 100000"
        assert cgroups.read("memory", path, "memory.max") == "max"
    else:
        assert cgroups.read("cpu", path, "cpu.cfs_quota_us") == "-1"
        assert int(cgroups.read("memory", path, "memory.limit_in_bytes")) > 1 << 60


def test_memory_flags_of_run(busybox_rootfs, state_root, cgroups):
    cgroups.need("memory")
    # v1 counts memory+swap (OCI's swap, docker's --memory-swap), v2 swap alone
    swap = cgroups.inside("memory", "memory.swap.max" if cgroups.unified else
                          "memory.memsw.limit_in_bytes")
    r = mc("run", "--rm", "--name", new_id(), "--rootfs", busybox_rootfs, "-m", "48m",
           "--memory-swap", "96m", "--", "sh", "-c",
           "cat %s; cat %s || echo no-swap-accounting" % (
               cgroups.inside("memory", "memory.max" if cgroups.unified else
                              "memory.limit_in_bytes"), swap), state_root=state_root)
    out = ok(r).split()
    if out[1:] == ["no-swap-accounting"]:
        pytest.skip("no swap accounting on this kernel: %s" % r.stderr.strip())
    assert out == [str(48 << 20), str(48 << 20 if cgroups.unified else 96 << 20)], r.stderr
    # docker's default: swap as much again as memory
    r = mc("run", "--rm", "--name", new_id(), "--rootfs", busybox_rootfs, "-m", "48m", "--",
           "cat", swap, state_root=state_root)
    assert r.stdout.split() == [str(48 << 20 if cgroups.unified else 96 << 20)], r.stderr


def test_cgroup_parent_and_cgroups_path(busybox_rootfs, state_root, tmp_path, cgroups):
    parent = new_id("parent")
    cid = new_id()
    # seen from the host: inside, a cgroup namespace (v2) would show "/"
    rc, _, err = mc_bg("run", "-d", "--name", cid, "--cgroup-parent", parent, "--rootfs",
                       busybox_rootfs, "--", "sleep", "1000", state_root=state_root)
    assert rc == 0, err
    pid = json.loads(ok(mc("state", cid, state_root=state_root)))["pid"]
    assert cgroups.member("/%s/%s" % (parent, cid), pid)
    ok(mc("delete", "-f", cid, state_root=state_root))
    assert not cgroups.exists(parent)  # made for it, removed after it
    # linux.cgroupsPath in a bundle (no cgroup namespace: the path shows inside)
    path = "/%s/nested/leaf" % new_id("path")
    b = write_bundle(tmp_path, ["cat", "/proc/self/cgroup"], set_field("linux.cgroupsPath", path),
                     busybox_rootfs)
    r = mc("run", "-b", b, new_id(), state_root=state_root)
    assert r.returncode == 0, r.stderr
    assert cgroups.member(path, text=r.stdout), r.stdout
    assert not cgroups.exists(path.split("/")[1])


def test_missing_controller_and_unsupported_file_on_v1(busybox_rootfs, tmp_path, state_root,
                                                       cgroups):
    if cgroups.unified:
        pytest.skip("v1 and hybrid hosts only (v2: test_v2_missing_controller_is_an_error)")
    cases = [({"memory": {"limit": 1 << 20, "swappiness": 101}}, "is not from 0 to 100")]
    if not cgroups.has("net_cls"):
        cases.append(({"network": {"classID": 0x100001}},
                      "cgroup controller net_cls is not available"))
    for resources, words in cases:
        b = write_bundle(tmp_path, ["true"], lambda c: c["linux"]["resources"].update(resources),
                         busybox_rootfs)
        r = mc("run", "-b", b, new_id(), state_root=state_root)
        assert words in one_line_error(r)


# ---- v2 formats, on a fake tree ----

def fake_v2(tmp_path, controllers="cpu cpuset io memory pids hugetlb"):
    root = tmp_path / "cg2"
    (root / "t").mkdir(parents=True)
    (root / "cgroup.controllers").write_text(controllers + "\n")
    cg = mcmod.Cgroup("/t", v1={}, v2=str(root))
    assert cg.unified and cg.v2 == str(root / "t")
    return cg, root / "t"


def test_v2_formats(tmp_path):
    cg, d = fake_v2(tmp_path)
    cg.apply({"memory": {"limit": 64 << 20, "swap": 128 << 20, "reservation": 1 << 20},
              "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "cpus": "0-1",
                      "mems": "0"},
              "pids": {"limit": 42},
              "blockIO": {"weight": 500,
                          "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1000}]},
              "hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}],
              "unified": {"memory.high": "max"}})
    files = {p.name: p.read_text() for p in d.iterdir()}
    assert files == {
        "memory.max": str(64 << 20),
        "memory.swap.max": str(64 << 20),  # v2 counts swap alone, OCI memory+swap
        "memory.low": str(1 << 20),
        "cpu.weight": "39",  # 1 + (1024 - 2) * 9999 // 262142, as runc converts shares
        "cpu.max": "50000 100000",
        "cpuset.cpus": "0-1",
        "cpuset.mems": "0",
        "pids.max": "42",
        "io.weight": "4950",
        "io.max": "8:0 rbps=1000",
        "hugetlb.2MB.max": str(4 << 20),
        "memory.high": "max",
    }


@pytest.mark.parametrize("resources, expected", [
    ({"memory": {"limit": -1, "swap": -1}}, {"memory.max": "max", "memory.swap.max": "max"}),
    ({"cpu": {"quota": -1}}, {"cpu.max": "max 100000"}),
    ({"cpu": {"period": 50000}}, {"cpu.max": "max 50000"}),
    ({"cpu": {"shares": 2}}, {"cpu.weight": "1"}),
    ({"cpu": {"shares": 262144}}, {"cpu.weight": "10000"}),
    ({"pids": {"limit": 0}}, {}),  # 0 leaves it as it is (as runc; engines' updates send 0)
    ({"memory": {"limit": 0, "reservation": 0}, "cpu": {"shares": 0, "quota": 0}}, {}),
    ({"pids": {"limit": -1}}, {"pids.max": "max"}),
])
def test_v2_edge_values(tmp_path, resources, expected):
    cg, d = fake_v2(tmp_path)
    cg.apply(resources)
    assert {p.name: p.read_text() for p in d.iterdir()} == expected


@pytest.mark.parametrize("resources, message", [
    ({"pids": {"limit": 5}}, "cgroup controller pids is not available"),
    ({"memory": {"limit": 1 << 20}}, "cgroup controller memory is not available"),
    ({"cpu": {"cpus": "0"}}, "cgroup controller cpuset is not available"),
    ({"memory": {"swappiness": 5}}, "not supported on cgroup v2"),
    ({"blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1}]}},
     "cgroup controller io is not available"),
    ({"memory": {"limit": 100 << 20, "swap": 50 << 20}}, "at least the memory limit"),
    ({"memory": {"swap": 50 << 20}}, "cannot limit swap without a memory limit"),
    ({"cpu": {"realtimeRuntime": 1000}}, "realtime time is cgroup v1's"),
    ({"unified": {"../escape": "1"}}, "bad file name"),
])
def test_v2_errors(tmp_path, resources, message):
    controllers = "cpu" if "not available" in message else "cpu memory"
    cg, d = fake_v2(tmp_path, controllers)
    with pytest.raises(mcmod.Error, match=message):
        cg.apply(resources)


# ---- v2, for real on the host's cgroup2 mount ----

@pytest.fixture
def v2_mode(monkeypatch, cgroups):
    """The environment in which the runtime uses v2: a v2 host's own, or on a hybrid host
    its cgroup2 mount as if the host were v2 (where only the controllers there can be used)."""
    if not cgroups.v2:
        pytest.skip("no cgroup2 mount on this host")
    if not cgroups.unified:
        monkeypatch.setenv("MINICONTAINER_CGROUP2", cgroups.v2)
    return dict(os.environ)


def test_hierarchies_hidden_by_a_later_mount_are_not_used(cgroups):
    """cgroup2 mounted over a hybrid host's /sys/fs/cgroup (as bench_run --cgroup v2 does,
    for runc and crun to see a pure v2 host) hides the v1 mounts in it: a v2 host then."""
    if not (cgroups.v2 and cgroups.v1):
        pytest.skip("not a hybrid host")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            mcmod.unshare(mcmod.CLONE_NEWNS)
            mcmod.mount(None, "/", None, mcmod.MS_REC | mcmod.MS_PRIVATE)
            mcmod.mount("cgroup2", "/sys/fs/cgroup", "cgroup2", 0)
            os.write(w, json.dumps(mcmod.cgroup_hierarchies()).encode())
        except BaseException as e:
            os.write(w, repr(e).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        seen = f.read()
    os.waitpid(pid, 0)
    assert json.loads(seen) == [{}, "/sys/fs/cgroup"]


def v2_has(cgroups, controller):
    return controller in read(os.path.join(cgroups.v2, "cgroup.controllers")).split()


def test_v2_membership_and_freeze(v2_mode, created, cgroups):
    c = created(args=["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /dev/shm/n; "
                                  "usleep 20000; done"])
    d = cgroups.v2 + "/minicontainer/" + c.id
    assert c.cgroup.unified and c.cgroup.v2 == d
    assert read(d + "/cgroup.procs").split() == [str(c.pid)]
    assert "0::/minicontainer/" + c.id in read("/proc/%d/cgroup" % c.pid).splitlines()
    for v1 in cgroups.v1.values():  # a hybrid host's v1 hierarchies are left alone
        assert not os.path.exists(v1 + "/minicontainer/" + c.id)
    c.start()
    assert c.exec_result() is None

    def count():
        try:
            return int(read("/proc/%d/root/dev/shm/n" % c.pid) or 0)
        except (OSError, ValueError):
            return 0
    wait_for(lambda: count() > 0, what="the counter")
    c.pause()
    assert c.status() == "paused"
    assert read(d + "/cgroup.freeze") == "1" and "frozen 1" in read(d + "/cgroup.events")
    n = count()
    time.sleep(0.3)  # nothing may happen meanwhile
    assert count() == n
    c.resume()
    assert c.status() == "running" and read(d + "/cgroup.freeze") == "0"
    wait_for(lambda: count() > n, what="the counter to go on")
    stats = c.stats()  # cpu.stat is always there; pids.* only with the pids controller
    assert stats["cpu"]["usage_ns"] > 0
    if v2_has(cgroups, "pids"):
        assert stats["pids"]["current"] >= 1 and stats["pids"]["limit"] is None
    else:
        assert stats["pids"] == {"current": None, "limit": None}
    c.destroy()
    assert not os.path.exists(d)


def test_v2_device_filter_in_a_container(v2_mode, busybox_rootfs, state_root, tmp_path):
    major, minor = host_block_device()
    script = ("cat /dev/null && head -c 3 /dev/zero | wc -c && echo x > /dev/null && "
              "mknod /dev/blk b %s %s && echo made && head -c 512 /dev/blk | wc -c" %
              (major, minor))
    r = mc("run", "--rm", "--name", new_id(), "--rootfs", busybox_rootfs, "--", "sh", "-c", script,
           state_root=state_root, env=v2_mode)
    assert r.stdout.split() == ["3", "made", "0"], r.stderr
    assert "Operation not permitted" in r.stderr
    # a rule that allows reading it (reading only: nothing here may write to a host disk)
    b = write_bundle(tmp_path, ["sh", "-c", script], lambda c: c["linux"]["resources"][
        "devices"].append({"allow": True, "type": "b", "major": int(major), "minor": int(minor),
                           "access": "r"}), busybox_rootfs)
    r = mc("run", "-b", b, new_id(), state_root=state_root, env=v2_mode)
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout.split()[:2] == ["3", "made"]


def test_v2_device_filter_program_denies_what_its_rules_deny(v2_mode, cgroups):
    """The BPF program on its own: a cgroup whose rules deny reading /dev/null (c 1:3)."""
    cg = mcmod.Cgroup("/" + new_id("bpf"), v1={}, v2=cgroups.v2)
    cg.create()
    try:
        rules = [(True, "a", None, None, "rwm"), (False, "c", 1, 3, "r")]
        mcmod.bpf_attach_device_filter(cg.v2, rules)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                cg.join(0)
                results = []
                for path, flags in (("/dev/null", os.O_RDONLY), ("/dev/null", os.O_WRONLY),
                                    ("/dev/zero", os.O_RDONLY)):
                    try:
                        os.close(os.open(path, flags))
                        results.append("ok")
                    except OSError as e:
                        results.append(e.strerror)
                os.write(w, json.dumps(results).encode())
            finally:
                os._exit(0)
        os.close(w)
        out = os.read(r, 1000)
        os.close(r)
        os.waitpid(pid, 0)
        assert json.loads(out) == ["Operation not permitted", "ok", "ok"]
    finally:
        cg.destroy()
    assert not os.path.exists(cg.v2)


def test_a_device_program_the_kernel_refuses_is_told_with_the_verifiers_words():
    """The program is loaded without the verifier's log; when the kernel refuses it, it is
    loaded again with the log, which the error quotes (here: a program that never exits)."""
    mov_r0_1 = struct.pack("<BBhi", 0xB7, 0, 0, 1)  # BPF_ALU64 | BPF_MOV | BPF_K, no exit
    with pytest.raises(mcmod.Error) as e:
        mcmod.bpf_load_device_program(mov_r0_1)
    message = str(e.value)
    assert message.startswith("device filter: BPF_PROG_LOAD: ") and "\n" not in message
    assert "exit" in message or "jmp" in message, message  # "last insn is not an exit or jmp"


@pytest.mark.parametrize("flags, controller", [(["-m", "16m"], "memory"),
                                               (["--pids-limit", "5"], "pids"),
                                               (["--cpus", "0.5"], "cpu")])
def test_v2_missing_controller_is_an_error(v2_mode, busybox_rootfs, state_root, flags,
                                           controller, cgroups):
    if v2_has(cgroups, controller):
        pytest.skip("the host's cgroup2 hierarchy has the %s controller" % controller)
    cid = new_id()
    r = mc("run", "--rm", "--name", cid, "--rootfs", busybox_rootfs, *flags, "--", "true",
           state_root=state_root, env=v2_mode)
    assert one_line_error(r) == "minicontainer: cgroup controller %s is not available" % \
        controller
    assert r.returncode == 125  # docker's run: its own failure
    assert not os.path.exists(cgroups.v2 + "/minicontainer/" + cid)
    # refused by run's check of the config, before the state root is made
    assert not os.path.isdir(state_root) or not os.listdir(state_root)


def test_a_refused_update_changes_nothing(created, state_root, cgroups):
    # memory.limit_in_bytes above memory+swap is refused by the kernel: the pids limit
    # written before it is put back, and state.json keeps the old values.
    v1, _ = mcmod.cgroup_hierarchies()
    if "memory" not in v1 or "pids" not in v1:
        pytest.skip("needs v1 memory and pids controllers")

    def edit(config):
        config["linux"]["resources"].update(memory={"limit": 32 << 20, "swap": 64 << 20},
                                            pids={"limit": 42})
    c = created(edit)
    path = "/minicontainer/" + c.id
    before = read(cgroups.dir("pids", path) + "/pids.max")
    assert before == "42"
    r = mc("update", "--resources", "-", c.id, state_root=state_root,
           input=json.dumps({"pids": {"limit": 7}, "memory": {"limit": 1 << 40, "swap": 1 << 20}}))
    assert "cgroup: cannot write" in one_line_error(r)
    assert read(cgroups.dir("pids", path) + "/pids.max") == "42"
    assert read(cgroups.dir("memory", path) + "/memory.limit_in_bytes") == str(32 << 20)
    assert json.loads(mc("state", c.id, state_root=state_root).stdout)["id"] == c.id
    assert stored_resources(c)["pids"] == {"limit": 42}  # state.json agrees with the kernel
    assert stored_resources(c)["memory"]["limit"] == 32 << 20
    # a value refused before any write (not the kernel's word) changes nothing either
    r = mc("update", "--resources", "-", c.id, state_root=state_root,
           input=json.dumps({"pids": {"limit": 7}, "memory": {"swappiness": 101}}))
    assert "swappiness: 101 is not from 0 to 100" in one_line_error(r)
    assert read(cgroups.dir("pids", path) + "/pids.max") == "42"
    assert stored_resources(c)["pids"] == {"limit": 42}
    # zeros, as containerd's shim sends them, leave everything as it is
    r = mc("update", "--resources", "-", c.id, state_root=state_root, input=json.dumps(
        {"memory": {"limit": 0, "reservation": 0, "swap": 0, "kernel": 0},
         "cpu": {"shares": 0, "quota": 0, "period": 0}, "blockIO": {"weight": 0}}))
    assert r.returncode == 0, r.stderr
    assert read(cgroups.dir("memory", path) + "/memory.limit_in_bytes") == str(32 << 20)
    # and a real change after that goes through, limit above the old memory+swap included
    r = mc("update", "--resources", "-", c.id, state_root=state_root, input=json.dumps(
        {"memory": {"limit": 128 << 20, "swap": 256 << 20}, "cpu": {"quota": 50000}}))
    assert r.returncode == 0, r.stderr
    assert read(cgroups.dir("memory", path) + "/memory.limit_in_bytes") == str(128 << 20)
    assert read(cgroups.dir("memory", path) + "/memory.memsw.limit_in_bytes") == str(256 << 20)
    assert stored_resources(c)["memory"]["limit"] == 128 << 20


def test_an_update_that_cannot_be_recorded_changes_nothing(busybox_rootfs, tmp_path, cgroups):
    """A full state root: update wrote the cgroup, then could not save state.json (which
    kept the old value). Now it saves first: nothing changes, and it says so."""
    v1, _ = mcmod.cgroup_hierarchies()
    if "pids" not in v1:
        pytest.skip("needs the v1 pids controller")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", small], check=True)
    try:
        root = str(small / "state")
        config = mcmod.default_spec(rootfs=busybox_rootfs, args=["sleep", "1000"])
        config["linux"]["resources"] = {"pids": {"limit": 42}}
        c = mcmod.Container.create(new_id(), config, str(tmp_path), root=root, stdin_null=True)
        try:
            fd = os.open(small / "fill", os.O_WRONLY | os.O_CREAT)  # all the room left
            try:
                while os.write(fd, b"\0" * 4096):
                    pass
            except OSError:
                pass
            finally:
                os.close(fd)
            r = mc("update", "--pids-limit", "7", c.id, state_root=root)
            assert one_line_error(r).endswith("state.json: No space left on device")
            assert read(cgroups.dir("pids", "/minicontainer/" + c.id) + "/pids.max") == "42"
            os.unlink(small / "fill")
            assert stored_resources(c)["pids"] == {"limit": 42}
        finally:
            if os.path.exists(small / "fill"):
                os.unlink(small / "fill")
            c.destroy()
    finally:
        subprocess.run(["umount", small], check=True)


def stored_resources(c):
    with open(os.path.join(c.dir, "state.json")) as f:
        return json.load(f)["config"]["linux"]["resources"]


def test_update_realtime_flags_and_ignored_kernel_memory(created, state_root, cgroups,
                                                       tmp_path):
    # runc's --cpu-rt-period/--cpu-rt-runtime write cpu.rt_period_us/cpu.rt_runtime_us (v1);
    # --kernel-memory* are ignored, with a warning, as runc 1.1 ignores them.
    v1, _ = mcmod.cgroup_hierarchies()
    if "cpu" not in v1:
        pytest.skip("needs the v1 cpu controller")
    c = created()
    d = cgroups.dir("cpu", "/minicontainer/" + c.id)
    if not os.path.exists(d + "/cpu.rt_period_us"):
        pytest.skip("the kernel has no realtime group scheduling")
    r = mc("update", "--cpu-rt-period", "500000", c.id, state_root=state_root)
    assert r.returncode == 0, r.stderr
    assert read(d + "/cpu.rt_period_us") == "500000"
    assert stored_resources(c)["cpu"]["realtimePeriod"] == 500000
    # no realtime time is left to give in the parent: refused, and the period is put back
    r = mc("update", "--cpu-rt-period", "400000", "--cpu-rt-runtime", "1000", c.id,
           state_root=state_root)
    assert "cpu.rt_runtime_us" in one_line_error(r)
    assert read(d + "/cpu.rt_period_us") == "500000"
    assert stored_resources(c)["cpu"]["realtimePeriod"] == 500000
    assert "realtimeRuntime" not in stored_resources(c)["cpu"]
    log = str(tmp_path / "update.log")
    r = mc("--log", log, "update", "--kernel-memory", "64m", "--kernel-memory-tcp", "8m", c.id,
           state_root=state_root)
    assert r.returncode == 0 and r.stderr == ""
    with open(log) as f:
        assert "kernel memory settings are ignored" in f.read()


def test_a_controller_only_cgroup2_has_is_used_there_on_a_hybrid_host(created):
    # hugetlb lives on the cgroup2 mount of this hybrid host (runc then refuses a limit).
    v1, v2 = mcmod.cgroup_hierarchies()
    if "hugetlb" in v1 or not v2 or "hugetlb" not in read(v2 + "/cgroup.controllers").split():
        pytest.skip("needs hugetlb on the cgroup2 hierarchy of a host with v1 controllers")
    size = "2MB"
    if not os.path.exists(os.path.join(v2, "hugetlb.%s.max" % size)) and \
            not os.path.exists("/sys/kernel/mm/hugepages/hugepages-2048kB"):
        pytest.skip("no 2MB huge pages")

    def edit(config):
        config["linux"]["resources"]["hugepageLimits"] = [{"pageSize": size, "limit": 4 << 20}]
        config["linux"]["resources"]["unified"] = {"hugetlb.%s.max" % size: str(8 << 20)}
    c = created(edit)
    assert read(os.path.join(v2, "minicontainer", c.id, "hugetlb.%s.max" % size)) == \
        str(8 << 20)  # the hugepage limit first, then unified's file


def test_v1_block_io(created, cgroups):
    # weights in bfq's files where the kernel has them (as runc picks them), throttles per
    # device
    v1, _ = mcmod.cgroup_hierarchies()
    if "blkio" not in v1:
        pytest.skip("no v1 blkio controller")
    major, minor = (int(n) for n in host_block_device())
    # a device's own weight needs its I/O scheduler to be bfq (or cfq)
    sched = "/sys/dev/block/%d:%d/queue/scheduler" % (major, minor)
    by_device = os.path.exists(sched) and "[bfq]" in read(sched)

    def edit(config):
        config["linux"]["resources"]["blockIO"] = dict({
            "weight": 300,
            "throttleReadBpsDevice": [{"major": major, "minor": minor, "rate": 1 << 20}],
            "throttleWriteIOPSDevice": [{"major": major, "minor": minor, "rate": 100}]},
            **({"weightDevice": [{"major": major, "minor": minor, "weight": 200}]}
               if by_device else {}))
    try:
        c = created(edit)
    except mcmod.Error as e:  # no bfq and no cfq: the kernel has no weights to give
        assert "weight" in str(e) and "not supported by this kernel" in str(e)
        return
    d = cgroups.dir("blkio", "/minicontainer/" + c.id)
    bfq = os.path.exists(d + "/blkio.bfq.weight")
    assert read(d + ("/blkio.bfq.weight" if bfq else "/blkio.weight")).split()[-1] == "300"
    if by_device:
        assert "%d:%d 200" % (major, minor) in read(
            d + ("/blkio.bfq.weight_device" if bfq else "/blkio.weight_device"))
    assert read(d + "/blkio.throttle.read_bps_device") == "%d:%d %d" % (major, minor, 1 << 20)
    assert read(d + "/blkio.throttle.write_iops_device") == "%d:%d 100" % (major, minor)


# ---- /sys/fs/cgroup inside a container ----

SHOW_CGROUP = ("cat /proc/self/cgroup; echo --; cat /sys/fs/cgroup/cgroup.procs; echo --; "
               "find /sys/fs/cgroup -mindepth 1 -type d; echo --; "
               "grep ' /sys/fs/cgroup ' /proc/self/mountinfo; echo --; "
               "mkdir /sys/fs/cgroup/x 2>&1; echo --; ")


def show_cgroup(out):
    """SHOW_CGROUP's output: /proc/self/cgroup's lines, cgroup.procs's pids, the cgroup's
    subdirectories, the /sys/fs/cgroup mount (root, options, fstype), mkdir's complaint, and
    the rest's lines."""
    cg, procs, subdirs, mnt, mkdir, rest = out.split("--\n")
    fields = mnt.split()
    sep = fields.index("-")
    return (cg.splitlines(), sorted(int(p) for p in procs.split()), subdirs.split(),
            (fields[3], fields[5].split(","), fields[sep + 1]), mkdir, rest.splitlines())


@pytest.mark.parametrize("userns", [False, True], ids=["root", "userns"])
def test_docker_like_run_on_v2_sees_only_its_own_cgroup(v2_mode, cgroups, walkable, state_root,
                                                        userns):
    """docker's default on v2 (--cgroupns private): /sys/fs/cgroup is the container's own
    cgroup, with its limits; /proc/self/cgroup says "0::/". With --userns the cgroup namespace
    belongs to the container's user namespace, which lets its root mount cgroup2."""
    flags, files, expected = [], [], []
    for flag, controller, name, value in (
            (["-m", "48m"], "memory", "memory.max", str(48 << 20)),
            (["--cpus", "0.5"], "cpu", "cpu.max", "50000 100000"),
            (["--pids-limit", "20"], "pids", "pids.max", "20")):
        if v2_has(cgroups, controller):  # on a hybrid host: none of these
            flags += flag
            files.append(name)
            expected.append(value)
    cid = new_id()
    r = mc("run", "--rm", "--name", cid, "--rootfs", str(walkable / "rootfs"),
           *(["--userns"] if userns else []), *flags, "--", "sh", "-c",
           SHOW_CGROUP + "cat /dev/null " + " ".join("/sys/fs/cgroup/" + f for f in files),
           state_root=state_root, env=v2_mode)
    assert r.returncode == 0, r.stderr
    lines, procs, subdirs, (root, options, fstype), mkdir, limits = show_cgroup(r.stdout)
    assert "0::/" in lines, lines
    assert procs[0] == 1 and len(procs) == 2, procs  # sh (pid 1 here) and cat: nothing else
    assert subdirs == []  # none of the host's tree (init.scope, system.slice...)
    assert (root, fstype) == ("/", "cgroup2") and "ro" in options, (root, options)
    assert "Read-only file system" in mkdir
    assert limits == expected


@pytest.mark.parametrize("setup", ["cgroupns", "host cgroupns", "userns"])
def test_v2_init_born_in_its_cgroup(v2_mode, cgroups, walkable, walkable_rootfs, state_root,
                                    setup):
    """With a cgroup namespace, the init is born in its cgroup (clone3's CLONE_INTO_CGROUP:
    no move, whose wait for a grace period was a quarter of a quiet run's time); without
    one, where the init's cgroup2 mount waits for that grace period anyway, it is moved
    there as before. Either way it is there before it runs anything of the container's,
    and no fd of the host's cgroup directory is left to it (runc's CVE-2024-21626). With a
    user namespace, its first child is born there (it moved itself). exec's middle process
    is born in the cgroup in every case."""
    cgroupns = setup == "cgroupns"

    def edit(config):
        if cgroupns:
            config["linux"]["namespaces"].append({"type": "cgroup"})
        if setup == "userns":
            config["linux"]["namespaces"].append({"type": "user"})
            for ids in ("uidMappings", "gidMappings"):
                config["linux"][ids] = [{"containerID": 0, "hostID": 200000, "size": 1000}]
    cid = new_id()
    b = write_bundle(walkable / "bundle", ["sleep", "1000"], edit, walkable_rootfs)
    r = mc_bg("create", "-b", b, cid, state_root=state_root,
              env=dict(v2_mode, MINICONTAINER_TRACE="1"))
    assert r.returncode == 0, r.stderr
    try:
        steps = [line.split()[4] for line in r.stderr.splitlines() if " trace " in line]
        assert "fork" in steps and "ready" in steps, steps
        assert ("join" in steps) is (setup == "host cgroupns"), steps  # a move traces it
        pid = json.loads(ok(mc("state", cid, state_root=state_root)))["pid"]
        d = cgroups.v2 + "/minicontainer/" + cid
        assert read(d + "/cgroup.procs").split() == [str(pid)]
        assert "0::/minicontainer/" + cid in read("/proc/%d/cgroup" % pid).splitlines()
        assert (os.readlink("/proc/%d/ns/cgroup" % pid) != os.readlink("/proc/self/ns/cgroup")
                ) is cgroupns
        # the init, waiting for start: still the runtime's python, its fds those it keeps
        fds = os.listdir("/proc/%d/fd" % pid)
        assert fds
        for fd in fds:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            assert not target.startswith(cgroups.v2), (fd, target)
        ok(mc("start", cid, state_root=state_root, env=v2_mode))
        assert read(d + "/cgroup.procs").split() == [str(pid)]
        # exec's middle process is born there in both cases (it mounts nothing)
        r = mc("exec", cid, "grep", "^0::", "/proc/self/cgroup", state_root=state_root,
               env=dict(v2_mode, MINICONTAINER_TRACE="1"))
        assert r.returncode == 0, r.stderr
        assert r.stdout == ("0::/\n" if cgroupns else "0::/minicontainer/%s\n" % cid)
        assert " join " not in r.stderr and " trace " in r.stderr, r.stderr
    finally:
        ok(mc("delete", "-f", cid, state_root=state_root, env=v2_mode))


def test_v2_clone3_refused_means_fork_and_move(v2_mode, cgroups, bundle, state_root):
    """Where clone3 is refused (a kernel before 5.7; docker's default seccomp profile makes
    it ENOSYS, as here), the init is forked and moved, as before."""
    cid = new_id()
    b = bundle(["grep", "^0::", "/proc/self/cgroup"],
               edit=lambda c: c["linux"]["namespaces"].append({"type": "cgroup"}))
    no_clone3 = """if 1:
        import os, sys
        sys.path.insert(0, %r)
        import minicontainer as mc
        mc.prctl(mc.PR_SET_NO_NEW_PRIVS, 1)
        mc.apply_seccomp({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]})
        os.execv(sys.argv[1], sys.argv[1:])
    """ % os.path.dirname(mcmod.__file__)
    r = subprocess.run([sys.executable, "-I", "-S", "-c", no_clone3, *mc_argv(
        "--debug", "run", "-b", b, cid, state_root=state_root)], capture_output=True,
        text=True, timeout=60, env=dict(v2_mode, MINICONTAINER_TRACE="1"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "0::/\n"
    steps = [line.split()[4] for line in r.stderr.splitlines() if " trace " in line]
    assert "join" in steps, steps
    assert "clone3 into the cgroup: Function not implemented; fork, then move the child" \
        in r.stderr
    assert not os.path.exists(cgroups.v2 + "/minicontainer/" + cid)


def test_fork_into_cgroup_is_a_fork(v2_mode, cgroups, tmp_path):
    """fork_into_cgroup, in a fresh single-threaded interpreter: the child starts in the
    cgroup, Python's fork hooks run on both sides, the child's interpreter works (a thread,
    an import); a directory that is no cgroup v2 gives None and no child."""
    d = cgroups.v2 + "/" + new_id("fork")
    os.mkdir(d)
    code = """if 1:
        import os, sys, threading
        sys.path.insert(0, %r)
        import minicontainer as mc
        seen = []
        os.register_at_fork(before=lambda: seen.append("before"),
                            after_in_parent=lambda: seen.append("parent"),
                            after_in_child=lambda: seen.append("child"))
        assert mc.fork_into_cgroup(%r) is None and seen == ["before", "parent"], seen
        pid = mc.fork_into_cgroup(%r)
        if pid == 0:
            t = threading.Thread(target=seen.append, args=("thread",))
            t.start(); t.join()
            import json
            with open("/proc/self/cgroup") as f:
                mine = [l.strip() for l in f if l.startswith("0::")]
            print(json.dumps([os.getpid(), seen, mine]), flush=True)
            os._exit(7)
        _, status = os.waitpid(pid, 0)
        print(pid, os.waitstatus_to_exitcode(status), seen)
    """ % (os.path.dirname(mcmod.__file__), str(tmp_path), d)
    try:
        out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                             text=True, timeout=60, env=v2_mode)
        assert out.returncode == 0, out.stderr
        child, parent = out.stdout.splitlines()
        pid, seen, mine = json.loads(child)
        assert seen == ["before", "parent", "before", "child", "thread"]
        assert mine == ["0::" + d[len(cgroups.v2):]]
        assert parent == "%d 7 ['before', 'parent', 'before', 'parent']" % pid
    finally:
        os.rmdir(d)


def test_exec_in_a_docker_like_container_on_v2_joins_its_cgroup_namespace(v2_mode, cgroups,
                                                                            busybox_rootfs,
                                                                            state_root):
    cid = new_id()
    rc, _, err = mc_bg("run", "-d", "--name", cid, "--rootfs", busybox_rootfs, "--", "sleep",
                       "1000", state_root=state_root, env=v2_mode)
    assert rc == 0, err
    try:
        r = mc("exec", cid, "sh", "-c", "cat /proc/self/cgroup; echo --; "
               "cat /sys/fs/cgroup/cgroup.procs; echo $$", state_root=state_root, env=v2_mode)
        assert r.returncode == 0, r.stderr
        lines, procs = r.stdout.split("--\n")
        procs = procs.split()
        assert "0::/" in lines.splitlines()
        assert procs[-1] in procs[:-1] and "1" in procs[:-1]  # sh with the init, sleep
        assert os.readlink("/proc/%d/ns/cgroup" % json.loads(ok(mc(
            "state", cid, state_root=state_root)))["pid"]) != os.readlink("/proc/self/ns/cgroup")
    finally:
        ok(mc("delete", "-f", cid, state_root=state_root, env=v2_mode))


def test_v2_parent_with_a_process_of_its_own(v2_mode, cgroups, busybox_rootfs, state_root,
                                            tmp_path):
    """A cgroup parent that holds a process (as a rootless user's delegated cgroup holds the
    runtime): no controller is enabled in it, for threaded ones (cpu, pids) would make it a
    thread root, and the container's cgroup below it one no process may join."""
    parent = new_id("busy")
    d = os.path.join(cgroups.v2, parent)
    os.mkdir(d)
    holder = subprocess.Popen(["sleep", "1000"])
    try:
        with open(os.path.join(d, "cgroup.procs"), "w") as f:
            f.write(str(holder.pid))
        r = mc("run", "--rm", "--cgroup-parent", "/" + parent, "--rootfs", busybox_rootfs,
               "--", "cat", "/proc/self/cgroup", state_root=state_root, env=v2_mode)
        assert r.returncode == 0, r.stderr
        with open(os.path.join(d, "cgroup.subtree_control")) as f:
            assert f.read().split() == []
        with open(os.path.join(d, "cgroup.type")) as f:
            assert f.read() == "domain\n"
        assert os.listdir(d) and not [e for e in os.listdir(d)  # the container's went
                                      if os.path.isdir(os.path.join(d, e))]
        # a limit there: refused in one line that says why
        with open(os.path.join(cgroups.v2, "cgroup.controllers")) as f:
            have = f.read().split()
        limits = {"memory": {"memory": {"limit": 64 << 20}}, "pids": {"pids": {"limit": 50}},
                  "hugetlb": {"hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}]}}
        controller = next((c for c in limits if c in have), None)
        if controller:
            cid = new_id()
            b = write_bundle(tmp_path / "b", ["true"], edit=lambda c: c["linux"].update(
                cgroupsPath="/%s/%s" % (parent, cid), resources=limits[controller]),
                rootfs=busybox_rootfs)
            line = one_line_error(mc("run", "-b", b, cid, state_root=state_root, env=v2_mode))
            assert line == ("minicontainer: cgroup controller %s is not available in /%s/%s: "
                            "/%s does not hand it down (it has processes of its own, which "
                            "cgroup v2 forbids then)" % (controller, parent, cid, parent))
    finally:
        holder.kill()
        holder.wait()
        wait_for(lambda: not _procs(d), 5, "the holder to leave %s" % d)
        os.rmdir(d)


def _procs(d):
    with open(os.path.join(d, "cgroup.procs")) as f:
        return f.read().split()


def test_oci_bundle_on_v2_without_a_cgroup_namespace(v2_mode, cgroups, walkable, state_root):
    """As runc: cgroup2 mounted from the root of the host's cgroup namespace, so the
    container's cgroup is where /proc/self/cgroup says; in a user namespace, which may not
    mount cgroup2 without a cgroup namespace of its own, a bind of the container's cgroup."""
    cid = new_id()
    b = write_bundle(walkable, ["sh", "-c", SHOW_CGROUP + "cat /sys/fs/cgroup/minicontainer/%s/"
                             "cgroup.procs 2>&1" % cid])
    r = mc("run", "-b", b, cid, state_root=state_root, env=v2_mode)
    assert r.returncode == 0, r.stderr
    lines, _, subdirs, (root, options, fstype), mkdir, own = show_cgroup(r.stdout)
    assert "0::/minicontainer/" + cid in lines
    assert (root, fstype) == ("/", "cgroup2") and "ro" in options
    assert "/sys/fs/cgroup/minicontainer/" + cid in subdirs  # the whole hierarchy
    assert "Read-only file system" in mkdir
    assert own == ["1"]  # cat, which sh's last command became
    cid = new_id()
    b = write_bundle(walkable, ["sh", "-c", SHOW_CGROUP])
    r = mc("run", "--userns", "-b", b, cid, state_root=state_root, env=v2_mode)
    assert r.returncode == 0, r.stderr
    lines, procs, subdirs, (root, options, fstype), mkdir, _ = show_cgroup(r.stdout)
    assert "0::/minicontainer/" + cid in lines
    assert (root, fstype) == ("/minicontainer/" + cid, "cgroup2") and "ro" in options
    assert procs[0] == 1 and len(procs) == 2 and subdirs == []
    assert "Read-only file system" in mkdir


def test_oci_bundle_on_v2_with_a_cgroup_namespace_and_a_user_namespace(v2_mode, walkable,
                                                                         state_root):
    def edit(config):
        config["linux"]["namespaces"].append({"type": "cgroup"})
    b = write_bundle(walkable, ["sh", "-c", SHOW_CGROUP], edit)
    r = mc("run", "--userns", "-b", b, new_id(), state_root=state_root, env=v2_mode)
    assert r.returncode == 0, r.stderr
    lines, procs, subdirs, (root, options, fstype), _, _ = show_cgroup(r.stdout)
    assert "0::/" in lines and procs[0] == 1 and len(procs) == 2 and subdirs == []
    assert (root, fstype) == ("/", "cgroup2")  # mounted, not bound


def test_docker_like_run_on_v1_keeps_the_hosts_cgroup_namespace(cgroups, busybox_rootfs,
                                                               state_root):
    """docker's default on v1 and hybrid hosts (--cgroupns host): /proc/self/cgroup names the
    container's cgroup, and /sys/fs/cgroup holds a bind of each hierarchy's directory."""
    if cgroups.unified:
        pytest.skip("v1 and hybrid hosts only")
    cid = new_id()
    r = mc("run", "--rm", "--name", cid, "--rootfs", busybox_rootfs, "--", "sh", "-c",
           "readlink /proc/self/ns/cgroup; cat /proc/self/cgroup; echo --; ls /sys/fs/cgroup",
           state_root=state_root)
    head, listing = ok(r).split("--\n")
    ns, text = head.split("\n", 1)
    assert ns == os.readlink("/proc/self/ns/cgroup")
    assert cgroups.member("/minicontainer/" + cid, text=text), text
    expected = {os.path.basename(m) for m in cgroups.v1.values()}
    assert set(listing.split()) == expected | ({"unified"} if cgroups.v2 else set())
