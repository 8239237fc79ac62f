"""Files: fastfid's exact statistics .npz (also read by pytorch-fid / clean-fid through ``mu`` and
``sigma``), the plain ``mu``/``sigma`` .npz of the peers, and ``.npy`` feature or image arrays.

Partial statistics (a checkpoint of an unfinished job) carry no ``mu``/``sigma``, so no peer can
mistake them for final ones, and fastfid refuses them unless asked (``allow_partial``). Sizes are
checked from the file's headers before anything large is read, and a save never leaves a
half-written file behind, neither in place of the old one nor beside it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import socket
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO, cast

import numpy as np

from fastfid.stats import FeatureStats

FORMAT_VERSION = 1
# Keys of fastfid's exact state, stored beside pytorch-fid's mu and sigma.
_COUNT, _COMOMENT, _FORMAT = "fastfid_count", "fastfid_comoment_upper", "fastfid_format"
# What the features are (FeatureStats.feature_space), and the progress record of a resumable job (JSON).
_FEATURE_SPACE, _PROGRESS = "fastfid_feature_space", "fastfid_progress"
# Statistics of several representation spaces in one file: the names (and valFDs) as JSON, and each
# space's statistics file, whole, as a byte array member "space<i>".
_SPACES = "fastfid_spaces"
# The mean of partial statistics: not "mu", which peers would read as final.
_PARTIAL_MEAN = "fastfid_partial_mean"
_TEMPORARY_SUFFIX = ".tmp"
# Reads smaller than this are not checked against the free memory (reading /proc/meminfo per file
# costs more than such a read: the service loads thousands of small files a minute).
_ALWAYS_AFFORDABLE = 64 << 20


class PartialStatisticsError(ValueError):
    """A statistics file holds an unfinished job's checkpoint where final statistics are needed."""


# --- writing -------------------------------------------------------------------------------------
def save_stats(stats: FeatureStats, path: str | os.PathLike, progress: dict | None = None) -> None:
    """Write stats to ``path`` exactly as named (no suffix is added), atomically. ``progress`` (a JSON-able
    dict) records how far a job got, for resuming it (see :func:`read_progress`); while its
    ``complete`` is false the file holds no ``mu``/``sigma``."""
    if stats.device != "cpu":
        stats = stats.to("cpu")
    if stats.count == 0 and progress is None:
        raise ValueError("refusing to save empty statistics (0 samples)")
    partial = progress is not None and not progress.get("complete", False)
    _write_npz(Path(path), _arrays_of(stats, progress, partial))


def save_spaces(spaces: dict[str, FeatureStats], path: str | os.PathLike, *, validation_fd: dict | None = None,
                progress: dict | None = None) -> None:
    """Statistics of several spaces (name → FeatureStats) in one file, atomically; ``validation_fd``
    (name → valFD) travels with them; ``progress`` as for :func:`save_stats`."""
    if not spaces:
        raise ValueError("no spaces to save")
    partial = progress is not None and not progress.get("complete", False)

    def write(stats: FeatureStats, stream: BinaryIO) -> None:
        if stats.device != "cpu":
            stats = stats.to("cpu")
        if stats.count == 0 and progress is None:
            raise ValueError("refusing to save empty statistics (0 samples)")
        np.savez(stream, **_arrays_of(stats, None, partial))

    arrays = _spaces_arrays(spaces, validation_fd, write)
    if progress is not None:
        arrays[_PROGRESS] = np.str_(json.dumps(progress))
    _write_npz(Path(path), arrays)


def _spaces_arrays(spaces: dict[str, FeatureStats], validation_fd: dict | None, write) -> dict[str, Any]:
    """The members of a file of several spaces: the JSON record, and each space's statistics file
    (as ``write(stats, stream)`` writes it) as the byte array ``space<i>``."""
    arrays: dict[str, Any] = {_SPACES: np.str_(json.dumps({"spaces": list(spaces),
                                                          "validation_fd": dict(validation_fd or {})}))}
    for index, stats in enumerate(spaces.values()):
        buffer = io.BytesIO()
        write(stats, buffer)
        arrays[f"space{index}"] = np.frombuffer(buffer.getbuffer(), dtype=np.uint8)
    return arrays


