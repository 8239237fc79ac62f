"""Every example in the README runs as written: its python blocks in order in one namespace, then
its bash blocks, in a scratch folder. The ```sh blocks are the set-up commands (pip installs)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(blocks("python")) >= 4 and len(blocks("bash")) >= 1 and len(blocks("sh")) >= 2


@pytest.fixture(scope="module")
def fid_weights(tmp_path_factory):
    """No download here: the examples find a random state dict through FASTFID_WEIGHTS, as users
    without internet find the real file."""
    torch = pytest.importorskip("torch")
    from fastfid.models import FIDInceptionV3

    path = tmp_path_factory.mktemp("weights") / "pt_inception-2015-12-05-6726825d.pth"
    torch.manual_seed(0)
    torch.save(FIDInceptionV3(weights=False).state_dict(), path)
    return path


def test_python_examples_run(tmp_path, monkeypatch, capsys, fid_weights):
    monkeypatch.setenv("FASTFID_WEIGHTS", str(fid_weights))
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for code in blocks("python"):
        exec(compile(code, str(README), "exec"), namespace)
    assert "FID" in capsys.readouterr().out


@pytest.mark.parametrize("script", blocks("bash"))
def test_shell_examples_run(tmp_path, script, fid_weights):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               FASTFID_WEIGHTS=str(fid_weights))
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert re.search(r"^FID: \d+\.\d{6}(  \[.*\])?$", run.stdout, flags=re.M)
