"""A client of fastfid's service (``fastfid serve``): post statistics, shards or features in one
call, with retries, and read history back. Standard library only (urllib).

    from fastfid.client import Service
    service = Service("http://127.0.0.1:8000", token="...")
    print(service.evaluate(model="ddpm", checkpoint="50000", reference="cifar10-train", stats="gen.npz")["fid"])

A retried post carries the same ``Idempotency-Key``, so the service stores it once however many
times the network made the client try.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fastfid.files.spaces import write_spaces
from fastfid.files.stats import write_state
from fastfid.representations import SpaceStats
from fastfid.stats import FeatureStats

_RETRIED_STATUSES = (429, 502, 503, 504)  # a proxy or a restarting server: worth another try
_PAGE = 1000  # evaluations per request: the service's largest page


class ServiceError(RuntimeError):
    """The service refused a request (4xx) or failed (5xx): ``status`` and the service's message."""

    def __init__(self, status: int, message: str):
        super().__init__(f"fastfid service answered {status}: {message}")
        self.status, self.message = status, message


class Service:
    """``url``: the service's base URL; ``token``: a bearer token (default: $FASTFID_TOKEN).
    Connection failures and 429/502/503/504 are retried ``retries`` times, waiting
    ``backoff`` · 2^k seconds; ``on_retry(message)``, when given, hears of each wait before it
    (the command line prints them, so that a server that does not answer is not a silent pause)."""

    def __init__(self, url: str, token: str | None = None, *, retries: int = 5, backoff: float = 0.5,
                 timeout: float = 600.0, on_retry: Callable[[str], None] | None = None):
        self.url = url.rstrip("/")
        self.token = token if token is not None else os.environ.get("FASTFID_TOKEN")
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self.on_retry = on_retry

    # --- writes -------------------------------------------------------------------------------------
    def upload_reference(self, name: str, stats=None, *, features=None, feature_space: str | None = None) -> dict:
        """Store reference statistics (FeatureStats or a .npz path: fastfid's, pytorch-fid's,
        clean-fid's) or features (array or .npy path) under ``name``, as its new version. Statistics
        of several spaces (SpaceStats or their file) become one reference per space, ``NAME.SPACE``
        (returned as ``{"references": [...]}``)."""
        files = [_stats_part("stats", stats)] if stats is not None else [_features_part(features)]
        return self._request("PUT", f"/references/{_quote(name)}", fields={"feature_space": feature_space},
                             files=files)

    def evaluate(self, *, model: str, checkpoint: str | int, reference: str, stats=None,
                 shards: Sequence | None = None, features=None, train_seed: int | None = None,
                 sample_seed: int | None = None, baseline: str | None = None, feature_space: str | None = None,
                 reference_version: int | None = None, validation_fd: dict[str, float] | None = None) -> dict:
        """Post one evaluation: ``stats`` (FeatureStats or .npz path), ``shards`` (a list of them: FID
        with a jackknife error bar) or ``features`` (array or .npy path). Returns the stored record:
        fid, standard_error, interval, verdict, provenance. Statistics of several spaces (SpaceStats or
        their file) are evaluated per space against ``REFERENCE.SPACE``: ``{"spaces": {space:
        record}}``, with ``"fdr"`` (per space and FDr^k) when ``validation_fd`` gives each space's valFD."""
        if sum(x is not None for x in (stats, shards, features)) != 1:
            raise ValueError("give exactly one of stats, shards or features")
        if stats is not None:
            files = [_stats_part("stats", stats)]
        elif shards is not None:
            files = [_stats_part("shard", shard) for shard in shards]
        else:
            files = [_features_part(features)]
        fields = {"model": model, "checkpoint": str(checkpoint), "reference": reference, "train_seed": train_seed,
                  "sample_seed": sample_seed, "baseline": baseline, "feature_space": feature_space,
                  "reference_version": reference_version,
                  "validation_fd": None if validation_fd is None else json.dumps(validation_fd)}
        return self._request("POST", "/evaluations", fields=fields, files=files,
                             headers={"Idempotency-Key": uuid.uuid4().hex})

    def set_canary(self, name: str, stats, *, reference: str, low: float, high: float) -> dict:
        """A canary: ``stats`` whose FID against ``reference`` must stay within [low, high]."""
        return self._request("PUT", f"/canaries/{_quote(name)}", files=[_stats_part("stats", stats)],
                             fields={"reference": reference, "low": repr(float(low)), "high": repr(float(high))})

    def run_canary(self, name: str) -> dict:
        return self._request("POST", f"/canaries/{_quote(name)}/run")

    # --- reads --------------------------------------------------------------------------------------
    def health(self) -> dict:
        return self._request("GET", "/healthz")

    def reference(self, name: str, version: int | None = None) -> dict:
        return self._request("GET", f"/references/{_quote(name)}", query={"version": version})

    def evaluation(self, evaluation_id: int) -> dict:
        return self._request("GET", f"/evaluations/{evaluation_id}")

    def evaluations(self, *, model: str | None = None, reference: str | None = None,
                    checkpoint: str | None = None, limit: int | None = None) -> list[dict]:
        """Stored evaluations, oldest first (all of them, or the first ``limit``), read page by page."""
        rows: list[dict] = []
        after = None
        while limit is None or len(rows) < limit:
            size = _PAGE if limit is None else min(_PAGE, limit - len(rows))
            query = {"model": model, "reference": reference, "checkpoint": checkpoint, "limit": size, "after": after}
            page = self._request("GET", "/evaluations", query=query)
            rows += page
            if len(page) < size:
                break
            after = page[-1]["id"]
        return rows

    def history(self, model: str, reference: str | None = None) -> dict:
        """FID per checkpoint with error bars."""
        return self._request("GET", f"/models/{_quote(model)}/history", query={"reference": reference})

    def alerts(self, canary: str | None = None) -> list[dict]:
        return self._request("GET", "/alerts", query={"canary": canary})

    # --- transport ----------------------------------------------------------------------------------
    def _request(self, method: str, path: str, *, fields: dict | None = None, files: list | None = None,
                 query: dict | None = None, headers: dict | None = None) -> Any:
        url = self.url + path
        if query:
            present = {k: v for k, v in query.items() if v is not None}
            if present:
                url += "?" + urllib.parse.urlencode(present)
        body, content_type = (None, None) if files is None else _multipart(fields or {}, files)
        all_headers = dict(headers or {})
        if content_type:
            all_headers["Content-Type"] = content_type
        if self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(url, data=body, method=method, headers=all_headers)
            wait = self.backoff * 2 ** attempt
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as error:
                message = _error_message(error)
                if error.code not in _RETRIED_STATUSES or attempt == self.retries:
                    raise ServiceError(error.code, message) from None
                told = error.headers.get("Retry-After", "")
                if told.isdigit():  # a 429 or 503 that says when: at most a minute, waited as asked
                    wait = max(wait, min(int(told), 60))
                why = f"the service answered {error.code} ({message})"
            except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException) as error:
                # Includes a response cut short (a server killed mid-answer): the retry's idempotency
                # key lets the service return what it stored, if it stored it.
                if attempt == self.retries:
                    raise ConnectionError(f"cannot reach the fastfid service at {self.url} after {attempt + 1} "
                                          f"tries: {getattr(error, 'reason', error)}") from error
                why = f"cannot reach {self.url} ({getattr(error, 'reason', error)})"
            if self.on_retry is not None:
                self.on_retry(f"{why}; trying again in {wait:g} s ({attempt + 1} of {self.retries} retries)")
            time.sleep(wait)
        raise AssertionError("unreachable")


