"""Every example in the README and in the manual (docs/) runs as written, each block on its own
(pasted alone into a fresh interpreter or shell, in an empty folder). The ```sh blocks are the
set-up commands (pip installs)."""

import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]


def blocks(language, documents=DOCUMENTS):
    return [block for document in documents
            for block in re.findall(rf"```{language}\n(.*?)```", document.read_text(), flags=re.S)]


def test_readme_has_examples_and_leads():
    assert len(blocks("python", [README])) >= 2 and len(blocks("bash", [README])) >= 1
    assert len(blocks("sh", [README])) >= 2
    assert len(README.read_text().splitlines()) <= 350  # the front page; the rest is in docs/
    assert len(blocks("python")) > len(blocks("python", [README]))  # the manual's examples run too


def test_every_page_of_the_manual_is_in_its_table_of_contents():
    listed = re.findall(r"^  - [^:]+: (\S+\.md)$", (ROOT / "mkdocs.yml").read_text(), flags=re.M)
    assert sorted(listed) == sorted(path.name for path in (ROOT / "docs").glob("*.md"))


@pytest.fixture(scope="module")
def fid_weights(tmp_path_factory):
    """No download here: the examples find a random state dict through FASTFID_WEIGHTS, as users
    without internet find the real file."""
    torch = pytest.importorskip("torch")

    path = tmp_path_factory.mktemp("weights") / "pt_inception-2015-12-05-6726825d.pth"
    torch.manual_seed(0)
    from support.peers import calibrated_state_dict

    torch.save(calibrated_state_dict(), path)
    return path


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    """A torch hub cache holding a random DINOv2 ViT-S/14 in Meta's layout (the examples' space),
    where the real file would be downloaded to."""
    torch = pytest.importorskip("torch")
    from support.peers import declare_torchvision_ops

    declare_torchvision_ops()
    timm = pytest.importorskip("timm")
    home = tmp_path_factory.mktemp("torch_home")
    (home / "hub" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    network = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=518)
    torch.save({**network.state_dict(), "mask_token": torch.zeros(1, 384)},
               home / "hub" / "checkpoints" / "dinov2_vits14_pretrain.pth")
    return home


def _environment(fid_weights, torch_home=None, shim: bool = False) -> dict:
    extra = {"TORCH_HOME": str(torch_home)} if torch_home is not None else {}
    if shim:
        # A `fastfid` started by a shell block gets the shim (see _SHIMMED) from a sitecustomize.
        startup = Path(str(fid_weights) + ".startup")
        startup.mkdir(exist_ok=True)
        (startup / "sitecustomize.py").write_text(
            f"import sys\nsys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
            "from support.peers import declare_torchvision_ops\ndeclare_torchvision_ops()\n")
        extra["PYTHONPATH"] = os.pathsep.join(filter(None, [str(startup), os.environ.get("PYTHONPATH")]))
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
                FASTFID_WEIGHTS=str(fid_weights), **extra)


# Each block runs as a user runs it: a fresh interpreter (or shell), nothing added. Where this
# environment's torchvision cannot load beside its torch (the registry's torchvision is built for the
# CUDA torch; the CPU torch is what the test command installs, see the README), a block that needs
# torchvision (the spaces through timm, torchmetrics) must fail with fastfid's one line that names
# the problem and the fix, which is what a user sees; that block's own work is then proven by
# running it again with the tests' shim (support/peers.py), which declares the two torchvision
# operators a matching build would register. With a torchvision that loads, no block needs the shim.
_PLAIN = "import sys; exec(compile(sys.argv[1], 'README block', 'exec'), {'__name__': '__main__'})"
_SHIMMED = ("import sys; sys.path.insert(0, {tests!r}); from support.peers import declare_torchvision_ops; "
            "declare_torchvision_ops(); exec(compile(sys.argv[1], 'README block', 'exec'), {{'__name__': '__main__'}})")
_TORCHVISION_LINE = "cannot load beside torch"


@functools.cache
def _torchvision_loads() -> bool:
    probe = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True)
    return probe.returncode == 0 or "No module named 'torchvision'" in probe.stderr


def _as_a_user_runs_it(run_block) -> subprocess.CompletedProcess:
    """The block's run as it is; where it failed only for this environment's torchvision (with the
    one line that says so), its run with the shim."""
    run = run_block(False)
    if run.returncode != 0 and not _torchvision_loads():
        assert _TORCHVISION_LINE in run.stderr and "pip install torch==2.14.1 torchvision==0.29.1" in run.stderr, \
            run.stderr
        run = run_block(True)
    return run


def _run_alone(code: str, folder: Path, fid_weights: Path, torch_home=None, shim: bool = False):
    runner = _SHIMMED.format(tests=str(Path(__file__).resolve().parent)) if shim else _PLAIN
    return subprocess.run([sys.executable, "-c", runner, code], cwd=folder, env=_environment(fid_weights, torch_home),
                          capture_output=True, text=True, timeout=600)


def _first_line(code: str) -> str:
    return next(line for line in code.splitlines() if line.strip())[:60]


@pytest.mark.slow
@pytest.mark.parametrize("code", blocks("python"), ids=_first_line)
def test_each_python_example_runs_alone(tmp_path, code, fid_weights, torch_home):
    run = _as_a_user_runs_it(lambda shim: _run_alone(code, tmp_path, fid_weights, torch_home, shim))
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() or "print(" not in code  # what it prints is there


@pytest.mark.slow
@pytest.mark.parametrize("script", blocks("bash"), ids=_first_line)
def test_shell_examples_run(tmp_path, script, fid_weights, torch_home):
    run = _as_a_user_runs_it(lambda shim: subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=_environment(fid_weights, torch_home, shim),
        capture_output=True, text=True))
    assert run.returncode == 0, run.stderr
    assert re.search(r"^FID: \d+\.\d{6}(  \[.*\])?$", run.stdout, flags=re.M)
