"""The device path on a real GPU, through the system's CUDA driver: what the emulation cannot show.
Skipped without a CUDA GPU (benchmarks/gpu/run.sh runs it on one)."""

import numpy as np
import pytest

import fastfid
from support.features import relu_features

torch = pytest.importorskip("torch")
from fastfid import _device  # noqa: E402

pytestmark = pytest.mark.skipif(not (torch.cuda.is_available() and fastfid.cuda_compiled),
                                reason="needs a CUDA GPU and a build with fastfid's kernels")

# The device route against the exact one: the kernels certify |error| ≤ their bound (~1e-10 of the
# traces on such statistics, fastfid.selftest.accuracy) or take the float64 eigenvalues; the
# torch route stops Newton–Schulz on Σ₁Σ₂ at a step of 1e-12 (test_kernels_simt.py's TRACE_RTOL).
FD_RTOL = 1e-9


def test_the_probe_passes_and_the_kernels_are_used(recwarn):
    device = torch.device("cuda", 0)
    kernels = _device.kernels_for(device)
    assert kernels is not None and kernels.backend.name == "cuda"
    assert kernels.backend.architecture(0).startswith("sm_")
    assert not [w for w in recwarn if "cannot run" in str(w.message)]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_statistics_on_the_gpu_match_the_cpu_core(rng, dtype):
    x = torch.from_numpy(relu_features(rng, 3000, 300, offset=2.0)).to(getattr(torch, dtype))
    stats = fastfid.FeatureStats(300, device="cuda")
    for part in torch.split(x.cuda(), 700):
        stats.update(part)
    host = fastfid.FeatureStats.from_features(x.to(torch.float64).numpy())
    assert stats.count == 3000
    np.testing.assert_allclose(stats.cov.cpu().numpy(), host.cov, rtol=0, atol=1e-12 * np.abs(host.cov).max())


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_the_fast_mode_on_the_gpu_stays_near_the_exact_statistics(rng, dtype):
    x = torch.from_numpy(relu_features(rng, 3000, 300, offset=2.0)).to(getattr(torch, dtype))
    stats = fastfid.FeatureStats(300, device="cuda", precision="fast").update(x.cuda())
    host = fastfid.FeatureStats.from_features(x.to(torch.float64).numpy())
    error = np.abs(stats.cov.cpu().numpy() - host.cov).max() / np.abs(host.cov).max()
    assert 0 <= error < (1e-4 if dtype == "bfloat16" else 1e-3)  # the README's bounds; the hardware's sums may be exact
    assert stats.to("cuda:0")._device_state.precision == "fast"  # a moved copy keeps the mode


def test_a_reference_on_the_gpu(rng):
    x, y = relu_features(rng, 3000, 256, offset=0.5), relu_features(rng, 2000, 256, offset=0.8)
    reference = fastfid.Reference(fastfid.FeatureStats.from_features(torch.from_numpy(x).cuda()))
    assert reference.device.type == "cuda"
    result = reference.distance(fastfid.FeatureStats.from_features(torch.from_numpy(y).cuda()), return_info=True)
    expected = fastfid.fid(fastfid.FeatureStats.from_features(x), fastfid.FeatureStats.from_features(y))
    assert result.value == pytest.approx(expected, rel=FD_RTOL)


def test_the_distance_on_the_gpu_matches_the_exact_route(rng):
    x, y = relu_features(rng, 4000, 512, offset=0.5), relu_features(rng, 3000, 512, offset=0.8)
    moments = [x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)]
    expected = fastfid.frechet_distance(*moments)
    result = fastfid.frechet_distance(*(torch.from_numpy(m).cuda() for m in moments), return_info=True)
    assert result.method == "newton_schulz" and result.converged
    assert result.value == pytest.approx(expected, rel=FD_RTOL)


def test_a_nan_batch_and_bad_covariances_on_the_gpu(rng):
    x = torch.from_numpy(relu_features(rng, 500, 40)).cuda()
    stats = fastfid.FeatureStats.from_features(x)
    bad = x[:50].clone()
    bad[3, 4] = float("nan")
    stats.update(bad)
    with pytest.raises(ValueError, match=r"1 batch\(es\).*NaN or Inf"):
        stats.count
    sigma = stats.cov
    mu = stats.mean
    with pytest.raises(ValueError, match="not symmetric"):
        fastfid.frechet_distance(mu, sigma + torch.triu(torch.ones_like(sigma), 1), mu, sigma)


def test_the_current_device_and_stream_are_respected(rng):
    x = torch.from_numpy(relu_features(rng, 800, 64)).cuda()
    target = torch.cuda.device_count() - 1
    torch.cuda.set_device(0)
    stream = torch.cuda.Stream(device=target)
    with torch.cuda.stream(stream):
        stats = fastfid.FeatureStats.from_features(x.to(f"cuda:{target}"))
        value = fastfid.fid(stats, stats)
    assert torch.cuda.current_device() == 0
    assert value == pytest.approx(0.0, abs=1e-9 * float(stats.cov.trace()))
    torch.cuda.synchronize()


def test_a_second_stream_waits_for_the_first(rng):
    x = torch.from_numpy(relu_features(rng, 4000, 256)).cuda()
    first, second = torch.cuda.Stream(), torch.cuda.Stream()
    with torch.cuda.stream(first):
        stats = fastfid.FeatureStats(256, device="cuda")
        stats.update(x[:2000])
    with torch.cuda.stream(second):
        stats.update(x[2000:])
        count = stats.count
    assert count == 4000
    host = fastfid.FeatureStats.from_features(x.cpu().numpy())
    np.testing.assert_allclose(stats.cov.cpu().numpy(), host.cov, rtol=0, atol=1e-12 * np.abs(host.cov).max())
