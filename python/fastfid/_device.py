"""Statistics and Fréchet distances where the features are: on a torch device (CUDA).

Two implementations of one contract:

* the native kernels (``fastfid._cuda``, csrc/cuda): float64 accumulation and Newton–Schulz on
  the tensors' memory, enqueued on torch's current stream. The SIMT emulation
  (``fastfid._simt``) exposes the same functions over host memory, so the tests drive this module
  through the very kernels with CPU tensors;
* torch ops in float64 on the device: the fallback when fastfid was built without nvcc (a
  one-time warning says so), mirroring the kernels step by step.

Validation happens here, before any address reaches native code. torch is imported lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeGuard

if TYPE_CHECKING:
    import torch

import importlib
import importlib.util
import math
import warnings
from dataclasses import dataclass

cuda_compiled: bool = importlib.util.find_spec("fastfid._cuda") is not None
"""True when this build contains the CUDA kernels (``fastfid._cuda``)."""

# Codes of device_types.hpp's FeatureType, by torch dtype name.
_FEATURE_TYPE_CODES = {"float16": 0, "bfloat16": 1, "float32": 2, "float64": 3}
# Counter slots of device_types.hpp.
_COUNT, _SKIPPED, _FLAG = 0, 1, 2

_fallback_warned = False


def _torch():
    import torch

    return torch


def is_device_tensor(x: object) -> TypeGuard[torch.Tensor]:
    """True for a torch tensor that lives off the CPU (the caller has imported torch)."""
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor) and x.device.type != "cpu"


def kernels_for(device):
    """The native kernel module for a device, or None for the torch fallback (warned once)."""
    global _fallback_warned
    if device.type == "cuda" and cuda_compiled:
        return importlib.import_module("fastfid._cuda")
    if not _fallback_warned:
        _fallback_warned = True
        reason = ("this fastfid build has no CUDA kernels (built without nvcc)" if device.type == "cuda"
                  else f"fastfid has no kernels for {device.type} devices")
        warnings.warn(f"{reason}: statistics and distances on {device} use torch float64 ops instead, which is "
                      "slower; see the README's 'Building' section to build the CUDA path", RuntimeWarning, stacklevel=3)
    return None


def _launch_context(device) -> dict:
    """Keyword arguments that place a kernel call on torch's current stream of `device`."""
    torch = _torch()
    if device.type != "cuda":
        return {"device": 0, "stream": 0}
    index = device.index if device.index is not None else torch.cuda.current_device()
    return {"device": index, "stream": torch.cuda.current_stream(index).cuda_stream}


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

    def __init__(self, dim: int, device, kernels="auto"):
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
        self.kernels = kernels  # a module with the device API (fastfid._cuda, ._simt), or None: torch ops
        self.mean = torch.zeros(dim, dtype=torch.float64, device=device)
        self.comoment = torch.zeros(dim, dim, dtype=torch.float64, device=device)  # upper triangle valid
        self.counters = torch.zeros(3, dtype=torch.int64, device=device)
        self._workspace: Any = None  # one batch's scratch (a tensor), kept between updates

    # --- accumulation --------------------------------------------------------------------------
    def update(self, x) -> None:
        x = feature_tensor(x, self.dim, self.device)
        if self.kernels is None:
            self._update_with_torch(x)
            return
        if self._workspace is None:
            torch = _torch()
            self._workspace = torch.empty(self.kernels.stats_workspace_doubles(self.dim), dtype=torch.float64,
                                          device=self.device)
        self.kernels.accumulate(
            x.data_ptr(), _type_code(x), x.shape[0], x.shape[1],
            x.stride(0), x.stride(1), mean=self.mean.data_ptr(), comoment=self.comoment.data_ptr(),
            counters=self.counters.data_ptr(), workspace=self._workspace.data_ptr(), **_launch_context(self.device))

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
        if self.kernels is None:
            torch = _torch()
            na, nb = self.counters[_COUNT].to(torch.float64), other.counters[_COUNT].to(torch.float64)
            total = torch.clamp(na + nb, min=1.0)  # both empty: nothing moves
            delta = other.mean - self.mean
            self.comoment += other.comoment + torch.outer(delta, delta) * (na * nb / total)
            self.mean += delta * (nb / total)
            self.counters[:_FLAG] += other.counters[:_FLAG]
            return
        self.kernels.merge(
            self.dim, mean=self.mean.data_ptr(), comoment=self.comoment.data_ptr(), counters=self.counters.data_ptr(),
            other_mean=other.mean.data_ptr(), other_comoment=other.comoment.data_ptr(),
            other_counters=other.counters.data_ptr(), **_launch_context(self.device))

    def copy(self) -> "DeviceStats":
        clone = DeviceStats.__new__(DeviceStats)
        clone.dim, clone.device, clone.kernels = self.dim, self.device, self.kernels
        clone.mean, clone.comoment, clone.counters = self.mean.clone(), self.comoment.clone(), self.counters.clone()
        clone._workspace = None
        return clone

    # --- reads (these synchronise) -------------------------------------------------------------
    def count(self) -> int:
        count, skipped = (int(v) for v in self.counters[:_FLAG].tolist())
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
class NewtonSchulzRoots:
    """Newton–Schulz on M = Σ₁Σ₂: tr √M, and on request √M and M^−½ (tensors on the device)."""

    trace_sqrt: float
    iterations: int
    step: float
    """‖Y_{k+1} − Y_k‖_F / ‖Y_k‖_F that led to the returned iterate (the stopping test)."""
    converged: bool
    sqrt: object = None
    inverse_sqrt: Any = None


