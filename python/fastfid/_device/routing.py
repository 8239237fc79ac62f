"""Which route a device takes: fastfid's kernels (on the system's CUDA driver, or its CPU emulation),
probed once per device, or torch's float64 ops after a failure, warned once per device and cause."""

from __future__ import annotations

import functools
import sys
import threading
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard

from fastfid._device import validation
from fastfid._device.validation import Check, Validation
from fastfid._native import cuda as _cuda

if TYPE_CHECKING:
    import torch


class DeviceState(Protocol):
    """What the statistics kernels read and write of a device state (fastfid._device.stats.DeviceStats)."""

    dim: int
    precision: str
    mean: Any
    comoment: Any
    counters: Any

cuda_compiled: bool = _cuda.kernel_image_size > 0
"""True when this build carries fastfid's CUDA kernels (it was built with nvcc)."""

CudaError = _cuda.CudaError
FEATURE_TYPES: dict[str, int] = dict(_cuda.feature_types)
"""The kernels' code of each feature type, by torch dtype name (read from the C++ enum)."""
COUNT, SKIPPED, FLAG = (_cuda.counters[name] for name in ("count", "skipped_batches", "batch_flag"))
"""The slots of a device state's counters (read from the C++ enum)."""
STATS_VARIANTS: dict[str, int] = dict(_cuda.stats_variants)
STATUS: dict[str, int] = dict(_cuda.statuses)
"""The distance kernels' result codes, by name (read from the C++ enum)."""


def torch_module():
    import torch

    return torch


# --- which route a device takes ---------------------------------------------------------------------
@dataclass
class Emulation:
    """The emulated CUDA driver in use (``fastfid.testing.emulated_cuda``): CPU tensors take the
    device path on emulated device ``device``, with launches on ``stream`` (a handle)."""

    backend: Any
    device: int = 0
    stream: int = 0
    validate: bool | frozenset[str] = False
    """Validate the kernels at first use as on a GPU: True, or only the checks guarding these routes
    (a whole validation takes some 15 s on the emulation, so it is off unless asked)."""
    route_choice: bool = False
    """Choose the FD route as on a GPU (fastfid._device.routes); off, the kernels' route always."""


_emulation: Emulation | None = None
_lock = threading.Lock()
_kernels: dict = {}       # (backend name, device index) -> DeviceKernels, probed
_given_up: dict = {}      # (backend name, device index) -> the cause, after a failure
_warned: set = set()      # (backend name, device index, cause kind) already warned about


def emulating() -> bool:
    return _emulation is not None


def current_emulation() -> Emulation | None:
    return _emulation


def set_emulation(emulation: Emulation | None) -> None:
    """Start (or, with None, end) the emulation: what was known of the emulated devices is dropped."""
    global _emulation
    _emulation = emulation
    forget("emulated")


def forget(backend_name: str) -> None:
    """Drop what is known of a backend's devices (a new emulation starts afresh)."""
    with _lock:
        for known in (_kernels, _given_up):
            for key in [key for key in known if key[0] == backend_name]:
                del known[key]
        _warned.difference_update({key for key in _warned if key[0] == backend_name})


def takes_device_path(device) -> bool:
    """True for a torch device whose tensors take the device path (CUDA; CPU under emulation)."""
    return device.type != "cpu" or _emulation is not None


