"""Benchmarks: each fastfid routine beside its reference, in one pytest-benchmark group.

Sizes default to the FID case (d = 2048, 50,000 samples); FASTFID_BENCH_DIM and
FASTFID_BENCH_SAMPLES shrink them (CI runs them small with --benchmark-disable, as correctness
checks). Speed ratios are asserted only when timings are taken.
"""

import sys
from pathlib import Path

import pytest

# The benchmarks share the tests' helpers (tests/support).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


@pytest.fixture(scope="session")
def timings_enabled(request):
    return not request.config.getoption("benchmark_disable")


@pytest.fixture(scope="session")
def medians():
    """Median seconds per benchmark name, filled as the benchmarks of a module run."""
    return {}
