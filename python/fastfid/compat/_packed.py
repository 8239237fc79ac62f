"""Exact feature statistics (count, mean, co-moment) packed in one float64 tensor, for metric
frameworks that keep their state in tensors and reduce each tensor on its own (torchmetrics):
one tensor per set keeps count, mean and co-moment together, so its reduction can merge them
exactly (Chan et al.) rather than add raw sums of squares. The arithmetic is fastfid's core on
the CPU and fastfid's device statistics elsewhere; this module only lays the state out.

Layout: [count, mean (d), co-moment (d × d, row-major; the upper triangle is the state)].
"""

from __future__ import annotations

import numpy as np
import torch

from fastfid import _device
from fastfid._native import core as _core
from fastfid.stats import FeatureStats


def empty(dim: int) -> torch.Tensor:
    return torch.zeros(1 + dim + dim * dim, dtype=torch.float64)


def dim_of(packed: torch.Tensor) -> int:
    return int(round((-1 + np.sqrt(1 + 4 * (packed.shape[-1] - 1))) / 2))


def count(packed: torch.Tensor) -> int:
    return int(packed[0].item())


def add(packed: torch.Tensor, features: torch.Tensor) -> None:
    """Add a batch of (n, d) features to the packed state, in place."""
    dim = dim_of(packed)
    if features.dim() != 2 or features.shape[1] != dim:
        raise ValueError(f"features must be (n, {dim}), got shape {tuple(features.shape)}")
    if packed.device.type == "cpu":
        # accumulate refuses NaN/Inf itself, leaving the state unchanged.
        packed[0] = _core.accumulate(features.detach().cpu().numpy(), count(packed), *_host_parts(packed, dim))
        return
    if not bool(torch.isfinite(features).all()):
        raise ValueError("features contain NaN or Inf values")
    state = _device_view(packed, dim)
    state.update(features.detach())
    packed[0] = state.counters[0].to(torch.float64)


def merge(stacked: torch.Tensor) -> torch.Tensor:
    """Exact merge of a (k, size) stack of packed states (every rank's, or a metric's and another's)."""
    if stacked.dim() == 1:
        return stacked
    result = stacked[0].clone()
    dim = dim_of(result)
    for other in stacked[1:]:
        if count(other) == 0:
            continue
        if count(result) == 0:
            result.copy_(other)
        elif result.device.type == "cpu":
            theirs = other.contiguous()
            result[0] = _core.merge(count(result), *_host_parts(result, dim), count(theirs), *_host_parts(theirs, dim))
        else:
            state = _device_view(result, dim)
            state.merge(_device_view(other.clone(), dim))
            result[0] = state.counters[0].to(torch.float64)
    return result


def to_stats(packed: torch.Tensor, feature_space: str | None = None) -> FeatureStats | None:
    """The packed state as host FeatureStats (None when empty)."""
    dim = dim_of(packed)
    if count(packed) == 0:
        return None
    if packed.device.type == "cpu":
        mean, comoment = (part.copy() for part in _host_parts(packed, dim))
        stats = FeatureStats._adopt_state(count(packed), mean, comoment)
    else:
        stats = FeatureStats._from_device_state(_device_view(packed, dim)).to("cpu")
    stats.feature_space = feature_space
    return stats


def count_tensor(packed: torch.Tensor) -> torch.Tensor:
    """n, as an int64 scalar tensor on the state's device."""
    return packed[0].to(torch.int64)


def feature_sum(packed: torch.Tensor) -> torch.Tensor:
    """Σx = n·μ, a new float64 tensor on the state's device."""
    dim = dim_of(packed)
    return packed[0] * packed[1:1 + dim]


def outer_product_sum(packed: torch.Tensor) -> torch.Tensor:
    """Σxxᵀ = C + n·μμᵀ (C the co-moment, stored as its upper triangle), a new float64 tensor."""
    dim = dim_of(packed)
    mean, upper = packed[1:1 + dim], packed[1 + dim:].view(dim, dim).triu()
    return upper + upper.triu(1).T + packed[0] * torch.outer(mean, mean)


def _host_parts(packed: torch.Tensor, dim: int) -> tuple[np.ndarray, np.ndarray]:
    array = packed.numpy()
    return array[1:1 + dim], array[1 + dim:].reshape(dim, dim)


def _device_view(packed: torch.Tensor, dim: int) -> _device.DeviceStats:
    """fastfid's device statistics over the packed tensor's memory (no copy)."""
    return _device.DeviceStats.over(packed[1:1 + dim], packed[1 + dim:].view(dim, dim), packed[0].to(torch.int64))
