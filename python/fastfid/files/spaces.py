"""Files of several representation spaces: a JSON record of the spaces' names (and valFDs), and
each space's statistics file, whole, as the byte array member ``space<i>``. fastfid writes those
members stored (uncompressed), so each is read in place, as a window onto the file.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from fastfid.files import format as keys
from fastfid.files.archive import Npz, open_npz
from fastfid.files.atomic import write_atomically
from fastfid.files.stats import StoredStats, read_progress_of, stats_arrays, stats_from_archive, write_state


def save_spaces(spaces: dict[str, StoredStats], path: str | os.PathLike, *, validation_fd: dict | None = None,
                progress: dict | None = None) -> None:
    """Statistics of several spaces (name → StoredStats) in one file, atomically; ``validation_fd``
    (name → valFD) travels with them; ``progress`` as for fastfid.files.stats.save_stats."""
    if not spaces:
        raise ValueError("no spaces to save")
    partial = progress is not None and not progress.get("complete", False)

    def write(stats: StoredStats, stream: BinaryIO) -> None:
        # A partial file's spaces are partial too (no mu, no sigma); the progress record is the file's.
        np.savez(stream, **stats_arrays(stats, partial=partial, allow_empty=progress is not None))

    arrays = _members(spaces, validation_fd, write)
    if progress is not None:
        arrays[keys.PROGRESS] = np.str_(json.dumps(progress))
    write_atomically(Path(path), lambda stream: np.savez(stream, **arrays))


def write_spaces(spaces: dict[str, StoredStats], stream: BinaryIO, validation_fd: dict | None = None) -> None:
    """Statistics of several spaces on a binary stream, each as its exact state alone
    (fastfid.files.stats.write_state), for sending them over a network."""
    np.savez(stream, **_members(spaces, validation_fd, write_state))


def _members(spaces: dict[str, StoredStats], validation_fd: dict | None, write) -> dict[str, Any]:
    arrays: dict[str, Any] = {keys.SPACES: np.str_(json.dumps({"spaces": list(spaces),
                                                               "validation_fd": dict(validation_fd or {})}))}
    for index, stats in enumerate(spaces.values()):
        buffer = io.BytesIO()
        write(stats, buffer)
        arrays[keys.space_member(index)] = np.frombuffer(buffer.getbuffer(), dtype=np.uint8)
    return arrays


def holds_spaces(source: str | os.PathLike | BinaryIO) -> bool:
    """Whether ``source`` (a path, or a seekable stream, left rewound) is a statistics file of several
    spaces, or an EDM2 reference pickle (False for anything else, unreadable included)."""
    from fastfid.files.nvidia import is_pickle

    if is_pickle(source):
        return True
    try:
        with open_npz(source) as archive:
            return keys.SPACES in archive
    except (OSError, ValueError):
        return False
    finally:
        if hasattr(source, "seek"):
            source.seek(0)


def space_names(archive: Npz) -> tuple[list[str], dict[str, float]]:
    """The names (distinct strings) and valFDs a file of several spaces records."""
    try:
        return keys.spaces_record(str(archive.read(keys.SPACES)))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise OSError(f"{archive.path} has a corrupt list of spaces: {error}") from error


@contextlib.contextmanager
def space_archives(archive: Npz, names: list[str]) -> Iterator[dict[str, Npz]]:
    """Each space's statistics file, opened (and checked) as an archive of its own: a stored member in
    place, a compressed one (a file re-saved compressed) inflated after the inflation check."""
    members = [keys.space_member(index) for index in range(len(names))]
    missing = [m for m in members if m not in archive]
    if missing:
        raise OSError(f"{archive.path} names {len(names)} spaces but lacks {missing}: the file is damaged")
    with contextlib.ExitStack() as stack:
        opened = {}
        for name, member in zip(names, members):
            inner: Any = archive.window(member)
            if inner is None:
                archive.check_inflation([member])
                inner = io.BytesIO(archive.read(member).tobytes())
                inner.name = f"{archive.path} [{name}]"
            opened[name] = stack.enter_context(open_npz(inner))
        yield opened


def spaces_from_archive(archive: Npz, *, allow_partial: bool = False
                        ) -> tuple[dict[str, StoredStats], dict[str, float]]:
    """(name → StoredStats, name → valFD) of an opened file of several spaces."""
    progress = read_progress_of(archive)
    partial = progress is not None and not progress.get("complete", False)
    if partial and not allow_partial:
        raise keys.PartialStatisticsError(
            f"{archive.path} holds partial statistics of an unfinished job ({keys.done_text(progress or {})}): "
            "finish it with --resume, or accept them explicitly (--allow-partial / allow_partial=True)")
    names, valfd = space_names(archive)
    with space_archives(archive, names) as inner:
        # A finished file holds finished statistics: allow_partial reaches the spaces only when partial.
        return {name: stats_from_archive(inner[name], allow_partial=partial) for name in names}, valfd


def read_spaces(source: str | os.PathLike | BinaryIO, *, allow_partial: bool = False
                ) -> tuple[dict[str, StoredStats], dict[str, float]]:
    """(name → StoredStats, name → valFD) of a file of several spaces."""
    with open_npz(source) as archive:
        if keys.SPACES not in archive:
            raise ValueError(f"{archive.path} holds the statistics of one space, not of several")
        return spaces_from_archive(archive, allow_partial=allow_partial)
