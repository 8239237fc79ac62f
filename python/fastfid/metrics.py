"""Distribution metrics beside FID, from the same features: KID, precision and recall, density
and coverage; the Inception Score from class logits. Pairwise distances and kernels run in the
native core, block by block (BLAS), so even 50,000 × 50,000 pairs never sit in memory."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fastfid._native import core as _core
from fastfid._arrays import as_features

__all__ = ["ClassScores", "DensityCoverage", "InceptionScore", "KID", "Kernel", "PrecisionRecall", "density_coverage",
           "inception_score_from_logits", "kid", "kid_of_subsets", "precision_recall"]


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
    """Their standard deviation (divisor: the number of subsets, as every peer)."""
    subsets: int
    subset_size: int


@dataclass(frozen=True)
class Kernel:
    """KID's kernel: ``"poly"``, k(x, y) = (γ xᵀy + coef0)^degree with γ = 1/d unless given, or ``"rbf"``,
    k(x, y) = exp(−‖x − y‖² / (2σ²)). The defaults are KID's."""

    kind: str = "poly"
    degree: int = 3
    gamma: float | None = None
    coef0: float = 1.0
    sigma: float = 10.0

    def __post_init__(self):
        if self.kind not in ("poly", "rbf"):
            raise ValueError(f"kernel must be 'poly' or 'rbf', got {self.kind!r}")
        if not isinstance(self.degree, (int, np.integer)) or isinstance(self.degree, bool) or self.degree < 1:
            raise ValueError(f"degree must be a positive integer, got {self.degree!r}")
        if self.gamma is not None and not self.gamma > 0:
            raise ValueError(f"gamma must be None (1 / dim) or positive, got {self.gamma!r}")
        if not self.sigma > 0:
            raise ValueError(f"sigma must be positive, got {self.sigma!r}")

    def mmd(self, x: np.ndarray, y: np.ndarray) -> float:
        """The unbiased MMD² between two sets (the cross term over all m·n pairs)."""
        if self.kind == "rbf":
            return _core.gaussian_mmd(x, y, float(self.sigma))
        return _core.polynomial_mmd(x, y, int(self.degree), float(self.gamma or 0.0), float(self.coef0))


def kid(real, fake, *, subsets: int = 100, subset_size: int = 1000, seed: int | None = 0,
        kernel: Kernel = Kernel(), shrink_subsets: bool = False) -> KID:
    """Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD² with the kernel
    k(x, y) = (xᵀy / d + 1)³, over ``subsets`` random subsets of ``subset_size`` samples of each set
    (without replacement within a subset).

    A set smaller than ``subset_size`` is refused, as every peer does (a KID over smaller subsets is
    biased differently and not comparable); ``shrink_subsets=True`` uses subsets of the smaller
    set's size instead."""
    real, fake = _pair(real, fake)
    if not isinstance(subsets, (int, np.integer)) or isinstance(subsets, bool) or subsets < 1:
        raise ValueError(f"subsets must be a positive integer, got {subsets!r}")
    if not isinstance(subset_size, (int, np.integer)) or isinstance(subset_size, bool) or subset_size < 2:
        raise ValueError(f"subset_size must be an integer of at least 2, got {subset_size!r}")
    smaller = min(real.shape[0], fake.shape[0])
    if smaller < subset_size and not shrink_subsets:
        raise ValueError(f"subset_size {subset_size} is larger than the samples ({real.shape[0]} real, "
                         f"{fake.shape[0]} fake): lower subset_size, or pass shrink_subsets=True")
    m = min(smaller, subset_size)
    if m < 2:
        raise ValueError("KID needs at least 2 samples in each set")
    rng = np.random.default_rng(seed)
    draws = [(np.sort(rng.choice(real.shape[0], m, replace=False)),
              np.sort(rng.choice(fake.shape[0], m, replace=False)))
             for _ in range(subsets)]
    return _kid_of_checked_subsets(real, fake, draws, kernel)


def kid_of_subsets(real, fake, draws, *, kernel: Kernel = Kernel()) -> KID:
    """KID over given subsets: ``draws`` is a sequence of (real indices, fake indices) of one size.
    The drop-ins use it to draw subsets exactly as each peer does."""
    real, fake = _pair(real, fake)
    return _kid_of_checked_subsets(real, fake, draws, kernel)


