"""``fastfid serve``: the app on uvicorn, one process or several workers sharing one store."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from fastfid.service.app import ServiceConfig, config_to_environment, create_app
from fastfid.service.store import Store

LOG_CONFIG = {  # uvicorn's own lines as JSON too; the access log is replaced by the service's request lines
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "fastfid.service.app.JsonFormatter"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
    "loggers": {"uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
                "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False}},
}

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """"90", "45s", "30m", "1h", "2d" -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"invalid duration {text!r}: a positive number with an optional unit s, m, h or d (e.g. 1h)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def serve(config: ServiceConfig, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1) -> None:
    import uvicorn

    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    Store(config.store, config.database_url).close()  # the tables, once, before any worker starts
    if workers == 1:
        uvicorn.run(create_app(config), host=host, port=port, log_config=LOG_CONFIG, access_log=False)
        return
    # Several workers: each builds the app from the environment, and Prometheus counters are
    # shared through files (cleared at start: counters count from the server's start).
    metrics = Path(config.store) / f"prometheus-{os.getpid()}"
    shutil.rmtree(metrics, ignore_errors=True)
    metrics.mkdir()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
    config_to_environment(config)
    try:
        uvicorn.run("fastfid.service.app:app_from_environment", factory=True, host=host, port=port, workers=workers,
                    log_config=LOG_CONFIG, access_log=False)
    finally:
        shutil.rmtree(metrics, ignore_errors=True)
