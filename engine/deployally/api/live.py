"""Live-state snapshots shared by every request, one per server: readers never queue behind a driver.

`driver.live()` is one list call per server; an instance's start time (absent from some
listings) is asked for once per instance. Both happen in a background refresh, at most one
at a time per server and at most every TTL_S: while one runs, readers get the snapshot
before it, so 200 readers during a busy update cost one list call, not 200, and none of
them waits on Docker. A reader that finds the snapshot merely old starts a refresh and is
answered from the snapshot it has (stale while revalidating: the answer is at most TTL_S
plus one list call old); only the first reader, or one after `invalidate()` (an operator
action) or after a sync changed the server (`Driver.changed_at`), waits for the new one
(at most WAIT_S), and `fresh()` waits for a snapshot taken after it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from deployally.drivers.base import Driver
from deployally.errors import DriverError
from deployally.identity import instance_id
from deployally.types import LiveInstance

TTL_S = 2.0
WAIT_S = 10.0  # the longest a reader waits for a refresh when it has an older snapshot to show
MAX_STALE_S = 30.0  # beyond this age a snapshot is not shown while a refresh is stuck
MAX_ANSWERS = 64  # distinct pages kept per snapshot and second; more start the set afresh
Run = Callable[..., Awaitable[Any]]


@dataclass
class _Server:
    """One server's newest snapshot and the refresh under way, if any."""

    name: str
    value: dict[str, LiveInstance] | None = None
    error: DriverError | None = None  # a failed list is remembered for the TTL too
    at: float = float("-inf")  # when the newest finished refresh began
    expired: bool = False  # invalidated: the next reader refreshes, whatever the age
    was_expired: bool = False  # the refresh under way began because of an invalidation
    refresh: asyncio.Task[None] | None = None
    refresh_began: float = float("-inf")

    def current(self) -> dict[str, LiveInstance]:
        if self.error is not None:
            raise self.error
        return self.value or {}


class LiveCache:
    """The newest `driver.live()` of each server, with start times, refreshed in the background."""

    def __init__(
        self, ttl_s: float = TTL_S, wait_s: float = WAIT_S, max_stale_s: float = MAX_STALE_S
    ) -> None:
        self.ttl_s = ttl_s
        self.wait_s = wait_s
        self.max_stale_s = max_stale_s
        self._servers: dict[str, _Server] = {}  # by server name
        self._started: dict[str, datetime | None] = {}  # instance ref -> start time

    def __repr__(self) -> str:
        return f"LiveCache(servers={sorted(self._servers)}, ttl={self.ttl_s}s)"

    def invalidate(self, ref: str | None = None) -> None:
        """Forget the snapshots' freshness (and an instance's start time), e.g. after a restart."""
        for server in self._servers.values():
            server.expired = True
        if ref is not None:
            self._started.pop(ref, None)

    async def snapshot(self, driver: Driver, run: Run) -> dict[str, LiveInstance]:
        """The server's live instances by definition name; DriverError when it is unreachable."""
        server = self._servers.setdefault(driver.server, _Server(driver.server))
        if server.refresh is None and driver.changed_at > server.at:
            server.expired = True  # a sync changed the server since: show what it did
        age = time.monotonic() - server.at
        if server.refresh is None and (age > self.ttl_s or server.expired):
            refresh = self._start(server, driver, run)
            if server.value is not None and server.error is None and not server.was_expired:
                return server.value  # merely old: the refresh runs behind this answer
            return await self._wait(server, refresh, stale_ok=True)
        if server.refresh is not None and (server.value is None or age > self.max_stale_s):
            return await self._wait(server, server.refresh, stale_ok=False)
        return server.current()  # fresh enough, or the last one while a refresh runs

    async def fresh(self, driver: Driver, run: Run) -> dict[str, LiveInstance]:
        """A snapshot whose list call began after this call (what an operator action changed)."""
        server = self._servers.setdefault(driver.server, _Server(driver.server))
        asked = time.monotonic()
        while True:
            refresh = server.refresh
            if refresh is None or server.refresh_began < asked:
                if refresh is not None:
                    await asyncio.shield(refresh)  # an older one: let it finish first
                    continue
                refresh = self._start(server, driver, run)
            await asyncio.shield(refresh)
            return server.current()

    @staticmethod
    def by_instance_id(snapshot: dict[str, LiveInstance], iid: str) -> LiveInstance | None:
        """The instance whose inst_ id is `iid`."""
        for inst in snapshot.values():
            if instance_id(inst.ref) == iid:
                return inst
        return None

    # ------------------------------------------------------------ refreshing

    def _start(self, server: _Server, driver: Driver, run: Run) -> asyncio.Task[None]:
        server.was_expired, server.expired = server.expired, False
        server.refresh_began = time.monotonic()
        server.refresh = asyncio.get_running_loop().create_task(
            self._refreshed(server, driver, run, server.refresh_began)
        )
        return server.refresh

    async def _refreshed(self, server: _Server, driver: Driver, run: Run, began: float) -> None:
        try:
            live: dict[str, LiveInstance] = await run(driver.live)
            unknown = [i for i in live.values() if i.started_at is None and i.ref not in self._started]
            if unknown:
                times = await asyncio.gather(*(run(driver.started_at, i) for i in unknown))
                self._started.update(zip((i.ref for i in unknown), times, strict=True))
            server.value = {
                name: replace(inst, started_at=inst.started_at or self._started.get(inst.ref))
                for name, inst in live.items()
            }
            server.error = None
        except DriverError as exc:
            server.value, server.error = {}, exc
        finally:
            server.at = began
            if server.refresh_began == began:
                server.refresh = None
            alive = {i.ref for s in self._servers.values() for i in (s.value or {}).values()}
            self._started = {k: v for k, v in self._started.items() if k in alive}

    async def _wait(
        self, server: _Server, refresh: asyncio.Task[None], *, stale_ok: bool
    ) -> dict[str, LiveInstance]:
        """The refresh's result, or (`stale_ok`) the snapshot before it when the driver is slow."""
        try:
            await asyncio.wait_for(asyncio.shield(refresh), self.wait_s)
        except TimeoutError:
            if stale_ok and server.value is not None and server.error is None:
                return server.value
            raise DriverError(f"server {server.name} did not answer within {self.wait_s:g}s") from None
        return server.current()



class Answers:
    """Answers built from live snapshots, reused while those snapshots (by identity) and the
    second are the same: 200 readers polling one page cost one build a second, not 200."""

    def __init__(self) -> None:
        self._built_from: tuple[object, ...] = ()
        self._second = -1
        self._bodies: dict[Hashable, bytes] = {}

    def __repr__(self) -> str:
        return f"Answers({len(self._bodies)} kept for second {self._second})"

    def get(
        self, snapshots: Sequence[object], second: int, key: Hashable, build: Callable[[], bytes]
    ) -> bytes:
        """The body for `key` built from `snapshots` in `second`: kept, or `build()` now."""
        same = len(snapshots) == len(self._built_from) and all(
            a is b for a, b in zip(snapshots, self._built_from, strict=True)
        )
        if not same or second != self._second or len(self._bodies) >= MAX_ANSWERS:
            self._built_from, self._second, self._bodies = tuple(snapshots), second, {}
        body = self._bodies.get(key)
        if body is None:
            body = self._bodies[key] = build()
        return body
