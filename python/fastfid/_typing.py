"""Types of the public API's arguments (for type checkers; nothing here is checked at run time)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Union

import numpy.typing as npt

if TYPE_CHECKING:
    import torch

    from fastfid.stats import FeatureStats

# A vector or matrix: numpy arrays (any float dtype), nested sequences, or torch tensors (CPU or CUDA).
Array = Union[npt.ArrayLike, "torch.Tensor"]
# Statistics: FeatureStats, the path of a statistics .npz, or a (mu, sigma) pair.
StatsLike = Union["FeatureStats", str, os.PathLike, tuple[Array, Array]]
