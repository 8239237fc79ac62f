"""fastfid.uncertainty: error bars, FD∞, seed panels and verdicts, checked by simulation."""

import json

import numpy as np
import pytest

import fastfid
from fastfid import uncertainty
from fastfid._student_t import t_quantile


def gaussian(rng, n, mean, root):
    return mean + rng.standard_normal((n, len(mean))) @ root.T


@pytest.fixture
def known_gaussians(rng):
    """Generated N(μ_g, Σ_g) and an exactly known reference (μ_r, Σ_r), d = 6."""
    d = 6
    root_g = np.eye(d) + 0.3 * rng.standard_normal((d, d))
    root_r = np.eye(d) + 0.3 * rng.standard_normal((d, d))
    mu_g, mu_r = 0.4 * rng.standard_normal(d), np.zeros(d)
    sigma_g, sigma_r = root_g @ root_g.T, root_r @ root_r.T
    true_fd = fastfid.frechet_distance(mu_g, sigma_g, mu_r, sigma_r)
    return mu_g, root_g, (mu_r, sigma_r), true_fd


def test_t_quantiles_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 4.5, 19, 24, 300):
        for p in (0.6, 0.95, 0.975, 0.995, 0.025):
            assert t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-8)


def test_jackknife_standard_error_matches_fresh_resampling(rng, known_gaussians):
    # Brute force: the spread of FID over fresh sample sets of the same size from the known
    # distribution. The jackknife sees one sample set only; its SE, averaged over a few sets, must
    # agree within 25 % (the bound; the jackknife's own noise is ~1/√(2(G−1)) ≈ 16 % per set).
    mu_g, root_g, reference, _ = known_gaussians
    n = 2000
    fresh = [fastfid.fid(fastfid.FeatureStats.from_features(gaussian(rng, n, mu_g, root_g)), reference)
             for _ in range(300)]
    jackknife = [uncertainty.fid_with_error(gaussian(rng, n, mu_g, root_g), reference, groups=20, seed=i).standard_error
                 for i in range(12)]
    assert np.mean(jackknife) == pytest.approx(np.std(fresh, ddof=1), rel=0.25)


def test_jackknife_result_is_consistent(rng, known_gaussians):
    mu_g, root_g, reference, true_fd = known_gaussians
    x = gaussian(rng, 4000, mu_g, root_g)
    shards = uncertainty.split_into_shards(x, 10)
    result = uncertainty.fid_with_error(shards, reference)
    assert result.groups == 10 and result.method == "jackknife" and len(result.replicates) == 10
    assert result.value == pytest.approx(fastfid.fid(fastfid.FeatureStats.from_features(x), reference), rel=1e-10)
    # each replicate is the FD of the samples outside one shard, removed exactly
    kept = fastfid.FeatureStats.from_features(x) - shards[3]
    assert result.replicates[3] == pytest.approx(fastfid.fid(kept, reference), rel=1e-9)
    low, high = result.interval
    assert low < result.bias_corrected < high
    # the bias correction removes most of FID's positive bias (about tr Σ_g·d/N here)
    assert abs(result.bias_corrected - true_fd) < abs(result.value - true_fd) + 3 * result.standard_error


def test_contiguous_shards_are_views_of_the_rows(rng):
    x = rng.standard_normal((103, 4))
    shards = uncertainty.split_into_shards(x, 10, seed=None)
    assert [s.count for s in shards] == [10, 11, 10, 10, 11, 10, 10, 10, 11, 10]  # sizes differ by at most 1
    np.testing.assert_allclose(shards[1].mean, x[10:21].mean(axis=0), rtol=0, atol=1e-15)


def test_bootstrap(rng, known_gaussians):
    mu_g, root_g, reference, _ = known_gaussians
    result = uncertainty.fid_with_error(gaussian(rng, 3000, mu_g, root_g), reference, method="bootstrap", rounds=100)
    assert result.method == "bootstrap" and len(result.replicates) == 100
    assert result.interval[0] < result.interval[1] and result.standard_error > 0


