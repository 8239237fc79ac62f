"""FID as a random variable: error bars, the bias-free FD∞, seed panels and verdicts.

* :func:`fid_with_error` — standard error, confidence interval and bias-corrected FID from G shards
  of the generated features (delete-a-group jackknife, or a shard bootstrap), with no second pass
  over the features: each replicate removes or merges shard statistics exactly (O(d²)) and costs
  one FD against a reference factorised once.
* :func:`fd_infinity` — Chong & Forsyth's FD∞: FIDs of nested subsets fitted against 1/N.
* :func:`seed_study` — a panel of N training seeds × K sampling seeds as one-way random effects.
* :func:`compare` — "A better", "B better" or "inconclusive", with the reason.

Formulas: ``shared/notes/numerics.md`` of the project (FID Lottery, jackknife, FD∞).
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastfid._student_t import t_quantile
from fastfid.distance import Reference
from fastfid.stats import FeatureStats

__all__ = ["FDInfinity", "FIDWithError", "SeedStudy", "Verdict", "compare", "fd_infinity", "fid_with_error",
           "seed_study", "split_into_shards"]


# --- shards --------------------------------------------------------------------------------------
def split_into_shards(features, groups: int, *, seed: int | None = 0, progress: bool = False) -> list[FeatureStats]:
    """Statistics of `groups` disjoint shards of (n, d) features, rows assigned at random
    (``seed=None`` keeps the row order: contiguous shards), in one pass over the features.
    ``progress`` shows a bar on stderr, one step per shard."""
    x = features if isinstance(features, np.ndarray) else np.asarray(features)
    if x.ndim != 2:
        raise ValueError(f"features must be 2-D (samples, dim), got shape {x.shape}")
    if not isinstance(groups, int) or groups < 2:
        raise ValueError(f"groups must be an integer ≥ 2, got {groups!r}")
    if x.shape[0] < 2 * groups:
        raise ValueError(f"{x.shape[0]} samples cannot make {groups} shards of at least 2 samples")
    if seed is None:  # contiguous slices: views, so a memory-mapped file streams shard by shard
        bounds = np.linspace(0, x.shape[0], groups + 1).round().astype(int)
        rows: list = [slice(begin, end) for begin, end in zip(bounds[:-1], bounds[1:])]
    else:
        order = np.random.default_rng(seed).permutation(x.shape[0])
        rows = [np.sort(part) for part in np.array_split(order, groups)]
    return [FeatureStats.from_features(x[part]) for part in _steps(rows, progress, "shards")]


def _steps(items, progress: bool, unit: str):
    """``items``, with a progress bar on stderr when asked (long work that reads no images)."""
    if not progress:
        return items
    from tqdm import tqdm

    return tqdm(items, unit=unit.rstrip("s"), desc=unit, file=sys.stderr, leave=False)


def _is_shard_list(x) -> bool:
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(s, FeatureStats) for s in x)


def _as_shards(shards_or_features, groups: int, seed, progress: bool = False) -> list[FeatureStats]:
    if _is_shard_list(shards_or_features):
        shards = list(shards_or_features)
        if len(shards) < 2:
            raise ValueError("error bars need at least 2 shards")
        dims = {s.dim for s in shards}
        if len(dims) != 1:
            raise ValueError(f"the shards have different dims: {sorted(dims)}")
        return shards
    return split_into_shards(shards_or_features, groups, seed=seed, progress=progress)


def _reference(reference) -> Reference:
    return reference if isinstance(reference, Reference) else Reference(reference)


# --- error bars ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class FIDWithError:
    value: float
    """FID of all samples."""
    standard_error: float
    interval: tuple[float, float]
    """The confidence interval, around the bias-corrected value (jackknife) or percentile (bootstrap)."""
    confidence: float
    bias_corrected: float
    """Jackknife: G·FID − (G − 1)·mean(FID₋g), which removes the 1/N bias; bootstrap: 2·FID − mean(FID*)."""
    groups: int
    method: str
    replicates: np.ndarray = field(repr=False)
    """The replicate FIDs: leave-one-shard-out (jackknife) or resampled (bootstrap)."""

    def as_dict(self) -> dict:
        """The result as JSON-able values (``fastfid fid --error-bars --json``; the trackers)."""
        return {"fid": self.value, "standard_error": self.standard_error, "interval": list(self.interval),
                "confidence": self.confidence, "bias_corrected": self.bias_corrected, "groups": self.groups,
                "method": self.method}


def fid_with_error(shards_or_features, reference, *, groups: int = 20, confidence: float = 0.95,
                   method: str = "jackknife", rounds: int = 200, seed: int | None = 0,
                   progress: bool = False) -> FIDWithError:
    """FID with a standard error and a confidence interval, from shards of the generated features.

    ``shards_or_features``: a list of FeatureStats (disjoint shards, e.g. one per process or file)
    or an (n, d) feature array, split here into ``groups`` random shards. ``reference``:
    FeatureStats, a ``.npz`` path, a ``(mu, sigma)`` pair or a :class:`~fastfid.Reference`.
    ``method="jackknife"`` (delete-a-group: G FDs, each of the total with one shard removed
    exactly) or ``"bootstrap"`` (``rounds`` FDs of shards resampled with replacement; its FIDs are
    biased upwards, which the percentile interval inherits). ``progress`` shows a bar on stderr.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if method not in ("jackknife", "bootstrap"):
        raise ValueError(f"method must be 'jackknife' or 'bootstrap', got {method!r}")
    shards = _as_shards(shards_or_features, groups, seed, progress)
    ref = _reference(reference)
    total = FeatureStats.merged(shards)
    value = ref.distance(total)
    g = len(shards)
    if method == "jackknife":
        replicates = np.array([ref.distance(total - shard) for shard in _steps(shards, progress, "replicates")])
        mean = replicates.mean()
        standard_error = math.sqrt((g - 1) / g * float(((replicates - mean) ** 2).sum()))
        bias_corrected = g * value - (g - 1) * mean
        half = t_quantile(0.5 + confidence / 2, g - 1) * standard_error
        interval = (bias_corrected - half, bias_corrected + half)
    else:
        if not isinstance(rounds, int) or rounds < 2:
            raise ValueError(f"rounds must be an integer ≥ 2, got {rounds!r}")
        rng = np.random.default_rng(seed)
        replicates = np.array([ref.distance(FeatureStats.merged([shards[i] for i in rng.integers(0, g, g)]))
                               for _ in _steps(range(rounds), progress, "replicates")])
        standard_error = float(replicates.std(ddof=1))
        bias_corrected = 2 * value - float(replicates.mean())
        low, high = np.quantile(replicates, [0.5 - confidence / 2, 0.5 + confidence / 2])
        interval = (float(low), float(high))
    return FIDWithError(value, standard_error, interval, confidence, bias_corrected, g, method, replicates)


