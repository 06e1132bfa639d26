"""The sync loop of `deployally serve`: one sync at a time, in one thread.

Triggers that arrive during a sync coalesce into exactly one follow-up sync. A
failed sync is retried with backoff (1 s doubling to a minute) and the loop
lives on; waiters for a commit are answered by the first sync that reached it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from deployally.api.sync import SyncOutcome
from deployally.errors import DeployAllyError, SourceError
from deployally.logs import fields
from deployally.types import SyncResult

# serve's logger: its sync lines read `server: sync done` as they always have.
log = logging.getLogger("deployally.server")

FAILED = ("failed", "rolled_back")
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0
REACHED_KEPT = 100


class SyncLoop:
    """Runs syncs one at a time in one thread; triggers during a sync make exactly one more."""

    def __init__(
        self,
        run_sync: Any,
        *,
        on_recovered: Any = None,
        on_finished: Callable[[SyncResult, float], None] | None = None,
    ) -> None:
        self._run_sync = run_sync  # () -> SyncOutcome, blocking
        self._on_recovered = on_recovered
        self._on_finished = on_finished  # (result, seconds) after every sync, for the metrics
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sync")
        self._wanted = asyncio.Event()
        self._why: list[str] = []
        self._waiters: list[asyncio.Future[SyncOutcome]] = []
        # The first sync that reached each commit: it holds that commit's deployments.
        self._reached: OrderedDict[str, SyncOutcome] = OrderedDict()
        self._retry: asyncio.TimerHandle | None = None
        self.running = False
        self.syncs = 0
        self.failures = 0  # in a row
        self.last_error: str | None = None
        self.last_outcome: SyncOutcome | None = None
        self.last_finished_at: datetime | None = None  # of the last sync that ran to completion
        self.last_result: SyncResult | None = None
        self.last_seconds: float | None = None

    def __repr__(self) -> str:
        return f"SyncLoop(syncs={self.syncs}, running={self.running}, failures={self.failures})"

    def trigger(self, why: str) -> None:
        """Ask for a sync; call on the loop's thread."""
        self._why.append(why)
        self._wanted.set()

    async def sync_covering(self, commit: str | None, why: str) -> SyncOutcome:
        """Wait for a sync that starts after now; answer with the first sync that reached `commit`."""
        if commit is not None and commit in self._reached:
            return self._reached[commit]
        waiter: asyncio.Future[SyncOutcome] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.trigger(why)
        outcome = await waiter
        return self._reached.get(commit, outcome) if commit else outcome

    async def run(self, stop: asyncio.Event) -> None:
        """Sync whenever asked, until `stop`; a sync in progress is always finished first."""
        loop = asyncio.get_running_loop()
        try:
            while not stop.is_set():
                wanted = asyncio.ensure_future(self._wanted.wait())
                stopping = asyncio.ensure_future(stop.wait())
                await asyncio.wait({wanted, stopping}, return_when=asyncio.FIRST_COMPLETED)
                wanted.cancel()
                stopping.cancel()
                if stop.is_set():
                    break
                self._wanted.clear()
                why, self._why = self._why, []
                waiters, self._waiters = self._waiters, []
                await self._sync_once(loop, why, waiters)
        finally:
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_exception(SourceError("the engine is stopping; push again later"))
            if self._retry is not None:
                self._retry.cancel()
            self._executor.shutdown(wait=True)

    async def _sync_once(
        self,
        loop: asyncio.AbstractEventLoop,
        why: list[str],
        waiters: list[asyncio.Future[SyncOutcome]],
    ) -> None:
        self.running = True
        started = time.monotonic()
        try:
            outcome: SyncOutcome = await loop.run_in_executor(self._executor, self._run_sync)
        except Exception as exc:  # any failure is reported and retried; the loop lives on
            self._finished(SyncResult.ERROR, started)
            self.failures += 1
            self.last_error = str(exc) or type(exc).__name__
            delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (self.failures - 1))
            log.warning(
                "sync failed; retrying in %.0fs",
                delay,
                extra=fields(error=self.last_error, why=",".join(sorted(set(why)))),
                exc_info=not isinstance(exc, DeployAllyError),
            )
            if self._retry is not None:
                self._retry.cancel()
            self._retry = loop.call_later(delay, self.trigger, "retry after a failed sync")
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        finally:
            self.running = False
            self.syncs += 1
        self._finished(SyncResult.SUCCESS if outcome.report.ok else SyncResult.PARTIAL, started)
        recovered = self.failures > 0
        self.failures = 0
        self.last_error = None
        self.last_outcome = outcome
        self.last_finished_at = datetime.now(UTC)
        commit = outcome.report.commit
        if commit is not None and commit not in self._reached:
            self._reached[commit] = outcome
            while len(self._reached) > REACHED_KEPT:
                self._reached.popitem(last=False)
        if outcome.next_retry_s is not None:
            # The engine backs failed definitions off; come back exactly when one is due.
            if self._retry is not None:
                self._retry.cancel()
            self._retry = loop.call_later(
                outcome.next_retry_s + 0.1, self.trigger, "retry a failed definition"
            )
        report = outcome.report
        new_errors = bool(report.errors) and commit is not None and self._reached.get(commit) is outcome
        if report.deployments or new_errors or recovered or report.unreachable:
            log.info(
                "sync done",
                extra=fields(
                    commit=(commit or "")[:12],
                    deployments=len(report.deployments),
                    failed=sum(1 for d in report.deployments if d.status.value in FAILED),
                    waiting=sum(1 for d in report.deployments if d.status.value == "waiting"),
                    invalid=len(report.errors),
                    unchanged=report.unchanged,
                    unreachable=",".join(sorted(report.unreachable)),
                    seconds=round(self.last_seconds or 0.0, 3),
                    why=",".join(sorted(set(why))),
                ),
            )
        if recovered:
            if self._on_recovered is not None:
                self._on_recovered()
            # Whatever failed may have hidden a commit from a waiter's sync; look again.
            self.trigger("recovered")
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(outcome)

    def _finished(self, result: SyncResult, started: float) -> None:
        self.last_result = result
        self.last_seconds = time.monotonic() - started
        if self._on_finished is not None:
            self._on_finished(result, self.last_seconds)
