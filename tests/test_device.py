"""The device path of FeatureStats and the Fréchet distance (fastfid/_device.py), run with CPU
tensors through both of its implementations: fastfid's kernels on the emulated CUDA driver, and the
torch float64 fallback. Only the system's CUDA driver itself is left out (no GPU here)."""

import os
import pickle

import numpy as np
import pytest

import fastfid
from support.features import relu_features

torch = pytest.importorskip("torch")
from fastfid import _cuda, _device  # noqa: E402

STATS_RTOL = 1e-12  # float64 accumulation in another order than the CPU core's, see test_stats.py
# The device route against the exact one: the kernels certify |error| ≤ their bound (~1e-10 of the
# traces on such statistics, fastfid.selftest.accuracy) or take the float64 eigenvalues; the
# torch route stops Newton–Schulz on Σ₁Σ₂ at a step of 1e-12 (test_kernels_simt.py's TRACE_RTOL).
FD_RTOL = 1e-9


@pytest.fixture(params=["tensor_core_kernels", "fma_3xtf32_kernels", "torch_ops"])
def backend(request):
    """fastfid's kernels on the emulated driver as on an H100 (FP64 tensor cores) and as on an L4 or
    RTX 4090 (FP64 FMAs, 3×TF32 Newton–Schulz products), and the torch fallback."""
    if request.param == "torch_ops":
        return None
    return _device.DeviceKernels(_cuda.emulated_backend(), 0, tensor_cores=request.param == "tensor_core_kernels")


def device_stats(dim, backend):
    return fastfid.FeatureStats._from_device_state(_device.DeviceStats(dim, torch.device("cpu"), backend))


def assert_same_stats(device, host):
    assert device.count == host.count
    scale = np.abs(host.mean).max()
    np.testing.assert_allclose(device.mean.numpy(), host.mean, rtol=0, atol=STATS_RTOL * scale)
    np.testing.assert_allclose(device.cov.numpy(), host.cov, rtol=0, atol=STATS_RTOL * np.abs(host.cov).max())


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_streaming_batches_match_the_cpu_core(rng, backend, dtype):
    x = torch.from_numpy(relu_features(rng, 700, 70, offset=3.0)).to(getattr(torch, dtype))
    stats = device_stats(70, backend)
    for part in torch.split(x, 230):
        stats.update(part)
    assert_same_stats(stats, fastfid.FeatureStats.from_features(x.to(torch.float64).numpy()))


def test_non_contiguous_and_numpy_batches(rng, backend):
    base = torch.from_numpy(relu_features(rng, 60, 200))
    stats = device_stats(60, backend).update(base.t()).update(base.t().numpy()[:17])
    host = fastfid.FeatureStats.from_features(base.t().numpy()).update(base.t().numpy()[:17])
    assert_same_stats(stats, host)


def test_a_nan_batch_is_left_out_and_reported_once(rng, backend):
    x = torch.from_numpy(relu_features(rng, 300, 20))
    stats = device_stats(20, backend).update(x)
    bad = x[:40].clone()
    bad[5, 7] = float("nan")
    stats.update(bad)  # no sync: accepted now, judged on the device
    with pytest.raises(ValueError, match=r"1 batch\(es\).*NaN or Inf.*other 300 samples"):
        stats.cov
    assert_same_stats(stats, fastfid.FeatureStats.from_features(x.numpy()))  # intact, reported once


def test_merge_copy_and_moves(rng, backend):
    x = relu_features(rng, 900, 30, offset=1.0)
    a = device_stats(30, backend).update(torch.from_numpy(x[:200]))
    b = device_stats(30, backend).update(torch.from_numpy(x[200:]))
    host = fastfid.FeatureStats.from_features(x)
    total = a + b
    assert a.count == 200 and b.count == 700
    assert_same_stats(total, host)
    on_host = total.to("cpu")
    assert on_host.device == "cpu"
    np.testing.assert_allclose(on_host.cov, host.cov, rtol=0, atol=STATS_RTOL * np.abs(host.cov).max())
    with pytest.raises(ValueError, match="move one with .to"):
        a.merge(host)


