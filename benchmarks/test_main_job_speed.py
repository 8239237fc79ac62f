"""The main job, images → FID, timed as a user runs it, from the command line, in one group:

- pytorch-fid's own CLI (``python -m pytorch_fid A B``, version 0.3.0);
- fastfid's CLI before: ``FASTFID_EXECUTION=eager``, the network as it ran until issue 30;
- fastfid's CLI after: the default, ``auto`` (the fastest of eager, channels-last, frozen and
  compiled that gives eager's features within 1e-6, measured on the job's own batches).

Same images (two folders of 299 × 299 PNGs), same weights (calibrated random FID Inception weights in
a private torch hub cache, under pytorch-fid's file name), same batch size and loader workers, on the
CPU. Each side is one process, its start and imports included, as a user waits for it. The three FIDs
are asserted to agree.

FASTFID_BENCH_MAIN_IMAGES images in all (default 1,200: 24 batches of 25 in each folder, enough for auto to
try a frozen graph; CI runs it at 16, where auto has too few batches to try anything and runs eager).

python -m pytest benchmarks/test_main_job_speed.py --benchmark-columns=median,rounds
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("PIL")

from support.benchmarks import image_folders  # noqa: E402
from support.peers import calibrated_state_dict  # noqa: E402

IMAGES = int(os.environ.get("FASTFID_BENCH_MAIN_IMAGES", "1200"))
BATCH, WORKERS = 25, 2
TESTS = Path(__file__).resolve().parents[1] / "tests"
# pytorch-fid's CLI needs torchvision, which the test environment's CPU torch cannot load without
# the tests' shim (tests/support/peers.py); its module then runs as `python -m pytorch_fid` would.
PYTORCH_FID = ("import runpy, sys; sys.path.insert(0, {tests!r}); from support.peers import declare_torchvision_ops; "
               "declare_torchvision_ops(); sys.argv[0] = 'pytorch_fid'; runpy.run_module('pytorch_fid', "
               "run_name='__main__', alter_sys=True)")


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    root = tmp_path_factory.mktemp("main_job")
    checkpoints = root / "torch_home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(calibrated_state_dict(), checkpoints / "pt_inception-2015-12-05-6726825d.pth")
    folders = image_folders(root, IMAGES)
    environment = dict(os.environ, TORCH_HOME=str(root / "torch_home"),
                       FASTFID_WEIGHTS=str(checkpoints / "pt_inception-2015-12-05-6726825d.pth"))
    return folders, environment


@pytest.fixture(scope="module")
def results():
    return {}


def _command(side, folders):
    common = [*folders, "--device", "cpu", "--batch-size", str(BATCH), "--num-workers", str(WORKERS)]
    if side == "pytorch-fid CLI":
        return [sys.executable, "-c", PYTORCH_FID.format(tests=str(TESTS)), *common]
    return [sys.executable, "-m", "fastfid", "fid", *common]


def _fid(output: str) -> float:
    return float(re.search(r"FID:\s+([0-9.eE+-]+)", output).group(1))


@pytest.mark.benchmark(group=f"images-to-fid-cli-{IMAGES}-images-299x299")
@pytest.mark.parametrize("side", ["pytorch-fid CLI", "fastfid CLI before (eager)", "fastfid CLI after (auto)"])
def test_images_to_fid(benchmark, job, results, side):
    folders, environment = job
    environment = dict(environment, FASTFID_EXECUTION="eager" if "eager" in side else "auto")

    def run():
        done = subprocess.run(_command(side, folders), env=environment, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        return _fid(done.stdout)

    fid = benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    if benchmark.stats is not None:
        benchmark.extra_info["images_per_second"] = IMAGES / benchmark.stats.stats.median
    results[side] = fid
    if "eager" in side or "pytorch-fid" in side:
        return
    # auto's features are eager's within 1e-6 relative: the means and covariances move by ~1e-6 of
    # their scale, and the FID (their squared differences and the trace term) by a few times that.
    assert fid == pytest.approx(results["fastfid CLI before (eager)"], rel=1e-5)
    # Against pytorch-fid: with fewer images than 2048 features both covariances are singular, where
    # its scipy sqrtm loses digits (benchmarks/test_compat_images_speed.py): agreement to 1e-2.
    assert fid == pytest.approx(results["pytorch-fid CLI"], rel=1e-2)
