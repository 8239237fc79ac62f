import mpmath
import numpy as np
import pytest
from scipy import linalg

import fastfid
from support.features import relu_features


def pair_of_stats(rng, n, d):
    """Two realistic feature sets (the second shifted and with a slower spectral decay)."""
    a = fastfid.FeatureStats.from_features(relu_features(rng, n, d))
    b = fastfid.FeatureStats.from_features(relu_features(rng, n, d, offset=0.1, decay=max(d / 6, 1.0)))
    return a.mean, a.cov, b.mean, b.cov


def scipy_fd(mu1, s1, mu2, s2):
    """pytorch-fid's formula on scipy.linalg.sqrtm, the accepted reference (real part kept)."""
    covmean = linalg.sqrtm(s1 @ s2)
    diff = mu1 - mu2
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real


# The bound: |FD − FD_scipy| ≤ 1e-6·(tr Σ₁ + tr Σ₂). sqrtm of the non-symmetric Σ₁Σ₂ (a
# Schur method) loses accuracy with the spread of the spectrum, and in the rank-deficient n < d
# cases its own error on the null space reaches ~1e-8 of the traces; the symmetric routes are
# ~1e-13. 1e-6 of the traces is far below any FID difference anyone reports (FID ~ 1–100 while
# tr Σ ~ 10²–10³ gives an absolute bound ~ 1e-4–1e-3 at d = 2048, 1e-6 relative to a typical FID's
# last printed digit) and still fails for any real mistake in the route.
def scipy_bound(s1, s2):
    return 1e-6 * (np.trace(s1) + np.trace(s2))


CASES = [(500, 2), (500, 16), (2000, 64), (100, 64), (1000, 256), (200, 256), (300, 512)]


@pytest.mark.parametrize("method", ["eigh", "newton_schulz"])
@pytest.mark.parametrize("n,d", CASES, ids=[f"n{n}-d{d}" for n, d in CASES])
def test_agrees_with_scipy_sqrtm(rng, method, n, d):
    mu1, s1, mu2, s2 = pair_of_stats(rng, n, d)
    result = fastfid.frechet_distance(mu1, s1, mu2, s2, method=method, return_info=True)
    assert result.method == method
    assert result.converged
    assert abs(result.value - scipy_fd(mu1, s1, mu2, s2)) <= scipy_bound(s1, s2)
    if n <= d:
        assert result.rank == n - 1  # the pivoted factor found the exact rank: an (n−1)×(n−1) problem


@pytest.mark.slow
@pytest.mark.parametrize("n", [4000, 1000])  # full rank, and rank 999 < d
def test_agrees_with_scipy_sqrtm_at_inception_size(rng, n):
    mu1, s1, mu2, s2 = pair_of_stats(rng, n, 2048)
    result = fastfid.frechet_distance(mu1, s1, mu2, s2, return_info=True)
    assert result.rank == min(n - 1, 2048)
    assert abs(result.value - scipy_fd(mu1, s1, mu2, s2)) <= scipy_bound(s1, s2)


def exact_fd(mu1, s1, mu2, s2, digits=50):
    """FD in 50-digit arithmetic: tr √(Σ₁Σ₂) = Σ √λ(S Σ₂ S), S = Σ₁^½ from an exact eigendecomposition."""
    with mpmath.workdps(digits):
        a, b = mpmath.matrix(s1.tolist()), mpmath.matrix(s2.tolist())
        w, v = mpmath.eigsy(a)
        root = v * mpmath.diag([mpmath.sqrt(max(x, 0)) for x in w]) * v.T
        lam, _ = mpmath.eigsy(root * b * root)
        trace_sqrt = mpmath.fsum(mpmath.sqrt(max(x, 0)) for x in lam)
        diff = mpmath.matrix((mu1 - mu2).tolist())
        mean_term = mpmath.fsum(x * x for x in diff)
        trace = mpmath.fsum(a[i, i] + b[i, i] for i in range(a.rows))
        return float(mean_term + trace - 2 * trace_sqrt), float(trace_sqrt)


