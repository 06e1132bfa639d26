"""What the running sync is doing and since when: /health tells a stuck sync by it.

The sync thread writes it, the API's threads read snapshots; a lock keeps each snapshot
whole.
"""

from __future__ import annotations

import threading
import time

from deployally.types import SyncSnapshot


class SyncActivity:
    """The sync in progress, if any."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started: float | None = None
        self._doing = ""
        self._last = ""
        self._changes = 0
        self._health_timeout_s = 0.0

    def __repr__(self) -> str:
        return f"SyncActivity({self._doing or 'idle'!r})"

    def begin(self, doing: str) -> None:
        """A sync starts."""
        with self._lock:
            self._started = time.monotonic()
            self._doing = doing
            self._last = ""
            self._changes = 0

    def now(self, doing: str, *, changes: int = 0, health_timeout_s: float | None = None) -> None:
        """The sync moves on to `doing`, with `changes` more planned."""
        with self._lock:
            self._doing = doing
            self._changes += changes
            if health_timeout_s is not None:
                self._health_timeout_s = health_timeout_s

    def note(self, line: str) -> None:
        """A progress line of the sync (a deployment done, a container put back)."""
        with self._lock:
            self._last = line

    def end(self) -> None:
        """The sync is over."""
        with self._lock:
            self._started = None
            self._doing = ""

    def snapshot(self) -> SyncSnapshot | None:
        """The running sync, or None when none runs."""
        with self._lock:
            if self._started is None:
                return None
            return SyncSnapshot(
                running_s=time.monotonic() - self._started,
                doing=self._doing,
                last=self._last,
                changes=self._changes,
                health_timeout_s=self._health_timeout_s,
            )
