"""fastfid.compat.torchmetrics against torchmetrics itself, on the same images and weights."""

import numpy as np
import pytest
import torch

from support.peers import peer

tm_fid = peer("torchmetrics.image.fid")
tm_kid = peer("torchmetrics.image.kid")
tm_inception = peer("torchmetrics.image.inception")
ours = peer("fastfid.compat.torchmetrics")

# torchmetrics warns that KID and IS keep every feature (ours too keep them: they need them).
pytestmark = pytest.mark.filterwarnings("ignore:Metric `.*` will save all extracted features:UserWarning")


def images(seed, n, size=(48, 40)):
    generator = torch.Generator().manual_seed(seed)
    base = torch.randint(0, 256, (n, 3, *size), dtype=torch.uint8, generator=generator)
    return base


@pytest.fixture(scope="module")
def batches(peer_weights):
    return [images(1, 12), images(2, 10)], [images(3, 12, (64, 64)), images(4, 9, (64, 64))]


def _fill(metric, batches):
    real, fake = batches
    for batch in real:
        metric.update(batch, real=True)
    for batch in fake:
        metric.update(batch, real=False)
    return metric


@pytest.mark.slow
@pytest.mark.parametrize("antialias", [True, False])
def test_fid_equals_torchmetrics(batches, antialias):
    theirs = _fill(tm_fid.FrechetInceptionDistance(feature=2048, antialias=antialias), batches).compute()
    mine = _fill(ours.FrechetInceptionDistance(feature=2048, antialias=antialias), batches).compute()
    assert mine.dtype == theirs.dtype == torch.float32
    # Features agree to float32 rounding (same network, same preprocessing); torchmetrics' trace term
    # (eigenvalues of the non-symmetric Σ₁Σ₂ in float64 from raw sums) is within 1e-4 of the exact one here.
    assert float(mine) == pytest.approx(float(theirs), rel=1e-4)


def test_small_layers_and_normalize(batches):
    real, fake = batches
    for feature in (64, 768):
        theirs = tm_fid.FrechetInceptionDistance(feature=feature, normalize=True)
        mine = ours.FrechetInceptionDistance(feature=feature, normalize=True)
        for metric in (theirs, mine):
            for batch in real:
                metric.update(batch.float() / 255, real=True)
            for batch in fake:
                metric.update(batch.float() / 255, real=False)
        assert float(mine.compute()) == pytest.approx(float(theirs.compute()), rel=1e-4)


def test_state_is_exact_and_merges(batches):
    real, fake = batches
    whole = _fill(ours.FrechetInceptionDistance(), batches)
    first = ours.FrechetInceptionDistance()
    second = ours.FrechetInceptionDistance()
    first.update(real[0], real=True)
    first.update(fake[0], real=False)
    second.update(real[1], real=True)
    second.update(fake[1], real=False)
    first.merge_state(second)
    assert float(first.compute()) == pytest.approx(float(whole.compute()), rel=1e-6)
    stats = ours._packed.to_stats(whole.real_stats)
    features = torch.cat([whole.inception(batch) for batch in real]).double().numpy()
    assert stats.count == 22
    np.testing.assert_allclose(stats.mean, features.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(stats.cov, np.cov(features, rowvar=False), rtol=1e-8, atol=1e-10)


def test_torchmetrics_states_are_exact_views_in_its_dtypes(batches):
    theirs = _fill(tm_fid.FrechetInceptionDistance(feature=64), batches)
    mine = _fill(ours.FrechetInceptionDistance(feature=64), batches)
    for side in ("real", "fake"):
        count = getattr(mine, f"{side}_features_num_samples")
        assert count.dtype == torch.long and int(count) == int(getattr(theirs, f"{side}_features_num_samples"))
        for state in ("sum", "cov_sum"):
            expected, got = getattr(theirs, f"{side}_features_{state}"), getattr(mine, f"{side}_features_{state}")
            assert got.dtype == expected.dtype == torch.float64 and got.shape == expected.shape
            # The same float32 features summed two ways in float64: rounding apart, ~1e-12 relative;
            # the network's float32 features themselves agree to ~1e-6 between the two metrics.
            np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5 * float(expected.abs().max()))
    # Views of the exact state, which stays: n·μ and C + n·μμᵀ rebuild the covariance.
    stats = ours._packed.to_stats(mine.real_stats)
    n, total, outer = stats.count, mine.real_features_sum.numpy(), mine.real_features_cov_sum.numpy()
    np.testing.assert_allclose((outer - np.outer(total, total) / n) / (n - 1), stats.cov, rtol=1e-9,
                               atol=1e-9 * np.abs(stats.cov).max())


def test_the_network_stays_in_eval_mode_and_kid_and_is_warn_as_torchmetrics(batches):
    metric = ours.FrechetInceptionDistance(feature=64)
    metric.train()
    assert metric.training and not metric.inception.training  # as torchmetrics' NoTrainInceptionV3
    assert not any(module.training for module in metric.inception.modules())
    for make in (lambda: ours.KernelInceptionDistance(feature=64), lambda: ours.InceptionScore()):
        with pytest.warns(UserWarning, match="will save all extracted features in buffer"):
            make()


