"""What /metrics exposes, in one Prometheus registry per app (never the global one).

Requests and syncs are counted as they happen; what the store holds (deployments,
definitions, webhook deliveries) and the engine's status are read at each scrape.
Two apps in one process (the tests run many) never share a number.
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder

from deployally import __version__
from deployally.types import EngineStatus, SyncResult

BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A sync with nothing to do takes tens of milliseconds; a cold one with health gates, minutes.
SYNC_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class Metrics:
    """One app's metrics: its requests, its engine's syncs, the store's counts, build and process."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._lock = threading.Lock()  # a scrape sets the read-at-scrape gauges, then renders
        self._requests = Counter(
            "deployally_http_requests", "API requests answered.",
            ("method", "route", "status"), registry=r,
        )
        self._latency = Histogram(
            "deployally_http_request_duration_seconds", "API request latency by route and status.",
            ("route", "status"), buckets=BUCKETS_S, registry=r,
        )
        self._sync_seconds = Histogram(
            "deployally_sync_duration_seconds", "How long each sync took, whatever its result.",
            buckets=SYNC_BUCKETS_S, registry=r,
        )
        self._syncs = Counter(
            "deployally_syncs",
            "Syncs finished, by result: success; partial (a deployment failed, or a file or an "
            "unsigned commit was refused); error (the sync could not finish).",
            ("result",), registry=r,
        )
        for result in SyncResult:
            self._syncs.labels(result.value)  # every result shows from the start, at 0
        self._last_success = Gauge(
            "deployally_last_successful_sync_timestamp_seconds",
            "When a sync last ran to completion (success or partial), in Unix time; 0 before the first.",
            registry=r,
        )
        self._syncing = Gauge("deployally_sync_in_progress", "1 while a sync runs.", registry=r)
        self._failures = Gauge(
            "deployally_sync_consecutive_failures", "Syncs in a row that ended in error.", registry=r
        )
        self._hooks = Counter(
            "deployally_git_hooks",
            "git hooks the engine ran for a push (pre-receive: accepted or refused; post-receive: "
            "reported), with no process started for them.",
            ("hook", "outcome"), registry=r,
        )
        self._deployments = Gauge(
            "deployally_deployments", "Recorded deployments by status.", ("status",), registry=r
        )
        self._definitions = Gauge(
            "deployally_definitions", "Definitions by status.", ("status",), registry=r
        )
        self._deliveries = Gauge(
            "deployally_webhook_deliveries",
            "Webhook deliveries by status; pending is the outbox backlog.", ("status",), registry=r,
        )
        Info("deployally_build", "The DeployAlly that runs.", registry=r).info(
            {"version": __version__, "python": platform.python_version()}
        )
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)

    def __repr__(self) -> str:
        return f"Metrics(registry at {id(self.registry):#x})"

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        self._requests.labels(method, route, str(status)).inc()
        self._latency.labels(route, str(status)).observe(seconds)

    def observe_sync(self, result: SyncResult, seconds: float) -> None:
        """Count one finished sync and how long it took."""
        self._syncs.labels(result.value).inc()
        self._sync_seconds.observe(seconds)

    def observe_hook(self, hook: str, outcome: str) -> None:
        """Count one git hook the engine ran (api/hooks.py)."""
        self._hooks.labels(hook, outcome).inc()

    def exposition(
        self,
        accept: str,
        *,
        deployments: Mapping[str, int],
        definitions: Mapping[str, int],
        deliveries: Mapping[str, int],
        engine: EngineStatus | None,
    ) -> tuple[bytes, str]:
        """The body and content type of one scrape, in the format `accept` asks for (blocking)."""
        with self._lock:
            for gauge, counts in (
                (self._deployments, deployments),
                (self._definitions, definitions),
                (self._deliveries, deliveries),
            ):
                for status, n in counts.items():
                    gauge.labels(status).set(n)
            if engine is not None:
                last = engine.last_sync_at
                self._last_success.set(last.timestamp() if last is not None else 0)
                self._syncing.set(1 if engine.syncing else 0)
                self._failures.set(engine.failures)
            encoder, content_type = choose_encoder(accept)
            return encoder(self.registry), content_type
