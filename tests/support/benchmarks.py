"""The benchmarks' sizes (FASTFID_BENCH_DIM, FASTFID_BENCH_SAMPLES shrink them for CI) and the record
of their medians."""

import os

from support.features import relu_features  # noqa: F401  (the benchmarks' features)

BENCH_DIM = int(os.environ.get("FASTFID_BENCH_DIM", "2048"))
BENCH_SAMPLES = int(os.environ.get("FASTFID_BENCH_SAMPLES", "50000"))


def image_folders(root, count: int) -> list[str]:
    """Two folders ("real", "generated") of count // 2 PNGs of 299 × 299 each: coarse random images
    upsampled (so their features vary as real ones do), the generated side brighter by 30."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folders = []
    for name, shift in (("real", 0), ("generated", 30)):
        folder = root / name
        folder.mkdir()
        for i in range(count // 2):
            coarse = rng.integers(0, 200, (24, 24, 3)).astype(np.uint8)
            image = Image.fromarray(np.clip(coarse.astype(int) + shift, 0, 255).astype(np.uint8))
            image.resize((299, 299), Image.Resampling.BILINEAR).save(folder / f"{i:05d}.png")
        folders.append(str(folder))
    return folders


def record(benchmark, medians, name):
    if benchmark.stats is not None:
        medians[name] = benchmark.stats.stats.median
