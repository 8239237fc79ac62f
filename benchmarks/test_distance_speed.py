"""FD at d = 2048: fastfid's exact symmetric route against scipy's sqrtm (pytorch-fid, clean-fid)
and torch's complex eigvals (torchmetrics, torch-fidelity), on the same realistic statistics."""

import numpy as np
import pytest
from scipy import linalg

import fastfid
from support.benchmarks import BENCH_DIM, record, relu_features

GROUP = f"frechet-distance-d{BENCH_DIM}"


@pytest.fixture(scope="module")
def statistics():
    rng = np.random.default_rng(0)
    a = relu_features(rng, 10_000, BENCH_DIM, offset=0.0, decay=BENCH_DIM / 8)
    b = relu_features(rng, 10_000, BENCH_DIM, offset=0.1, decay=BENCH_DIM / 6)
    return a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)


@pytest.fixture(scope="module")
def exact(statistics):
    """FD by an independent float64 route: Σ₁^½ from numpy's eigh, then eigvalsh of Σ₁^½ Σ₂ Σ₁^½."""
    mu1, s1, mu2, s2 = statistics
    w, v = np.linalg.eigh(s1)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(root @ s2 @ root), 0, None)).sum()
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt)


def within_scipy_bound(value, exact, statistics):
    # The foundation issue's agreement bound with scipy: 1e-6 · (tr Σ₁ + tr Σ₂).
    _, s1, _, s2 = statistics
    return abs(value - exact) <= 1e-6 * (np.trace(s1) + np.trace(s2))


def scipy_sqrtm_fd(mu1, s1, mu2, s2):
    covmean = linalg.sqrtm(s1 @ s2)
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


def torchmetrics_eigvals_fd(mu1, s1, mu2, s2):
    import torch

    t = [torch.from_numpy(x) for x in (mu1, s1, mu2, s2)]
    trace_sqrt = torch.linalg.eigvals(t[1] @ t[3]).sqrt().real.sum()
    return float((t[0] - t[2]).square().sum() + t[1].trace() + t[3].trace() - 2 * trace_sqrt)


@pytest.mark.benchmark(group=GROUP)
def test_fastfid_frechet_distance(benchmark, statistics, exact, medians):
    value = benchmark(fastfid.frechet_distance, *statistics)
    record(benchmark, medians, "fastfid")
    assert within_scipy_bound(value, exact, statistics)


@pytest.mark.benchmark(group=GROUP)
def test_fastfid_reference_distance(benchmark, statistics, exact, medians):
    mu1, s1, mu2, s2 = statistics
    reference = fastfid.Reference((mu1, s1))
    other = fastfid.FeatureStats.from_mean_cov(mu2, s2)
    value = benchmark(reference.distance, other)
    record(benchmark, medians, "reference")
    assert within_scipy_bound(value, exact, statistics)


@pytest.mark.benchmark(group=GROUP)
def test_scipy_sqrtm(benchmark, statistics, exact, medians):
    value = benchmark.pedantic(scipy_sqrtm_fd, args=statistics, rounds=3, iterations=1)
    record(benchmark, medians, "sqrtm")
    assert within_scipy_bound(value, exact, statistics)


@pytest.mark.benchmark(group=GROUP)
def test_torchmetrics_eigvals(benchmark, statistics, exact, medians):
    pytest.importorskip("torch")
    value = benchmark.pedantic(torchmetrics_eigvals_fd, args=statistics, rounds=3, iterations=1)
    record(benchmark, medians, "eigvals")
    assert within_scipy_bound(value, exact, statistics)


# Floors measured on the 2-core development machine (README, "Performance") with a margin for its
# noise: fastfid ≈ 0.46 s, Reference ≈ 0.39 s, sqrtm ≈ 9.4 s, eigvals ≈ 3.0 s at d = 2048 (2026-11-23).
SPEEDUP_FLOORS = {("sqrtm", "fastfid"): 12, ("sqrtm", "reference"): 15, ("eigvals", "fastfid"): 4}


def test_speedups(medians, timings_enabled):
    if not timings_enabled or BENCH_DIM < 2048:
        pytest.skip("speed ratios are asserted only for timed runs at d = 2048")
    for (slow, fast), floor in SPEEDUP_FLOORS.items():
        if slow in medians and fast in medians:
            ratio = medians[slow] / medians[fast]
            print(f"{fast} is {ratio:.1f}x faster than {slow}")
            assert ratio >= floor, f"{fast} is only {ratio:.1f}x faster than {slow} (floor {floor}x)"