def test_save_load_and_pickle(rng, backend, tmp_path):
    x = relu_features(rng, 400, 12)
    stats = device_stats(12, backend).update(torch.from_numpy(x))
    stats.save(tmp_path / "s.npz")
    loaded = fastfid.FeatureStats.load(tmp_path / "s.npz")
    assert_same_stats(stats, loaded)
    clone = pickle.loads(pickle.dumps(stats))  # pickled as its host copy, restored onto its device
    assert clone.device == "cpu" and clone.mergeable
    assert_same_stats(stats, clone)


def test_fid_of_device_statistics_matches_the_cpu_route(rng, backend):
    x, y = relu_features(rng, 500, 40, offset=0.5), relu_features(rng, 300, 40, offset=0.8)
    a = device_stats(40, backend).update(torch.from_numpy(x))
    b = device_stats(40, backend).update(torch.from_numpy(y))
    expected = fastfid.fid(fastfid.FeatureStats.from_features(x), fastfid.FeatureStats.from_features(y))
    result = fastfid.fid(a, b, return_info=True)
    # With 3×TF32 products the certificate may not reach the tolerance: then the float64 eigenvalues decide.
    routes = {"newton_schulz", "eigh"} if backend is not None and backend.tf32x3 else {"newton_schulz"}
    assert result.method in routes and result.converged
    assert result.value == pytest.approx(expected, rel=FD_RTOL)
    # mixed: CPU statistics are moved to the device of the other side
    assert fastfid.fid(a, fastfid.FeatureStats.from_features(y)) == pytest.approx(expected, rel=FD_RTOL)
    # a pytorch-fid style (mu, sigma) summary on the other side
    summary = (y.mean(axis=0), np.cov(y, rowvar=False))
    assert fastfid.fid(a, summary) == pytest.approx(expected, rel=FD_RTOL)
    # the exact route on request, on the host
    assert fastfid.fid(a, b, method="eigh") == pytest.approx(expected, rel=1e-12)


def test_fid_on_a_device_takes_the_exact_host_route_for_singular_covariances(rng, backend):
    x, y = relu_features(rng, 40, 64), relu_features(rng, 300, 64, offset=0.3)
    a = device_stats(64, backend).update(torch.from_numpy(x))
    b = device_stats(64, backend).update(torch.from_numpy(y))
    result = fastfid.fid(a, b, return_info=True)
    assert result.method == "eigh" and result.rank == 39
    expected = fastfid.fid(fastfid.FeatureStats.from_features(x), fastfid.FeatureStats.from_features(y))
    assert result.value == pytest.approx(expected, rel=1e-12)


def test_device_route_with_fewer_samples_than_dimensions(rng, backend):
    x, y = relu_features(rng, 30, 64), relu_features(rng, 500, 64, offset=0.3)
    mu1, s1, mu2, s2 = x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)
    expected = fastfid.frechet_distance(mu1, s1, mu2, s2)
    result = fastfid.distance._device_route(*(torch.from_numpy(v) for v in (mu1, s1, mu2, s2)),
                                            torch.device("cpu"), backend, 1e-12, 100)
    # Σ₁ has no Cholesky factor: A = L₂ᵀ Σ₁ L₂ has rank 29. Certified, the distance is within FD_RTOL;
    # the float64 eigenvalues (3×TF32's bound is above the tolerance here) take square roots of A's
    # 35 null eigenvalues' rounding noise, ~√(dε·‖A‖) each: within the trace tolerance, 1e-8 of the traces.
    tolerance = FD_RTOL * expected if result.method == "newton_schulz" else 1e-8 * (np.trace(s1) + np.trace(s2))
    assert result.converged and result.value == pytest.approx(expected, abs=tolerance)