def is_device_tensor(x: object) -> TypeGuard[torch.Tensor]:
    """True for a torch tensor that takes the device path (the caller has imported torch)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor) and takes_device_path(x.device)


class DeviceKernels:
    """fastfid's kernels on one device of a backend: the native calls with the device's index and
    torch's current stream filled in."""

    def __init__(self, backend, index: int, *, tensor_cores: bool | None = None, tf32x3: bool | None = None):
        self.backend = backend
        self.index = index
        # The float64 kernels' variant: FP64 tensor cores where the GPU has them (asked once), else FMAs.
        self.tensor_cores = backend.fp64_tensor_cores(index) if tensor_cores is None else tensor_cores
        # The symmetric route's Newton–Schulz products: 3×TF32 where the GPU has no FP64 tensor cores
        # (every GPU fastfid's kernels run on has TF32 ones), float64 with them.
        self.tf32x3 = not self.tensor_cores if tf32x3 is None else tf32x3
        self.validation: Validation | None = None  # None: not validated (FASTFID_VALIDATE=0, emulation)
        self.untrusted: dict[str, Check] = {}  # guarded route -> the check it failed on this device
        self.routes: dict[int, str] = {}  # d bucket -> the FD route measured fastest here (routes.py)

    def trusts(self, guard: str) -> bool:
        """Whether a route's kernel variant passed (or skipped) this device's validation: "merge",
        "fd:symmetric", "fd:coupled", or validation.stats_guard(precision, feature type)."""
        return guard not in self.untrusted

    @functools.cached_property
    def description(self) -> dict:
        """What identifies this device and build in records (validation.describe), asked once."""
        return validation.describe(self)

    @functools.cached_property
    def recorded_routes(self) -> dict[int, str]:
        """The FD routes recorded for this device and build, by d bucket (routes.py), read once."""
        from fastfid._device import routes

        return routes.recorded(self)

    @property
    def key(self) -> tuple:
        return (self.backend.name, self.index)

    def stream(self) -> int:
        """The handle of the caller's current stream (torch's, or the emulation's)."""
        if self.backend.name == "emulated":
            return _emulation.stream if _emulation is not None else 0
        return torch_module().cuda.current_stream(self.index).cuda_stream

    def accumulate(self, x, state: DeviceState, workspace) -> None:
        self.backend.accumulate(
            x.data_ptr(), type_code(x), x.shape[0], x.shape[1], x.stride(0), x.stride(1),
            mean=state.mean.data_ptr(), comoment=state.comoment.data_ptr(), counters=state.counters.data_ptr(),
            workspace=workspace.data_ptr(), variant=self.stats_variant(state.precision), device=self.index,
            stream=self.stream())

    def stats_variant(self, precision: str) -> int:
        """stats_driver.hpp's StatsVariant: exact float64 (FMAs, or the FP64 tensor cores where the GPU has
        them), or the opt-in fast mode."""
        if precision == "fast":
            return STATS_VARIANTS["fast"]
        return STATS_VARIANTS["fp64_tensor_cores" if self.tensor_cores else "fma"]

    def merge(self, into: DeviceState, other: DeviceState, workspace) -> None:
        self.backend.merge(
            into.dim, mean=into.mean.data_ptr(), comoment=into.comoment.data_ptr(),
            counters=into.counters.data_ptr(), workspace=workspace.data_ptr(), other_mean=other.mean.data_ptr(),
            other_comoment=other.comoment.data_ptr(), other_counters=other.counters.data_ptr(), device=self.index,
            stream=self.stream())

    def frechet_distance(self, mu1, sigma1, mu2, sigma2, workspace, roots, tolerance, max_iterations) -> dict:
        return self.backend.frechet_distance(
            0 if mu1 is None else mu1.data_ptr(), sigma1.data_ptr(), 0 if mu2 is None else mu2.data_ptr(),
            sigma2.data_ptr(), sigma1.shape[0], workspace=workspace.data_ptr(),
            sqrt_out=roots[0].data_ptr() if roots else 0, inverse_sqrt_out=roots[1].data_ptr() if roots else 0,
            tolerance=tolerance, max_iterations=max_iterations, tensor_cores=self.tensor_cores, device=self.index,
            stream=self.stream())

    def order_after(self, stream: int | None) -> int:
        """Make the current stream wait for work enqueued earlier on `stream` (where streams cross);
        returns the current stream."""
        current = self.stream()
        if stream is not None and stream != current:
            self.backend.stream_wait(self.index, current, stream)
        return current


