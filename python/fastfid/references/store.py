"""The references on this machine: ``$FASTFID_HOME/references/<publisher>/<publisher's file name>``,
downloaded once (resumable, with a progress bar), checked before they are kept, and checked again,
by the SHA-256 recorded at the first download, at every later read.

``FASTFID_REFERENCE_MIRROR=URL`` replaces every publisher's address (scheme and host) with that URL,
keeping the publisher's path: clusters without internet serve the files from one mirror.
"""

from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastfid._hashing import file_sha256
from fastfid.files.atomic import write_atomically, writing
from fastfid.files.home import fastfid_home
from fastfid.references.table import NamedReference, get_reference

__all__ = ["MIRROR_VARIABLE", "CachedReference", "cached", "fetch", "reference_path", "references_dir", "source_url"]

MIRROR_VARIABLE = "FASTFID_REFERENCE_MIRROR"
_TIMEOUT_SECONDS = 60
_CHUNK = 1 << 20


def references_dir() -> Path:
    return fastfid_home() / "references"


def _target(reference: NamedReference) -> Path:
    return references_dir() / reference.folder / reference.filename


def _record(target: Path) -> Path:
    return target.with_name(target.name + ".sha256")


def source_url(reference: NamedReference) -> str:
    """The publisher's address, or the mirror's with the publisher's path."""
    mirror = os.environ.get(MIRROR_VARIABLE)
    if not mirror:
        return reference.url
    path = urllib.parse.urlsplit(reference.url).path
    return mirror.rstrip("/") + path


@dataclass(frozen=True)
class CachedReference:
    reference: NamedReference
    path: Path
    size: int | None
    """Bytes on disk (None: not here)."""


def cached(name: str) -> CachedReference:
    reference = get_reference(name)
    target = _target(reference)
    return CachedReference(reference, target, target.stat().st_size if target.is_file() else None)


def reference_path(name: str, *, download: bool = True, progress: bool = True) -> Path:
    """The checked file of reference ``name``: downloaded first if it is not here (unless ``download``
    is False), its SHA-256 compared with the one recorded at its first download (or with the
    publisher's). A file that changed since is refused."""
    reference = get_reference(name)
    target = _target(reference)
    if not target.is_file():
        if not download:
            raise FileNotFoundError(f"reference {name} is not on this machine: `fastfid references fetch {name}`, or "
                                    f"put {reference.filename} (from {source_url(reference)}) in {target.parent}")
        return fetch(name, progress=progress)
    _check_recorded(reference, target)
    return target


def fetch(name: str, *, progress: bool = True) -> Path:
    """Download reference ``name`` into the references folder (resuming a partial download), check
    its content and hash, and keep it; returns its path. One that is already here is checked only."""
    reference = get_reference(name)
    target = _target(reference)
    if target.is_file():
        _check_recorded(reference, target)
        return target
    partial = target.parent / ".partial" / target.name  # under its own name, as messages name it
    partial.parent.mkdir(parents=True, exist_ok=True)
    with writing(partial):  # one fetcher of a file at a time: a second is refused in one line
        if target.is_file():  # fetched by another process while this one waited to start
            _check_recorded(reference, target)
            return target
        return _fetch_into(reference, target, partial, progress)


def _fetch_into(reference: NamedReference, target: Path, partial: Path, progress: bool) -> Path:
    name, url = reference.name, source_url(reference)
    try:
        _download(url, partial, progress, reference)
    except (OSError, http.client.HTTPException) as error:  # URLError is an OSError; a cut transfer: IncompleteRead
        if isinstance(error, urllib.error.HTTPError):
            error.close()  # it holds the refused response open
        raise OSError(f"cannot download reference {name} from {url} ({_reason(error)}): run the same command again "
                      f"to resume, or put {reference.filename} in {target.parent} (or set {MIRROR_VARIABLE} to a "
                      "mirror of the publishers' paths)") from error
    digest = file_sha256(partial)
    if reference.sha256 is not None and digest != reference.sha256:
        partial.unlink()
        raise OSError(f"the file downloaded from {url} has SHA-256 {digest}, not the publisher's {reference.sha256}: "
                      "it was not kept")
    try:
        check_content(reference, partial)
    except (OSError, ValueError) as error:
        partial.unlink()
        raise ValueError(f"the file downloaded from {url} is not a usable {name}: {error}; it was not kept") from error
    _write_record(target, digest, reference)
    os.replace(partial, target)
    return target


