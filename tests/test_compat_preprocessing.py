"""Each preprocessing mode against the peer's own code on the same images: the tensor that enters
the network's first convolution (299 × 299, scaled) agrees within 1e-6."""

import numpy as np
import pytest
import torch

from fastfid.data import resize_batch
from fastfid.models import FIDInceptionV3
from fastfid.resize_modes import input_scaling
from support.peers import peer

SIZES = [(32, 32), (64, 48), (300, 310), (512, 384)]


def network_input(images: torch.Tensor, mode: str) -> torch.Tensor:
    """fastfid's input to Conv2d_1a for uint8 NCHW images in ``mode``."""
    network = FIDInceptionV3(weights=False, scaling=input_scaling(mode))
    return network._prepare(resize_batch(images.float() / 255, (299, 299), mode))


def first_convolution_input(module: torch.nn.Module, run) -> torch.Tensor:
    """What reaches ``module`` (a peer's Conv2d_1a) when ``run()`` runs the peer."""
    seen = []
    handle = module.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    try:
        with torch.no_grad():
            run()
    finally:
        handle.remove()
    return seen[0]


def uint8_images(size, n=2, seed=0):
    return torch.randint(0, 256, (n, 3, *size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


# 1e-6 on values in [-1, 1]: both sides compute the same float32 formula; fastfid holds pixels as
# u/255 between steps, which moves a value by at most a few float32 ulps (~1e-7).
TOLERANCE = dict(rtol=0, atol=1e-6)


@pytest.mark.parametrize("size", SIZES)
def test_pytorch_fid_mode_is_pytorch_fids(size, peer_weights):
    inception = peer("pytorch_fid.inception")
    model = inception.InceptionV3([0]).eval()
    images = uint8_images(size)
    theirs = first_convolution_input(model.blocks[0][0], lambda: model(images.float() / 255))
    torch.testing.assert_close(network_input(images, "pytorch-fid"), theirs, **TOLERANCE)


@pytest.mark.parametrize("size", SIZES)
def test_torch_fidelity_mode_is_torch_fidelitys(size, peer_weights):
    extractor = peer("torch_fidelity.feature_extractor_inceptionv3")
    model = extractor.FeatureExtractorInceptionV3("inception-v3-compat", ["64"])
    images = uint8_images(size)
    theirs = first_convolution_input(model.Conv2d_1a_3x3, lambda: model(images))
    torch.testing.assert_close(network_input(images, "torch-fidelity"), theirs, **TOLERANCE)


@pytest.mark.parametrize("antialias, mode", [(True, "torchmetrics"), (False, "torch-fidelity")])
@pytest.mark.parametrize("size", SIZES)
def test_torchmetrics_modes_are_torchmetrics(size, antialias, mode, peer_weights):
    fid = peer("torchmetrics.image.fid")
    metric = fid.FrechetInceptionDistance(feature=64, antialias=antialias)
    images = uint8_images(size)
    theirs = first_convolution_input(metric.inception.Conv2d_1a_3x3, lambda: metric.update(images, real=True))
    torch.testing.assert_close(network_input(images, mode), theirs, **TOLERANCE)


@pytest.mark.parametrize("size", SIZES)
def test_clean_mode_is_clean_fids(size):
    resize = peer("cleanfid.resize")
    images = uint8_images(size)
    resizer = resize.build_resizer("clean")
    # clean-fid resizes each HWC uint8 image, then its network computes (x − 128) / 128.
    theirs = torch.stack([torch.from_numpy(resizer(image.permute(1, 2, 0).numpy())).permute(2, 0, 1)
                          for image in images])
    theirs = (theirs - 128) / 128
    torch.testing.assert_close(network_input(images, "clean"), theirs, **TOLERANCE)


@pytest.mark.parametrize("size", SIZES)
def test_legacy_tensorflow_mode_samples_as_tensorflow_1(size):
    """clean-fid's legacy_tensorflow resizes inside NVIDIA's TorchScript Inception, which cannot be
    downloaded here; its resize is TensorFlow 1's bilinear, checked against torch-fidelity's
    independent implementation of it (the same sample positions, float32 arithmetic)."""
    interpolate = peer("torch_fidelity.interpolate_compat_tensorflow")
    images = uint8_images(size)
    theirs = interpolate.interpolate_bilinear_2d_like_tensorflow1x(images.float(), size=(299, 299),
                                                                   align_corners=False)
    torch.testing.assert_close(network_input(images, "legacy_tensorflow"), (theirs - 128) / 128, **TOLERANCE)


def test_tf1_bilinear_against_float64_formula():
    """The TF1 resize against the formula in float64 numpy (independent of any peer)."""
    from fastfid.data import tf1_bilinear

    image = np.random.default_rng(2).uniform(0, 255, (1, 1, 7, 5))
    out_h, out_w = 11, 3
    ys = np.arange(out_h) * (7 / out_h)
    xs = np.arange(out_w) * (5 / out_w)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, 6), np.minimum(x0 + 1, 4)
    wy, wx = (ys - y0)[:, None], (xs - x0)[None, :]
    a = image[0, 0]
    expected = ((1 - wy) * ((1 - wx) * a[np.ix_(y0, x0)] + wx * a[np.ix_(y0, x1)])
                + wy * ((1 - wx) * a[np.ix_(y1, x0)] + wx * a[np.ix_(y1, x1)]))
    ours = tf1_bilinear(torch.from_numpy(image).float(), (out_h, out_w))[0, 0].double().numpy()
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-4)  # float32 positions and weights on 0–255 values


def test_drop_ins_import_without_their_peers():
    """Only the torchmetrics drop-in needs its peer (it subclasses Metric); the others import with
    pytorch-fid, clean-fid, torch-fidelity, torchmetrics and torchvision made unimportable."""
    import subprocess
    import sys

    blocked = ["pytorch_fid", "cleanfid", "torch_fidelity", "torchmetrics", "torchvision"]
    code = (f"import sys\nfor name in {blocked!r}: sys.modules[name] = None\n"
            "import fastfid.compat.pytorch_fid, fastfid.compat.cleanfid, fastfid.compat.torch_fidelity\n"
            "try:\n    import fastfid.compat.torchmetrics\nexcept ImportError as error:\n    print(error)\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "pip install torchmetrics" in run.stdout


def test_fastfid_fid_gives_torchmetrics_numbers_in_its_mode(peer_weights):
    """fastfid.FID with resize="torchmetrics" on uint8 images: torchmetrics' FID (the 1 % gap the
    default pytorch-fid preprocessing shows against torchmetrics is preprocessing, not arithmetic)."""
    import fastfid

    fid = peer("torchmetrics.image.fid")
    # more images than the 64 features: torchmetrics' eigenvalue route is well conditioned, a fair reference
    real, fake = uint8_images((40, 40), n=90, seed=1), uint8_images((40, 40), n=80, seed=2) // 2
    theirs, ours = fid.FrechetInceptionDistance(feature=64), fastfid.FID(feature=64, resize="torchmetrics")
    for metric in (theirs, ours):
        metric.update(real, real=True)
        metric.update(fake, real=False)
    assert float(ours.compute()) == pytest.approx(float(theirs.compute()), rel=1e-4)