def holds_spaces(path: str | os.PathLike | BinaryIO) -> bool:
    """Whether ``path`` (or a seekable stream, left rewound) is a statistics file of several spaces
    (False for anything else, unreadable included)."""
    try:
        with _opened(path) as handle, zipfile.ZipFile(handle) as archive:
            return f"{_SPACES}.npy" in archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    finally:
        if _is_stream(path):
            cast(BinaryIO, path).seek(0)


def write_spaces(spaces: dict[str, FeatureStats], stream: BinaryIO, validation_fd: dict | None = None) -> None:
    """Statistics of several spaces on a binary stream, each as its exact state alone (see
    :func:`write_state`), for sending them over a network; :func:`load_spaces` reads it."""
    np.savez(stream, **_spaces_arrays(spaces, validation_fd, write_state))


def load_spaces(path: str | os.PathLike | BinaryIO, *, allow_partial: bool = False
                ) -> tuple[dict[str, FeatureStats], dict]:
    """(name → FeatureStats, name → valFD) of a file (or seekable stream) of several spaces; a file of
    one space's statistics gives that space alone (named by its feature space, ``"features"`` when it
    names none)."""
    from fastfid.models.spaces import space_of

    source, path = path, _name_of(path)
    with _open_npz(source) as data:
        headers = _headers(path, data)
        if _SPACES in headers:
            progress = _progress(path, data) if _PROGRESS in headers else None
            partial = progress is not None and not progress.get("complete", False)
            if partial and not allow_partial:
                raise PartialStatisticsError(
                    f"{path} holds partial statistics of an unfinished job ({_done(progress or {})}): finish "
                    "it with --resume, or accept them explicitly (--allow-partial / allow_partial=True)")
            parts, valfd = _space_parts(path, data, headers)
    if _SPACES not in headers:
        stats = load_stats(source, allow_partial=allow_partial)
        return {space_of(stats.feature_space) or "features": stats}, {}
    spaces = {}
    for name, part in parts.items():
        stream = io.BytesIO(part.tobytes())
        stream.name = f"{path} [{name}]"
        spaces[name] = load_stats(stream, allow_partial=partial)  # a finished file holds finished statistics
    return spaces, valfd


def _space_parts(path: Path, data, headers: dict) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """(name → the bytes of that space's statistics file, name → valFD) of a file of several spaces."""
    names, valfd = _space_names(path, data)
    members = [f"space{index}" for index in range(len(names))]
    missing = [m for m in members if m not in headers]
    if missing:
        raise OSError(f"{path} names {len(names)} spaces but lacks {missing}: the file is damaged")
    _check_inflation(path, data, headers)
    return {name: _read_member(path, data, member) for name, member in zip(names, members)}, valfd


def _space_names(path: Path, data) -> tuple[list[str], dict[str, float]]:
    """The names (distinct strings) and valFDs a file of several spaces records."""
    try:
        record = json.loads(str(_read_member(path, data, _SPACES)))
        names = list(record["spaces"])
        valfd = {str(k): float(v) for k, v in record["validation_fd"].items()}
        if not names or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
            raise ValueError(f"the names {names!r} are not distinct strings")
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise OSError(f"{path} has a corrupt list of spaces: {error}") from error
    return names, valfd