@pytest.mark.parametrize("scale", [1e-200, 1e200])
def test_device_route_at_the_ends_of_float64(rng, backend, scale):
    # Σ₁Σ₂ would underflow to 0 (or overflow) in float64: each covariance is scaled by a power of two
    # first, exactly, so the number is the one of the unscaled statistics times the scale.
    x, y = relu_features(rng, 400, 37, offset=0.5), relu_features(rng, 300, 37, offset=0.8)
    moments = [x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)]
    expected = fastfid.frechet_distance(*moments) * scale
    scaled = [moments[0] * np.sqrt(scale), moments[1] * scale, moments[2] * np.sqrt(scale), moments[3] * scale]
    result = fastfid.distance._device_route(*(torch.from_numpy(v) for v in scaled), torch.device("cpu"), backend,
                                            1e-12, 100)
    assert result.converged and result.iterations > 0
    assert result.value == pytest.approx(expected, rel=FD_RTOL)


def test_device_route_after_too_few_iterations(rng, backend):
    s = torch.from_numpy(np.cov(relu_features(rng, 100, 10), rowvar=False))
    mu = torch.zeros(10, dtype=torch.float64)
    expected = fastfid.frechet_distance(mu.numpy(), s.numpy(), mu.numpy(), 2 * s.numpy())
    if backend is None:  # torch ops: the iteration's own answer, with a warning
        with pytest.warns(RuntimeWarning, match="stopped after 2 iterations"):
            result = fastfid.distance._device_route(mu, s, mu, s * 2, torch.device("cpu"), backend, 1e-12, 2)
        assert not result.converged
        return
    # The kernels: after 2 iterations the corrected trace's bound is far above the tolerance, so the
    # float64 eigenvalues of A give the number, silently and exactly.
    result = fastfid.distance._device_route(mu, s, mu, s * 2, torch.device("cpu"), backend, 1e-12, 2)
    assert result.method == "eigh" and result.converged and result.error_bound == 0 and result.iterations == 2
    assert result.value == pytest.approx(expected, rel=1e-12)


def test_newton_schulz_roots(rng, backend):
    s1 = torch.from_numpy(np.cov(relu_features(rng, 200, 25), rowvar=False))
    s2 = torch.from_numpy(np.cov(relu_features(rng, 150, 25), rowvar=False))
    roots = _device.frechet(None, s1, None, s2, backend, return_roots=True)
    m = (s1 @ s2).numpy()
    root, inverse = roots.sqrt.numpy(), roots.inverse_sqrt.numpy()
    # float64 rounding amplified by the conditioning of Σ₁Σ₂ (κ ≈ 1e3 here)
    np.testing.assert_allclose(root @ root, m, rtol=0, atol=1e-10 * np.abs(m).max())
    np.testing.assert_allclose(root @ inverse, np.eye(25), rtol=0, atol=1e-9)
    assert roots.trace_sqrt == pytest.approx(np.trace(root), rel=1e-12)


@pytest.mark.parametrize("bad,match", [
    (lambda s: s + torch.triu(torch.ones_like(s), 1), "not symmetric"),
    (lambda s: torch.where(torch.eye(len(s), dtype=torch.bool), float("nan"), s), "NaN or Inf"),
    (lambda s: s - 10 * torch.eye(len(s), dtype=s.dtype) * s.diagonal().max(), "negative variance"),
    (lambda s: s[:, :-1], "square"),
    (lambda s: s.to(torch.int64), "real floating point"),
])
def test_device_route_refuses_bad_covariances(rng, backend, bad, match):
    s = torch.from_numpy(np.cov(relu_features(rng, 50, 6), rowvar=False))
    mu = torch.zeros(6, dtype=torch.float64)
    with pytest.raises((ValueError, TypeError), match=match):
        fastfid.distance._device_route(mu, bad(s), mu, s, torch.device("cpu"), backend, 1e-12, 100)


