"""The device path never stands in a user's way: every CUDA failure it can meet on a machine we
cannot see, injected through the emulated driver (the one seam between fastfid's host code and
the CUDA driver), falls back to torch ops on the same device with one warning naming the cause,
and gives the same number. Also: the caller's current device is restored, work goes on the
caller's stream with events where streams cross, an asynchronous fault is reported at the one
synchronisation with fastfid and the operation named, and one FD reads back one record."""

import re

import numpy as np
import pytest

import fastfid
from support.features import relu_features

torch = pytest.importorskip("torch")
from fastfid import _cuda  # noqa: E402
from fastfid.testing import emulated_cuda  # noqa: E402

# The device route against the exact one: the kernels certify |error| ≤ their bound (~1e-10 of the
# traces on such statistics, fastfid.selftest.accuracy) or take the float64 eigenvalues; the
# torch route stops Newton–Schulz on Σ₁Σ₂ at a step of 1e-12 (test_kernels_simt.py's TRACE_RTOL).
FD_RTOL = 1e-9
RECORD_BYTES = 20 * 8  # FrechetRecord (frechet_kernels.cuh): 20 doubles


@pytest.fixture
def problem(rng):
    x, y = relu_features(rng, 400, 30, offset=0.5), relu_features(rng, 300, 30, offset=0.9)
    moments = [torch.from_numpy(v) for v in (x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))]
    expected = fastfid.frechet_distance(*(m.numpy() for m in moments))
    return x, y, moments, expected


