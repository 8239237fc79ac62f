"""Statistics files: fastfid's exact .npz (also read by pytorch-fid and clean-fid through ``mu`` and
``sigma``) and the plain ``mu``/``sigma`` files of the peers, as plain arrays
(:class:`StoredStats`): :class:`fastfid.FeatureStats` is built from them and gives them, so this
module never imports it.

Sizes are checked from the file's headers before anything large is read, and a save never leaves a
half-written file behind, neither in place of the old one nor beside it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from fastfid.files import format as keys
from fastfid.files.archive import Npz, check_memory, name_of, open_npz
from fastfid.files.atomic import write_atomically


@dataclass
class StoredStats:
    """Statistics as a file holds them. Exact ones have a ``count`` (0 only for a job saved before its
    first sample) and ``upper``: a C-ordered d × d array of which only the upper triangle is read, the
    co-moment Σ (x − μ)(x − μ)ᵀ. A summary from a peer's file has ``count`` None and ``sigma``."""

    mean: np.ndarray
    count: int | None
    upper: np.ndarray | None = None
    sigma: np.ndarray | None = None
    feature_space: str | None = None

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])


# --- writing -------------------------------------------------------------------------------------
def save_stats(stats: StoredStats, path: str | os.PathLike, progress: dict | None = None) -> None:
    """Write ``stats`` to ``path`` exactly as named (no suffix is added), atomically. ``progress`` (a
    JSON-able dict) records how far a job got, for resuming it (:func:`read_progress`); while its
    ``complete`` is false the file holds no ``mu``/``sigma``."""
    arrays = stats_arrays(stats, progress)
    write_atomically(Path(path), lambda stream: np.savez(stream, **arrays))


def stats_arrays(stats: StoredStats, progress: dict | None = None, *, partial: bool | None = None,
                 allow_empty: bool = False) -> dict[str, Any]:
    """The members of a statistics file of ``stats`` (what :func:`save_stats` writes). ``partial``
    (default: from ``progress``) writes the mean as a partial one and no ``sigma``; statistics of 0
    samples are written only for a job's progress (``progress`` or ``allow_empty``)."""
    if stats.count == 0 and progress is None and not allow_empty:
        raise ValueError("refusing to save empty statistics (0 samples)")
    if partial is None:
        partial = progress is not None and not progress.get("complete", False)
    arrays: dict[str, Any] = {keys.PARTIAL_MEAN if partial else "mu": stats.mean}
    if stats.feature_space:
        arrays[keys.FEATURE_SPACE] = np.str_(stats.feature_space)
    if progress is not None:
        arrays[keys.PROGRESS] = np.str_(json.dumps(progress))
    if stats.count is None:
        arrays["sigma"] = stats.sigma
        return arrays
    assert stats.upper is not None
    arrays[keys.COUNT] = np.int64(stats.count)
    arrays[keys.COMOMENT] = pack_upper(stats.upper)  # the exact state, stored once
    arrays[keys.FORMAT] = np.int64(keys.FORMAT_VERSION)
    if not partial:
        sigma = symmetric(stats.upper) if stats.count > 1 else np.zeros_like(stats.upper)
        sigma /= max(stats.count - 1, 1)  # in place: sigma costs one d × d array, not two
        arrays["sigma"] = sigma
    return arrays


def write_state(stats: StoredStats, stream: BinaryIO) -> None:
    """The exact state alone (count, mean, packed co-moment, feature space; no ``sigma``: a third of a
    statistics file's bytes) as an .npz on a binary stream, for sending statistics over a network
    (fastfid's service). :func:`read_stats` reads it; the peers, which need ``sigma``, do not."""
    if stats.count is None or stats.count == 0:
        raise ValueError("only exact statistics of at least one sample can be written as a state")
    assert stats.upper is not None
    arrays: dict[str, Any] = {"mu": stats.mean, keys.COUNT: np.int64(stats.count),
                              keys.COMOMENT: pack_upper(stats.upper), keys.FORMAT: np.int64(keys.FORMAT_VERSION)}
    if stats.feature_space:
        arrays[keys.FEATURE_SPACE] = np.str_(stats.feature_space)
    np.savez(stream, **arrays)


