"""Retry schedule of failed definitions: exponential backoff with jitter, never a hot loop."""

from __future__ import annotations

import random
import threading
import time

RETRY_BASE_S = 10.0
RETRY_MAX_S = 600.0


class Backoff:
    """When each failed definition may be tried again (10 s doubling to 10 min, ±20 %)."""

    def __init__(self, base_s: float = RETRY_BASE_S, max_s: float = RETRY_MAX_S) -> None:
        self.base_s = base_s
        self.max_s = max_s
        self._lock = threading.Lock()  # deployments of one wave record outcomes in parallel
        self._due: dict[str, tuple[float, int]] = {}  # name -> (monotonic due, attempts)

    def __repr__(self) -> str:
        return f"Backoff(waiting={sorted(self._due)})"

    def failed(self, name: str) -> None:
        """One more failure: push the next try out."""
        with self._lock:
            attempts = self._due.get(name, (0.0, 0))[1] + 1
            delay = min(self.max_s, self.base_s * 2 ** (attempts - 1)) * random.uniform(0.8, 1.2)
            self._due[name] = (time.monotonic() + delay, attempts)

    def forget(self, name: str) -> None:
        """It succeeded, or its definition changed: try it at once next time."""
        with self._lock:
            self._due.pop(name, None)

    def due(self, name: str) -> bool:
        """May this definition be tried now?"""
        with self._lock:
            entry = self._due.get(name)
        return entry is None or time.monotonic() >= entry[0]

    def not_due(self) -> frozenset[str]:
        """The names whose next try is not due yet."""
        now = time.monotonic()
        with self._lock:
            return frozenset(n for n, (due, _) in self._due.items() if now < due)

    def waiting(self, name: str) -> bool:
        """Is this definition waiting out a backoff?"""
        with self._lock:
            return name in self._due

    def next_retry_s(self) -> float | None:
        """Seconds until the earliest retry is due; None when nothing failed."""
        with self._lock:
            if not self._due:
                return None
            return max(0.0, min(due for due, _ in self._due.values()) - time.monotonic())