def covariance_tensor(x, device, name: str):
    """A float64, C-contiguous (d, d) tensor on `device` that is finite and symmetric."""
    torch = _torch()
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if x.is_complex() or not x.is_floating_point():
        raise TypeError(f"{name} must be real floating point, got {x.dtype}")
    if x.dim() != 2 or x.shape[0] != x.shape[1]:
        raise ValueError(f"{name} must be a square (d, d) covariance matrix, got shape {tuple(x.shape)}")
    x = x.detach().to(device=device, dtype=torch.float64).contiguous()
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    # The CPU core's symmetry test (trace_sqrt.cpp): asymmetry beyond 1e-5 of the largest variance.
    scale = float(x.diagonal().abs().max()) if x.numel() else 0.0
    asymmetry = float((x - x.T).abs().max()) if x.numel() else 0.0
    if asymmetry > 1e-5 * max(scale, 1e-300):
        raise ValueError(f"{name} is not symmetric: |S - S^T| reaches {asymmetry:.3g} against a largest variance "
                         f"of {scale:.3g}")
    if x.numel() and float(x.diagonal().min()) < 0:
        raise ValueError(f"{name} has a negative variance on its diagonal: it is not a covariance")
    return x


def mean_tensor(x, device, name: str):
    torch = _torch()
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if x.is_complex() or not x.is_floating_point():
        raise TypeError(f"{name} must be real floating point, got {x.dtype}")
    x = torch.atleast_1d(x.detach()).to(device=device, dtype=torch.float64)
    if x.dim() != 1:
        raise ValueError(f"{name} must be a 1-D mean vector, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf values")
    return x


def newton_schulz(sigma1, sigma2, kernels, *, tolerance: float = 1e-12, max_iterations: int = 100,
                  return_roots: bool = False) -> NewtonSchulzRoots:
    """Coupled Newton–Schulz for √(Σ₁Σ₂) on the covariances' device (validated float64 tensors)."""
    torch = _torch()
    if not (isinstance(max_iterations, int) and max_iterations >= 0):
        raise ValueError(f"max_iterations must be a non-negative integer, got {max_iterations!r}")
    if not tolerance > 0:
        raise ValueError(f"tolerance must be positive, got {tolerance!r}")
    d = sigma1.shape[0]
    roots = [torch.empty(d, d, dtype=torch.float64, device=sigma1.device) for _ in range(2)] if return_roots else []
    if kernels is None:
        info = _newton_schulz_with_torch(sigma1, sigma2, tolerance, max_iterations, roots)
    else:
        workspace = torch.empty(kernels.newton_schulz_workspace_doubles(d, max_iterations), dtype=torch.float64,
                                device=sigma1.device)
        info = kernels.newton_schulz(
            sigma1.data_ptr(), sigma2.data_ptr(), d, workspace=workspace.data_ptr(),
            sqrt_out=roots[0].data_ptr() if roots else 0, inverse_sqrt_out=roots[1].data_ptr() if roots else 0,
            tolerance=tolerance, max_iterations=max_iterations, **_launch_context(sigma1.device))
    return NewtonSchulzRoots(info["trace_sqrt"], info["iterations"], info["step"], info["converged"],
                             *(roots or (None, None)))


def _newton_schulz_with_torch(sigma1, sigma2, tolerance, max_iterations, roots) -> dict:
    """newton_schulz_driver.hpp in torch ops: the same iteration, stopping rules and outputs."""
    torch = _torch()
    d = sigma1.shape[0]
    m = sigma1 @ sigma2
    scale = float(torch.linalg.matrix_norm(m))
    if not math.isfinite(scale):
        raise ValueError("sigma1 @ sigma2 is not finite")
    if scale == 0:
        if roots:
            raise ValueError("sigma1 @ sigma2 is 0: it has no inverse square root")
        return {"trace_sqrt": 0.0, "iterations": 0, "step": 0.0, "converged": True}
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
    if roots:
        roots[0].copy_(best_y * math.sqrt(scale))
        roots[1].copy_(best_z / math.sqrt(scale))
    trace = float(best_y.diagonal().sum())
    return {"trace_sqrt": math.sqrt(scale) * max(trace, 0.0), "iterations": iterations, "step": best_step,
            "converged": converged}