def _arrays_of(stats: FeatureStats, progress: dict | None, partial: bool) -> dict[str, Any]:
    count = stats.count or 0  # None (a count-less summary) is handled below
    # Only exact statistics of 0 samples (a job saved before its first) have no mean yet.
    mean = stats.mean if count or not stats.mergeable else np.zeros(stats.dim)
    arrays: dict[str, Any] = {_PARTIAL_MEAN if partial else "mu": mean}
    if stats.feature_space:
        arrays[_FEATURE_SPACE] = np.str_(stats.feature_space)
    if progress is not None:
        arrays[_PROGRESS] = np.str_(json.dumps(progress))
    if not stats.mergeable:
        arrays["sigma"] = stats.cov
        return arrays
    comoment = stats.comoment if count else np.zeros((stats.dim, stats.dim))
    # A partial job may hold 0 samples yet: its state is still exact (its mean is then zeros).
    arrays[_COUNT] = np.int64(count)
    arrays[_COMOMENT] = _pack_upper(comoment)  # the exact state, stored once
    arrays[_FORMAT] = np.int64(FORMAT_VERSION)
    if not partial:
        comoment /= max(count - 1, 1)  # in place: sigma costs no second d × d array
        arrays["sigma"] = comoment if count > 1 else np.zeros_like(comoment)
    return arrays


def write_state(stats: FeatureStats, stream: BinaryIO) -> None:
    """The exact state alone (count, mean, packed co-moment, feature space; no ``sigma``: a third of a
    statistics file's bytes) as an .npz on a binary stream, for sending statistics over a network
    (fastfid's service). :func:`load_stats` reads it; the peers, which need ``sigma``, do not."""
    if stats.device != "cpu":
        stats = stats.to("cpu")
    if not stats.mergeable or not stats.count:
        raise ValueError("only exact statistics of at least one sample can be written as a state")
    arrays: dict[str, Any] = {"mu": stats.mean, _COUNT: np.int64(stats.count),
                              _COMOMENT: _pack_upper(stats._upper_comoment()), _FORMAT: np.int64(FORMAT_VERSION)}
    if stats.feature_space:
        arrays[_FEATURE_SPACE] = np.str_(stats.feature_space)
    np.savez(stream, **arrays)


def _pack_upper(matrix: np.ndarray) -> np.ndarray:
    """The upper triangle row by row (numpy's triu_indices order) without d² index arrays."""
    d = matrix.shape[0]
    packed = np.empty(d * (d + 1) // 2)
    start = 0
    for row in range(d):
        packed[start:start + d - row] = matrix[row, row:]
        start += d - row
    return packed


def _write_npz(target: Path, arrays: dict) -> None:
    """Write through a temporary file beside the target, then rename: the target is either the old
    file or the new one. The temporary file is removed whatever fails (a full disk included), and
    those left by killed writers on this host are removed by the next save."""
    folder = target.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {target}: the folder {folder} does not exist")
    _remove_abandoned_temporaries(target)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=_temporary_prefix(target), suffix=_TEMPORARY_SUFFIX)
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **arrays)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o666 & ~_umask())  # the temporary file was private (0600)
        os.replace(temporary, target)
        _sync_folder(folder)  # the rename itself on disk, not only the file's bytes
    except BaseException as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(error, OSError):
            raise OSError(error.errno, f"cannot write {target}: {error.strerror or error}") from error
        raise


def _sync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # some file systems cannot fsync a folder; the file is synced anyway
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def _temporary_prefix(target: Path, pid: int | None = None) -> str:
    return f".{target.name}.{socket.gethostname()}.{os.getpid() if pid is None else pid}."


def _remove_abandoned_temporaries(target: Path) -> None:
    """Temporary files of writers of ``target`` on this host whose process is gone (kill -9 during a save)."""
    remove_abandoned_temporaries(target.parent, f".{target.name}.")


def remove_abandoned_temporaries(folder: Path, prefix: str = ".") -> int:
    """Remove the temporary files in ``folder`` (of targets whose name starts the file's after
    ``prefix``) that writers on this host left when killed; returns how many went."""
    host = f".{socket.gethostname()}."
    removed = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            name = entry.name
            if not (name.startswith(prefix) and name.endswith(_TEMPORARY_SUFFIX) and host in name):
                continue
            pid_text = name[name.rindex(host) + len(host):].partition(".")[0]
            if pid_text.isdigit() and not _process_alive(int(pid_text)):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed += 1
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable(path: str | os.PathLike, inputs=()) -> Path:
    """Refuse, before any work, an output that could not be written or that would overwrite an input."""
    target = Path(path)
    if target.suffix != ".npz":
        raise ValueError(f"{target}: statistics are written to a .npz file; name it {target}.npz")
    if target.is_dir():
        raise IsADirectoryError(f"{target} is a folder; give the .npz file to write")
    folder = target.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {target}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {target}: the folder {folder} is not writable")
    for source in inputs:
        if isinstance(source, (str, os.PathLike)) and Path(source).exists() and target.exists() \
                and os.path.samefile(source, target):
            raise ValueError(f"{target} is also an input: writing it would destroy the input; choose another name")
    return target


