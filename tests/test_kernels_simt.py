"""The CUDA kernels (csrc/cuda) run by the SIMT emulation against the CPU core.

The kernel source, the host drivers, the driver-API runtime and the bindings are those that run on
a GPU; only the CUDA driver is replaced by its emulation (fastfid._cuda.emulated_backend(): threads
are fibers, device memory is host memory). Sizes are odd on purpose: no dimension is a multiple of
the 64-wide tiles or the 16-row steps.
"""

import numpy as np
import pytest

import fastfid
from fastfid import _cuda
from support.features import relu_features

BACKEND = _cuda.emulated_backend()

# The kernels accumulate in float64 like the CPU core, only in another order: both err by at most
# ~n·eps relative (n ≤ 3000 here: 7e-13), typically √n·eps ≈ 1e-14. The 1e-12 holds.
STATS_RTOL = 1e-12
TYPE_CODES = {"float16": 0, "bfloat16": 1, "float32": 2, "float64": 3}


@pytest.fixture(params=["forward", "reverse"])
def schedule(request):
    """Both thread orders: a barrier missing from a kernel makes the two disagree."""
    _cuda.emulator.set_schedule(request.param)
    yield request.param
    _cuda.emulator.set_schedule("forward")


class DeviceState:
    """A device state in host memory, as the emulated backend addresses it."""

    def __init__(self, d):
        self.mean = np.zeros(d)
        self.comoment = np.zeros((d, d))
        self.counters = np.zeros(_cuda.counter_slots, dtype=np.int64)
        self.workspace = np.full(_cuda.stats_workspace_doubles(d), np.nan)  # garbage, as on a GPU

    def add(self, raw, type_name, row_slices=0, tensor_cores=False):
        item = raw.itemsize
        BACKEND.accumulate(raw.ctypes.data, TYPE_CODES[type_name], raw.shape[0], raw.shape[1], raw.strides[0] // item,
                           raw.strides[1] // item, mean=self.mean.ctypes.data, comoment=self.comoment.ctypes.data,
                           counters=self.counters.ctypes.data, workspace=self.workspace.ctypes.data,
                           row_slices=row_slices, variant=int(tensor_cores))
        return self

    def merge(self, other):
        BACKEND.merge(self.mean.shape[0], mean=self.mean.ctypes.data, comoment=self.comoment.ctypes.data,
                      counters=self.counters.ctypes.data, workspace=self.workspace.ctypes.data,
                      other_mean=other.mean.ctypes.data,
                      other_comoment=other.comoment.ctypes.data, other_counters=other.counters.ctypes.data)
        return self

    def upper(self):
        return self.comoment[np.triu_indices(self.mean.shape[0])]


