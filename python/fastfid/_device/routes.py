"""Which FD route a device takes (``method="auto"``), chosen by measurement there: the fastest one
that certifies, per (device, d bucket).

The candidates:

* ``newton_schulz``: the kernels' corrected Newton–Schulz on A = Lᵀ S₂ L (DMMA or FMA products,
  3×TF32 where the GPU has no FP64 tensor cores), certified by its bound, else A's eigenvalues;
* ``eigvalsh``: Cholesky and torch's float64 ``eigvalsh`` of A on the device (cuSOLVER);
* ``host``: the covariances copied to the host and the CPU core's exact route (LAPACK).

At the first FD of a bucket on a device, each candidate runs on that call's inputs, timed (a
warm-up first on the device); the fastest that certified is kept, for the process and in a record
beside the validation's (``$FASTFID_HOME/validation``), which ``fastfid selftest`` also writes
(through ``trial``).
Until anything is measured (``FASTFID_VALIDATE=0`` skips the trials too) a GPU with FP64 tensor
cores takes the iteration and one without takes ``eigvalsh``: the accuracy study shows 3×TF32 rarely
certifies realistic statistics. Whatever the choice, the certificate guards every answer: a chosen
Newton–Schulz that does not certify an input hands it to A's eigenvalues. The choice changes the
time, never the number beyond the tolerance.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastfid._device import validation

if TYPE_CHECKING:
    from fastfid._device.routing import DeviceKernels

ROUTES = ("newton_schulz", "eigvalsh", "host")

clock: Callable[[str, int, float], float] | None = None
"""Tests' hook: given (route, d, measured ms), the ms the choice uses (injected timings)."""


@dataclass(frozen=True)
class Trial:
    dim: int
    route: str
    ms: float | None
    certified: bool
    chosen: bool = False


def bucket(d: int) -> int:
    """The d bucket a measurement serves: the power of two at or above d (at least 64)."""
    return max(64, 1 << (d - 1).bit_length())


def prior(kernels: DeviceKernels) -> str:
    """The route before any measurement."""
    return "newton_schulz" if kernels.tensor_cores else "eigvalsh"


def chooses(kernels: DeviceKernels) -> bool:
    """Whether the route is chosen for this device (always on a GPU; under the emulation only when
    asked, since the kernels' tests want the kernels' route)."""
    from fastfid._device.routing import current_emulation

    if kernels.backend.name != "emulated":
        return True
    emulation = current_emulation()
    return emulation is not None and emulation.route_choice


def known(kernels: DeviceKernels, d: int) -> str | None:
    """The measured route of d's bucket on this device (this process's, else the recorded one)."""
    key = bucket(d)
    if key not in kernels.routes and kernels.recorded_routes.get(key) in ROUTES:
        kernels.routes[key] = kernels.recorded_routes[key]
    return kernels.routes.get(key)


def trial(kernels: DeviceKernels, device, d: int, candidates: dict[str, Callable[[], Any]]) -> tuple[list[Trial], Any]:
    """Runs each candidate (route -> a call giving a DeviceFrechet), timed, keeps the fastest that
    certified for d's bucket, and returns the trials and the chosen route's result of this call."""
    trials, results = [], {}
    for route, work in candidates.items():
        if route != "host":
            work()  # a warm-up: module loads, cuSOLVER's workspace, the allocator
        ms, result = _timed(device, work)
        results[route] = result
        certified = not (route == "newton_schulz" and result.exact)
        ms = clock(route, d, ms) if clock is not None else ms
        trials.append(Trial(d, route, ms, certified))
    usable = [t for t in trials if t.certified]
    best = min(usable, key=lambda t: t.ms if t.ms is not None else float("inf"))
    trials = [Trial(t.dim, t.route, t.ms, t.certified, t is best) for t in trials]
    kernels.routes[bucket(d)] = best.route
    _write(kernels, bucket(d), best.route, trials)
    return trials, results[best.route]


def _timed(device, work) -> tuple[float, Any]:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    result = work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - started) * 1000, result


# --- the record ----------------------------------------------------------------------------------------
def _path(kernels: DeviceKernels) -> Path:
    # Keyed by the device's description: an emulated device's record names the emulation, never a GPU.
    return validation.record_path(kernels.description, prefix="routes-")


def _buckets(kernels: DeviceKernels) -> dict:
    """The recorded buckets of this device and build, as stored ({} if none or unreadable)."""
    try:
        data = json.loads(_path(kernels).read_text())
        return dict(data["buckets"]) if data.get("description") == kernels.description else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def recorded(kernels: DeviceKernels) -> dict[int, str]:
    """The recorded route of each d bucket on this device and build (DeviceKernels reads it once)."""
    try:
        return {int(key): entry["route"] for key, entry in _buckets(kernels).items()}
    except (ValueError, KeyError, TypeError):
        return {}


def _write(kernels: DeviceKernels, key: int, route: str, trials: list[Trial]) -> None:
    buckets = _buckets(kernels)
    buckets[str(key)] = {"route": route, "trials": [asdict(t) for t in trials],
                         "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
    validation.keep(_path(kernels), {"description": kernels.description, "buckets": buckets})
