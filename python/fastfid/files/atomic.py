"""Writing files so that a reader sees the old file or the new one, never half of either: through a
temporary file beside the target, fsynced, then renamed; temporaries of killed writers are swept;
and outputs are checked before any work."""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TEMPORARY_SUFFIX = ".tmp"
LOCK_SUFFIX = ".lock"


@contextlib.contextmanager
def writing(path: str | os.PathLike):
    """Hold the right to write ``path`` for the block: a second writer, in another process or this
    one, is refused in one line. The lock is the kernel's (flock on ``PATH.lock``), so a writer that
    crashes or is killed releases it with its last file descriptor: a stale lock never blocks."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as before
        yield
        return
    target = Path(path)
    lock = target.with_name(target.name + LOCK_SUFFIX)
    while True:
        descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 200, 0).decode("utf-8", "replace").strip()
            os.close(descriptor)
            raise FileExistsError(f"{target} is being written by another fastfid ({holder or 'a running process'})"
                                  ": wait for it to finish, or write another file") from None
        if _same_file(descriptor, lock):
            break
        os.close(descriptor)  # locked a file its holder removed as it finished: lock the one there now
    try:
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(lock)  # while still held; a writer that opened it meanwhile sees it gone and retries
        os.close(descriptor)


def _same_file(descriptor: int, path: Path) -> bool:
    try:
        here, there = os.fstat(descriptor), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def write_atomically(target: Path, write: Callable[[BinaryIO], None]) -> None:
    """``write(stream)`` into a temporary file beside ``target``, then rename it into place. The
    temporary file is removed whatever fails (a full disk included), and those left by killed
    writers on this host are removed by the next write."""
    folder = target.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {target}: the folder {folder} does not exist")
    remove_abandoned_temporaries(folder, f".{target.name}.")
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=_temporary_prefix(target), suffix=TEMPORARY_SUFFIX)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
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


def remove_abandoned_temporaries(folder: Path, prefix: str = ".") -> int:
    """Remove the temporary files in ``folder`` (of targets whose name starts the file's after
    ``prefix``) that writers on this host left when killed; returns how many went."""
    host = f".{socket.gethostname()}."
    removed = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            name = entry.name
            if not (name.startswith(prefix) and name.endswith(TEMPORARY_SUFFIX) and host in name):
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
