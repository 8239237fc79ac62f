"""``.npy`` arrays of features (2-D) or images (4-D), memory-mapped, and the fingerprints a resumed
job checks them by."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fastfid._hashing import file_sha256


def open_array(path: str | os.PathLike) -> np.ndarray:
    """A ``.npy`` file memory-mapped (nothing is read yet); OSError naming the file if it is not one."""
    path = Path(path)
    if path.suffix != ".npy":
        raise ValueError(f"{path}: expected a .npy file (2-D features: samples × dim, or 4-D images)")
    try:
        if path.stat().st_size == 0:
            raise OSError(f"{path} is empty (0 bytes), not a .npy file")
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError) as error:  # numpy's words for a malformed or short header
        raise OSError(f"{path} is not a readable .npy file: {error}") from error


def open_features(path: str | os.PathLike) -> np.ndarray:
    """A ``.npy`` of features (samples × dim), memory-mapped."""
    array = open_array(path)
    if array.ndim != 2:
        raise ValueError(f"{path} has shape {array.shape}: features are a 2-D array (samples × dim)")
    return array


def file_fingerprint(description: str, shape: str, content: bool) -> str:
    """An array's shape, and when it comes from a file, the file's size and modification time (or
    with ``content`` its SHA-256)."""
    path = Path(description)
    if not path.is_file():
        return shape
    if content:
        return f"{shape} {file_sha256(path)}"
    info = path.stat()
    return f"{shape} {info.st_size} {info.st_mtime_ns}"
