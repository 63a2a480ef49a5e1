"""Networking: --network none|host|bridge, -p, the lease file, teardown and gc.

All traffic stays on this machine: the bridge (mc0, or a bridge of the test's own) and
loopback. The bridge goes at the end of the module, unless another container still uses it.
"""
import concurrent.futures
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import (leases, links, mc, mc_argv, mc_bg, mountpoints_under, new_id, ok, ours,
                      session_cgroups, wait_for)
from fixtures_registry import free_port

import minicontainer as m

pytestmark = pytest.mark.needs_root

SUBNET = ipaddress.IPv4Network(m.DEFAULT_SUBNET)


def remove_bridge_if_unused(bridge):
    with m._Leases(bridge) as lf:
        all_links = links()
        if bridge not in all_links or lf.leases:
            return
        index = all_links[bridge][0]
        if any(master == index for _, master in all_links.values()):
            return
        with m.Netlink() as nl:
            m.rtm_dellink(nl, bridge)
    if bridge != m.BRIDGE:  # a bridge of one test: its lease file goes too
        forget_lease_file(bridge)


def forget_lease_file(bridge):
    for ext in (".json", ".lock"):
        try:
            os.unlink(os.path.join(m.NETWORK_DIR, bridge + ext))
        except FileNotFoundError:
            pass


@pytest.fixture(scope="module", autouse=True)
def bridge_removed_at_end():
    yield
    remove_bridge_if_unused(m.BRIDGE)


@pytest.fixture
def www(tmp_path):
    d = tmp_path / "www"
    d.mkdir()
    (d / "index.html").write_text("hello from the bridge\n")
    return str(d)


def network_state(state_root, cid):
    with open(os.path.join(state_root, cid, "state.json")) as f:
        return json.load(f)


def fetch(url, tries=100):
    for _ in range(tries):
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.read().decode()
        except OSError:
            time.sleep(0.05)
    raise AssertionError("no answer from %s" % url)


def is_mount(path):
    return path in mountpoints_under(path)


def test_none_has_only_loopback(busybox_rootfs, state_root, no_leaks):
    r = mc("run", "--rm", "--rootfs", busybox_rootfs, "--network", "none", "--",
           "ip", "-o", "link", state_root=state_root)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].split(":")[1].strip() == "lo"
    assert "UP" in lines[0].split("<")[1].split(">")[0].split(",")


def test_default_is_none(busybox_rootfs, state_root, no_leaks):
    r = mc("run", "--rm", "--rootfs", busybox_rootfs, "--", "ip", "-o", "link",
           state_root=state_root)
    assert r.returncode == 0, r.stderr
    assert [line.split(":")[1].strip() for line in r.stdout.strip().splitlines()] == ["lo"]


def test_host_sees_host_interfaces(busybox_rootfs, state_root, no_leaks):
    r = mc("run", "--rm", "--rootfs", busybox_rootfs, "--network", "host", "--", "sh", "-c",
           "readlink /proc/self/ns/net; cat /proc/net/dev", state_root=state_root)
    assert r.returncode == 0, r.stderr
    ns, dev = r.stdout.split("\n", 1)
    # the host's namespace itself (which may have no interface but lo), and so its interfaces
    assert ns == os.readlink("/proc/self/ns/net")
    inside = {line.split(":")[0].strip() for line in dev.splitlines() if ":" in line}
    stable = {n for n in os.listdir("/sys/class/net") if not n.startswith(m.VETH_PREFIX)}
    assert stable <= inside


def test_bridge_address_and_default_route(busybox_rootfs, state_root, no_leaks):
    r = mc("run", "--rm", "--rootfs", busybox_rootfs, "--network", "bridge", "--", "sh", "-c",
           "ip -o -4 addr show eth0; ip route; ip -o -6 addr show eth0 | wc -l; "
           "cat /proc/sys/net/ipv6/conf/eth0/disable_ipv6", state_root=state_root)
    assert r.returncode == 0, r.stderr
    addr = ipaddress.IPv4Interface(r.stdout.split(" inet ")[1].split()[0])
    assert addr.network == SUBNET and addr.ip not in (SUBNET[0], SUBNET[1])
    assert "default via %s dev eth0" % SUBNET[1] in r.stdout
    # IPv4's bridge: no IPv6 on eth0 nor on the bridge, so that no container's router
    # advertisement configures another's address or route, or the host's (a review did so)
    assert r.stdout.split()[-2:] == ["0", "1"]
    with open("/proc/sys/net/ipv6/conf/%s/disable_ipv6" % m.BRIDGE) as f:
        assert f.read().strip() == "1"
    assert ours(state_root) == ({}, [], [])


