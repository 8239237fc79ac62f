"""Each kernel variant a device would use, run once there on small but awkward inputs and compared
with the CPU core before it is trusted: a variant that disagrees is not used on that device (only
that one: its work takes torch's float64 ops, warned once), the others are.

The emulation proves the kernels' logic but not what only a GPU can break (races, warp-synchronous
assumptions, the memory model, uninitialised shared memory, one architecture's fragment layouts).
The inputs are made to reach those places: d = 130 (not a tile multiple, several tiles, a ragged
edge), n = 700 (several row slices), features read through odd row and column strides, each input
type, a merge, and the distance's routes at the tolerances the tests use.

A passed validation is recorded per device (GPU, index, driver, fastfid version and build) under
``$FASTFID_HOME/validation`` (default ``~/.cache/fastfid``), and later processes read the record
instead of running it again. ``FASTFID_VALIDATE=0`` skips it, for people who have run
``fastfid selftest`` on that machine.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np

from fastfid._native import core as _core
from fastfid._native import cuda as _cuda

if TYPE_CHECKING:
    from fastfid._device.routing import DeviceKernels

VALIDATE_VARIABLE = "FASTFID_VALIDATE"
DIM, ROWS = 130, 700
FEATURE_TYPES = ("float16", "bfloat16", "float32", "float64")
PRECISIONS = ("float64", "fast")

STATS_RTOL = 1e-12
"""float64 statistics against the CPU core's, relative to the largest entry: both are exact float64
sums in different orders (tests/test_device.py's STATS_RTOL)."""
FAST_BOUND = {"tf32": 2.0**-10 + 2.0**-21 + 256 * 2.0**-24, "split_bf16": 2 * 2.0**-16 + 1040 * 2.0**-24}
"""The fast mode's stated per-entry bounds (the README's, tests/test_kernels_simt.py's): times
Σ_r |x_ri − s_i||x_rj − s_j|, TF32 for 32/64-bit batches, split-bf16 for 16-bit ones."""
FD_RTOL = 1e-9
"""The coupled route against the exact distance, relative to it (tests/test_device.py's FD_RTOL)."""
ROOT_RTOL = 1e-10
"""‖√M·√M − M‖∞ relative to ‖M‖∞ for the coupled route's root (tests/test_device.py)."""
CERTIFICATE_SLACK = 1e-13
"""The symmetric route, where it certified: |its distance − the exact one| ≤ its bound + this ×
(tr Σ₁ + tr Σ₂), the rounding of the exact reference itself, and ≤ TRACE_TOLERANCE × the traces.
A itself, which the exact route reads, is checked at STATS_RTOL: float64 GEMMs in another order."""


@dataclass(frozen=True)
class Check:
    """One variant's validation: ``error`` is the largest error found, in units where ``tolerance``
    is what the tests allow (a variant passes when error ≤ tolerance)."""

    name: str
    """What ran, in words (the variant, the input type)."""
    guards: str
    """The route a failure takes away from the kernels on this device: "stats:float64:float16",
    "merge", "fd:symmetric", "fd:coupled"."""
    error: float
    tolerance: float
    seconds: float
    detail: str = ""

    @property
    def passed(self) -> bool:
        return self.error <= self.tolerance


@dataclass
class Validation:
    """The validation of one device: its checks, how long they took, and whether a record of an
    earlier pass was read instead of running them."""

    device: str
    description: dict
    checks: list[Check] = field(default_factory=list)
    seconds: float = 0.0
    cached: bool = False

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if not check.passed]


def enabled() -> bool:
    return os.environ.get(VALIDATE_VARIABLE, "1").strip() != "0"


# --- the variants a device uses -------------------------------------------------------------------
def stats_guard(precision: str, type_name: str) -> str:
    return f"stats:{precision}:{type_name}"


