"""The ASGI app (Starlette): REST resources under /references, /evaluations, /canaries and
/models, plus /healthz, /readyz and /metrics.

Requests carry ``Authorization: Bearer TOKEN``; a token has the scope "read", "evaluate" (post
evaluations, and read) or "admin" (references and canaries too), and is stored hashed. Reads need a
token unless the service was started with ``public_read``; writes always need a token of their
scope in that header. Browsers sign in at /signin with a read token, kept in an HttpOnly,
SameSite=Strict cookie that grants reading only (see pages.py); the pages for people are /
(models and references) and /models/{model}. Uploads are multipart forms whose files are
statistics ``.npz`` (read without pickle) or feature ``.npy``, bounded by their headers before
they are read; every refusal is a JSON 4xx (a 503 when busy) with ``{"error": "..."}`` naming the
problem, and changes nothing in the store.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import math
import os
import re
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartParser
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Match, Route

from fastfid import __version__
from fastfid.io import holds_spaces, load_spaces, load_stats, size_text, spaces_dims, stream_sha256
from fastfid.service import history, pages
from fastfid.service.canaries import Alerts, run_all, run_canary
from fastfid.service.evaluation import (KEY_SCOPE_CHARS, ReferenceCache, ServiceError, Submission, agreed_space,
                                         check_reference, evaluate, evaluate_spaces, split_by_space)
from fastfid.service.metrics import CONTENT_TYPE, Metrics
from fastfid.service.store import SCOPES, CorruptFile, NotFound, Store, jsonable, state_bytes
from fastfid.stats import FeatureStats

log = logging.getLogger("fastfid.service")
CONFIG_VARIABLE = "FASTFID_SERVICE_CONFIG"
_MAX_FILES = 1000  # shards in one post


@dataclass
class ServiceConfig:
    store: str
    database_url: str | None = None
    public_read: bool = False
    public_metrics: bool = False
    max_upload_mb: float = 1024.0
    max_dim: int = 16384
    max_state_mb: float = 4096.0
    max_requests_per_minute: int = 6000  # per token and server process; 0: no limit
    max_running: int = 0  # heavy requests at once per process (0: the cores, at least 2)
    max_queue: int = 64  # heavy requests waiting per process; beyond, 503
    body_timeout: float = 30.0  # seconds without body bytes before a 408
    header_timeout: float = 10.0  # seconds to send a request's headers (the server's protocol)
    max_stored_mb: float = 10240.0  # reference statistics per token
    cache_size: int = 8
    webhook: str | None = None
    webhook_attempts: int = 5
    webhook_backoff: float = 1.0
    canary_every: float | None = None  # seconds


# --- logging -------------------------------------------------------------------------------------
class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, message and the record's ``fields``."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name,
                 "message": record.getMessage()}
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(stream=None) -> None:
    """JSON lines on stderr for the service's logger (once per process)."""
    if any(getattr(handler, "_fastfid", False) for handler in log.handlers):
        return
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._fastfid = True  # type: ignore[attr-defined]
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


# --- middleware ----------------------------------------------------------------------------------
class _TooLarge(ServiceError):
    def __init__(self, limit_mb: float):
        super().__init__(413, f"upload too large: the limit is {limit_mb:g} MiB (fastfid serve --max-upload-mb)")


class _Stalled(ServiceError):
    def __init__(self, seconds: float):
        super().__init__(408, f"the request body stalled: no bytes for {seconds:g} s (--body-timeout)")


class UploadLimit:
    """413 for a body over ``limit`` bytes: by its Content-Length before anything is read, or as
    the bytes arrive when it declares none; 408 when the body stops arriving for ``idle_seconds``
    (a slow sender holds a connection and a worker slot, never for long)."""

    def __init__(self, app, limit_mb: float, idle_seconds: float = 30.0):
        self.app, self.limit_mb, self.limit = app, limit_mb, int(limit_mb * 2**20)
        self.idle_seconds = idle_seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await _send_refusal(_TooLarge(self.limit_mb), scope, receive, send)
        received = 0
        started = False
        complete = False

        async def counting_receive():
            nonlocal received, complete
            if complete:  # after the body, receive() waits for a disconnect: no deadline
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.idle_seconds)
            except asyncio.TimeoutError:
                raise _Stalled(self.idle_seconds) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > self.limit:
                    raise _TooLarge(self.limit_mb)  # the app's handler answers 413
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except (_TooLarge, _Stalled) as error:  # read outside a handler
            if not started:
                await _send_refusal(error, scope, receive, send)


async def _send_refusal(error: ServiceError, scope, receive, send) -> None:
    await JSONResponse({"error": error.message}, status_code=error.status)(scope, receive, send)


# Sent with every response: no sniffing of JSON as HTML, and pages that run no script, load
# nothing from elsewhere, post forms only here and are framed by no one.
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id(scope) -> str:
    """This request's ID: the caller's X-Request-ID if it is a plain token, else a new one; kept in
    the scope so that the log line and an error response name the same."""
    state = scope.setdefault("state", {})
    if "request_id" not in state:
        given = dict(scope.get("headers") or ()).get(b"x-request-id", b"").decode("latin-1")
        state["request_id"] = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    return state["request_id"]


