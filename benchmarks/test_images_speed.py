"""Images per second from a folder of PNGs to statistics, on this machine's CPU.

Two groups, each fastfid beside its reference, both asserting the same statistics:

- a small convolutional network on 64 × 64 images (where loading and decoding dominate):
  ``fastfid.compute_stats`` (DataLoader workers, streaming float64 statistics) against pytorch-fid's
  method (the same DataLoader, every feature kept in an array, then np.mean and np.cov);
- the FID Inception-v3 (random weights: the same arithmetic as the real ones) on 299 × 299 inputs:
  the whole pipeline from files against the bare network on tensors already in memory.

FASTFID_BENCH_IMAGES sets the number of images (default 512 for the small network; the
Inception group uses an eighth of it).
"""

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

import fastfid  # noqa: E402
from fastfid.extraction import FeatureExtractor  # noqa: E402
from fastfid.models import FIDInceptionV3  # noqa: E402

IMAGES = int(os.environ.get("FASTFID_BENCH_IMAGES", "512"))
WORKERS = 2  # this machine's cores
BATCH = 64


class SmallNet(torch.nn.Module):
    """Three strided convolutions to 128 features: a stand-in for a light feature network."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layers = torch.nn.Sequential(
            torch.nn.Conv2d(3, 32, 3, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(32, 64, 3, stride=2),
            torch.nn.ReLU(), torch.nn.Conv2d(64, 128, 3, stride=2), torch.nn.ReLU())

    def forward(self, x):
        return self.layers(x).mean(dim=(2, 3))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench_images")
    rng = np.random.default_rng(0)
    for i in range(IMAGES):
        image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / f"{i:05d}.png")
    return root


class _Files(torch.utils.data.Dataset):
    """pytorch-fid's ImagePathDataset: open, convert to RGB, to a [0, 1] float tensor."""

    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with Image.open(self.paths[i]) as image:
            array = np.array(image.convert("RGB"))
        return torch.from_numpy(array).permute(2, 0, 1).float().div(255)


def pytorch_fid_method(folder, network, count=None):
    """Keep every feature, then np.mean and np.cov, as pytorch-fid's calculate_activation_statistics."""
    paths = sorted(folder.glob("*.png"))[:count]
    loader = torch.utils.data.DataLoader(_Files(paths), batch_size=BATCH, num_workers=WORKERS)
    kept = []
    with torch.no_grad():
        for batch in loader:
            kept.append(network(batch).numpy())
    features = np.concatenate(kept).astype(np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def assert_same(stats, reference):
    mean, cov = reference
    # The same images in the same batches through the same float32 network, accumulated in float64.
    # fastfid resizes in its loader processes, whose single-threaded interpolation rounds a few pixels
    # one float32 ulp differently: features then differ by ~1e-7 of their scale (observed 4e-8).
    # A feature error ε moves a covariance entry by at most about 2σε (σ: the largest standard deviation),
    # which matters when features vary little, as random Inception weights make them do.
    epsilon = 1e-6 * np.abs(mean).max()
    np.testing.assert_allclose(stats.mean, mean, rtol=0, atol=epsilon)
    np.testing.assert_allclose(stats.cov, cov, rtol=0, atol=2 * np.sqrt(np.diag(cov).max()) * epsilon)


def images_per_second(benchmark, count):
    if benchmark.stats is not None:
        benchmark.extra_info["images_per_second"] = count / benchmark.stats.stats.median


@pytest.mark.benchmark(group=f"folder-of-{IMAGES}-png-64x64-small-network")
def test_fastfid_compute_stats_small_network(benchmark, folder):
    extractor = FeatureExtractor(SmallNet(), device="cpu", image_size=None)
    stats = benchmark.pedantic(fastfid.compute_stats, args=(folder,), rounds=3, iterations=1, kwargs=dict(
        model=extractor, batch_size=BATCH, num_workers=WORKERS, progress=False))
    images_per_second(benchmark, IMAGES)
    assert stats.count == IMAGES
    assert_same(stats, pytorch_fid_method(folder, SmallNet()))


@pytest.mark.benchmark(group=f"folder-of-{IMAGES}-png-64x64-small-network")
def test_pytorch_fid_method_small_network(benchmark, folder):
    mean, cov = benchmark.pedantic(pytorch_fid_method, args=(folder, SmallNet()), rounds=3, iterations=1)
    images_per_second(benchmark, IMAGES)
    assert np.isfinite(cov).all() and mean.shape == (128,)


INCEPTION_IMAGES = max(IMAGES // 8, 8)


@pytest.fixture(scope="module")
def inception():
    torch.manual_seed(0)
    return FIDInceptionV3(2048, weights=False)


@pytest.mark.benchmark(group=f"fid-inception-{INCEPTION_IMAGES}-images-299x299")
def test_fastfid_compute_stats_inception(benchmark, folder, inception):
    extractor = FeatureExtractor(inception, device="cpu")
    stats = benchmark.pedantic(fastfid.compute_stats, args=(folder,), rounds=2, iterations=1, kwargs=dict(
        model=extractor, batch_size=BATCH, num_workers=WORKERS, progress=False, shard=(0, IMAGES // INCEPTION_IMAGES)))
    images_per_second(benchmark, INCEPTION_IMAGES)
    assert stats.count == INCEPTION_IMAGES
    assert_same(stats, pytorch_fid_method(folder, inception, INCEPTION_IMAGES))


@pytest.mark.benchmark(group=f"fid-inception-{INCEPTION_IMAGES}-images-299x299")
def test_bare_inception_forward(benchmark, folder, inception):
    paths = sorted(folder.glob("*.png"))[:INCEPTION_IMAGES]
    tensors = torch.stack([_Files(paths)[i] for i in range(len(paths))])

    def forward_all():
        with torch.no_grad():
            return torch.cat([inception(tensors[i:i + BATCH]) for i in range(0, len(tensors), BATCH)])

    features = benchmark.pedantic(forward_all, rounds=2, iterations=1)
    images_per_second(benchmark, INCEPTION_IMAGES)
    assert features.shape == (INCEPTION_IMAGES, 2048)