# Against exact arithmetic: the float64 symmetric route errs by ~d·eps·κ relative on the trace term
# (κ of the factor, here ≤ 1e3); with the traces ≈ 3× FD in these cases the FD keeps ~1e-13
# relative. 1e-10 leaves three orders of margin; a wrong formula is off by ≥ 1e-3.
EXACT_RTOL = 1e-10


@pytest.mark.parametrize("method", ["eigh", "newton_schulz"])
@pytest.mark.parametrize("d", [2, 3, 5, 8])
def test_agrees_with_exact_arithmetic(rng, method, d):
    mu1, s1, mu2, s2 = pair_of_stats(rng, 50, d)
    expected, expected_trace = exact_fd(mu1, s1, mu2, s2)
    result = fastfid.frechet_distance(mu1, s1, mu2, s2, method=method, return_info=True)
    assert result.value == pytest.approx(expected, rel=EXACT_RTOL)
    assert result.trace_sqrt == pytest.approx(expected_trace, rel=EXACT_RTOL)


def test_semidefinite_sigma_exactly(rng):
    # Σ₁ of rank 3 in d = 6 built from exact integer factors: the pivoted factor must find rank 3.
    f = rng.integers(-3, 4, size=(6, 3)).astype(float)
    s1 = f @ f.T
    s2 = np.cov(rng.normal(size=(40, 6)), rowvar=False)
    mu = np.zeros(6)
    expected, _ = exact_fd(mu, s1, mu, s2)
    result = fastfid.frechet_distance(mu, s1, mu, s2, return_info=True)
    assert result.rank == 3
    assert result.value == pytest.approx(expected, rel=EXACT_RTOL)


@pytest.mark.parametrize("n,d", [(1000, 64), (50, 128), (3, 40)])
def test_distance_to_itself_is_zero(rng, n, d):
    stats = fastfid.FeatureStats.from_features(relu_features(rng, n, d))
    # 1e-10·tr Σ: the bound; the route's rounding is ~d·eps·tr Σ ≈ 1e-14·tr Σ.
    bound = 1e-10 * np.trace(stats.cov)
    for method in ("eigh", "newton_schulz"):
        value = fastfid.fid(stats, stats, method=method)
        assert 0 <= value <= bound


def test_never_negative(rng):
    # Identical rank-deficient statistics: every rounding error would show as a negative FD.
    for seed in range(20):
        x = np.random.default_rng(seed).normal(size=(5, 30))
        stats = fastfid.FeatureStats.from_features(x)
        assert fastfid.fid(stats, stats) >= 0


def test_the_core_reports_clamped_eigenvalues(rng):
    # Σ₂ of rank 4 seen through a full-rank Σ₁: L^T Σ₂ L has 12 zero eigenvalues that rounding
    # scatters around 0; the negative ones are clamped and reported. (frechet_distance factors the
    # rank-4 side instead, so this is the core called directly.)
    from fastfid import _core

    s1 = np.cov(rng.normal(size=(100, 16)), rowvar=False)
    f = rng.normal(size=(16, 4))
    s2 = f @ f.T
    info = _core.trace_sqrt_product(_core.PsdFactor(s1), s2)
    assert info["clamped"] > 0
    assert -1e-12 * np.trace(s1) * np.trace(s2) < info["most_negative"] < 0
    result = fastfid.frechet_distance(np.zeros(16), s1, np.zeros(16), s2, return_info=True)
    assert result.rank == 4 and result.clamped == 0
    assert abs(result.value - scipy_fd(np.zeros(16), s1, np.zeros(16), s2)) <= scipy_bound(s1, s2)


def test_sqrtm_method_is_the_scipy_reference(rng):
    mu1, s1, mu2, s2 = pair_of_stats(rng, 400, 20)
    result = fastfid.frechet_distance(mu1, s1, mu2, s2, method="sqrtm", return_info=True)
    assert result.method == "sqrtm"
    assert result.value == pytest.approx(scipy_fd(mu1, s1, mu2, s2), rel=1e-12)