def response_headers(scope) -> dict[str, str]:
    """What every response carries: the security headers and this request's ID."""
    return {**SECURITY_HEADERS, "x-request-id": request_id(scope)}


def _with_headers(message: dict, scope) -> dict:
    present = {name.lower() for name, _ in message.get("headers", [])}
    extra = [(name.encode(), value.encode()) for name, value in response_headers(scope).items()
             if name.encode() not in present]
    return {**message, "headers": [*message.get("headers", []), *extra]}


class RateLimit:
    """At most ``per_minute`` requests per token in any 60 s, in this process (0: no limit); beyond,
    429 with the seconds until the oldest of them leaves the window."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._recent: dict[str, collections.deque] = {}

    def count(self, name: str) -> None:
        if self.per_minute <= 0:
            return
        now = time.monotonic()
        recent = self._recent.setdefault(name, collections.deque())
        while recent and now - recent[0] >= 60.0:
            recent.popleft()
        if len(recent) >= self.per_minute:
            wait = max(1, math.ceil(60.0 - (now - recent[0])))
            raise ServiceError(429, f"token {name!r} sent more than {self.per_minute} requests in a minute "
                                    "(--max-requests-per-minute); retry later", {"retry-after": str(wait)})
        recent.append(now)


class WorkQueue:
    """Heavy requests (uploads, evaluations, canary runs) at most ``running`` at once in this
    process, and at most ``waiting`` more in line, their bodies not yet read; beyond that, 503 with
    Retry-After, which fastfid's client retries. Reads and /healthz never wait here."""

    def __init__(self, running: int, waiting: int):
        self.running, self.waiting = running, waiting
        self._slots: asyncio.Semaphore | None = None  # made in the server's event loop
        self._in_line = 0

    @contextlib.asynccontextmanager
    async def slot(self):
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.running)
        if self._slots.locked() and self._in_line >= self.waiting:
            raise ServiceError(503, f"the server is busy ({self.running} heavy requests running, {self._in_line} "
                                    "waiting); retry later", {"retry-after": "5"})
        self._in_line += 1
        try:
            await self._slots.acquire()
        finally:
            self._in_line -= 1
        try:
            yield
        finally:
            self._slots.release()


class Observe:
    """Counts and times every request (Prometheus), logs it as one JSON line with its request ID,
    and adds the ID and the security headers to its response."""

    def __init__(self, app, metrics: Metrics, routes: list[Route]):
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500
        identity = request_id(scope)

        async def recording_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = _with_headers(message, scope)
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            elapsed = time.perf_counter() - start
            route = self._route(scope)
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(scope["method"], route).observe(elapsed)
            log.info("request", extra={"fields": {"method": scope["method"], "path": scope["path"], "route": route,
                                                  "status": status, "ms": round(1000 * elapsed, 2),
                                                  "client": (scope.get("client") or ("", 0))[0],
                                                  "request_id": identity}})

    def _route(self, scope) -> str:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return route.path
        return "unmatched"


