"""fastfid.compat.cleanfid against clean-fid itself (its legacy_pytorch mode runs here: its weights
come from the torch hub cache; "clean" and "legacy_tensorflow" need NVIDIA's TorchScript network,
which cannot be downloaded, so their preprocessing is checked in test_compat_preprocessing)."""

import numpy as np
import pytest
import torch
from PIL import Image

from peers import peer

cf = peer("cleanfid.fid")
from fastfid.compat import cleanfid  # noqa: E402

# clean-fid calls scipy's sqrtm with an argument SciPy 1.16 deprecates.
# and torchvision's deprecated `pretrained` argument.
pytestmark = [pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:The parameter 'pretrained' is deprecated:UserWarning"),
              pytest.mark.filterwarnings("ignore:Arguments other than a weight enum:UserWarning")]


@pytest.fixture(scope="module")
def folders(tmp_path_factory, peer_weights):
    root = tmp_path_factory.mktemp("cleanfid_images")
    rng = np.random.default_rng(9)
    for name, count, shift in (("a", 40, 0), ("b", 36, 50)):
        (root / name / "sub").mkdir(parents=True)
        for i in range(count):
            pixels = np.clip(rng.integers(0, 200, (20, 24, 3)) + shift, 0, 255).astype(np.uint8)
            where = root / name / ("sub" if i % 4 == 0 else "")  # clean-fid searches recursively
            Image.fromarray(pixels).save(where / f"{i:03d}.png")
    return str(root / "a"), str(root / "b")


def _ours_fastfid_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTFID_HOME", str(tmp_path))



def test_legacy_pytorch_fid_and_kid_equal_clean_fids(folders):
    theirs = cf.compute_fid(folders[0], folders[1], mode="legacy_pytorch", device=torch.device("cpu"), num_workers=0,
                            batch_size=16, verbose=False)
    mine = cleanfid.compute_fid(folders[0], folders[1], mode="legacy_pytorch", device="cpu", num_workers=0,
                                batch_size=16, verbose=False)
    # 2048 features from 40 images: both covariances are singular, where clean-fid's sqrtm is the less
    # exact side (fastfid's trace term is exact to ~1e-12 here, see test_distance); they still agree to 1e-3.
    assert mine == pytest.approx(theirs, rel=1e-3)
    np.random.seed(4)
    theirs_kid = cf.compute_kid(folders[0], folders[1], mode="legacy_pytorch", device=torch.device("cpu"),
                                num_workers=0, batch_size=16, verbose=False)
    np.random.seed(4)
    mine_kid = cleanfid.compute_kid(folders[0], folders[1], mode="legacy_pytorch", device="cpu", num_workers=0,
                                    batch_size=16, verbose=False)
    # Same subsets (numpy's global generator, clean-fid's order); clean-fid's kernel sums are float32.
    assert mine_kid == pytest.approx(theirs_kid, rel=1e-3, abs=1e-6)


def test_custom_stats_round_trip(folders, tmp_path, monkeypatch):
    _ours_fastfid_home(tmp_path, monkeypatch)
    assert not cleanfid.test_stats_exists("mine", mode="clean")
    cleanfid.make_custom_stats("mine", folders[1], mode="clean", device="cpu", verbose=False)
    assert cleanfid.test_stats_exists("mine", mode="clean") and cleanfid.test_stats_exists("mine", "clean", metric="KID")
    with pytest.raises(Exception, match="already exists"):
        cleanfid.make_custom_stats("mine", folders[1], mode="clean", device="cpu", verbose=False)
    against_stats = cleanfid.compute_fid(folders[0], dataset_name="mine", dataset_split="custom", mode="clean",
                                         device="cpu", num_workers=0, verbose=False)
    against_folder = cleanfid.compute_fid(folders[0], folders[1], mode="clean", device="cpu", num_workers=0,
                                          verbose=False)
    assert against_stats == pytest.approx(against_folder, rel=1e-10)

    def generator(z):  # images in [0, 255], as clean-fid's generators return them
        return (torch.sigmoid(z[:, :3, None, None] + torch.zeros(1, 1, 16, 16)) * 255)

    fid_gen = cleanfid.compute_fid(gen=generator, dataset_name="mine", dataset_split="custom", mode="clean",
                                   device="cpu", num_gen=20, z_dim=8, batch_size=8, verbose=False)
    assert fid_gen > 0
    cleanfid.remove_custom_stats("mine", mode="clean")
    assert not cleanfid.test_stats_exists("mine", mode="clean")
    with pytest.raises(Exception, match="does not exist"):
        cleanfid.remove_custom_stats("mine", mode="clean")


def test_custom_extractor_and_refusals(folders):
    def mean_colour(batch):  # clean-fid hands custom extractors float 0–255 NCHW batches
        assert batch.shape[1:] == (3, 299, 299) and float(batch.max()) > 1
        return batch.mean(dim=(2, 3))

    value = cleanfid.compute_fid(folders[0], folders[1], mode="clean", custom_feat_extractor=mean_colour,
                                 device="cpu", num_workers=0, verbose=False)
    assert value > 0
    with pytest.raises(ValueError, match="Invalid mode"):
        cleanfid.compute_fid(folders[0], folders[1], mode="tensorflow", device="cpu")
    with pytest.raises(ValueError, match="CLIP"):
        cleanfid.compute_fid(folders[0], folders[1], model_name="clip_vit_b_32", device="cpu")
    with pytest.raises(ValueError, match="not fetched"):
        cleanfid.compute_fid(folders[0], dataset_name="FFHQ", device="cpu", num_workers=0, verbose=False)