def _stats_label(kernels: DeviceKernels, precision: str, type_name: str) -> str:
    if precision == "fast":
        products = "split-bf16" if type_name in ("float16", "bfloat16") else "TF32"
        return f"statistics, fast mode ({products} tensor cores), {type_name} features"
    products = "FP64 tensor cores (DMMA)" if kernels.tensor_cores else "FP64 FMAs"
    return f"statistics, float64 on {products}, {type_name} features"


def _products(kernels: DeviceKernels) -> tuple[str, str]:
    gemm = "DMMA" if kernels.tensor_cores else "FMA"
    return gemm, "3xTF32" if kernels.tf32x3 else gemm


def plan(kernels: DeviceKernels) -> list[tuple[str, str]]:
    """(name, guarded route) of every check a validation of these kernels runs, in order."""
    gemm, iteration = _products(kernels)
    checks = [(_stats_label(kernels, precision, type_name), stats_guard(precision, type_name))
              for precision in PRECISIONS for type_name in FEATURE_TYPES]
    checks += [
        ("merge of two states (Chan's update)", "merge"),
        (f"distance, symmetric route: GEMMs on {gemm}, Newton-Schulz on {iteration}, certificate", "fd:symmetric"),
        ("certificate after 2 Newton-Schulz rounds (its bound must hold)", "fd:symmetric"),
        (f"distance, coupled route (FD gradients): GEMMs on {gemm}, square roots", "fd:coupled"),
    ]
    return checks


# --- the inputs -------------------------------------------------------------------------------------
def _features(rng: np.random.Generator, rows: int) -> np.ndarray:
    """Correlated, non-negative features with an offset, as a network's pooled activations are."""
    mixing = rng.standard_normal((DIM, DIM)) / math.sqrt(DIM)
    return np.maximum(rng.standard_normal((rows, DIM)) @ mixing + 0.3, 0.0) * np.logspace(0, -1, DIM)


def _strided(torch, values: np.ndarray, dtype, device):
    """`values` as `dtype` on the device, read through a row stride of 2d + 1 and a column stride of 2."""
    padded = np.zeros((values.shape[0], 2 * DIM + 1))
    padded[:, 1::2] = values
    return torch.from_numpy(padded).to(device=device, dtype=dtype)[:, 1::2]


# --- running a validation --------------------------------------------------------------------------
def validate(kernels: DeviceKernels, device, *, only: Collection[str] | None = None,
             complete: bool = False) -> Validation:
    """Runs the checks of ``plan(kernels)`` on ``device`` (``only``: those guarding these routes,
    which emulated tests use to stay short). Once a route has failed a check, its later checks are
    skipped unless ``complete`` (fastfid selftest's report shows them all). A CudaError (a refused
    launch, a fault) propagates: the device is then not used at all."""
    from fastfid._device.routing import torch_module

    torch = torch_module()
    validation = Validation(str(device), kernels.description)
    started = time.perf_counter()
    rng = np.random.default_rng(20261207)
    features, covariances = _features(rng, ROWS), _covariances(rng)
    for name, guard in plan(kernels):
        if only is not None and guard not in only:
            continue
        if not complete and any(check.guards == guard and not check.passed for check in validation.checks):
            continue
        begun = time.perf_counter()
        error, tolerance, detail = _run_check(torch, kernels, device, guard, name, features, covariances)
        _synchronize(torch, device)
        validation.checks.append(Check(name, guard, error, tolerance, time.perf_counter() - begun, detail))
    validation.seconds = time.perf_counter() - started
    return validation


