"""``fastfid serve``: the app on uvicorn, one process or several workers sharing one store."""

from __future__ import annotations

import asyncio
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
    metrics.mkdir()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
    config.to_environment()
    try:
        uvicorn.run("fastfid.service.app:app_from_environment", factory=True, host=host, port=port, workers=workers,
                    **options)
    finally:
        shutil.rmtree(metrics, ignore_errors=True)


HEADER_TIMEOUT_VARIABLE = "FASTFID_HEADER_TIMEOUT"


def _header_deadline_protocol():
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HeaderDeadline(HttpToolsProtocol):
        """uvicorn's protocol with a deadline on each request's headers: a client that opens a
        connection and sends its headers slowly (or never) is disconnected, instead of holding
        the connection for ever (uvicorn itself times out only idle keep-alive connections)."""

        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def connection_lost(self, exc) -> None:
            self._disarm()
            super().connection_lost(exc)

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