def test_calculate_frechet_distance_is_a_drop_in(rng):
    mu1, s1, mu2, s2 = pair_of_stats(rng, 400, 20)
    value = fastfid.calculate_frechet_distance(mu1, s1, mu2, s2)
    assert type(value) is np.float64
    assert abs(value - scipy_fd(mu1, s1, mu2, s2)) <= scipy_bound(s1, s2)
    # pytorch-fid accepts lists and float32 and positional eps
    as_lists = fastfid.calculate_frechet_distance(mu1.tolist(), s1.astype(np.float32), mu2, s2.tolist(), 1e-6)
    assert as_lists == pytest.approx(value, rel=1e-5)


def test_one_dimensional_scalars():
    # d = 1: FD = (μ₁−μ₂)² + (σ₁ − σ₂)²
    assert fastfid.calculate_frechet_distance(1.0, 4.0, 3.0, 9.0) == pytest.approx(4 + 1, rel=1e-14)


def test_reference_reuses_its_factor(rng):
    mu1, s1, mu2, s2 = pair_of_stats(rng, 300, 32)
    reference = fastfid.Reference((mu1, s1))
    assert reference.dim == 32 and reference.rank == 32
    for method in ("eigh", "newton_schulz"):
        value = reference.distance((mu2, s2), method=method)
        assert value == pytest.approx(fastfid.frechet_distance(mu1, s1, mu2, s2), rel=1e-12)
    with pytest.raises(ValueError, match="dim 3"):
        reference.distance((np.zeros(3), np.eye(3)))
    with pytest.raises(ValueError, match="sqrtm"):
        reference.distance((mu2, s2), method="sqrtm")


def test_fid_takes_stats_and_paths(rng, tmp_path):
    a = fastfid.FeatureStats.from_features(relu_features(rng, 200, 10))
    b = fastfid.FeatureStats.from_features(relu_features(rng, 200, 10, offset=0.2))
    b.save(tmp_path / "b.npz")
    assert fastfid.fid(a, tmp_path / "b.npz") == fastfid.fid(a, b)
    assert fastfid.fid(str(tmp_path / "b.npz"), a) == pytest.approx(fastfid.fid(a, b), rel=1e-12)
    with pytest.raises(TypeError, match="FeatureStats"):
        fastfid.fid(a, 3)


def test_newton_schulz_reports_non_convergence(rng):
    mu1, s1, mu2, s2 = pair_of_stats(rng, 400, 20)
    with pytest.warns(RuntimeWarning, match="stopped after 2 iterations"):
        result = fastfid.frechet_distance(mu1, s1, mu2, s2, method="newton_schulz", max_iterations=2,
                                          return_info=True)
    assert not result.converged and result.iterations == 2


def test_newton_schulz_rejects_indefinite_sigma2():
    indefinite = np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match="sigma2 is not positive semidefinite"):
        fastfid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), indefinite, method="newton_schulz")


# --- bad input ------------------------------------------------------------------------------------
def bad_inputs():
    mu, sigma = np.zeros(3), np.eye(3)
    nan_sigma = np.eye(3)
    nan_sigma[1, 2] = nan_sigma[2, 1] = np.nan
    skew = np.eye(3)
    skew[0, 1] = 0.5
    indefinite = np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    negative_variance = np.diag([1.0, -1.0, 1.0])
    return [
        ((mu, sigma, np.zeros(4), np.eye(4)), ValueError, "different lengths"),
        ((mu, np.eye(4), mu, sigma), ValueError, "sigma1 has shape"),
        ((mu, sigma, mu, np.ones((3, 2))), ValueError, "sigma2 must be a square"),
        ((np.array([0, np.inf, 0]), sigma, mu, sigma), ValueError, "mu1 contains NaN or Inf"),
        ((mu, nan_sigma, mu, sigma), ValueError, "sigma1 contains NaN or Inf"),
        ((mu, sigma, mu, nan_sigma), ValueError, "sigma2 contains NaN or Inf"),
        ((mu, skew, mu, sigma), ValueError, "sigma1 is not symmetric"),
        ((mu, sigma, mu, skew), ValueError, "sigma2 is not symmetric"),
        ((mu, indefinite, mu, sigma), ValueError, "sigma1 is not positive semidefinite"),
        ((mu, sigma, mu, indefinite), ValueError, "sigma2 is not positive semidefinite"),
        ((mu, negative_variance, mu, sigma), ValueError, "sigma1 is not positive semidefinite"),
        ((mu.astype(int), sigma, mu, sigma), TypeError, "mu1 must be floating point"),
        ((mu, sigma.astype(complex), mu, sigma), TypeError, "sigma1 must be real"),
    ]


