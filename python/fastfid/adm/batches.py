"""ADM's sample and reference batches: ``.npz`` files whose ``arr_0`` is uint8 NHWC RGB images,
read batch by batch straight from the zip member (compressed or not), never the whole array, as
ADM's evaluator streams them. A reference batch may also hold ``mu``/``sigma`` and ``mu_s``/
``sigma_s``: statistics of the whole training set, which ADM uses instead of its 10,000 images'.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGES = "arr_0"
STATISTICS = ("mu", "sigma", "mu_s", "sigma_s")


@dataclass(frozen=True)
class ReferenceStatistics:
    """A reference batch's stored statistics: pool3's (``mu``, ``sigma``) and sFID's (``mu_s``,
    ``sigma_s``)."""

    mu: np.ndarray
    sigma: np.ndarray
    mu_s: np.ndarray
    sigma_s: np.ndarray


class ImageBatch:
    """N uint8 images of H × W × 3, from an ADM ``.npz`` (streamed) or an array in memory."""

    def __init__(self, source, name: str | None = None):
        self.path: Path | None = None
        self._array: np.ndarray | None = None
        if isinstance(source, (str, os.PathLike)):
            self.path = Path(source)
            self.name = name or str(self.path)
            self.shape = _array_header(self.path)
        else:
            array = np.asarray(source)
            self.name = name or "the images"
            _check_images(array.dtype, array.shape, self.name)
            self._array, self.shape = array, tuple(array.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def batches(self, size: int) -> Iterator[np.ndarray]:
        """Consecutive batches of at most ``size`` images, (n, H, W, 3) uint8."""
        if self._array is not None:
            for start in range(0, len(self), size):
                yield self._array[start:start + size]
            return
        assert self.path is not None  # a batch is an array or a file
        with zipfile.ZipFile(self.path) as archive, archive.open(f"{IMAGES}.npy") as member:
            _read_header(member, self.name)
            for start in range(0, len(self), size):
                batch = np.empty((min(size, len(self) - start), *self.shape[1:]), dtype=np.uint8)
                _read_into(member, batch, self.name)
                yield batch

    def statistics(self) -> ReferenceStatistics | None:
        """The stored statistics, if the file has them (``mu`` without ``mu_s`` is refused, as ADM
        cannot use it either)."""
        if self.path is None:
            return None
        with np.load(self.path, allow_pickle=False) as data:
            present = [key for key in STATISTICS if key in data.files]
            if not present:
                return None
            missing = [key for key in STATISTICS if key not in data.files]
            if missing:
                raise ValueError(f"{self.name} has {', '.join(present)} but not {', '.join(missing)}: ADM reads "
                                 "mu and sigma with mu_s and sigma_s (the spatial features' statistics), or none")
            values = [np.asarray(data[key], dtype=np.float64) for key in STATISTICS]
        for key, value, width in zip(STATISTICS, values, (2048, 2048, 2023, 2023)):
            expected = (width,) if key.startswith("mu") else (width, width)
            if value.shape != expected:
                raise ValueError(f"{self.name}: {key} has shape {value.shape}, ADM's is {expected}")
            if not np.isfinite(value).all():
                raise ValueError(f"{self.name}: {key} contains NaN or Inf")
        return ReferenceStatistics(*values)

    def fingerprint(self) -> str:
        """SHA-256 of the file's bytes (or of the array's): what cached activations are keyed by."""
        digest = hashlib.sha256()
        if self.path is None:
            assert self._array is not None
            digest.update(repr(self.shape).encode())
            digest.update(np.ascontiguousarray(self._array).data)
            return digest.hexdigest()
        with open(self.path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        return digest.hexdigest()


def _check_images(dtype, shape, name: str) -> None:
    if np.dtype(dtype) != np.uint8:
        raise ValueError(f"{name}: {IMAGES} holds {np.dtype(dtype)}; ADM's batches are uint8 images (N, H, W, 3)")
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"{name}: {IMAGES} has shape {tuple(shape)}; ADM's batches are NHWC RGB, (N, H, W, 3)")
    if shape[0] == 0 or shape[1] == 0 or shape[2] == 0:
        raise ValueError(f"{name}: {IMAGES} is empty, shape {tuple(shape)}")


def _array_header(path: Path) -> tuple:
    """The shape of ``arr_0``, from its header only, with the file's problems named."""
    name = str(path)
    if not path.is_file():
        raise FileNotFoundError(f"{name} does not exist")
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise ValueError(f"{name} is not an .npz file (a zip archive of .npy arrays)") from None
    with archive:
        if f"{IMAGES}.npy" not in archive.namelist():
            present = ", ".join(sorted(n.removesuffix(".npy") for n in archive.namelist())) or "nothing"
            raise ValueError(f"{name} has no {IMAGES} (ADM's images; it holds {present})")
        with archive.open(f"{IMAGES}.npy") as member:
            return _read_header(member, name)


def _read_header(member, name: str) -> tuple:
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    try:
        version = np.lib.format.read_magic(member)
        if version not in readers:  # 3.0 exists for structured dtypes with unicode names only
            raise ValueError(f"format version {version[0]}.{version[1]}")
        shape, fortran, dtype = readers[version](member)
    except ValueError as error:
        raise ValueError(f"{name}: {IMAGES} is not a readable .npy array ({error})") from None
    _check_images(dtype, shape, name)
    if fortran and shape[0] > 1:
        raise ValueError(f"{name}: {IMAGES} is stored in Fortran order, which cannot be read image by image; save "
                         "it with np.savez(path, arr_0=np.ascontiguousarray(images))")
    return tuple(shape)


def _read_into(member, batch: np.ndarray, name: str) -> None:
    """Fills the batch from the member (no intermediate copy), or says that the file ends early."""
    view = batch.reshape(-1).data  # a writable memoryview of the batch itself
    filled = 0
    while filled < len(view):
        got = member.readinto(view[filled:])
        if not got:
            raise ValueError(f"{name}: {IMAGES} ends early (the file is truncated or corrupt)")
        filled += got
