"""Statistics and Fréchet distances where the features are: on a torch device (CUDA).

Two implementations of one contract:

* fastfid's kernels (csrc/cuda), driven by host code in ``fastfid._cuda`` through the CUDA driver
  API: the system's ``libcuda.so.1`` (no CUDA runtime is linked, so they work beside any CUDA
  build of torch), or the CPU emulation of the driver, under which the same host code runs the
  kernels on CPU tensors (``fastfid.testing.emulated_cuda()``, and the tests);
* torch ops in float64 on the device: the fallback, the statistics' steps as the kernels take them
  and the distance by coupled Newton–Schulz on Σ₁Σ₂ (the kernels' route for FD gradients).

Before fastfid's kernels are trusted on a device, a probe loads them there and runs one. If the
probe or a later call fails (no driver, a driver too old for the kernels, no kernel image for the
GPU, a launch refused, no memory for the workspace), that device goes to the torch route with one
``RuntimeWarning`` naming the cause, and the call gives the same number. An error reported at a
synchronisation (a kernel that faulted on the device) is raised: the device cannot be trusted.

Validation happens here, before any address reaches native code. torch is imported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeGuard

if TYPE_CHECKING:
    import torch

import math
import sys
import threading
import warnings
from dataclasses import dataclass

from fastfid import _cuda

cuda_compiled: bool = _cuda.kernel_image_size > 0
"""True when this build carries fastfid's CUDA kernels (it was built with nvcc)."""

CudaError = _cuda.CudaError

# Codes of device_types.hpp's FeatureType, by torch dtype name.
_FEATURE_TYPE_CODES = {"float16": 0, "bfloat16": 1, "float32": 2, "float64": 3}
# Counter slots of device_types.hpp.
_COUNT, _SKIPPED, _FLAG = 0, 1, 2
# Status codes of frechet_kernels.cuh.
_STATUS_OK, _STATUS_INVALID, _STATUS_NOT_FINITE, _STATUS_ZERO, _STATUS_NEEDS_EXACT, _STATUS_NO_FACTOR = range(6)

TRACE_TOLERANCE = 1e-8
"""The device route's default tolerance: the bound on the FD's error must be ≤ this × (tr Σ₁ + tr Σ₂),
else the exact route (float64 eigenvalues) gives the number."""


def _torch():
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


_emulation: Emulation | None = None
_lock = threading.Lock()
_kernels: dict = {}       # (backend name, device index) -> DeviceKernels, probed
_given_up: dict = {}      # (backend name, device index) -> the cause, after a failure
_warned: set = set()      # (backend name, device index, cause kind) already warned about


def emulating() -> bool:
    return _emulation is not None