def kernels_for(device) -> DeviceKernels | None:
    """fastfid's kernels for a torch device, probed once per device, or None for the torch route
    (after a failure, or without kernels: warned once per device and cause)."""
    if _emulation is not None and device.type == "cpu":
        backend, index = _emulation.backend, _emulation.device
    elif device.type == "cuda":
        if not cuda_compiled:
            warn_once(("cuda", None, "no kernels"),
                       f"this fastfid build has no CUDA kernels (built without nvcc): statistics and distances on "
                       f"{device} use torch float64 ops instead, which is slower; see the README's 'Building' section")
            return None
        backend = _cuda.system_backend()
        index = device.index if device.index is not None else torch_module().cuda.current_device()
    else:
        warn_once((device.type, None, "no kernels"),
                   f"fastfid has no kernels for {device.type} devices: statistics and distances on {device} use "
                   "torch float64 ops instead, which is slower")
        return None
    key = (backend.name, index)
    with _lock:
        if key in _given_up:
            return None
        kernels = _kernels.get(key)
        if kernels is not None and kernels.backend is backend:
            return kernels
        try:
            backend.probe(index)
        except CudaError as error:
            _give_up_locked(key, device, error, "the probe of fastfid's kernels")
            return None
        kernels = DeviceKernels(backend, index)
        if _validating(backend):
            try:
                _validate_locked(kernels, device)
            except CudaError as error:
                _give_up_locked(key, device, error, "the validation of fastfid's kernels")
                return None
        _kernels[key] = kernels
        return kernels


def _validating(backend) -> bool:
    if not validation.enabled():
        return False
    return backend.name != "emulated" or (_emulation is not None and _emulation.validate is not False)


def _validate_locked(kernels: DeviceKernels, device) -> None:
    """Validates the kernels on the device (or reads a record of an earlier pass); each variant that
    failed is untrusted there, warned once."""
    only = _emulation.validate if kernels.backend.name == "emulated" and _emulation is not None \
        and not isinstance(_emulation.validate, bool) else None
    outcome = validation.recorded(kernels.description) if only is None else None
    if outcome is None:
        outcome = validation.validate(kernels, device, only=only)
        if only is None:
            validation.record(outcome)
    kernels.validation = outcome
    for check in outcome.failed:
        kernels.untrusted.setdefault(check.guards, check)
        warn_once(kernels.key + ("variant", check.guards), validation.warning(check, outcome))


def give_up(kernels: DeviceKernels, device, error: BaseException, operation: str) -> None:
    """After a failed call: the device takes the torch route from now on (warned once)."""
    with _lock:
        _give_up_locked(kernels.key, device, error, operation)


def attempt(kernels: DeviceKernels, device, operation: str, call) -> bool:
    """Runs call() on the kernels: False when the driver refused it (the device then takes the torch
    route, warned once); an asynchronous fault is raised."""
    try:
        call()
        return True
    except CudaError as error:
        if error.asynchronous:
            raise
        give_up(kernels, device, error, operation)
        return False


def _give_up_locked(key, device, error, operation) -> None:
    _given_up[key] = error
    _kernels.pop(key, None)
    warn_once(key + ("failure",),
               f"fastfid's CUDA kernels cannot run on {device} ({operation} failed: {error}); statistics and "
               f"distances there use torch float64 ops instead, with the same numbers, more slowly")


def warn_once(key, message: str) -> None:
    if key in _warned:
        return
    _warned.add(key)
    warnings.warn(message, RuntimeWarning, stacklevel=4)


PRECISIONS = ("float64", "fast")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    return precision


def workspace(kernels: DeviceKernels, doubles: int, device):
    """Scratch for one call from torch's caching allocator, or None when the device has no memory
    for it (the call then takes the torch route, warned once)."""
    torch = torch_module()
    try:
        return torch.empty(doubles, dtype=torch.float64, device=device)
    except torch.OutOfMemoryError as error:
        warn_once(kernels.key + ("memory",),
                   f"no memory on {device} for the {doubles * 8 / 2**20:.0f} MiB workspace of fastfid's kernels "
                   f"({error}); this call uses torch float64 ops instead")
        return None




def type_code(x) -> int | None:
    """The kernels' code of a tensor's dtype (None: not a feature type)."""
    return FEATURE_TYPES.get(str(x.dtype).removeprefix("torch."))
