"""Reading requests: multipart forms and their fields, and uploaded files, each inspected **once**
into an :class:`Upload` (its kind, each space's declared dim and feature space, its SHA-256) before
any array in it is read. Every check of a request reads that value; the arrays are read afterwards,
by the ``Upload.read_*`` methods, which open the archive a second and last time.

The inspection trusts nothing the client sent: the zip's central directory is checked by
fastfid.files.archive (overlapping or out-of-file entries, member count), every member's declared
size is held against its stored bytes whatever its size, text members are capped, and a file of
several spaces must hold its spaces stored, as fastfid writes them, so that each is read in place.
"""

from __future__ import annotations

import contextlib
import enum
import json
import math
import re
import zipfile
from dataclasses import dataclass
from urllib.parse import parse_qs

import numpy as np
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartParser
from starlette.requests import Request

from fastfid._hashing import stream_sha256
from fastfid.files import format as keys
from fastfid.files.archive import Npz, Window, open_npz, stream_size
from fastfid.files.spaces import space_archives, space_names, spaces_from_archive
from fastfid.files.stats import declared_dim, layout, stats_from_archive
from fastfid.service.auth import Principal
from fastfid.service.errors import Refusal, send_refusal
from fastfid.service.limits import BODY_REFUSALS, BodyGate
from fastfid.stats import FeatureStats

MOST_FILES = 1000  # shards in one post
KEY_SCOPE_CHARS = 17  # what an idempotency key's stored scope puts before the client's key


# --- forms ---------------------------------------------------------------------------------------
class _Parser(MultiPartParser):
    # Starlette spills a file part to disk past 1 MiB, writing each 64 KiB chunk through the thread
    # pool; parts up to 4 MiB (d = 700 statistics) stay in memory, larger ones go to disk, so that
    # concurrent large uploads cost disk, not memory (a d = 2048 file spends 30–50 ms more).
    spool_max_size = 4 << 20