def _forget(backend_name: str) -> None:
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

    @property
    def key(self) -> tuple:
        return (self.backend.name, self.index)

    def stream(self) -> int:
        """The handle of the caller's current stream (torch's, or the emulation's)."""
        if self.backend.name == "emulated":
            return _emulation.stream if _emulation is not None else 0
        return _torch().cuda.current_stream(self.index).cuda_stream

    def accumulate(self, x, state: "DeviceStats", workspace) -> None:
        self.backend.accumulate(
            x.data_ptr(), _type_code(x), x.shape[0], x.shape[1], x.stride(0), x.stride(1),
            mean=state.mean.data_ptr(), comoment=state.comoment.data_ptr(), counters=state.counters.data_ptr(),
            workspace=workspace.data_ptr(), variant=self.stats_variant(state.precision), device=self.index,
            stream=self.stream())

    def stats_variant(self, precision: str) -> int:
        """stats_driver.hpp's StatsVariant: exact float64 (FMAs, or the FP64 tensor cores where the GPU has
        them), or the opt-in fast mode."""
        return 2 if precision == "fast" else int(self.tensor_cores)

    def merge(self, into: "DeviceStats", other: "DeviceStats", workspace) -> None:
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
            _warn_once(("cuda", None, "no kernels"),
                       f"this fastfid build has no CUDA kernels (built without nvcc): statistics and distances on "
                       f"{device} use torch float64 ops instead, which is slower; see the README's 'Building' section")
            return None
        backend = _cuda.system_backend()
        index = device.index if device.index is not None else _torch().cuda.current_device()
    else:
        _warn_once((device.type, None, "no kernels"),
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
        kernels = _kernels[key] = DeviceKernels(backend, index)
        return kernels


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
    _warn_once(key + ("failure",),
               f"fastfid's CUDA kernels cannot run on {device} ({operation} failed: {error}); statistics and "
               f"distances there use torch float64 ops instead, with the same numbers, more slowly")


def _warn_once(key, message: str) -> None:
    if key in _warned:
        return
    _warned.add(key)
    warnings.warn(message, RuntimeWarning, stacklevel=4)


PRECISIONS = ("float64", "fast")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    return precision


def _workspace(kernels: DeviceKernels, doubles: int, device):
    """Scratch for one call from torch's caching allocator, or None when the device has no memory
    for it (the call then takes the torch route, warned once)."""
    torch = _torch()
    try:
        return torch.empty(doubles, dtype=torch.float64, device=device)
    except torch.OutOfMemoryError as error:
        _warn_once(kernels.key + ("memory",),
                   f"no memory on {device} for the {doubles * 8 / 2**20:.0f} MiB workspace of fastfid's kernels "
                   f"({error}); this call uses torch float64 ops instead")
        return None


def _type_code(x) -> int | None:
    return _FEATURE_TYPE_CODES.get(str(x.dtype).removeprefix("torch."))


def feature_tensor(x, dim: int, device, name: str = "features"):
    """Check a batch of features for the device path; returns it as a torch tensor on `device`."""
    torch = _torch()
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)  # numpy or lists: copied to the device below
    if _type_code(x) is None:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D (samples, dim), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (0 samples)")
    if x.shape[1] != dim:
        raise ValueError(f"{name} have dim {x.shape[1]}, the statistics have dim {dim}")
    if x.device != device:
        x = x.to(device)
    return x.detach()


