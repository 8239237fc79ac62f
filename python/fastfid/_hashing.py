"""SHA-256 of streams and files, read in 1 MiB chunks (a leaf: models/, files/ and the service use it)."""

from __future__ import annotations

import hashlib
import os


def stream_sha256(handle) -> str:
    """SHA-256 of what is left in a binary stream."""
    digest = hashlib.sha256()
    for chunk in iter(lambda: handle.read(1 << 20), b""):
        digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    with open(path, "rb") as handle:
        return stream_sha256(handle)
