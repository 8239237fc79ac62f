"""Kernels check themselves on each device before they are trusted (fastfid._device.validation):
wrong values injected into one kernel through the emulated driver (a flipped bit, a skipped tile,
a stale shared-memory read) are caught, only that variant falls back to torch with one warning,
and the number stays right; a fault-free validation passes on every emulated architecture; a pass
is recorded per device and build and read back."""

import json
import re
import warnings

import numpy as np
import pytest

import fastfid
from support.features import relu_features

torch = pytest.importorskip("torch")
from fastfid import _cuda  # noqa: E402
from fastfid._device import kernels_for  # noqa: E402
from fastfid._device import validation  # noqa: E402
from fastfid.testing import emulated_cuda  # noqa: E402

CPU = torch.device("cpu")
STATS_RTOL = 1e-12  # float64 accumulation in another order than the CPU core's (test_device.py)
FD_RTOL = 1e-9  # the device route against the exact one (test_device.py)


@pytest.fixture(autouse=True)
def records(tmp_path, monkeypatch):
    """Each test keeps its validation records in its own folder."""
    monkeypatch.setenv("FASTFID_HOME", str(tmp_path))
    monkeypatch.delenv(validation.VALIDATE_VARIABLE, raising=False)
    return tmp_path / "validation"


def validated(architecture: str, only=None, fault=None):
    """kernels_for under an emulated GPU with validation on (only: the checks guarding these routes),
    after injecting `fault` = (kernel, kind, where, barrier); returns (kernels, warnings caught)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with emulated_cuda(architecture=architecture, validate=True) as emulation:
            if only is not None:
                emulation.validate = frozenset(only)
            if fault is not None:
                kernel, kind, where, barrier = fault
                _cuda.emulator.inject_fault(kernel, kind, where=where, barrier=barrier)
            kernels = kernels_for(CPU)
    return kernels, [str(w.message) for w in caught]


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["sm_90"])  # sm_89's plan: tests/test_gpu_script.py's selftest
def test_a_fault_free_validation_passes_every_check(architecture, records):
    kernels, caught = validated(architecture)
    checks = kernels.validation.checks
    assert [check.name for check in checks] == [name for name, _ in validation.plan(kernels)]
    assert all(check.passed for check in checks), [(c.name, c.error, c.detail) for c in checks if not c.passed]
    assert not kernels.untrusted and not caught
    # Not merely passing: the float64 variants agree to far inside their tolerance, the fast mode
    # is inside its stated bound but not exact, and the symmetric route certified.
    errors = {check.name: check.error for check in checks}
    assert max(e for name, e in errors.items() if "float64 on" in name) < 0.1
    assert 0 < max(e for name, e in errors.items() if "fast mode" in name) <= 1
    assert "certified" in checks[-3].detail
    # The pass is recorded, keyed by the device and the build, and a later process reads it instead.
    data = json.loads(next(records.glob("*.json")).read_text())
    assert data["description"]["name"] == f"fastfid emulated GPU ({architecture})"
    assert data["description"]["driver_version"] == 12080 and data["description"]["build"] == validation.build_id()
    with emulated_cuda(architecture=architecture, validate=True):
        again = kernels_for(CPU).validation
        assert again.cached and _cuda.emulator.counters()["launches"] == 1  # the probe only
    assert [(c.name, c.error) for c in again.checks] == [(c.name, c.error) for c in checks]


def test_every_emulated_architecture_runs_one_of_the_two_validated_plans():
    # The emulation runs every architecture alike; the architecture only picks the variants (DMMA or
    # FMA, 3xTF32 or float64 Newton-Schulz), so the two plans validated fault-free (sm_90 above, sm_89
    # by the GPU script's selftest, which asserts every check passed) cover them all.
    plans = {}
    for architecture in ("sm_80", "sm_86", "sm_89", "sm_90", "sm_100", "sm_120"):
        with emulated_cuda(architecture=architecture):
            plans[architecture] = validation.plan(kernels_for(CPU))
    assert plans["sm_80"] == plans["sm_90"] == plans["sm_100"]
    assert plans["sm_86"] == plans["sm_89"] == plans["sm_120"]
    assert plans["sm_89"] != plans["sm_90"]


FAULTS = [
    # (architecture, kernel, kind, where, barrier, the route it breaks)
    ("sm_90", "fastfid_batch_syrk_tensor_float32", "flip_bit", 0, 0, "stats:float64:float32"),
    ("sm_89", "fastfid_batch_syrk_fma_float16", "skip_block", 3, 0, "stats:float64:float16"),
    ("sm_90", "fastfid_batch_syrk_fast_bfloat16", "drop_barrier", 0, 0, "stats:fast:bfloat16"),
    ("sm_89", "fastfid_batch_syrk_fast_float32", "drop_barrier", 0, 0, "stats:fast:float32"),
    ("sm_90", "fastfid_merge_apply", "flip_bit", 5, 0, "merge"),
    ("sm_90", "fastfid_sym_right_tensor", "skip_block", 1, 0, "fd:symmetric"),      # A, which the exact route reads
    ("sm_90", "fastfid_ns_products_tensor", "drop_barrier", 0, 0, "fd:symmetric"),  # the rounds
    ("sm_90", "fastfid_sym_residual_tensor", "skip_block", 0, 0, "fd:symmetric"),   # the certificate's residual
    ("sm_89", "fastfid_gemm_scaled", "flip_bit", 0, 0, "fd:coupled"),
]


@pytest.mark.parametrize("architecture,kernel,kind,where,barrier,route", FAULTS,
                         ids=[f"{k.removeprefix('fastfid_')}-{kind}" for _, k, kind, *_ in FAULTS])
def test_wrong_values_are_caught_and_only_that_variant_falls_back_with_one_warning(
        architecture, kernel, kind, where, barrier, route, records):
    kernels, caught = validated(architecture, only={route}, fault=(kernel, kind, where, barrier))
    assert list(kernels.untrusted) == [route]
    assert [check.guards for check in kernels.validation.checks].count(route) == 1  # the rest skipped
    failed = kernels.untrusted[route]
    assert not failed.passed and failed.error > failed.tolerance
    assert len(caught) == 1
    message = caught[0]
    assert f"'{failed.name}'" in message and "on cpu (fastfid emulated GPU" in message
    assert re.search(r"error \S+ where 1 is allowed", message) and "fastfid selftest" in message
    assert not list(records.glob("*.json"))  # a failed validation is never recorded


def test_an_untrusted_statistics_variant_gives_the_cpu_cores_numbers_through_torch(rng):
    x = relu_features(rng, 300, 40, offset=0.5).astype(np.float32)
    host = fastfid.FeatureStats.from_features(x.astype(np.float64))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        with emulated_cuda(architecture="sm_90", validate=True) as emulation:
            emulation.validate = frozenset({"stats:float64:float32"})
            _cuda.emulator.inject_fault("fastfid_batch_syrk_tensor_float32", "flip_bit")
            stats = fastfid.FeatureStats.from_features(torch.from_numpy(x))
            launches = _cuda.emulator.counters()["launches"]
            float64_stats = fastfid.FeatureStats.from_features(torch.from_numpy(x.astype(np.float64)))
            assert _cuda.emulator.counters()["launches"] > launches  # the other variants still run the kernels
            mean, cov = stats.mean.numpy(), stats.cov.numpy()
    scale = np.abs(host.cov).max()
    np.testing.assert_allclose(mean, host.mean, rtol=0, atol=STATS_RTOL * np.abs(x).max())
    np.testing.assert_allclose(cov, host.cov, rtol=0, atol=STATS_RTOL * scale)
    np.testing.assert_allclose(float64_stats.cov.numpy(), host.cov, rtol=0, atol=STATS_RTOL * scale)


def test_an_untrusted_symmetric_route_gives_the_exact_distance_through_torch(rng):
    x, y = relu_features(rng, 300, 30, offset=0.5), relu_features(rng, 200, 30, offset=0.9)
    moments = [v.mean(0) for v in (x, y)], [np.cov(v, rowvar=False) for v in (x, y)]
    (mu1, mu2), (s1, s2) = moments
    expected = fastfid.frechet_distance(mu1, s1, mu2, s2)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        with emulated_cuda(architecture="sm_90", validate=True) as emulation:
            emulation.validate = frozenset({"fd:symmetric"})
            _cuda.emulator.inject_fault("fastfid_sym_right_tensor", "skip_block", where=1)
            kernels = kernels_for(CPU)
            assert not kernels.trusts("fd:symmetric")
            launches = _cuda.emulator.counters()["launches"]
            value = fastfid.frechet_distance(*(torch.from_numpy(v) for v in (mu1, s1, mu2, s2)))
            assert _cuda.emulator.counters()["launches"] == launches  # no kernel of the untrusted route ran
    assert value == pytest.approx(expected, rel=FD_RTOL)


@pytest.mark.parametrize("change", ["another GPU", "another fastfid", "corrupt", "a failed check"])
def test_a_record_of_another_device_or_build_or_unreadable_is_not_used(records, change):
    with emulated_cuda(architecture="sm_90"):
        kernels = kernels_for(CPU)
    description = validation.describe(kernels)
    check = validation.Check("merge", "merge", 0.0, 1.0, 0.01)
    validation.record(validation.Validation("cpu", description, [check], 0.01))
    path = next(records.glob("*.json"))
    assert validation.recorded(description).cached
    if change == "another GPU":
        assert validation.recorded({**description, "name": "NVIDIA H100 80GB HBM3"}) is None
    elif change == "another fastfid":
        assert validation.recorded({**description, "fastfid": "0.0.1"}) is None
    elif change == "corrupt":
        path.write_text("{not json")
        assert validation.recorded(description) is None
    else:
        data = json.loads(path.read_text())
        data["checks"][0]["error"] = 2.0
        path.write_text(json.dumps(data))
        assert validation.recorded(description) is None


def test_fastfid_validate_0_skips_the_validation(monkeypatch):
    monkeypatch.setenv(validation.VALIDATE_VARIABLE, "0")
    with emulated_cuda(architecture="sm_90", validate=True):
        kernels = kernels_for(CPU)
        assert kernels.validation is None and kernels.trusts("fd:symmetric")
        assert _cuda.emulator.counters()["launches"] == 1  # the probe


def test_a_refused_launch_during_the_validation_gives_up_the_device_with_one_warning():
    with pytest.warns(RuntimeWarning, match="the validation of fastfid's kernels failed"):
        with emulated_cuda(architecture="sm_90", validate=True) as emulation:
            emulation.validate = frozenset({"merge"})
            _cuda.emulator.inject("cuLaunchKernel", 701, skip=1)  # after the probe
            assert kernels_for(CPU) is None