# --- the app -------------------------------------------------------------------------------------
class Service:
    """The handlers, over one store, one reference cache, one alerter and one set of metrics."""

    def __init__(self, config: ServiceConfig):
        self.config = config
        self.store = Store(config.store, config.database_url)
        self.metrics = Metrics(self.store)
        self.cache = ReferenceCache(self.store, config.cache_size, on_lookup=self.metrics.cache_lookup)
        self.rates = RateLimit(config.max_requests_per_minute)
        self.work = WorkQueue(config.max_running or max(2, os.cpu_count() or 1), config.max_queue)
        self.alerts = Alerts(self.store, config.webhook, attempts=config.webhook_attempts,
                             backoff=config.webhook_backoff,
                             on_alert=lambda alert: self.metrics.alerts.labels(alert["kind"]).inc())

    # --- access -------------------------------------------------------------------------------------
    async def authorise(self, request: Request, scope: str, *, public: bool | None = None) -> str:
        """The token's name, or 401/403. Reads also take the sign-in cookie; writes never do.
        ``public``: whether a request without a token may pass (default: --public-read, for reads)."""
        header = request.headers.get("authorization", "")
        kind, _, token = header.partition(" ")
        if not token or kind.lower() != "bearer":
            cookie = request.cookies.get(pages.READ_COOKIE) if scope == "read" else None
            if cookie:
                record = await self._token(cookie)
                if record is not None:
                    self.rates.count(record["name"])
                    return record["name"]
                raise ServiceError(401, "this browser's sign-in is no longer valid (the token was revoked): "
                                        "sign in again")
            if (self.config.public_read and scope == "read") if public is None else public:
                return "anonymous"
            raise ServiceError(401, f"missing token: send 'Authorization: Bearer TOKEN' with a {scope} token "
                                    "(fastfid token create NAME --scope ...)")
        record = await self._token(token.strip())
        if record is None:
            raise ServiceError(401, "unknown token")
        self.rates.count(record["name"])
        if SCOPES.index(record["scope"]) < SCOPES.index(scope):
            raise ServiceError(403, f"token {record['name']!r} has the {record['scope']} scope; this needs a token of "
                                    f"the {scope} scope (fastfid token create NAME --scope {scope})")
        return record["name"]

    async def _page_reader(self, request: Request) -> Response | None:
        """None if the request may read; else the sign-in page (a browser cannot send a bearer header)."""
        try:
            await self.authorise(request, "read")
        except ServiceError as refusal:
            if refusal.status != 401:
                raise
            wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            missing = refusal.message.startswith("missing token")
            return HTMLResponse(pages.sign_in(wanted, None if missing else refusal.message), status_code=401)
        return None

    async def sign_in_page(self, request: Request) -> Response:
        return HTMLResponse(pages.sign_in(request.query_params.get("next", "/")))

    async def sign_in(self, request: Request) -> Response:
        """A read token from the form becomes the read cookie; a token of a wider scope is refused, so
        that the browser never holds the right to write."""
        form = await _small_form(request)
        token, wanted = form.get("token", "").strip(), form.get("next", "/")
        record = await self._token(token) if 0 < len(token) <= pages.MAX_TOKEN_CHARS else None
        problem = ("unknown token" if record is None else
                   f"token {record['name']!r} has the {record['scope']} scope: sign in with a read token, so that "
                   "this browser can read only" if record["scope"] != "read" else None)
        if problem:
            return HTMLResponse(pages.sign_in(wanted, problem), status_code=401)
        response = RedirectResponse(pages.safe_next(wanted), status_code=303)
        response.set_cookie(pages.READ_COOKIE, token, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", path="/")
        return response

    async def sign_out(self, request: Request) -> Response:
        response = RedirectResponse("/signin", status_code=303)
        response.delete_cookie(pages.READ_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    async def index_page(self, request: Request) -> Response:
        refusal = await self._page_reader(request)
        if refusal is not None:
            return refusal
        models, references = await run_in_threadpool(
            lambda: (self.store.model_summaries(), self.store.current_references()))
        return HTMLResponse(pages.index(models, references, signed_in=pages.READ_COOKIE in request.cookies))

    def _bounded(self, form) -> int:
        """Refuse, from the uploads' headers alone, a request whose work would not be bounded by
        what it carries: a dimension beyond --max-dim, or exact states (state_bytes: 8·(d² + d + 1)
        bytes each) of more than --max-state-mb or more than INFLATION times the uploaded bytes.
        Returns the dim."""
        uploads = [(part, upload) for part in ("stats", "shard", "features") for upload in _files(form, part)]
        dims = [dim for part, upload in uploads for dim in _declared_dims(upload, part)]
        if not dims:
            return 0  # the request's own checks say what is missing
        dim, carried = max(dims), sum(upload.size or 0 for _, upload in uploads)
        state = sum(state_bytes(d) for d in dims)
        if dim > self.config.max_dim:
            raise ServiceError(413, f"dimension {dim} is beyond this server's limit of {self.config.max_dim} "
                                    "(--max-dim)")
        if state > self.config.max_state_mb * 2**20:
            raise ServiceError(413, f"the uploads declare {size_text(state)} of d × d statistics, beyond this "
                                    f"server's limit of {self.config.max_state_mb:g} MiB (--max-state-mb)")
        if state > INFLATION * carried:
            raise ServiceError(413, f"the uploads declare {size_text(state)} of d × d statistics (dim {dim}) in "
                                    f"{carried:,} bytes: this server works at most {INFLATION}× what a request "
                                    "carries; send statistics (.npz) rather than so few feature rows")
        return dim

    def _within_quota(self, uploader: str, stats: FeatureStats) -> None:
        self._within_quota_of(uploader, state_bytes(stats.dim))

    def _within_quota_of(self, uploader: str, size: int) -> None:
        stored, limit = self.store.stored_bytes_of(uploader), self.config.max_stored_mb * 2**20
        if stored + size > limit:
            raise ServiceError(413, f"token {uploader!r} has stored {size_text(stored)} of reference statistics; this "
                                    f"upload ({size_text(size)}) would pass its quota of "
                                    f"{self.config.max_stored_mb:g} MiB (--max-stored-mb)")

    def _same_dim_as_reference(self, form, dim: int) -> None:
        """A submission's dim against its reference's, before any array is read."""
        name = _field(form, "reference")
        if not dim or name is None:
            return
        version = _optional_int(_field(form, "reference_version"), "reference_version")
        reference = self.store.reference(name, version)
        if dim != reference["dim"]:
            raise ServiceError(422, f"the uploads have dim {dim}, but reference {reference['name']!r} has dim "
                                    f"{reference['dim']}")

    async def _token(self, token: str) -> dict | None:
        """A token's record, read from the store on every request (one indexed lookup), so that a
        revocation holds at once in every worker and on every host."""
        return await run_in_threadpool(self.store.token, token)

    # --- handlers -----------------------------------------------------------------------------------
    async def healthz(self, request: Request) -> Response:
        """Liveness, answered from the event loop: no database, no thread, so that it stays fast
        while every worker thread is busy with evaluations."""
        return JSONResponse({"status": "ok", "version": __version__,
                             "store": "sqlite" if self.store.embedded else "postgresql",
                             "cached_references": len(self.cache)})

    async def readyz(self, request: Request) -> Response:
        """Readiness: the database answers and is intact, and the current references' statistics
        hash as recorded; 503 with the problems otherwise."""
        problems = await run_in_threadpool(self.store.readiness_problems)
        if problems:
            return JSONResponse({"status": "not ready", "problems": problems}, status_code=503,
                                headers={"retry-after": "30"})
        return JSONResponse({"status": "ready"})

    async def prometheus(self, request: Request) -> Response:
        # It names canaries and counts: a token of any scope, unless --public-metrics.
        await self.authorise(request, "read", public=self.config.public_metrics)
        return Response(await run_in_threadpool(self.metrics.render), media_type=CONTENT_TYPE)

    async def list_references(self, request: Request) -> Response:
        await self.authorise(request, "read")
        return _json(await run_in_threadpool(self.store.current_references))

    async def get_reference(self, request: Request) -> Response:
        await self.authorise(request, "read")
        version = _optional_int(request.query_params.get("version"), "version")
        return _json(await run_in_threadpool(self.store.reference, request.path_params["name"], version))

    async def reference_versions(self, request: Request) -> Response:
        await self.authorise(request, "read")
        return _json(await run_in_threadpool(self.store.reference_versions, request.path_params["name"]))

    async def put_reference(self, request: Request) -> Response:
        uploader = await self.authorise(request, "admin")
        name = _name(request.path_params["name"], "reference name")
        async with self.work.slot(), _form(request) as form:
            await run_in_threadpool(self._bounded, form)
            spaces = await run_in_threadpool(_uploaded_spaces, form)
            if spaces is not None:
                return await self._put_space_references(name, spaces, uploader, form)
            stats, _ = await run_in_threadpool(_one_stats, form)
            await run_in_threadpool(check_reference, stats)
            await run_in_threadpool(self._within_quota, uploader, stats)
            space = agreed_space(stats.feature_space, _field(form, "feature_space"))
            if not space:
                raise ServiceError(422, "the uploaded statistics name no feature space (files from pytorch-fid or "
                                        "clean-fid carry none): pass the feature_space field")
            record, created = await run_in_threadpool(
                lambda: self.store.add_reference(name, stats, feature_space=space, uploader=uploader,
                                                 fastfid_version=__version__))
        return _json(record, 201 if created else 200)

    async def _put_space_references(self, name: str, spaces: dict, uploader: str, form) -> Response:
        """A file of several spaces: one reference per space, named ``NAME.SPACE``, each checked and
        counted toward the quota before any is stored."""
        if _field(form, "feature_space") is not None:
            raise ServiceError(422, "a file of several spaces names each space's features itself: omit feature_space")
        for stats in spaces.values():
            await run_in_threadpool(check_reference, stats)
            if not stats.feature_space:
                raise ServiceError(422, "every space of the file must name its feature space")
        await run_in_threadpool(self._within_quota_of, uploader, sum(state_bytes(s.dim) for s in spaces.values()))
        names = {space: _name(f"{name}.{space}", "reference name") for space in spaces}  # all valid, or none stored
        records, created = [], False
        for space, stats in spaces.items():
            record, new = await run_in_threadpool(
                lambda: self.store.add_reference(names[space], stats, feature_space=stats.feature_space,
                                                 uploader=uploader, fastfid_version=__version__))
            records.append(record)
            created = created or new
        return _json({"references": records}, 201 if created else 200)

    async def post_evaluation(self, request: Request) -> Response:
        submitter = await self.authorise(request, "evaluate")
        async with self.work.slot(), _form(request) as form:
            dim = await run_in_threadpool(self._bounded, form)
            submission = await run_in_threadpool(_submission, form, request.headers.get("idempotency-key"))
            if not submission.per_space:
                await run_in_threadpool(self._same_dim_as_reference, form, dim)
            try:
                record, created = await run_in_threadpool(
                    evaluate_spaces if submission.per_space else evaluate, self.store, self.cache, submission,
                    submitter)
            except ServiceError:
                self.metrics.evaluations.labels("refused").inc()
                raise
        self.metrics.evaluations.labels("created" if created else "replayed").inc()
        return _json(record | {"replayed": not created}, 201 if created else 200)

    async def list_evaluations(self, request: Request) -> Response:
        """One page, oldest first: ``limit`` (default 100, at most 1000) after the id ``after``; a full
        page names the next in a Link header (``rel="next"``)."""
        await self.authorise(request, "read")
        query = request.query_params
        limit = _optional_int(query.get("limit"), "limit", (1, MAX_PAGE)) or DEFAULT_PAGE
        after = _optional_int(query.get("after"), "after", (0, IDS[1]))
        rows = await run_in_threadpool(lambda: self.store.evaluations(
            model=query.get("model"), reference=query.get("reference"), checkpoint=query.get("checkpoint"),
            after=after, limit=limit))
        response = _json(rows)
        if len(rows) == limit:
            following = urlencode({**query, "limit": limit, "after": rows[-1]["id"]})
            response.headers["link"] = f'</evaluations?{following}>; rel="next"'
        return response

    async def get_evaluation(self, request: Request) -> Response:
        await self.authorise(request, "read")
        evaluation_id = _optional_int(request.path_params["id"], "evaluation id")
        assert evaluation_id is not None
        return _json(await run_in_threadpool(self.store.evaluation, evaluation_id))

    async def model_history(self, request: Request) -> Response:
        await self.authorise(request, "read")
        model, reference, points = await self._points(request)
        if request.query_params.get("format", "json") == "csv":
            return PlainTextResponse(history.as_csv(points), media_type="text/csv")
        return _json({"model": model, "reference": reference, "checkpoints": points})

    async def model_page(self, request: Request) -> Response:
        refusal = await self._page_reader(request)
        if refusal is not None:
            return refusal
        model, reference, points = await self._points(request)
        return HTMLResponse(history.page(model, reference, points, signed_in=pages.READ_COOKIE in request.cookies))

    async def _points(self, request: Request) -> tuple[str, str, list[dict]]:
        model = request.path_params["model"]
        reference = request.query_params.get("reference")
        references = await run_in_threadpool(self.store.model_references, model)
        if not references or (reference is not None and reference not in references):
            raise NotFound(f"no evaluations of model {model!r}" + (f" against {reference!r}" if reference else ""))
        if reference is None and len(references) > 1:
            raise ServiceError(400, f"model {model!r} was evaluated against {references}: name one with ?reference=")
        chosen = reference or references[0]
        # The rows stream from the database into per-checkpoint sums: memory follows the checkpoints.
        points = await run_in_threadpool(lambda: history.checkpoints(self.store.stream_history(model, chosen)))
        return model, chosen, points

    async def put_canary(self, request: Request) -> Response:
        await self.authorise(request, "admin")
        name = _name(request.path_params["name"], "canary name")
        async with self.work.slot(), _form(request) as form:
            await run_in_threadpool(self._bounded, form)
            stats, _ = await run_in_threadpool(_one_stats, form)
            reference_name = _required(form, "reference")
            low, high = _float(form, "low"), _float(form, "high")
            if not low <= high:
                raise ServiceError(422, f"the band must have low ≤ high, got [{low}, {high}]")

            def create() -> dict:
                reference = self.store.reference(reference_name)
                if stats.dim != reference["dim"]:
                    raise ServiceError(422, f"the canary's statistics have dim {stats.dim}, reference "
                                            f"{reference_name!r} has dim {reference['dim']}")
                state, file_hash = self.store.put_stats(stats)
                return self.store.put_canary(dict(
                    name=name, reference=reference_name, reference_sha256=reference["state_sha256"],
                    stats_sha256=state, stats_file_sha256=file_hash, low=low, high=high, created=time.time()))

            record = await run_in_threadpool(create)
        return _json(record, 201)

    async def list_canaries(self, request: Request) -> Response:
        await self.authorise(request, "read")
        return _json(await run_in_threadpool(self.store.all_canaries))

    async def get_canary(self, request: Request) -> Response:
        await self.authorise(request, "read")
        name = request.path_params["name"]
        canary = await run_in_threadpool(self.store.canary, name)
        return _json(canary | {"alerts": await run_in_threadpool(self.store.all_alerts, name)})

    async def run_canary(self, request: Request) -> Response:
        await self.authorise(request, "admin")
        async with self.work.slot():
            outcome = await run_in_threadpool(run_canary, self.store, self.cache, self.alerts,
                                              request.path_params["name"])
        return _json(outcome)

    async def list_alerts(self, request: Request) -> Response:
        await self.authorise(request, "read")
        return _json(await run_in_threadpool(self.store.all_alerts, request.query_params.get("canary")))

    # --- background ---------------------------------------------------------------------------------
    async def canary_loop(self, every: float) -> None:
        """Every ``every`` seconds one process of all that share the store runs every canary."""
        while True:
            try:
                if await run_in_threadpool(self.store.claim, "canaries", every):
                    await run_in_threadpool(run_all, self.store, self.cache, self.alerts)
            except Exception as error:  # the loop outlives a failed round (a database that was away)
                log.error("canary round failed", extra={"fields": {"error": str(error)}})
            await asyncio.sleep(min(every, 30.0))

    def routes(self) -> list[Route]:
        return [
            Route("/", self.index_page),
            Route("/signin", self.sign_in_page, methods=["GET"]),
            Route("/signin", self.sign_in, methods=["POST"]),
            Route("/signout", self.sign_out, methods=["POST"]),
            Route("/healthz", self.healthz),
            Route("/readyz", self.readyz),
            Route("/metrics", self.prometheus),
            Route("/references", self.list_references),
            Route("/references/{name}", self.get_reference, methods=["GET"]),
            Route("/references/{name}", self.put_reference, methods=["PUT"]),
            Route("/references/{name}/versions", self.reference_versions),
            Route("/evaluations", self.list_evaluations, methods=["GET"]),
            Route("/evaluations", self.post_evaluation, methods=["POST"]),
            Route("/evaluations/{id}", self.get_evaluation),
            Route("/models/{model}", self.model_page),
            Route("/models/{model}/history", self.model_history),
            Route("/canaries", self.list_canaries),
            Route("/canaries/{name}", self.get_canary, methods=["GET"]),
            Route("/canaries/{name}", self.put_canary, methods=["PUT"]),
            Route("/canaries/{name}/run", self.run_canary, methods=["POST"]),
            Route("/alerts", self.list_alerts),
        ]


def create_app(config: ServiceConfig) -> Starlette:
    """The service over ``config.store`` (and ``config.database_url``, if given)."""
    configure_logging()
    service = Service(config)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        task = asyncio.create_task(service.canary_loop(config.canary_every)) if config.canary_every else None
        log.info("started", extra={"fields": {"store": str(config.store), "version": __version__, "pid": os.getpid()}})
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            service.alerts.wait(timeout=5)
            service.alerts.close()
            service.store.close()

    routes = service.routes()
    # Exception itself goes to Starlette's last-resort handler (a 500, logged); the rest are refusals.
    handled = (ServiceError, HTTPException, LookupError, ValueError, TypeError, ArithmeticError, OSError, MemoryError,
               Exception)
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=dict.fromkeys(handled, _error_response))
    app.add_middleware(UploadLimit, limit_mb=config.max_upload_mb, idle_seconds=config.body_timeout)
    app.add_middleware(Observe, metrics=service.metrics, routes=routes)
    app.state.service = service
    return app


def app_from_environment() -> Starlette:
    """The app factory uvicorn's workers call: the configuration comes from FASTFID_SERVICE_CONFIG."""
    return create_app(ServiceConfig(**json.loads(os.environ[CONFIG_VARIABLE])))


def config_to_environment(config: ServiceConfig) -> None:
    os.environ[CONFIG_VARIABLE] = json.dumps(asdict(config))


# --- requests and responses ----------------------------------------------------------------------
async def _error_response(request: Request, error: Exception) -> Response:
    """A JSON refusal; a 500 names only its request ID, and the details go to the log alone (they
    may hold SQL, paths or parameters)."""
    identity = request_id(request.scope)
    status, message = _status_of(error)
    if status >= 500 and not isinstance(error, ServiceError):  # a 503 "busy" is said on purpose
        log.error("error", extra={"fields": {"path": request.url.path, "request_id": identity,
                                             "error": f"{type(error).__name__}: {error}"}}, exc_info=error)
        message = f"internal error: the server's log has the details under request ID {identity}"
    # Sent from outside Observe when Starlette's last-resort handler answers a 500: the headers here.
    headers = response_headers(request.scope)
    if isinstance(error, (ServiceError, HTTPException)) and error.headers:
        headers.update(error.headers)  # Retry-After; a 405's Allow
    return JSONResponse({"error": message, "request_id": identity}, status_code=status, headers=headers)


def _status_of(error: Exception) -> tuple[int, str]:
    if isinstance(error, ServiceError):
        return error.status, error.message
    if isinstance(error, HTTPException):
        if error.status_code == 404:
            return 404, "no such resource: see the README's list of routes"
        return error.status_code, str(error.detail)
    if isinstance(error, NotFound):
        return 404, str(error)
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


def _json(payload, status: int = 200) -> Response:
    if isinstance(payload, list):
        payload = [jsonable(item) for item in payload]
    elif isinstance(payload, dict):
        payload = jsonable(payload)
    return JSONResponse(payload, status_code=status)


class _Uploads(MultiPartParser):
    # Starlette spills a file part to disk past 1 MiB, writing each 64 KiB chunk through the thread
    # pool; parts up to 4 MiB (d = 700 statistics) stay in memory, larger ones go to disk, so that
    # concurrent large uploads cost disk, not memory (a d = 2048 file spends 30–50 ms more).
    spool_max_size = 4 << 20


@contextlib.asynccontextmanager
async def _form(request: Request):
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ServiceError(415, f"send a multipart/form-data upload, not {content_type or 'no content type'!r}")
    try:
        form = await _Uploads(request.headers, request.stream(), max_files=_MAX_FILES, max_fields=100).parse()
    except (_TooLarge, _Stalled):
        raise
    except Exception as error:  # the multipart parser's own errors: a malformed body
        raise ServiceError(400, f"malformed multipart upload: {error}") from error
    try:
        yield form
    finally:
        await form.close()


async def _small_form(request: Request, limit: int = 4096) -> dict[str, str]:
    """The fields of a small url-encoded form (the sign-in), read up to ``limit`` bytes and no further."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("application/x-www-form-urlencoded"):
        raise ServiceError(415, f"send an application/x-www-form-urlencoded form, not {content_type or 'no content type'!r}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ServiceError(413, f"a form of more than {limit} bytes")
    try:
        fields = parse_qs(body.decode("ascii"), max_num_fields=8, strict_parsing=False)
    except (UnicodeDecodeError, ValueError) as error:
        raise ServiceError(400, f"malformed form: {error}") from error
    return {name: values[0] for name, values in fields.items()}


def _files(form, name: str) -> list[UploadFile]:
    return [item for item in form.getlist(name) if isinstance(item, UploadFile)]


def _field(form, name: str) -> str | None:
    value = form.get(name)
    if isinstance(value, UploadFile):
        raise ServiceError(422, f"{name} is a field, not a file")
    return value or None


def _required(form, name: str) -> str:
    value = _field(form, name)
    if value is None:
        raise ServiceError(422, f"the field {name!r} is required")
    return value


def _name(value: str, what: str, *, slash: bool = False) -> str:
    """A name as stored: 1–200 printable characters (no control, format or bidi characters, which
    would hide what a name says), and no '/' where the name is a path segment."""
    if not value or len(value) > 200 or not value.isprintable() or (not slash and "/" in value):
        rule = "printable" if slash else "printable, no '/'"
        raise ServiceError(422, f"invalid {what} {value!r}: 1–200 characters, {rule}")
    return value


def _optional_name(value: str | None, what: str) -> str | None:
    return None if value is None else _name(value, what, slash=True)


def _float(form, name: str) -> float:
    text = _required(form, name)
    try:
        value = float(text)
    except ValueError:
        raise ServiceError(422, f"{name} must be a number, got {text!r}") from None
    if not np.isfinite(value):
        raise ServiceError(422, f"{name} must be finite, got {text!r}")
    return value


_INTEGER = re.compile(r"-?[0-9]{1,20}")
DEFAULT_PAGE, MAX_PAGE = 100, 1000  # evaluations per page of GET /evaluations
# What the store's integer columns hold on every database (PostgreSQL's integer and bigint).
IDS = (1, 2**31 - 1)
SEEDS = (-(2**63), 2**63 - 1)


def _optional_int(text: str | None, name: str, limits: tuple[int, int] = IDS) -> int | None:
    """An integer field, checked at the edge against what the store can hold (an out-of-range one
    would otherwise fail inside the database)."""
    if text is None or text == "":
        return None
    low, high = limits
    value = int(text) if _INTEGER.fullmatch(text) else None  # ASCII digits only: int() also takes "٣"
    if value is None or not low <= value <= high:
        raise ServiceError(422, f"{name} must be an integer in {low} … {high}, got {text[:40]!r}")
    return value


def _idempotency_key(text: str | None) -> str | None:
    """The key as sent (scoped to the token when stored): at most what the store's column holds."""
    longest = 200 - KEY_SCOPE_CHARS
    if text and (len(text) > longest or not text.isprintable() or not text.isascii()):
        raise ServiceError(422, f"Idempotency-Key: 1–{longest} printable ASCII characters")
    return text or None


def _read_stats(upload: UploadFile) -> tuple[FeatureStats, str]:
    """Statistics from an uploaded .npz (read without pickle), and the SHA-256 of its bytes."""
    digest = stream_sha256(_rewound(upload))
    try:
        return load_stats(_rewound(upload)), digest
    except (OSError, ValueError) as error:
        raise type(error)(str(error).replace("upload", f"the upload {upload.filename!r}", 1)) from error


def _read_spaces(upload: UploadFile) -> tuple[dict[str, FeatureStats], str]:
    """The statistics of each space of an uploaded file of several spaces, and the SHA-256 of its bytes."""
    digest = stream_sha256(_rewound(upload))
    try:
        spaces, _ = load_spaces(_rewound(upload))
    except (OSError, ValueError) as error:
        raise type(error)(str(error).replace("upload", f"the upload {upload.filename!r}", 1)) from error
    for space in spaces:
        _name(space, "space name")
    return spaces, digest


def _uploaded_spaces(form) -> dict[str, FeatureStats] | None:
    """A reference upload's statistics by space, when its one file holds several spaces."""
    stats_files = _files(form, "stats")
    if len(stats_files) != 1 or _files(form, "features") or not holds_spaces(_rewound(stats_files[0])):
        return None
    return _read_spaces(stats_files[0])[0]


def _read_features(upload: UploadFile) -> tuple[np.ndarray, str]:
    digest = stream_sha256(_rewound(upload))
    try:
        features = np.load(_rewound(upload), allow_pickle=False)
    except (ValueError, EOFError, OSError) as error:
        raise ServiceError(400, f"the upload {upload.filename!r} is not a readable .npy array (pickled, truncated "
                                f"or corrupt): {error}") from error
    if not isinstance(features, np.ndarray) or features.ndim != 2 or features.dtype.kind not in "fiu":
        raise ServiceError(422, f"features are a 2-D numeric array (samples × dim); the upload "
                                f"{upload.filename!r} has shape {getattr(features, 'shape', None)}")
    return features, digest


INFLATION = 64  # a request's d × d statistics at most this many times the bytes it uploaded


def _declared_dims(upload: UploadFile, part: str) -> list[int]:
    """The dimensions an uploaded .npz (statistics: one per space) or .npy (features) declares in its
    headers, which are checked against the upload's size; nothing large is unpacked."""
    handle = _rewound(upload)
    if part != "features":
        try:
            return spaces_dims(handle)
        except (OSError, ValueError) as error:
            raise type(error)(str(error).replace("upload", f"the upload {upload.filename!r}", 1)) from error
    try:
        version = np.lib.format.read_magic(handle)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f".npy format version {version} (fastfid reads 1.0 and 2.0)")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, _, dtype = read_header(handle)  # the header only
    except (ValueError, EOFError, OSError) as error:
        raise ServiceError(400, f"the upload {upload.filename!r} is not a readable .npy array: {error}") from error
    if len(shape) != 2 or dtype.kind not in "fiu" or dtype.hasobject:
        raise ServiceError(422, f"features are a 2-D numeric array (samples × dim); the upload {upload.filename!r} "
                                f"declares shape {shape} of {dtype}")
    declared, carried = math.prod(shape) * dtype.itemsize, (upload.size or 0) - handle.tell()
    if declared > carried:
        raise ServiceError(400, f"the upload {upload.filename!r} declares {declared:,} bytes of features but holds "
                                f"{max(carried, 0):,}: it is truncated")
    return [int(shape[1])]


