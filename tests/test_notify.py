"""notify.py: signing, backoff, URL and payload checks, and the Sender against real receivers."""

from __future__ import annotations

import asyncio
import json
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web

from deployally.notify.events import EVENTS, MASK, body_for, scrub
from deployally.notify.sender import BACKOFF_S, MAX_ATTEMPTS, Sender, check_url, next_attempt_delay
from deployally.notify.signature import sign, verify
from deployally.store import DeliveryStatus, Store

WAIT_S = 15.0  # a bound on waits, never an expectation of speed

# ------------------------------------------------------------------ signature and payload


def test_signature_verifies_with_the_secret_only() -> None:
    body = b'{"event":"ping"}'
    header = sign("s3cret", body)
    assert header.startswith("sha256=") and len(header) == len("sha256=") + 64
    assert verify("s3cret", body, header)
    assert not verify("other", body, header)
    assert not verify("s3cret", body + b" ", header)
    assert not verify("s3cret", body, "sha256=" + "0" * 64)
    assert not verify("s3cret", body, "")


def test_body_has_the_documented_shape_and_no_secret_values() -> None:
    at = datetime(2024, 5, 1, 12, 30, 0, 250000, tzinfo=UTC)
    data = {"name": "db", "params": {"root_password": "hunter2", "database": "app"}}
    body = body_for("evt_1", "deployment.success", at, data)
    doc = json.loads(body)
    assert set(doc) == {"id", "event", "created_at", "data"}
    assert doc["id"] == "evt_1" and doc["event"] == "deployment.success"
    assert doc["created_at"] == "2024-05-01T12:30:00.250000Z"
    assert doc["data"] == {"name": "db", "params": {"root_password": MASK, "database": "app"}}
    assert b"hunter2" not in body


def test_scrub_masks_secret_keys_at_any_depth_and_leaves_input_alone() -> None:
    data = {
        "token": "t",
        "Api-Key": "k",
        "nested": {"DB_PASSWORD": "p", "client_secret": "s", "port": 5432},
        "items": [{"private_key": "pk", "name": "a"}, "plain"],
        "author": "me",
        "passed": True,
    }
    out = scrub(data)
    assert out == {
        "token": MASK,
        "Api-Key": MASK,
        "nested": {"DB_PASSWORD": MASK, "client_secret": MASK, "port": 5432},
        "items": [{"private_key": MASK, "name": "a"}, "plain"],
        "author": "me",
        "passed": True,
    }
    assert data["nested"] == {"DB_PASSWORD": "p", "client_secret": "s", "port": 5432}


@pytest.mark.parametrize(
    "url", ["http://example.com/hook", "https://h:8443/x?y=1", "http://[::1]/"]
)
def test_http_and_https_urls_are_accepted(url: str) -> None:
    assert check_url(url) is None


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("example.com/hook", "no scheme"),
        ("ftp://example.com/hook", "ftp:"),
        ("file:///etc/passwd", "file:"),
        ("javascript:alert(1)", "javascript:"),
        ("http://", "no host"),
        ("https:///path", "no host"),
        ("http://h:99999/", "not a valid URL"),
    ],
)
def test_other_urls_are_refused_with_a_reason(url: str, says: str) -> None:
    problem = check_url(url)
    assert problem is not None and says in problem


def test_event_names() -> None:
    assert {"deployment.failed", "instance.unhealthy", "definition.deleted", "ping"} <= EVENTS
    assert "instance.healthy" not in EVENTS  # internal to the reconciler


# ------------------------------------------------------------------ backoff


def test_backoff_grows_with_jitter_and_spans_over_an_hour() -> None:
    assert MAX_ATTEMPTS >= 8
    assert list(BACKOFF_S) == sorted(BACKOFF_S)
    rng = random.Random(7)
    for attempt, base in enumerate(BACKOFF_S, start=1):
        samples = [next_attempt_delay(attempt, rng) for _ in range(50)]
        assert all(0.8 * base <= s <= 1.2 * base for s in samples)
        assert len(set(samples)) > 1  # jittered, not fixed
    waits = [next_attempt_delay(n, rng) for n in range(1, MAX_ATTEMPTS)]
    assert sum(waits) >= 3600


# ------------------------------------------------------------------ a real receiver

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Receiver:
    """Webhook receivers on 127.0.0.1, recording what they were sent."""

    def __init__(self) -> None:
        self.requests: dict[str, list[tuple[dict[str, str], bytes]]] = {}
        self.routes: dict[str, Handler] = {}
        self.base = ""

    def route(self, path: str, handler: Handler) -> str:
        """Serve `handler` at `path` (recording each request first); returns its URL."""
        self.routes[path] = handler
        return f"{self.base}{path}"

    def got(self, path: str) -> list[tuple[dict[str, str], bytes]]:
        return self.requests.get(path, [])

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.setdefault(request.path, []).append((dict(request.headers), body))
        return await self.routes[request.path](request)


