"""A 20-group jackknife interval for FID at d = 2048, beside the one FD it replicates: the
issue's budget is 25 FDs' worth of time for the whole interval."""

import numpy as np
import pytest

import fastfid
import fastfid.uncertainty
from support.benchmarks import BENCH_DIM, BENCH_SAMPLES, record, relu_features

GROUP = f"jackknife-20-groups-d{BENCH_DIM}"


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(4)
    reference = fastfid.FeatureStats.from_features(relu_features(rng, 10_000, BENCH_DIM, offset=0.0,
                                                                 decay=BENCH_DIM / 8))
    generated = relu_features(rng, min(BENCH_SAMPLES, 20_000), BENCH_DIM, offset=0.1, decay=BENCH_DIM / 6)
    shards = fastfid.uncertainty.split_into_shards(generated, 20)  # accumulated in the statistics pass
    return shards, reference


@pytest.mark.benchmark(group=GROUP)
def test_one_fd(benchmark, inputs, medians):
    shards, reference = inputs
    total = shards[0]
    for shard in shards[1:]:
        total = total + shard
    value = benchmark.pedantic(fastfid.fid, args=(total, reference), rounds=3, iterations=1)
    record(benchmark, medians, "one_fd")
    assert value > 0


@pytest.mark.benchmark(group=GROUP)
def test_jackknife_interval(benchmark, inputs, medians, timings_enabled):
    shards, reference = inputs
    result = benchmark.pedantic(fastfid.fid_with_error, args=(shards, reference), rounds=3, iterations=1)
    record(benchmark, medians, "jackknife")
    total = shards[0]
    for shard in shards[1:]:
        total = total + shard
    assert result.value == pytest.approx(fastfid.fid(total, reference), rel=1e-10)
    assert result.interval[0] < result.bias_corrected < result.interval[1] and result.standard_error > 0
    if timings_enabled and BENCH_DIM == 2048:
        assert medians["jackknife"] <= 25 * medians["one_fd"]
