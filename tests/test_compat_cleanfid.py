"""fastfid.compat.cleanfid against clean-fid itself. Its legacy_pytorch mode loads pytorch-fid's
weights from the torch hub cache; its "clean" mode runs NVIDIA's TorchScript network, which cannot be
downloaded here: a TorchScript file of the same network with the test weights stands in for it, so
that clean-fid's own loading, resizing and scaling run. ("legacy_tensorflow" resizes inside that
file, so only its preprocessing is checked, in test_compat_preprocessing.)"""

import numpy as np
import pytest
import torch
from PIL import Image

from support.peers import peer

cf = peer("cleanfid.fid")
from fastfid.compat import cleanfid  # noqa: E402

# clean-fid calls scipy's sqrtm with an argument SciPy 1.16 deprecates.
# and torchvision's deprecated `pretrained` argument.
pytestmark = [pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:The parameter 'pretrained' is deprecated:UserWarning"),
              pytest.mark.filterwarnings("ignore:Arguments other than a weight enum:UserWarning"),
              # clean-fid loads NVIDIA's network with torch.jit, which torch 2.13 deprecates.
              pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning")]


@pytest.fixture(scope="module")
def folders(tmp_path_factory, peer_weights):
    root = tmp_path_factory.mktemp("cleanfid_images")
    rng = np.random.default_rng(9)
    for name, count, shift in (("a", 20, 0), ("b", 36, 50)):
        (root / name / "sub").mkdir(parents=True)
        for i in range(count):
            pixels = np.clip(rng.integers(0, 200, (20, 24, 3)) + shift, 0, 255).astype(np.uint8)
            where = root / name / ("sub" if i % 4 == 0 else "")  # clean-fid searches recursively
            Image.fromarray(pixels).save(where / f"{i:03d}.png")
    return str(root / "a"), str(root / "b")


def _ours_fastfid_home(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTFID_HOME", str(tmp_path))



@pytest.mark.slow
def test_legacy_pytorch_fid_and_kid_equal_clean_fids(folders):
    theirs = cf.compute_fid(folders[0], folders[1], mode="legacy_pytorch", device=torch.device("cpu"), num_workers=0,
                            batch_size=16, verbose=False)
    mine = cleanfid.compute_fid(folders[0], folders[1], mode="legacy_pytorch", device="cpu", num_workers=0,
                                batch_size=16, verbose=False)
    # 2048 features from 20 images: both covariances are singular, where sqrtm can lose digits; here
    # clean-fid's still agrees to ~1e-8.
    assert mine == pytest.approx(theirs, rel=1e-4)
    np.random.seed(4)
    theirs_kid = cf.compute_kid(folders[0], folders[1], mode="legacy_pytorch", device=torch.device("cpu"),
                                num_workers=0, batch_size=16, verbose=False)
    np.random.seed(4)
    mine_kid = cleanfid.compute_kid(folders[0], folders[1], mode="legacy_pytorch", device="cpu", num_workers=0,
                                    batch_size=16, verbose=False)
    # Same subsets (numpy's global generator, clean-fid's order); ~2e-7 apart (clean-fid's float32 features).
    assert mine_kid == pytest.approx(theirs_kid, rel=1e-4)


class _Pool3Layers(torch.nn.Module):
    """The FID Inception from scaled 299 × 299 input to pool3 as (N, 2048, 1, 1): what clean-fid calls
    as ``base.layers`` of NVIDIA's file."""

    def __init__(self, network):
        super().__init__()
        self.network = network

    def forward(self, x):
        *_, (_, last) = self.network.block_maps(x)
        return last.mean(dim=(2, 3), keepdim=True)


class _TorchScriptInception(torch.nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.layers = layers

    def forward(self, x):
        return self.layers(x)


@pytest.fixture
def nvidia_stand_in(tmp_path, monkeypatch, peer_weights):
    """clean-fid's InceptionV3W reading a TorchScript file of the test network from tmp_path (clean-fid
    itself would download NVIDIA's file to /tmp)."""
    from fastfid.models import FIDInceptionV3

    inception_torchscript = peer("cleanfid.inception_torchscript")
    features = peer("cleanfid.features")
    network = FIDInceptionV3(weights=peer_weights)
    layers = torch.jit.trace(_Pool3Layers(network), torch.zeros(1, 3, 299, 299))
    torch.jit.save(torch.jit.script(_TorchScriptInception(layers)), tmp_path / "inception-2015-12-05.pt")
    original = inception_torchscript.InceptionV3W

    def from_tmp(path, download, resize_inside=False):
        return original(str(tmp_path), download=False, resize_inside=resize_inside)

    monkeypatch.setattr(features, "InceptionV3W", from_tmp)


@pytest.mark.slow
def test_clean_mode_features_and_fid_equal_clean_fids(folders, nvidia_stand_in):
    """clean-fid's own pipeline (its file listing, PIL bicubic resize, (x − 128)/128, its batches)
    against the drop-in's, feature by feature; then the FID, whose only difference is the trace term."""
    from fastfid import FeatureStats, fid

    device = torch.device("cpu")
    their_features = []
    for folder in folders:
        theirs = cf.get_folder_features(folder, cf.build_feature_extractor("clean", device, use_dataparallel=False),
                                        num_workers=0, batch_size=16, device=device, mode="clean", verbose=False)
        mine = cleanfid.get_folder_features(folder, num_workers=0, batch_size=16, device="cpu", mode="clean",
                                            verbose=False)
        # float32 network outputs of order 10: the same arithmetic up to float32 rounding of the resize.
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-4)
        their_features.append(theirs)
    with pytest.warns(Warning, match="singular"):  # 20 images, 2048 features: clean-fid's sqrtm warns
        theirs = cf.compute_fid(folders[0], folders[1], mode="clean", device=device, num_workers=0, batch_size=16,
                                verbose=False, use_dataparallel=False)
    mine = cleanfid.compute_fid(folders[0], folders[1], mode="clean", device="cpu", num_workers=0, batch_size=16,
                                verbose=False)
    exact = fid(*(FeatureStats.from_features(features) for features in their_features))
    assert mine == pytest.approx(exact, rel=1e-6)  # the exact FD of clean-fid's own features
    # clean-fid's sqrtm warns about the singular covariances yet agrees to ~1e-7 here.
    assert mine == pytest.approx(theirs, rel=1e-4)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Matrix is singular")  # clean-fid's sqrtm: 24 samples, 2048 features
def test_a_generator_against_a_folder_gets_clean_fids_latents(folders, nvidia_stand_in):
    def generator(z):  # images in [0, 255], as clean-fid's generators return them
        return torch.sigmoid(z[:, :3, None, None] + torch.zeros(1, 1, 16, 16)) * 255

    values = []
    for compute in (cf.compute_fid, cleanfid.compute_fid):
        # The same latents only if the folder's loader (which draws a seed) and the generator run in
        # clean-fid's order, and if building the network draws nothing (clean-fid loads TorchScript).
        torch.manual_seed(5)
        values.append(compute(gen=generator, fdir2=folders[1], mode="clean", device=torch.device("cpu"),
                              num_gen=24, z_dim=8, batch_size=8, num_workers=0, verbose=False,
                              **({"use_dataparallel": False} if compute is cf.compute_fid else {})))
    # Same latents, same network: the features agree to float32 rounding; other latents were ~4 % off.
    assert values[1] == pytest.approx(values[0], rel=1e-4)


@pytest.mark.slow
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
    # clean-fid's defaults (1024, "train") name no file it hosts: said, with what it hosts, not a 404.
    with pytest.raises(ValueError, match="no clean-fid statistics for dataset_name='FFHQ', dataset_res=1024, "
                                         "dataset_split='train'.*clean-fid hosts FFHQ as split/resolution trainval/1024"):
        cleanfid.compute_fid(folders[0], dataset_name="FFHQ", device="cpu", num_workers=0, verbose=False)
