"""NVIDIA's reference statistics as EDM2 publishes them (``dataset-refs/img512.pkl``): a pickle of
``{"num_images": n, "fid": {"mu", "sigma"}, "fd_dinov2": {"mu", "sigma"}}``, read as a file of two
spaces, ``inception`` and ``dinov2-vit-l14``. (EDM's ``fid-refs/*.npz`` hold ``mu`` and ``sigma`` and
are read as pytorch-fid's files are.)

A pickle can run any code it names, so it is read by an unpickler that builds only dicts, lists,
numbers, strings and numpy arrays: any other class it names is refused before it is built.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import BinaryIO

import numpy as np

from fastfid.files.archive import name_of
from fastfid.files.stats import StoredStats

__all__ = ["EDM2_SPACES", "is_pickle", "read_reference_pickle"]

EDM2_SPACES = {"fid": "inception", "fd_dinov2": "dinov2-vit-l14"}
"""EDM2's metric names and the spaces (fastfid.models.space_names()) their statistics are of."""

# What numpy's own pickles of arrays, dtypes and scalars name (numpy 1 and 2 spell the module
# differently), and the encoder protocol 2 pickles rebuild bytes with.
_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # protocol 5
    ("_codecs", "encode"),
}
# Two float64 covariances of 2048 and 1024 dims take 42 MB: a "reference" far larger is refused
# before it is unpickled.
MOST_BYTES = 1 << 30


class _Refused(pickle.UnpicklingError):
    """A class the pickle names that plain data does not need."""


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise _Refused(f"it names {module}.{name}, which a file of statistics does not hold "
                                         "(only dicts, numbers, strings and numpy arrays are read)")
        return super().find_class(module, name)


def is_pickle(source: str | os.PathLike | BinaryIO) -> bool:
    """Whether ``source`` is a pickle (protocol 2 or later: its first byte is PROTO); a stream is left
    where it was."""
    if not isinstance(source, (str, os.PathLike)):  # a seekable stream
        start = source.tell()
        head = source.read(1)
        source.seek(start)
    else:
        try:
            with open(source, "rb") as handle:
                head = handle.read(1)
        except OSError:
            return False
    return head == b"\x80"


def read_reference_pickle(source: str | os.PathLike | BinaryIO) -> tuple[dict[str, StoredStats], int | None]:
    """(space name → StoredStats, the image count it records) of an EDM2 reference pickle; OSError for
    an unreadable file or one that names anything but plain data, ValueError for other contents."""
    path = name_of(source)
    data = _read_bytes(source, path)
    try:
        content = _PlainUnpickler(io.BytesIO(data)).load()
    except _Refused as error:
        raise OSError(f"{path} is refused as a reference pickle: {error}") from error
    except Exception as error:  # a damaged pickle raises nearly anything (EOFError, ValueError, ...)
        raise OSError(f"{path} is not a readable pickle (truncated or corrupt): {type(error).__name__}: {error}") \
            from error
    return _stats_of(content, path)


def _read_bytes(source, path: Path) -> bytes:
    if not isinstance(source, (str, os.PathLike)):
        data = source.read(MOST_BYTES + 1)
    else:
        size = os.path.getsize(source)
        if size > MOST_BYTES:
            raise ValueError(f"{path} is {size} bytes: larger than any statistics pickle ({MOST_BYTES} at most)")
        with open(source, "rb") as handle:
            data = handle.read()
    if len(data) > MOST_BYTES:
        raise ValueError(f"{path} is larger than any statistics pickle ({MOST_BYTES} bytes at most)")
    return data


def _stats_of(content, path: Path) -> tuple[dict[str, StoredStats], int | None]:
    if not isinstance(content, dict):
        raise ValueError(f"{path} holds a {type(content).__name__}, not EDM2's dict of statistics")
    count = content.get("num_images")
    if count is not None and (not isinstance(count, (int, np.integer)) or isinstance(count, bool) or count < 2):
        raise ValueError(f"{path}: num_images is {count!r}, not a count of at least 2 images")
    unknown = sorted(str(key) for key in content if key not in EDM2_SPACES and key != "num_images")
    if unknown:
        raise ValueError(f"{path} holds {', '.join(unknown)}, which EDM2's references do not; they have "
                         f"{', '.join(EDM2_SPACES)} and num_images")
    spaces = {}
    for metric, space in EDM2_SPACES.items():
        if metric not in content:
            continue
        entry = content[metric]
        if not isinstance(entry, dict) or not {"mu", "sigma"} <= set(entry):
            raise ValueError(f"{path} [{metric}] is not a dict with mu and sigma")
        mean, sigma = entry["mu"], entry["sigma"]
        if not all(isinstance(a, np.ndarray) and a.dtype.kind == "f" for a in (mean, sigma)):
            raise ValueError(f"{path} [{metric}]: mu and sigma must be float arrays")
        spaces[space] = StoredStats(mean, None, sigma=sigma)
    if not spaces:
        raise ValueError(f"{path} holds no statistics: EDM2's references have {' and '.join(EDM2_SPACES)}")
    return spaces, None if count is None else int(count)