def test_server_answers_other_container_and_host(busybox_rootfs, state_root, www, no_leaks):
    cid = new_id("web")
    rc, _, err = mc_bg("run", "-d", "--name", cid, "--rootfs", busybox_rootfs,
                       "--network", "bridge", "-v", www + ":/www:ro", "--",
                       "httpd", "-f", "-p", "8080", "-h", "/www", state_root=state_root)
    assert rc == 0, err
    try:
        ip = network_state(state_root, cid)["network"]["ip"]
        assert ipaddress.IPv4Address(ip) in SUBNET
        assert fetch("http://%s:8080/" % ip) == "hello from the bridge\n"  # from the host
        r = mc("run", "--rm", "--rootfs", busybox_rootfs, "--network", "bridge", "--",
               "wget", "-qO-", "http://%s:8080/" % ip, state_root=state_root)
        assert r.returncode == 0, r.stderr
        assert r.stdout == "hello from the bridge\n"
    finally:
        assert mc("delete", "-f", cid, state_root=state_root).returncode == 0
    assert ours(state_root) == ({}, [], [])


def test_bridge_in_a_user_namespace(walkable, state_root, no_leaks):
    """The namespace made for the bridge is the host's: the init joins it before making its
    user namespace. The container's root, unprivileged on the host, serves on port 80 (ports
    are unprivileged in it, as docker makes them) and may not reconfigure the network."""
    www = walkable / "www"
    www.mkdir()
    (www / "index.html").write_text("hello from a user namespace\n")
    os.chmod(www / "index.html", 0o644)
    cid = new_id("uweb")
    rc, _, err = mc_bg("run", "-d", "--name", cid, "--userns", "--rootfs",
                       str(walkable / "rootfs"), "--network", "bridge", "-v",
                       "%s:/www:ro" % www, "--", "httpd", "-f", "-p", "80", "-h", "/www",
                       state_root=state_root)
    assert rc == 0, err
    try:
        pid = network_state(state_root, cid)["pid"]
        inside, outside = open("/proc/%d/uid_map" % pid).read().split()[:2]
        assert inside == "0" and outside != "0"
        assert os.stat("/proc/%d" % pid).st_uid != 0  # not root on the host
        ip = network_state(state_root, cid)["network"]["ip"]
        assert fetch("http://%s:80/" % ip) == "hello from a user namespace\n"
        r = mc("exec", cid, "ip", "link", "add", "d0", "type", "dummy", state_root=state_root)
        assert r.returncode != 0 and "RTNETLINK answers: Operation not permitted" in r.stderr
        # its /sys is a sysfs of its own network namespace, not the host's /sys
        r = mc("exec", cid, "ls", "/sys/class/net", state_root=state_root)
        assert (r.returncode, r.stdout.split()) == (0, ["eth0", "lo"]), r.stderr
    finally:
        assert mc("delete", "-f", cid, state_root=state_root).returncode == 0
    assert ours(state_root) == ({}, [], [])


def test_ports_the_kernel_picks_and_ranges(busybox_rootfs, state_root, www, no_leaks):
    """docker's -p CTRPORT and -p HOSTIP::CTRPORT (a host port the kernel picks, which
    port, ps and inspect then say) and -p A-B:C-D (a range)."""
    cid = new_id("pick")
    low = next(p for p in range(20000, 30000, 7) if all(_free(q) for q in (p, p + 1)))
    rc, _, err = mc_bg("run", "-d", "--name", cid, "--rootfs", busybox_rootfs,
                       "-p", "8080", "-p", "127.0.0.1::8081", "-p", "%d-%d:9090-9091" % (
                           low, low + 1), "-v", www + ":/www:ro", "--",
                       "httpd", "-f", "-p", "8080", "-h", "/www", state_root=state_root)
    assert rc == 0, err
    try:
        ip, port = ok(mc("port", cid, "8080", state_root=state_root)).strip().rsplit(":", 1)
        assert ip == "0.0.0.0" and int(port) > 0
        assert fetch("http://127.0.0.1:%s/" % port) == "hello from the bridge\n"
        assert ok(mc("port", cid, "8081", state_root=state_root)).startswith("127.0.0.1:")
        assert ok(mc("port", cid, "9091", state_root=state_root)) == "0.0.0.0:%d\n" % (
            low + 1)
    finally:
        assert mc("delete", "-f", cid, state_root=state_root).returncode == 0


