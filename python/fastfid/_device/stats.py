"""(count, mean, co-moment) on a torch device: the statistics kernels on the caller's stream, without
synchronising with the host, or their steps in torch ops after the device gave up on the kernels."""

from __future__ import annotations

from typing import Any

from fastfid._device.routing import (COUNT, FLAG, SKIPPED, DeviceKernels, attempt, check_precision, kernels_for,
                                     torch_module, type_code)
from fastfid._device.routing import workspace as scratch
from fastfid._device.validation import stats_guard
from fastfid._native import cuda as _cuda


def feature_tensor(x, dim: int, device, name: str = "features"):
    """Check a batch of features for the device path; returns it as a torch tensor on `device`."""
    torch = torch_module()
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)  # numpy or lists: copied to the device below
    if type_code(x) is None:
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
        torch = torch_module()
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
        state.counters = torch_module().zeros(_cuda.counter_slots, dtype=count.dtype, device=mean.device)
        state.counters[COUNT] = count
        state._workspace, state._stream = None, None
        return state

    # --- accumulation --------------------------------------------------------------------------
    def update(self, x) -> None:
        x = feature_tensor(x, self.dim, self.device)
        kernels = self.kernels
        variant = stats_guard(self.precision, str(x.dtype).removeprefix("torch."))
        if kernels is not None and kernels.trusts(variant) and self._has_workspace(kernels):
            def accumulate():
                self._enter_stream(kernels)
                kernels.accumulate(x, self, self._workspace)

            if attempt(kernels, self.device, "accumulate", accumulate):
                return
            self.kernels = None
            self.counters[FLAG] = 0  # a batch's first launch may have run: the state is otherwise whole
        self._update_with_torch(x)

    def _has_workspace(self, kernels: DeviceKernels) -> bool:
        """The scratch of a batch or a merge, kept between calls (False: no memory for it now)."""
        if self._workspace is None:
            self._workspace = scratch(kernels, _cuda.stats_workspace_doubles(self.dim), self.device)
        return self._workspace is not None

    def _enter_stream(self, kernels: DeviceKernels) -> None:
        """Order this call after the state's last kernels when the caller's stream has changed."""
        stream = kernels.order_after(self._stream)
        if self._stream is not None and stream != self._stream and self.device.type == "cuda" \
                and self._workspace is not None:
            self._workspace.record_stream(torch_module().cuda.ExternalStream(stream, device=self.device))
        self._stream = stream

    def _update_with_torch(self, x) -> None:
        """The kernels' steps (stats_kernels.cuh) in torch ops, still without a host sync."""
        torch = torch_module()
        empty = self.counters[COUNT] == 0
        shift = torch.where(empty, x[0].to(torch.float64), self.mean)
        centred = x.to(torch.float64) - shift
        sums = centred.sum(dim=0)
        batch = centred.T @ centred
        bad = ~torch.isfinite(sums).all() | ~torch.isfinite(batch).all()
        total = (self.counters[COUNT] + x.shape[0]).to(torch.float64)
        self.comoment.copy_(torch.where(bad, self.comoment, self.comoment + batch - torch.outer(sums, sums) / total))
        self.mean.copy_(torch.where(bad, self.mean, shift + sums / total))
        self.counters[SKIPPED] += bad.to(torch.int64)
        self.counters[COUNT] += torch.where(bad, 0, x.shape[0])

    def merge(self, other: "DeviceStats") -> None:
        kernels = self.kernels
        if kernels is not None and kernels.trusts("merge") and self._has_workspace(kernels):
            def merge():
                kernels.order_after(other._stream)
                self._enter_stream(kernels)
                kernels.merge(self, other, self._workspace)

            if attempt(kernels, self.device, "merge", merge):
                return
            self.kernels = None
        torch = torch_module()
        na, nb = self.counters[COUNT].to(torch.float64), other.counters[COUNT].to(torch.float64)
        total = torch.clamp(na + nb, min=1.0)  # both empty: nothing moves
        delta = other.mean - self.mean
        self.comoment += other.comoment + torch.outer(delta, delta) * (na * nb / total)
        self.mean += delta * (nb / total)
        self.counters[:FLAG] += other.counters[:FLAG]

    def copy(self) -> "DeviceStats":
        clone = DeviceStats.__new__(DeviceStats)
        clone.dim, clone.device, clone.kernels, clone.precision = self.dim, self.device, self.kernels, self.precision
        clone.mean, clone.comoment, clone.counters = self.mean.clone(), self.comoment.clone(), self.counters.clone()
        clone._workspace, clone._stream = None, self._stream
        return clone

    # --- reads (these synchronise) -------------------------------------------------------------
    def count(self) -> int:
        try:
            count, skipped = (int(v) for v in self.counters[:FLAG].tolist())
        except RuntimeError as error:  # torch's report of an earlier kernel's fault, at this sync
            raise RuntimeError(f"fastfid: a CUDA error surfaced when reading the statistics on {self.device}; it "
                               f"comes from work enqueued earlier on this stream (fastfid's accumulate or merge "
                               f"kernels, or another library's): {error}") from error
        if skipped:
            self.counters[SKIPPED] = 0  # reported once
            raise ValueError(
                f"{skipped} batch(es) given to update() contained NaN or Inf and were left out (found on the device, "
                f"which is not waited for at update time); the statistics hold the other {count} samples")
        return count

    def symmetric_comoment(self):
        upper = self.comoment.triu()
        return upper + upper.triu(1).T