@asynccontextmanager
async def receiving(port: int = 0) -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/{tail:.*}", receiver._dispatch)
    runner = web.AppRunner(app, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    receiver.base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield receiver
    finally:
        await runner.cleanup()


async def ok(_: web.Request) -> web.Response:
    return web.Response(text="thanks")


async def fail(_: web.Request) -> web.Response:
    return web.Response(status=500, text="boom")


class FakeClock:
    """The Sender's notion of now, moved by the test; starts well after anything enqueued."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC) + timedelta(days=1)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


async def drain(sender: Sender, rounds: int = 50) -> int:
    """send_once until nothing is due; returns the attempts made."""
    total = 0
    for _ in range(rounds):
        sent = await sender.send_once()
        if sent == 0:
            return total
        total += sent
    pytest.fail(f"still sending after {rounds} rounds")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "state")


# ------------------------------------------------------------------ the Sender


def test_delivery_is_signed_and_verifiable_by_the_receiver(store: Store) -> None:
    async def scenario() -> None:
        async with receiving() as rx:
            hook = store.add_webhook(rx.route("/hook", ok), ["ping"], "s3cret")
            event_id = store.enqueue_event("ping", {"hello": "world", "password": "hunter2"})
            assert await Sender(store, clock=FakeClock()).send_once() == 1

        [(headers, body)] = rx.got("/hook")
        assert verify("s3cret", body, headers["X-DeployAlly-Signature"])
        assert not verify("wrong", body, headers["X-DeployAlly-Signature"])
        [delivery] = store.deliveries(hook.id)
        assert delivery.status is DeliveryStatus.DELIVERED
        assert headers["X-DeployAlly-Delivery"] == delivery.id
        assert headers["X-DeployAlly-Event"] == "ping"
        assert headers["Content-Type"] == "application/json"
        assert headers["User-Agent"].startswith("DeployAlly/")
        doc = json.loads(body)
        assert doc["id"] == event_id and doc["data"] == {"hello": "world", "password": MASK}
        assert b"hunter2" not in body

    asyncio.run(scenario())


def test_only_subscribed_webhooks_receive_an_event(store: Store) -> None:
    async def scenario() -> None:
        async with receiving() as rx:
            store.add_webhook(rx.route("/deploys", ok), ["deployment.failed"], "a")
            store.add_webhook(rx.route("/instances", ok), ["instance.stopped"], "b")
            store.enqueue_event("instance.stopped", {"name": "db", "exit_code": 137})
            await drain(Sender(store, clock=FakeClock()))
        assert rx.got("/deploys") == []
        assert len(rx.got("/instances")) == 1

    asyncio.run(scenario())


def test_500_three_times_then_200_is_one_delivery_with_four_attempts(store: Store) -> None:
    answers = iter([500, 500, 500, 200, 200])

    async def flaky(_: web.Request) -> web.Response:
        return web.Response(status=next(answers))

    async def scenario() -> None:
        clock = FakeClock()
        sender = Sender(store, clock=clock, schedule=lambda attempt: 60.0 * attempt)
        async with receiving() as rx:
            hook = store.add_webhook(rx.route("/flaky", flaky), ["ping"], "s")
            store.enqueue_event("ping", {})
            assert await sender.send_once() == 1
            assert await sender.send_once() == 0  # the retry is not due yet
            for attempt in (1, 2, 3):
                clock.advance(60.0 * attempt)
                assert await sender.send_once() == 1
            clock.advance(10_000)
            assert await sender.send_once() == 0  # delivered: never sent again

        assert len(rx.got("/flaky")) == 4
        [delivery] = store.deliveries(hook.id)
        assert delivery.status is DeliveryStatus.DELIVERED and delivery.attempts == 4
        attempts = store.delivery_attempts(delivery.id)
        assert [a.status_code for a in attempts] == [500, 500, 500, 200]
        assert all(a.error and "500" in a.error for a in attempts[:3])
        assert attempts[3].error is None
        # the same event each time: one id, so the receiver can tell a retry from a new event
        assert len({json.loads(body)["id"] for _, body in rx.got("/flaky")}) == 1

    asyncio.run(scenario())


def test_receiver_down_then_restart_delivers_everything(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    clock = FakeClock()

    async def while_down() -> None:
        with Store(tmp_path / "state") as store:
            hook = store.add_webhook(url, ["deployment.success"], "s")
            for n in range(3):
                store.enqueue_event("deployment.success", {"n": n})
            await drain(Sender(store, clock=clock))
            [first, *_] = store.delivery_attempts(store.deliveries(hook.id)[-1].id)
            assert first.status_code is None and first.error
            assert all(d.status is DeliveryStatus.PENDING for d in store.deliveries(hook.id))

    async def after_restart() -> None:
        clock.advance(24 * 3600)
        with Store(tmp_path / "state") as store:  # a new process: only the store carries over
            async with receiving(port) as rx:
                rx.route("/hook", ok)
                await drain(Sender(store, clock=clock))
            sent = sorted(json.loads(body)["data"]["n"] for _, body in rx.got("/hook"))
            assert sent == [0, 1, 2]
            [hook] = store.webhooks()
            assert {d.status for d in store.deliveries(hook.id)} == {DeliveryStatus.DELIVERED}

    asyncio.run(while_down())
    asyncio.run(after_restart())


def test_a_hanging_receiver_does_not_hold_up_a_healthy_one(store: Store) -> None:
    async def scenario() -> None:
        release = asyncio.Event()
        seen_while_hanging: list[int] = []

        async def hang(_: web.Request) -> web.Response:
            await asyncio.wait_for(release.wait(), WAIT_S)
            return web.Response()

        async def healthy(_: web.Request) -> web.Response:
            # attempts recorded for the hanging receiver when this one is reached
            seen_while_hanging.append(len(store.delivery_attempts(slow_delivery)))
            return web.Response()

        async with receiving() as rx:
            # registered first, so it comes first in the outbox
            slow = store.add_webhook(rx.route("/hang", hang), ["ping"], "a")
            fast = store.add_webhook(rx.route("/ok", healthy), ["ping"], "b")
            store.enqueue_event("ping", {})
            store.enqueue_event("ping", {})
            slow_delivery = store.deliveries(slow.id)[-1].id
            try:
                sent = await Sender(store, timeout_s=1.5, clock=FakeClock()).send_once()
            finally:
                release.set()

        # both events reached the healthy receiver before the hanging one timed out
        assert seen_while_hanging == [0, 0]
        assert {d.status for d in store.deliveries(fast.id)} == {DeliveryStatus.DELIVERED}
        # the hanging receiver cost one attempt this round, not one per delivery
        assert sent == 3
        [attempt] = store.delivery_attempts(slow_delivery)
        assert attempt.status_code is None and attempt.error and "1.5s" in attempt.error
        assert {d.status for d in store.deliveries(slow.id)} == {DeliveryStatus.PENDING}

    asyncio.run(scenario())


def test_after_the_last_attempt_the_delivery_is_failed_and_kept(store: Store) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        sender = Sender(store, clock=clock, schedule=lambda _: 0.0)
        async with receiving() as rx:
            hook = store.add_webhook(rx.route("/down", fail), ["ping"], "s")
            store.enqueue_event("ping", {})
            assert await drain(sender) == MAX_ATTEMPTS
            clock.advance(30 * 24 * 3600)
            assert await sender.send_once() == 0
        assert len(rx.got("/down")) == MAX_ATTEMPTS
        [delivery] = store.deliveries(hook.id)
        assert delivery.status is DeliveryStatus.FAILED
        assert delivery.attempts == MAX_ATTEMPTS and delivery.last_status_code == 500
        assert len(store.delivery_attempts(delivery.id)) == MAX_ATTEMPTS

    asyncio.run(scenario())


def test_a_non_http_url_is_never_posted(store: Store) -> None:
    async def scenario() -> None:
        # the API refuses such URLs; this one got in some other way (an old database)
        hook = store.add_webhook("file:///etc/passwd", ["ping"], "s")
        store.enqueue_event("ping", {})
        assert await Sender(store, clock=FakeClock()).send_once() == 1
        [delivery] = store.deliveries(hook.id)
        assert delivery.status is DeliveryStatus.FAILED
        assert delivery.last_error and "file:" in delivery.last_error

    asyncio.run(scenario())


def test_run_sends_when_woken_from_another_thread_and_stops(store: Store) -> None:
    async def scenario() -> None:
        async with receiving() as rx:
            store.add_webhook(rx.route("/hook", ok), ["ping"], "s")
            # the idle wait is longer than the test waits: only wake() can explain a delivery
            sender = Sender(store, idle_s=3600)
            stop = asyncio.Event()
            task = asyncio.create_task(sender.run(stop))
            await asyncio.sleep(0)  # let run() start and go idle
            for n in range(2):
                await asyncio.to_thread(store.enqueue_event, "ping", {"n": n})
                await asyncio.to_thread(sender.wake)
                async with asyncio.timeout(WAIT_S):
                    while len(rx.got("/hook")) <= n:
                        await asyncio.sleep(0.01)
            stop.set()
            sender.wake()
            async with asyncio.timeout(WAIT_S):
                await task
        assert [json.loads(b)["data"]["n"] for _, b in rx.got("/hook")] == [0, 1]

    asyncio.run(scenario())
