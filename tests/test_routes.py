"""The FD route a device takes is the fastest that certifies, as measured there (fastfid._device.
routes), under the emulation with injected timings: the choice follows the timings, is kept per
(device, d bucket) and recorded under the device's key, an iteration that does not certify is never
chosen, the prior before any measurement, and a chosen iteration that does not certify an input
hands it to the exact route. The number never moves beyond the tolerance."""

import json

import numpy as np
import pytest

import fastfid
from support.features import relu_features

torch = pytest.importorskip("torch")
from fastfid import _cuda  # noqa: E402
from fastfid._device import kernels_for, routes, validation  # noqa: E402
from fastfid.testing import emulated_cuda  # noqa: E402

CPU = torch.device("cpu")
FD_RTOL = 1e-9  # a certified or exact route against the CPU core's exact one (test_device.py)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTFID_HOME", str(tmp_path))
    monkeypatch.delenv(validation.VALIDATE_VARIABLE, raising=False)
    monkeypatch.setattr(routes, "clock", None)
    return tmp_path / "validation"


def moments(rng, d, offset=0.5):
    x, y = relu_features(rng, 4 * d, d, offset=offset), relu_features(rng, 4 * d, d, offset=offset + 0.3)
    return [x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)]


def timings(**ms):
    """An injected clock: each route's ms, whatever was measured; records the calls."""
    calls = []

    def clock(route, d, measured):
        calls.append((route, d))
        return ms[route]
    clock.calls = calls
    return clock


def fd_on_device(values, **kwargs):
    return fastfid.frechet_distance(*(torch.from_numpy(np.ascontiguousarray(v)) for v in values), return_info=True,
                                    **kwargs)


@pytest.mark.parametrize("fastest", ["newton_schulz", "eigvalsh", "host"])
def test_the_choice_follows_the_measured_timings_and_the_number_stays(rng, monkeypatch, fastest):
    values = moments(rng, 30)
    expected = fastfid.frechet_distance(*values)
    clock = timings(**{route: (1.0 if route == fastest else 9.0) for route in routes.ROUTES})
    monkeypatch.setattr(routes, "clock", clock)
    with emulated_cuda(architecture="sm_90") as emulation:
        emulation.route_choice = True
        first = fd_on_device(values)
        assert [route for route, _ in clock.calls] == list(routes.ROUTES)  # one trial of each, at first need
        assert kernels_for(CPU).routes == {64: fastest}
        launches = _cuda.emulator.counters()["launches"]
        second = fd_on_device(values)
        launched = _cuda.emulator.counters()["launches"] - launches
    assert len(clock.calls) == 3  # measured once for the bucket
    assert (launched > 0) == (fastest == "newton_schulz")  # only the iteration runs fastfid's kernels
    assert second.method == ("newton_schulz" if fastest == "newton_schulz" else "eigh")
    for result in (first, second):
        assert result.value == pytest.approx(expected, rel=FD_RTOL)


def test_an_iteration_that_does_not_certify_is_never_chosen_however_fast(rng, monkeypatch):
    values = moments(rng, 40)  # 3xTF32 products stop short of the certificate here (the accuracy study)
    monkeypatch.setattr(routes, "clock", timings(newton_schulz=0.1, eigvalsh=5.0, host=9.0))
    with emulated_cuda(architecture="sm_89") as emulation:
        emulation.route_choice = True
        result = fd_on_device(values)
        assert kernels_for(CPU).routes == {64: "eigvalsh"}
    data = json.loads(next(iter(routes.validation.records_dir().glob("routes-*.json"))).read_text())
    trials = {t["route"]: t for t in data["buckets"]["64"]["trials"]}
    assert not trials["newton_schulz"]["certified"] and trials["eigvalsh"]["chosen"]
    assert result.value == pytest.approx(fastfid.frechet_distance(*values), rel=FD_RTOL)


@pytest.mark.parametrize("architecture,route", [("sm_89", "eigvalsh"), ("sm_90", "newton_schulz")])
def test_before_any_measurement_only_gpus_with_fp64_tensor_cores_take_the_iteration(rng, monkeypatch, architecture,
                                                                                      route):
    monkeypatch.setenv(validation.VALIDATE_VARIABLE, "0")  # no trials
    values = moments(rng, 24)
    with emulated_cuda(architecture=architecture) as emulation:
        emulation.route_choice = True
        kernels = kernels_for(CPU)
        launches = _cuda.emulator.counters()["launches"]
        result = fd_on_device(values)
        assert routes.prior(kernels) == route and kernels.routes == {}
        assert (_cuda.emulator.counters()["launches"] > launches) == (route == "newton_schulz")
    assert result.value == pytest.approx(fastfid.frechet_distance(*values), rel=FD_RTOL)


def test_the_choice_is_kept_per_device_and_d_bucket_in_a_record_read_by_later_processes(rng, monkeypatch, isolated):
    clock = timings(newton_schulz=9.0, eigvalsh=1.0, host=5.0)
    monkeypatch.setattr(routes, "clock", clock)
    with emulated_cuda(architecture="sm_90") as emulation:
        emulation.route_choice = True
        fd_on_device(moments(rng, 30))
        fd_on_device(moments(rng, 50))  # the same bucket (64): no new trial
        assert len(clock.calls) == 3
        fd_on_device(moments(rng, 70))  # bucket 128: measured
        assert len(clock.calls) == 6 and kernels_for(CPU).routes == {64: "eigvalsh", 128: "eigvalsh"}
    [path] = isolated.glob("routes-*.json")
    data = json.loads(path.read_text())
    assert data["description"]["name"] == "fastfid emulated GPU (sm_90)" and set(data["buckets"]) == {"64", "128"}
    # A later process on the same device and build reads the record; another device measures afresh.
    with emulated_cuda(architecture="sm_90") as emulation:
        emulation.route_choice = True
        fd_on_device(moments(rng, 30))
        assert len(clock.calls) == 6 and kernels_for(CPU).routes == {64: "eigvalsh"}
    with emulated_cuda(architecture="sm_80") as emulation:
        emulation.route_choice = True
        fd_on_device(moments(rng, 30))
        assert len(clock.calls) == 9
    assert len(list(isolated.glob("routes-*.json"))) == 2
    # A record of another build is not read.
    data["description"]["build"] = "another"
    path.write_text(json.dumps(data))
    with emulated_cuda(architecture="sm_90") as emulation:
        emulation.route_choice = True
        fd_on_device(moments(rng, 30))
        assert len(clock.calls) == 12


def test_a_chosen_iteration_that_does_not_certify_an_input_hands_it_to_the_exact_route(rng, monkeypatch):
    monkeypatch.setattr(routes, "clock", timings(newton_schulz=1.0, eigvalsh=5.0, host=9.0))
    mu1, s1, mu2, s2 = moments(rng, 30)
    with emulated_cuda(architecture="sm_90") as emulation:
        emulation.route_choice = True
        assert fd_on_device([mu1, s1, mu2, s2]).method == "newton_schulz"
        assert kernels_for(CPU).routes == {64: "newton_schulz"}
        q, _ = np.linalg.qr(rng.standard_normal((30, 30)))
        conditioned = (q * np.geomspace(1.0, 1e-12, 30)) @ q.T  # κ = 1e12: the bound is not met
        result = fd_on_device([mu1, conditioned, mu2, s2])
    assert result.method == "eigh"
    assert result.value == pytest.approx(fastfid.frechet_distance(mu1, conditioned, mu2, s2), rel=FD_RTOL)