@contextlib.asynccontextmanager
async def read_form(request: Request, gate: BodyGate, sender: Principal):
    """The request's multipart form, its body received whole (file parts spooled) under ``gate``'s
    place for ``sender``'s token: before the request waits for a work slot."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise Refusal(415, f"send a multipart/form-data upload, not {content_type or 'no content type'!r}")
    async with gate.receiving(sender.id, sender.name):
        try:
            form = await _Parser(request.headers, request.stream(), max_files=MOST_FILES, max_fields=100).parse()
        except BODY_REFUSALS:
            raise
        except Exception as error:  # the multipart parser's own errors: a malformed body
            raise Refusal(400, f"malformed multipart upload: {error}") from error
    try:
        yield form
    finally:
        await form.close()


async def small_form(request: Request, limit: int = 4096) -> dict[str, str]:
    """The fields of a small url-encoded form (the sign-in), read up to ``limit`` bytes and no further."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("application/x-www-form-urlencoded"):
        raise Refusal(415, f"send an application/x-www-form-urlencoded form, not {content_type or 'no content type'!r}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise Refusal(413, f"a form of more than {limit} bytes")
    try:
        fields = parse_qs(body.decode("ascii"), max_num_fields=8, strict_parsing=False)
    except (UnicodeDecodeError, ValueError) as error:
        raise Refusal(400, f"malformed form: {error}") from error
    return {name: values[0] for name, values in fields.items()}


_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # C0 controls but tab and line ends, and DEL


def free_of_controls(value: str, what: str) -> str:
    """Refuse NUL and other control characters in any text a request sends (a database may refuse
    them, PostgreSQL does: never a 500)."""
    if _CONTROLS.search(value):
        raise Refusal(422, f"{what} holds a control character (NUL, ...): {value[:60]!r}")
    return value


class TextInputs:
    """Middleware: a request whose path or query holds a control character is refused (400) before
    any handler, whatever the route."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
            texts = [("the path", scope.get("path", ""))] + [
                ("the query", text) for name, values in query.items() for text in (name, *values)]
            for what, text in texts:
                if _CONTROLS.search(text):
                    refusal = Refusal(400, f"{what} holds a control character (NUL, ...)")
                    return await send_refusal(refusal, scope, receive, send)
        await self.app(scope, receive, send)


def files(form, name: str) -> list[UploadFile]:
    return [item for item in form.getlist(name) if isinstance(item, UploadFile)]


def field(form, name: str) -> str | None:
    value = form.get(name)
    if isinstance(value, UploadFile):
        raise Refusal(422, f"{name} is a field, not a file")
    return free_of_controls(value, f"the field {name!r}") if value else None


def required(form, name: str) -> str:
    value = field(form, name)
    if value is None:
        raise Refusal(422, f"the field {name!r} is required")
    return value


def valid_name(value: str, what: str, *, slash: bool = False) -> str:
    """A name as stored: 1–200 printable characters (no control, format or bidi characters, which
    would hide what a name says), and no '/' where the name is a path segment."""
    if not value or len(value) > 200 or not value.isprintable() or (not slash and "/" in value):
        rule = "printable" if slash else "printable, no '/'"
        raise Refusal(422, f"invalid {what} {value!r}: 1–200 characters, {rule}")
    return value


def optional_name(value: str | None, what: str) -> str | None:
    return None if value is None else valid_name(value, what, slash=True)


MOST_LABEL_CHARS = 1000


def valid_label(value: str | None, what: str) -> str | None:
    """A feature-space label as stored: printable (no control, format or bidi character), at most
    MOST_LABEL_CHARS characters (fastfid's own are about a hundred)."""
    if value is not None and (not value or len(value) > MOST_LABEL_CHARS or not value.isprintable()):
        raise Refusal(422, f"invalid {what} {value[:60]!r}: 1–{MOST_LABEL_CHARS} printable characters")
    return value


def number(form, name: str) -> float:
    text = required(form, name)
    try:
        value = float(text)
    except ValueError:
        raise Refusal(422, f"{name} must be a number, got {text!r}") from None
    if not np.isfinite(value):
        raise Refusal(422, f"{name} must be finite, got {text!r}")
    return value


_INTEGER = re.compile(r"-?[0-9]{1,20}")
# What the store's integer columns hold on every database (PostgreSQL's integer and bigint).
IDS = (1, 2**31 - 1)
SEEDS = (-(2**63), 2**63 - 1)


def optional_int(text: str | None, name: str, limits: tuple[int, int] = IDS) -> int | None:
    """An integer field, checked at the edge against what the store can hold (an out-of-range one
    would otherwise fail inside the database)."""
    if text is None or text == "":
        return None
    low, high = limits
    value = int(text) if _INTEGER.fullmatch(text) else None  # ASCII digits only: int() also takes "٣"
    if value is None or not low <= value <= high:
        raise Refusal(422, f"{name} must be an integer in {low} … {high}, got {text[:40]!r}")
    return value


def idempotency_key(text: str | None) -> str | None:
    """The key as sent (scoped to the token when stored): at most what the store's column holds."""
    longest = 200 - KEY_SCOPE_CHARS
    if text and (len(text) > longest or not text.isprintable() or not text.isascii()):
        raise Refusal(422, f"Idempotency-Key: 1–{longest} printable ASCII characters")
    return text or None


def validation_fd(text: str | None) -> dict[str, float]:
    """The ``validation_fd`` field: a JSON object of space → valFD (positive numbers)."""
    if text is None:
        return {}
    try:
        values = json.loads(text)
    except ValueError:
        values = None
    if not isinstance(values, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
            for v in values.values()):
        raise Refusal(422, "validation_fd: a JSON object of space name → valFD, each a positive number")
    return {str(k): float(v) for k, v in values.items()}


# --- uploaded files ------------------------------------------------------------------------------
class Kind(enum.Enum):
    STATS = "statistics"
    SPACES = "statistics of several spaces"
    FEATURES = "features"


@dataclass(frozen=True)
class Declared:
    """What a file declares of one space, from its headers and text members: no array read."""

    dim: int
    feature_space: str | None
    rows: int | None = None
    """Feature rows (a features upload), else None."""


ONE_SPACE = ""  # the key of a file of one space's statistics, or of features, in Upload.spaces


@dataclass
class Upload:
    """One uploaded file, inspected once: its form field (``part``), its kind, each space's
    declaration (``spaces``; a file of one space or features under ONE_SPACE), its SHA-256 and size.
    The ``read_*`` methods read its arrays, after the request's checks."""

    part: str
    filename: str
    kind: Kind
    spaces: dict[str, Declared]
    sha256: str
    size: int
    _file: Window

    @classmethod
    def inspect(cls, upload: UploadFile, part: str) -> "Upload":
        handle = upload.file
        handle.seek(0)
        digest = stream_sha256(handle)
        size = stream_size(handle)
        label = f"the upload {upload.filename!r}"
        file = Window(handle, 0, size, label)  # names the upload in every message
        if part == "features":
            return cls(part, upload.filename or "", Kind.FEATURES, {ONE_SPACE: _features_declared(file, label, size)},
                       digest, size, file)
        try:
            with open_npz(file) as archive:
                _check_members(archive)
                kind, spaces = _declared_spaces(archive)
        except (OSError, ValueError, MemoryError) as error:
            raise _refusal(error) from error
        return cls(part, upload.filename or "", kind, spaces, digest, size, file)

    @property
    def dims(self) -> list[int]:
        return [declared.dim for declared in self.spaces.values()]

    def read_stats(self) -> FeatureStats:
        """The statistics of a STATS upload."""
        with self._archive() as archive:
            return FeatureStats.from_stored(stats_from_archive(archive), archive.path)

    def read_spaces(self) -> dict[str, FeatureStats]:
        """Each space's statistics of a SPACES upload."""
        with self._archive() as archive:
            stored, _ = spaces_from_archive(archive)
            return {name: FeatureStats.from_stored(part, f"{archive.path} [{name}]") for name, part in stored.items()}

    def read_features(self) -> np.ndarray:
        """The rows of a FEATURES upload."""
        self._file.seek(0)
        try:
            return np.load(self._file, allow_pickle=False)
        except (ValueError, EOFError, OSError) as error:
            raise Refusal(400, f"{self._file.name} is not a readable .npy array (pickled, truncated or corrupt): "
                               f"{error}") from error

    def as_stats(self) -> FeatureStats:
        """A reference's or canary's statistics: a STATS upload's, or those of a FEATURES upload's rows."""
        return FeatureStats.from_features(self.read_features()) if self.kind is Kind.FEATURES else self.read_stats()

    @contextlib.contextmanager
    def _archive(self):
        try:
            with open_npz(self._file) as archive:
                yield archive
        except (OSError, ValueError, MemoryError) as error:
            raise _refusal(error) from error


def inspect_all(form, parts=("stats", "shard", "features")) -> list[Upload]:
    """Every file of the form's ``parts``, inspected."""
    return [Upload.inspect(upload, part) for part in parts for upload in files(form, part)]


def _refusal(error: Exception) -> Refusal:
    if isinstance(error, Refusal):
        return error
    status = 400 if isinstance(error, OSError) else 413 if isinstance(error, MemoryError) else 422
    return Refusal(status, str(error))


def _check_members(archive: Npz) -> None:
    """Every member declares at most MOST_COMPRESSION_RATIO times its stored bytes (uploads pay for
    nothing they did not carry, however small), and text members are short strings."""
    archive.check_inflation(every=True)
    for key in keys.METADATA:
        if key not in archive:
            continue
        member = archive.members[key]
        if member.dtype.kind != "U" or member.shape != () or member.dtype.itemsize > 4 * keys.MOST_METADATA_CHARS:
            raise Refusal(422, f"{archive.path}: {key} must be a short text ({keys.MOST_METADATA_CHARS:,} "
                               f"characters at most); it declares {member.shape} of {member.dtype}")


def _label(archive: Npz) -> str | None:
    """The feature space a statistics file names (checked as the field is)."""
    label = str(archive.read(keys.FEATURE_SPACE)) if keys.FEATURE_SPACE in archive else None
    return valid_label(label, f"feature space of {archive.path}")


def _declared_spaces(archive: Npz) -> tuple[Kind, dict[str, Declared]]:
    if keys.SPACES not in archive:
        layout(archive)  # shapes consistent with the mean's dim
        return Kind.STATS, {ONE_SPACE: Declared(declared_dim(archive), _label(archive))}
    names, _ = space_names(archive)
    for name in names:
        valid_name(name, "space name")
        member = archive.members.get(keys.space_member(names.index(name)))
        if member is not None and (member.entry.method != zipfile.ZIP_STORED or member.dtype != np.uint8
                                   or len(member.shape) != 1):
            raise Refusal(422, f"{archive.path}: space {name!r} must be stored uncompressed, as fastfid writes "
                               "files of several spaces (SpaceStats.save); save it again")
    spaces = {}
    with space_archives(archive, names) as inner:
        for name, space in inner.items():
            _check_members(space)
            layout(space)
            spaces[name] = Declared(declared_dim(space), _label(space))
    return Kind.SPACES, spaces


def _features_declared(file: Window, label: str, size: int) -> Declared:
    """A .npy of features: its header only, checked against the bytes carried."""
    try:
        version = np.lib.format.read_magic(file)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f".npy format version {version} (fastfid reads 1.0 and 2.0)")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(file)  # the header only
    except (ValueError, EOFError, OSError) as error:
        raise Refusal(400, f"{label} is not a readable .npy array: {error}") from error
    if len(shape) != 2 or dtype.kind not in "fiu" or dtype.hasobject:
        raise Refusal(422, f"features are a 2-D numeric array (samples × dim); {label} declares shape {shape} "
                           f"of {dtype}")
    declared, carried = math.prod(shape) * dtype.itemsize, size - file.tell()
    if declared > carried:
        raise Refusal(400, f"{label} declares {declared:,} bytes of features but holds {max(carried, 0):,}: it is "
                           "truncated")
    return Declared(int(shape[1]), None, int(shape[0]))
