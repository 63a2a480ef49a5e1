"""Issue 13: docker's everyday verbs (ps, stop, rm, kill ID..., inspect, wait, top, port,
exec's flags), names and id prefixes, run's --env-file, -l, --init, --privileged, --pull and
--platform, rmi of an image in use, and the Python API (run(), Container.wait(), the
README's snippet)."""
import json
import os
import re
import subprocess
import sys
import time

import pytest

import minicontainer as mc
from conftest import (RUNTIME, mc_argv, mc_bg, mc_create, new_id, ok, one_line_error,
                      wait_for)
from conftest import mc as run_mc
from fixtures_registry import Image, dir_layer, free_port, run_pull

pytestmark = [pytest.mark.needs_root, pytest.mark.usefixtures("no_leaks")]


@pytest.fixture(scope="module")
def base(image_rootfs):
    return dir_layer(image_rootfs)


@pytest.fixture
def image(registry, base):
    """A busybox image in the registry, not yet in the test's store: its reference."""
    name = "cli/" + os.urandom(4).hex()
    registry.client.push_image(name, "v", Image([base], config={
        "Cmd": ["sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "StopSignal": "SIGUSR1"}))
    return f"{registry.host}/{name}:v"


@pytest.fixture
def pulled(image, store):
    r = run_pull("-q", image, store=store)
    assert r.returncode == 0, r.stderr
    return image


def detach(state_root, *args):
    rc, out, err = mc_bg("run", "-d", *args, state_root=state_root)
    assert rc == 0, err
    return out.strip()


def state_of(state_root, cid):
    with open(os.path.join(state_root, cid, "state.json")) as f:
        return json.load(f)


def ps_rows(state_root, *flags):
    lines = ok(run_mc("ps", *flags, state_root=state_root)).splitlines()
    assert re.split(r"\s{3,}", lines[0]) == ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED",
                                             "STATUS", "PORTS", "NAMES"]
    return {line.split()[-1]: line for line in lines[1:]}


# ---- ps, stop, rm, kill, names and prefixes ----

def test_ps_lists_containers_as_docker_does(busybox_rootfs, state_root):
    up, done = new_id("up"), new_id("done")
    detach(state_root, "--rootfs", busybox_rootfs, "--name", up, "--",
           "sh", "-c", "sleep 100; echo a long command line")
    r = run_mc("run", "--rootfs", busybox_rootfs, "--name", done, "--", "sh", "-c", "exit 5",
               state_root=state_root)
    assert r.returncode == 5
    running = ps_rows(state_root)
    assert list(running) == [up]
    assert '"sh -c sleep 100; ec…"' in running[up]  # docker's 20 characters, quoted
    assert re.search(r"   Up (Less than a second|\d+ seconds?)   ", running[up])
    every = ps_rows(state_root, "-a")
    assert set(every) == {up, done}
    code = state_of(state_root, done).get("exit_code")  # written by whoever saw the exit
    assert re.search(r"   Exited%s( .* ago)?   " % (r" \(5\)" if code is not None else ""),
                     every[done]), every[done]
    assert ok(run_mc("ps", "-q", state_root=state_root)).split() == [up[:12]]
    assert ok(run_mc("ps", "-aq", state_root=state_root)).split() == \
        [done[:12], up[:12]]  # the newest first
    data = [json.loads(line) for line in ok(run_mc(  # docker's: an object a line
        "ps", "-a", "--format", "json", state_root=state_root)).splitlines()]
    assert {d["Names"]: d["State"] for d in data} == {up: "running", done: "exited"}
    # runc's `ps ID` is still the container's processes
    assert ok(run_mc("ps", up, state_root=state_root)).split()[:2] == ["PID", "CMD"]
    ok(run_mc("rm", "-f", up, done, state_root=state_root))


def test_stop_a_pid_1_that_ignores_term(busybox_rootfs, state_root):
    cid = new_id("stubborn")
    detach(state_root, "--rootfs", busybox_rootfs, "--name", cid, "--",
           "sh", "-c", "trap '' TERM; while :; do sleep 1; done")
    t = time.monotonic()
    r = run_mc("stop", "-t", "1", cid, state_root=state_root)
    assert ok(r) == cid + "\n"
    assert 1 <= time.monotonic() - t < 5
    assert mc.Container.load(cid, state_root).status() == "stopped"
    assert state_of(state_root, cid)["stopped_by_user"] is True
    ok(run_mc("stop", cid, state_root=state_root))  # stopped already: nothing to do
    ok(run_mc("rm", cid, state_root=state_root))


def test_stop_sends_the_stop_signal_then_waits(busybox_rootfs, state_root):
    a, b = new_id("polite"), new_id("polite")
    for cid in (a, b):
        detach(state_root, "--rootfs", busybox_rootfs, "--name", cid, "--",
               "sh", "-c", "trap 'exit 3' TERM; sleep 100 & wait")
    t = time.monotonic()
    r = run_mc("stop", a, b, state_root=state_root)
    assert ok(r).split() == [a, b]
    assert time.monotonic() - t < 5  # they stopped on TERM, not after 10 s
    ok(run_mc("rm", a, b, state_root=state_root))


def test_rm_refuses_a_running_container_without_f(busybox_rootfs, state_root):
    cid = new_id("rm")
    detach(state_root, "--rootfs", busybox_rootfs, "--name", cid, "--", "sleep", "100")
    r = run_mc("rm", cid, state_root=state_root)
    assert "running" in one_line_error(r) and "rm -f" in r.stderr
    assert mc.Container.load(cid, state_root).status() == "running"
    r = run_mc("rm", "-f", cid, "nosuch", state_root=state_root)
    assert r.returncode == 1 and r.stdout == cid + "\n"
    assert "nosuch does not exist" in r.stderr
    assert not os.path.exists(os.path.join(state_root, cid))


def test_names_and_unique_prefixes(busybox_rootfs, state_root):
    one, two = "pfx-one-" + new_id(), "pfx-two-" + new_id()
    for cid in (one, two):
        detach(state_root, "--rootfs", busybox_rootfs, "--name", cid, "--", "sleep", "100")
    assert "ambiguous" in one_line_error(run_mc("inspect", "pfx-", state_root=state_root))
    assert json.loads(ok(run_mc("inspect", "pfx-o", state_root=state_root)))[0]["Id"] == one
    assert ok(run_mc("exec", "pfx-t", "echo", "in", state_root=state_root)) == "in\n"
    # runc's verbs take exact ids only (engines' contract)
    assert "does not exist" in one_line_error(run_mc("state", "pfx-o", state_root=state_root))
    r = run_mc("kill", "-s", "KILL", "pfx-o", "pfx-t", state_root=state_root)
    assert ok(r).split() == ["pfx-o", "pfx-t"]
    wait_for(lambda: all(mc.Container.load(c, state_root).status() == "stopped"
                         for c in (one, two)), what="the kills")
    ok(run_mc("rm", one, two, state_root=state_root))


def test_exact_id_wins_over_prefix(busybox_rootfs, state_root):
    short = new_id("ex")
    for cid in (short, short + "0"):
        detach(state_root, "--rootfs", busybox_rootfs, "--name", cid, "--", "sleep", "100")
    assert json.loads(ok(run_mc("inspect", short, state_root=state_root)))[0]["Id"] == short
    ok(run_mc("rm", "-f", short, short + "0", state_root=state_root))


def test_kill_keeps_runc_form(busybox_rootfs, state_root):
    cid = new_id("k")
    detach(state_root, "--rootfs", busybox_rootfs, "--name", cid, "--", "sleep", "100")
    r = run_mc("kill", cid, "9", state_root=state_root)  # runc's: ID SIGNAL, prints nothing
    assert ok(r) == ""
    wait_for(lambda: mc.Container.load(cid, state_root).status() == "stopped", what="kill")
    assert "not running" in one_line_error(run_mc("kill", cid, "KILL", state_root=state_root))
    ok(run_mc("rm", cid, state_root=state_root))
    # `kill ID` alone, of a docker-like run's container: docker's (SIGKILL, the name said);
    # of an engine's, runc's SIGTERM (test_lifecycle)
    detach(state_root, "--rootfs", busybox_rootfs, "--name", cid, "--", "sleep", "100")
    assert ok(run_mc("kill", cid, state_root=state_root)) == cid + "\n"
    assert ok(run_mc("wait", cid, state_root=state_root)) == "137\n"  # PID 1 ignores TERM
    ok(run_mc("rm", cid, state_root=state_root))


# ---- inspect, wait, top, port, exec ----

def test_inspect_has_dockers_shape(pulled, state_root, tmp_path):
    cid, port = new_id("insp"), free_port()
    vol = tmp_path / "vol"
    vol.mkdir()
    detach(state_root, "--name", cid, "-l", "tier=web", "-l", "empty", "-m", "64m",
           "--cpus", "1.5", "--pids-limit", "50", "-v", "%s:/data:ro" % vol, "-e", "A=1",
           "-w", "/tmp", "-p", "127.0.0.1:%d:80" % port, pulled, "sleep", "100")
    [info] = json.loads(ok(run_mc("inspect", cid, state_root=state_root)))
    assert info["Id"] == cid and info["Name"] == "/" + cid
    assert info["State"]["Status"] == "running" and info["State"]["Running"] is True
    assert info["State"]["Pid"] == mc.Container.load(cid, state_root).pid
    assert info["Config"]["Image"] == pulled
    assert info["Config"]["Cmd"] == ["sleep", "100"] and info["Config"]["Entrypoint"] is None
    assert info["Config"]["Labels"] == {"tier": "web", "empty": ""}
    assert "A=1" in info["Config"]["Env"] and info["Config"]["WorkingDir"] == "/tmp"
    host = info["HostConfig"]
    assert host["Memory"] == 64 << 20 and host["NanoCpus"] == 1500000000
    assert host["PidsLimit"] == 50 and host["Binds"] == ["%s:/data:ro" % vol]
    assert host["NetworkMode"] == "bridge"
    ports = {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}
    assert host["PortBindings"] == ports and info["NetworkSettings"]["Ports"] == ports
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", info["NetworkSettings"]["IPAddress"])
    assert info["Mounts"] == [{"Type": "bind", "Source": str(vol), "Destination": "/data",
                               "Mode": "ro", "RW": False, "Propagation": "rprivate"}]
    assert ok(run_mc("port", cid, state_root=state_root)) == \
        "80/tcp -> 127.0.0.1:%d\n" % port
    assert ok(run_mc("port", cid, "80", state_root=state_root)) == \
        "127.0.0.1:%d\n" % port  # docker's: of one port, the address alone
    one_line_error(run_mc("port", cid, "81/tcp", state_root=state_root))
    assert "127.0.0.1:%s->80/tcp" % port in ps_rows(state_root)[cid]  # docker ps's form
    top = ok(run_mc("top", cid, state_root=state_root)).splitlines()
    assert top[0].split()[:3] == ["UID", "PID", "PPID"]
    assert len(top) == 2 and top[1].endswith("sleep 100")
    ok(run_mc("rm", "-f", cid, state_root=state_root))
    r = run_mc("inspect", cid, state_root=state_root)
    assert r.returncode == 1 and json.loads(r.stdout) == []


def test_format_templates(pulled, store, state_root):
    """docker's -f/--format Go templates: inspect -f, ps --format (also `table`), images."""
    cid = new_id("fmt")
    detach(state_root, "--name", cid, "-l", "tier=web", "-e", "A=1", pulled, "sleep", "100")
    try:
        pid = mc.Container.load(cid, state_root).pid
        # as docker 20.10 prints the same template for a container run with the same flags
        out = ok(run_mc("inspect", "-f", "{{.State.Status}} {{.State.Pid}} {{.State.Running}} "
                        "{{json .Config.Cmd}} {{.Config.Cmd}} {{index .Config.Labels \"tier\"}} "
                        "<{{index .Config.Labels \"none\"}}> "
                        "{{if .State.Paused}}paused{{else}}not{{end}} "
                        "{{range .Config.Env}}{{if eq . \"A=1\"}}[{{.}}]{{end}}{{end}} "
                        "{{.Name | upper}} {{len .Config.Cmd}} {{(index .Config.Cmd 1)}} "
                        "{{range $i, $a := .Config.Cmd}}{{$i}}:{{$a}},{{end}} "
                        "{{range $k, $v := .Config.Labels}}{{$k}}={{$v}}{{end}} "
                        "{{with .State}}{{.Status}}{{$.Name}}{{end}} {{.Config.Labels}}",
                        cid, state_root=state_root))
        assert out == "running %d true [\"sleep\",\"100\"] [sleep 100] web <> not [A=1] "\
            "/%s 2 100 0:sleep,1:100, tier=web running/%s map[tier:web]\n" % (
                pid, cid.upper(), cid)
        # a newline or tab in a string, as scripts write them (and as the shell's \n is
        # unescaped before); printf
        out = ok(run_mc("inspect", "-f", 'a{{"\\n"}}b{{"\t"}}c {{printf "%s-%d|%3s|%q|%d%%" '
                        '.State.Status 3 "x" "y"}}', cid, state_root=state_root))
        assert out == 'a\nb\tc running-3|  x|"y"|%!d(MISSING)%\n'
        assert one_line_error(run_mc("inspect", "-f", '{{"\\x"}}', cid,
                                     state_root=state_root)) == 'minicontainer: --format: bad ' \
            'string "\\x"'
        # fields scripts read (a review found them missing: a template error, exit 1)
        out = ok(run_mc("inspect", "-f", "{{.Image}} {{.Platform}} {{.Driver}} "
                        "{{.HostConfig.RestartPolicy.Name}} {{.HostConfig.AutoRemove}} "
                        "{{.HostConfig.ReadonlyRootfs}} {{.Config.Tty}} {{.State.Error}}<> "
                        "{{json .NetworkSettings.Networks}}", cid, state_root=state_root))
        assert out.split() == [mc._lookup(mc.ImageStore(store), pulled)[0][1]["digest"],
                               "linux", "overlay", "no", "false", "false", "false", "<>", "{}"]
        # an image, as docker's inspect takes it; neither: one line
        image = mc.find_image(pulled, store)
        out = ok(run_mc("inspect", "-f", "{{.Id}} {{.Os}} {{len .RootFS.Layers}} "
                        "{{index .Config.Cmd 0}}", pulled, state_root=state_root))
        assert out.split() == [image.manifest["config"]["digest"], "linux", "1", "sh"]
        assert one_line_error(run_mc("inspect", "nosuch", state_root=state_root)) == \
            "minicontainer: no such container or image: nosuch"
        r = run_mc("inspect", "-f", "{{.State.Nothing}}", cid, state_root=state_root)
        assert one_line_error(r) == 'minicontainer: --format: map has no entry for key ' \
            '"Nothing"' and r.returncode == 1
        assert "without its {{end}}" in one_line_error(
            run_mc("inspect", "-f", "{{if .State}}", cid, state_root=state_root))
        assert ok(run_mc("ps", "--format", "{{.ID}}\\t{{.Image}}", state_root=state_root)) \
            == "%s\t%s\n" % (cid, pulled)
        lines = ok(run_mc("ps", "--format", "table {{.ID}}\\t{{.Labels}}",
                          state_root=state_root)).splitlines()
        assert [line.split() for line in lines] == [["CONTAINER", "ID", "LABELS"],
                                                    [cid, "tier=web"]]
        assert "Go template" in one_line_error(run_mc("ps", "--format", "wide",
                                                      state_root=state_root))
        digest = json.loads(ok(run_mc("images", "--format", "json", "--store",
                                      store)).splitlines()[0])
        out = ok(run_mc("images", "--store", store, "--format",
                        "{{.Repository}}:{{.Tag}} {{.ID}} {{.Digest}}"))
        repo, _, tag = pulled.rpartition(":")
        assert out.split() == ["%s:%s" % (repo, tag), digest["ID"], mc.ImageStore(
            store).entries()[0][1]["digest"]]
    finally:
        ok(run_mc("rm", "-f", cid, state_root=state_root))


def test_publish_all_exposes_the_images_ports(registry, base, store, state_root):
    """-P: every port the image exposes, each on a host port the kernel picks (docker's)."""
    name = "cli/" + os.urandom(4).hex()
    registry.client.push_image(name, "v", Image([base], config={
        "Cmd": ["sleep", "100"], "ExposedPorts": {"80/tcp": {}, "53/udp": {}}}))
    ref = "%s/%s:v" % (registry.host, name)
    assert run_pull("-q", ref, store=store).returncode == 0
    cid = new_id("pa")
    detach(state_root, "-P", "--name", cid, ref)
    try:
        lines = ok(run_mc("port", cid, state_root=state_root)).splitlines()
        assert [line.split(" -> ")[0] for line in lines] == ["53/udp", "80/tcp"]
        assert all(int(line.rsplit(":", 1)[1]) > 0 for line in lines)
    finally:
        ok(run_mc("rm", "-f", cid, state_root=state_root))


def test_docker_spellings(busybox_rootfs, state_root):
    """run -h is --hostname (--help is help), `run --rootfs DIR CMD...` takes it all as the
    command (docker's order, the rootfs for the image), logs --tail all and -n, unpause."""
    assert ok(run_mc("run", "--rm", "-h", "myhost", "--rootfs", busybox_rootfs, "hostname",
                     state_root=state_root)) == "myhost\n"
    assert "--hostname" in ok(run_mc("run", "--help"))
    cid = new_id("sp")
    detach(state_root, "--rootfs", busybox_rootfs, "--name", cid, "sh", "-c",
           "echo one; echo two; exec sleep 100")
    try:
        wait_for(lambda: run_mc("logs", cid, state_root=state_root).stdout == "one\ntwo\n")
        assert ok(run_mc("logs", "--tail", "all", cid, state_root=state_root)) == "one\ntwo\n"
        assert ok(run_mc("logs", "-n", "1", cid, state_root=state_root)) == "two\n"
        ok(run_mc("pause", cid, state_root=state_root))
        assert state_of(state_root, cid) and mc.Container.load(cid, state_root).status() == \
            "paused"
        ok(run_mc("unpause", cid, state_root=state_root))
        assert mc.Container.load(cid, state_root).status() == "running"
        ok(run_mc("update", "-m", "64m", cid, state_root=state_root))  # docker's -m too
        assert ok(run_mc("inspect", "-f", "{{.HostConfig.Memory}}", cid,
                         state_root=state_root)) == "%d\n" % (64 << 20)
    finally:
        ok(run_mc("rm", "-f", cid, state_root=state_root))


def test_ps_filters(busybox_rootfs, state_root):
    """docker's ps --filter (and -f KEY=VALUE, which is -f's meaning in docker's ps): name,
    id, status (which shows stopped ones without -a), label; a bad one is one line."""
    up, done = new_id("fu"), new_id("fd")
    detach(state_root, "--rootfs", busybox_rootfs, "--name", up, "-l", "tier=web", "--",
           "sleep", "100")
    ok(run_mc("run", "--name", done, "--rootfs", busybox_rootfs, "--", "true",
              state_root=state_root))
    try:
        def ps(*args):  # (-q says docker's short ids: 12 characters)
            return [up if line == up[:12] else done if line == done[:12] else line for line in
                    ok(run_mc("ps", "-q", *args, state_root=state_root)).split()]
        assert ps("-a", "--filter", "name=" + done[2:]) == [done]
        assert ps("-f", "id=" + up, "-a") == [up]
        assert ps("--filter", "status=exited") == [done]
        assert ps("-f", "label=tier=web") == [up] and ps("-f", "label=tier=db") == []
        assert ps("-a", "-f", "label=tier") == [up]
        assert "use name, id, status" in one_line_error(run_mc(
            "ps", "--filter", "bogus=1", state_root=state_root))
    finally:
        ok(run_mc("rm", "-f", up, done, state_root=state_root))


def test_wait_prints_the_exit_code(busybox_rootfs, state_root):
    cid = new_id("wait")
    detach(state_root, "--rootfs", busybox_rootfs, "--name", cid, "--",
           "sh", "-c", "sleep 0.3; exit 7")
    t = time.monotonic()
    r = run_mc("wait", cid, state_root=state_root)
    assert time.monotonic() - t >= 0.2
    assert mc.Container.load(cid, state_root).status() == "stopped"
    if "exit_code" in state_of(state_root, cid):
        assert ok(r) == "7\n"
    else:  # nothing recorded it (the monitor of detached containers does)
        assert "not recorded" in one_line_error(r)
    ok(run_mc("rm", cid, state_root=state_root))


def test_exec_flags(busybox_rootfs, state_root):
    cid = new_id("ex")
    detach(state_root, "--rootfs", busybox_rootfs, "--name", cid, "--", "sleep", "100")
    assert ok(run_mc("exec", "-w", "/tmp", cid, "pwd", state_root=state_root)) == "/tmp\n"
    assert ok(run_mc("exec", "-u", "1000", "-e", "X=y", cid, "sh", "-c", "id -u; echo $X",
                     state_root=state_root)) == "1000\ny\n"
    r = run_mc("exec", "-i", cid, "cat", input="from stdin", state_root=state_root)
    assert ok(r) == "from stdin"
    # -d: returns at once, its output nowhere (docker's: not the caller's, not the log's)
    t = time.monotonic()
    r = subprocess.run([sys.executable, RUNTIME, "--root", state_root, "exec", "-d", cid,
                        "sh", "-c", "sleep 0.2; echo detached; echo ran > /dev/shm/ran"],
                       capture_output=True, text=True, timeout=30)
    assert ok(r) == "" and time.monotonic() - t < 5
    wait_for(lambda: run_mc("exec", cid, "cat", "/dev/shm/ran", state_root=state_root).stdout
             == "ran\n", what="the detached exec to run")
    assert "detached" not in run_mc("logs", cid, state_root=state_root).stdout
    ok(run_mc("rm", "-f", cid, state_root=state_root))


# ---- run's flags ----

def test_env_file_and_labels(busybox_rootfs, state_root, tmp_path):
    env = tmp_path / "env"
    env.write_text("# a comment\n\nA=1\n  B=two words \nFROM_CALLER\nUNSET_HERE\nC=x=y\n")
    r = run_mc("run", "--rm", "--rootfs", busybox_rootfs, "--env-file", str(env), "-e", "A=9",
               "--", "sh", "-c", 'echo "$A|$B|$FROM_CALLER|${UNSET_HERE-unset}|$C"',
               state_root=state_root, env=dict(os.environ, FROM_CALLER="hi"))
    assert ok(r) == "9|two words |hi|unset|x=y\n"
    bad = tmp_path / "bad"
    bad.write_text("NAME WITH SPACE=1\n")
    assert "--env-file" in one_line_error(run_mc("run", "--rm", "--rootfs", busybox_rootfs,
                                                 "--env-file", str(bad), "--", "true",
                                                 state_root=state_root))
    assert "--env-file" in one_line_error(run_mc("run", "--rm", "--rootfs", busybox_rootfs,
                                                 "--env-file", str(tmp_path / "none"), "--",
                                                 "true", state_root=state_root))


def test_init_reaps_as_pid_1(busybox_rootfs, state_root):
    r = run_mc("run", "--rm", "--init", "--rootfs", busybox_rootfs, "--",
               "sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '; echo; exit 4",
               state_root=state_root)
    assert r.returncode == 4, r.stderr
    assert r.stdout.startswith("/dev/init -- sh -c")
    assert not os.path.exists(os.path.join(busybox_rootfs, "dev", "init"))


def test_init_needs_a_static_init(busybox_rootfs, state_root, monkeypatch):
    monkeypatch.setattr(mc, "HOST_INITS", ("/bin/ls", "/nonexistent"))
    with pytest.raises(mc.Error, match="linked dynamically.*tini-static"):
        mc.host_init()
    monkeypatch.setattr(mc, "HOST_INITS", ("/nonexistent",))
    with pytest.raises(mc.Error, match="apt-get install tini"):
        mc.host_init()
    assert mc.static_executable("/bin/busybox") or not mc.static_executable("/bin/ls")


def test_privileged(busybox_rootfs, state_root):
    script = ("grep -E '^(CapEff|Seccomp):' /proc/self/status; "
              "grep ' /sys ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1; "
              "ls /dev/loop-control /dev/kmsg 2>&1; "
              "echo kcore=$(head -c 1 /proc/kcore 2>/dev/null | wc -c)")  # (its whole: 128 TiB)
    r = run_mc("run", "--rm", "--privileged", "--rootfs", busybox_rootfs, "--",
               "sh", "-c", script, state_root=state_root)
    out = ok(r)
    with open("/proc/self/status") as f:  # every capability the runtime holds (ours)
        bounding = next(line for line in f if line.startswith("CapBnd:")).split()[1]
    assert "CapEff:\t%s" % bounding in out
    assert "Seccomp:\t0" in out
    assert "\nrw\n" in out
    for dev in ("/dev/loop-control", "/dev/kmsg"):
        if os.path.exists(dev):
            assert dev + "\n" in out and "No such file" not in out
    # no masked paths (where the kernel has a /proc/kcore: not every one does)
    assert "kcore=%d\n" % os.path.exists("/proc/kcore") in out
    plain = ok(run_mc("run", "--rm", "--rootfs", busybox_rootfs, "--", "sh", "-c", script,
                      state_root=state_root))
    assert "Seccomp:\t2" in plain and "\nro\n" in plain and "kcore=0\n" in plain


def test_pull_missing_is_the_default(image, store, state_root):
    r = run_mc("run", "--rm", image, "echo", "hello", state_root=state_root)
    assert r.stdout == "hello\n", r.stderr  # the pull's progress is on stderr only
    assert r.returncode == 0
    assert "Unable to find image" in r.stderr and "Digest: sha256:" in r.stderr
    r = run_mc("run", "--rm", image, "echo", "again", state_root=state_root)
    assert ok(r) == "again\n" and "Unable to find" not in r.stderr


def test_pull_never_and_always(image, store, state_root):
    r = run_mc("run", "--rm", "--pull", "never", image, "true", state_root=state_root)
    assert "no such image" in one_line_error(r)
    r = run_mc("run", "--rm", "--pull", "always", image, "echo", "x", state_root=state_root)
    assert ok(r) == "x\n" and "Digest:" in r.stderr
    r = run_mc("run", "--rm", "--pull", "always", image, "echo", "y", state_root=state_root)
    assert ok(r) == "y\n" and "Digest:" in r.stderr


def test_pull_failure_is_said_once(registry, store, state_root):
    r = run_mc("run", "--rm", "%s/cli/none:v" % registry.host, "true", state_root=state_root)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("Unable to find image"), r.stderr
    assert lines[-1].startswith("pull: "), r.stderr  # the puller's word, not repeated
    assert not any(line.startswith("minicontainer:") for line in lines), r.stderr


def test_platform(registry, base, store, state_root):
    name = "cli/multi" + os.urandom(3).hex()
    registry.client.push_index(name, "v", [Image([base], arch="amd64"),
                                           Image([base], arch="arm64")])
    ref = "%s/%s:v" % (registry.host, name)
    host = mc.host_platform_string()
    other = "linux/arm64" if host == "linux/amd64" else "linux/amd64"
    r = run_mc("run", "--rm", "--platform", other, ref, "true", state_root=state_root)
    assert r.returncode == 0, r.stderr
    assert "warning: image %s is for %s, this machine is %s" % (ref, other, host) in r.stderr
    assert mc.find_image(ref, store).platform == other
    r = run_mc("run", "--rm", "--platform", other, "--pull", "never", ref, "true",
               state_root=state_root)
    assert r.returncode == 0 and "Digest" not in r.stderr
    r = run_mc("run", "--rm", "--platform", host, "--pull", "never", ref, "true",
               state_root=state_root)
    assert "is for %s, not %s" % (other, host) in one_line_error(r)
    r = run_mc("run", "--rm", "--platform", host, ref, "true", state_root=state_root)
    assert r.returncode == 0 and "warning" not in r.stderr and "Digest" in r.stderr
    assert mc.find_image(ref, store).platform == host


def test_rmi_refuses_an_image_in_use(pulled, store, state_root, registry, base):
    cid = new_id("use")
    r = run_mc("run", "--name", cid, pulled, "true", state_root=state_root)
    assert r.returncode == 0, r.stderr
    # as docker's: an image of the same layers but another config is another image; a name
    # of several goes (the image keeps the others)
    other = "cli/" + os.urandom(4).hex()
    registry.client.push_image(other, "v", Image([base], config={"Cmd": ["true"]}))
    assert run_pull("-q", "%s/%s:v" % (registry.host, other), store=store).returncode == 0
    alias = pulled + "-alias"  # (the store's own index entry, another name: as docker tag)
    st = mc.ImageStore(store)
    entry = mc._lookup(st, pulled)[0][1]
    st.update_index(lambda index: index["manifests"].append(dict(entry, annotations={
        mc.ANNOTATION_REF_NAME: mc.parse_reference(alias).name})))
    for ref in ("%s/%s:v" % (registry.host, other), alias):
        assert ok(run_mc("rmi", ref)).startswith("Untagged: ")
    r = run_mc("rmi", pulled)
    assert cid in one_line_error(r) and "rmi -f" in r.stderr
    mc.find_image(pulled, store)
    ok(run_mc("rmi", "-f", pulled))
    with pytest.raises(mc.Error):
        mc.find_image(pulled, store)
    ok(run_mc("rm", cid, state_root=state_root))


# ---- volumes ----

def volumes(*args):
    return ok(run_mc("volume", *args))


def test_named_volume_is_filled_from_the_image_and_outlives_the_container(
        registry, base, store, state_root):
    """-v NAME:CTR: a volume of the store's, made on first use and, empty, filled with what
    the image has there (owners and modes kept: docker's copy-up); --mount type=volume too;
    kept by rm; its rm refused while a container (even stopped) uses it."""
    from fixtures_registry import entry, tar_layer
    name = "cli/" + os.urandom(4).hex()
    registry.client.push_image(name, "v", Image([base, tar_layer([
        entry("data", "dir", mode=0o750, uid=5, gid=6),
        entry("data/f", "file", b"from the image\n", mode=0o640, uid=7, gid=8)])]))
    image = "%s/%s:v" % (registry.host, name)
    vol, a, b = "vol-" + os.urandom(3).hex(), new_id("va"), new_id("vb")
    r = run_mc("run", "--name", a, "-v", vol + ":/data", image, "sh", "-c",
               "stat -c '%u:%g %a' /data /data/f; cat /data/f; echo more > /data/g",
               state_root=state_root)
    assert (r.returncode, r.stdout) == (0, "5:6 750\n7:8 640\nfrom the image\n"), r.stderr
    top = os.path.join(store, "volumes")
    data = os.path.join(top, vol, "_data")
    assert sorted(os.listdir(data)) == ["f", "g"]
    # docker's modes: volumes/ and NAME/ 0701; _data the image's directory's (copied up)
    assert stat_mode(top) == stat_mode(os.path.join(top, vol)) == 0o701
    assert stat_mode(data) == 0o750 and os.stat(data).st_uid == 5
    assert volumes("ls", "-q").split() == [vol]
    assert volumes("ls").splitlines() == ["DRIVER    VOLUME NAME", "local     " + vol]
    [info] = json.loads(volumes("inspect", vol))
    assert (info["Name"], info["Driver"], info["Mountpoint"], info["Scope"]) == \
        (vol, "local", data, "local")
    # not empty: not filled again; --mount type=volume,...,readonly
    r = run_mc("run", "--rm", "--name", b, "-v", vol + ":/data", "--mount",
               "type=volume,source=%s,target=/m,readonly" % vol, image, "sh", "-c",
               "cat /data/g /m/f; touch /m/x 2>/dev/null || echo read-only",
               state_root=state_root)
    assert (r.returncode, r.stdout) == (0, "more\nfrom the image\nread-only\n"), r.stderr
    [mount] = json.loads(ok(run_mc("inspect", "-f", "{{json .Mounts}}", a,
                                   state_root=state_root)))
    assert mount == {"Type": "volume", "Name": vol, "Source": data, "Destination": "/data",
                     "Driver": "local", "Mode": "z", "RW": True, "Propagation": ""}
    line = one_line_error(run_mc("volume", "rm", vol))  # a's, stopped: in use
    assert "volume is in use" in line and a in line
    ok(run_mc("rm", "-v", a, state_root=state_root))  # -v: anonymous volumes only
    assert volumes("ls", "-q").split() == [vol]
    assert volumes("rm", vol) == vol + "\n"
    assert volumes("ls", "-q") == "" and os.listdir(top) == []


def test_no_copy_up_into_a_volume_another_container_has(rootfs_copy, store, state_root):
    """The copy-up goes by path in the volume, which a container that has it could swap
    for a symlink to a host directory while the copy runs: an empty volume that another
    container has is mounted as it is; once none has it, it is filled."""
    vol, holder = "shared-" + os.urandom(3).hex(), new_id("hold")
    detach(state_root, "--name", holder, "-v", vol + ":/empty", "--rootfs", rootfs_copy, "--",
           "sleep", "1000")
    try:
        r = run_mc("run", "--rm", "-v", vol + ":/etc", "--rootfs", rootfs_copy, "--", "ls",
                   "/etc", state_root=state_root)
        assert (r.returncode, r.stdout) == (0, ""), r.stderr
    finally:
        ok(run_mc("rm", "-f", holder, state_root=state_root))
    r = run_mc("run", "--rm", "-v", vol + ":/etc", "--rootfs", rootfs_copy, "--", "ls", "/etc",
               state_root=state_root)
    assert r.returncode == 0 and "passwd" in r.stdout.split(), r.stderr
    assert volumes("rm", vol) == vol + "\n"

def stat_mode(path):
    return os.stat(path).st_mode & 0o7777


def test_anonymous_volumes(rootfs_copy, store, state_root):
    """-v CTR: an anonymous volume, filled from the rootfs, kept across a restart, removed
    by rm -v and with run --rm (also a detached one's, by its monitor)."""
    cid = new_id("anon")
    detach(state_root, "--name", cid, "-v", "/etc", "--rootfs", rootfs_copy, "--",
           "sh", "-c", "cat /etc/mark 2>/dev/null; echo x > /etc/mark; exec sleep 100")
    try:
        [vol] = volumes("ls", "-q").split()
        assert re.fullmatch(r"[0-9a-f]{64}", vol)
        assert os.path.exists(os.path.join(store, "volumes", vol, "_data", "passwd"))
        info = json.loads(ok(run_mc("inspect", cid, state_root=state_root)))[0]
        assert info["Mounts"][0]["Type"] == "volume" and info["Mounts"][0]["Name"] == vol
        assert info["Config"]["Volumes"] == {"/etc": {}}
        assert info["HostConfig"]["Binds"] is None
        ok(run_mc("restart", "-t", "1", cid, state_root=state_root))
        wait_for(lambda: run_mc("logs", cid, state_root=state_root).stdout == "x\n")
        assert volumes("ls", "-q").split() == [vol]  # the same one
        assert "volume is in use" in one_line_error(run_mc("volume", "rm", vol))
    finally:
        ok(run_mc("rm", "-f", "-v", cid, state_root=state_root))
    assert volumes("ls", "-q") == ""
    r = run_mc("run", "--rm", "-v", "/etc", "--rootfs", rootfs_copy, "--", "ls", "/etc",
               state_root=state_root)
    assert r.returncode == 0 and "passwd" in r.stdout
    assert volumes("ls", "-q") == ""
    gone = new_id("anon")
    detach(state_root, "--rm", "--name", gone, "-v", "/x", "--rootfs", rootfs_copy, "--",
           "sleep", "100")
    assert len(volumes("ls", "-q").split()) == 1
    ok(run_mc("stop", "-t", "0", gone, state_root=state_root))
    wait_for(lambda: volumes("ls", "-q") == "" and not os.path.exists(
        os.path.join(state_root, gone)))


def test_volume_verbs_and_names(rootfs_copy, store, state_root):
    """volume create (a random name without one; again: the same), ls --format, inspect -f,
    prune (anonymous ones; -a: all unused), and names as docker validates them."""
    assert volumes("create", "data.1") == "data.1\n" == volumes("create", "data.1")
    made = volumes("create", "--label", "k=v").strip()
    assert re.fullmatch(r"[0-9a-f]{64}", made)
    assert volumes("ls", "--format", "{{.Name}} {{.Driver}}").splitlines() == \
        sorted(["data.1 local", made + " local"])
    assert volumes("inspect", "-f", "{{.Labels.k}}", made) == "v\n"
    for bad in ("a", "-x", "a/b", "é1"):
        one_line_error(run_mc("volume", "create", bad))
    r = run_mc("run", "--rm", "-v", "a/b:/x", "--rootfs", rootfs_copy, "true",
               state_root=state_root)
    assert "volume name" in one_line_error(r, 125)
    assert "absolute" in one_line_error(run_mc(
        "run", "--rm", "-v", "./x:/x", "--rootfs", rootfs_copy, "true",
        state_root=state_root), 125)
    assert "no such volume" in one_line_error(run_mc("volume", "rm", "missing"))
    ok(run_mc("volume", "rm", "-f", "missing"))
    one_line_error(run_mc("volume", "inspect", "missing"))
    # an anonymous volume of a kept container, then removed without -v: prune's
    cid = new_id("pr")
    ok(run_mc("run", "--name", cid, "-v", "/x", "--rootfs", rootfs_copy, "true",
              state_root=state_root))
    [anon] = set(volumes("ls", "-q").split()) - {"data.1", made}
    assert volumes("prune", "-f") == "Total reclaimed space: 0B\n"  # in use
    ok(run_mc("rm", cid, state_root=state_root))
    assert volumes("prune", "-f").splitlines()[:2] == ["Deleted Volumes:", anon]
    assert sorted(volumes("ls", "-q").split()) == sorted(["data.1", made])
    assert volumes("prune", "-f", "-a").splitlines()[:3] == \
        ["Deleted Volumes:"] + sorted(["data.1", made])
    assert volumes("ls", "-q") == ""


def test_volume_copy_up_is_the_merged_view_of_the_layers(tmp_path):
    """What fills an empty volume is what an overlay of the image's layers shows at its
    path: a whiteout, an opaque directory, a file on the way hide what the layers below
    have there."""
    import stat
    l1, l2, l3 = (tmp_path / n for n in ("l1", "l2", "l3"))
    for layer in (l1, l2, l3):
        (layer / "data" / "sub").mkdir(parents=True)
    for name in ("a", "gone", "sub/old"):
        (l1 / "data" / name).write_text("1")
    os.mknod(l2 / "data" / "gone", stat.S_IFCHR | 0o600, os.makedev(0, 0))  # a whiteout
    os.setxattr(l2 / "data" / "sub", "trusted.overlay.opaque", b"y")
    (l2 / "data" / "sub" / "new").write_text("2")
    (l3 / "data" / "a").write_text("3")

    def filled(layers, path="/data"):
        vol = tmp_path / ("vol-" + os.urandom(3).hex())
        vol.mkdir()
        mc._volume_copy_up(str(vol), [str(layer) for layer in layers], None, path)
        return {os.path.relpath(os.path.join(d, f), vol): open(os.path.join(d, f)).read()
                for d, _, files in os.walk(vol) for f in files}

    assert filled([l1, l2, l3]) == {"a": "3", "sub/new": "2"}
    assert filled([l1, l2, l3], "/data/sub") == {"new": "2"}
    os.setxattr(l3 / "data", "trusted.overlay.opaque", b"y")
    assert filled([l1, l2, l3]) == {"a": "3"}
    (tmp_path / "l4").mkdir()
    (tmp_path / "l4" / "data").write_text("a file")
    assert filled([l1, l2, l3, tmp_path / "l4"]) == {}


# ---- stats ----

def test_stats_docker_table_and_runc_json(busybox_rootfs, state_root):
    """docker's `stats --no-stream [ID...]`: its table once (of the running containers
    without ID), --format with docker's fields; runc's `stats ID` stays JSON."""
    busy, idle, done = new_id("busy"), new_id("idle"), new_id("done")
    detach(state_root, "--name", busy, "-m", "64m", "--rootfs", busybox_rootfs, "--", "sh",
           "-c", "while :; do :; done")
    detach(state_root, "--name", idle, "--rootfs", busybox_rootfs, "--", "sleep", "100")
    ok(run_mc("run", "--name", done, "--rootfs", busybox_rootfs, "true",
              state_root=state_root))
    try:
        lines = ok(run_mc("stats", "--no-stream", state_root=state_root)).splitlines()
        assert re.split(r"\s{2,}", lines[0]) == [
            "CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O",
            "BLOCK I/O", "PIDS"]
        rows = {re.split(r"\s{2,}", line)[1]: re.split(r"\s{2,}", line) for line in lines[1:]}
        assert set(rows) == {busy, idle}  # the running ones
        b = rows[busy]
        assert b[0] == busy[:12] and re.fullmatch(r"\d+\.\d\d%", b[2]) and float(b[2][:-1]) > 0
        assert re.fullmatch(r"[\d.]+[KMG]?i?B / 64MiB", b[3]) and b[5] == "0B / 0B"
        assert rows[idle][7] == "1" and re.fullmatch(r"[\d.]+%", rows[idle][4])
        # docker's columns line up: each header where its cells begin
        at = lines[0].index("CPU %")
        assert all(line[at - 3:at] == "   " and line[at] != " " for line in lines[1:])
        fields = "{{.Container}}|{{.Name}}|{{.ID}}|{{.CPUPerc}}|{{.MemUsage}}|{{.MemPerc}}|" \
            "{{.NetIO}}|{{.BlockIO}}|{{.PIDs}}"
        out = ok(run_mc("stats", "--no-stream", "--format", fields, idle[:-1], done,
                        state_root=state_root)).splitlines()
        assert out[0].split("|")[:3] == [idle[:-1], idle, idle[:12]]
        assert out[0].split("|")[8] == "1"
        assert out[1] == "%s|%s|%s|0.00%%|0B / 0B|0.00%%|0B / 0B|0B / 0B|0" % (
            done, done, done[:12])  # stopped: nothing to measure
        [obj] = [json.loads(line) for line in ok(run_mc(
            "stats", "--no-stream", "--no-trunc", "--format", "json", busy,
            state_root=state_root)).splitlines()]
        assert obj["ID"] == busy and obj["MemUsage"].endswith(" / 64MiB")
        assert "PIDS" in ok(run_mc("stats", "--no-stream", "-a", state_root=state_root))
        assert done in ok(run_mc("stats", "--no-stream", "-a", state_root=state_root))
        data = json.loads(ok(run_mc("stats", busy, state_root=state_root)))  # runc's
        assert {"cpu", "memory", "pids", "blkio"} <= set(data)
        assert data["memory"]["limit"] == 64 << 20 and data["cpu"]["usage_ns"] > 0
        one_line_error(run_mc("stats", "--no-stream", "nosuch", state_root=state_root))
    finally:
        ok(run_mc("rm", "-f", busy, idle, done, state_root=state_root))


# ---- start -a, start ID... ----

def test_start_attach_and_several(busybox_rootfs, state_root):
    """docker's start -a: the container's stdout and stderr ours (of this run only, not what
    its log kept of the last), its exit status ours; start ID... starts each stopped one."""
    a, b = new_id("att"), new_id("sev")
    r = run_mc("run", "--name", a, "--rootfs", busybox_rootfs, "--", "sh", "-c",
               "echo out; echo err >&2; exit 3", state_root=state_root)
    assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
    ok(run_mc("run", "--name", b, "--rootfs", busybox_rootfs, "--", "sh", "-c",
              "echo b", state_root=state_root))
    try:
        r = run_mc("start", "-a", a[:-1], state_root=state_root)
        assert (r.returncode, r.stdout, r.stderr) == (3, "out\n", "err\n")
        r = run_mc("start", a, b, state_root=state_root)
        assert (r.returncode, r.stdout.split(), r.stderr) == (0, [a, b], "")
        for cid, lines in ((a, "out\n" * 3), (b, "b\n" * 2)):
            wait_for(lambda: "finished_at" in state_of(state_root, cid) and run_mc(
                "logs", cid, state_root=state_root).stdout == lines)
        assert "one container" in one_line_error(run_mc("start", "-a", a, b,
                                                        state_root=state_root))
        r = run_mc("start", a, "nosuch", state_root=state_root)  # each said, then status 1
        assert r.returncode == 1 and r.stdout == a + "\n" and "nosuch" in r.stderr
    finally:
        ok(run_mc("rm", "-f", a, b, state_root=state_root))


def test_start_attach_of_a_bundles_container_starts_nothing(bundle, state_root):
    """A bundle's container keeps no log to attach to: said before it is started (it was
    started, then refused)."""
    cid, _ = mc_create(bundle(["sleep", "100"]), state_root=state_root)
    try:
        r = run_mc("start", "-a", cid, state_root=state_root)
        assert "keeps no log to attach to" in one_line_error(r, 1)
        assert json.loads(ok(run_mc("state", cid, state_root=state_root)))["status"] == \
            "created"
    finally:
        ok(run_mc("delete", "-f", cid, state_root=state_root))


def test_start_attach_forwards_signals(busybox_rootfs, state_root):
    cid = new_id("sig")
    detach(state_root, "--name", cid, "--rootfs", busybox_rootfs, "--", "sh", "-c",
           "trap 'echo term; exit 7' TERM; echo ready; sleep 1000 & wait")
    try:
        wait_for(lambda: run_mc("logs", cid, state_root=state_root).stdout == "ready\n")
        ok(run_mc("stop", cid, state_root=state_root))
        p = subprocess.Popen(mc_argv("start", "-a", cid, state_root=state_root),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert p.stdout.readline() == "ready\n"
            p.send_signal(15)
            out, err = p.communicate(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        assert (p.returncode, out, err) == (7, "term\n", "")
    finally:
        ok(run_mc("rm", "-f", cid, state_root=state_root))


# ---- the Python API ----

def test_python_run_and_wait(pulled, busybox_rootfs, state_root, tmp_path):
    r = mc.run(pulled, ["sh", "-c", "echo hi; echo err >&2; exit 3"], root=state_root)
    assert (r.exit_code, r.stdout, r.stderr) == (3, "hi\n", "err\n")
    r = mc.run(pulled, ["cat"], flags=["-i"], input="in", root=state_root)
    assert (r.exit_code, r.stdout) == (0, "in")
    config = mc.default_spec(rootfs=busybox_rootfs, args=["sh", "-c", "exit 6"])
    c = mc.Container.create(new_id("api"), config, bundle=str(tmp_path), root=state_root)
    c.start()
    assert c.wait(timeout=10) == 6
    c.destroy()
    config = mc.default_spec(rootfs=busybox_rootfs, args=["sleep", "100"])
    c = mc.Container.create(new_id("api"), config, bundle=str(tmp_path), root=state_root)
    c.start()
    with pytest.raises(TimeoutError):
        c.wait(timeout=0.1)
    c.signal(9)
    assert c.wait() == 137
    c.destroy()


def readme_snippet():
    with open(os.path.join(os.path.dirname(RUNTIME), "README.md")) as f:
        text = f.read()
    return re.search(r"```python\n(.*?)```", text, re.S).group(1)


def test_the_readme_snippet_runs_as_written(busybox_rootfs, store, tmp_path):
    """The README says how to make what the snippet needs (a rootfs at /tmp/rootfs and an
    image busybox), then runs it in the checkout as root."""
    snippet = readme_snippet()
    made = not os.path.exists("/tmp/rootfs")
    if made:
        subprocess.run([sys.executable, os.path.join(os.path.dirname(RUNTIME), "tools",
                                                     "mkrootfs.py"), "/tmp/rootfs"],
                       check=True, capture_output=True)
    try:
        subprocess.run([sys.executable, os.path.join(os.path.dirname(RUNTIME), "tools",
                                                     "import_image.py"), "/tmp/rootfs",
                        "busybox"], check=True, capture_output=True)
        r = subprocess.run([sys.executable, "-"], input=snippet, capture_output=True,
                           text=True, cwd=os.path.dirname(RUNTIME), timeout=60,
                           env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
        assert r.returncode == 0, r.stderr
        assert r.stdout == "0 hi\n3\n", r.stdout
    finally:
        if made:
            import shutil
            shutil.rmtree("/tmp/rootfs")
