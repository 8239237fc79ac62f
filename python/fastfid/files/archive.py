"""Reading .npz archives that may be hostile: the zip's central directory checked here, by this
code, before any member is read; every member's shape and dtype from its .npy header alone; a
member's declared size against its stored bytes before it is inflated; and members read as
windows onto the file, never as copies.

The central directory is parsed here rather than trusted to ``zipfile``: whether ``zipfile``
notices entries whose data overlap (many members pointing into one shared deflate stream, a few
kilobytes that inflate to gigabytes) depends on the interpreter's patch level (3.11.7 does not,
3.11.8 does). Here every entry's data must lie inside the file, after its own local header, before
the next entry, and at most :data:`MOST_MEMBERS` entries are read.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import struct
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from fastfid._text import size_text

# DEFLATE cannot shrink data by more than about 1032:1, and statistics of real features (float64
# means and covariances, whose mantissas look random) hardly shrink at all: a member that declares
# more than this many times its stored bytes is refused before it is inflated (a few MB that would
# unpack to gigabytes). Generous, for covariances with many constant features.
MOST_COMPRESSION_RATIO = 256
# Members smaller than this skip the inflation check when a local file is read (a user's own
# file); uploads check every member (fastfid.service.uploads).
_ALWAYS_AFFORDABLE = 64 << 20
# More members than any statistics file has (a file of several spaces: a few per space): an
# archive of more is refused before any is read (50,000 members cost seconds to list).
MOST_MEMBERS = 1024

# What zipfile and numpy raise for damaged archives; RuntimeError covers members that claim
# encryption and NotImplementedError (its subclass) an unknown compression method.
CORRUPT = (zipfile.BadZipFile, EOFError, ValueError, zlib.error, KeyError, RuntimeError, struct.error)

_END = struct.Struct("<4s4H2LH")            # end of central directory
_END64_LOCATOR = struct.Struct("<4sLQL")    # zip64 end of central directory locator
_END64 = struct.Struct("<4sQ2H2L4Q")        # zip64 end of central directory record
_CENTRAL = struct.Struct("<4s6H3L5H2L")     # central directory file header
_LOCAL = struct.Struct("<4s5H3L2H")         # local file header
_MOST_COMMENT = 0xFFFF


@dataclass(frozen=True)
class Entry:
    """One member of an archive, as its central directory and local header place it."""

    name: str
    method: int
    """0: stored, 8: deflated (the only two numpy writes and fastfid reads)."""
    stored_bytes: int
    size: int
    """Its declared size once inflated."""
    header_offset: int
    """Where its local header begins."""
    data_offset: int
    """Where its (stored or deflated) bytes begin in the file."""


def corrupt(path, error: Exception) -> OSError:
    return OSError(f"{path} is not a readable .npz file (truncated or corrupt): {error}")


def is_stream(source) -> bool:
    return hasattr(source, "read") and hasattr(source, "seek")


def name_of(source) -> Path:
    """What messages call a file: its path, or a stream's name ("upload" when it has none)."""
    if is_stream(source):
        name = getattr(source, "name", None)
        return Path(name if isinstance(name, str) and name else "upload")
    return Path(source)


@contextlib.contextmanager
def opened(source) -> Iterator[BinaryIO]:
    """A path opened here (and closed whatever fails), or a caller's stream rewound and left open."""
    if is_stream(source):
        source.seek(0)
        yield source
        return
    with open(source, "rb") as handle:
        yield handle


def stream_size(handle) -> int:
    size = handle.seek(0, os.SEEK_END)
    handle.seek(0)
    return size