def pack_upper(matrix: np.ndarray) -> np.ndarray:
    """The upper triangle row by row (numpy's triu_indices order) without d² index arrays."""
    d = matrix.shape[0]
    packed = np.empty(d * (d + 1) // 2)
    start = 0
    for row in range(d):
        packed[start:start + d - row] = matrix[row, row:]
        start += d - row
    return packed


def unpack_upper(packed: np.ndarray, dim: int) -> np.ndarray:
    """A C-ordered d × d array whose upper triangle holds ``packed`` (row by row) and lower part zeros."""
    matrix = np.zeros((dim, dim))
    start = 0
    for row in range(dim):
        matrix[row, row:] = packed[start:start + dim - row]
        start += dim - row
    return matrix


def symmetric(upper: np.ndarray) -> np.ndarray:
    """A new symmetric matrix from the upper triangle of ``upper``, its values copied bit for bit
    (a sum with zeros would turn -0.0 into 0.0, and change a state's digest)."""
    full = np.array(upper, dtype=np.float64, order="C")
    for row in range(full.shape[0] - 1):
        full[row + 1:, row] = full[row, row + 1:]
    return full


# --- reading -------------------------------------------------------------------------------------
def read_stats(source: str | os.PathLike | BinaryIO, *, allow_partial: bool = False) -> StoredStats:
    """Read a statistics .npz (a path, or a seekable binary stream such as an upload); raises OSError
    for unreadable or corrupt files, ValueError for bad contents (:class:`PartialStatisticsError` for
    an unfinished job's checkpoint, unless ``allow_partial``), MemoryError when its declared size
    exceeds the memory available. An EDM2 reference pickle gives its Inception statistics (``fid``)."""
    from fastfid.files.nvidia import is_pickle, read_reference_pickle

    if is_pickle(source):
        spaces, _ = read_reference_pickle(source)
        if "inception" not in spaces:
            raise ValueError(f"{name_of(source)} holds statistics of {', '.join(spaces)} only, no FID (Inception) "
                             "statistics: read it with fastfid.load_spaces, or give the space (--model NAME)")
        return spaces["inception"]
    with open_npz(source) as archive:
        return stats_from_archive(archive, allow_partial=allow_partial)


def stats_from_archive(archive: Npz, *, allow_partial: bool = False) -> StoredStats:
    """The statistics an opened .npz holds (see :func:`read_stats`)."""
    path = archive.path
    if keys.SPACES in archive:
        try:
            names, _ = keys.spaces_record(str(archive.read(keys.SPACES)))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise OSError(f"{path} has a corrupt list of spaces: {error}") from error
        raise ValueError(f"{path} holds statistics of {len(names)} spaces ({', '.join(names)}): read it with "
                         "fastfid.load_spaces, or give the space (--space NAME)")
    progress = read_progress_of(archive)
    if progress is not None and not progress.get("complete", False) and not allow_partial:
        raise keys.PartialStatisticsError(
            f"{path} holds partial statistics of an unfinished job ({keys.done_text(progress)}): finish it with "
            "`fastfid stats ... --resume`, or accept them explicitly (--allow-partial / allow_partial=True)")
    mean_key, exact, needed = layout(archive)
    archive.check_inflation(needed)
    arrays = {key: archive.read(key) for key in needed}
    feature_space = str(archive.read(keys.FEATURE_SPACE)) if keys.FEATURE_SPACE in archive else None
    try:
        return _stored(arrays, mean_key, exact, feature_space)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path}: {error}") from error