def _synchronize(torch, device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _run_check(torch, kernels, device, guard: str, name: str, features, covariances) -> tuple[float, float, str]:
    if guard.startswith("stats:"):
        _, precision, type_name = guard.split(":")
        return _check_statistics(torch, kernels, device, precision, type_name, features)
    if guard == "merge":
        return _check_merge(torch, kernels, device, features)
    s1, s2, mu1, mu2 = covariances
    if guard == "fd:symmetric":
        rounds = 2 if name.startswith("certificate") else 100
        return _check_symmetric(torch, kernels, device, mu1, s1, mu2, s2, rounds)
    return _check_coupled(torch, kernels, device, mu1, s1, mu2, s2)


def _poisoned(torch, shape, device):
    """Scratch or output filled with NaN: a tile a kernel failed to write shows, whatever the memory
    held before (freed memory may still hold a previous run's right answer)."""
    return torch.full(shape if isinstance(shape, tuple) else (shape,), math.nan, dtype=torch.float64, device=device)


def _state(torch, device, precision: str):
    return SimpleNamespace(
        dim=DIM, precision=precision, mean=torch.zeros(DIM, dtype=torch.float64, device=device),
        comoment=torch.zeros(DIM, DIM, dtype=torch.float64, device=device),
        counters=torch.zeros(_cuda.counter_slots, dtype=torch.int64, device=device),
        workspace=_poisoned(torch, _cuda.stats_workspace_doubles(DIM), device))


def _accumulate(torch, kernels, device, values: np.ndarray, dtype, precision: str):
    """The kernels' statistics of `values` cast to `dtype` (read through odd strides), and the
    float64 values they saw."""
    x = _strided(torch, values, dtype, device)
    state = _state(torch, device, precision)
    kernels.accumulate(x, state, state.workspace)
    return state, x.to(torch.float64).cpu().numpy()


def _host_stats(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The CPU core's mean and co-moment (upper triangle) of float64 features."""
    mean, comoment = np.zeros(DIM), np.zeros((DIM, DIM))
    _core.accumulate(np.ascontiguousarray(values), 0, mean, comoment)
    return mean, comoment


def _worst(*errors) -> float:
    """The largest error; inf where one is NaN (a value the kernels left unwritten or made NaN must
    fail the check, never vanish in a max)."""
    worst = float(np.max(errors))
    return math.inf if math.isnan(worst) else worst


def _upper(matrix: np.ndarray) -> np.ndarray:
    return matrix[np.triu_indices(matrix.shape[0])]


def _check_statistics(torch, kernels, device, precision, type_name, features) -> tuple[float, float, str]:
    from fastfid._device.routing import COUNT

    state, seen = _accumulate(torch, kernels, device, features, getattr(torch, type_name), precision)
    mean, comoment = state.mean.cpu().numpy(), state.comoment.cpu().numpy()
    count = int(state.counters[COUNT])
    exact_mean, exact_comoment = _host_stats(seen)
    if count != ROWS:
        return math.inf, 1.0, f"count {count}, expected {ROWS}"
    mean_error = np.abs(mean - exact_mean).max() / np.abs(seen).max() / STATS_RTOL
    if precision == "float64":
        comoment_error = np.abs(_upper(comoment - exact_comoment)).max() / np.abs(exact_comoment).max() / STATS_RTOL
        detail = "relative to the largest entry, in units of 1e-12"
    else:
        # The stated bound, entry by entry (the shift of a first batch is its first row).
        shifted = np.abs(seen - seen[0])
        products = "split_bf16" if type_name in ("float16", "bfloat16") else "tf32"
        bound = FAST_BOUND[products] * _upper(shifted.T @ shifted)
        comoment_error = float((np.abs(_upper(comoment - exact_comoment)) / np.maximum(bound, 1e-300)).max())
        detail = "co-moment as a fraction of the fast mode's stated bound; mean in units of 1e-12"
    return _worst(mean_error, comoment_error), 1.0, detail


def _check_merge(torch, kernels, device, features) -> tuple[float, float, str]:
    from fastfid._device.routing import COUNT

    split = 450  # not a tile or slice multiple
    first, _ = _accumulate(torch, kernels, device, features[:split], torch.float64, "float64")
    second, _ = _accumulate(torch, kernels, device, features[split:], torch.float64, "float64")
    kernels.merge(first, second, first.workspace)
    exact_mean, exact_comoment = _host_stats(features)
    count = int(first.counters[COUNT])
    if count != ROWS:
        return math.inf, 1.0, f"count {count}, expected {ROWS}"
    mean_error = np.abs(first.mean.cpu().numpy() - exact_mean).max() / np.abs(features).max()
    comoment_error = np.abs(_upper(first.comoment.cpu().numpy() - exact_comoment)).max() / np.abs(exact_comoment).max()
    return _worst(mean_error, comoment_error) / STATS_RTOL, 1.0, "relative to the largest entry, in units of 1e-12"


def _covariances(rng) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two full-rank covariances of different shapes and scales, and their means."""
    a, b = _features(rng, 400), _features(rng, 400) * 1.7
    return np.cov(a, rowvar=False), np.cov(b, rowvar=False), a.mean(axis=0), b.mean(axis=0)


def _exact(mu1, s1, mu2, s2) -> float:
    """The CPU core's exact distance (Cholesky or pivoted factor, then LAPACK's eigenvalues)."""
    trace_sqrt = _core.trace_sqrt_product(_core.PsdFactor(s1), s2, method="eigh")["trace_sqrt"]
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * trace_sqrt)


def _on_device(torch, device, *arrays):
    return [torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in arrays]


def _check_symmetric(torch, kernels, device, mu1, s1, mu2, s2, rounds: int) -> tuple[float, float, str]:
    """The symmetric route: A = Lᵀ S₂ L as its GEMMs left it (the exact route reads it), and, where the
    certificate certified, the distance within its bound and the tolerance. After 2 rounds the
    certificate must refuse, or hold: a certificate that passes a wrong distance is the failure."""
    from fastfid._device.frechet import TRACE_TOLERANCE, run_symmetric

    exact = _exact(mu1, s1, mu2, s2)
    t_mu1, t_s1, t_mu2, t_s2 = _on_device(torch, device, mu1, s1, mu2, s2)
    run = run_symmetric(kernels, t_mu1, t_s1, t_mu2, t_s2, rounds, TRACE_TOLERANCE,
                        workspace=_poisoned(torch, _cuda.symmetric_workspace_doubles(DIM), device))
    assert run is not None  # it returns None only without a workspace, and it was given one
    record, traces = run.record, float(np.trace(s1) + np.trace(s2))
    offset = _cuda.symmetric_matrix_offset
    a = run.workspace[offset:offset + DIM * DIM].view(DIM, DIM).cpu().numpy()
    lower = run.first.factor.cpu().numpy()  # Σ₁ has a factor: the kernels take side 1
    expected = lower.T @ run.second.scaled.cpu().numpy() @ lower
    a_error = np.abs(np.triu(a - expected)).max() / np.abs(expected).max() / STATS_RTOL
    certified = record["status"] == 0
    error = abs(record["distance"] - exact)
    allowed = min(record["bound"] + CERTIFICATE_SLACK * traces, TRACE_TOLERANCE * traces)
    distance_error = error / allowed if certified else 0.0
    if not math.isfinite(record["distance"]) and certified:
        distance_error = math.inf
    if not certified and rounds > 2 and not kernels.tf32x3:
        # float64 products certify this well-conditioned case in some 14 rounds: a refusal means
        # the iteration or the certificate went wrong (3×TF32 may stop short of the tolerance).
        distance_error = max(record["bound"] / (TRACE_TOLERANCE * traces), 1.0 + 1e-9)
    verdict = "certified" if certified else "not certified: the exact route answers from A"
    return (_worst(a_error, distance_error), 1.0,
            f"A {a_error * STATS_RTOL:.3g} relative; |error| {error:.3g} against an allowed {allowed:.3g} "
            f"(bound {record['bound']:.3g}, {record['iterations']} rounds, {verdict})")


def _check_coupled(torch, kernels, device, mu1, s1, mu2, s2) -> tuple[float, float, str]:
    exact = _exact(mu1, s1, mu2, s2)
    t_mu1, t_s1, t_mu2, t_s2 = _on_device(torch, device, mu1, s1, mu2, s2)
    roots = [_poisoned(torch, (DIM, DIM), device) for _ in range(2)]
    workspace = _poisoned(torch, _cuda.frechet_workspace_doubles(DIM), device)
    record = kernels.frechet_distance(t_mu1, t_s1, t_mu2, t_s2, workspace, roots, 1e-12, 100)
    root = roots[0].cpu().numpy()
    product = s1 @ s2
    root_error = np.abs(root @ root - product).max() / np.abs(product).max() / ROOT_RTOL
    distance_error = abs(record["distance"] - exact) / abs(exact) / FD_RTOL
    return (_worst(root_error, distance_error), 1.0,
            f"distance {distance_error * FD_RTOL:.3g} relative, root {root_error * ROOT_RTOL:.3g} relative")


# --- the record of a passed validation ---------------------------------------------------------------
def describe(kernels: DeviceKernels) -> dict:
    """What identifies the device and the build the kernels run: the record's key and the report's head."""
    from fastfid._version import __version__

    described = dict(kernels.backend.describe(kernels.index))
    described.update(backend=kernels.backend.name, index=kernels.index, fastfid=__version__, build=build_id(),
                     tensor_cores=kernels.tensor_cores, tf32x3=kernels.tf32x3)
    return described


_build_id: str | None = None


def build_id() -> str:
    """The kernels' build: the architectures compiled and a digest of the embedded image."""
    global _build_id
    if _build_id is None:
        digest = hashlib.sha256(_cuda.kernel_image()).hexdigest()[:16] if _cuda.kernel_image_size else "none"
        _build_id = f"{_cuda.kernel_architectures or 'no-nvcc'}/{digest}"
    return _build_id


def records_dir() -> Path:
    from fastfid.files.home import fastfid_home

    return fastfid_home() / "validation"


def record_path(description: dict, prefix: str = "") -> Path:
    """Where a record of this device and build is kept (``prefix``: another kind of record)."""
    key = json.dumps(description, sort_keys=True)
    return records_dir() / f"{prefix}{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


def keep(path: Path, data: dict) -> None:
    """Writes a record as JSON, whole or not at all; a cache that cannot be written is no error."""
    from fastfid.files.atomic import write_atomically

    def write(stream) -> None:
        stream.write(json.dumps(data, indent=1).encode())

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, write)
    except OSError:
        pass


