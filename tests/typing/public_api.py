"""What a user's type checker sees of fastfid's public API: checked by mypy (tests/test_typing.py),
never run. A wrong return type or an argument type the API refuses fails the check."""

from pathlib import Path
from typing import assert_type

import numpy as np
import torch

import fastfid

mu, sigma = np.zeros(4), np.eye(4)
assert_type(fastfid.frechet_distance(mu, sigma, mu, sigma), float)
assert_type(fastfid.frechet_distance(mu, sigma, mu, sigma, return_info=True), fastfid.FrechetResult)
assert_type(fastfid.frechet_distance(torch.zeros(4), torch.eye(4), [0.0] * 4, sigma.tolist()), float)
assert_type(fastfid.calculate_frechet_distance(mu, sigma, mu, sigma), np.float64)

stats = fastfid.FeatureStats(4).update(np.ones((3, 4), np.float32))
assert_type(stats, fastfid.FeatureStats)
assert_type(fastfid.fid(stats, Path("reference.npz")), float)
assert_type(fastfid.fid("a.npz", (mu, sigma), return_info=True), fastfid.FrechetResult)
reference = fastfid.Reference(stats)
assert_type(reference.distance(stats), float)
assert_type(reference.distance(stats, return_info=True).trace_sqrt, float)
assert_type(stats.count, int | None)
assert_type(fastfid.FeatureStats.load("stats.npz", allow_partial=True), fastfid.FeatureStats)

# One pass over images for several representation spaces gives their statistics by name.
spaces = fastfid.compute_stats("images/", model=["inception", "dinov2-vit-l14"])
assert_type(spaces, fastfid.SpaceStats)
assert_type(spaces["dinov2-vit-l14"], fastfid.FeatureStats)
assert_type(fastfid.compute_stats("images/", model="dinov2-vit-l14"), fastfid.FeatureStats)
assert_type(spaces.fdr(fastfid.load_spaces("reference.npz")).value, float)