def layout(archive: Npz) -> tuple[str, bool, list[str]]:
    """(the mean's key, exact or not, the members to read), after checking from the headers alone that
    the shapes agree with the mean's dim and that the memory to read them is there."""
    path, members = archive.path, archive.members
    mean_key = "mu" if "mu" in members else keys.PARTIAL_MEAN
    exact = keys.COUNT in members
    needed = [mean_key, keys.COUNT, keys.COMOMENT, keys.FORMAT] if exact else ["mu", "sigma"]
    missing = [key for key in needed if key not in members]
    if missing:
        raise ValueError(f"{path} is missing {missing}; it has keys {sorted(members)}")
    d = declared_dim(archive)
    expected = {keys.COMOMENT: (d * (d + 1) // 2,), keys.COUNT: (), keys.FORMAT: ()} if exact else {"sigma": (d, d)}
    for key, shape in expected.items():
        if members[key].shape != shape:
            raise ValueError(f"{path}: {key} has shape {members[key].shape}, expected {shape} for a mean of dim {d}")
    # Peak while reading: the stored matrix as float64 plus the full d × d state built from it.
    check_memory(path, 8 * (d * d + (d * (d + 1) // 2 if exact else d * d)), f"statistics of dim {d}")
    return mean_key, exact, needed


def declared_dim(archive: Npz) -> int:
    """The dimension a statistics .npz declares, from its headers alone."""
    mean_key = "mu" if "mu" in archive else keys.PARTIAL_MEAN
    if mean_key not in archive:
        raise ValueError(f"{archive.path} is missing 'mu'; it has keys {sorted(archive.members)}")
    shape = archive.members[mean_key].shape
    if len(shape) != 1 or shape[0] < 1:
        raise ValueError(f"{archive.path}: the mean must be a vector, got shape {shape}")
    return int(shape[0])


def stats_dim(source: str | os.PathLike | BinaryIO) -> int:
    """The dimension a statistics .npz (a path or a seekable stream) declares, from its headers
    alone: nothing large is read or unpacked (an EDM2 pickle is read whole: it is small)."""
    from fastfid.files.nvidia import is_pickle

    if is_pickle(source):
        return read_stats(source).dim
    with open_npz(source) as archive:
        return declared_dim(archive)


def read_progress(path: str | os.PathLike) -> dict | None:
    """The progress record saved with a job's statistics (None if the file has none)."""
    with open_npz(path) as archive:
        return read_progress_of(archive)


def read_progress_of(archive: Npz) -> dict | None:
    if keys.PROGRESS not in archive:
        return None
    try:
        record = json.loads(str(archive.read(keys.PROGRESS)))
    except ValueError as error:
        raise OSError(f"{archive.path} has a corrupt progress record: {error}") from error
    if not isinstance(record, dict):
        raise OSError(f"{archive.path} has a corrupt progress record: {record!r}")
    return record


def _stored(arrays: dict, mean_key: str, exact: bool, feature_space: str | None) -> StoredStats:
    mean = np.array(arrays[mean_key], dtype=np.float64)
    if not exact:
        return StoredStats(mean, None, sigma=np.asarray(arrays["sigma"], dtype=np.float64),
                           feature_space=feature_space)
    version = int(arrays[keys.FORMAT])
    if version != keys.FORMAT_VERSION:
        raise ValueError(f"unsupported fastfid statistics format {version} (this fastfid reads {keys.FORMAT_VERSION})")
    count = arrays[keys.COUNT]
    if count.shape != () or not np.issubdtype(count.dtype, np.integer) or count < 0:
        raise ValueError(f"the sample count must be a non-negative integer scalar, got {count!r}")
    dim = mean.shape[0]
    if count == 0:  # a resumable job saved before its first sample
        return StoredStats(np.zeros(dim), 0, np.zeros((dim, dim)), feature_space=feature_space)
    packed = arrays.pop(keys.COMOMENT)
    upper = unpack_upper(packed, dim)
    del packed
    return StoredStats(mean, int(count), upper, feature_space=feature_space)


def state_digest(stats: StoredStats) -> str:
    """SHA-256 of the exact state (count, mean, co-moment): equal for the same samples, in any file."""
    digest = hashlib.sha256(np.int64(stats.count if stats.count is not None else -1).tobytes())
    digest.update(np.ascontiguousarray(stats.mean).tobytes())
    matrix = symmetric(stats.upper) if stats.upper is not None else stats.sigma
    digest.update(np.ascontiguousarray(matrix).tobytes())
    return digest.hexdigest()
