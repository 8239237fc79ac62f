"""Pictures of the uncertainty results, written as PNG files: the FD∞ fit, the jackknife
distribution, the seed panel. matplotlib is optional (``pip install "fastfid[plots]"``); no number
fastfid computes depends on it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fastfid.uncertainty import FDInfinity, FIDWithError, SeedStudy

__all__ = ["plot_fd_infinity", "plot_jackknife", "plot_seed_study"]


def _figure():
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError('pictures need matplotlib: pip install "fastfid[plots]"') from error
    return Figure(figsize=(6.4, 4.2), layout="constrained")  # no pyplot: no global state, no display


def _save(figure, path) -> Path:
    path = Path(path)
    figure.savefig(path, dpi=120)
    return path


def plot_fd_infinity(result: FDInfinity, path: str | os.PathLike) -> Path:
    """FID against 1/N with the least-squares line, extended to 1/N = 0 where it meets FD∞."""
    figure = _figure()
    axes = figure.add_subplot()
    inverse = 1.0 / result.sizes
    axes.plot(inverse, result.fids, "o", label="FID of nested subsets")
    line = np.linspace(0.0, inverse.max() * 1.05, 50)
    axes.plot(line, result.value + result.slope * line, "-", label=f"fit: FD∞ + {result.slope:.3g}/N")
    axes.errorbar([0.0], [result.value], yerr=[1.96 * result.standard_error], fmt="s", capsize=4,
                  label=f"FD∞ = {result.value:.4g} ± {result.standard_error:.2g} (bar: ±1.96 SE)")
    axes.set_xlabel("1 / N")
    axes.set_ylabel("FID")
    axes.set_title("FD∞: FID extrapolated to infinitely many samples")
    axes.legend()
    return _save(figure, path)


def plot_jackknife(result: FIDWithError, path: str | os.PathLike) -> Path:
    """The replicate FIDs, with the FID, the bias-corrected value and the confidence interval."""
    figure = _figure()
    axes = figure.add_subplot()
    axes.hist(result.replicates, bins=max(5, min(30, len(result.replicates) // 2)), color="0.75",
              label=f"{result.method} replicates ({len(result.replicates)})")
    axes.axvline(result.value, color="C0", label=f"FID {result.value:.4g}")
    axes.axvline(result.bias_corrected, color="C1", linestyle="--", label=f"bias-corrected {result.bias_corrected:.4g}")
    axes.axvspan(*result.interval, color="C1", alpha=0.15, label=f"{100 * result.confidence:g}% interval")
    axes.set_xlabel("FID")
    axes.set_ylabel("replicates")
    axes.set_title(f"FID {result.value:.4g} ± {result.standard_error:.2g} ({result.groups} groups)")
    axes.legend()
    return _save(figure, path)


def plot_seed_study(study: SeedStudy, path: str | os.PathLike) -> Path:
    """Each training seed's FIDs over sampling seeds, their means, and the grand mean's interval."""
    figure = _figure()
    axes = figure.add_subplot()
    seeds = np.arange(study.training_seeds)
    order = np.argsort(study.seed_means)
    for position, seed in enumerate(order):
        axes.plot(np.full(study.sampling_seeds, position), study.table[seed], ".", color="0.6")
    axes.plot(seeds, study.seed_means[order], "o", color="C0", label="mean over sampling seeds")
    axes.axhline(study.mean, color="C1", label=f"grand mean {study.mean:.4g}")
    axes.axhspan(*study.interval, color="C1", alpha=0.15, label=f"{100 * study.confidence:g}% interval")
    axes.set_xlabel("training seed (sorted by mean FID)")
    axes.set_ylabel("FID")
    axes.set_title(f"σ between {study.sigma_between:.3g} ({100 * study.cov_between:.2f}%), "
                   f"σ within {study.sigma_within:.3g} ({100 * study.cov_within:.2f}%)")
    axes.legend()
    return _save(figure, path)
