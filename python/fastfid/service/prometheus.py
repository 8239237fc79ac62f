"""Prometheus metrics of the service. Per-process counters (requests, latencies, evaluations,
alerts, reference-cache lookups) use prometheus_client, in its multiprocess mode when several
uvicorn workers serve (``PROMETHEUS_MULTIPROC_DIR``, set by ``fastfid serve``); the state of the
store (canaries in band, stored evaluations and alerts) is read from the database at each scrape,
so every worker and host reports the same.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from fastfid.service.store import Store

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _StoreCollector:
    def __init__(self, store: Store):
        self.store = store

    def collect(self):
        in_band = GaugeMetricFamily("fastfid_canary_in_band", "1 if the canary's last run raised no alert, else 0",
                                    labels=["canary"])
        for canary in self.store.all_canaries():
            if canary["last_status"] is not None:
                in_band.add_metric([canary["name"]], 1.0 if canary["last_status"] == "ok" else 0.0)
        yield in_band
        stored = GaugeMetricFamily("fastfid_stored_alerts", "alerts in the store", labels=["canary", "kind"])
        for (canary, kind), count in self.store.alert_counts().items():
            stored.add_metric([canary, kind], count)
        yield stored
        yield GaugeMetricFamily("fastfid_stored_evaluations", "evaluations in the store",
                                value=self.store.count_evaluations())


class Metrics:
    def __init__(self, store: Store):
        self._store = store
        self._multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        self._registry = CollectorRegistry()
        registry = None if self._multiprocess else self._registry
        self.requests = Counter("fastfid_requests", "HTTP requests", ["method", "route", "status"], registry=registry)
        self.latency = Histogram("fastfid_request_seconds", "HTTP request latency", ["method", "route"],
                                 buckets=_LATENCY_BUCKETS, registry=registry)
        self.evaluations = Counter("fastfid_evaluations", "evaluations posted", ["outcome"], registry=registry)
        self.alerts = Counter("fastfid_alerts", "alerts raised", ["kind"], registry=registry)
        self.cache_lookups = Counter("fastfid_reference_cache_lookups", "factorised-reference cache lookups",
                                     ["result"], registry=registry)
        if not self._multiprocess:
            self._registry.register(_StoreCollector(store))

    def cache_lookup(self, hit: bool) -> None:
        self.cache_lookups.labels("hit" if hit else "miss").inc()

    def render(self) -> bytes:
        if not self._multiprocess:
            return generate_latest(self._registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        registry.register(_StoreCollector(self._store))
        return generate_latest(registry)