class DeviceStats:
    """(count, mean, co-moment) as float64 tensors on a torch device, updated without
    synchronising with the host: the count lives on the device too.

    A batch holding NaN/Inf is left out on the device (the rest of the state is untouched) and
    reported by the next read, which raises ValueError once.
    """

    def __init__(self, dim: int, device, kernels="auto", precision: str = "float64"):
        torch = _torch()
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"statistics on {device} need a CUDA GPU that torch can use, and "
                               "torch.cuda.is_available() is False here; use the CPU (no device argument)")
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())  # pin it: later updates compare devices
        if kernels == "auto":
            kernels = kernels_for(device)
        self.dim = dim
        self.device = device
        self.kernels: DeviceKernels | None = kernels  # None: torch ops
        self.precision = check_precision(precision)  # "fast": the kernels' opt-in tensor-core products
        self.mean = torch.zeros(dim, dtype=torch.float64, device=device)
        self.comoment = torch.zeros(dim, dim, dtype=torch.float64, device=device)  # upper triangle valid
        self.counters = torch.zeros(_cuda.counter_slots, dtype=torch.int64, device=device)
        self._workspace: Any = None  # one batch's scratch (a tensor), kept between updates
        self._stream: int | None = None  # where the kernels last enqueued work on this state

    @classmethod
    def over(cls, mean, comoment, count) -> "DeviceStats":
        """A state over existing tensors (no copy): a mean, a co-moment and a 0-d int64 count."""
        state = cls.__new__(cls)
        state.dim, state.device = mean.shape[0], mean.device
        state.kernels = kernels_for(mean.device)
        state.mean, state.comoment, state.precision = mean, comoment, "float64"
        state.counters = _torch().zeros(_cuda.counter_slots, dtype=count.dtype, device=mean.device)
        state.counters[_COUNT] = count
        state._workspace, state._stream = None, None
        return state

    # --- accumulation --------------------------------------------------------------------------
    def update(self, x) -> None:
        x = feature_tensor(x, self.dim, self.device)
        kernels = self.kernels
        if kernels is not None and self._has_workspace(kernels):
            def accumulate():
                self._enter_stream(kernels)
                kernels.accumulate(x, self, self._workspace)

            if attempt(kernels, self.device, "accumulate", accumulate):
                return
            self.kernels = None
            self.counters[_FLAG] = 0  # a batch's first launch may have run: the state is otherwise whole
        self._update_with_torch(x)

    def _has_workspace(self, kernels: DeviceKernels) -> bool:
        """The scratch of a batch or a merge, kept between calls (False: no memory for it now)."""
        if self._workspace is None:
            self._workspace = _workspace(kernels, _cuda.stats_workspace_doubles(self.dim), self.device)
        return self._workspace is not None

    def _enter_stream(self, kernels: DeviceKernels) -> None:
        """Order this call after the state's last kernels when the caller's stream has changed."""
        stream = kernels.order_after(self._stream)
        if self._stream is not None and stream != self._stream and self.device.type == "cuda" \
                and self._workspace is not None:
            self._workspace.record_stream(_torch().cuda.ExternalStream(stream, device=self.device))
        self._stream = stream

    def _update_with_torch(self, x) -> None:
        """The kernels' steps (stats_kernels.cuh) in torch ops, still without a host sync."""
        torch = _torch()
        empty = self.counters[_COUNT] == 0
        shift = torch.where(empty, x[0].to(torch.float64), self.mean)
        centred = x.to(torch.float64) - shift
        sums = centred.sum(dim=0)
        batch = centred.T @ centred
        bad = ~torch.isfinite(sums).all() | ~torch.isfinite(batch).all()
        total = (self.counters[_COUNT] + x.shape[0]).to(torch.float64)
        self.comoment.copy_(torch.where(bad, self.comoment, self.comoment + batch - torch.outer(sums, sums) / total))
        self.mean.copy_(torch.where(bad, self.mean, shift + sums / total))
        self.counters[_SKIPPED] += bad.to(torch.int64)
        self.counters[_COUNT] += torch.where(bad, 0, x.shape[0])

    def merge(self, other: "DeviceStats") -> None:
        kernels = self.kernels
        if kernels is not None and self._has_workspace(kernels):
            def merge():
                kernels.order_after(other._stream)
                self._enter_stream(kernels)
                kernels.merge(self, other, self._workspace)

            if attempt(kernels, self.device, "merge", merge):
                return
            self.kernels = None
        torch = _torch()
        na, nb = self.counters[_COUNT].to(torch.float64), other.counters[_COUNT].to(torch.float64)
        total = torch.clamp(na + nb, min=1.0)  # both empty: nothing moves
        delta = other.mean - self.mean
        self.comoment += other.comoment + torch.outer(delta, delta) * (na * nb / total)
        self.mean += delta * (nb / total)
        self.counters[:_FLAG] += other.counters[:_FLAG]

    def copy(self) -> "DeviceStats":
        clone = DeviceStats.__new__(DeviceStats)
        clone.dim, clone.device, clone.kernels, clone.precision = self.dim, self.device, self.kernels, self.precision
        clone.mean, clone.comoment, clone.counters = self.mean.clone(), self.comoment.clone(), self.counters.clone()
        clone._workspace, clone._stream = None, self._stream
        return clone

    # --- reads (these synchronise) -------------------------------------------------------------
    def count(self) -> int:
        try:
            count, skipped = (int(v) for v in self.counters[:_FLAG].tolist())
        except RuntimeError as error:  # torch's report of an earlier kernel's fault, at this sync
            raise RuntimeError(f"fastfid: a CUDA error surfaced when reading the statistics on {self.device}; it "
                               f"comes from work enqueued earlier on this stream (fastfid's accumulate or merge "
                               f"kernels, or another library's): {error}") from error
        if skipped:
            self.counters[_SKIPPED] = 0  # reported once
            raise ValueError(
                f"{skipped} batch(es) given to update() contained NaN or Inf and were left out (found on the device, "
                f"which is not waited for at update time); the statistics hold the other {count} samples")
        return count

    def symmetric_comoment(self):
        upper = self.comoment.triu()
        return upper + upper.triu(1).T


# --- the Fréchet distance on a device ------------------------------------------------------------
@dataclass(frozen=True)
class DeviceFrechet:
    """FD by Newton–Schulz on M = Σ₁Σ₂, with on request √M and M^−½ (tensors on the device)."""

    distance: float
    """‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr √M, unclamped (0 mean term when the means were not given)."""
    trace_sqrt: float
    mean_term: float
    iterations: int
    step: float
    """‖Y_{k+1} − Y_k‖_F / ‖Y_k‖_F that led to the returned iterate (the stopping test)."""
    converged: bool
    sqrt: Any = None
    inverse_sqrt: Any = None
    bound: float = 0.0
    """A bound on |the distance's error| from the corrected iteration (0: the exact route)."""
    exact: bool = False
    """True when the float64 eigenvalues gave the trace term."""


