"""Canaries and alerts. A canary is a fixed set of statistics with an expected FID band against a
reference name. Running it checks, in order, that the reference's stored file still hashes as
recorded, that the name still points at the version the canary was made against, and that the
FID lies in its band; each failure is an alert: a record in the store, a JSON log line, a
Prometheus counter, and a JSON webhook delivered in the background with retries and backoff.
An alert is raised when a problem appears, not at every run while it lasts: one per band crossing.

The webhook is a plain http(s) URL; its receiver must answer 2xx (a redirect is not followed, and
is a failed attempt like any error, garbage included), and deliveries run on a small fixed pool.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from urllib.parse import urlsplit

from fastfid.service.evaluation import ReferenceCache
from fastfid.service.store import CorruptFile, Store

log = logging.getLogger("fastfid.service")


def check_webhook(url: str) -> str:
    """An http:// or https:// URL with a host; anything else (file://, ftp://, a bare path) is refused."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"the webhook must be an http:// or https:// URL with a host, got {url!r}")
    return url


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is the receiver's answer, not an instruction: it fails the attempt."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class Alerts:
    """Raises alerts: stored, logged, counted, and posted to ``webhook`` (if any) by a pool of
    ``senders`` threads, each delivery tried ``attempts`` times, ``backoff`` · 2^k seconds apart."""

    def __init__(self, store: Store, webhook: str | None = None, *, attempts: int = 5, backoff: float = 1.0,
                 on_alert: Callable[[dict], None] | None = None, senders: int = 4):
        self.store, self.webhook, self.attempts, self.backoff = store, webhook, attempts, backoff
        self._on_alert = on_alert
        if webhook is not None:
            check_webhook(webhook)
        self._pool = None if webhook is None else ThreadPoolExecutor(senders, thread_name_prefix="fastfid-webhook")
        self._opener = urllib.request.build_opener(_NoRedirects)
        self._pending: set[Future] = set()

    def raise_alert(self, canary: str, kind: str, message: str) -> dict:
        alert = self.store.add_alert(canary, kind, message)
        log.warning("alert", extra={"fields": {"alert_id": alert["id"], "canary": canary, "kind": kind,
                                               "message": message}})
        if self._on_alert is not None:
            self._on_alert(alert)
        if self._pool is not None:
            future = self._pool.submit(self._deliver, alert)
            self._pending.add(future)
            future.add_done_callback(self._pending.discard)
        return alert

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the webhook deliveries under way (tests, shutdown)."""
        wait(list(self._pending), timeout=timeout)

    def close(self) -> None:
        """Drop deliveries not yet started (their alerts stay stored, with their attempts)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _deliver(self, alert: dict) -> None:
        assert self.webhook is not None
        body = json.dumps({"source": "fastfid", "alert": alert}).encode()
        for attempt in range(1, self.attempts + 1):
            request = urllib.request.Request(self.webhook, data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with self._opener.open(request, timeout=10) as response:
                    response.read(1 << 16)
                    if not 200 <= response.status < 300:
                        raise OSError(f"the receiver answered {response.status}, not 2xx")
                self.store.record_delivery(alert["id"], attempt, True, None)
                return
            except Exception as failure:  # refused, redirected, timed out, or garbage (http.client's errors)
                error = f"{type(failure).__name__}: {failure}"[:500]
                self.store.record_delivery(alert["id"], attempt, False, error)
                log.warning("webhook failed", extra={"fields": {"alert_id": alert["id"], "attempt": attempt,
                                                                "error": error}})
            if attempt < self.attempts:
                time.sleep(self.backoff * 2 ** (attempt - 1))


def run_canary(store: Store, cache: ReferenceCache, alerts: Alerts, name: str) -> dict:
    """Run one canary; returns its outcome: status "ok" or "alert", the FID, the problems found
    (kinds) and the alerts raised, which are only the problems its last run did not have."""
    canary = store.canary(name)
    reference = store.reference(canary["reference"])
    problems: dict[str, str] = {}
    fid = None
    try:
        store.verified_bytes(reference["state_sha256"], reference["file_sha256"])
    except CorruptFile as error:
        problems["reference_corrupt"] = f"reference {reference['name']!r} version {reference['version']}: {error}"
    else:
        if reference["state_sha256"] != canary["reference_sha256"]:
            problems["reference_changed"] = (
                f"reference {reference['name']!r} now points at version {reference['version']} "
                f"({reference['state_sha256'][:12]}…), not the {canary['reference_sha256'][:12]}… this canary was set "
                "against")
        stats = store.load_stats(canary["stats_sha256"], canary["stats_file_sha256"])
        fid = cache.get(reference).distance(stats)
        if not canary["low"] <= fid <= canary["high"]:
            problems["out_of_band"] = (f"FID {fid:.6g} against {reference['name']!r} is outside the expected band "
                                       f"[{canary['low']:.6g}, {canary['high']:.6g}]")
    # What the next run compares with, recorded against the status this run read: a concurrent run that
    # recorded first makes this one read again, so each problem is raised by exactly one run.
    status, previous = ",".join(problems) or "ok", canary["last_status"]
    while not store.record_canary_run(name, fid, status, previous):
        previous = store.canary(name)["last_status"]
    already = set((previous or "ok").split(",")) - {"ok"}
    raised = [alerts.raise_alert(name, kind, message) for kind, message in problems.items() if kind not in already]
    return {"canary": name, "status": "alert" if problems else "ok", "fid": fid, "problems": list(problems),
            "alerts": raised}


def run_all(store: Store, cache: ReferenceCache, alerts: Alerts) -> list[dict]:
    """Every canary, each on its own: one that fails to run (its reference was removed) is logged."""
    outcomes = []
    for canary in store.all_canaries():
        try:
            outcomes.append(run_canary(store, cache, alerts, canary["name"]))
        except Exception as error:  # one broken canary must not stop the others
            log.error("canary failed", extra={"fields": {"canary": canary["name"], "error": str(error)}})
    return outcomes