def _kid_of_checked_subsets(real: np.ndarray, fake: np.ndarray, draws, kernel: Kernel) -> KID:
    """kid_of_subsets on features that _pair has already checked (each is checked once)."""
    values: list[float] = []
    size = -1
    for real_index, fake_index in draws:
        real_index, fake_index = np.asarray(real_index), np.asarray(fake_index)
        if size < 0:
            size = len(real_index)
        if len(real_index) != size or len(fake_index) != size:
            raise ValueError("every KID subset must have the same size")
        values.append(kernel.mmd(real[real_index], fake[fake_index]))
    if not values:
        raise ValueError("KID needs at least one subset")
    array = np.array(values)
    return KID(float(array.mean()), float(array.std()), len(values), size)


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


@dataclass(frozen=True)
class InceptionScore:
    mean: float
    """exp(E_x KL(p(y|x) ‖ p(y))), averaged over the splits."""
    std: float
    """The standard deviation over the splits (divisor splits, as in the original code)."""
    splits: int
    count: int

    def __str__(self) -> str:
        return f"IS {self.mean:.4f} ± {self.std:.4f}"

    def as_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "splits": self.splits, "count": self.count}


class ClassScores:
    """Streaming Inception Score: per split, the count, Σ p(y|x) and Σ Σ_y p log p, in float64.

    Item ``position`` (0 … total − 1) belongs to the split ``np.array_split`` would give it, so IS
    needs no stored probabilities (O(splits × classes) memory) and shards, resumed jobs and ranks
    add up exactly: KL_s = mean_x Σ_y p log p − Σ_y p̄ log p̄, with p̄ the split's mean of p(y|x).
    """

    def __init__(self, total: int, splits: int = 10, classes: int = 1008):
        if not isinstance(splits, (int, np.integer)) or splits < 1 or splits > total:
            raise ValueError(f"splits must be an integer in 1 … {total} (the number of images), got {splits!r}")
        self.total, self.splits, self.classes = int(total), int(splits), int(classes)
        sizes = np.full(self.splits, self.total // self.splits)
        sizes[:self.total % self.splits] += 1
        self._ends = np.cumsum(sizes)
        self.state = np.zeros((self.splits, classes + 2))  # [count, Σ p log p, Σ p (classes)]

    def update(self, logits, first_position: int) -> None:
        """Add the logits (n, classes) of items first_position … first_position + n − 1."""
        logits = np.asarray(logits, dtype=np.float64)
        if logits.ndim != 2 or logits.shape[1] != self.classes:
            raise ValueError(f"logits must be (n, {self.classes}), got {logits.shape}")
        log_p = logits - logits.max(axis=1, keepdims=True)
        log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
        p = np.exp(log_p)
        split = np.searchsorted(self._ends, first_position + np.arange(len(p)), side="right")
        if split.size and split[-1] >= self.splits:
            raise ValueError(f"positions up to {first_position + len(p) - 1} exceed the {self.total} items")
        np.add.at(self.state[:, 0], split, 1.0)
        np.add.at(self.state[:, 1], split, (p * log_p).sum(axis=1))
        np.add.at(self.state[:, 2:], split, p)

    def merge(self, other: "ClassScores") -> "ClassScores":
        if (other.total, other.splits, other.classes) != (self.total, self.splits, self.classes):
            raise ValueError("cannot merge class scores of different totals, splits or classes")
        self.state += other.state
        return self

    def result(self) -> InceptionScore:
        count = self.state[:, 0]
        if (count == 0).any():
            raise ValueError(f"the Inception Score needs images in each of its {self.splits} splits; "
                             f"{int((count == 0).sum())} are empty")
        marginal = self.state[:, 2:] / count[:, None]
        entropy_marginal = -(marginal * np.log(np.where(marginal > 0, marginal, 1))).sum(axis=1)
        scores = np.exp(self.state[:, 1] / count + entropy_marginal)
        return InceptionScore(float(scores.mean()), float(scores.std()), self.splits, int(count.sum()))


def inception_score_from_logits(logits, splits: int = 10) -> InceptionScore:
    """IS from an (n, classes) array of logits, in np.array_split's splits of the given order."""
    logits = np.asarray(logits)
    scores = ClassScores(logits.shape[0], splits, logits.shape[1] if logits.ndim == 2 else 0)
    scores.update(logits, 0)
    return scores.result()