@pytest.mark.parametrize("batch,error,match", [
    (torch.zeros(4, 3, dtype=torch.int32), TypeError, "float16, bfloat16, float32 or float64"),
    (torch.zeros(4, 3, 1), ValueError, "2-D"),
    (torch.zeros(0, 3), ValueError, "empty batch"),
    (torch.zeros(4, 5), ValueError, "dim 5"),
])
def test_device_update_refuses_bad_batches(backend, batch, error, match):
    with pytest.raises(error, match=match):
        device_stats(3, backend).update(batch)


def test_without_kernels_cuda_falls_back_to_torch_ops_with_one_warning(monkeypatch):
    from fastfid._device import routing

    monkeypatch.setattr(routing, "cuda_compiled", False)
    monkeypatch.setattr(routing, "_warned", set())
    with pytest.warns(RuntimeWarning, match="no CUDA kernels.*torch float64 ops"):
        assert _device.kernels_for(torch.device("cuda")) is None
    assert _device.kernels_for(torch.device("cuda")) is None  # once: warnings are errors here


def test_cuda_statistics_without_a_gpu_say_so():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(RuntimeError, match="need a CUDA GPU"):
        fastfid.FeatureStats(8, device="cuda")


def test_the_cuda_module_is_built_where_required():
    # CI sets this: on its machine nvcc exists, so a missing fastfid._cuda means a broken build.
    if os.environ.get("FASTFID_REQUIRE_CUDA_BUILD") != "1":
        pytest.skip("FASTFID_REQUIRE_CUDA_BUILD is not set")
    assert fastfid.cuda_compiled
    assert _cuda.kernel_image()[:4] == bytes.fromhex("50ed55ba")  # a fatbin's magic number, 0xBA55ED50


def test_the_module_links_no_cuda_runtime():
    # The kernels reach the GPU through libcuda.so.1, opened at run time: nothing of CUDA is linked,
    # so no CUDA runtime can be too new for the user's driver.
    import subprocess

    needed = subprocess.run(["ldd", _cuda.__file__], capture_output=True, text=True, check=True).stdout
    assert "libc.so" in needed and not any(name in needed for name in ("libcudart", "libcuda.so", "libcublas"))


def test_without_a_driver_the_system_backend_raises_instead_of_crashing():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the call below would pass it null addresses")
    with pytest.raises(_cuda.CudaError, match="NVIDIA driver could not be loaded"):
        _cuda.system_backend().frechet_distance(0, 0, 0, 0, 4, workspace=0)


def test_the_fast_mode_is_opt_in_and_stays_near_the_exact_statistics(rng):
    from fastfid.testing import emulated_cuda

    x, y = relu_features(rng, 1500, 40, offset=0.5), relu_features(rng, 1500, 40, offset=0.8)
    # Per type: the covariance's largest error over its largest entry, and the FID's relative error.
    for dtype, largest_error, fid_error in ((torch.float32, 1e-3, 1e-4), (torch.bfloat16, 1e-4, 1e-6)):
        with emulated_cuda():
            fast = [fastfid.FeatureStats(40, device="cpu", precision="fast") for _ in range(2)]
            for stats, values in zip(fast, (x, y)):
                for part in np.array_split(values, 3):
                    stats.update(torch.from_numpy(part).to(dtype))
            assert fast[0].copy()._device_state.precision == "fast"
            fd = fastfid.fid(*fast)
        # The exact statistics of the same (rounded) batches.
        reference = [fastfid.FeatureStats.from_features(torch.from_numpy(v).to(dtype).double().numpy()) for v in (x, y)]
        error = np.abs(fast[0].cov.numpy() - reference[0].cov).max() / np.abs(reference[0].cov).max()
        # TF32 rounds each centred feature to 11 significant bits (~1e-4 of the largest entry here),
        # split-bf16 keeps 16 (~1e-6); never exact (the README gives the bounds, tests/test_kernels_simt.py
        # checks them entry by entry).
        assert 0 < error < largest_error
        # split-bf16's rounding is unbiased only with all four products (without lo·lo: 4e-6).
        assert fd == pytest.approx(fastfid.fid(*reference), rel=fid_error)
    with pytest.raises(ValueError, match="option of device statistics"):
        fastfid.FeatureStats(8, precision="fast")
    with pytest.raises(ValueError, match="precision must be one of 'float64', 'fast'"):
        fastfid.FeatureStats(8, device="cpu", precision="tf32")