def _download(url: str, partial: Path, progress: bool, reference: NamedReference) -> None:
    """Into ``partial``, resuming from its length with an HTTP range request where the server allows."""
    have = partial.stat().st_size if partial.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=_TIMEOUT_SECONDS) as response:
        resumed = have > 0 and response.status == 206
        if not resumed:
            have = 0  # the server sent the whole file
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None and length.isdigit() else None
        bar = _bar(total, have, reference, progress)
        try:
            with open(partial, "ab" if resumed else "wb") as out:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
                out.flush()
                os.fsync(out.fileno())
        finally:
            bar.close()
    if total is not None and partial.stat().st_size != total:
        raise OSError(f"the transfer stopped at {partial.stat().st_size} of {total} bytes; run it again to resume")


def _bar(total, initial, reference: NamedReference, progress: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress,
                desc=reference.filename)


def _reason(error: Exception) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    if isinstance(error, http.client.IncompleteRead):
        return "the connection closed before the end of the file"
    return str(error) or type(error).__name__


def _write_record(target: Path, digest: str, reference: NamedReference) -> None:
    def write(stream) -> None:
        stream.write(f"{digest}  {reference.filename}\n".encode())

    write_atomically(_record(target), write)


def _check_recorded(reference: NamedReference, target: Path) -> None:
    """The file's SHA-256 against the publisher's, else the one recorded at its first download (a file
    put here by hand is checked for content and recorded at its first read)."""
    digest = file_sha256(target)
    expected = reference.sha256
    record = _record(target)
    if expected is None and record.is_file():
        expected = next(iter(record.read_text().split()), None)
    if expected is None:
        check_content(reference, target)
        _write_record(target, digest, reference)
        return
    if digest != expected:
        raise OSError(f"{target} changed since it was fetched (SHA-256 {digest[:16]}…, recorded {expected[:16]}…): "
                      f"refused; delete it and `fastfid references fetch {reference.name}` again")


# --- the content a reference of each format must have ------------------------------------------------
def check_content(reference: NamedReference, path: Path) -> None:
    """Keys, shapes, finite values and positive semidefinite covariances of a reference file (messages
    name it by the publisher's file name, whatever ``path`` is called)."""
    name = reference.filename
    if reference.format == "mu-sigma":
        from fastfid.files.stats import read_stats

        _check_covariance(read_stats(path).sigma, f"{name} sigma")
    elif reference.format == "kid-features":
        from fastfid.files.archive import open_npz

        with open_npz(path) as archive:
            if "feats" not in archive:
                raise ValueError(f"{name} holds no feats")
            feats = archive.read("feats")
        if feats.ndim != 2 or feats.shape[0] < 2 or not np.isfinite(feats).all():
            raise ValueError(f"{name}: feats must be a finite 2-D array of at least 2 rows, got {feats.shape}")
    elif reference.format == "edm2-pickle":
        from fastfid.files.nvidia import read_reference_pickle

        spaces, _ = read_reference_pickle(path)
        for space, stored in spaces.items():
            _check_covariance(stored.sigma, f"{name} [{space}] sigma")
    elif reference.format == "adm-batch":
        from fastfid.adm.batches import ImageBatch

        batch_stats = ImageBatch(path, name).statistics()
        if batch_stats is not None:
            _check_covariance(batch_stats.sigma, f"{name} sigma")
            _check_covariance(batch_stats.sigma_s, f"{name} sigma_s")
    else:  # pragma: no cover - the table's formats are the keys above
        raise ValueError(f"unknown format {reference.format!r}")


def _check_covariance(sigma, what: str) -> None:
    """Finite, symmetric and positive semidefinite: its smallest eigenvalue at least −1e-9 of its largest
    (rounding in a file written from float64 sums is far below that; a wrong matrix far above)."""
    sigma = np.asarray(sigma, dtype=np.float64)
    if sigma.ndim != 2 or sigma.shape[0] != sigma.shape[1]:
        raise ValueError(f"{what} must be a square matrix, got shape {sigma.shape}")
    if not np.isfinite(sigma).all():
        raise ValueError(f"{what} holds NaN or Inf values")
    if not np.allclose(sigma, sigma.T, rtol=0, atol=1e-12 * np.abs(sigma).max()):
        raise ValueError(f"{what} is not symmetric")
    eigenvalues = np.linalg.eigvalsh(sigma)
    if eigenvalues[0] < -1e-9 * max(eigenvalues[-1], 0.0):
        raise ValueError(f"{what} is not positive semidefinite (smallest eigenvalue {eigenvalues[0]:.3g}, largest "
                         f"{eigenvalues[-1]:.3g})")
