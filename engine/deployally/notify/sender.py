"""Outbox -> signed webhook POSTs, with retries that back off (DESIGN.md, "Webhooks").

The store holds every event and delivery; the Sender keeps no state of its own,
so a restart picks up exactly where the last process stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import aiohttp

from deployally import __version__
from deployally.notify.events import body_for
from deployally.notify.signature import sign
from deployally.store import DeliveryRecord, DeliveryStatus, Store, WebhookRecord

log = logging.getLogger(__name__)

# Delays after the 1st, 2nd, ... failed attempt: 8 retries over about two hours,
# so a receiver down for a deploy window or a lunch break still gets everything.
BACKOFF_S: tuple[float, ...] = (10, 30, 90, 240, 600, 1200, 1800, 3600)
MAX_ATTEMPTS = len(BACKOFF_S) + 1
JITTER = 0.2  # +-20%: receivers coming back are not hit by every sender at once

def check_url(url: str) -> str | None:
    """None if url can receive webhooks, else a message saying what to fix."""
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as exc:
        return f"url: {url!r} is not a valid URL ({exc}); use http://host[:port]/path"
    if parts.scheme not in ("http", "https"):
        shown = f"{parts.scheme}:" if parts.scheme else "no scheme"
        return f"url: {url!r} has {shown}; only http:// and https:// URLs can receive webhooks"
    if not parts.hostname:
        return f"url: {url!r} has no host; use {parts.scheme}://host[:port]/path"
    return None


# ------------------------------------------------------------------ retries


def next_attempt_delay(attempt: int, rng: random.Random) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based), with +-20% jitter."""
    base = BACKOFF_S[min(max(attempt, 1), len(BACKOFF_S)) - 1]
    return base * rng.uniform(1 - JITTER, 1 + JITTER)


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


# ------------------------------------------------------------------ the sender

Clock = Callable[[], datetime]
# Failed attempt number (1-based) -> seconds until the next attempt.
Schedule = Callable[[int], float]


@dataclass(frozen=True)
class Outcome:
    """What one POST came to: a status code, or an error when there was no answer."""

    status_code: int | None
    error: str | None
    duration_ms: float
    permanent: bool = False  # retrying cannot help (the webhook's URL is unusable)

    @property
    def delivered(self) -> bool:
        """Only a 2xx acknowledges a delivery; redirects are not followed."""
        return self.status_code is not None and 200 <= self.status_code < 300


