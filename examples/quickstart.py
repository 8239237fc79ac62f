"""fastfid's main job end to end: stream features into statistics, save them, and compute FID.

Stands in for an image pipeline with synthetic ReLU-like features (FID Inception's pool3 width,
d = 2048): a "real" set and a slightly different "generated" one, streamed in batches of 500. The
statistics file goes to a temporary folder, removed at the end (nothing is left behind).
"""

import tempfile
import time
from pathlib import Path

import numpy as np

import fastfid

DIM, SAMPLES, BATCH = 2048, 10_000, 500
rng = np.random.default_rng(0)
mixing, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))
scales = np.exp(-np.arange(DIM) / 256)


def synthetic_features(shift):
    """What a feature extractor would have produced: (SAMPLES, DIM) float32."""
    z = rng.standard_normal((SAMPLES, DIM)) * scales
    return np.maximum(z @ mixing + shift, 0).astype(np.float32)


real_features, generated_features = synthetic_features(0.0), synthetic_features(0.02)

start = time.perf_counter()
real, generated = fastfid.FeatureStats(DIM), fastfid.FeatureStats(DIM)
for stats, features in ((real, real_features), (generated, generated_features)):
    for first in range(0, SAMPLES, BATCH):
        stats.update(features[first:first + BATCH])
print(f"statistics of 2 x {SAMPLES} samples of dim {DIM}: {time.perf_counter() - start:.2f} s")

with tempfile.TemporaryDirectory() as folder:
    path = Path(folder) / "real_stats.npz"
    real.save(path)  # pytorch-fid / clean-fid can read this file too
    start = time.perf_counter()
    result = fastfid.fid(path, generated, return_info=True)
print(f"FID = {result.value:.4f} ({result.method}, rank {result.rank}, {time.perf_counter() - start:.2f} s)")