def test_a_udp_port_in_use_is_refused(busybox_rootfs, state_root, no_leaks):
    """A UDP -p on a port another container publishes, or a host service holds (one with
    SO_REUSEADDR): refused as TCP's are. With SO_REUSEADDR on ours too, both bound, and the
    other's datagrams came to the newer (a review saw a host service's traffic taken)."""
    port = free_port()
    cid = new_id("udp")
    rc, _, err = mc_bg("run", "-d", "--name", cid, "--rootfs", busybox_rootfs, "-p",
                       "%d:53/udp" % port, "--", "sleep", "100", state_root=state_root)
    assert rc == 0, err
    try:
        r = mc("run", "--rm", "--rootfs", busybox_rootfs, "-p", "%d:53/udp" % port, "--",
               "true", state_root=state_root)
        assert r.returncode == 125 and "Address already in use" in r.stderr, r.stderr
    finally:
        assert mc("delete", "-f", cid, state_root=state_root).returncode == 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as host:
        host.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        host.bind(("0.0.0.0", port))
        r = mc("run", "--rm", "--rootfs", busybox_rootfs, "-p", "%d:53/udp" % port, "--",
               "true", state_root=state_root)
        assert r.returncode == 125 and "Address already in use" in r.stderr, r.stderr


def _free(port):
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


def test_published_port_answers_on_host(busybox_rootfs, state_root, www, no_leaks):
    cid, port = new_id("pub"), free_port()
    rc, _, err = mc_bg("run", "-d", "--name", cid, "--rootfs", busybox_rootfs,
                       "-p", "%d:8080" % port, "-v", www + ":/www:ro", "--",
                       "httpd", "-f", "-p", "8080", "-h", "/www", state_root=state_root)
    assert rc == 0, err
    try:
        net = network_state(state_root, cid)["network"]
        # docker's way to a container's address: inspect's Networks
        out = mc("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} "
                 "{{.Gateway}}{{end}} {{json .Config.ExposedPorts}}", cid,
                 state_root=state_root).stdout.split()
        assert out == [net["ip"], str(ipaddress.ip_network(net["subnet"]).network_address + 1),
                       '{"8080/tcp":{}}']
        pid, start = net["forwarder"]
        assert m.process_start_time(pid) == start
        assert fetch("http://127.0.0.1:%d/" % port) == "hello from the bridge\n"
        # A second container may not take the port.
        r = mc("run", "--rm", "--rootfs", busybox_rootfs, "-p", "%d:80" % port, "--", "true",
               state_root=state_root)
        assert r.returncode == 125 and "Address already in use" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    finally:
        assert mc("delete", "-f", cid, state_root=state_root).returncode == 0
    wait_for(lambda: m.process_state(pid) in (None, "Z"), 2, "the forwarder to end")
    with socket.socket() as s:  # the port is free again
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
    assert ours(state_root) == ({}, [], [])


@pytest.mark.parametrize("args, message", [
    (["-p", "80:"], "use [[HOSTIP:]HOSTPORT:]CTRPORT"),  # (-p 80 alone: a port picked)
    (["-p", "8080:80/sctp"], "use [[HOSTIP:]HOSTPORT:]CTRPORT"),
    (["-p", "70000:80"], "ports 1-65535"),
    (["-p", "8080:80", "-p", "8080:81"], "given twice"),
    (["--network", "none", "-p", "8080:80"], "needs --network bridge"),
    (["--network", "host", "--subnet", "10.1.0.0/24"], "only for --network bridge"),
    (["--network", "bridge", "--subnet", "10.1.0.0/31"], "too small"),
    (["--network", "bridge", "--subnet", "nonsense"], "subnet nonsense"),
    (["--network", "wifi"], "invalid choice"),
])
def test_user_errors(busybox_rootfs, state_root, no_leaks, args, message):
    r = mc("run", "--rm", "--rootfs", busybox_rootfs, *args, "--", "true",
           state_root=state_root)
    assert r.returncode != 0
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert ours(state_root) == ({}, [], [])
    assert not os.path.isdir(state_root) or os.listdir(state_root) == []