def entries(handle: BinaryIO, path, *, most: int = MOST_MEMBERS) -> dict[str, Entry]:
    """The members of the zip archive on ``handle``, from its central directory, each checked: inside
    the file, after its own local header, not overlapping another, stored or deflated, not
    encrypted, named once. OSError names what is wrong."""
    size = stream_size(handle)
    tail_start = max(0, size - _END.size - _MOST_COMMENT)
    handle.seek(tail_start)
    tail = handle.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < _END.size:
        raise corrupt(path, ValueError("no zip end-of-directory record"))
    _, _, _, _, count, directory_size, directory_offset, _ = _END.unpack_from(tail, at)
    end_offset = tail_start + at
    if 0xFFFF in (count,) or 0xFFFFFFFF in (directory_size, directory_offset):
        count, directory_size, directory_offset = _zip64_directory(handle, path, end_offset)
    if count > most:
        raise ValueError(f"{path} holds {count:,} members; a statistics file holds at most {most:,}: refused before "
                         "any was read")
    if directory_offset + directory_size > end_offset:
        raise corrupt(path, ValueError("the central directory runs past its end record"))
    handle.seek(directory_offset)
    directory = handle.read(directory_size)
    found: dict[str, Entry] = {}
    position = 0
    for _ in range(count):
        if position + _CENTRAL.size > len(directory):
            raise corrupt(path, ValueError("the central directory is shorter than its entry count"))
        fields = _CENTRAL.unpack_from(directory, position)
        signature, flags, method, compressed, size_declared = fields[0], fields[3], fields[4], fields[8], fields[9]
        name_length, extra_length, comment_length, header_offset = fields[10], fields[11], fields[12], fields[16]
        start = position + _CENTRAL.size
        if signature != b"PK\x01\x02":
            raise corrupt(path, ValueError("a central directory entry has no signature"))
        raw_name = directory[start:start + name_length]
        extra = directory[start + name_length:start + name_length + extra_length]
        position = start + name_length + extra_length + comment_length
        compressed, size_declared, header_offset = _zip64_sizes(extra, compressed, size_declared, header_offset)
        name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", errors="replace")
        if flags & 0x1:
            raise ValueError(f"{path}: member {name} is encrypted; statistics files are not")
        if method not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ValueError(f"{path}: member {name} uses compression method {method}; .npz files are stored or "
                             "deflated")
        if method == zipfile.ZIP_STORED and compressed != size_declared:
            raise corrupt(path, ValueError(f"stored member {name} declares {size_declared} bytes in {compressed}"))
        if name in found:
            raise ValueError(f"{path}: member {name} appears twice; rebuild the file")
        found[name] = Entry(name, method, compressed, size_declared, header_offset,
                            _data_offset(handle, path, name, raw_name, header_offset))
    _refuse_overlaps(path, found.values(), directory_offset)
    return found


def _zip64_directory(handle, path, end_offset: int) -> tuple[int, int, int]:
    handle.seek(max(0, end_offset - _END64_LOCATOR.size))
    locator = handle.read(_END64_LOCATOR.size)
    if len(locator) != _END64_LOCATOR.size or locator[:4] != b"PK\x06\x07":
        raise corrupt(path, ValueError("no zip64 end-of-directory locator"))
    record_offset = _END64_LOCATOR.unpack(locator)[2]
    handle.seek(record_offset)
    record = handle.read(_END64.size)
    if len(record) != _END64.size or record[:4] != b"PK\x06\x06":
        raise corrupt(path, ValueError("no zip64 end-of-directory record"))
    fields = _END64.unpack(record)
    return fields[7], fields[8], fields[9]


def _zip64_sizes(extra: bytes, compressed: int, size: int, offset: int) -> tuple[int, int, int]:
    """The zip64 extra field's values for the 32-bit fields that say 0xFFFFFFFF."""
    position = 0
    while position + 4 <= len(extra):
        tag, length = struct.unpack_from("<2H", extra, position)
        body = extra[position + 4:position + 4 + length]
        position += 4 + length
        if tag != 0x0001:
            continue
        values = list(struct.unpack_from(f"<{len(body) // 8}Q", body))
        if size == 0xFFFFFFFF and values:
            size = values.pop(0)
        if compressed == 0xFFFFFFFF and values:
            compressed = values.pop(0)
        if offset == 0xFFFFFFFF and values:
            offset = values.pop(0)
    return compressed, size, offset


def _data_offset(handle, path, name: str, raw_name: bytes, header_offset: int) -> int:
    handle.seek(header_offset)
    header = handle.read(_LOCAL.size)
    if len(header) != _LOCAL.size or header[:4] != b"PK\x03\x04":
        raise corrupt(path, ValueError(f"member {name} has no local header where the directory says"))
    name_length, extra_length = _LOCAL.unpack(header)[9:11]
    if handle.read(name_length) != raw_name:
        raise corrupt(path, ValueError(f"member {name}'s local header names another file"))
    return header_offset + _LOCAL.size + name_length + extra_length


def _refuse_overlaps(path, members, directory_offset: int) -> None:
    """Each member's data inside the file, before the central directory, and apart from every other's."""
    previous_end, previous = 0, None
    for entry in sorted(members, key=lambda e: e.header_offset):
        end = entry.data_offset + entry.stored_bytes
        if end > directory_offset:
            raise ValueError(f"{path}: member {entry.name} claims bytes beyond the archive's data: refused")
        if previous is not None and entry.header_offset < previous_end:
            raise ValueError(f"{path}: members {previous} and {entry.name} share their bytes (overlapping zip entries, "
                             "a decompression bomb): refused before either was read")
        previous_end, previous = end, entry.name


class Window(io.RawIOBase):
    """Bytes ``[start, start + length)`` of a seekable binary file, as a file of their own (read-only,
    seekable): a stored member read in place, no copy."""

    def __init__(self, handle: BinaryIO, start: int, length: int, name: str):
        super().__init__()
        self._handle, self._start, self._length, self._position = handle, start, length, 0
        self.name = name

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._length}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer) -> int:
        wanted = min(len(buffer), max(0, self._length - self._position))
        if wanted == 0:
            return 0
        self._handle.seek(self._start + self._position)
        data = self._handle.read(wanted)
        buffer[:len(data)] = data
        self._position += len(data)
        return len(data)