def test_reset_keeps_real_when_asked(batches):
    metric = _fill(ours.FrechetInceptionDistance(reset_real_features=False), batches)
    metric.reset()
    assert ours._packed.count(metric.real_stats) == 22 and ours._packed.count(metric.fake_stats) == 0
    metric = _fill(ours.FrechetInceptionDistance(), batches)
    metric.reset()
    assert ours._packed.count(metric.real_stats) == 0


def test_errors_match_torchmetrics(batches):
    real, _ = batches
    for cls in (tm_fid.FrechetInceptionDistance, ours.FrechetInceptionDistance):
        with pytest.raises(ValueError, match="must be one of"):
            cls(feature=1000)
        with pytest.raises(ValueError, match="normalize"):
            cls(normalize=1)
        with pytest.raises(TypeError, match="unknown input"):
            cls(feature="2048")
        metric = cls()
        with pytest.raises(ValueError, match="uint8"):
            metric.update(real[0].float(), real=True)
        metric.update(real[0], real=True)
        with pytest.raises(RuntimeError, match="More than one sample"):
            metric.compute()


def test_collection_and_custom_module(batches):
    from torchmetrics import MetricCollection

    class Flat(torch.nn.Module):
        num_features = 3

        def forward(self, x):
            return x.float().mean(dim=(2, 3))

    real, fake = batches
    results = []
    for cls in (tm_fid.FrechetInceptionDistance, ours.FrechetInceptionDistance):
        collection = MetricCollection({"fid": cls(feature=Flat())})
        collection.update(torch.cat([r[..., :40, :40] for r in real]), real=True)
        collection.update(torch.cat([f[..., :40, :40] for f in fake]), real=False)
        results.append(float(collection.compute()["fid"]))
    assert results[1] == pytest.approx(results[0], rel=1e-5)


def test_kid_equals_torchmetrics_with_the_same_subsets(batches):
    values = []
    for cls in (tm_kid.KernelInceptionDistance, ours.KernelInceptionDistance):
        metric = _fill(cls(subsets=5, subset_size=15), batches)
        torch.manual_seed(7)
        values.append([float(v) for v in metric.compute()])
    # torchmetrics sums the cubed kernel in float32 (~3e-6 apart here; the mean ~1e-7).
    assert values[1][0] == pytest.approx(values[0][0], rel=1e-4)
    assert values[1][1] == pytest.approx(values[0][1], rel=1e-4)
    with pytest.raises(ValueError, match="smaller than the number of samples"):
        _fill(ours.KernelInceptionDistance(subset_size=50), batches).compute()


def test_inception_score_equals_torchmetrics(batches):
    real, fake = batches
    values = []
    for cls in (tm_inception.InceptionScore, ours.InceptionScore):
        metric = cls(splits=3)
        for batch in real + fake:
            metric.update(batch[..., :40, :40])
        torch.manual_seed(3)
        values.append([float(v) for v in metric.compute()])
    assert values[1][0] == pytest.approx(values[0][0], rel=1e-5)
    # The std over 3 splits is a difference of nearly equal float32 scores in torchmetrics: ~2e-5 apart.
    assert values[1][1] == pytest.approx(values[0][1], rel=1e-4)


def test_ranks_merge_exactly(tmp_path):
    """Two gloo processes each update a share; compute() on every rank gives one process's FID, and
    the synced state is the exact merge (features with a large mean, where raw sums lose digits)."""
    import subprocess
    import sys
    from pathlib import Path

    from fastfid import FeatureStats, fid

    rng = np.random.default_rng(0)
    real, fake = 1000 + rng.normal(size=(101, 6)), 1000.3 + rng.normal(size=(80, 6))
    np.savez(tmp_path / "inputs.npz", real=real, fake=fake)
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str((Path(__file__).parent / "support" / "distributed_compat_worker.py")), str(tmp_path)],
                         capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    whole = FeatureStats.from_features(real)
    expected = fid(whole, FeatureStats.from_features(fake))
    for rank in range(2):
        result = np.load(tmp_path / f"rank_{rank}.npz")
        assert int(result["count"]) == 101
        np.testing.assert_allclose(result["mean"], whole.mean, rtol=1e-12)
        np.testing.assert_allclose(result["cov"], whole.cov, rtol=0, atol=1e-10 * np.abs(whole.cov).max())
        assert float(result["fid"]) == pytest.approx(expected, rel=1e-6)  # returned as float32, as torchmetrics


def test_non_finite_features_are_refused_and_change_nothing():
    class Passthrough(torch.nn.Module):
        num_features = 3

        def forward(self, x):
            return x

    metric = ours.FrechetInceptionDistance(feature=Passthrough())
    metric.update(torch.ones(4, 3) * torch.arange(4.0)[:, None], real=True)
    before = metric.real_stats.clone()
    bad = torch.ones(2, 3)
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        metric.update(bad, real=True)
    assert torch.equal(metric.real_stats, before)
