"""Distribution metrics beside FID, from the same features: KID, precision and recall, density
and coverage. Pairwise distances and kernels run in the native core, block by block (BLAS), so
even 50,000 × 50,000 pairs never sit in memory."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fastfid import _core
from fastfid._arrays import as_features

__all__ = ["DensityCoverage", "KID", "PrecisionRecall", "density_coverage", "kid", "precision_recall"]


def _pair(real, fake):
    real, fake = as_features(real, name="real"), as_features(fake, name="fake")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real features have dim {real.shape[1]}, fake ones {fake.shape[1]}")
    _core.require_finite(real)
    _core.require_finite(fake)
    return real, fake


@dataclass(frozen=True)
class KID:
    mean: float
    """The mean over subsets of the unbiased MMD² (KID; often reported × 1000)."""
    std: float
    subsets: int
    subset_size: int


def kid(real, fake, *, subsets: int = 100, subset_size: int = 1000, seed: int | None = 0) -> KID:
    """Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD² with the kernel
    k(x, y) = (xᵀy / d + 1)³, over ``subsets`` random subsets of m = min(n, ``subset_size``)
    samples of each set (without replacement within a subset)."""
    real, fake = _pair(real, fake)
    if not isinstance(subsets, int) or subsets < 1:
        raise ValueError(f"subsets must be a positive integer, got {subsets!r}")
    m = min(real.shape[0], fake.shape[0], subset_size)
    if m < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    rng = np.random.default_rng(seed)
    values = np.array([_core.polynomial_mmd(real[np.sort(rng.choice(real.shape[0], m, replace=False))],
                                            fake[np.sort(rng.choice(fake.shape[0], m, replace=False))])
                       for _ in range(subsets)])
    return KID(float(values.mean()), float(values.std()), subsets, m)


@dataclass(frozen=True)
class PrecisionRecall:
    precision: float
    """Share of fake samples inside the real manifold (a ball around some real sample)."""
    recall: float
    """Share of real samples inside the fake manifold."""
    k: int


def precision_recall(real, fake, *, k: int = 3) -> PrecisionRecall:
    """Improved precision and recall (Kynkäänniemi et al. 2019): each manifold is the union of
    balls around its samples reaching their k-th nearest neighbour."""
    real, fake = _pair(real, fake)
    real_radii = _core.kth_neighbour_radii(real, k)
    fake_radii = _core.kth_neighbour_radii(fake, k)
    in_real, _ = _core.ball_membership(fake, real, real_radii)
    in_fake, _ = _core.ball_membership(real, fake, fake_radii)
    return PrecisionRecall(float(np.mean(in_real > 0)), float(np.mean(in_fake > 0)), k)


@dataclass(frozen=True)
class DensityCoverage:
    density: float
    """How many real balls a fake sample falls in, on average, over k (can exceed 1)."""
    coverage: float
    """Share of real samples whose ball holds at least one fake sample."""
    k: int


def density_coverage(real, fake, *, k: int = 5) -> DensityCoverage:
    """Density and coverage (Naeem et al. 2020), with balls around the real samples only."""
    real, fake = _pair(real, fake)
    radii = _core.kth_neighbour_radii(real, k)
    inside, nearest_fake = _core.ball_membership(fake, real, radii)
    return DensityCoverage(float(inside.sum() / (k * fake.shape[0])), float(np.mean(nearest_fake <= radii)), k)
