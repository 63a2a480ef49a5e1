"""The engine's hot commands are read without argparse when plain (_quick_args): what they
read must be what argparse reads, and anything else must be left to argparse."""
import pytest

import minicontainer as mc

SAME = [
    "start c1", "state c1", "delete c1", "delete -f c1", "delete c1 --force",
    "--root /tmp/r state c1", "--debug --log /tmp/l --log-format json delete -f c1",
    "--systemd-cgroup create c1", "create --bundle /b c1", "create -b /b --pid-file p c1",
    "create --console-socket s --no-pivot --no-new-keyring --preserve-fds 2 c1",
    "create c1 --bundle /b", "kill c1", "kill c1 KILL", "kill c1 9", "kill --all c1 TERM",
    "kill -s HUP a b c", "kill a -a", "exec c1 /bin/true", "exec c1 ls -l -t x",
    "exec -t -i -d --pid-file p --console-socket s -e A=1 --env B=2 --cwd /x -w /y -u 1:2 "
    "-c CAP_KILL --cap CAP_CHOWN --no-new-privs --preserve-fds 1 c1 sh -c 'x'",
    "exec --process p.json c1", "exec -p p.json --detach c1", "exec c1", "run c1",
    "run -d --pid-file p -b /b c1", "--root /r run --console-socket s c1",
    "run --preserve-fds 3 --detach --bundle /b c1", "-v state c1", "--version delete c1",
    "--root /r --root /s start c1", "--version", "-v", "--root /r -v", "list", "list -q",
    "--root /r list --format json -q", "list -f table",
]

LEFT = [
    "state", "state a b", "start -h", "delete --force=1 c1", "delete --for c1",
    "create --preserve-fds -1 c1", "create --preserve-fds x c1", "create --bundle", "kill",
    "kill -9 c1", "exec c1 --", "exec c1 -- ls", "exec", "exec -- c1 ls",
    "--log-format xml state c1", "state -- c1", "create --bundle=/b c1", "--bogus state c1",
    "list c1", "list -f yaml", "run", "run alpine echo", "run --rm c1", "run -it c1",
    "run -e A=1 c1", "", "--debug",
    "--root /r",
]


def argparse_args(argv):
    at = mc._command_index(argv)
    return mc._parser(argv[at] if at < len(argv) else None).parse_args(argv)


@pytest.mark.parametrize("line", SAME)
def test_quick_args_as_argparse(line):
    import shlex
    argv = shlex.split(line)
    quick = mc._quick_args(argv, mc._command_index(argv))
    assert quick is not None
    assert vars(quick) == vars(argparse_args(argv))


@pytest.mark.parametrize("line", LEFT)
def test_unusual_left_to_argparse(line):
    argv = line.split()
    assert mc._quick_args(argv, mc._command_index(argv)) is None
