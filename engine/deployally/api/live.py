"""Cached live-state snapshots shared by every request, so a list costs one driver call per ~2 s.

Never one call per row: `driver.live()` is one list call per server, and an
instance's start time (absent from some listings) is asked for only for the
instances on the page being shown, once per instance.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from deployally.drivers.base import Driver
from deployally.errors import DriverError
from deployally.identity import instance_id
from deployally.types import LiveInstance

TTL_S = 2.0
Run = Callable[..., Awaitable[Any]]


@dataclass
class _Snapshot:
    at: float = float("-inf")
    value: dict[str, LiveInstance] = field(default_factory=dict)
    error: DriverError | None = None  # a failed list is remembered for the TTL too


class LiveCache:
    """The newest `driver.live()` of each server, refreshed at most every TTL_S seconds."""

    def __init__(self, ttl_s: float = TTL_S) -> None:
        self.ttl_s = ttl_s
        self._snapshots: dict[str, _Snapshot] = {}  # by server name
        self._lock: asyncio.Lock | None = None
        self._started: dict[str, datetime | None] = {}  # instance ref -> start time

    def __repr__(self) -> str:
        return f"LiveCache(servers={sorted(self._snapshots)}, ttl={self.ttl_s}s)"

    def invalidate(self, ref: str | None = None) -> None:
        """Forget the snapshots (and an instance's start time), e.g. after an operator restart."""
        self._snapshots.clear()
        if ref is not None:
            self._started.pop(ref, None)

    async def snapshot(self, driver: Driver, run: Run) -> dict[str, LiveInstance]:
        """The server's live instances by definition name; DriverError when it is unreachable."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # concurrent requests wait for one list call, not make many
            snap = self._snapshots.setdefault(driver.server, _Snapshot())
            if time.monotonic() - snap.at > self.ttl_s:
                try:
                    snap.value, snap.error = await run(driver.live), None
                except DriverError as exc:
                    snap.value, snap.error = {}, exc
                snap.at = time.monotonic()
                alive = {i.ref for s in self._snapshots.values() for i in s.value.values()}
                self._started = {k: v for k, v in self._started.items() if k in alive}
            if snap.error is not None:
                raise snap.error
            return snap.value

    async def with_start_times(
        self, driver: Driver, instances: Iterable[LiveInstance], run: Run
    ) -> list[LiveInstance]:
        """`instances` with started_at filled in (one driver call per instance not seen before)."""
        out = []
        for inst in instances:
            if inst.started_at is None:
                if inst.ref not in self._started:
                    self._started[inst.ref] = await run(driver.started_at, inst)
                inst = replace(inst, started_at=self._started[inst.ref])
            out.append(inst)
        return out

    @staticmethod
    def by_instance_id(snapshot: dict[str, LiveInstance], iid: str) -> LiveInstance | None:
        """The instance whose inst_ id is `iid`."""
        for inst in snapshot.values():
            if instance_id(inst.ref) == iid:
                return inst
        return None
