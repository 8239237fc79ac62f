"""The device route's certificate, case by case (fastfid.selftest.accuracy, the README's
tables, at a smaller d): Inception-like features, n < d, κ = 1e12, scales 1e-200 and 1e200, identical
sides, a singular side in either order, on an emulated sm_90 (float64 products) and sm_89 (3×TF32
Newton–Schulz products). Each FD is within the bound its route certified (corrected Newton–Schulz)
and within the tolerance 1e-8·(tr Σ₁ + tr Σ₂) of the CPU core's exact route."""

import pytest

torch = pytest.importorskip("torch")
from fastfid.selftest import accuracy  # noqa: E402
from fastfid.testing import emulated_cuda  # noqa: E402


@pytest.mark.parametrize("architecture", ["sm_90", "sm_89"])
def test_every_case_is_within_its_bound_and_the_tolerance(architecture):
    with emulated_cuda(architecture=architecture):
        rows = accuracy.study(40, torch.device("cpu"))
    assert len(rows) == 8 and not accuracy.wrong(rows)
    for row in rows:
        assert row["error"] <= row["tolerance"], row
        if row["route"] == "newton_schulz":
            assert row["error"] <= row["bound"] <= row["tolerance"], row
        else:
            assert row["route"] == "eigh" and row["bound"] == 0, row
    routes = {row["case"].split(" (")[0].split(":")[0]: row["route"] for row in rows}
    assert routes["κ(Σ₁) = 1e12"] == "eigh"  # the bound is not met: the float64 eigenvalues decide
    if architecture == "sm_90":  # float64 products on the FP64 tensor cores
        assert routes["Inception-like ReLU features"] == "newton_schulz"


def test_a_tighter_tolerance_sends_the_distance_to_the_exact_route(rng):
    import numpy as np
    import torch

    import fastfid
    from fastfid.testing import emulated_cuda
    from support.features import relu_features

    x, y = relu_features(rng, 200, 24, offset=0.5), relu_features(rng, 200, 24, offset=0.8)
    moments = [torch.from_numpy(v) for v in (x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))]
    with emulated_cuda():
        loose = fastfid.frechet_distance(*moments, return_info=True)
        strict = fastfid.frechet_distance(*moments, return_info=True, trace_tolerance=1e-30)
    assert loose.method == "newton_schulz" and 0 < loose.error_bound
    assert strict.method == "eigh" and strict.error_bound == 0
    assert strict.value == pytest.approx(loose.value, abs=loose.error_bound)
    with pytest.raises(ValueError, match="trace_tolerance must be positive"):
        with emulated_cuda():
            fastfid.frechet_distance(*moments, trace_tolerance=0.0)


def test_the_round_counting_model_counts_the_kernels_rounds():
    # benchmarks/gpu/ns_rounds.py's float64 numpy model of the scaled iteration and its stopping rule
    # (which the README's round counts come from) against the emulated kernels' DMMA route, case by case.
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu" / "ns_rounds.py"
    spec = importlib.util.spec_from_file_location("ns_rounds", path)
    model = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(model)
    with emulated_cuda(architecture="sm_90"):
        rows = accuracy.study(40, torch.device("cpu"))
    for row, (name, (_, s1, _, s2)) in zip(rows, accuracy.cases(40)):
        rounds, _ = model.iterate(model.symmetric_a(s1, s2), model.LOWER_BOUND)
        assert rounds == row["iterations"], name
