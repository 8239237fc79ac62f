"""fastfid.compat.torch_fidelity against torch-fidelity itself, on the same images and weights."""

import numpy as np
import pytest
import torch
from PIL import Image

from support.peers import peer

tf = peer("torch_fidelity")
from fastfid.compat import torch_fidelity  # noqa: E402

# torch-fidelity's own code warns about a torchvision argument.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def folders(tmp_path_factory, peer_weights):
    root = tmp_path_factory.mktemp("fidelity_images")
    rng = np.random.default_rng(13)
    for name, count, shift in (("a", 80, 0), ("b", 72, 45)):
        (root / name).mkdir()
        for i in range(count):
            pixels = np.clip(rng.integers(0, 200, (20, 20, 3)) + shift, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:03d}.png")
    return str(root / "a"), str(root / "b")


@pytest.mark.slow
def test_all_metrics_equal_torch_fidelitys(folders, tmp_path):
    options = dict(input1=folders[0], input2=folders[1], isc=True, fid=True, kid=True, prc=True, cuda=False,
                   feature_extractor="inception-v3-compat",
                   batch_size=40, kid_subsets=10, kid_subset_size=50, isc_splits=4, feature_layer_fid="64",
                   verbose=False)
    theirs = tf.calculate_metrics(**options, cache_root=str(tmp_path), cache=False)
    mine = torch_fidelity.calculate_metrics(**options)
    assert set(mine) == set(theirs)
    # FID on the 64 features of the first block (more images than features: torch-fidelity's
    # eigenvalue trace term is well conditioned there, so it is a fair reference).
    assert mine["frechet_inception_distance"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-4)
    # IS: same permutation and splits; torch-fidelity computes it in float64 too.
    assert mine["inception_score_mean"] == pytest.approx(theirs["inception_score_mean"], rel=1e-5)
    assert mine["inception_score_std"] == pytest.approx(theirs["inception_score_std"], rel=1e-4)
    # KID: same subsets (RandomState(rng_seed)); torch-fidelity's kernel sums are float32 (~1e-6 apart here).
    assert mine["kernel_inception_distance_mean"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-4)
    assert mine["kernel_inception_distance_std"] == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-4)
    for key in ("precision", "recall", "f_score"):
        assert mine[key] == pytest.approx(theirs[key], abs=1e-12)


def test_tensors_generators_and_errors(folders):
    images = torch.randint(0, 256, (24, 3, 20, 20), dtype=torch.uint8)

    class Generator(torch.nn.Module):
        z_size, z_type, num_classes = 4, "normal", 0

        def forward(self, z):
            return (torch.sigmoid(z[:, :3, None, None] + torch.zeros(1, 1, 20, 20)) * 255).to(torch.uint8)

    result = torch_fidelity.calculate_metrics(input1=Generator(), input1_model_num_samples=24, input2=images, fid=True,
                                              feature_layer_fid="64", cuda=False, verbose=False)
    assert result["frechet_inception_distance"] > 0
    with pytest.raises(ValueError, match="KID subset size 1000"):
        torch_fidelity.calculate_metrics(input1=images, input2=images, kid=True, cuda=False, verbose=False)
    with pytest.raises(ValueError, match="VGG16"):
        torch_fidelity.calculate_metrics(input1=images, input2=images, prc=True, cuda=False)
    with pytest.raises(ValueError, match="At least one metric"):
        torch_fidelity.calculate_metrics(input1=images, cuda=False)
    with pytest.raises(ValueError, match="need input2"):
        torch_fidelity.calculate_metrics(input1=images, fid=True, cuda=False)
    with pytest.raises(ValueError, match="uint8"):
        torch_fidelity.calculate_metrics(input1=images.float(), input2=images, fid=True, cuda=False)