def test_fd_infinity_recovers_the_closed_form(rng):
    # Equal means (no linear noise from the mean term), d = 32 so that FID's 1/N bias is visible.
    # Averaged over 20 independent sample sets, FD∞ must sit on the true FD within 3 standard
    # errors of that average, while FID of the smallest subsets is biased well above it.
    d = 32
    root_g = np.eye(d) + rng.standard_normal((d, d)) * 0.9 / np.sqrt(d)
    root_r = np.eye(d) + rng.standard_normal((d, d)) * 0.9 / np.sqrt(d)
    reference = (np.zeros(d), root_r @ root_r.T)
    true_fd = fastfid.frechet_distance(np.zeros(d), root_g @ root_g.T, *reference)
    results = [uncertainty.fd_infinity(gaussian(rng, 20000, np.zeros(d), root_g), reference, seed=i)
               for i in range(20)]
    values = np.array([r.value for r in results])
    assert len(results[0].sizes) == 15 and results[0].sizes[0] == 2000 and results[0].sizes[-1] == 20000
    assert abs(values.mean() - true_fd) < 3 * values.std(ddof=1) / np.sqrt(20)
    smallest = np.array([r.fids[0] for r in results])
    assert smallest.mean() - true_fd > 10 * values.std(ddof=1) / np.sqrt(20)
    assert np.mean([r.slope for r in results]) > 0
    r = results[0]
    np.testing.assert_allclose(r.residuals, r.fids - (r.value + r.slope / r.sizes), atol=1e-12)


def test_fd_infinity_from_shards(rng, known_gaussians):
    mu_g, root_g, reference, _ = known_gaussians
    shards = uncertainty.split_into_shards(gaussian(rng, 6000, mu_g, root_g), 12)
    result = uncertainty.fd_infinity(shards, reference)
    assert list(result.sizes) == [500 * (i + 2) for i in range(11)]  # cumulative counts ≥ N/10 = 600
    assert np.isfinite(result.value) and result.standard_error > 0


def simulated_panel(rng, n=25, k=10, mean=34.744, sigma_b=0.438, sigma_w=0.137):
    return mean + sigma_b * rng.standard_normal((n, 1)) + sigma_w * rng.standard_normal((n, k))


def test_seed_study_recovers_known_variances_and_covers(rng):
    # The FID Lottery's baseline panel, simulated 400 times.
    studies = [uncertainty.seed_study(simulated_panel(rng)) for _ in range(400)]
    sigma_b = np.array([s.sigma_between for s in studies])
    sigma_w = np.array([s.sigma_within for s in studies])
    # σ̂_w has 225 d.o.f. (≈ unbiased); σ̂_b only 24 and is biased low by ~1 %: 4 standard errors
    # of the mean over 400 simulations, plus that 1 %, bound both.
    assert abs(sigma_w.mean() - 0.137) < 4 * sigma_w.std() / 20
    assert abs(sigma_b.mean() - 0.438) < 4 * sigma_b.std() / 20 + 0.01 * 0.438
    covered = np.mean([s.interval[0] <= 34.744 <= s.interval[1] for s in studies])
    assert abs(covered - 0.95) < 3 * np.sqrt(0.95 * 0.05 / 400)  # binomial: ±0.033


def test_seed_study_summary(rng):
    study = uncertainty.seed_study(simulated_panel(rng))
    assert study.training_seeds == 25 and study.sampling_seeds == 10
    assert study.cov_between == pytest.approx(study.sigma_between / study.mean)
    assert 0 < study.icc < 1 and study.ratio > 1
    # more seeds, narrower interval; its own half-width needs about its own N
    assert study.training_seeds_for(study.half_width / 2) > 3 * study.training_seeds
    assert abs(study.training_seeds_for(study.half_width) - 25) <= 3


def write_rows(path, rows):
    if path.suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        lines = ["model,train_seed,sample_seed,fid"] + [f"{r['model']},{r['train_seed']},{r['sample_seed']},{r['fid']}"
                                                       for r in rows]
        path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_seed_study_from_a_file(rng, tmp_path, suffix):
    panels = {"a": simulated_panel(rng, 5, 3), "b": simulated_panel(rng, 4, 2)}
    rows = [{"model": m, "train_seed": i, "sample_seed": j, "fid": float(p[i, j])}
            for m, p in panels.items() for i in range(p.shape[0]) for j in range(p.shape[1])]
    path = tmp_path / f"runs{suffix}"
    write_rows(path, rows)
    study = uncertainty.seed_study(path, model="a")
    assert study.mean == pytest.approx(panels["a"].mean(), rel=1e-12)
    with pytest.raises(ValueError, match="name one with model="):
        uncertainty.seed_study(path)
    write_rows(path, rows[:-1])
    with pytest.raises(ValueError, match="unbalanced"):
        uncertainty.seed_study(path, model="b")


def test_seed_study_refuses_bad_tables():
    with pytest.raises(ValueError, match="N training seeds"):
        uncertainty.seed_study(np.ones((1, 5)))
    with pytest.raises(ValueError, match="NaN"):
        uncertainty.seed_study(np.array([[1.0, np.nan], [2.0, 3.0]]))


