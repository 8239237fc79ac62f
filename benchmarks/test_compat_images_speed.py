"""Each peer's own FID run from images beside its drop-in, on the same images and weights, in one
run: pytorch-fid's calculate_fid_given_paths, torchmetrics' update + compute, clean-fid's
compute_fid (legacy_pytorch: its other modes need NVIDIA's TorchScript file) and torch-fidelity's
calculate_metrics. FASTFID_BENCH_IMAGES images at 299 × 299 in all (default 2,000: half in each
folder); the network is the FID Inception with random weights (the same arithmetic as the real ones).

python -m pytest benchmarks/test_compat_images_speed.py --benchmark-group-by=group --benchmark-columns=median,rounds
"""

import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from PIL import Image  # noqa: E402

from support.benchmarks import image_folders  # noqa: E402
from support.peers import calibrated_state_dict, peer  # noqa: E402

IMAGES = int(os.environ.get("FASTFID_BENCH_IMAGES", "2000"))
BATCH, WORKERS = 50, 2
pytestmark = [pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")]
# With fewer images than the 2048 features both covariances are singular, where the peers' trace
# terms (sqrtm, eigenvalues of Σ₁Σ₂) lose digits: agreement to 1e-2 here; the tests prove 1e-4
# where the peers are well conditioned.
AGREEMENT = 1e-2


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dropin_images")
    home = root / "torch_home" / "hub" / "checkpoints"
    home.mkdir(parents=True)
    state = calibrated_state_dict()
    for name in ("pt_inception-2015-12-05-6726825d.pth", "weights-inception-2015-12-05-6726825d.pth"):
        torch.save(state, home / name)
    previous = {k: os.environ.get(k) for k in ("TORCH_HOME", "FASTFID_WEIGHTS")}
    os.environ["TORCH_HOME"] = str(root / "torch_home")
    os.environ["FASTFID_WEIGHTS"] = str(home / "pt_inception-2015-12-05-6726825d.pth")
    folders = image_folders(root, IMAGES)
    tensors = [torch.stack([torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1)
                            for p in sorted(Path(f).iterdir())]) for f in folders]
    yield folders, tensors
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _once(benchmark, function):
    return benchmark.pedantic(function, rounds=1, iterations=1, warmup_rounds=0)


@pytest.fixture(scope="module")
def results():
    return {}


def _agree(results, group, side, value):
    results.setdefault(group, {})[side] = value
    if len(results[group]) == 2:
        a, b = results[group].values()
        assert a == pytest.approx(b, rel=AGREEMENT)


@pytest.mark.benchmark(group="drop-in pytorch-fid: calculate_fid_given_paths, images")
@pytest.mark.parametrize("side", ["pytorch-fid", "fastfid.compat"])
def test_pytorch_fid(benchmark, setup, results, side):
    module = peer("pytorch_fid.fid_score") if side == "pytorch-fid" else peer("fastfid.compat.pytorch_fid.fid_score")
    value = _once(benchmark, lambda: module.calculate_fid_given_paths(setup[0], BATCH, "cpu", 2048, WORKERS))
    _agree(results, "pytorch-fid", side, float(value))


@pytest.mark.benchmark(group="drop-in torchmetrics: update + compute, images")
@pytest.mark.parametrize("side", ["torchmetrics", "fastfid.compat"])
def test_torchmetrics(benchmark, setup, results, side):
    module = peer("torchmetrics.image.fid") if side == "torchmetrics" else peer("fastfid.compat.torchmetrics")
    real, generated = setup[1]

    def run():
        metric = module.FrechetInceptionDistance(feature=2048)
        for batch in real.split(BATCH):
            metric.update(batch, real=True)
        for batch in generated.split(BATCH):
            metric.update(batch, real=False)
        return float(metric.compute())

    _agree(results, "torchmetrics", side, _once(benchmark, run))


@pytest.mark.benchmark(group="drop-in clean-fid: compute_fid legacy_pytorch, images")
@pytest.mark.parametrize("side", ["clean-fid", "fastfid.compat"])
def test_cleanfid(benchmark, setup, results, side):
    if side == "clean-fid":
        module, device = peer("cleanfid.fid"), torch.device("cpu")
    else:
        module, device = peer("fastfid.compat.cleanfid"), "cpu"
    value = _once(benchmark, lambda: module.compute_fid(*setup[0], mode="legacy_pytorch", device=device,
                                                        num_workers=WORKERS, batch_size=BATCH, verbose=False))
    _agree(results, "clean-fid", side, float(value))


@pytest.mark.benchmark(group="drop-in torch-fidelity: calculate_metrics fid, images")
@pytest.mark.parametrize("side", ["torch-fidelity", "fastfid.compat"])
def test_torch_fidelity(benchmark, setup, results, side):
    module = peer("torch_fidelity") if side == "torch-fidelity" else peer("fastfid.compat.torch_fidelity")
    options = dict(input1=setup[0][1], input2=setup[0][0], fid=True, cuda=False, batch_size=BATCH, verbose=False)
    if side == "torch-fidelity":
        options["cache"] = False
    value = _once(benchmark, lambda: module.calculate_metrics(**options)["frechet_inception_distance"])
    _agree(results, "torch-fidelity", side, float(value))