def recorded(description: dict) -> Validation | None:
    """An earlier passed validation of this device and build, if one was recorded (an unreadable
    record is ignored: the validation runs again)."""
    try:
        data = json.loads(record_path(description).read_text())
        if data["description"] != description:
            return None
        checks = [Check(**check) for check in data["checks"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not all(check.passed for check in checks):
        return None
    return Validation(data["device"], description, checks, data["seconds"], cached=True)


def record(validation: Validation) -> None:
    """Keeps a passed validation for later processes (written atomically; a read-only cache is no error)."""
    if validation.failed:
        return
    keep(record_path(validation.description), {
        "device": validation.device, "description": validation.description, "seconds": validation.seconds,
        "checks": [asdict(check) for check in validation.checks], "recorded": time.strftime("%Y-%m-%d %H:%M:%S")})


def warning(check: Check, validation: Validation) -> str:
    """The one warning of a variant that failed its validation on a device."""
    described = validation.description
    gpu = ", ".join(part for part in (described.get("name"), described.get("architecture"),
                                      f"driver {_cuda_version(described.get('driver_version', 0))}") if part)
    fallback = {"merge": "merges", "fd:symmetric": "the distance (exact route)",
                "fd:coupled": "the distance with square roots"}.get(check.guards, "these statistics")
    selftest = "fastfid selftest" + (f" --device {validation.device}" if validation.device.startswith("cuda") else "")
    return (f"fastfid's kernel variant '{check.name}' gave wrong values on {validation.device} ({gpu}): error "
            f"{check.error:.3g} where {check.tolerance:g} is allowed ({check.detail}). fastfid computes "
            f"{fallback} there with torch float64 ops instead (the same numbers, more slowly); the other variants "
            f"passed and are used. Please report this to fastfid's maintainers with the output of `{selftest}`.")


def _cuda_version(code: int) -> str:
    return f"{code // 1000}.{code % 1000 // 10}" if code else "unknown"