def test_the_emulated_architecture_picks_the_kernels_variants():
    from fastfid.testing import emulated_cuda

    for architecture, tensor_cores in (("sm_90", True), ("sm_89", False), ("sm_100", True), ("sm_120", False)):
        with emulated_cuda(architecture=architecture):
            kernels = _device.kernels_for(torch.device("cpu"))
            assert kernels.backend.architecture(0) == architecture
            assert (kernels.tensor_cores, kernels.tf32x3) == (tensor_cores, not tensor_cores)
    for wrong in ("sm_75", "90", None):
        with pytest.raises(ValueError, match="architecture must be"):
            with emulated_cuda(architecture=wrong):
                pass


def test_a_reference_on_the_device_is_prepared_once_and_reused(rng):
    from fastfid.testing import emulated_cuda

    x, y, z = (relu_features(rng, 400, 30, offset=o) for o in (0.5, 0.8, 0.6))
    host = [fastfid.FeatureStats.from_features(v) for v in (x, y, z)]
    with emulated_cuda():
        reference = fastfid.Reference(fastfid.FeatureStats.from_features(torch.from_numpy(x)))
        assert str(reference.device) == "cpu" and reference._prepared is not None  # the emulated GPU
        assert "device=" in repr(reference) and reference.dim == 30
        # Statistics on the same device, and host statistics (copied there).
        for other, values in ((fastfid.FeatureStats.from_features(torch.from_numpy(y)), y), (host[2], z)):
            result = reference.distance(other, return_info=True)
            expected = fastfid.fid(host[0], fastfid.FeatureStats.from_features(values))
            assert result.method == "newton_schulz" and result.error_bound > 0
            assert result.value == pytest.approx(expected, rel=FD_RTOL)
        # Prepared once: a distance factors only the other side (one Cholesky per side otherwise).
        calls = []
        original = torch.linalg.cholesky_ex
        try:
            torch.linalg.cholesky_ex = lambda *a, **k: calls.append(1) or original(*a, **k)
            reference.distance(host[1])
        finally:
            torch.linalg.cholesky_ex = original
        assert calls == []  # the reference's factor exists: the kernels take it and Σ₂ needs none
        # The exact route on request, and for a singular other side, on the host (factored once).
        assert reference.distance(host[1], method="eigh") == pytest.approx(fastfid.fid(host[0], host[1]), rel=1e-12)
        few = fastfid.FeatureStats.from_features(relu_features(rng, 20, 30))
        result = reference.distance(few, return_info=True)
        assert result.method == "eigh" and result.rank == 19
        assert reference.rank == 30
    with pytest.raises(ValueError, match="method='sqrtm' does not use a factorised reference"):
        reference.distance(host[1], method="sqrtm")
    with pytest.raises(ValueError, match="cannot be compared with a reference of dim 30"):
        reference.distance(fastfid.FeatureStats.from_features(relu_features(rng, 50, 12)))


def test_a_reference_refuses_a_bad_covariance_on_the_device(rng):
    from fastfid.testing import emulated_cuda

    sigma = torch.from_numpy(np.cov(relu_features(rng, 100, 8), rowvar=False))
    with emulated_cuda():
        stats = fastfid.FeatureStats.from_features(torch.from_numpy(relu_features(rng, 100, 8)))
        stats._device_state.comoment[0, 0] = -1.0  # what no update makes: a negative variance
        with pytest.raises(ValueError, match="reference sigma has a negative variance"):
            fastfid.Reference(stats)
        with pytest.raises(ValueError, match="sigma is not symmetric"):  # a pair is checked on the host first
            fastfid.Reference((torch.zeros(8), sigma + torch.triu(torch.ones(8, 8), 1)), device="cpu")