@pytest.mark.parametrize("args,error,match", bad_inputs())
def test_bad_input_is_named(args, error, match):
    with pytest.raises(error, match=match):
        fastfid.frechet_distance(*args)


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown method"):
        fastfid.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2), method="svd")


class TestTorchInputs:
    torch = pytest.importorskip("torch")

    def test_tensors_of_any_float_dtype(self, rng):
        mu1, s1, mu2, s2 = pair_of_stats(rng, 300, 12)
        expected = fastfid.frechet_distance(mu1, s1, mu2, s2)
        t = self.torch.from_numpy
        assert fastfid.frechet_distance(t(mu1), t(s1), t(mu2), t(s2)) == pytest.approx(expected, rel=1e-14)
        # float32 inputs round the statistics to ~1e-7 relative; the FD moves by about that much
        # times tr Σ / FD (≈ 10 here)
        as32 = [t(a).float() for a in (mu1, s1, mu2, s2)]
        assert fastfid.frechet_distance(*as32) == pytest.approx(expected, rel=1e-5)


def test_fid_factorises_the_smaller_sample(rng):
    few = fastfid.FeatureStats.from_features(relu_features(rng, 20, 50))
    many = fastfid.FeatureStats.from_features(relu_features(rng, 500, 50, offset=0.1))
    forward, backward = fastfid.fid(many, few, return_info=True), fastfid.fid(few, many, return_info=True)
    assert forward.rank == backward.rank == 19  # a 19 × 19 problem either way round
    assert forward.value == backward.value
    assert abs(forward.value - scipy_fd(many.mean, many.cov, few.mean, few.cov)) <= scipy_bound(many.cov, few.cov)


@pytest.mark.parametrize("zero_first", [True, False])
def test_zero_covariance(zero_first):
    # Constant features: Σ = 0, so FD = ‖Δμ‖² + tr of the other covariance = 4 + 8.
    zero, other = np.zeros((4, 4)), 2 * np.eye(4)
    s1, s2 = (zero, other) if zero_first else (other, zero)
    assert fastfid.frechet_distance(np.ones(4), s1, np.zeros(4), s2) == pytest.approx(12.0, rel=1e-15)


@pytest.mark.parametrize("n", [30, 300])
def test_argument_order_does_not_matter_when_one_side_is_singular(rng, n):
    # Σ₂ from n ≤ d samples next to a full-rank Σ₁: factoring the full-rank side leaves d − n
    # eigenvalues that are zero but for rounding (each ≈ 1e-8 once square-rooted). Both orders
    # factor the singular side, so they agree to rounding of the same problem (≪ 1e-10).
    d = 512 if n == 300 else 64
    many = relu_features(rng, 4 * d, d)
    few = relu_features(rng, n, d, offset=0.1)
    mu1, s1, mu2, s2 = many.mean(0), np.cov(many, rowvar=False), few.mean(0), np.cov(few, rowvar=False)
    forward = fastfid.frechet_distance(mu1, s1, mu2, s2, return_info=True)
    backward = fastfid.frechet_distance(mu2, s2, mu1, s1, return_info=True)
    assert forward.rank == backward.rank == n - 1
    assert forward.value == pytest.approx(backward.value, rel=1e-10)
    reference = fastfid.Reference((mu1, s1))
    assert reference.distance((mu2, s2)) == pytest.approx(backward.value, rel=1e-10)


def test_the_unpivoted_factor_is_taken_for_a_definite_sigma(rng):
    from fastfid import _core

    definite = np.cov(rng.normal(size=(200, 20)), rowvar=False)
    singular = np.cov(rng.normal(size=(10, 20)), rowvar=False)
    assert not _core.PsdFactor(definite).pivoted and _core.PsdFactor(definite).rank == 20
    assert _core.PsdFactor(singular).pivoted and _core.PsdFactor(singular).rank == 9