def _rewound(upload: UploadFile):
    upload.file.seek(0)
    return upload.file


def _one_stats(form) -> tuple[FeatureStats, str]:
    """The statistics of a reference or canary upload: a ``stats`` .npz or a ``features`` .npy."""
    stats_files, feature_files = _files(form, "stats"), _files(form, "features")
    if len(stats_files) + len(feature_files) != 1:
        raise ServiceError(422, "upload exactly one file: 'stats' (a statistics .npz) or 'features' (a .npy)")
    if stats_files:
        return _read_stats(stats_files[0])
    features, digest = _read_features(feature_files[0])
    return FeatureStats.from_features(features), digest


def _submission(form, idempotency_key: str | None) -> Submission:
    stats_files, shard_files, feature_files = _files(form, "stats"), _files(form, "shard"), _files(form, "features")
    kinds = [kind for kind, files in (("stats", stats_files), ("shards", shard_files), ("features", feature_files))
             if files]
    if len(kinds) != 1 or (kinds[0] != "shards" and len(stats_files) + len(feature_files) != 1):
        raise ServiceError(422, "post one of: a 'stats' file (.npz), one or more 'shard' files (.npz), or a "
                                "'features' file (.npy)")
    submission = Submission(
        model=_name(_required(form, "model"), "model"),
        checkpoint=_name(_required(form, "checkpoint"), "checkpoint", slash=True),
        reference=_required(form, "reference"), kind=kinds[0], inputs_sha256=[],
        feature_space=_field(form, "feature_space"),
        reference_version=_optional_int(_field(form, "reference_version"), "reference_version"),
        train_seed=_optional_int(_field(form, "train_seed"), "train_seed", SEEDS),
        sample_seed=_optional_int(_field(form, "sample_seed"), "sample_seed", SEEDS),
        baseline=_optional_name(_field(form, "baseline"), "baseline"),
        idempotency_key=_idempotency_key(idempotency_key))
    if submission.kind == "features":
        submission.features, digest = _read_features(feature_files[0])
        submission.inputs_sha256 = [digest]
    elif any(holds_spaces(_rewound(upload)) for upload in stats_files or shard_files):
        spaces = [_read_spaces(upload) for upload in (stats_files or shard_files)]
        split_by_space(submission, [s for s, _ in spaces], [digest for _, digest in spaces],
                       _validation_fd(_field(form, "validation_fd")))
    else:
        loaded = [_read_stats(upload) for upload in (stats_files or shard_files)]
        submission.inputs_sha256 = [digest for _, digest in loaded]
        if submission.kind == "stats":
            submission.stats = loaded[0][0]
        else:
            submission.shards = [stats for stats, _ in loaded]
            dims = {s.dim for s in submission.shards}
            if len(dims) > 1:
                raise ServiceError(422, f"the shards have different dims: {sorted(dims)}")
    return submission


def _validation_fd(text: str | None) -> dict[str, float]:
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
        raise ServiceError(422, "validation_fd: a JSON object of space name → valFD, each a positive number")
    return {str(k): float(v) for k, v in values.items()}


def default_store() -> Path:
    return Path(os.environ.get("FASTFID_HOME", Path.home() / ".fastfid")) / "service"
