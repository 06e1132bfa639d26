"""Request counters and latency histograms, written out in the Prometheus text format (0.0.4).

Written by hand: the format is a few lines of text, and keeping the numbers in
one small object means every app has its own (tests never share counters).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * len(BUCKETS_S))
    total: int = 0
    sum_s: float = 0.0

    def observe(self, seconds: float) -> None:
        for i, bound in enumerate(BUCKETS_S):
            if seconds <= bound:
                self.counts[i] += 1
        self.total += 1
        self.sum_s += seconds


class Metrics:
    """What the API measured about itself since it started."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, int], int] = {}
        self._latency: dict[tuple[str, int], _Histogram] = {}

    def __repr__(self) -> str:
        return f"Metrics({sum(self._requests.values())} requests)"

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        with self._lock:
            key = (method, route, status)
            self._requests[key] = self._requests.get(key, 0) + 1
            self._latency.setdefault((route, status), _Histogram()).observe(seconds)

    def render(
        self,
        *,
        deployments: Mapping[str, int],
        definitions: Mapping[str, int],
        sync_seconds: float | None,
    ) -> str:
        """The whole exposition: requests, latency, deployments and definitions by status, sync duration."""
        lines: list[str] = []
        with self._lock:
            lines += _family("deployally_http_requests_total", "counter", "API requests answered.")
            for (method, route, status), n in sorted(self._requests.items()):
                labels = _labels(method=method, route=route, status=str(status))
                lines.append(f"deployally_http_requests_total{labels} {n}")
            name = "deployally_http_request_duration_seconds"
            lines += _family(name, "histogram", "API request latency by route and status.")
            for (route, status), h in sorted(self._latency.items()):
                for bound, count in zip(BUCKETS_S, h.counts):
                    labels = _labels(route=route, status=str(status), le=_num(bound))
                    lines.append(f"{name}_bucket{labels} {count}")
                labels = _labels(route=route, status=str(status), le="+Inf")
                lines.append(f"{name}_bucket{labels} {h.total}")
                base = _labels(route=route, status=str(status))
                lines.append(f"{name}_sum{base} {_num(h.sum_s)}")
                lines.append(f"{name}_count{base} {h.total}")
        lines += _gauges(
            "deployally_deployments", "Recorded deployments by status.", deployments.items()
        )
        lines += _gauges("deployally_definitions", "Definitions by status.", definitions.items())
        if sync_seconds is not None:
            name = "deployally_sync_duration_seconds"
            lines += _family(name, "gauge", "How long the last sync took.")
            lines.append(f"{name} {_num(sync_seconds)}")
        return "\n".join(lines) + "\n"


def _family(name: str, kind: str, help_text: str) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]


def _gauges(name: str, help_text: str, items: Iterable[tuple[str, int]]) -> list[str]:
    lines = _family(name, "gauge", help_text)
    lines += [f"{name}{_labels(status=status)} {n}" for status, n in sorted(items)]
    return lines


def _labels(**labels: str) -> str:
    # Label values escape backslash, quote and newline (the text format's only escapes).
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels.items()) + "}"


def _num(value: float) -> str:
    return repr(float(value))
