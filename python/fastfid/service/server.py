"""``fastfid serve``: the app on uvicorn, one process or several workers sharing one store."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

from fastfid.service.app import create_app
from fastfid.service.config import ServiceConfig, default_of
from fastfid.service.store import Store

LOG_CONFIG = {  # uvicorn's own lines as JSON too; the access log is replaced by the service's request lines
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "fastfid.service.observe.JsonFormatter"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
    "loggers": {"uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
                "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False}},
}

def serve(config: ServiceConfig, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    import uvicorn

    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    Store(config.store, config.database_url).close()  # the tables, once, before any worker starts
    os.environ[HEADER_TIMEOUT_VARIABLE] = str(config.header_timeout)  # for the protocol, in every worker
    options: dict[str, Any] = dict(log_config=LOG_CONFIG, access_log=False, timeout_keep_alive=5,
                                   http="fastfid.service.server:HeaderDeadline")
    if workers == 1:
        uvicorn.run(create_app(config), host=host, port=port, **options)
        return
    # Several workers: each builds the app from the environment, and Prometheus counters are
    # shared through files (cleared at start: counters count from the server's start).
    metrics = Path(config.store) / f"prometheus-{os.getpid()}"
    shutil.rmtree(metrics, ignore_errors=True)
    os.umask(0o077)  # the workers' counter files, like everything in the store, are the service user's alone
    metrics.mkdir(mode=0o700)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
    config.to_environment()
    try:
        uvicorn.run("fastfid.service.app:app_from_environment", factory=True, host=host, port=port, workers=workers,
                    **options)
    finally:
        shutil.rmtree(metrics, ignore_errors=True)


HEADER_TIMEOUT_VARIABLE = "FASTFID_HEADER_TIMEOUT"


MOST_HEADER_BYTES = 64 << 10
"""A request's line and header fields together, in bytes: far above any client's (a few KiB), and the
most an unauthenticated connection can make the server hold."""
MOST_HEADER_FIELDS = 100


def _header_deadline_protocol():
    import httptools
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class TooManyHeaderFields(httptools.HttpParserError):
        pass

    class HeaderDeadline(HttpToolsProtocol):
        """uvicorn's protocol with bounds on each request's headers: a deadline (a client that sends
        its headers slowly, or never, is disconnected instead of holding the connection for ever),
        and a size: at most MOST_HEADER_BYTES of request line and headers, in at most
        MOST_HEADER_FIELDS fields, else a 431 and the connection closed. The bytes are counted as
        they arrive, so a single huge header value is refused before the parser buffers it whole."""

        _deadline: asyncio.TimerHandle | None = None
        _head = b""  # this message's bytes until its headers end (at most MOST_HEADER_BYTES + 4)
        _in_head = True
        _fields = 0
        _refusal: str | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._refusal is not None:
                return
            if self._in_head:
                self._head += data[:MOST_HEADER_BYTES + 4 - len(self._head)]
                if len(self._head) > MOST_HEADER_BYTES and b"\r\n\r\n" not in self._head:
                    self._refuse(f"the request line and headers pass {MOST_HEADER_BYTES // 1024} KiB")
                    return
            super().data_received(data)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._fields = 0
            self._arm()

        def on_header(self, name: bytes, value: bytes) -> None:
            self._fields += 1
            if self._fields > MOST_HEADER_FIELDS:
                self._refusal = f"more than {MOST_HEADER_FIELDS} header fields"
                raise TooManyHeaderFields(self._refusal)  # uvicorn answers a parser error: see send_400_response
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._disarm()
            self._in_head, self._head = False, b""
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._in_head = True  # the next request on this connection

        def send_400_response(self, msg: str) -> None:
            if self._refusal is not None:
                self._refuse(self._refusal)
                return
            super().send_400_response(msg)

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _refuse(self, why: str) -> None:
            self._refusal = why
            self._disarm()
            body = json.dumps({"error": f"request headers too large: {why}"}).encode()
            self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body)
            # The client may still be sending: what it sends is dropped unread (data_received), and the
            # connection closes a moment later, so that the answer is not lost to a reset.
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(1.0, self.transport.close)

        def _arm(self) -> None:
            self._disarm()
            seconds = float(os.environ.get(HEADER_TIMEOUT_VARIABLE, default_of("header_timeout")))
            self._deadline = self.loop.call_later(seconds, self._too_slow)

        def _disarm(self) -> None:
            deadline = self._deadline
            if deadline is not None:
                deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if not self.transport.is_closing():
                self.transport.close()

    return HeaderDeadline


def __getattr__(name: str):
    # uvicorn imports the protocol by name ("fastfid.service.server:HeaderDeadline"); it is built
    # on first use, so that importing this module does not need uvicorn.
    if name == "HeaderDeadline":
        globals()[name] = _header_deadline_protocol()
        return globals()[name]
    raise AttributeError(name)