# --- reading -------------------------------------------------------------------------------------
# What zipfile and numpy raise for damaged archives; RuntimeError covers members that claim
# encryption and NotImplementedError (its subclass) an unknown compression method.
_CORRUPT = (zipfile.BadZipFile, EOFError, ValueError, zlib.error, KeyError, RuntimeError)


def load_stats(path: str | os.PathLike | BinaryIO, *, allow_partial: bool = False) -> FeatureStats:
    """Read a statistics .npz (a path, or a seekable binary stream such as an upload); raises OSError for
    unreadable or corrupt files, ValueError for bad contents (:class:`PartialStatisticsError` for an
    unfinished job's checkpoint, unless ``allow_partial``), MemoryError when its declared size exceeds
    the memory available."""
    source, path = path, _name_of(path)
    with _open_npz(source) as data:
        headers = _headers(path, data)
        if _SPACES in headers:
            names, _ = _space_names(path, data)
            raise ValueError(f"{path} holds statistics of {len(names)} spaces ({', '.join(map(str, names))}): read it "
                             "with fastfid.load_spaces, or give the space (--space NAME)")
        progress = _progress(path, data) if _PROGRESS in headers else None
        if progress is not None and not progress.get("complete", False) and not allow_partial:
            raise PartialStatisticsError(
                f"{path} holds partial statistics of an unfinished job ({_done(progress)}): finish it with "
                "`fastfid stats ... --resume`, or accept them explicitly (--allow-partial / allow_partial=True)")
        mean_key = "mu" if "mu" in headers else _PARTIAL_MEAN
        exact = _COUNT in headers
        needed = [mean_key, _COUNT, _COMOMENT, _FORMAT] if exact else ["mu", "sigma"]
        missing = [key for key in needed if key not in headers]
        if missing:
            raise ValueError(f"{path} is missing {missing}; it has keys {sorted(headers)}")
        _check_sizes(path, headers, mean_key, exact)
        _check_inflation(path, data, headers)
        arrays = {key: _read_member(path, data, key) for key in needed + [_FEATURE_SPACE] if key in headers}
    try:
        stats = _exact_stats(arrays, mean_key) if exact else FeatureStats.from_mean_cov(arrays["mu"], arrays["sigma"])
    except (ValueError, TypeError) as error:
        raise ValueError(f"{path}: {error}") from error
    if _FEATURE_SPACE in arrays:
        stats.feature_space = str(arrays[_FEATURE_SPACE])
    return stats


def read_progress(path: str | os.PathLike) -> dict | None:
    """The progress record saved with a job's statistics (None if the file has none)."""
    path = Path(path)
    with _open_npz(path) as data:
        return _progress(path, data) if _PROGRESS + ".npy" in data.zip.namelist() else None


def state_digest(stats: FeatureStats) -> str:
    """SHA-256 of the exact state (count, mean, co-moment): equal for the same samples, in any file."""
    digest = hashlib.sha256(np.int64(stats.count if stats.count is not None else -1).tobytes())
    digest.update(np.ascontiguousarray(stats.mean).tobytes())
    digest.update(np.ascontiguousarray(stats.comoment if stats.mergeable else stats.cov).tobytes())
    return digest.hexdigest()


def _done(progress: dict) -> str:
    try:
        return f"{progress['next'] - progress['start']} of {progress['stop'] - progress['start']} items done"
    except (KeyError, TypeError):
        return "not complete"