def _quote(name: str) -> str:
    return urllib.parse.quote(name, safe="")


def _error_message(error: urllib.error.HTTPError) -> str:
    text = error.read().decode(errors="replace")
    try:
        return json.loads(text)["error"]
    except (ValueError, KeyError, TypeError):
        return text or str(error.reason)


def _stats_part(name: str, stats) -> tuple[str, str, bytes]:
    """A statistics file as sent: a path's bytes as they are, FeatureStats as their exact state."""
    if isinstance(stats, (str, os.PathLike)):
        path = Path(stats)
        return name, path.name, path.read_bytes()
    if isinstance(stats, FeatureStats):
        buffer = io.BytesIO()
        write_state(stats.to_stored(), buffer)
        return name, "stats.npz", buffer.getvalue()
    if isinstance(stats, SpaceStats):
        buffer = io.BytesIO()
        write_spaces({name: s.to_stored() for name, s in stats.items()}, buffer, stats.validation_fd)
        return name, "spaces.npz", buffer.getvalue()
    raise TypeError(f"statistics must be FeatureStats or a path to a .npz, got {type(stats).__name__}")


def _features_part(features) -> tuple[str, str, bytes]:
    if isinstance(features, (str, os.PathLike)):
        path = Path(features)
        return "features", path.name, path.read_bytes()
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(features), allow_pickle=False)
    return "features", "features.npy", buffer.getvalue()


def _multipart(fields: dict, files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        if value is not None:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, filename, data in files:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode())
        parts.append(data)
        parts.append(b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