DRIVER_FAILURES = [
    ("cuInit", 36, "CUDA_ERROR_CALL_REQUIRES_NEWER_DRIVER", "driver is older"),  # a driver older than the toolkit
    ("cuInit", 100, "CUDA_ERROR_NO_DEVICE", "no CUDA GPU"),
    ("cuDevicePrimaryCtxRetain", 101, "CUDA_ERROR_INVALID_DEVICE", ""),
    ("cuModuleLoadData", 209, "CUDA_ERROR_NO_BINARY_FOR_GPU", "CMAKE_CUDA_ARCHITECTURES=native"),  # no kernel image
    ("cuModuleLoadData", 222, "CUDA_ERROR_UNSUPPORTED_PTX_VERSION", "driver is older"),  # PTX newer than the driver
    ("cuModuleLoadData", 218, "CUDA_ERROR_INVALID_PTX", "driver is older"),
    ("cuModuleLoadData", 2, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"),
    ("cuModuleGetFunction", 500, "CUDA_ERROR_NOT_FOUND", ""),
    ("cuMemAlloc", 2, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"),  # the probe's buffer
    ("cuLaunchKernel", 719, "CUDA_ERROR_LAUNCH_FAILED", ""),  # the probe kernel
    ("cuLaunchKernel", 701, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", ""),
    ("cuStreamSynchronize", 700, "CUDA_ERROR_ILLEGAL_ADDRESS", ""),  # the probe's wait
]


@pytest.mark.parametrize("call,code,name,advice", DRIVER_FAILURES, ids=[f"{c}-{n}" for c, _, n, _ in DRIVER_FAILURES])
def test_a_failed_probe_falls_back_once_with_the_cause_and_the_same_number(problem, call, code, name, advice):
    x, y, moments, expected = problem
    with emulated_cuda():
        _cuda.emulator.inject(call, code)
        with pytest.warns(RuntimeWarning) as caught:
            value = fastfid.frechet_distance(*moments)
        assert len(caught) == 1
        message = str(caught[0].message)
        assert "fastfid's CUDA kernels cannot run on cpu" in message and name in message
        assert re.search(re.escape(advice), message) and "torch float64 ops" in message
        assert value == pytest.approx(expected, rel=FD_RTOL)
        # From now on the torch route, silently (warnings are errors here): statistics too.
        assert fastfid.frechet_distance(*moments) == pytest.approx(expected, rel=FD_RTOL)
        stats = fastfid.FeatureStats.from_features(torch.from_numpy(x))
        assert stats._device_state.kernels is None
        np.testing.assert_allclose(stats.cov.numpy(), np.cov(x, rowvar=False), rtol=0, atol=1e-12)
        assert _cuda.emulator.counters()["live_allocations"] == 0  # the probe freed its buffer


def launches_of(operation) -> int:
    _cuda.emulator.reset(1)
    operation()
    return _cuda.emulator.counters()["launches"]


def test_a_launch_refused_in_the_middle_of_a_batch_leaves_the_state_whole(rng):
    # Every launch of an update refused in turn: the batch goes through torch ops, and the
    # statistics equal the CPU core's, as if the kernels had never started it.
    x = relu_features(rng, 500, 20, offset=1.0)
    first, second = torch.from_numpy(x[:300]), torch.from_numpy(x[300:])
    with emulated_cuda():
        launches = launches_of(lambda: fastfid.FeatureStats.from_features(first).update(second))
    assert launches == 1 + 3 + 3  # the probe; choose_shift, batch_sums, batch_syrk per batch
    for refused in range(1, 4):
        with emulated_cuda():
            stats = fastfid.FeatureStats.from_features(first)
            _cuda.emulator.inject("cuLaunchKernel", 719, skip=refused - 1)
            with pytest.warns(RuntimeWarning, match=r"accumulate failed.*CUDA_ERROR_LAUNCH_FAILED"):
                stats.update(second)
            assert stats.count == 500
            np.testing.assert_allclose(stats.mean.numpy(), x.mean(0), rtol=0, atol=1e-12 * np.abs(x).max())
            np.testing.assert_allclose(stats.cov.numpy(), np.cov(x, rowvar=False), rtol=0, atol=1e-12)


def test_a_merge_refused_at_either_launch_leaves_the_state_whole(rng):
    x = relu_features(rng, 600, 20, offset=1.0)
    for refused in (1, 2):
        with emulated_cuda():
            a = fastfid.FeatureStats.from_features(torch.from_numpy(x[:250]))
            b = fastfid.FeatureStats.from_features(torch.from_numpy(x[250:]))
            _cuda.emulator.inject("cuLaunchKernel", 719, skip=refused - 1)
            with pytest.warns(RuntimeWarning, match=r"merge failed.*CUDA_ERROR_LAUNCH_FAILED"):
                a.merge(b)
            assert a.count == 600
            np.testing.assert_allclose(a.cov.numpy(), np.cov(x, rowvar=False), rtol=0, atol=1e-12)


def test_a_launch_refused_inside_the_distance_falls_back_to_the_same_number(problem):
    _, _, moments, expected = problem
    with emulated_cuda():
        _cuda.emulator.inject("cuLaunchKernel", 701, skip=1 + 8)  # after the probe, inside Newton–Schulz
        with pytest.warns(RuntimeWarning, match=r"frechet_distance failed.*LAUNCH_OUT_OF_RESOURCES"):
            value = fastfid.frechet_distance(*moments)
    assert value == pytest.approx(expected, rel=FD_RTOL)


def test_no_memory_for_the_workspace_takes_the_torch_route_for_that_call(problem, monkeypatch):
    _, _, moments, expected = problem
    empty = torch.empty
    workspace = _cuda.symmetric_workspace_doubles(30)

    def allocate(*shape, **options):
        if shape == (workspace,):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 50 MiB")
        return empty(*shape, **options)

    with emulated_cuda():
        monkeypatch.setattr(torch, "empty", allocate)
        with pytest.warns(RuntimeWarning, match="no memory on cpu for the 0 MiB workspace.*out of memory"):
            value = fastfid.frechet_distance(*moments)
        assert value == pytest.approx(expected, rel=FD_RTOL)
        monkeypatch.undo()
        _cuda.emulator.reset(1)
        assert fastfid.frechet_distance(*moments) == pytest.approx(expected, rel=FD_RTOL)
        assert _cuda.emulator.counters()["device_to_host_copies"] == 1  # the kernels again


def test_an_asynchronous_fault_is_raised_at_the_synchronisation_naming_fastfid_and_the_operation(problem):
    _, _, moments, _ = problem
    with emulated_cuda():
        fastfid.frechet_distance(*moments)  # probed
        _cuda.emulator.inject_asynchronous(700)
        with pytest.raises(_cuda.CudaError, match=r"^fastfid: .* during frechet_distance on cuda:0: "
                                                  r"CUDA_ERROR_ILLEGAL_ADDRESS \(an error of a kernel enqueued "
                                                  r"earlier") as raised:
            fastfid.frechet_distance(*moments)
        assert raised.value.code == 700 and raised.value.asynchronous


def test_one_distance_reads_back_one_record_and_never_waits_inside_newton_schulz(problem):
    _, _, moments, expected = problem
    with emulated_cuda():
        fastfid.frechet_distance(*moments)  # the probe reads its own buffer once
        _cuda.emulator.reset(1)
        result = fastfid.frechet_distance(*moments, return_info=True)
        counters = _cuda.emulator.counters()
    assert result.iterations >= 5 and result.value == pytest.approx(expected, rel=FD_RTOL)
    assert counters["device_to_host_copies"] == 1 and counters["device_to_host_bytes"] == RECORD_BYTES
    assert counters["synchronisations"] == 1


def test_the_callers_current_device_is_restored_and_the_work_goes_to_the_asked_device(problem, rng):
    x, _, moments, expected = problem
    with emulated_cuda(devices=2) as emulation:
        for work_on, current in ((0, 1), (1, 0)):
            emulation.device = work_on
            _cuda.emulator.set_current_device(current)
            value = fastfid.frechet_distance(*moments)
            stats = fastfid.FeatureStats.from_features(torch.from_numpy(x))
            assert _cuda.emulator.current_device() == current
            launches = [line for line in _cuda.emulator.log() if line.startswith("cuLaunchKernel")]
            assert launches and all(f" device={work_on} " in line for line in launches)
            assert value == pytest.approx(expected, rel=FD_RTOL) and stats.count == len(x)
            _cuda.emulator.reset(2)


def test_kernels_run_on_the_callers_stream_with_events_where_streams_cross(rng):
    x = relu_features(rng, 300, 12)
    parts = [torch.from_numpy(part) for part in np.array_split(x, 3)]
    with emulated_cuda() as emulation:
        emulation.stream = 0x51
        stats = fastfid.FeatureStats.from_features(parts[0])
        other = fastfid.FeatureStats.from_features(parts[2])
        _cuda.emulator.reset(1)
        emulation.stream = 0x52  # the caller moved to another stream
        stats.update(parts[1])
        log = _cuda.emulator.log()
        assert log[0] == "cuEventRecord event=" + log[0].split("=")[1].split()[0] + " stream=0x51"
        assert log[1].startswith("cuStreamWaitEvent") and log[1].endswith("stream=0x52")
        assert all(line.endswith("stream=0x52") for line in log[2:]) and len(log) == 2 + 3  # then the 3 launches
        _cuda.emulator.reset(1)
        stats.update(parts[1][:5])  # same stream: no event
        assert not any("Event" in line for line in _cuda.emulator.log())
        stats.merge(other)  # `other` was last fed on 0x51: the merge waits for it
        waits = [line for line in _cuda.emulator.log() if "Event" in line]
        assert len(waits) == 2 and waits[0].endswith("stream=0x51") and waits[1].endswith("stream=0x52")
        assert stats.count == len(x) + 5


def test_the_system_driver_missing_or_too_old_is_a_clear_error():
    missing = _cuda.system_backend("/nonexistent/libcuda.so.1")
    with pytest.raises(_cuda.CudaError, match="could not be loaded.*no NVIDIA driver is installed"):
        missing.probe(0)
    not_a_driver = _cuda.system_backend("libm.so.6")  # loads, but has none of the driver's functions
    with pytest.raises(_cuda.CudaError, match="libm.so.6 lacks cuInit: the NVIDIA driver is too old"):
        not_a_driver.probe(0)
    assert missing.architecture(0) == ""


def test_each_device_loads_its_own_module_and_runs_its_own_probe():
    # A function belongs to the module of one context, and the emulated driver refuses it under
    # another (as a real driver does): a runtime that did not enter the device would fail here.
    backend = _cuda.emulated_backend()
    _cuda.emulator.reset(2)
    _cuda.emulator.set_current_device(1)
    backend.probe(0)
    backend.probe(1)
    assert [line.split()[2] for line in _cuda.emulator.log() if line.startswith("cuLaunchKernel")] == \
        ["device=0", "device=1"]
    assert _cuda.emulator.current_device() == 1
    assert backend.architecture(0) == "sm_90"