def _is_stream(source) -> bool:
    return hasattr(source, "read") and hasattr(source, "seek")


def _name_of(source) -> Path:
    """What messages call a file: its path, or a stream's name ("upload" when it has none)."""
    if _is_stream(source):
        name = getattr(source, "name", None)
        return Path(name if isinstance(name, str) and name else "upload")
    return Path(source)


@contextlib.contextmanager
def _opened(source):
    """A path opened here (and closed whatever fails), or a caller's stream rewound and left open."""
    if _is_stream(source):
        source.seek(0)
        yield source
        return
    with open(source, "rb") as handle:
        yield handle


def _stream_size(handle) -> int:
    position = handle.seek(0, os.SEEK_END)
    handle.seek(0)
    return position


@contextlib.contextmanager
def _open_npz(source):
    # The file is opened here, not by np.load, so that it is closed even when numpy fails midway.
    path = _name_of(source)
    with _opened(source) as handle:
        if _stream_size(handle) == 0:
            raise OSError(f"{path} is empty (0 bytes), not a statistics .npz file")
        try:
            data = np.load(handle, allow_pickle=False)
        except _CORRUPT as error:
            raise _corrupt(path, error) from error
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError(f"{path} holds a single array, not a statistics .npz with 'mu' and 'sigma'")
        with data:
            yield data