def square_tensor(x, device, name: str):
    """A float64, C-contiguous (d, d) tensor on `device` (its values are checked where it is used)."""
    torch = _torch()
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if x.is_complex() or not x.is_floating_point():
        raise TypeError(f"{name} must be real floating point, got {x.dtype}")
    if x.dim() != 2 or x.shape[0] != x.shape[1]:
        raise ValueError(f"{name} must be a square (d, d) covariance matrix, got shape {tuple(x.shape)}")
    return x.detach().to(device=device, dtype=torch.float64).contiguous()


def vector_tensor(x, device, name: str):
    torch = _torch()
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if x.is_complex() or not x.is_floating_point():
        raise TypeError(f"{name} must be real floating point, got {x.dtype}")
    x = torch.atleast_1d(x.detach()).to(device=device, dtype=torch.float64).contiguous()
    if x.dim() != 1:
        raise ValueError(f"{name} must be a 1-D mean vector, got shape {tuple(x.shape)}")
    return x


def _covariance_problem(name: str, nonfinite: float, asymmetry: float, largest: float, smallest: float) -> str | None:
    """The CPU core's checks of a covariance (trace_sqrt.cpp), from its summary numbers."""
    if nonfinite:
        return f"{name} contains NaN or Inf values"
    if asymmetry > 1e-5 * max(largest, 1e-300):
        return f"{name} is not symmetric: |S - S^T| reaches {asymmetry:.3g} against a largest variance of {largest:.3g}"
    if smallest < 0:
        return f"{name} has a negative variance on its diagonal: it is not a covariance"
    return None


def check_covariance(sigma, name: str) -> None:
    """The CPU core's checks of a covariance on its device (a few reductions and one sync)."""
    torch = _torch()
    finite = bool(torch.isfinite(sigma).all())
    diagonal = sigma.diagonal()
    problem = _covariance_problem(
        name, not finite, float((sigma - sigma.T).abs().max()) if finite else 0.0,
        float(diagonal.abs().max()) if finite else 0.0, float(diagonal.min()) if finite else 0.0)
    if problem:
        raise ValueError(problem)


@dataclass
class PreparedCovariance:
    """A covariance made ready for the symmetric route on its device: divided by a power of two near
    its largest variance (exact: no overflow or underflow anywhere in float64's range), and that
    quotient's lower Cholesky factor with torch's info (≠ 0: none), unless it was not asked for."""

    unit: Any  # 0-d tensor
    scaled: Any
    factor: Any = None
    info: Any = None

    @classmethod
    def of(cls, sigma, *, factor: bool = True) -> "PreparedCovariance":
        torch = _torch()
        largest = sigma.diagonal().abs().amax()
        exponent = torch.frexp(largest).exponent
        usable = torch.isfinite(largest) & (largest > 0)
        unit = torch.where(usable, torch.ldexp(torch.ones_like(largest), exponent - 1), torch.ones_like(largest))
        prepared = cls(unit, (sigma / unit).contiguous())
        if factor:
            lower, info = torch.linalg.cholesky_ex(prepared.scaled)  # without waiting for the device
            prepared.factor, prepared.info = lower.contiguous(), info.contiguous()
        return prepared

    def has_factor(self) -> bool:
        """Whether the Cholesky factor exists (reads the info: a sync)."""
        return self.info is not None and int(self.info) == 0


