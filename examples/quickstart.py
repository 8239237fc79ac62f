"""fastfid's main job end to end: stream features into statistics, save them, and compute FID.

Stands in for an image pipeline with synthetic ReLU-like features (FID Inception's pool3 width,
d = 2048): a "real" set and a slightly different "generated" one.
"""

import time

import numpy as np

import fastfid

DIM, SAMPLES, BATCH = 2048, 10_000, 500
rng = np.random.default_rng(0)
mixing, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))
scales = np.exp(-np.arange(DIM) / 256)


def feature_batches(shift):
    for _ in range(SAMPLES // BATCH):
        z = rng.standard_normal((BATCH, DIM)) * scales
        yield np.maximum(z @ mixing + shift, 0).astype(np.float32)


real, generated = fastfid.FeatureStats(DIM), fastfid.FeatureStats(DIM)
updating = 0.0  # time in FeatureStats.update, not in making the synthetic features
for stats, shift in ((real, 0.0), (generated, 0.02)):
    for batch in feature_batches(shift):
        start = time.perf_counter()
        stats.update(batch)
        updating += time.perf_counter() - start
print(f"statistics of 2 x {SAMPLES} samples of dim {DIM}: {updating:.2f} s in FeatureStats.update")

real.save("real_stats.npz")  # pytorch-fid / clean-fid can read this file too
start = time.perf_counter()
result = fastfid.fid("real_stats.npz", generated, return_info=True)
print(f"FID = {result.value:.4f} ({result.method}, rank {result.rank}, {time.perf_counter() - start:.2f} s)")