def test_subnet_exhausted_and_bridge_not_a_bridge(busybox_rootfs, state_root, no_leaks):
    bridge = "mct%d" % (os.getpid() % 100000)
    env = dict(os.environ, MINICONTAINER_BRIDGE=bridge)
    cid = new_id("only")
    try:
        rc, _, err = mc_bg("run", "-d", "--name", cid, "--rootfs", busybox_rootfs,
                           "--network", "bridge", "--subnet", "172.31.78.0/30", "--",
                           "sleep", "30", state_root=state_root, env=env)
        assert rc == 0, err
        assert list(leases(bridge)) == ["172.31.78.2"]
        r = mc("run", "--rm", "--rootfs", busybox_rootfs, "--network", "bridge",
               "--subnet", "172.31.78.0/30", "--", "true", state_root=state_root, env=env)
        assert r.returncode == 125 and "is exhausted" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        r = mc("run", "--rm", "--rootfs", busybox_rootfs, "--network", "bridge",
               "--subnet", "172.31.79.0/24", "--", "true", state_root=state_root, env=env)
        assert r.returncode == 125 and "serves subnet 172.31.78.0/30" in r.stderr, r.stderr
        # another bridge on an overlapping subnet: refused (it would hold the same route)
        other = dict(env, MINICONTAINER_BRIDGE=bridge + "b")
        r = mc("run", "--rm", "--rootfs", busybox_rootfs, "--network", "bridge",
               "--subnet", "172.31.78.0/24", "--", "true", state_root=state_root, env=other)
        assert r.returncode == 125 and r.stderr.strip() == "minicontainer: subnet " \
            "172.31.78.0/24 overlaps 172.31.78.0/30, which bridge %s serves (1 " \
            "containers)" % bridge, r.stderr
        assert sorted(os.listdir(state_root)) == [cid]
    finally:
        mc("delete", "-f", cid, state_root=state_root)
        remove_bridge_if_unused(bridge)
        remove_bridge_if_unused(bridge + "b")
        forget_lease_file(bridge + "b")
    assert leases(bridge) == {} and bridge not in links()
    # A link of that name that is no bridge (a veth: no dummy module everywhere): a one-line
    # error, nothing left.
    with m.Netlink() as nl:
        nl.request(m.RTM_NEWLINK, m._ifinfomsg(),
                   [(m.IFLA_IFNAME, bridge), (m.IFLA_LINKINFO, [(m.IFLA_INFO_KIND, "veth")])],
                   m.NLM_F_CREATE | m.NLM_F_EXCL)
    try:
        r = mc("run", "--rm", "--rootfs", busybox_rootfs, "--network", "bridge", "--", "true",
               state_root=state_root, env=env)
        assert r.returncode == 125 and "is not a bridge" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        assert os.listdir(state_root) == [] and leases(bridge) == {}
    finally:
        with m.Netlink() as nl:
            m.rtm_dellink(nl, bridge)
        forget_lease_file(bridge)


def test_fifty_parallel_starts(busybox_rootfs, state_root, no_leaks):
    before = {n for n in links() if n.startswith(m.VETH_PREFIX)}

    def one(i):
        r = mc("run", "--rm", "--rootfs", busybox_rootfs, "--network", "bridge", "--",
               "ip", "-o", "-4", "addr", "show", "eth0", state_root=state_root, timeout=120)
        assert r.returncode == 0, r.stderr
        return r.stdout.split(" inet ")[1].split("/")[0]

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        addresses = list(pool.map(one, range(50)))
    assert len(set(addresses)) == 50, sorted(addresses)
    assert all(ipaddress.IPv4Address(a) in SUBNET for a in addresses)
    assert ours(state_root) == ({}, [], [])
    assert {n for n in links() if n.startswith(m.VETH_PREFIX)} <= before
    assert not os.path.isdir(state_root) or os.listdir(state_root) == []
    assert session_cgroups() == []