# --- FD∞ -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FDInfinity:
    value: float
    """FD∞: the intercept of FID = FD∞ + k/N."""
    standard_error: float
    """Of the intercept, from the least-squares fit. The subsets are nested, so their errors are
    correlated: this measures how well 1/N explains the FIDs, not the sampling error of the whole
    sample set (for that, see :func:`fid_with_error`)."""
    slope: float
    """k: the bias of FID at N samples is k/N."""
    sizes: np.ndarray
    fids: np.ndarray
    residuals: np.ndarray


def fd_infinity(shards_or_features, reference, *, points: int = 15, min_fraction: float = 0.1,
                seed: int | None = 0) -> FDInfinity:
    """Bias-free FD∞ (Chong & Forsyth, CVPR 2020): FIDs of nested subsets whose sizes N spread
    evenly over [min_fraction·N_total, N_total], fitted by least squares against 1/N.

    From an (n, d) feature array (rows shuffled with ``seed``; the subsets are prefixes, their
    statistics accumulated in one pass) or from a list of shard statistics (cumulative merges in
    the given order; the sizes are then the shards' cumulative counts within the range).
    """
    if not (isinstance(points, int) and points >= 3):
        raise ValueError(f"points must be an integer ≥ 3, got {points!r}")
    if not 0 < min_fraction < 1:
        raise ValueError(f"min_fraction must be in (0, 1), got {min_fraction}")
    ref = _reference(reference)
    subsets = _nested_subsets(shards_or_features, points, min_fraction, seed)
    if len(subsets) < 3:
        raise ValueError(f"only {len(subsets)} nested subsets fall in the size range: give more shards or features")
    sizes = np.array([s.count for s in subsets], dtype=np.float64)
    fids = np.array([ref.distance(s) for s in subsets])
    design = np.column_stack([np.ones_like(sizes), 1.0 / sizes])
    coefficients, _, _, _ = np.linalg.lstsq(design, fids, rcond=None)
    residuals = fids - design @ coefficients
    dof = len(sizes) - 2
    variance = float(residuals @ residuals) / dof
    covariance = variance * np.linalg.inv(design.T @ design)
    return FDInfinity(float(coefficients[0]), math.sqrt(covariance[0, 0]), float(coefficients[1]), sizes, fids,
                      residuals)


def _nested_subsets(shards_or_features, points, min_fraction, seed) -> list[FeatureStats]:
    if _is_shard_list(shards_or_features):
        total = sum(s.count for s in shards_or_features)
        running, subsets = None, []
        for shard in shards_or_features:
            running = shard.copy() if running is None else running.merge(shard)
            if running.count >= min_fraction * total:
                subsets.append(running.copy())
        return subsets
    x = np.asarray(shards_or_features)
    if x.ndim != 2:
        raise ValueError(f"features must be 2-D (samples, dim), got shape {x.shape}")
    n = x.shape[0]
    order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
    sizes = np.unique(np.round(np.linspace(min_fraction * n, n, points)).astype(int))
    sizes = sizes[sizes > 1]
    running, subsets, start = FeatureStats(x.shape[1]), [], 0
    for size in sizes:
        running.update(x[np.sort(order[start:size])])
        start = size
        subsets.append(running.copy())
    return subsets


