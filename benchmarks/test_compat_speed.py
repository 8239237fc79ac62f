"""Each peer's own FID computation beside its drop-in, on the same precomputed features: the
part of an FID run that differs (the network is the same for all). Every pair also checks that
the numbers agree.

python -m pytest benchmarks/test_compat_speed.py --benchmark-group-by=group --benchmark-columns=median,rounds
"""


import numpy as np
import pytest
import torch

from support.benchmarks import BENCH_DIM, BENCH_SAMPLES, relu_features

from support.peers import peer  # noqa: E402

SAMPLES = min(BENCH_SAMPLES, 10_000)
pytestmark = [pytest.mark.filterwarnings("ignore:The `disp` argument is deprecated:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning")]


@pytest.fixture(scope="module")
def features():
    rng = np.random.default_rng(0)
    return (relu_features(rng, SAMPLES, BENCH_DIM, offset=0.3, decay=BENCH_DIM / 8),
            relu_features(rng, SAMPLES, BENCH_DIM, offset=0.35, decay=BENCH_DIM / 7))


@pytest.fixture(scope="module")
def moments(features):
    return [(f.mean(axis=0), np.cov(f, rowvar=False)) for f in features]


def _once(benchmark, function):
    return benchmark.pedantic(function, rounds=3, iterations=1, warmup_rounds=0)


@pytest.mark.benchmark(group="drop-in pytorch-fid: calculate_frechet_distance")
@pytest.mark.parametrize("side", ["pytorch-fid", "fastfid.compat"])
def test_pytorch_fid(benchmark, moments, side):
    if side == "pytorch-fid":
        function = peer("pytorch_fid.fid_score").calculate_frechet_distance
    else:
        from fastfid.compat.pytorch_fid.fid_score import calculate_frechet_distance as function
    (m1, s1), (m2, s2) = moments
    value = _once(benchmark, lambda: function(m1, s1, m2, s2))
    from fastfid import frechet_distance

    assert value == pytest.approx(frechet_distance(m1, s1, m2, s2), rel=1e-6)


class _Features(torch.nn.Module):
    """Hands the 'images' (here: features) through, so that the metric's own compute() is timed."""

    def __init__(self, dim):
        super().__init__()
        self.num_features = dim

    def forward(self, x):
        return x


@pytest.mark.benchmark(group="drop-in torchmetrics: FrechetInceptionDistance.compute()")
@pytest.mark.parametrize("side", ["torchmetrics", "fastfid.compat"])
def test_torchmetrics(benchmark, features, moments, side):
    module = peer("torchmetrics.image.fid") if side == "torchmetrics" else peer("fastfid.compat.torchmetrics")
    metric = module.FrechetInceptionDistance(feature=_Features(BENCH_DIM))
    for batch in np.array_split(features[0], 10):
        metric.update(torch.from_numpy(batch).float(), real=True)
    for batch in np.array_split(features[1], 10):
        metric.update(torch.from_numpy(batch).float(), real=False)
    # compute() caches its result until the next update: forget it before each round.
    value = float(benchmark.pedantic(metric.compute, setup=lambda: setattr(metric, "_computed", None), rounds=3,
                                     iterations=1))
    from fastfid import frechet_distance

    # torchmetrics: float32 features, raw sums, eigenvalues of Σ₁Σ₂ — within 1e-3 at these sizes.
    exact = frechet_distance(*[torch.from_numpy(f).float().double().numpy() for f in moments[0]],
                             *[torch.from_numpy(f).float().double().numpy() for f in moments[1]])
    assert value == pytest.approx(exact, rel=1e-3)


@pytest.mark.benchmark(group="drop-in clean-fid: FID from features (fid_from_feats)")
@pytest.mark.parametrize("side", ["clean-fid", "fastfid.compat"])
def test_cleanfid(benchmark, features, moments, side):
    if side == "clean-fid":
        function = peer("cleanfid.fid").fid_from_feats
    else:
        from fastfid import FeatureStats, fid

        def function(a, b):
            return fid(FeatureStats.from_features(a), FeatureStats.from_features(b))
    value = _once(benchmark, lambda: function(*features))
    from fastfid import frechet_distance

    assert value == pytest.approx(frechet_distance(*moments[0], *moments[1]), rel=1e-6)


@pytest.mark.benchmark(group="drop-in torch-fidelity: FID from features")
@pytest.mark.parametrize("side", ["torch-fidelity", "fastfid.compat"])
def test_torch_fidelity(benchmark, features, moments, side):
    if side == "torch-fidelity":
        metric_fid = peer("torch_fidelity.metric_fid")

        def function(a, b):
            stats = [metric_fid.fid_features_to_statistics(torch.from_numpy(x)) for x in (a, b)]
            return metric_fid.fid_statistics_to_metric(*stats, verbose=False)["frechet_inception_distance"]
    else:
        from fastfid import FeatureStats, fid

        def function(a, b):
            return fid(FeatureStats.from_features(a), FeatureStats.from_features(b))
    value = _once(benchmark, lambda: function(*features))
    from fastfid import frechet_distance

    assert value == pytest.approx(frechet_distance(*moments[0], *moments[1]), rel=1e-5)