def frechet(mu1, sigma1, mu2, sigma2, kernels: DeviceKernels | None, *, tolerance: float = 1e-12,
            max_iterations: int = 100, return_roots: bool = False,
            trace_tolerance: float = TRACE_TOLERANCE, prepared1: PreparedCovariance | None = None) -> DeviceFrechet:
    """FD on the covariances' device (float64 tensors from square_tensor / vector_tensor; the means
    may be None) by fastfid's kernels, or by torch ops.

    The kernels' FD is the symmetric route: scaled Newton–Schulz on A = Lᵀ S₂ L, a float64 correction
    and a bound on the result's error, with one read of the result at the end; where the bound exceeds
    ``trace_tolerance`` × (tr Σ₁ + tr Σ₂) (or neither covariance has a Cholesky factor), the float64
    eigenvalues of A on the device. ``prepared1``: Σ₁ already prepared (a Reference's, with a factor
    known to exist), reused. With ``return_roots`` (FD gradients), coupled Newton–Schulz on Σ₁Σ₂ to
    the relative step ``tolerance``, which also gives (Σ₁Σ₂)^±½."""
    torch = _torch()
    if not (isinstance(max_iterations, int) and max_iterations >= 0):
        raise ValueError(f"max_iterations must be a non-negative integer, got {max_iterations!r}")
    if not tolerance > 0:
        raise ValueError(f"tolerance must be positive, got {tolerance!r}")
    d, device = sigma1.shape[0], sigma1.device
    roots = [torch.empty(d, d, dtype=torch.float64, device=device) for _ in range(2)] if return_roots else []
    if not trace_tolerance > 0:
        raise ValueError(f"trace_tolerance must be positive, got {trace_tolerance!r}")
    if kernels is not None:
        results: list[DeviceFrechet] = []  # empty when there was no memory for the workspace

        def native():
            if roots:
                workspace = _workspace(kernels, _cuda.frechet_workspace_doubles(d), device)
                if workspace is not None:
                    results.append(_from_record(kernels.frechet_distance(mu1, sigma1, mu2, sigma2, workspace, roots,
                                                                         tolerance, max_iterations), roots))
            else:
                result = _symmetric_route(kernels, mu1, sigma1, mu2, sigma2, max_iterations, trace_tolerance,
                                          prepared1)
                results.extend([result] if result is not None else [])

        if attempt(kernels, device, "frechet_distance", native) and results:
            return results[0]
    return _frechet_with_torch(mu1, sigma1, mu2, sigma2, tolerance, max_iterations, roots)


def _symmetric_route(kernels: DeviceKernels, mu1, sigma1, mu2, sigma2, max_iterations, trace_tolerance,
                     prepared1: PreparedCovariance | None = None) -> DeviceFrechet | None:
    """The kernels' symmetric route (None: no memory for it). Each covariance is divided by a power of
    two near its largest variance and factored by torch's Cholesky (cuSOLVER on a GPU), without
    waiting: the kernels pick a side that has a factor. A prepared Σ₁ with a factor spares Σ₂'s."""
    torch = _torch()
    d, device = sigma1.shape[0], sigma1.device
    workspace = _workspace(kernels, _cuda.symmetric_workspace_doubles(d), device)
    if workspace is None:
        return None
    first = prepared1 if prepared1 is not None else PreparedCovariance.of(sigma1)
    second = PreparedCovariance.of(sigma2, factor=prepared1 is None)
    # Without its own factor, side 2 names side 1's: the kernels take side 1's (info 0), never side 2's.
    factor2, info2 = (second.factor, second.info) if second.factor is not None else (first.factor, first.info)
    scaled = [first.scaled, second.scaled]
    unit_pair = torch.stack([first.unit, second.unit]).contiguous()
    record = kernels.backend.frechet_symmetric(
        0 if mu1 is None else mu1.data_ptr(), sigma1.data_ptr(), 0 if mu2 is None else mu2.data_ptr(),
        sigma2.data_ptr(), scaled1=first.scaled.data_ptr(), scaled2=second.scaled.data_ptr(),
        factor1=first.factor.data_ptr(), factor2=factor2.data_ptr(), info1=first.info.data_ptr(),
        info2=info2.data_ptr(), units=unit_pair.data_ptr(), dim=d, workspace=workspace.data_ptr(),
        tolerance=trace_tolerance, max_iterations=max_iterations, tensor_cores=kernels.tensor_cores,
        tf32x3=kernels.tf32x3, device=kernels.index, stream=kernels.stream())
    if record["status"] not in (_STATUS_NEEDS_EXACT, _STATUS_NO_FACTOR):
        return _from_record(record, [])
    # The exact route: the eigenvalues of A (left in the workspace), or, with no factor on either
    # side, of S₁^½ S₂ S₁^½ from the eigen decomposition of S₁.
    if record["status"] == _STATUS_NEEDS_EXACT:
        offset = _cuda.symmetric_matrix_offset
        a = workspace[offset:offset + d * d].view(d, d)
    else:
        values, vectors = torch.linalg.eigh(scaled[0])
        root = (vectors * values.clamp(min=0).sqrt()) @ vectors.T
        a = root @ scaled[1] @ root
        a = 0.5 * (a + a.T)
    u1, u2 = unit_pair.tolist()
    trace_sqrt = float(torch.linalg.eigvalsh(a).clamp(min=0).sqrt().sum()) * math.sqrt(u1) * math.sqrt(u2)
    distance = record["mean_term"] + record["trace1"] + record["trace2"] - 2.0 * trace_sqrt
    return DeviceFrechet(distance, trace_sqrt, record["mean_term"], record["iterations"], _step(record), True,
                         exact=True)


