"""The one place where user inputs (numpy arrays, torch tensors) become what the native core takes.

torch is never imported here: a tensor can only exist if the caller already imported torch.
"""

from __future__ import annotations

import sys

import numpy as np

FEATURE_DTYPES = (np.float16, np.float32, np.float64)


def _is_torch_tensor(x) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _from_torch(x, name: str) -> np.ndarray:
    import torch  # already imported by the caller, see _is_torch_tensor

    if x.device.type != "cpu":
        raise TypeError(f"{name} is a {x.device.type} tensor where the host is needed: pass {name}.cpu()")
    if x.is_complex():
        raise TypeError(f"{name} must be real floating point, got {x.dtype}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {x.dtype}")
    x = x.detach()
    if x.dtype == torch.bfloat16:
        x = x.to(torch.float32)  # numpy has no bfloat16; the widening is exact
    return x.numpy()  # shares memory, strides kept


def to_numpy(x, name: str) -> np.ndarray:
    """A numpy view of x (a copy only for torch bfloat16 or list inputs)."""
    if _is_torch_tensor(x):
        return _from_torch(x, name)
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(f"{name} is a masked array, whose mask fastfid would ignore: drop the masked samples first "
                        "(e.g. x.data[~np.ma.getmaskarray(x).any(axis=1)]) or fill them (x.filled(value))")
    if isinstance(x, np.ndarray):
        return x
    return np.asarray(x)


def _check_real_float(a: np.ndarray, name: str) -> None:
    if np.issubdtype(a.dtype, np.complexfloating):
        raise TypeError(f"{name} must be real floating point, got complex dtype {a.dtype}")
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"{name} must be floating point (float16, float32 or float64), got dtype {a.dtype}")


def as_features(x, dim: int | None = None, name: str = "features") -> np.ndarray:
    """An (n, d) float16/32/64 native-endian array, read in place whatever its strides."""
    a = to_numpy(x, name)
    _check_real_float(a, name)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (samples, dim), got shape {a.shape}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (0 samples)")
    if dim is not None and a.shape[1] != dim:
        raise ValueError(f"{name} have dim {a.shape[1]}, the statistics have dim {dim}")
    if a.dtype.type not in FEATURE_DTYPES:
        a = a.astype(np.float64)  # e.g. longdouble: rare, a copy is acceptable
    elif not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    return a


def as_mean(x, name: str) -> np.ndarray:
    a = to_numpy(x, name)
    _check_real_float(a, name)
    a = np.atleast_1d(a)
    if a.ndim != 1:
        raise ValueError(f"{name} must be a 1-D mean vector, got shape {a.shape}")
    a = np.asarray(a, dtype=np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or Inf values")
    return a


def as_covariance(x, name: str) -> np.ndarray:
    """A float64 (d, d) array; symmetry and finiteness are checked by the native core."""
    a = to_numpy(x, name)
    _check_real_float(a, name)
    a = np.atleast_2d(a)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"{name} must be a square (d, d) covariance matrix, got shape {a.shape}")
    return np.asarray(a, dtype=np.float64)
