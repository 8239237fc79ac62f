"""Observation: JSON log lines, request IDs, the headers every response carries, and the counting and
timing of every request (Prometheus, fastfid.service.prometheus)."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid

from starlette.routing import Match, Route

from fastfid.service.prometheus import Metrics

log = logging.getLogger("fastfid.service")


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