def _step(record: dict) -> float:
    return record["step"] if record["step"] < 1.7976931348623157e308 else math.inf


def _from_record(record: dict, roots: list) -> DeviceFrechet:
    if record["status"] == _STATUS_INVALID:
        for side in ("1", "2"):
            problem = _covariance_problem(f"sigma{side}", record["nonfinite" + side], record["asymmetry" + side],
                                          record["largest_variance" + side], record["smallest_variance" + side])
            if problem:
                raise ValueError(problem)
        raise ValueError("the means contain NaN or Inf values")
    if record["status"] == _STATUS_NOT_FINITE:
        raise ValueError("sigma1 @ sigma2 is not finite")
    if record["status"] == _STATUS_ZERO and roots:
        raise ValueError("sigma1 @ sigma2 is 0: it has no inverse square root")
    sqrt, inverse_sqrt = roots or (None, None)
    return DeviceFrechet(record["distance"], record["trace_sqrt"], record["mean_term"], record["iterations"],
                         _step(record), record["converged"], sqrt, inverse_sqrt, bound=record["bound"])


def _unit(largest: float) -> float:
    """The power of two at or below `largest` (1 for 0): fd_begin's choice in frechet_kernels.cuh."""
    return math.ldexp(1.0, math.frexp(largest)[1] - 1) if largest > 0 else 1.0


def _frechet_with_torch(mu1, sigma1, mu2, sigma2, tolerance, max_iterations, roots) -> DeviceFrechet:
    """frechet_kernels.cuh in torch ops: the same checks, iteration, stopping rule and outputs."""
    torch = _torch()
    for name, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        check_covariance(sigma, name)
    mean_term = 0.0
    if mu1 is not None:
        if not bool(torch.isfinite(mu1).all() & torch.isfinite(mu2).all()):
            raise ValueError("the means contain NaN or Inf values")
        diff = mu1 - mu2
        mean_term = float(diff @ diff)
    traces = float(sigma1.trace()) + float(sigma2.trace())
    d = sigma1.shape[0]
    # The kernels' units: powers of two near each largest variance, so that the product neither
    # overflows nor underflows anywhere in float64's range (exact scalings).
    units = [_unit(float(sigma.diagonal().abs().max())) for sigma in (sigma1, sigma2)]
    m = (sigma1 / units[0]) @ (sigma2 / units[1])
    scale = float(torch.linalg.matrix_norm(m))
    if not math.isfinite(scale):
        raise ValueError("sigma1 @ sigma2 is not finite")
    if scale == 0:
        if roots:
            raise ValueError("sigma1 @ sigma2 is 0: it has no inverse square root")
        return DeviceFrechet(mean_term + traces, 0.0, mean_term, 0, 0.0, True)
    eye = torch.eye(d, dtype=torch.float64, device=m.device)
    y, z = m / scale, eye.clone()
    best_y, best_z, best_step = y, z, math.inf
    converged, iterations = False, 0
    for iterations in range(1, max_iterations + 1):
        t = 1.5 * eye - 0.5 * (z @ y)
        y, z, previous = y @ t, t @ z, y
        step = float(torch.linalg.matrix_norm(y - previous) / torch.linalg.matrix_norm(previous))
        if not math.isfinite(step):
            break
        if step <= best_step:
            best_y, best_z, best_step = y, z, step
        elif step > 1e3 * best_step:
            break
        if step <= tolerance:
            converged = True
            break
    root_scale = math.sqrt(units[0]) * math.sqrt(units[1]) * math.sqrt(scale)
    if roots:
        roots[0].copy_(best_y * root_scale)
        roots[1].copy_(best_z / root_scale)
    trace_sqrt = root_scale * max(float(best_y.diagonal().sum()), 0.0)
    return DeviceFrechet(mean_term + traces - 2.0 * trace_sqrt, trace_sqrt, mean_term, iterations, best_step,
                         converged, *(roots or (None, None)))
