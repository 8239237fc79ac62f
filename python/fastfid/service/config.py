"""The service's configuration: the one place where every limit and default is written, with its
flag and its help. ``fastfid serve``'s options are built from it (:func:`add_arguments`), the
server reads it, and workers receive it through the environment."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_VARIABLE = "FASTFID_SERVICE_CONFIG"
WORK_PER_UPLOADED_BYTE = 64
"""A request's d × d statistics may be at most this many times the bytes it uploaded: work bounded by
what a request carries (a few feature rows cannot declare a d = 16384 state)."""


def _option(help_text: str, *, flag: str | None = None, metavar: str | None = None, cli: bool = True) -> dict:
    return {"help": help_text, "flag": flag, "metavar": metavar, "cli": cli}


def default_store() -> Path:
    return Path(os.environ.get("FASTFID_HOME", Path.home() / ".fastfid")) / "service"


@dataclass
class ServiceConfig:
    """Everything a running service is told. Each field's metadata gives its flag and help; the
    defaults here are the only defaults."""

    store: str = field(metadata=_option(
        "the service's folder: SQLite database and statistics files (default $FASTFID_HOME/service, else "
        "~/.fastfid/service)", metavar="DIR"))
    database_url: str | None = field(default=None, metadata=_option(
        "a PostgreSQL URL shared by several hosts (records and statistics live there)", flag="--database",
        metavar="URL"))
    public_read: bool = field(default=False, metadata=_option(
        "let requests without a token read (writes still need a token of their scope)"))
    public_metrics: bool = field(default=False, metadata=_option(
        "serve /metrics without a token (it names canaries and counts; default: a token of any scope)"))
    max_upload_mb: float = field(default=1024.0, metadata=_option("largest accepted upload, in MiB"))
    max_dim: int = field(default=16384, metadata=_option("largest feature dimension accepted"))
    max_state_mb: float = field(default=4096.0, metadata=_option(
        f"most d × d statistics one request may declare, in MiB (also at most {WORK_PER_UPLOADED_BYTE}× its upload)"))
    max_requests_per_minute: int = field(default=6000, metadata=_option(
        "per token and server process; beyond, 429 with Retry-After (0: no limit)"))
    max_running: int = field(default=0, metadata=_option(
        "uploads, evaluations and canary runs at once per process (0: the cores, at least 2)"))
    max_queue: int = field(default=64, metadata=_option(
        "such requests waiting per process; beyond, 503 with Retry-After"))
    body_timeout: float = field(default=30.0, metadata=_option(
        "seconds a request body may stall before a 408", metavar="SECONDS"))
    body_deadline: float = field(default=600.0, metadata=_option(
        "seconds a request body may take in all before a 408, however steadily it trickles", metavar="SECONDS"))
    max_bodies: int = field(default=32, metadata=_option(
        "request bodies being received at once per process (before any waits for a work slot); beyond, 503"))
    max_bodies_per_token: int = field(default=4, metadata=_option(
        "request bodies one token may be sending at once; beyond, 429"))
    header_timeout: float = field(default=10.0, metadata=_option(
        "seconds a client has to send a request's headers", metavar="SECONDS"))
    max_stored_mb: float = field(default=10240.0, metadata=_option(
        "statistics (references and canaries) one token may store, in MiB"))
    cache_size: int = field(default=8, metadata=_option("factorised references kept in memory"))
    verify_every: float = field(default=300.0, metadata=_option(
        "seconds after which /readyz hashes a current reference's stored statistics again, though their size and "
        "time did not change", metavar="SECONDS"))
    webhook: str | None = field(default=None, metadata=_option(
        "URL that receives every alert as JSON (retried with backoff)", metavar="URL"))
    webhook_attempts: int = field(default=5, metadata=_option("tries of each webhook delivery", cli=False))
    webhook_backoff: float = field(default=1.0, metadata=_option("seconds before the second try, doubling", cli=False))
    canary_every: float | None = field(default=None, metadata=_option(
        "run every canary this often, e.g. 1h or 30m", metavar="DURATION"))

    @property
    def running(self) -> int:
        """Heavy requests at once in this process."""
        return self.max_running or max(2, os.cpu_count() or 1)

    def to_environment(self) -> None:
        """For uvicorn's workers, which build the app from the environment."""
        os.environ[CONFIG_VARIABLE] = json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_environment(cls) -> "ServiceConfig":
        return cls(**json.loads(os.environ[CONFIG_VARIABLE]))


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """"90", "45s", "30m", "1h", "2d" -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"invalid duration {text!r}: a positive number with an optional unit s, m, h or d (e.g. 1h)")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def default_of(name: str) -> Any:
    return next(f.default for f in dataclasses.fields(ServiceConfig) if f.name == name)


def add_arguments(parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    """``fastfid serve``'s options, one per field (``only``: those fields), with the field's default in
    its help."""
    for item in dataclasses.fields(ServiceConfig):
        meta = item.metadata
        if not meta.get("cli") or (only is not None and item.name not in only):
            continue
        flag = meta["flag"] or "--" + item.name.replace("_", "-")
        default = None if item.default is dataclasses.MISSING else item.default
        shown = "" if default in (None, False) else f" (default {default:g})" if isinstance(default, float) \
            else f" (default {default})"
        if item.type in ("bool", bool):
            parser.add_argument(flag, dest=item.name, action="store_true", help=meta["help"])
            continue
        kind: Any = {"int": int, "float": float}.get(str(item.type), str)
        if item.name == "canary_every":
            kind = parse_duration
        parser.add_argument(flag, dest=item.name, type=kind, default=default, metavar=meta["metavar"],
                            help=meta["help"] + shown)


def from_arguments(args: argparse.Namespace) -> ServiceConfig:
    values = {item.name: getattr(args, item.name) for item in dataclasses.fields(ServiceConfig)
              if item.metadata.get("cli")}
    values["store"] = str(values["store"] or default_store())
    return ServiceConfig(**values)
