"""Benchmarks: each fastfid routine beside its reference, in one pytest-benchmark group.

Sizes default to the FID case (d = 2048, 50,000 samples); FASTFID_BENCH_DIM and
FASTFID_BENCH_SAMPLES shrink them (CI runs them small with --benchmark-disable, as correctness
checks). Speed ratios are asserted only when timings are taken.
"""

import os

import numpy as np
import pytest

BENCH_DIM = int(os.environ.get("FASTFID_BENCH_DIM", "2048"))
BENCH_SAMPLES = int(os.environ.get("FASTFID_BENCH_SAMPLES", "50000"))


def relu_features(rng, n, d, *, offset, decay):
    z = rng.standard_normal((n, d)) * np.exp(-np.arange(d) / decay)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return np.maximum(z @ q + offset, 0)


@pytest.fixture(scope="session")
def timings_enabled(request):
    return not request.config.getoption("benchmark_disable")


@pytest.fixture(scope="session")
def medians():
    """Median seconds per benchmark name, filled as the benchmarks of a module run."""
    return {}


def record(benchmark, medians, name):
    if benchmark.stats is not None:
        medians[name] = benchmark.stats.stats.median