def _headers(path: Path, data) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every .npy member, from its header alone (nothing large is read)."""
    headers = {}
    for member in data.zip.namelist():
        if not member.endswith(".npy"):
            continue
        try:
            with data.zip.open(member) as stream:
                version = np.lib.format.read_magic(stream)
                reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, _, dtype = reader(stream)
        except _CORRUPT as error:
            raise _corrupt(path, error) from error
        if dtype.hasobject:
            raise ValueError(f"{path}: member {member} holds Python objects; statistics files hold numbers only")
        headers[member[:-4]] = (tuple(shape), dtype)
    return headers


# DEFLATE cannot shrink data by more than about 1032:1, and statistics of real features (float64
# means and covariances, whose mantissas look random) hardly shrink at all: a member that declares
# more than this many times its stored bytes is refused before it is inflated (a few MB that would
# unpack to gigabytes). Generous, for covariances with many constant features.
_MOST_INFLATION = 256


def _check_inflation(path: Path, data, headers: dict) -> None:
    for key, (shape, dtype) in headers.items():
        declared = math.prod(shape) * dtype.itemsize
        if declared < _ALWAYS_AFFORDABLE:
            continue
        stored = data.zip.getinfo(key + ".npy").compress_size
        if declared > _MOST_INFLATION * stored:
            raise ValueError(
                f"{path}: {key} declares {size_text(declared)} in {size_text(stored)} of compressed data, "
                f"more than {_MOST_INFLATION}:1, which statistics of real features never compress to; it was not "
                "unpacked. A genuine file can be saved again without compression (numpy.savez)")


def size_text(count: int) -> str:
    """A byte count as messages say it: "51,200 bytes", or "512 MiB" from a MiB on."""
    return f"{count:,} bytes" if count < 1 << 20 else f"{count / 2**20:,.0f} MiB"


def spaces_dims(path: str | os.PathLike | BinaryIO) -> list[int]:
    """The dimension of each space a statistics file (path or seekable stream) declares, from headers:
    a file of one space gives one."""
    if not holds_spaces(path):
        return [stats_dim(path)]
    with _open_npz(path) as data:
        parts, _ = _space_parts(_name_of(path), data, _headers(_name_of(path), data))
    return [stats_dim(io.BytesIO(part.tobytes())) for part in parts.values()]


def stats_dim(path: str | os.PathLike | BinaryIO) -> int:
    """The dimension a statistics .npz (a path or a seekable stream) declares, from its headers
    alone: nothing large is read or unpacked."""
    with _open_npz(path) as data:
        headers = _headers(_name_of(path), data)
    path = _name_of(path)
    mean_key = "mu" if "mu" in headers else _PARTIAL_MEAN
    if mean_key not in headers:
        raise ValueError(f"{path} is missing 'mu'; it has keys {sorted(headers)}")
    shape = headers[mean_key][0]
    if len(shape) != 1 or shape[0] < 1:
        raise ValueError(f"{path}: the mean must be a vector, got shape {shape}")
    return int(shape[0])


def _check_sizes(path: Path, headers: dict, mean_key: str, exact: bool) -> None:
    """Shapes consistent with the mean's dim, and the memory to read them, before any is read."""
    mean_shape = headers[mean_key][0]
    if len(mean_shape) != 1 or mean_shape[0] < 1:
        raise ValueError(f"{path}: the mean must be a vector, got shape {mean_shape}")
    d = mean_shape[0]
    expected = {_COMOMENT: (d * (d + 1) // 2,), _COUNT: (), _FORMAT: ()} if exact else {"sigma": (d, d)}
    for key, shape in expected.items():
        if headers[key][0] != shape:
            raise ValueError(f"{path}: {key} has shape {headers[key][0]}, expected {shape} for a mean of dim {d}")
    # Peak while reading: the stored matrix as float64 plus the full d × d state built from it.
    needed = 8 * (d * d + (d * (d + 1) // 2 if exact else d * d))
    if needed < _ALWAYS_AFFORDABLE:
        return
    available = available_memory()
    if available is not None and needed > available:
        raise MemoryError(f"{path} declares statistics of dim {d}, which need {needed / 2**30:.1f} GiB to read; "
                          f"{available / 2**30:.1f} GiB of memory is available")


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux MemAvailable), None if unknown."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return None


def _read_member(path: Path, data, key: str) -> np.ndarray:
    try:
        return data[key]
    except _CORRUPT as error:
        raise _corrupt(path, error) from error


def _progress(path: Path, data) -> dict:
    try:
        record = json.loads(str(_read_member(path, data, _PROGRESS)))
    except ValueError as error:
        raise OSError(f"{path} has a corrupt progress record: {error}") from error
    if not isinstance(record, dict):
        raise OSError(f"{path} has a corrupt progress record: {record!r}")
    return record


def _corrupt(path: Path, error: Exception) -> OSError:
    return OSError(f"{path} is not a readable .npz file (truncated or corrupt): {error}")


def _exact_stats(arrays: dict, mean_key: str) -> FeatureStats:
    version = int(arrays[_FORMAT])
    if version != FORMAT_VERSION:
        raise ValueError(f"unsupported fastfid statistics format {version} (this fastfid reads {FORMAT_VERSION})")
    mean = np.asarray(arrays[mean_key])
    dim = mean.shape[0]
    count = arrays[_COUNT]
    if count.shape != () or not np.issubdtype(count.dtype, np.integer) or count < 0:
        raise ValueError(f"the sample count must be a non-negative integer scalar, got {count!r}")
    if count == 0:  # a resumable job saved before its first sample
        return FeatureStats(dim)
    packed = arrays.pop(_COMOMENT)
    comoment = np.zeros((dim, dim))
    start = 0
    for row in range(dim):  # the upper triangle, row by row (the layout FeatureStats keeps)
        comoment[row, row:] = packed[start:start + dim - row]
        start += dim - row
    del packed
    return FeatureStats._adopt_state(int(count), np.array(mean, dtype=np.float64), comoment)


# --- feature and image arrays ----------------------------------------------------------------------
def stream_sha256(handle) -> str:
    """SHA-256 of what is left in a binary stream, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    for chunk in iter(lambda: handle.read(1 << 20), b""):
        digest.update(chunk)
    return digest.hexdigest()


def file_fingerprint(description: str, shape: str, content: bool) -> str:
    """An array's shape, and when it comes from a file, the file's size and modification time (or
    with ``content`` its SHA-256)."""
    path = Path(description)
    if not path.is_file():
        return shape
    if content:
        with open(path, "rb") as handle:
            return f"{shape} {stream_sha256(handle)}"
    info = path.stat()
    return f"{shape} {info.st_size} {info.st_mtime_ns}"



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