def as_type(x, type_name):
    """(raw array the kernel reads, the exact float64 values it stands for)."""
    if type_name == "bfloat16":  # numpy has no bfloat16: keep the high half of float32 bits
        raw = (x.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
        return raw, (raw.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    raw = x.astype(type_name)
    return raw, raw.astype(np.float64)


def assert_matches_cpu_core(state, values):
    reference = fastfid.FeatureStats.from_features(values)
    assert state.counters[:3].tolist() == [values.shape[0], 0, 0]  # count, skipped batches, flag
    scale = np.abs(values).max()
    np.testing.assert_allclose(state.mean, reference.mean, rtol=0, atol=STATS_RTOL * scale)
    upper = reference.comoment[np.triu_indices(values.shape[1])]
    np.testing.assert_allclose(state.upper(), upper, rtol=0, atol=STATS_RTOL * np.abs(upper).max())


@pytest.fixture(params=[False, True], ids=["fma", "tensor_cores"])
def tensor_cores(request):
    """Both variants of batch_syrk: FP64 FMAs, and the FP64 tensor cores (emulated warp-wide mma)."""
    return request.param


@pytest.mark.parametrize("type_name", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("n,d", [(1, 1), (17, 65), (3000, 300)])
def test_statistics_kernels_match_the_cpu_core(rng, type_name, n, d, tensor_cores):
    raw, values = as_type(relu_features(rng, n, d, offset=2.0), type_name)
    assert_matches_cpu_core(DeviceState(d).add(raw, type_name, tensor_cores=tensor_cores), values)


@pytest.mark.parametrize("row_slices", [1, 3, 0])
def test_row_slices_with_atomics_and_streaming_batches(rng, schedule, row_slices, tensor_cores):
    # Three batches, the first one only a row: the shift starts at a single sample.
    x = relu_features(rng, 1201, 130, offset=50.0)
    state = DeviceState(130)
    for part in np.split(x, [1, 700]):
        state.add(part, "float64", row_slices, tensor_cores)
    assert_matches_cpu_core(state, x)


@pytest.mark.parametrize("layout", ["column_major", "strided", "reversed"])
def test_any_strides(rng, layout):
    base = relu_features(rng, 400, 70, dtype=np.float32)
    x = {"column_major": np.asfortranarray(base), "strided": base[::3, ::2], "reversed": base[::-1, ::-1]}[layout]
    assert_matches_cpu_core(DeviceState(x.shape[1]).add(x, "float32"), x.astype(np.float64))


def test_large_mean_does_not_cancel(rng):
    x = 1e3 + rng.standard_normal((2000, 33))
    state = DeviceState(33)
    for part in np.array_split(x, 3):
        state.add(part, "float64")
    assert_matches_cpu_core(state, x)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_batch_with_nan_or_inf_leaves_the_state_exactly_unchanged(rng, bad, tensor_cores):
    x = relu_features(rng, 300, 40)
    state = DeviceState(40).add(x, "float64", tensor_cores=tensor_cores)
    before = (state.mean.copy(), state.comoment.copy())
    poisoned = relu_features(rng, 50, 40)
    poisoned[17, 39] = bad
    state.add(poisoned, "float64", tensor_cores=tensor_cores)
    assert state.counters[:2].tolist() == [300, 1]  # counted as skipped
    assert np.array_equal(state.mean, before[0]) and np.array_equal(state.comoment, before[1])
    state.add(x[:10], "float64", tensor_cores=tensor_cores)  # and the next batch goes in
    assert state.counters[0] == 310


def test_merge_kernels_match_the_cpu_core(rng, schedule):
    x = relu_features(rng, 1500, 90, offset=1.0)
    a = DeviceState(90).add(x[:400], "float64")
    b = DeviceState(90).add(x[400:], "float64")
    assert_matches_cpu_core(a.merge(b), x)
    empty = DeviceState(90)
    assert_matches_cpu_core(empty.merge(a), x)  # into an empty state: a copy
    assert_matches_cpu_core(a.merge(DeviceState(90)), x)  # an empty one in: nothing moves


# --- Newton–Schulz ------------------------------------------------------------------------------
def covariance(rng, d, n, decay=None):
    x = relu_features(rng, n, d, decay=decay)
    return np.atleast_2d(np.cov(x, rowvar=False))


def run_newton_schulz(sigma1, sigma2, roots=False, tensor_cores=False, **options):
    """The device distance with no means (so its trace term alone), as fastfid._device calls it."""
    d = sigma1.shape[0]
    workspace = np.full(_cuda.frechet_workspace_doubles(d), np.nan)
    outputs = [np.full((d, d), np.nan) for _ in range(2)] if roots else []
    info = BACKEND.frechet_distance(0, np.ascontiguousarray(sigma1).ctypes.data, 0,
                                    np.ascontiguousarray(sigma2).ctypes.data, d, workspace=workspace.ctypes.data,
                                    sqrt_out=outputs[0].ctypes.data if roots else 0,
                                    inverse_sqrt_out=outputs[1].ctypes.data if roots else 0,
                                    tensor_cores=tensor_cores, **options)
    return info, outputs


def exact_trace_sqrt(sigma1, sigma2):
    """The CPU core's exact symmetric route."""
    return fastfid.frechet_distance(np.zeros(len(sigma1)), sigma1, np.zeros(len(sigma1)), sigma2,
                                    return_info=True).trace_sqrt


# Tolerance of the trace, derived. Near convergence the iteration is quadratic: the relative
# error of Y_k is about its relative step, and the stop (step ≤ 1e-12) returns Y_{k+1}, whose error
# is the square of that: nothing. What remains is float64 rounding through ~40 GEMMs, at most
# ~40·d·eps ≈ 3e-12 relative at d = 300. 1e-10 relative leaves margin; observed: ~1e-14.
TRACE_RTOL = 1e-10


@pytest.mark.parametrize("d", [1, 2, 63, 65, 130])
def test_newton_schulz_trace_matches_the_exact_route(rng, schedule, d, tensor_cores):
    sigma1, sigma2 = covariance(rng, d, 3 * d + 5), covariance(rng, d, 2 * d + 7)
    info, _ = run_newton_schulz(sigma1, sigma2, tensor_cores=tensor_cores)
    assert info["converged"] and info["step"] <= 1e-12
    exact = exact_trace_sqrt(sigma1, sigma2)
    assert abs(info["trace_sqrt"] - exact) <= TRACE_RTOL * exact


@pytest.mark.slow
def test_newton_schulz_at_d_300(rng, tensor_cores):
    sigma1, sigma2 = covariance(rng, 300, 1000), covariance(rng, 300, 700)
    info, (root, inverse_root) = run_newton_schulz(sigma1, sigma2, roots=True, tensor_cores=tensor_cores)
    exact = exact_trace_sqrt(sigma1, sigma2)
    assert info["converged"] and abs(info["trace_sqrt"] - exact) <= TRACE_RTOL * exact
    product = sigma1 @ sigma2
    # √M·√M = M and √M·M^−½ = I to float64 rounding amplified by M's conditioning (κ ≈ 1e3 here).
    np.testing.assert_allclose(root @ root, product, rtol=0, atol=1e-10 * np.abs(product).max())
    np.testing.assert_allclose(root @ inverse_root, np.eye(300), rtol=0, atol=1e-9)


def test_newton_schulz_roots_are_the_principal_ones(rng):
    # Compare with scipy's sqrtm of the same non-symmetric product.
    linalg = pytest.importorskip("scipy.linalg")
    sigma1, sigma2 = covariance(rng, 45, 200), covariance(rng, 45, 150)
    _, (root, inverse_root) = run_newton_schulz(sigma1, sigma2, roots=True)
    reference = np.real(linalg.sqrtm(sigma1 @ sigma2))
    np.testing.assert_allclose(root, reference, rtol=0, atol=1e-9 * np.abs(reference).max())
    np.testing.assert_allclose(inverse_root, np.linalg.inv(reference), rtol=0,
                               atol=1e-9 * np.abs(np.linalg.inv(reference)).max())


@pytest.mark.parametrize("n", [11, 40])
def test_newton_schulz_with_fewer_samples_than_dimensions(rng, n):
    # Σ₁ of rank n − 1 < d = 40: Σ₁Σ₂ is singular and far from normal. Its null eigenvalues keep
    # ‖I − ZY‖ near 1, but tr Y converges and the step test sees it. Tolerance: the unconverged
    # null part adds nothing and the rounding of the growing Z stays below ~1e-9 relative before the
    # stop (observed 1e-12).
    sigma1, sigma2 = covariance(rng, 40, n), covariance(rng, 40, 200)
    info, _ = run_newton_schulz(sigma1, sigma2)
    exact = exact_trace_sqrt(sigma1, sigma2)
    assert info["converged"]
    assert abs(info["trace_sqrt"] - exact) <= 1e-9 * exact


def test_newton_schulz_divergence_guard_keeps_the_best_iterate(rng):
    # An indefinite "covariance" (its diagonal is fine, one eigenvalue is negative): Σ₁Σ₂ has a
    # negative eigenvalue, outside the region where the iteration converges. It must stop on its
    # guard and say so, not return NaN.
    sigma = covariance(rng, 12, 100)
    values, vectors = np.linalg.eigh(sigma)
    values[0] = -0.5 * values[-1]
    indefinite = (vectors * values) @ vectors.T
    info, _ = run_newton_schulz(indefinite, sigma)
    assert not info["converged"] and np.isfinite(info["trace_sqrt"]) and info["iterations"] < 100


def test_newton_schulz_stops_at_the_iteration_limit(rng):
    sigma1, sigma2 = covariance(rng, 20, 100), covariance(rng, 20, 100)
    info, _ = run_newton_schulz(sigma1, sigma2, max_iterations=2)
    assert info["iterations"] == 2 and not info["converged"]
    info, _ = run_newton_schulz(sigma1, sigma2, max_iterations=0)  # Y₀ = M/c, the scaled start
    assert info["iterations"] == 0 and not info["converged"]
    product = sigma1 @ sigma2
    assert info["trace_sqrt"] == pytest.approx(np.trace(product) / np.sqrt(np.linalg.norm(product)), rel=1e-13)


def test_newton_schulz_of_zero(rng):
    zero = np.zeros((7, 7))
    info, _ = run_newton_schulz(zero, covariance(rng, 7, 20))
    assert info["trace_sqrt"] == 0 and info["converged"] and info["status"] == 3  # the host refuses M^−½ of 0


def test_the_distance_kernels_check_their_inputs(rng):
    sigma = covariance(rng, 9, 30)
    poisoned = sigma.copy()
    poisoned[2, 3] = np.nan
    info, _ = run_newton_schulz(poisoned, sigma)
    assert info["status"] == 1 and info["nonfinite1"] == 1 and info["nonfinite2"] == 0
    skewed = sigma.copy()
    skewed[0, 8] += 1e-3 * sigma.diagonal().max()
    info, _ = run_newton_schulz(sigma, skewed)
    assert info["status"] == 1 and info["asymmetry2"] == pytest.approx(1e-3 * sigma.diagonal().max())
    assert info["largest_variance2"] == sigma.diagonal().max()
    assert info["smallest_variance2"] == sigma.diagonal().min()
    info, _ = run_newton_schulz(sigma, sigma)
    assert info["status"] == 0
    assert info["trace1"] == pytest.approx(np.trace(sigma), rel=1e-14)


def test_the_distance_kernels_match_the_cpu_core_with_means(rng):
    x, y = relu_features(rng, 300, 37, offset=0.5), relu_features(rng, 200, 37, offset=0.8)
    mu1, s1, mu2, s2 = x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)
    workspace = np.full(_cuda.frechet_workspace_doubles(37), np.nan)
    info = BACKEND.frechet_distance(mu1.ctypes.data, s1.ctypes.data, mu2.ctypes.data, s2.ctypes.data, 37,
                                    workspace=workspace.ctypes.data)
    exact = fastfid.frechet_distance(mu1, s1, mu2, s2, return_info=True)
    assert info["mean_term"] == pytest.approx(exact.mean_term, rel=1e-13)
    assert info["distance"] == pytest.approx(exact.value, rel=1e-9)  # TRACE_RTOL on a term ~10× the FD


# --- the emulation itself -------------------------------------------------------------------------
def test_emulation_reports_a_barrier_reached_by_only_some_threads():
    with pytest.raises(RuntimeError, match="only some threads"):
        _cuda.selftest.divergent_barrier()


def test_the_two_schedules_expose_a_missing_barrier():
    _cuda.emulator.set_schedule("forward")
    forward = _cuda.selftest.missing_barrier(1)
    _cuda.emulator.set_schedule("reverse")
    try:
        reverse = _cuda.selftest.missing_barrier(2)
    finally:
        _cuda.emulator.set_schedule("forward")
    # Forward: thread t reads slot t+1 before its owner wrote it; reverse: after.
    assert forward[:63] != [1] * 63 and reverse[:63] == [2] * 63


def test_the_emulated_mma_follows_the_documented_fragment_layout(rng):
    # Small integers: every product and sum is exact in float64, so D must equal A B + C exactly,
    # and any lane holding the wrong element (a layout slip) changes some entry.
    a, b, c = (rng.integers(-50, 50, size=shape).astype(float) for shape in ((8, 4), (4, 8), (8, 8)))
    d = np.array(_cuda.selftest.mma_f64(a.ravel().tolist(), b.ravel().tolist(), c.ravel().tolist())).reshape(8, 8)
    np.testing.assert_array_equal(d, a @ b + c)
    # Rounding: each entry is c + Σ_k a b by fused multiply-adds in k order (tested where it shows).
    tiny = np.zeros((8, 4))
    tiny[0] = [1.0, 2.0**-60, -1.0, 2.0**-60]
    ones = np.ones((4, 8))
    d = np.array(_cuda.selftest.mma_f64(tiny.ravel().tolist(), ones.ravel().tolist(), [0.0] * 64)).reshape(8, 8)
    assert d[0, 0] == 2.0**-60  # ((1 + 2⁻⁶⁰) − 1) + 2⁻⁶⁰ in order: the first 2⁻⁶⁰ is lost to rounding


def test_the_emulated_tf32_mma_follows_the_documented_fragment_layout(rng):
    # Small integers are TF32 values; their products and sums are exact in float32.
    a, b, c = (rng.integers(-50, 50, size=shape).astype(np.float32) for shape in ((16, 8), (8, 8), (16, 8)))
    d = np.array(_cuda.selftest.mma_tf32(a.ravel().tolist(), b.ravel().tolist(), c.ravel().tolist()),
                 dtype=np.float32).reshape(16, 8)
    np.testing.assert_array_equal(d, a @ b + c)


@pytest.mark.parametrize("x,expected", [
    (1.0, 1.0),
    (1.0 + 2.0**-11, 1.0 + 2.0**-10),       # a tie: away from zero
    (-(1.0 + 2.0**-11), -(1.0 + 2.0**-10)),
    (1.0 + 2.0**-11 - 2.0**-23, 1.0),       # just below the tie: down
    (1.0 + 3 * 2.0**-11, 1.0 + 2 * 2.0**-10),  # a tie above an odd last bit: away again (not to even)
    (2.0**-140 + 2.0**-149, 0.0),            # subnormals: the same rule on their bits (TF32 keeps the top 10)
    (2.0**-136 + 2.0**-137, 2.0**-135),      # a subnormal tie: away
])
def test_tf32_rounding_is_to_nearest_with_ties_away(x, expected):
    assert _cuda.selftest.to_tf32(np.float32(x)) == np.float32(expected)


def test_the_tf32_statistics_stay_within_their_stated_bound(rng):
    # The README's bound for precision="fast" on float32/float64 batches: per entry, |ΔC_ij| ≤ (2⁻¹⁰ + 2⁻²¹ + 256·2⁻²⁴) Σ_r |x_ri − s_i||x_rj − s_j|
    # (each factor rounded to float32 then TF32, exact products, float32 sums over ≤ 256 rows, then float64).
    x = relu_features(rng, 700, 90, offset=1.0)
    state = DeviceState(90)
    raw = np.ascontiguousarray(x)
    BACKEND.accumulate(raw.ctypes.data, TYPE_CODES["float64"], 700, 90, 90, 1, mean=state.mean.ctypes.data,
                       comoment=state.comoment.ctypes.data, counters=state.counters.ctypes.data,
                       workspace=state.workspace.ctypes.data, variant=2)
    exact = fastfid.FeatureStats.from_features(x)
    shifted = np.abs(x - x[0])  # the shift of a first batch is its first row
    bound = (2.0**-10 + 2.0**-21 + 256 * 2.0**-24) * (shifted.T @ shifted)
    upper = np.triu_indices(90)
    error = np.abs(state.comoment - exact.comoment)[upper]
    assert np.all(error <= bound[upper])
    assert error.max() > 0  # not exact: the fast mode's products are TF32
    np.testing.assert_allclose(state.mean, exact.mean, rtol=0, atol=1e-12 * np.abs(x).max())  # the sums stay float64


def test_an_mma_that_only_some_lanes_reach_is_reported():
    with pytest.raises(RuntimeError, match="only some threads"):
        _cuda.selftest.mma_f64([0.0] * 32, [0.0] * 32, [0.0] * 64, lanes=16)


def test_workspace_sizes():
    assert _cuda.stats_workspace_doubles(5) == 12  # the shift and the column sums (or a merge's snapshot): no d²
    assert _cuda.frechet_workspace_doubles(5) == 64 + 2 * 128 * 5 + 7 * 25  # state, check partials, 7 matrices


@pytest.mark.parametrize("type_name", ["float16", "bfloat16"])
def test_every_finite_16_bit_value_is_widened_exactly(type_name):
    # All finite bit patterns, sorted by magnitude into a 256-row block so that each column holds
    # values of one scale: a value decoded wrongly moves its column's mean or its sum of squared
    # deviations by far more than their float64 rounding (≤ 256·eps of the largest term).
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    with np.errstate(invalid="ignore"):  # the NaN patterns, dropped next
        if type_name == "float16":
            values = bits.view(np.float16).astype(np.float64)
        else:
            values = (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    finite = np.isfinite(values)
    bits, values = bits[finite], values[finite]
    order = np.argsort(np.abs(values), kind="stable")
    columns = len(order) // 256
    raw = bits[order][:256 * columns].reshape(columns, 256).T.copy()
    exact = values[order][:256 * columns].reshape(columns, 256).T
    mean = exact.mean(axis=0)
    squares = ((exact - mean) ** 2).sum(axis=0)
    eps = 256 * np.finfo(np.float64).eps
    state = DeviceState(columns).add(raw, type_name)
    results = [(state.mean, np.diagonal(state.comoment))]
    if type_name == "float16":  # the CPU core reads float16 through the same conversion
        host = fastfid.FeatureStats.from_features(raw.view(np.float16))
        results.append((host.mean, np.diagonal(host.comoment)))
    for got_mean, got_squares in results:
        assert np.all(np.abs(got_mean - mean) <= eps * np.abs(exact).max(axis=0))
        assert np.all(np.abs(got_squares - squares) <= eps * squares)


# --- 16-bit mma and the split-bf16 fast mode ----------------------------------------------------
def bfloat16_bits(values):
    """bfloat16 patterns of float32 values that bfloat16 holds exactly (their top 16 bits)."""
    return (np.asarray(values, dtype=np.float32).view(np.uint32) >> 16).astype(np.uint16)


@pytest.mark.parametrize("bfloat16", [False, True], ids=["float16", "bfloat16"])
def test_the_emulated_16bit_mma_follows_the_documented_fragment_layout(rng, bfloat16):
    # Small integers are float16 and bfloat16 values; their products and sums are exact in float32,
    # so any misplaced fragment element shows.
    a, b, c = (rng.integers(-50, 50, size=shape).astype(np.float32) for shape in ((16, 16), (16, 8), (16, 8)))
    bits = bfloat16_bits if bfloat16 else (lambda v: np.asarray(v, dtype=np.float16).view(np.uint16))
    d = np.array(_cuda.selftest.mma_16bit(bits(a).ravel().tolist(), bits(b).ravel().tolist(), c.ravel().tolist(),
                                           bfloat16), dtype=np.float32).reshape(16, 8)
    np.testing.assert_array_equal(d, a @ b + c)


def test_a_16bit_mma_reads_its_operands_in_their_own_format():
    # 1 + 2⁻¹⁰ is a float16 value but not a bfloat16 one: the same bits mean different numbers.
    a = np.zeros((16, 16), dtype=np.float16)
    a[0, 0] = 1 + 2.0**-10
    b = np.zeros((16, 8), dtype=np.float16)
    b[0, 0] = 1.0
    half_bits = a.view(np.uint16).ravel().tolist(), b.view(np.uint16).ravel().tolist()
    as_float16 = _cuda.selftest.mma_16bit(*half_bits, [0.0] * 128, False)
    assert as_float16[0] == np.float32(1 + 2.0**-10)
    # Reread as bfloat16: 0x3C01 is 2⁻⁷·(1 + 2⁻⁷); 0x3C00 is 2⁻⁷.
    as_bfloat16 = _cuda.selftest.mma_16bit(*half_bits, [0.0] * 128, True)
    assert as_bfloat16[0] == np.float32(2.0**-7 * (1 + 2.0**-7) * 2.0**-7)


@pytest.mark.parametrize("x,expected", [
    (1.0, 1.0),
    (1.0 + 2.0**-8, 1.0),                    # a tie above an even last bit: stays (to even)
    (1.0 + 3 * 2.0**-8, 1.0 + 2 * 2.0**-7),  # a tie above an odd last bit: up (to even)
    (-(1.0 + 3 * 2.0**-8), -(1.0 + 2 * 2.0**-7)),
    (1.0 + 2.0**-8 + 2.0**-23, 1.0 + 2.0**-7),  # just above the tie: up
    (3.0e38, 226 / 128 * 2.0**127),          # near the top of the range: still finite
])
def test_bfloat16_rounding_is_to_nearest_with_ties_to_even(x, expected):
    assert _cuda.selftest.to_bfloat16(np.float32(x)) == np.float32(expected)


@pytest.mark.parametrize("type_name", ["float16", "bfloat16"])
def test_the_split_bfloat16_statistics_stay_within_their_stated_bound(rng, type_name):
    # The README's bound for precision="fast" on 16-bit batches: per entry,
    # |ΔC_ij| ≤ (2·2⁻¹⁶ + 1040·2⁻²⁴) Σ_r |x_ri − s_i||x_rj − s_j|: v = float(x − s) split as
    # hi + lo = v(1 + ε), |ε| ≤ 2⁻¹⁶ (two roundings to bfloat16's 8 bits), all four products of
    # (hi + lo)(hi + lo): 2·2⁻¹⁶ + 2⁻³²; float32 rounding of v, 2·2⁻²⁴; recursive float32 sums of at
    # most 4 × 256 exact products per flush, 1024·2⁻²⁴ of their magnitudes (≤ 1.01 Σ|v||v|); then float64.
    x = relu_features(rng, 700, 90, offset=1.0)
    raw = x.astype(np.float16) if type_name == "float16" else bfloat16_bits(x)
    values = raw.astype(np.float64) if type_name == "float16" else (raw.astype(np.uint32) << 16).view(np.float32)
    values = np.asarray(values, dtype=np.float64)
    state = DeviceState(90)
    raw = np.ascontiguousarray(raw)
    BACKEND.accumulate(raw.ctypes.data, TYPE_CODES[type_name], 700, 90, 90, 1, mean=state.mean.ctypes.data,
                       comoment=state.comoment.ctypes.data, counters=state.counters.ctypes.data,
                       workspace=state.workspace.ctypes.data, variant=2)
    exact = fastfid.FeatureStats.from_features(values)
    shifted = np.abs(values - values[0])  # the shift of a first batch is its first row
    bound = (2 * 2.0**-16 + 1040 * 2.0**-24) * (shifted.T @ shifted)
    upper = np.triu_indices(90)
    error = np.abs(state.comoment - exact.comoment)[upper]
    assert np.all(error <= bound[upper])
    assert error.max() > 0  # not exact
    # Far inside TF32's bound (2⁻¹⁰ + …): the split keeps 16 bits of each centred feature.
    assert np.all(error <= 1e-4 * (shifted.T @ shifted)[upper])
    np.testing.assert_allclose(state.mean, exact.mean, rtol=0, atol=1e-12 * np.abs(values).max())


# --- the distance's GEMM tiles ------------------------------------------------------------------
@pytest.mark.parametrize("products", ["fma", "dmma", "tf32x3"])
def test_the_gemm_tiles_against_numpy(rng, products):
    d = 100  # two tiles with a ragged edge, seven staged depths
    a, b = rng.standard_normal((d, d)), rng.standard_normal((d, d)) * np.logspace(0, -6, d)
    c = _cuda.selftest.gemm(a, b, products)
    magnitudes = np.abs(a) @ np.abs(b)
    error = np.abs(c - a @ b)
    if products == "tf32x3":
        # Each factor float32 then hi + lo of 11 bits each: (1 + ε), |ε| ≤ 1.25·2⁻²²; lo·lo dropped
        # (≤ 1.01·2⁻²²): ≤ 2⁻²⁰ per product; recursive float32 sums of ≤ 3 × 64 products per flush to
        # float64: 192·2⁻²⁴ of their magnitudes (≤ 1.01 Σ|a||b|).
        assert np.all(error <= (2.0**-20 + 194 * 2.0**-24) * magnitudes)
        assert 0 < np.median(error / magnitudes) < 1e-6  # float32-class, not TF32's 2⁻¹⁰
    else:
        assert np.all(error <= d * 2.0**-53 * magnitudes)  # float64: γ_d


def symmetric_route(sigma1, sigma2, tf32x3, tolerance=1e-8):
    """The kernels' symmetric route as fastfid._device calls it, with the record."""
    torch = pytest.importorskip("torch")
    from fastfid import _device

    kernels = _device.DeviceKernels(BACKEND, 0, tensor_cores=False, tf32x3=tf32x3)
    return _device.frechet(None, torch.from_numpy(sigma1), None, torch.from_numpy(sigma2), kernels,
                           trace_tolerance=tolerance)


def test_the_3xtf32_route_is_certified_or_exact(rng):
    # Well conditioned: float32-class products reach the tolerance, and the bound says so.
    d = 70
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    sigma1 = (q * np.linspace(1.0, 2.0, d)) @ q.T
    sigma2 = covariance(rng, d, 40 * d) + 0.5 * np.eye(d)
    result = symmetric_route(sigma1, sigma2, tf32x3=True)
    error = abs(result.trace_sqrt - exact_trace_sqrt(sigma1, sigma2))
    assert not result.exact and result.converged
    assert error <= result.bound / 2 <= 1e-8 * (np.trace(sigma1) + np.trace(sigma2))  # the bound is the FD's: 2×
    # Eigenvalues over ten decades: the float32-class floor is above 1e-8 of the traces; the bound
    # sees it and the float64 eigenvalues decide, to float64 accuracy.
    sigma1 = (q * np.geomspace(1.0, 1e-10, d)) @ q.T
    result = symmetric_route(sigma1, sigma2, tf32x3=True)
    assert result.exact
    assert result.iterations < 40  # stopped at float32's floor (3 rounds without a better step), not at 100
    assert abs(result.trace_sqrt - exact_trace_sqrt(sigma1, sigma2)) <= 1e-10 * exact_trace_sqrt(sigma1, sigma2)


@pytest.mark.parametrize("products", ["fma", "dmma", "tf32x3"])
def test_a_symmetric_product_runs_its_upper_tiles_and_mirrors_them(rng, products):
    d = 130  # 3 tiles a side: 6 upper tiles, three of them on the diagonal, a ragged edge
    a = rng.standard_normal((d, d))
    a = a + a.T
    b = a @ a + np.eye(d)  # commutes with a: a @ b is symmetric, as the symmetric route's products are
    upper = np.triu_indices(d)
    half = _cuda.selftest.gemm(a, b, products, symmetric=True)
    full = _cuda.selftest.gemm(a, b, products)
    np.testing.assert_array_equal(half, half.T)  # exactly symmetric
    np.testing.assert_array_equal(half[upper], full[upper])  # the upper tiles' own numbers
    assert np.abs(half - a @ b).max() <= 1e-4 * np.abs(a @ b).max()