@dataclass(frozen=True)
class Member:
    """An .npy member: its entry and its header (shape, dtype), read without its data."""

    entry: Entry
    shape: tuple[int, ...]
    dtype: np.dtype
    header_bytes: int
    """The .npy header's length: the array's data starts this far into the member."""

    @property
    def declared_bytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


class Npz:
    """An .npz opened for reading: its checked entries, each .npy member's header, and reads of
    members by name (``read``) or, for stored ones, as windows onto the file (``window``)."""

    def __init__(self, handle: BinaryIO, path, *, most: int = MOST_MEMBERS):
        self.handle, self.path = handle, path
        self.entries = entries(handle, path, most=most)
        handle.seek(0)
        try:
            self.zip = zipfile.ZipFile(handle)
        except CORRUPT as error:
            raise corrupt(path, error) from error
        self.members = {name[:-4]: self._member(self.entries[name]) for name in self.entries if name.endswith(".npy")}

    def _member(self, entry: Entry) -> Member:
        try:
            with self.zip.open(entry.name) as stream:
                version = np.lib.format.read_magic(stream)
                reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, fortran, dtype = reader(stream)
                header = stream.tell()
        except CORRUPT as error:
            raise corrupt(self.path, error) from error
        if dtype.hasobject:
            raise ValueError(f"{self.path}: member {entry.name} holds Python objects; statistics files hold "
                             "numbers only")
        if fortran and len(shape) > 1:
            raise ValueError(f"{self.path}: member {entry.name} is Fortran-ordered; fastfid writes C order")
        return Member(entry, tuple(int(n) for n in shape), dtype, header)

    def __contains__(self, key: str) -> bool:
        return key in self.members

    def check_inflation(self, keys=None, *, every: bool = False) -> None:
        """Refuse, before inflating, members that declare more than MOST_COMPRESSION_RATIO times their stored
        bytes (``every``: also the small ones, as uploads are checked)."""
        for key in self.members if keys is None else keys:
            member = self.members[key]
            declared = member.declared_bytes
            if declared < _ALWAYS_AFFORDABLE and not every:
                continue
            stored = max(member.entry.stored_bytes, 1)
            if declared > MOST_COMPRESSION_RATIO * stored:
                raise ValueError(
                    f"{self.path}: {key} declares {size_text(declared)} in {size_text(stored)} of compressed data, "
                    f"more than {MOST_COMPRESSION_RATIO}:1, which statistics of real features never compress to; it "
                    "was not unpacked. A genuine file can be saved again without compression (numpy.savez)")

    def read(self, key: str) -> Any:
        try:
            with self.zip.open(f"{key}.npy") as stream:
                return np.lib.format.read_array(stream, allow_pickle=False)
        except CORRUPT as error:
            raise corrupt(self.path, error) from error

    def window(self, key: str) -> Window | None:
        """A stored member's array data as a file of its own (None for a deflated member)."""
        member = self.members[key]
        if member.entry.method != zipfile.ZIP_STORED:
            return None
        return Window(self.handle, member.entry.data_offset + member.header_bytes,
                      member.entry.size - member.header_bytes, f"{self.path} [{key}]")


@contextlib.contextmanager
def open_npz(source, *, most: int = MOST_MEMBERS) -> Iterator[Npz]:
    """An .npz (a path, or a seekable binary stream left open) checked and ready to read."""
    path = name_of(source)
    with opened(source) as handle:
        if stream_size(handle) == 0:
            raise OSError(f"{path} is empty (0 bytes), not a statistics .npz file")
        if handle.read(4) not in (b"PK\x03\x04", b"PK\x05\x06"):  # a member first, or an empty archive
            handle.seek(0)
            if handle.read(6) == b"\x93NUMPY":
                raise ValueError(f"{path} holds a single array, not a statistics .npz with 'mu' and 'sigma'")
            raise corrupt(path, ValueError("not a zip archive"))
        archive = Npz(handle, path, most=most)
        try:
            yield archive
        finally:
            archive.zip.close()


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux MemAvailable), None if unknown."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return None


def check_memory(path, needed: int, what: str) -> None:
    """MemoryError, before reading, when ``needed`` bytes exceed the memory available (small reads
    skip the check: reading /proc/meminfo per file costs more than they do)."""
    if needed < _ALWAYS_AFFORDABLE:
        return
    available = available_memory()
    if available is not None and needed > available:
        raise MemoryError(f"{path} declares {what}, which need {needed / 2**30:.1f} GiB to read; "
                          f"{available / 2**30:.1f} GiB of memory is available")
