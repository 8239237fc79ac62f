"""Types of the public API's arguments (for type checkers; nothing here is checked at run time)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Union

import numpy.typing as npt

if TYPE_CHECKING:
    import torch

# A vector or matrix: numpy arrays (any float dtype), nested sequences, or torch tensors (CPU or CUDA).
Array = Union[npt.ArrayLike, "torch.Tensor"]
