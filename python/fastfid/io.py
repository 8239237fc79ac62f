"""Statistics files: fastfid's exact .npz and the plain pytorch-fid / clean-fid ``mu``/``sigma`` .npz."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from fastfid.stats import FeatureStats

FORMAT_VERSION = 1
# Keys of fastfid's exact state, stored beside pytorch-fid's mu and sigma.
_COUNT, _COMOMENT, _FORMAT = "fastfid_count", "fastfid_comoment_upper", "fastfid_format"
# What the features are (FeatureStats.feature_space), and the progress record of a resumable job (JSON).
_FEATURE_SPACE, _PROGRESS = "fastfid_feature_space", "fastfid_progress"


def save_stats(stats: FeatureStats, path: str | os.PathLike, progress: dict | None = None) -> None:
    """Write stats to ``path`` exactly as named (no suffix is added), atomically. ``progress`` (a JSON-able
    dict) records how far a job got, for resuming it: see :func:`read_progress`."""
    if stats.device != "cpu":
        stats = stats.to("cpu")
    if stats.count == 0 and progress is None:
        raise ValueError("refusing to save empty statistics (0 samples)")
    arrays = {"mu": stats.mean if stats.count else np.zeros(stats.dim)}
    if stats.feature_space:
        arrays[_FEATURE_SPACE] = np.str_(stats.feature_space)
    if progress is not None:
        arrays[_PROGRESS] = np.str_(json.dumps(progress))
    if stats.mergeable:
        comoment = stats.comoment
        arrays["sigma"] = comoment / (stats.count - 1) if stats.count > 1 else np.zeros_like(comoment)
        # A partial job may hold 0 samples yet: its state is still exact (mu and sigma are then zeros).
        arrays[_COUNT] = np.int64(stats.count)
        arrays[_COMOMENT] = comoment[np.triu_indices(stats.dim)]  # the exact state, stored once
        arrays[_FORMAT] = np.int64(FORMAT_VERSION)
    else:
        arrays["sigma"] = stats.cov
    target = Path(path)
    with tempfile.NamedTemporaryFile(dir=target.parent or ".", prefix=f".{target.name}.", delete=False) as handle:
        try:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        except BaseException:
            handle.close()
            os.unlink(handle.name)
            raise
    os.chmod(handle.name, 0o666 & ~_umask())  # the temporary file was private (0600)
    os.replace(handle.name, target)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load_stats(path: str | os.PathLike) -> FeatureStats:
    """Read a statistics .npz; raises OSError for unreadable or corrupt files, ValueError for bad contents."""
    path = Path(path)
    arrays, names = _read_npz(path, ("mu", "sigma", _COUNT, _COMOMENT, _FORMAT, _FEATURE_SPACE))
    missing = {"mu", "sigma"} - arrays.keys()
    if missing:
        raise ValueError(f"{path} is missing {sorted(missing)}; it has keys {sorted(names)}")
    try:
        stats = _exact_stats(arrays) if _COUNT in arrays else FeatureStats.from_mean_cov(arrays["mu"], arrays["sigma"])
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path}: {error}") from error
    if _FEATURE_SPACE in arrays:
        stats.feature_space = str(arrays[_FEATURE_SPACE])
    return stats


def read_progress(path: str | os.PathLike) -> dict | None:
    """The progress record saved with a job's statistics (None if the file has none)."""
    path = Path(path)
    arrays, _ = _read_npz(path, (_PROGRESS,))
    if _PROGRESS not in arrays:
        return None
    try:
        record = json.loads(str(arrays[_PROGRESS]))
    except ValueError as error:
        raise OSError(f"{path} has a corrupt progress record: {error}") from error
    if not isinstance(record, dict):
        raise OSError(f"{path} has a corrupt progress record: {record!r}")
    return record


_CORRUPT = (zipfile.BadZipFile, EOFError, ValueError, zlib.error)


def _read_npz(path: Path, wanted: tuple[str, ...]) -> tuple[dict, list[str]]:
    """The wanted members of an .npz (those present), read eagerly so corruption shows here, and
    the names of all its members."""
    # The file is opened here, not by np.load, so that it is closed even when numpy fails midway.
    with open(path, "rb") as handle:
        try:
            data = np.load(handle, allow_pickle=False)
        except _CORRUPT as error:
            raise _corrupt(path, error) from error
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError(f"{path} holds a single array, not a statistics .npz with 'mu' and 'sigma'")
        with data:
            try:
                return {key: data[key] for key in wanted if key in data.files}, list(data.files)
            except _CORRUPT as error:
                raise _corrupt(path, error) from error


def _corrupt(path: Path, error: Exception) -> OSError:
    return OSError(f"{path} is not a readable .npz file (truncated or corrupt): {error}")


def _exact_stats(arrays: dict) -> FeatureStats:
    version = int(arrays.get(_FORMAT, -1))
    if version != FORMAT_VERSION:
        raise ValueError(f"unsupported fastfid statistics format {version} (this fastfid reads {FORMAT_VERSION})")
    if _COMOMENT not in arrays:
        raise ValueError(f"the key {_COMOMENT!r} is missing")
    mu = np.asarray(arrays["mu"])
    dim = mu.shape[0] if mu.ndim == 1 else -1
    packed = np.asarray(arrays[_COMOMENT])
    if dim < 1 or packed.shape != (dim * (dim + 1) // 2,):
        raise ValueError(f"inconsistent shapes: mu {mu.shape}, packed co-moment {packed.shape}")
    comoment = np.zeros((dim, dim))
    rows, cols = np.triu_indices(dim)
    comoment[rows, cols] = packed
    comoment[cols, rows] = packed
    count = arrays[_COUNT]
    if count.shape != () or not np.issubdtype(count.dtype, np.integer) or count < 0:
        raise ValueError(f"the sample count must be a non-negative integer scalar, got {count!r}")
    if count == 0:  # a resumable job saved before its first sample
        return FeatureStats(dim)
    return FeatureStats.from_state(int(count), mu, comoment)
