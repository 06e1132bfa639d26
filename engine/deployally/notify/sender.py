"""Outbox -> signed webhook POSTs, in order per webhook, with retries that back off
(DESIGN.md, "Webhooks").

Each webhook is a *lane*: its deliveries go one at a time, oldest first, and a later one
never overtakes an earlier one still pending. Lanes run independently, so a failing or
hanging receiver delays only its own events. The store holds every event and delivery;
the Sender keeps no state of its own, so a restart picks up exactly where the last
process stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import aiohttp

from deployally import __version__
from deployally.errors import NotFound
from deployally.notify.events import body_for
from deployally.notify.signature import sign, standard_headers
from deployally.notify.urls import (
    ENGINE_HOST,
    GuardedResolver,
    HostNetworks,
    RefusedAddress,
    check_url,
    refusal,
)
from deployally.store import DeliveryRecord, DeliveryStatus, Store, WebhookRecord
from deployally.types import Network

log = logging.getLogger(__name__)

# Delays after the 1st, 2nd, ... failed attempt. The first retry comes at once: a dropped
# keep-alive connection or one bad backend of two fails one request, not the next. Then ten
# attempts span about two hours, so a receiver down for a deploy window still gets everything.
BACKOFF_S: tuple[float, ...] = (0.2, 10, 30, 90, 240, 600, 1200, 1800, 3600)
MAX_ATTEMPTS = len(BACKOFF_S) + 1
# A delivery is retried until its event is this old: in a lane it may wait behind others to
# a receiver that is down, and must not then get a whole schedule of its own after them.
RETRY_WINDOW_S = sum(BACKOFF_S)
# How long an answer about the host's container networks stands (networks come and go).
NETWORKS_TTL_S = 10.0
JITTER = 0.2  # +-20%: receivers coming back are not hit by every sender at once



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
    permanent: bool = False  # retrying cannot help (the webhook's URL is unusable or refused)

    @property
    def delivered(self) -> bool:
        """Only a 2xx acknowledges a delivery; redirects are not followed."""
        return self.status_code is not None and 200 <= self.status_code < 300


class Sender:
    """Posts due deliveries from the store's outbox, signed, one lane per webhook.

    A lane sends its deliveries in order and stops at its first failure until that
    delivery's retry is due; the other lanes go on meanwhile. At most `concurrency`
    POSTs are in flight at once.
    """

    def __init__(
        self,
        store: Store,
        *,
        timeout_s: float = 5.0,
        concurrency: int = 8,
        clock: Clock = utcnow,
        schedule: Schedule | None = None,
        max_attempts: int = MAX_ATTEMPTS,
        batch: int = 100,
        idle_s: float = 2.0,
        allow: Collection[str] = (),
        host_networks: HostNetworks | None = None,
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
        self._allow = frozenset(allow)  # what engine.yaml lets webhooks reach (notify/urls.py)
        # The container networks on the engine's host, asked again every NETWORKS_TTL_S.
        self._host_networks = None if ENGINE_HOST in self._allow else host_networks
        self._networks: tuple[Network, ...] = ()
        self._networks_at = -NETWORKS_TTL_S
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None
        self._limit: asyncio.Semaphore | None = None

    def __repr__(self) -> str:
        return (
            f"Sender({self._store!r}, timeout_s={self._timeout_s}, concurrency={self._concurrency})"
        )

    def wake(self) -> None:
        """Look for new deliveries now instead of after the idle wait; safe from any thread."""
        loop = self._loop
        if loop is not None:
            # The loop may close between the check and the call; then there is nothing to wake.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake.set)

    async def run(self, stop: asyncio.Event) -> None:
        """Run one lane per webhook with pending deliveries until `stop` is set."""
        self._loop = asyncio.get_running_loop()
        lanes: dict[str, asyncio.Task[None]] = {}
        lane_wakes: dict[str, asyncio.Event] = {}
        async with self._new_session() as session:
            self._session = session
            try:
                while not stop.is_set():
                    self._wake.clear()  # before looking: a wake after it means "look again"
                    try:
                        pending = await asyncio.to_thread(self._store.pending_webhooks)
                    except Exception:  # a locked or broken store must not end the loop
                        log.exception("webhook sender: reading the outbox failed")
                        pending = []
                    for wid in pending:
                        if wid in lanes and not lanes[wid].done():
                            lane_wakes[wid].set()  # new deliveries may be due at once
                            continue
                        lane_wakes[wid] = asyncio.Event()
                        lanes[wid] = asyncio.create_task(
                            self._lane(session, wid, stop, lane_wakes[wid]), name=f"webhook {wid}"
                        )
                    await self._idle(stop, self._wake, self._idle_s)
            finally:
                for task in lanes.values():
                    task.cancel()
                await asyncio.gather(*lanes.values(), return_exceptions=True)
                self._session = None
                self._loop = None

    async def send_once(self) -> int:
        """Attempt, once, every delivery due now that no earlier one of its webhook holds
        back; return how many were attempted."""
        pending = await asyncio.to_thread(self._store.pending_webhooks)
        if not pending:
            return 0
        if self._session is not None:
            counts = await asyncio.gather(*(self._send_due(self._session, w) for w in pending))
        else:
            async with self._new_session() as session:
                counts = await asyncio.gather(*(self._send_due(session, w) for w in pending))
        return sum(counts)

    # ------------------------------------------------------------ internals

    def _new_session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._timeout_s),
            headers={"User-Agent": f"DeployAlly/{__version__}"},
            cookie_jar=aiohttp.DummyCookieJar(),  # receivers must not get state back from us
            # Every host name is checked on the addresses it resolves to for this connection.
            connector=aiohttp.TCPConnector(
                resolver=GuardedResolver(self._allow, lambda: self._networks)
            ),
        )

    async def _lane(
        self, session: aiohttp.ClientSession, webhook_id: str, stop: asyncio.Event,
        wake: asyncio.Event,
    ) -> None:
        """Send one webhook's deliveries in order until none is pending (or `stop`)."""
        while not stop.is_set():
            wake.clear()
            try:
                await self._send_due(session, webhook_id)
                head = await asyncio.to_thread(self._store.pending_deliveries, webhook_id, 1)
            except Exception:
                log.exception("webhook sender: lane %s failed", webhook_id)
                head = []
            if not head:
                if wake.is_set():  # woken while looking: a new delivery may have come
                    continue
                return
            due_at = head[0].next_attempt_at or self._clock()
            wait_s = (due_at - self._clock()).total_seconds()
            await self._idle(stop, wake, min(max(wait_s, 0.0), self._idle_s))

    async def _send_due(self, session: aiohttp.ClientSession, webhook_id: str) -> int:
        """Post a webhook's pending deliveries in order, from its oldest, while each is due and
        each one before it was delivered (or given up); how many were attempted."""
        attempted = 0
        await self._refresh_networks()
        hook = await asyncio.to_thread(self._store.webhook, webhook_id)
        while hook is not None:  # None: deleted meanwhile, and its deliveries with it
            batch = await asyncio.to_thread(
                self._store.pending_deliveries, webhook_id, self._batch
            )
            if not batch:
                break
            for delivery in batch:
                now = self._clock()
                if delivery.next_attempt_at is not None and delivery.next_attempt_at > now:
                    return attempted  # its retry is not due, and everything after it waits
                async with self._slots():
                    outcome = await self._post(session, hook, delivery)
                try:
                    final = await asyncio.to_thread(self._record, delivery, outcome)
                except NotFound:
                    return attempted  # the webhook was deleted meanwhile, with its deliveries
                attempted += 1
                if final is None:
                    return attempted  # it will be retried; the rest wait behind it
            if len(batch) < self._batch:
                break
        return attempted

    def _slots(self) -> asyncio.Semaphore:
        if self._limit is None:
            self._limit = asyncio.Semaphore(self._concurrency)
        return self._limit

    async def _post(
        self, session: aiohttp.ClientSession, hook: WebhookRecord, delivery: DeliveryRecord
    ) -> Outcome:
        problem = check_url(hook.url) or self._literal_refusal(hook.url)
        if problem is not None:
            return Outcome(None, f"webhook {hook.id}: {problem}", 0.0, permanent=True)
        body = body_for(delivery.event_id, delivery.event, delivery.created_at, delivery.data)
        # The attempt's own time, from the wall clock: what a receiver compares with its own.
        sent_at = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "X-DeployAlly-Event": delivery.event,
            "X-DeployAlly-Delivery": delivery.id,
            "X-DeployAlly-Signature": sign(hook.secret, body),
            **standard_headers(hook.secret, delivery.id, sent_at, body),
        }
        started = time.monotonic()
        try:
            async with session.post(
                hook.url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status, reason = response.status, response.reason or ""
        except TimeoutError:
            return Outcome(None, f"no answer within {self._timeout_s:g}s", _ms(started))
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, RefusedAddress):
                return Outcome(None, f"webhook {hook.id}: {exc.os_error}", _ms(started), permanent=True)
            return Outcome(None, f"{type(exc).__name__}: {exc}", _ms(started))
        except aiohttp.ClientError as exc:
            return Outcome(None, f"{type(exc).__name__}: {exc}", _ms(started))
        error = None if 200 <= status < 300 else f"receiver answered HTTP {status} {reason}".strip()
        return Outcome(status, error, _ms(started))

    def _literal_refusal(self, url: str) -> str | None:
        """aiohttp resolves no IP literal, so the resolver never sees one: check it here."""
        host = urlsplit(url.strip()).hostname or ""
        return refusal(url, [host], self._allow, self._networks)

    async def _refresh_networks(self) -> None:
        """Ask for the host's container networks when the last answer is NETWORKS_TTL_S old."""
        if self._host_networks is None or time.monotonic() - self._networks_at < NETWORKS_TTL_S:
            return
        self._networks_at = time.monotonic()  # before awaiting: one question for every lane
        try:
            self._networks = tuple(await asyncio.to_thread(self._host_networks))
        except Exception:  # keep the last answer; a broken Docker must not stop the sender
            log.exception("webhook sender: listing the host's container networks failed")

    def _record(self, delivery: DeliveryRecord, outcome: Outcome) -> DeliveryStatus | None:
        """Keep the attempt; the delivery's final status, or None when it will be retried."""
        attempt = delivery.attempts + 1
        now = self._clock()
        final: DeliveryStatus | None = None
        next_at = None
        if outcome.delivered:
            final = DeliveryStatus.DELIVERED
        elif (
            outcome.permanent
            or attempt >= self._max_attempts
            or (now - delivery.created_at).total_seconds() > RETRY_WINDOW_S
        ):
            final = DeliveryStatus.FAILED
        else:
            next_at = now + timedelta(seconds=self._schedule(attempt))
        self._store.record_attempt(
            delivery.id,
            status_code=outcome.status_code,
            duration_ms=outcome.duration_ms,
            error=outcome.error,
            next_attempt_at=next_at,
            final_status=final,
        )
        return final

    @staticmethod
    async def _idle(stop: asyncio.Event, wake: asyncio.Event, timeout_s: float) -> None:
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 3)
