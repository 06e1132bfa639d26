"""One cached live-state snapshot shared by every request, so a list costs one Docker call per ~2 s.

Never one Docker call per row: `driver.live()` is one filtered list call, and a
container's start time (absent from that list) is asked for only for the
instances on the page being shown, once per container id.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any, Protocol, TypeVar, runtime_checkable

from deployally.drivers.base import Driver
from deployally.errors import DriverError
from deployally.identity import instance_id
from deployally.types import LiveInstance

TTL_S = 2.0
T = TypeVar("T")
Run = Callable[..., Awaitable[Any]]


@runtime_checkable
class StartTimes(Protocol):
    """A driver that can tell when a container last started (one inspect)."""

    def started_at(self, container_id: str) -> datetime | None:
        """When the container last started, or None when it never did."""
        ...


class LiveCache:
    """The newest `driver.live()` result, refreshed at most every TTL_S seconds."""

    def __init__(self, ttl_s: float = TTL_S) -> None:
        self.ttl_s = ttl_s
        self._at = float("-inf")
        self._value: dict[str, LiveInstance] = {}
        self._lock: asyncio.Lock | None = None
        self._started: dict[str, datetime | None] = {}  # container id -> start time
        self._error: DriverError | None = None  # a failed list is remembered for the TTL too

    def __repr__(self) -> str:
        return f"LiveCache({len(self._value)} instances, ttl={self.ttl_s}s)"

    def invalidate(self, container_id: str | None = None) -> None:
        """Forget the snapshot (and a container's start time), e.g. after an operator restart."""
        self._at = float("-inf")
        if container_id is not None:
            self._started.pop(container_id, None)

    async def snapshot(self, driver: Driver, run: Run) -> dict[str, LiveInstance]:
        """Live instances by definition name; raises DriverError when Docker is unreachable."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # concurrent requests wait for one list call, not make many
            if time.monotonic() - self._at > self.ttl_s:
                try:
                    self._value, self._error = await run(driver.live), None
                except DriverError as exc:
                    self._value, self._error = {}, exc
                self._at = time.monotonic()
                alive = {i.container_id for i in self._value.values()}
                self._started = {k: v for k, v in self._started.items() if k in alive}
            if self._error is not None:
                raise self._error
            return self._value

    async def with_start_times(
        self, driver: Driver, instances: Iterable[LiveInstance], run: Run
    ) -> list[LiveInstance]:
        """`instances` with started_at filled in (one inspect per container not seen before)."""
        out = []
        for inst in instances:
            if inst.started_at is None and isinstance(driver, StartTimes):
                key = inst.container_id
                if key not in self._started:
                    self._started[key] = await run(driver.started_at, key)
                inst = replace(inst, started_at=self._started[key])
            out.append(inst)
        return out

    @staticmethod
    def by_instance_id(snapshot: dict[str, LiveInstance], iid: str) -> LiveInstance | None:
        """The instance whose inst_ id is `iid`."""
        for inst in snapshot.values():
            if instance_id(inst.container_id) == iid:
                return inst
        return None