def test_compare_verdicts(rng):
    a = 34.7 + 0.44 * rng.standard_normal(25)
    clearly_worse = a.mean() * 1.05 + 0.44 * rng.standard_normal(25)
    assert uncertainty.compare(a, clearly_worse).verdict == "A better"
    assert uncertainty.compare(clearly_worse, a).verdict == "B better"
    tiny_gap = a + 0.005 * a.mean()  # 0.5 % worse: exact, but below the 1.3 % threshold
    result = uncertainty.compare(a, tiny_gap)
    assert result.verdict == "inconclusive" and "threshold" in result.reason
    noisy = 1.02 * 34.7 + 5.0 * rng.standard_normal(3)  # 2 % worse, three noisy seeds
    result = uncertainty.compare(a, noisy)
    assert result.verdict == "inconclusive" and "contains 0" in result.reason
    assert str(result).startswith("inconclusive: the gap B − A")
    with pytest.raises(ValueError, match="at least 2 training seeds"):
        uncertainty.compare([34.0], a)


def test_remove_is_the_merge_inverted(rng):
    x = 1e3 + rng.standard_normal((1000, 7))
    total, part = fastfid.FeatureStats.from_features(x), fastfid.FeatureStats.from_features(x[:250])
    rest = total - part
    expected = fastfid.FeatureStats.from_features(x[250:])
    assert rest.count == 750
    np.testing.assert_allclose(rest.mean, expected.mean, rtol=0, atol=1e-12 * 1e3)
    np.testing.assert_allclose(rest.cov, expected.cov, rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="must be smaller"):
        part - total


def test_pictures(rng, known_gaussians, tmp_path):
    pytest.importorskip("matplotlib")
    from fastfid import plots

    mu_g, root_g, reference, _ = known_gaussians
    x = gaussian(rng, 3000, mu_g, root_g)
    written = [plots.plot_jackknife(uncertainty.fid_with_error(x, reference), tmp_path / "jackknife.png"),
               plots.plot_fd_infinity(uncertainty.fd_infinity(x, reference), tmp_path / "fd_infinity.png"),
               plots.plot_seed_study(uncertainty.seed_study(simulated_panel(rng)), tmp_path / "panel.png")]
    for path in written:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_cli_error_bars_and_compare(rng, known_gaussians, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from fastfid import cli

    mu_g, root_g, reference, _ = known_gaussians
    np.save(tmp_path / "gen.npy", gaussian(rng, 2000, mu_g, root_g).astype(np.float32))
    fastfid.FeatureStats.from_features(gaussian(rng, 5000, np.zeros(6), np.linalg.cholesky(reference[1]))).save(
        tmp_path / "ref.npz")
    argv = ["fid", str(tmp_path / "gen.npy"), str(tmp_path / "ref.npz"), "--error-bars", "--groups", "10"]
    assert cli.main(argv + ["--json", "--plot", str(tmp_path / "jk.png")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["groups"] == 10 and out["interval"][0] < out["bias_corrected"] < out["interval"][1]
    assert (tmp_path / "jk.png").exists()
    assert cli.main(argv) == 0 and capsys.readouterr().out.startswith("bias-corrected FID: ")
    assert cli.main(["fid", str(tmp_path / "ref.npz"), str(tmp_path / "ref.npz"), "--error-bars"]) == 1
    assert "expected a .npy file" in capsys.readouterr().err

    rows = [{"model": m, "train_seed": i, "sample_seed": j, "fid": float(v)}
            for m, panel in (("base", simulated_panel(rng)), ("new", simulated_panel(rng, mean=33.5)))
            for i, row in enumerate(panel) for j, v in enumerate(row)]
    write_rows(tmp_path / "runs.csv", rows)
    assert cli.main(["compare", str(tmp_path / "runs.csv"), "--plot", str(tmp_path / "panel.png")]) == 0
    captured = capsys.readouterr()
    assert "A = base, B = new: B better" in captured.out
    assert (tmp_path / "panel_base.png").exists() and (tmp_path / "panel_new.png").exists()
    assert f"seed panels -> {tmp_path / 'panel_base.png'}, {tmp_path / 'panel_new.png'}" in captured.err
    assert cli.main(["compare", str(tmp_path / "runs.csv"), "--models", "new", "base", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"]["verdict"] == "A better"
    assert cli.main(["compare", str(tmp_path / "runs.csv"), "--models", "new", "old"]) == 1
    assert "no model 'old'" in capsys.readouterr().err