def _start_and_crash(busybox_rootfs, state_root, cid, port, www):
    """`run --rm` of a web server, then SIGKILL to the runtime and to the container's init
    (without --rm the container would be one the user keeps, which gc leaves alone)."""
    proc = subprocess.Popen(mc_argv("run", "--rm", "--name", cid, "--rootfs", busybox_rootfs, "-p",
                                    "%d:8080" % port, "-v", www + ":/www:ro", "--", "httpd", "-f",
                                    "-p", "8080", "-h", "/www", state_root=state_root),
                            stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fetch("http://127.0.0.1:%d/" % port)
    state = network_state(state_root, cid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    os.kill(state["pid"], signal.SIGKILL)
    return state


def test_gc_after_crash_leaves_live_container(busybox_rootfs, state_root, www, no_leaks):
    dead, live, port = new_id("dead"), new_id("live"), free_port()
    rc, _, err = mc_bg("run", "-d", "--name", live, "--rootfs", busybox_rootfs,
                       "--network", "bridge", "--", "sleep", "60", state_root=state_root)
    assert rc == 0, err
    try:
        state = _start_and_crash(busybox_rootfs, state_root, dead, port, www)
        net = state["network"]
        fwd = net["forwarder"][0]
        wait_for(lambda: m.process_state(fwd) in (None, "Z"), 2,
                 "the forwarder to end with the init")
        assert is_mount(net["netns"]) and net["ip"] in leases()
        r = mc("gc", state_root=state_root)
        assert r.returncode == 0, r.stderr
        assert "removed container %s" % dead in r.stdout
        assert not os.path.exists(os.path.join(state_root, dead))
        assert not is_mount(net["netns"]) and net["ip"] not in leases()
        assert net["veth"] not in links()
        assert not [d for d in session_cgroups() if dead in d]
        # The live one is untouched.
        live_net = network_state(state_root, live)["network"]
        assert is_mount(live_net["netns"]) and live_net["ip"] in leases()
        assert live_net["veth"] in links()
        r = mc("exec", live, "ip", "-o", "-4", "addr", "show", "eth0", state_root=state_root)
        assert r.returncode == 0 and live_net["ip"] + "/" in r.stdout
    finally:
        mc("delete", "-f", live, state_root=state_root)
        mc("delete", "-f", dead, state_root=state_root)
    assert ours(state_root) == ({}, [], [])


def test_run_releases_leases_of_dead_containers(busybox_rootfs, state_root, www, no_leaks):
    dead = new_id("dead")
    state = _start_and_crash(busybox_rootfs, state_root, dead, free_port(), www)
    net = state["network"]
    r = mc("run", "--rm", "--rootfs", busybox_rootfs, "--network", "bridge", "--", "true",
           state_root=state_root)
    assert r.returncode == 0, r.stderr
    # run's cheap part: the lease, the namespace and the link go; the rest waits for gc.
    assert net["ip"] not in leases() and not is_mount(net["netns"])
    assert net["veth"] not in links()
    assert os.path.isdir(os.path.join(state_root, dead))
    r = mc("gc", state_root=state_root)
    assert r.returncode == 0 and "removed container %s" % dead in r.stdout
    assert ours(state_root) == ({}, [], [])


@pytest.mark.skipif(not shutil.which("nsenter"), reason="no nsenter")
def test_published_udp_port(busybox_rootfs, state_root, no_leaks):
    """busybox's nc has no -u: the echo server is the host's python in the container's
    network namespace (entered through the file the runtime bind-mounted)."""
    cid, port = new_id("udp"), free_port()
    rc, _, err = mc_bg("run", "-d", "--name", cid, "--rootfs", busybox_rootfs,
                       "-p", "%d:9000/udp" % port, "--", "sleep", "60", state_root=state_root)
    assert rc == 0, err
    echo = None
    try:
        netns = network_state(state_root, cid)["network"]["netns"]
        echo = subprocess.Popen(["nsenter", "--net=" + netns, sys.executable, "-c",
                                 "import socket\n"
                                 "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                                 "s.bind(('0.0.0.0', 9000)); print('ready', flush=True)\n"
                                 "while True:\n"
                                 "    d, a = s.recvfrom(100); s.sendto(b'echo:' + d, a)\n"],
                                stdout=subprocess.PIPE, text=True)
        assert echo.stdout.readline() == "ready\n"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            for word in (b"one", b"two"):
                s.sendto(word, ("127.0.0.1", port))
                assert s.recvfrom(100)[0] == b"echo:" + word
    finally:
        if echo:
            echo.kill()
            echo.wait()
        assert mc("delete", "-f", cid, state_root=state_root).returncode == 0
    assert ours(state_root) == ({}, [], [])


# ---- /etc/hostname, /etc/hosts, /etc/resolv.conf of a container from an image ----

@pytest.fixture(scope="module")
def image_env(image_rootfs, tmp_path_factory):
    """An image of the busybox rootfs in a store of this module's: the environment to run it."""
    import import_image
    store = str(tmp_path_factory.mktemp("etc-store"))
    import_image.import_image(image_rootfs, "etc-test:1", store=store)
    return dict(os.environ, MINICONTAINER_STORE=store)


SHOW_ETC = "cat /etc/hostname; hostname; echo --; cat /etc/hosts; echo --; cat /etc/resolv.conf"


def split_etc(out):
    names, hosts, resolv = out.split("--\n")
    return names.split(), hosts.splitlines(), resolv.splitlines()


def test_image_container_gets_its_etc_files_on_the_bridge(state_root, image_env, no_leaks):
    out = ok(mc("run", "--rm", "--network", "bridge", "--hostname", "web1", "--add-host",
                "gw:host-gateway", "etc-test:1", "sh",
                "-c", "ip -o -4 addr show eth0 | awk '{print $4}'; " + SHOW_ETC,
                state_root=state_root, env=image_env))
    names, hosts, resolv = split_etc(out)
    ip = names[0].split("/")[0]
    assert ipaddress.ip_address(ip) in SUBNET
    assert names[1:] == ["web1", "web1"]
    assert hosts[0] == "127.0.0.1\tlocalhost" and "%s\tweb1" % ip in hosts
    assert hosts[-1] == "%s\tgw" % (SUBNET.network_address + 1)  # host-gateway: the bridge
    servers = [line.split()[1] for line in resolv if line.startswith("nameserver")]
    assert servers and not any(ipaddress.ip_address(s.split("%")[0]).is_loopback
                               for s in servers)
    assert ours(state_root) == ({}, [], [])


def test_dns_flags_and_add_host(state_root, image_env, no_leaks):
    names, hosts, resolv = split_etc(ok(mc("run", "--rm", "--dns", "192.0.2.53", "--dns",
                                           "2001:db8::53", "--dns-search", "corp.example",
                                           "--add-host", "db:192.0.2.7", "--add-host",
                                           "cache:2001:db8::7", "etc-test:1", "sh", "-c", SHOW_ETC,
                                           state_root=state_root, env=image_env)))
    assert names[0] == names[1]  # --network none: the container's own name, no address
    assert hosts[-2:] == ["192.0.2.7\tdb", "2001:db8::7\tcache"]
    assert not any(names[0] in line for line in hosts)
    assert resolv[:3] == ["search corp.example", "nameserver 192.0.2.53",
                          "nameserver 2001:db8::53"]
    assert not any(line.startswith(("search", "domain", "nameserver")) for line in resolv[3:])


def test_network_host_gets_the_hosts_files(state_root, image_env, no_leaks):
    _, hosts, resolv = split_etc(ok(mc("run", "--rm", "--network", "host", "--add-host",
                                       "h:host-gateway", "etc-test:1", "sh", "-c", SHOW_ETC,
                                       state_root=state_root, env=image_env)))
    with open("/etc/hosts") as f:  # and docker's host-gateway: the host, here its loopback
        assert hosts == f.read().splitlines() + ["127.0.0.1\th"]
    host_servers = [line.split()[1] for line in m.host_resolv_conf().splitlines()
                    if line.startswith("nameserver")]
    assert [line.split()[1] for line in resolv if line.startswith("nameserver")] == \
        (host_servers or m.FALLBACK_DNS)


def test_etc_files_are_the_containers_not_the_images(state_root, image_env, tmp_path,
                                                     no_leaks):
    store = image_env["MINICONTAINER_STORE"]
    image = m.find_image("etc-test:1", store)
    before = {name: m.layers_lookup(image.layers, "etc/" + name)
              for name in ("hosts", "hostname", "resolv.conf")}
    before = {k: v and open(v).read() for k, v in before.items()}
    out = ok(mc("run", "--rm", "etc-test:1", "sh", "-c",
                "echo 192.0.2.1 added >> /etc/hosts && tail -n 1 /etc/hosts; "
                "grep -c -E ' /etc/(hosts|hostname|resolv.conf) ' /proc/self/mountinfo",
                state_root=state_root, env=image_env))
    assert out == "192.0.2.1 added\n3\n"
    after = {name: m.layers_lookup(image.layers, "etc/" + name)
             for name in ("hosts", "hostname", "resolv.conf")}
    assert {k: v and open(v).read() for k, v in after.items()} == before
    # --read-only: they are read-only too
    r = mc("run", "--rm", "--read-only", "etc-test:1", "sh", "-c", "echo x >> /etc/hosts",
           state_root=state_root, env=image_env)
    assert r.returncode != 0 and "Read-only file system" in r.stderr
    # a file the user mounts there wins
    mine = tmp_path / "hosts"
    mine.write_text("192.0.2.9 mine\n")
    out = ok(mc("run", "--rm", "-v", "%s:/etc/hosts:ro" % mine, "etc-test:1", "cat", "/etc/hosts",
                state_root=state_root, env=image_env))
    assert out == "192.0.2.9 mine\n"


@pytest.mark.parametrize("args, message", [
    (["--dns", "resolver"], "--dns resolver: not an IP address"),
    (["--add-host", "db"], "--add-host db: use NAME:IP"),
    (["--add-host", "db:not-an-ip"], "use NAME:IP"),
    (["--add-host", "h:host-gateway"], "no network reaches the host (--network none)"),
    (["-p", "8000-8002:80-81"], "ranges of one length"),
    # an IPv6 zone takes any text: a newline in it was another line of the file
    (["--dns", "fe80::1%eth0\nnameserver 6.6.6.6"], "--dns 'fe80::1%eth0\\nnameserver"),
    (["--add-host", "h:fe80::1%x\n6.6.6.6 bank"], "--add-host 'h:fe80::1%x\\n6.6.6.6 bank'"),
    (["-h", "h1\n6.6.6.6 evil"], "is not a hostname"),
    (["-h", "h1 evil"], "is not a hostname"),
    (["--dns-search", ""], "not a domain"),
])
def test_etc_file_flag_errors(state_root, image_env, no_leaks, args, message):
    r = mc("run", "--rm", *args, "etc-test:1", "true", state_root=state_root, env=image_env)
    assert r.returncode != 0, r.stdout
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not os.path.isdir(state_root) or os.listdir(state_root) == []


def test_etc_file_flags_need_an_image(busybox_rootfs, state_root, no_leaks):
    r = mc("run", "--rm", "--rootfs", busybox_rootfs, "--dns", "192.0.2.53", "--", "true",
           state_root=state_root)
    assert r.returncode != 0 and "only for a container from an image" in r.stderr


def test_resolv_conf_drops_loopback_servers():
    host = "# generated\nsearch lan\nnameserver 127.0.0.53\nnameserver ::1\n" \
           "nameserver 10.0.0.2\noptions edns0\n"
    assert m.resolv_conf(host, "bridge") == "search lan\nnameserver 10.0.0.2\noptions edns0\n"
    assert m.resolv_conf(host, "host") == \
        "search lan\nnameserver 127.0.0.53\nnameserver ::1\nnameserver 10.0.0.2\noptions edns0\n"
    only_loopback = "nameserver 127.0.0.1\n"
    assert m.resolv_conf(only_loopback, "none") == "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
    assert m.resolv_conf(host, "bridge", dns=["192.0.2.1"], search=["a.example"]) == \
        "search a.example\nnameserver 192.0.2.1\noptions edns0\n"

