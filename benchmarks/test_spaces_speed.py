"""Representation spaces on this CPU: images/s from a folder of JPEGs to statistics for k = 1, 2
and 3 spaces (inception, dinov2-vit-l14, clip-vit-l-14: the first k) in one pass, each beside k
separate runs of the same networks; and each named network's time per image at its input size.

A third group isolates what one pass saves: decoding and resizing the JPEGs for the three networks'
inputs, with one decode per image against one per network (no network).

The networks are the full-size definitions with random weights (the same arithmetic as the published
ones; nothing is downloaded). FASTFID_BENCH_SPACES=small uses the small definitions of the parity
tests (how CI runs this file, as a check that one pass equals the separate runs); FASTFID_BENCH_IMAGES
sets the folder's images (default 24 at full size: a ViT-L/14 takes about a second per image here).
"""

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from support.peers import declare_torchvision_ops  # noqa: E402

declare_torchvision_ops()  # timm imports torchvision (see tests/peers.py)
pytest.importorskip("timm")
from PIL import Image  # noqa: E402

import fastfid  # noqa: E402
from fastfid.models import get_space, space_names, spaces as registry  # noqa: E402
from fastfid.models.networks import build_network  # noqa: E402

SMALL = os.environ.get("FASTFID_BENCH_SPACES") == "small"
IMAGES = int(os.environ.get("FASTFID_BENCH_IMAGES", "24")) if not SMALL else 12
ORDER = ["inception", "dinov2-vit-l14", "clip-vit-l-14"]
OPTIONS = dict(device="cpu", num_workers=2, batch_size=8, progress=False)


@pytest.fixture(scope="module", autouse=True)
def small_definitions():
    """With FASTFID_BENCH_SPACES=small: the registry's spaces at the parity tests' small size."""
    if not SMALL:
        yield
        return
    import support.spaces as spaces_support

    saved = dict(registry.SPACES)
    for name in space_names()[1:]:
        options = {"dims": (16, 32, 48, 64), "depths": (1, 1, 2, 1)} if name == "convnext" else \
            {"embed_dim": 64, "depth": 2, "num_heads": 4, **({"mlp_ratio": 5.5} if name.endswith("g14") else {})}
        registry.SPACES[name] = spaces_support.tiny(name, **options)
    yield
    registry.SPACES.clear()
    registry.SPACES.update(saved)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """JPEGs of 384 × 320 (ImageNet-like sizes: every network resizes them)."""
    root = tmp_path_factory.mktemp("space_bench")
    rng = np.random.default_rng(0)
    for i in range(IMAGES):
        base = rng.integers(0, 256, (41, 49, 3), dtype=np.uint8)
        Image.fromarray(base).resize((384, 320), Image.Resampling.BICUBIC).save(root / f"{i:05d}.jpg", quality=90)
    return root


def _random(names):
    return {name: False for name in names}  # random weights (the same arithmetic as the published ones)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_one_pass_against_separate_runs(benchmark, folder, k, medians):
    names = ORDER[:k]
    benchmark.group = f"spaces: {k} space(s) from {IMAGES} JPEGs, one pass vs separate runs"
    benchmark.extra_info["images"] = IMAGES
    torch.manual_seed(0)
    together = benchmark.pedantic(fastfid.compute_stats, args=(folder,),
                                  kwargs=dict(model=names, weights=_random(names), **OPTIONS), rounds=1, iterations=1)
    for name in names:  # the same random network as a separate run (seeded construction, same order)
        torch.manual_seed(0)
        for earlier in names[:names.index(name)]:
            build_network(earlier, weights=False)
        alone = fastfid.compute_stats(folder, model=name, weights=False, **OPTIONS)
        np.testing.assert_allclose(together[name].mean, alone.mean, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_separate_runs(benchmark, folder, k):
    names = ORDER[:k]
    benchmark.group = f"spaces: {k} space(s) from {IMAGES} JPEGs, one pass vs separate runs"

    def separately():
        return [fastfid.compute_stats(folder, model=name, weights=False, **OPTIONS) for name in names]

    results = benchmark.pedantic(separately, rounds=1, iterations=1)
    assert [r.count for r in results] == [IMAGES] * k


def _plans(names):
    from fastfid.extraction import SpaceExtractors

    return SpaceExtractors(names, weights=_random(names), device="cpu").plans


@pytest.mark.parametrize("how", ["one decode", "a decode per network"])
def test_decoding_once_against_once_per_network(benchmark, folder, how):
    from fastfid.data import ImageFiles

    plans = _plans(ORDER)
    source = ImageFiles(folder)
    benchmark.group = f"spaces: decode and resize {IMAGES} JPEGs for {len(plans)} networks (no network)"

    def read(groups):
        return [batch.views for plans in groups for batch in source.batches(
            0, len(source), batch_size=8, plans=plans, num_workers=0, pin_memory=False)]

    groups = [plans] if how == "one decode" else [(plan,) for plan in plans]
    views = benchmark.pedantic(read, args=(groups,), rounds=3, iterations=1)
    batches = -(-IMAGES // 8)
    # every network's input of every image either way: three views per batch, or three passes of one
    assert [len(v) for v in views] == ([len(plans)] * batches if how == "one decode" else [1] * len(plans) * batches)


@pytest.mark.parametrize("name", space_names())
def test_network_time_per_image(benchmark, name):
    """One batch of 8 images at the network's input size through the network alone (no decode)."""
    network = build_network(name, weights=False).eval()
    size = network.input_size
    images = torch.rand(8, 3, *((size, size) if isinstance(size, int) else size))
    benchmark.group = "spaces: one network, a batch of 8 images at its input size"
    with torch.no_grad():
        features = benchmark.pedantic(network, args=(images,), rounds=2 if not SMALL else 1, iterations=1)
    width = 2048 if name == "inception" else get_space(name).dims if not SMALL else features.shape[1]
    assert features.shape == (8, width) and torch.isfinite(features).all()
