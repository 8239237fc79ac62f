import subprocess
import sys

import numpy as np
import pytest

import fastfid
from support.features import relu_features

# Float64 accumulation over n rows errs by at most ~n·eps relative to the largest entry, and
# centring on a shift near the mean keeps cancellation out; 1e-12 relative is the bound
# and leaves a 10× margin for the sizes here (n ≤ 5000: n·eps ≈ 1e-12 in the worst case, typical
# √n·eps ≈ 2e-14).
STATS_RTOL = 1e-12


def reference_stats(x):
    x = np.asarray(x, dtype=np.float64)
    return x.mean(axis=0), np.cov(x, rowvar=False)


def assert_stats_close(stats, x):
    mean, cov = reference_stats(x)
    assert stats.count == x.shape[0]
    np.testing.assert_allclose(stats.mean, mean, rtol=0, atol=STATS_RTOL * np.abs(mean).max())
    np.testing.assert_allclose(stats.cov, cov, rtol=0, atol=STATS_RTOL * np.abs(cov).max())
    assert np.array_equal(stats.cov, stats.cov.T)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("n,d", [(2, 1), (3, 5), (100, 17), (5000, 8), (700, 300)])
def test_one_batch_matches_numpy(rng, dtype, n, d):
    x = relu_features(rng, n, d, dtype=dtype)
    assert_stats_close(fastfid.FeatureStats.from_features(x), x)


def test_large_mean_does_not_cancel(rng):
    # mean 1e3, std 1: raw sums of squares would lose ~12 of 16 digits.
    x = 1e3 + rng.standard_normal((3000, 12))
    assert_stats_close(fastfid.FeatureStats.from_features(x), x)
    stats = fastfid.FeatureStats(12)
    for part in np.array_split(x, 7):
        stats.update(part)
    assert_stats_close(stats, x)


@pytest.mark.parametrize("layout", ["fortran", "strided_rows", "strided_cols", "transposed_view", "negative_stride"])
def test_any_strides_are_read_in_place(rng, layout):
    base = relu_features(rng, 600, 40, dtype=np.float32)
    x = {
        "fortran": np.asfortranarray(base),
        "strided_rows": base[::3],
        "strided_cols": base[:, ::2],
        "transposed_view": np.ascontiguousarray(base.T).T,
        "negative_stride": base[::-1, ::-1],
    }[layout]
    assert_stats_close(fastfid.FeatureStats.from_features(x), x)


@pytest.mark.parametrize("shards", [2, 5, 11])
def test_merged_shards_equal_one_pass(rng, shards):
    x = relu_features(rng, 3000, 24, offset=3.0)
    parts = [fastfid.FeatureStats.from_features(p) for p in np.array_split(x, shards)]
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    one_pass = fastfid.FeatureStats.from_features(x)
    assert total.count == one_pass.count
    np.testing.assert_allclose(total.mean, one_pass.mean, rtol=0, atol=STATS_RTOL * np.abs(x).max())
    np.testing.assert_allclose(total.cov, one_pass.cov, rtol=0, atol=STATS_RTOL * np.abs(one_pass.cov).max())


def test_add_leaves_operands_alone_and_iadd_merges(rng):
    a = fastfid.FeatureStats.from_features(rng.normal(size=(10, 3)))
    b = fastfid.FeatureStats.from_features(rng.normal(size=(20, 3)))
    before = a.mean
    c = a + b
    assert (a.count, b.count, c.count) == (10, 20, 30)
    assert np.array_equal(a.mean, before)
    a += b
    assert a.count == 30 and np.array_equal(a.cov, c.cov)


def test_merge_with_empty_is_identity(rng):
    a = fastfid.FeatureStats.from_features(rng.normal(size=(10, 3)))
    merged = fastfid.FeatureStats(3) + a
    assert np.array_equal(merged.mean, a.mean) and np.array_equal(merged.cov, a.cov)


def test_single_rows_stream(rng):
    x = rng.normal(size=(50, 6)) + 5
    stats = fastfid.FeatureStats(6)
    for row in x:
        stats.update(row[None, :])
    assert_stats_close(stats, x)


@pytest.mark.parametrize("order", ["C", "F"])  # contiguous and strided scans
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("n", [10, 5000])  # a gathered small batch, and several panels (pre-scanned)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_failed_update_leaves_state_unchanged(rng, n, bad, dtype, order):
    stats = fastfid.FeatureStats.from_features(rng.normal(size=(30, 4)))
    mean, cov = stats.mean, stats.cov
    x = rng.normal(size=(n, 4)).astype(dtype)
    x[-1, 2] = bad
    x = np.asarray(x, order=order)
    with pytest.raises(ValueError, match="NaN or Inf"):
        stats.update(x)
    assert stats.count == 30
    assert np.array_equal(stats.mean, mean) and np.array_equal(stats.cov, cov)


