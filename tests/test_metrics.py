"""KID, precision/recall and density/coverage against straightforward numpy references."""

import numpy as np
import pytest

from fastfid import _core, metrics
from support.features import relu_features


def distances(a, b):
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2))


def kth_radii(x, k):
    d = distances(x, x)
    np.fill_diagonal(d, np.inf)
    return np.sort(d, axis=1)[:, k - 1]


@pytest.fixture
def sets(rng):
    real = relu_features(rng, 300, 12, offset=0.2)
    fake = relu_features(rng, 250, 12, offset=0.35)
    return real, fake


def test_radii_and_balls_match_numpy(sets):
    real, fake = sets
    radii = _core.kth_neighbour_radii(real, 3)
    np.testing.assert_allclose(radii, kth_radii(real, 3), rtol=1e-9)  # ‖a‖²+‖b‖²−2aᵀb vs differences
    inside, nearest = _core.ball_membership(fake, real, radii)
    d = distances(fake, real)
    np.testing.assert_array_equal(inside, (d <= radii[None, :]).sum(axis=1))
    np.testing.assert_allclose(nearest, d.min(axis=0), rtol=1e-9)


def test_blocks_larger_than_one(rng):
    # 2500 rows: three 1024-row blocks per side, and the self-exclusion across block borders.
    x = rng.standard_normal((2500, 3))
    radii = _core.kth_neighbour_radii(x, 2)
    np.testing.assert_allclose(radii[[0, 1023, 1024, 2047, 2048, 2499]], kth_radii(x, 2)[[0, 1023, 1024, 2047, 2048, 2499]],
                               rtol=1e-8)


def test_precision_recall(sets):
    real, fake = sets
    result = metrics.precision_recall(real, fake, k=3)
    d = distances(fake, real)
    precision = np.mean((d <= kth_radii(real, 3)[None, :]).any(axis=1))
    recall = np.mean((distances(real, fake) <= kth_radii(fake, 3)[None, :]).any(axis=1))
    assert (result.precision, result.recall, result.k) == (precision, recall, 3)


def test_density_coverage(sets):
    real, fake = sets
    result = metrics.density_coverage(real, fake, k=5)
    radii = kth_radii(real, 5)
    d = distances(fake, real)
    density = (d <= radii[None, :]).sum() / (5 * len(fake))
    coverage = np.mean(d.min(axis=0) <= radii)
    assert result.density == pytest.approx(density, rel=1e-12) and result.coverage == pytest.approx(coverage)


def numpy_mmd(x, y):
    d = x.shape[1]
    kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    m, n = len(x), len(y)
    return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
            - 2 * kxy.mean())


def test_kid_matches_numpy(sets, rng):
    real, fake = sets
    # one subset of everything: the plain unbiased MMD²
    assert _core.polynomial_mmd(real, fake) == pytest.approx(numpy_mmd(real, fake), rel=1e-10, abs=1e-12)
    result = metrics.kid(real, fake, subsets=20, subset_size=100, seed=3)
    draws = np.random.default_rng(3)
    expected = [numpy_mmd(real[np.sort(draws.choice(300, 100, replace=False))],
                          fake[np.sort(draws.choice(250, 100, replace=False))]) for _ in range(20)]
    assert result.mean == pytest.approx(np.mean(expected), rel=1e-9)
    assert result.std == pytest.approx(np.std(expected), rel=1e-7)
    assert result.subset_size == 100
    same = metrics.kid(real, real.copy(), subsets=5, subset_size=150)
    assert abs(same.mean) < 5 * same.std + 1e-3  # unbiased: about 0 for one distribution


def test_metric_inputs_are_checked(sets):
    real, fake = sets
    with pytest.raises(ValueError, match="dim"):
        metrics.kid(real, fake[:, :5])
    bad = fake.copy()
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        metrics.precision_recall(real, bad)
    with pytest.raises(ValueError, match="more than k samples"):
        metrics.density_coverage(real[:4], fake, k=5)


def test_kid_refuses_subsets_larger_than_the_samples(sets):
    real, fake = sets  # 300 and 250 samples
    with pytest.raises(ValueError, match="subset_size 1000 is larger than the samples"):
        metrics.kid(real, fake)
    shrunk = metrics.kid(real, fake, subsets=3, shrink_subsets=True)
    assert shrunk.subset_size == 250


def test_kid_kernels_match_numpy(sets):
    real, fake = sets
    x, y = real[:60], fake[:50]

    def mmd(kernel):
        kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
        m, n = len(x), len(y)
        return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                - 2 * kxy.mean())

    poly = metrics.Kernel(degree=2, gamma=0.05, coef0=0.5)
    assert poly.mmd(x, y) == pytest.approx(mmd(lambda a, b: (0.05 * a @ b.T + 0.5) ** 2), rel=1e-10)
    rbf = metrics.Kernel(kind="rbf", sigma=3.0)
    squared = lambda a, b: ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)  # noqa: E731
    assert rbf.mmd(x, y) == pytest.approx(mmd(lambda a, b: np.exp(-squared(a, b) / 18)), rel=1e-9)
    draws = [(np.arange(40), np.arange(40)), (np.arange(10, 50), np.arange(5, 45))]
    result = metrics.kid_of_subsets(x, y, draws, kernel=poly)
    assert result.mean == pytest.approx(np.mean([poly.mmd(x[a], y[b]) for a, b in draws]), rel=1e-12)
    with pytest.raises(ValueError, match="kernel must be"):
        metrics.Kernel(kind="laplace")
    with pytest.raises(ValueError, match="same size"):
        metrics.kid_of_subsets(x, y, [(np.arange(4), np.arange(5))])