# --- seed panels ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SeedStudy:
    """One-way random effects of a balanced panel: N training seeds × K sampling seeds."""

    mean: float
    sigma_between: float
    """σ_b: how much retraining moves FID."""
    sigma_within: float
    """σ_w: how much resampling moves FID."""
    training_seeds: int
    sampling_seeds: int
    interval: tuple[float, float]
    """Confidence interval of the grand mean (t with N − 1 degrees of freedom)."""
    confidence: float
    seed_means: np.ndarray = field(repr=False)
    table: np.ndarray = field(repr=False)

    @property
    def cov_between(self) -> float:
        return self.sigma_between / self.mean

    @property
    def cov_within(self) -> float:
        return self.sigma_within / self.mean

    @property
    def ratio(self) -> float:
        """σ_b / σ_w (inf when σ_w = 0)."""
        return self.sigma_between / self.sigma_within if self.sigma_within else math.inf

    @property
    def icc(self) -> float:
        """Intra-class correlation σ_b² / (σ_b² + σ_w²): the share of variance due to retraining."""
        total = self.sigma_between ** 2 + self.sigma_within ** 2
        return self.sigma_between ** 2 / total if total else 0.0

    @property
    def half_width(self) -> float:
        return (self.interval[1] - self.interval[0]) / 2

    def as_dict(self) -> dict:
        """The panel's summary, JSON-able (``fastfid compare --json``)."""
        return {"mean": self.mean, "sigma_between": self.sigma_between, "sigma_within": self.sigma_within,
                "cov_between": self.cov_between, "cov_within": self.cov_within, "icc": self.icc,
                "interval": list(self.interval), "training_seeds": self.training_seeds,
                "sampling_seeds": self.sampling_seeds}

    def training_seeds_for(self, half_width: float) -> int:
        """Training seeds (K sampling seeds each) for an interval of the mean this narrow."""
        if not half_width > 0:
            raise ValueError(f"half_width must be positive, got {half_width}")
        per_seed = self.sigma_between ** 2 + self.sigma_within ** 2 / self.sampling_seeds
        n = 2
        while t_quantile(0.5 + self.confidence / 2, n - 1) * math.sqrt(per_seed / n) > half_width:
            n += 1
            if n > 10**7:
                raise ValueError("no practical number of seeds reaches that width")
        return n


def seed_study(table, *, confidence: float = 0.95, model: str | None = None) -> SeedStudy:
    """Analyse FIDs of N training seeds × K sampling seeds.

    ``table``: an (N, K) array (row = training seed), or a CSV/JSON file with columns ``model,
    train_seed, sample_seed, fid`` (``model`` selects one model when the file holds several).
    """
    fids = _panel(table, model) if isinstance(table, (str, os.PathLike)) else np.asarray(table, dtype=np.float64)
    if fids.ndim != 2 or fids.shape[0] < 2 or fids.shape[1] < 1:
        raise ValueError(f"a seed panel is an (N training seeds ≥ 2, K sampling seeds) table, got shape {fids.shape}")
    if not np.isfinite(fids).all():
        raise ValueError("the seed panel contains NaN or Inf FIDs")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n, k = fids.shape
    seed_means = fids.mean(axis=1)
    grand = float(seed_means.mean())
    ms_between = k * float(((seed_means - grand) ** 2).sum()) / (n - 1)
    ms_within = float(((fids - seed_means[:, None]) ** 2).sum()) / (n * (k - 1)) if k > 1 else 0.0
    sigma_within = math.sqrt(ms_within)
    sigma_between = math.sqrt(max(0.0, (ms_between - ms_within) / k))
    half = t_quantile(0.5 + confidence / 2, n - 1) * math.sqrt(ms_between / (n * k))
    return SeedStudy(grand, sigma_between, sigma_within, n, k, (grand - half, grand + half), confidence, seed_means,
                     fids)


