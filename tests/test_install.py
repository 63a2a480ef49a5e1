"""`make install` (issue 12): the runtime and the puller as commands on PATH, run from any
directory, by links to the checkout."""
import os
import shutil
import subprocess

import pytest

from conftest import ROOT


@pytest.mark.skipif(not shutil.which("make"), reason="no make")
def test_make_install_links_commands(tmp_path):
    (tmp_path / "bin").mkdir()
    subprocess.run(["make", "-s", "-C", ROOT, "install", "PREFIX=%s" % tmp_path], check=True,
                   capture_output=True)
    for name in ("minicontainer", "minicontainer-pull"):
        assert os.path.islink(tmp_path / "bin" / name)
    env = dict(os.environ, PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    r = subprocess.run([str(tmp_path / "bin" / "minicontainer"), "--version"], cwd="/",
                       capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("minicontainer version "), r.stderr
    r = subprocess.run([str(tmp_path / "bin" / "minicontainer-pull"), "--help"], cwd="/",
                       capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 0 and "REF" in r.stdout, r.stderr