def test_failed_first_update_leaves_empty_state(rng):
    stats = fastfid.FeatureStats(4)
    x = rng.normal(size=(5000, 4))
    x[4000, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        stats.update(x)
    assert stats.count == 0
    stats.update(x[:10])
    assert_stats_close(stats, x[:10])


@pytest.mark.parametrize(
    "features,error,match",
    [
        (np.zeros((5, 3), dtype=np.int64), TypeError, "floating point"),
        (np.zeros((5, 3), dtype=np.complex128), TypeError, "complex"),
        (np.zeros((5, 3), dtype=bool), TypeError, "floating point"),
        (np.zeros((0, 3)), ValueError, "empty"),
        (np.zeros(3), ValueError, "2-D"),
        (np.zeros((5, 4)), ValueError, "dim 4"),
    ],
)
def test_bad_features_are_named(features, error, match):
    stats = fastfid.FeatureStats(3)
    with pytest.raises(error, match=match):
        stats.update(features)


def test_non_native_byte_order_is_accepted(rng):
    x = rng.normal(size=(20, 3))
    assert_stats_close(fastfid.FeatureStats.from_features(x.astype(">f8")), x)


def test_covariance_needs_two_samples():
    stats = fastfid.FeatureStats.from_features(np.ones((1, 3)))
    with pytest.raises(ValueError, match="at least 2 samples"):
        stats.cov
    with pytest.raises(ValueError, match="empty"):
        fastfid.FeatureStats(3).mean


@pytest.mark.parametrize("dim", [0, -1, 2.5, True])
def test_bad_dim(dim):
    with pytest.raises(ValueError, match="dim"):
        fastfid.FeatureStats(dim)


def test_merge_rejects_other_dims_and_types(rng):
    a = fastfid.FeatureStats.from_features(rng.normal(size=(5, 3)))
    with pytest.raises(ValueError, match="dim 4"):
        a.merge(fastfid.FeatureStats.from_features(rng.normal(size=(5, 4))))
    with pytest.raises(TypeError, match="FeatureStats"):
        a.merge(np.zeros(3))


def test_small_and_large_batches_mix(rng):
    # Batches below a native panel (256 rows at d = 300) are gathered, larger ones go straight in.
    x = relu_features(rng, 2000, 300, offset=1.0)
    stats = fastfid.FeatureStats(300)
    start = 0
    for size in (1, 50, 200, 5, 700, 3, 255, 256, 530):
        stats.update(x[start:start + size])
        start += size
        assert stats.count == start  # gathered rows count at once
    assert_stats_close(stats, x[:start])


def test_failed_small_update_keeps_gathered_rows(rng):
    x = rng.normal(size=(30, 5))
    stats = fastfid.FeatureStats(5).update(x[:10])
    bad = x[10:20].copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        stats.update(bad)
    assert stats.count == 10
    stats.update(x[20:])
    assert_stats_close(stats, np.concatenate([x[:10], x[20:]]))


def test_pickle_round_trip(rng):
    import pickle

    x = rng.normal(size=(40, 6))
    stats = fastfid.FeatureStats(6).update(x)  # still gathered, not yet flushed
    clone = pickle.loads(pickle.dumps(stats))
    assert clone.count == 40
    assert np.array_equal(clone.cov, stats.cov)
    clone.update(x)
    assert_stats_close(clone, np.concatenate([x, x]))


def test_import_does_not_import_torch():
    code = "import sys, fastfid; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


class TestTorchInputs:
    torch = pytest.importorskip("torch")

    @pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
    def test_cpu_tensors(self, rng, dtype):
        torch = self.torch
        x = torch.from_numpy(relu_features(rng, 300, 10)).to(getattr(torch, dtype))
        stats = fastfid.FeatureStats.from_features(x)
        assert_stats_close(stats, x.to(torch.float64).numpy())

    def test_non_contiguous_tensor(self, rng):
        torch = self.torch
        x = torch.from_numpy(relu_features(rng, 10, 300)).t()  # a (300, 10) view, column-major
        assert not x.is_contiguous()
        assert_stats_close(fastfid.FeatureStats.from_features(x), x.numpy())

    def test_integer_tensor_is_rejected(self):
        with pytest.raises(TypeError, match="floating point"):
            fastfid.FeatureStats(3).update(self.torch.zeros((4, 3), dtype=self.torch.int32))

    def test_device_tensor_into_cpu_statistics_is_refused_with_the_way_out(self):
        with pytest.raises(TypeError, match=r"on meta but these statistics are on the CPU.*device='meta'"):
            fastfid.FeatureStats(3).update(self.torch.zeros((4, 3), device="meta"))


@pytest.mark.parametrize("count", [0, -3, 2.5, True])
def test_from_state_needs_a_positive_count(count):
    with pytest.raises(ValueError, match="count must be a positive integer"):
        fastfid.FeatureStats.from_state(count, np.zeros(2), np.zeros((2, 2)))


def test_from_state_round_trips(rng):
    stats = fastfid.FeatureStats.from_features(rng.normal(size=(30, 4)))
    clone = fastfid.FeatureStats.from_state(stats.count, stats.mean, stats.comoment)
    assert np.array_equal(clone.cov, stats.cov)