def read_panels(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """{model: (N, K) table} from a CSV or JSON file of rows model, train_seed, sample_seed, fid."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".json":
            rows = json.loads(path.read_text())
            if isinstance(rows, dict):
                rows = rows.get("runs", rows.get("rows"))
        else:
            with path.open(newline="") as handle:
                rows = list(csv.DictReader(handle))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, csv.Error) as error:
        raise OSError(f"cannot read {path}: {error}") from error
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{path} holds no rows of model, train_seed, sample_seed, fid")
    cells: dict[str, dict[str, dict[str, float]]] = {}
    for number, row in enumerate(rows, start=1):
        try:
            model, train, sample, value = (str(row["model"]), str(row["train_seed"]), str(row["sample_seed"]),
                                           float(row["fid"]))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}, row {number}: needs model, train_seed, sample_seed and a numeric fid "
                             f"({error})") from error
        seeds = cells.setdefault(model, {}).setdefault(train, {})
        if sample in seeds:
            raise ValueError(f"{path}: model {model!r}, train seed {train}, sample seed {sample} appears twice")
        seeds[sample] = value
    panels: dict[str, np.ndarray] = {}
    for model, by_train_seed in cells.items():
        counts = {len(samples) for samples in by_train_seed.values()}
        if len(counts) != 1:
            raise ValueError(f"{path}: model {model!r} is unbalanced: training seeds have {sorted(counts)} "
                             "sampling seeds; each needs the same number")
        panels[model] = np.array([[samples[s] for s in sorted(samples)]
                                  for _, samples in sorted(by_train_seed.items())])
    return panels


def _panel(path, model: str | None) -> np.ndarray:
    panels = read_panels(path)
    if model is None:
        if len(panels) != 1:
            raise ValueError(f"{path} holds models {sorted(panels)}: name one with model=")
        return next(iter(panels.values()))
    if model not in panels:
        raise ValueError(f"{path} has no model {model!r}; it has {sorted(panels)}")
    return panels[model]


# --- verdicts ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    verdict: str
    """"A better", "B better" or "inconclusive" (lower FID is better)."""
    gap: float
    """mean(B) − mean(A)."""
    interval: tuple[float, float]
    """Confidence interval of the gap (Welch)."""
    relative_gap: float
    """|gap| / the mean of both."""
    cov: float
    """Coefficient of variation of FID across training seeds (pooled)."""
    reason: str

    def __str__(self) -> str:
        return f"{self.verdict}: {self.reason}"

    def as_dict(self) -> dict:
        return {"verdict": self.verdict, "gap": self.gap, "interval": list(self.interval), "reason": self.reason}


def compare(runs_a, runs_b, *, threshold: float = 0.013, confidence: float = 0.95) -> Verdict:
    """Is model A's FID really lower than B's, or the other way round?

    ``runs_a``, ``runs_b``: FIDs per training seed (1-D, ≥ 2 seeds each), seed panels
    ((N, K) arrays, averaged over sampling seeds) or :class:`SeedStudy` objects. Inconclusive
    whenever the relative gap is below ``threshold`` (1.3 %: FID's CoV across training seeds) or
    the interval of the difference contains 0.
    """
    a, b = _seed_means(runs_a, "runs_a"), _seed_means(runs_b, "runs_b")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    mean_a, mean_b = float(a.mean()), float(b.mean())
    var_a, var_b = float(a.var(ddof=1)) / len(a), float(b.var(ddof=1)) / len(b)
    gap = mean_b - mean_a
    standard_error = math.sqrt(var_a + var_b)
    if standard_error > 0:  # Welch–Satterthwaite degrees of freedom
        dof = (var_a + var_b) ** 2 / (var_a ** 2 / (len(a) - 1) + var_b ** 2 / (len(b) - 1))
        half = t_quantile(0.5 + confidence / 2, dof) * standard_error
    else:
        half = 0.0
    interval = (gap - half, gap + half)
    level = (mean_a + mean_b) / 2
    relative_gap = abs(gap) / level if level else math.inf
    pooled = math.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    cov = pooled / level if level else math.inf
    percent = f"{100 * confidence:g}%"
    gap_text = (f"the gap B − A is {gap:+.4g} ({100 * relative_gap:.2f}% of FID, {percent} interval "
                f"[{interval[0]:.4g}, {interval[1]:.4g}], seed CoV {100 * cov:.2f}%)")
    if relative_gap < threshold:
        verdict, reason = "inconclusive", f"{gap_text}, below the {100 * threshold:.1f}% threshold"
    elif interval[0] <= 0 <= interval[1]:
        verdict, reason = "inconclusive", f"{gap_text}, whose interval contains 0"
    else:
        verdict = "A better" if gap > 0 else "B better"
        reason = f"{gap_text}, beyond the threshold and excluding 0"
    return Verdict(verdict, gap, interval, relative_gap, cov, reason)


def _seed_means(runs, name: str) -> np.ndarray:
    if isinstance(runs, SeedStudy):
        return runs.seed_means
    values = np.asarray(runs, dtype=np.float64)
    if values.ndim == 2:
        values = values.mean(axis=1)
    if values.ndim != 1 or len(values) < 2:
        raise ValueError(f"{name} must hold FIDs of at least 2 training seeds, got shape {np.shape(runs)}")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or Inf FIDs")
    return values
