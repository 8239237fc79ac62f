"""What the service answers when it does not do what was asked: :class:`Refusal` (an HTTP status and
a message naming the problem), and the mapping of every other exception to a JSON answer. A 500
names only its request ID: the details (SQL, paths, parameters) go to the log alone."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fastfid.service.observe import log, request_id, response_headers
from fastfid._text import size_text
from fastfid.service.store import CorruptFile, NotFound, QuotaExceeded


class Refusal(Exception):
    """A request the service refuses: an HTTP status and a message that names the problem."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}  # e.g. Retry-After


# Exception itself goes to Starlette's last-resort handler (a 500, logged); the rest are refusals.
HANDLED = (Refusal, HTTPException, LookupError, ValueError, TypeError, ArithmeticError, OSError, MemoryError, Exception)


async def error_response(request: Request, error: Exception) -> Response:
    """A JSON refusal, with the headers every response carries (this is also Starlette's last-resort
    handler, which answers from outside the middleware)."""
    identity = request_id(request.scope)
    status, message = status_of(error)
    if status >= 500 and not isinstance(error, Refusal):  # a 503 "busy" is said on purpose
        log.error("error", extra={"fields": {"path": request.url.path, "request_id": identity,
                                             "error": f"{type(error).__name__}: {error}"}}, exc_info=error)
        message = f"internal error: the server's log has the details under request ID {identity}"
    headers = response_headers(request.scope)
    if isinstance(error, (Refusal, HTTPException)) and error.headers:
        headers.update(error.headers)  # Retry-After; a 405's Allow
    return JSONResponse({"error": message, "request_id": identity}, status_code=status, headers=headers)


def status_of(error: Exception) -> tuple[int, str]:
    if isinstance(error, Refusal):
        return error.status, error.message
    if isinstance(error, HTTPException):
        if error.status_code == 404:
            return 404, "no such resource: see the README's list of routes"
        return error.status_code, str(error.detail)
    if isinstance(error, NotFound):
        return 404, str(error)
    if isinstance(error, QuotaExceeded):
        return 413, (f"token {error.uploader!r} has stored {size_text(error.stored)} of statistics; this upload "
                     f"({size_text(error.adding)}) would pass its quota of {error.quota / 2**20:g} MiB "
                     "(--max-stored-mb)")
    if isinstance(error, CorruptFile):
        return 500, ""
    if isinstance(error, MemoryError):
        return 413, "the upload needs more memory than this server allows"
    if isinstance(error, (ValueError, TypeError)):
        return 422, str(error)
    if isinstance(error, OverflowError):
        return 422, "a number is out of range"
    if isinstance(error, OSError):
        return 400, str(error)
    return 500, ""


async def send_refusal(error: Refusal, scope, receive, send) -> None:
    """A refusal answered from middleware, outside any handler."""
    await JSONResponse({"error": error.message}, status_code=error.status)(scope, receive, send)