class Sender:
    """Posts due deliveries from the store's outbox, signed, concurrently but bounded.

    Deliveries to one webhook go one at a time and stop at its first failure in a
    round, so a slow or dead receiver costs at most one timeout per round and never
    holds up the others, which run alongside it.
    """

    def __init__(
        self,
        store: Store,
        *,
        timeout_s: float = 5.0,
        concurrency: int = 4,
        clock: Clock = utcnow,
        schedule: Schedule | None = None,
        max_attempts: int = MAX_ATTEMPTS,
        batch: int = 100,
        idle_s: float = 2.0,
    ) -> None:
        self._store = store
        self._timeout_s = timeout_s
        self._concurrency = concurrency
        self._clock = clock
        rng = random.Random()
        self._schedule: Schedule = schedule or (lambda n: next_attempt_delay(n, rng))
        self._max_attempts = max_attempts
        self._batch = batch
        self._idle_s = idle_s
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return (
            f"Sender({self._store!r}, timeout_s={self._timeout_s}, concurrency={self._concurrency})"
        )

    def wake(self) -> None:
        """Send what is due now instead of after the idle wait; safe from any thread."""
        loop = self._loop
        if loop is not None:
            # The loop may close between the check and the call; then there is nothing to wake.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake.set)

    async def run(self, stop: asyncio.Event) -> None:
        """Send due deliveries until `stop` is set, sleeping between rounds unless woken."""
        self._loop = asyncio.get_running_loop()
        async with self._new_session() as session:
            self._session = session
            try:
                while not stop.is_set():
                    self._wake.clear()  # before the round: a wake during it means "go again"
                    try:
                        sent = await self.send_once()
                    except Exception:  # a locked or broken store must not end the loop
                        log.exception("webhook sender: round failed")
                        sent = 0
                    if sent < self._batch:
                        await self._idle(stop)
            finally:
                self._session = None
                self._loop = None

    async def send_once(self) -> int:
        """Attempt every delivery due now, once; return how many were attempted."""
        due = await asyncio.to_thread(self._store.due_deliveries, self._clock(), self._batch)
        if not due:
            return 0
        by_webhook: dict[str, list[DeliveryRecord]] = {}
        for delivery in due:
            by_webhook.setdefault(delivery.webhook_id, []).append(delivery)
        hooks = await asyncio.to_thread(
            lambda: {wid: self._store.webhook(wid) for wid in by_webhook}
        )
        limit = asyncio.Semaphore(self._concurrency)
        if self._session is not None:
            counts = await self._fan_out(self._session, limit, hooks, by_webhook)
        else:
            async with self._new_session() as session:
                counts = await self._fan_out(session, limit, hooks, by_webhook)
        return sum(counts)

    # ------------------------------------------------------------ internals

    def _new_session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._timeout_s),
            headers={"User-Agent": f"DeployAlly/{__version__}"},
            cookie_jar=aiohttp.DummyCookieJar(),  # receivers must not get state back from us
        )

    async def _fan_out(
        self,
        session: aiohttp.ClientSession,
        limit: asyncio.Semaphore,
        hooks: Mapping[str, WebhookRecord | None],
        by_webhook: Mapping[str, list[DeliveryRecord]],
    ) -> list[int]:
        return await asyncio.gather(
            *(
                self._send_to(session, limit, hook, by_webhook[wid])
                for wid, hook in hooks.items()
                if hook is not None  # deleted meanwhile: its deliveries went with it
            )
        )

    async def _send_to(
        self,
        session: aiohttp.ClientSession,
        limit: asyncio.Semaphore,
        hook: WebhookRecord,
        deliveries: list[DeliveryRecord],
    ) -> int:
        attempted = 0
        for delivery in deliveries:
            async with limit:
                outcome = await self._post(session, hook, delivery)
            await asyncio.to_thread(self._record, delivery, outcome)
            attempted += 1
            if not outcome.delivered:
                break  # the rest wait for the next round rather than each wait for a timeout
        return attempted

    async def _post(
        self, session: aiohttp.ClientSession, hook: WebhookRecord, delivery: DeliveryRecord
    ) -> Outcome:
        problem = check_url(hook.url)
        if problem is not None:
            return Outcome(None, f"webhook {hook.id}: {problem}", 0.0, permanent=True)
        body = body_for(delivery.event_id, delivery.event, delivery.created_at, delivery.data)
        headers = {
            "Content-Type": "application/json",
            "X-DeployAlly-Event": delivery.event,
            "X-DeployAlly-Delivery": delivery.id,
            "X-DeployAlly-Signature": sign(hook.secret, body),
        }
        started = time.monotonic()
        try:
            async with session.post(
                hook.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status, reason = response.status, response.reason or ""
        except TimeoutError:
            return Outcome(None, f"no answer within {self._timeout_s:g}s", _ms(started))
        except aiohttp.ClientError as exc:
            return Outcome(None, f"{type(exc).__name__}: {exc}", _ms(started))
        error = None if 200 <= status < 300 else f"receiver answered HTTP {status} {reason}".strip()
        return Outcome(status, error, _ms(started))

    def _record(self, delivery: DeliveryRecord, outcome: Outcome) -> None:
        attempt = delivery.attempts + 1
        if outcome.delivered:
            final: DeliveryStatus | None = DeliveryStatus.DELIVERED
            next_at = None
        elif outcome.permanent or attempt >= self._max_attempts:
            final, next_at = DeliveryStatus.FAILED, None
        else:
            final = None
            next_at = self._clock() + timedelta(seconds=self._schedule(attempt))
        self._store.record_attempt(
            delivery.id,
            status_code=outcome.status_code,
            duration_ms=outcome.duration_ms,
            error=outcome.error,
            next_attempt_at=next_at,
            final_status=final,
        )

    async def _idle(self, stop: asyncio.Event) -> None:
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waiters, timeout=self._idle_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 3)
