"""Canaries and alerts. A canary is a fixed set of statistics with an expected FID band against a
reference name. Running it checks, in order, that the reference's stored file still hashes as
recorded, that the name still points at the version the canary was made against, and that the
FID lies in its band; each failure is an alert: a record in the store, a JSON log line, a
Prometheus counter, and a JSON webhook delivered in the background with retries and backoff.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from fastfid.service.evaluation import ReferenceCache
from fastfid.service.store import CorruptFile, Store

log = logging.getLogger("fastfid.service")


class Alerts:
    """Raises alerts: stored, logged, counted, and posted to ``webhook`` (if any) by a background
    thread that tries ``attempts`` times, waiting ``backoff`` · 2^k seconds between tries."""

    def __init__(self, store: Store, webhook: str | None = None, *, attempts: int = 5, backoff: float = 1.0,
                 on_alert: Callable[[dict], None] | None = None):
        self.store, self.webhook, self.attempts, self.backoff = store, webhook, attempts, backoff
        self._on_alert = on_alert
        self._threads: list[threading.Thread] = []

    def raise_alert(self, canary: str, kind: str, message: str) -> dict:
        alert = self.store.add_alert(canary, kind, message)
        log.warning("alert", extra={"fields": {"alert_id": alert["id"], "canary": canary, "kind": kind,
                                               "message": message}})
        if self._on_alert is not None:
            self._on_alert(alert)
        if self.webhook:
            thread = threading.Thread(target=self._deliver, args=(alert,), name=f"fastfid-webhook-{alert['id']}",
                                      daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()
        return alert

    def wait(self, timeout: float | None = None) -> None:
        """Wait for the webhook deliveries under way (tests, shutdown)."""
        for thread in list(self._threads):
            thread.join(timeout)

    def _deliver(self, alert: dict) -> None:
        assert self.webhook is not None
        body = json.dumps({"source": "fastfid", "alert": alert}).encode()
        error: str | None = None
        for attempt in range(1, self.attempts + 1):
            request = urllib.request.Request(self.webhook, data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    response.read()
                self.store.record_delivery(alert["id"], attempt, True, None)
                return
            except (urllib.error.URLError, OSError) as failure:
                error = str(failure)
                self.store.record_delivery(alert["id"], attempt, False, error)
                log.warning("webhook failed", extra={"fields": {"alert_id": alert["id"], "attempt": attempt,
                                                                "error": error}})
            if attempt < self.attempts:
                time.sleep(self.backoff * 2 ** (attempt - 1))


def run_canary(store: Store, cache: ReferenceCache, alerts: Alerts, name: str) -> dict:
    """Run one canary; returns its outcome (status "ok" or "alert", the FID, the alerts raised)."""
    canary = store.canary(name)
    reference = store.reference(canary["reference"])
    raised = []
    fid = None
    try:
        store.verified_bytes(reference["state_sha256"], reference["file_sha256"])
    except CorruptFile as error:
        raised.append(alerts.raise_alert(name, "reference_corrupt",
                                         f"reference {reference['name']!r} version {reference['version']}: {error}"))
    else:
        if reference["state_sha256"] != canary["reference_sha256"]:
            raised.append(alerts.raise_alert(
                name, "reference_changed",
                f"reference {reference['name']!r} now points at version {reference['version']} "
                f"({reference['state_sha256'][:12]}…), not the {canary['reference_sha256'][:12]}… this canary was set "
                "against"))
        stats = store.load_stats(canary["stats_sha256"], canary["stats_file_sha256"])
        fid = cache.get(reference).distance(stats)
        if not canary["low"] <= fid <= canary["high"]:
            raised.append(alerts.raise_alert(
                name, "out_of_band", f"FID {fid:.6g} against {reference['name']!r} is outside the expected band "
                                     f"[{canary['low']:.6g}, {canary['high']:.6g}]"))
    status = "alert" if raised else "ok"
    store.record_canary_run(name, fid, status)
    return {"canary": name, "status": status, "fid": fid, "alerts": raised}


def run_all(store: Store, cache: ReferenceCache, alerts: Alerts) -> list[dict]:
    """Every canary, each on its own: one that fails to run (its reference was removed) is logged."""
    outcomes = []
    for canary in store.all_canaries():
        try:
            outcomes.append(run_canary(store, cache, alerts, canary["name"]))
        except Exception as error:  # one broken canary must not stop the others
            log.error("canary failed", extra={"fields": {"canary": canary["name"], "error": str(error)}})
    return outcomes
