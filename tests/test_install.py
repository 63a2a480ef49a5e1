"""`make install` (issue 12): the runtime and the puller as commands on PATH, run from any
directory: a launcher that imports the checkout's runtime, and a link to the puller."""
import importlib.util
import os
import shutil
import subprocess

import pytest

from conftest import ROOT


@pytest.mark.skipif(not shutil.which("make"), reason="no make")
def test_make_install_puts_commands_on_path(tmp_path):
    (tmp_path / "bin").mkdir()
    cached = [importlib.util.cache_from_source(os.path.join(ROOT, f))
              for f in ("minicontainer.py", "tools/pull.py", "tools/store_writer.py")]
    for pyc in cached:
        if os.path.exists(pyc):
            os.unlink(pyc)
    subprocess.run(["make", "-s", "-C", ROOT, "install", "PREFIX=%s" % tmp_path], check=True,
                   capture_output=True)
    launcher = tmp_path / "bin" / "minicontainer"
    assert not launcher.is_symlink()
    first = launcher.read_text().splitlines()[0]
    assert first.startswith("#!/") and first.endswith(" -IS"), first  # no shell in between
    assert os.path.islink(tmp_path / "bin" / "minicontainer-pull")
    # their bytecode is there for users who cannot write it (pull.py compiling the runtime
    # at every start: 30 MiB and 80 ms)
    assert all(os.path.exists(pyc) for pyc in cached)
    # the runtime's split (tools/bytecode.py): the code a start does not call beside it
    assert os.path.getsize(cached[0][:-4] + ".cold") > 100000
    env = dict(os.environ, PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    r = subprocess.run([str(tmp_path / "bin" / "minicontainer"), "--version"], cwd="/",
                       capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("minicontainer version "), r.stderr
    r = subprocess.run([str(launcher), "--root", str(tmp_path / "state"), "list", "-q"],
                       cwd="/", capture_output=True, text=True, env=env, timeout=30)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")  # its arguments, all of them
    r = subprocess.run([str(tmp_path / "bin" / "minicontainer-pull"), "--help"], cwd="/",
                       capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0 and "REF" in r.stdout, r.stderr
