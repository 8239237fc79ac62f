"""The benchmarks' sizes (FASTFID_BENCH_DIM, FASTFID_BENCH_SAMPLES shrink them for CI) and the record
of their medians."""

import os

from support.features import relu_features  # noqa: F401  (the benchmarks' features)

BENCH_DIM = int(os.environ.get("FASTFID_BENCH_DIM", "2048"))
BENCH_SAMPLES = int(os.environ.get("FASTFID_BENCH_SAMPLES", "50000"))


def record(benchmark, medians, name):
    if benchmark.stats is not None:
        medians[name] = benchmark.stats.stats.median