@pytest.mark.parametrize("exponent", [-300, -150, 150, 200, 300])
def test_any_units_give_the_scaled_distance(rng, exponent):
    # FD is homogeneous: FD(cΣ₁, cΣ₂, √c μ) = c·FD. A power of ten is not exact in binary, so the
    # scaled inputs carry one rounding each (1e-16): 1e-12 leaves room for d·eps of the route.
    mu1, s1, mu2, s2 = pair_of_stats(rng, 60, 8)
    scale = 10.0 ** exponent
    expected = fastfid.frechet_distance(mu1, s1, mu2, s2)
    scaled = fastfid.frechet_distance(mu1 * np.sqrt(scale), s1 * scale, mu2 * np.sqrt(scale), s2 * scale)
    assert scaled == pytest.approx(expected * scale, rel=1e-12)


def test_a_spectrum_over_six_hundred_decades_is_not_nan(rng):
    # Eigenvalues 1e-300 … 1e300 in a random basis: the tiny ones vanish against the large ones in
    # float64, but the result is finite and the trace term is that of the large ones.
    d = 16
    basis, _ = np.linalg.qr(rng.normal(size=(d, d)))
    values = np.logspace(-300, 300, d)
    sigma = (basis * values) @ basis.T
    sigma = (sigma + sigma.T) / 2
    result = fastfid.frechet_distance(np.zeros(d), sigma, np.zeros(d), sigma, return_info=True)
    assert np.isfinite(result.value) and np.isfinite(result.trace_sqrt)
    assert result.value <= 1e-6 * np.trace(sigma)  # a distribution's distance to itself


def test_overflowing_means_raise_instead_of_returning_inf():
    with pytest.raises(ValueError, match="too large"):
        fastfid.frechet_distance(np.full(4, 1e200), np.eye(4), np.full(4, -1e200), np.eye(4))


@pytest.mark.parametrize("scale", [1e200, 1e-200])
def test_huge_and_tiny_identity_covariances(scale):
    # FD(N(0, s·I), N(1, 4s·I)) = d + d·s·(1 + 4 − 2·2) exactly; LAPACK once failed to converge here.
    d = 64
    value = fastfid.frechet_distance(np.zeros(d), scale * np.eye(d), np.ones(d), 4 * scale * np.eye(d))
    assert value == pytest.approx(d + d * scale, rel=1e-12)


def test_vanishing_features_are_refused_and_a_collapsed_set_is_warned_of(rng):
    real = fastfid.FeatureStats.from_features(relu_features(rng, 400, 16))
    # An untrained Inception's pool3 is ~1e-7: two such sets are ~0 apart whatever the images.
    tiny = fastfid.FeatureStats.from_features(relu_features(rng, 400, 16) * 1e-7)
    with pytest.raises(fastfid.distance.DegenerateFeatures, match=r"the second statistics' features vanish"):
        fastfid.fid(real, tiny)
    with pytest.raises(ValueError, match=r"the reference statistics' features vanish \(mean square [0-9.]+e-1[0-9]"):
        fastfid.Reference(tiny)
    with pytest.raises(ValueError, match="the compared statistics' features vanish"):
        fastfid.Reference(real).distance(tiny)
    # Just above the bound (features ~1e-4, the smallest scale of a real network) is computed.
    small = fastfid.FeatureStats.from_features(relu_features(rng, 400, 16) * 1e-4)
    assert fastfid.fid(small, small) == pytest.approx(0, abs=1e-12)
    # A set whose samples are all alike: valid (the mean term and the other side's trace), with a warning.
    row = relu_features(rng, 1, 16)
    collapsed = fastfid.FeatureStats.from_features(np.repeat(row, 50, axis=0))
    with pytest.warns(RuntimeWarning, match="the first statistics have no variance"):
        value = fastfid.fid(collapsed, real)
    expected = float(np.sum((row[0] - real.mean) ** 2) + np.trace(real.cov))  # Σ₁ = 0: tr Σ₂ only
    assert value == pytest.approx(expected, rel=1e-9)  # float64 eigen route on a d = 16 problem
