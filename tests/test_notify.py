"""notify.py: signing, backoff, URL and payload checks, and the Sender against real receivers."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import random
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web

from deployally.notify.events import EVENTS, MASK, body_for, scrub
from deployally.notify.sender import BACKOFF_S, MAX_ATTEMPTS, Sender, next_attempt_delay
from deployally.notify.signature import (
    check_standard,
    secret_problem,
    sign,
    signing_key,
    standard_headers,
    standard_signature,
    verify,
)
from deployally.notify.urls import (
    KINDS,
    LOOPBACK,
    GuardedResolver,
    RefusedAddress,
    address_kind,
    check_destination,
    check_url,
)
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


# The receivers here are on loopback, where webhooks go only when engine.yaml allows it.
ALLOW = frozenset({LOOPBACK})


class FakeClock:
    """The Sender's notion of now, moved by the test; starts after anything enqueued in a test
    (and well within the retry window of it)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC) + timedelta(minutes=1)

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
            assert await Sender(store, clock=FakeClock(), allow=ALLOW).send_once() == 1

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
            await drain(Sender(store, clock=FakeClock(), allow=ALLOW))
        assert rx.got("/deploys") == []
        assert len(rx.got("/instances")) == 1

    asyncio.run(scenario())


def test_500_three_times_then_200_is_one_delivery_with_four_attempts(store: Store) -> None:
    answers = iter([500, 500, 500, 200, 200])

    async def flaky(_: web.Request) -> web.Response:
        return web.Response(status=next(answers))

    async def scenario() -> None:
        clock = FakeClock()
        sender = Sender(store, clock=clock, schedule=lambda attempt: 60.0 * attempt, allow=ALLOW)
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
            await drain(Sender(store, clock=clock, allow=ALLOW))
            [first, *_] = store.delivery_attempts(store.deliveries(hook.id)[-1].id)
            assert first.status_code is None and first.error
            assert all(d.status is DeliveryStatus.PENDING for d in store.deliveries(hook.id))

    async def after_restart() -> None:
        clock.advance(24 * 3600)
        with Store(tmp_path / "state") as store:  # a new process: only the store carries over
            async with receiving(port) as rx:
                rx.route("/hook", ok)
                await drain(Sender(store, clock=clock, allow=ALLOW))
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
                sent = await Sender(store, timeout_s=1.5, clock=FakeClock(), allow=ALLOW).send_once()
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
        sender = Sender(store, clock=clock, schedule=lambda _: 0.0, allow=ALLOW)
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
        assert await Sender(store, clock=FakeClock(), allow=ALLOW).send_once() == 1
        [delivery] = store.deliveries(hook.id)
        assert delivery.status is DeliveryStatus.FAILED
        assert delivery.last_error and "file:" in delivery.last_error

    asyncio.run(scenario())


def test_run_sends_when_woken_from_another_thread_and_stops(store: Store) -> None:
    async def scenario() -> None:
        async with receiving() as rx:
            store.add_webhook(rx.route("/hook", ok), ["ping"], "s")
            # the idle wait is longer than the test waits: only wake() can explain a delivery
            sender = Sender(store, idle_s=3600, allow=ALLOW)
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


# ------------------------------------------------------------------ Standard Webhooks

# The reference libraries' own test vector (standard-webhooks, libraries/*/tests).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_standard_signature_matches_the_specifications_test_vector() -> None:
    assert (
        standard_signature(VECTOR_SECRET, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY)
        == VECTOR_SIGNATURE
    )
    # Unpadded base64 after whsec_ is the same key, as the reference libraries read it.
    assert signing_key(VECTOR_SECRET) == base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")


def test_a_plain_secret_is_the_key_a_whsec_of_its_bytes_gives() -> None:
    as_standard = "whsec_" + base64.b64encode(b"meu_webhook_secret").decode()
    assert standard_signature("meu_webhook_secret", "dlv_1", 1700000000, b"{}") == (
        standard_signature(as_standard, "dlv_1", 1700000000, b"{}")
    )


def _headers(secret: str, msg_id: str, at: int, body: bytes) -> dict[str, str]:
    return standard_headers(secret, msg_id, at, body)


def test_check_standard_accepts_only_a_fresh_matching_signature() -> None:
    body, at = b'{"event":"ping"}', 1_700_000_000
    headers = _headers("s3cret", "dlv_abc", at, body)
    assert check_standard("s3cret", body, headers, now=at + 10) is None
    assert check_standard("s3cret", body, {k.upper(): v for k, v in headers.items()}, now=at) is None
    mismatch = "no v1 signature matches"
    assert mismatch in (check_standard("other", body, headers, now=at) or "")
    assert mismatch in (check_standard("s3cret", body + b" ", headers, now=at) or "")
    # The id and the time are signed: changing either breaks the signature.
    assert mismatch in (check_standard("s3cret", body, {**headers, "webhook-id": "dlv_x"}, now=at) or "")
    moved = {**headers, "webhook-timestamp": str(at + 1)}
    assert mismatch in (check_standard("s3cret", body, moved, now=at) or "")
    # Replays: too old, and too far in the future, with the default 5-minute tolerance.
    old = check_standard("s3cret", body, headers, now=at + 301)
    assert old is not None and "old" in old
    future = check_standard("s3cret", body, headers, now=at - 301)
    assert future is not None and "future" in future
    assert check_standard("s3cret", body, headers, now=at + 3000, tolerance_s=3600) is None
    # A list of signatures (a key rotation): one match is enough.
    rotated = {**headers, "webhook-signature": "v1a,abc v1,AAAA " + headers["webhook-signature"]}
    assert check_standard("s3cret", body, rotated, now=at) is None
    missing = check_standard("s3cret", body, {"webhook-id": "dlv_abc"}, now=at)
    assert missing is not None and "webhook-timestamp" in missing and "webhook-signature" in missing
    bad_time = check_standard("s3cret", body, {**headers, "webhook-timestamp": "1e9"}, now=at)
    assert bad_time is not None and "Unix seconds" in bad_time


@pytest.mark.parametrize(
    ("secret", "says"),
    [("whsec_not base64!", "base64"), ("whsec_" + base64.b64encode(b"short").decode(), "5"),
     ("whsec_" + base64.b64encode(bytes(65)).decode(), "65")],
)
def test_a_whsec_secret_must_be_base64_of_24_to_64_bytes(secret: str, says: str) -> None:
    problem = secret_problem(secret)
    assert problem is not None and says in problem


def test_secrets_that_can_sign() -> None:
    assert secret_problem(VECTOR_SECRET) is None
    assert secret_problem("any plain secret, as before") is None


def test_each_attempt_is_signed_with_its_own_time_so_a_replay_is_refused(store: Store) -> None:
    answers = iter([500, 200])

    async def flaky(_: web.Request) -> web.Response:
        return web.Response(status=next(answers))

    async def scenario() -> None:
        clock = FakeClock()
        sender = Sender(store, clock=clock, schedule=lambda _: 5.0, allow=ALLOW)
        async with receiving() as rx:
            store.add_webhook(rx.route("/hook", flaky), ["ping"], "s3cret")
            store.enqueue_event("ping", {})
            before = int(time.time())
            assert await sender.send_once() == 1
            clock.advance(5)
            await asyncio.sleep(1.1)  # the retry happens a wall-clock second later
            assert await sender.send_once() == 1
            after = int(time.time())
        (h1, b1), (h2, b2) = rx.got("/hook")
        for headers, body in ((h1, b1), (h2, b2)):
            assert headers["webhook-id"] == headers["X-DeployAlly-Delivery"]
            stamp = int(headers["webhook-timestamp"])
            assert before <= stamp <= after
            assert check_standard("s3cret", body, headers, now=stamp) is None
            assert verify("s3cret", body, headers["X-DeployAlly-Signature"])  # still sent
        assert h1["webhook-id"] == h2["webhook-id"] and b1 == b2
        assert int(h2["webhook-timestamp"]) > int(h1["webhook-timestamp"])
        # The first request, replayed once the tolerance has passed, is refused.
        replayed = check_standard("s3cret", b1, h1, now=int(h1["webhook-timestamp"]) + 301)
        assert replayed is not None and "old" in replayed

    asyncio.run(scenario())


# ------------------------------------------------------------------ lanes: order and drain


def test_a_receivers_deliveries_arrive_in_order_across_a_failure(store: Store) -> None:
    requests = 0

    async def second_fails(request: web.Request) -> web.Response:
        nonlocal requests
        requests += 1
        return web.Response(status=503 if requests == 2 else 204)

    async def scenario() -> list[int]:
        clock = FakeClock()
        sender = Sender(store, clock=clock, schedule=lambda _: 30.0, allow=ALLOW)
        async with receiving() as rx:
            store.add_webhook(rx.route("/hook", second_fails), ["ping"], "s")
            for n in range(5):
                store.enqueue_event("ping", {"n": n})
            assert await sender.send_once() == 2  # 0 delivered, 1 failed: the rest wait
            assert await sender.send_once() == 0  # ...behind it, until its retry is due
            clock.advance(30)
            assert await sender.send_once() == 4
            return [json.loads(b)["data"]["n"] for _, b in rx.got("/hook")]

    assert asyncio.run(scenario()) == [0, 1, 1, 2, 3, 4]


def test_a_fast_failure_is_retried_at_once_then_backs_off(store: Store) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        sender = Sender(store, clock=clock, allow=ALLOW)  # the production schedule
        async with receiving() as rx:
            hook = store.add_webhook(rx.route("/down", fail), ["ping"], "s")
            store.enqueue_event("ping", {})
            await sender.send_once()
            [first] = store.deliveries(hook.id)
            assert first.next_attempt_at is not None
            wait = (first.next_attempt_at - clock.now).total_seconds()
            assert BACKOFF_S[0] * 0.8 <= wait <= BACKOFF_S[0] * 1.2 and BACKOFF_S[0] <= 0.25
            clock.advance(1)
            await sender.send_once()
            [second] = store.deliveries(hook.id)
            assert second.next_attempt_at is not None
            assert (second.next_attempt_at - clock.now).total_seconds() >= BACKOFF_S[1] * 0.8

    asyncio.run(scenario())


def test_a_flapping_receivers_deliveries_all_arrive_in_order_each_retried_once(
    store: Store,
) -> None:
    requests = 0

    async def flapping(request: web.Request) -> web.Response:
        nonlocal requests
        requests += 1
        return web.Response(status=503 if requests % 2 == 0 else 204)

    async def scenario() -> tuple[list[int], list[int]]:
        async with receiving() as rx:
            hook = store.add_webhook(rx.route("/flap", flapping), ["ping"], "s")
            for n in range(10):
                store.enqueue_event("ping", {"n": n})
            sender, stop = Sender(store, allow=ALLOW), asyncio.Event()
            task = asyncio.create_task(sender.run(stop))
            async with asyncio.timeout(WAIT_S):
                while await asyncio.to_thread(store.pending_deliveries, hook.id):
                    await asyncio.sleep(0.05)
            delivered = [b for _, b in rx.got("/flap")]
            stop.set()
            sender.wake()
            await task
            attempts = [d.attempts for d in reversed(store.deliveries(hook.id))]
            return [json.loads(b)["data"]["n"] for b in delivered], attempts

    sent, attempts = asyncio.run(scenario())
    # Every other request failed: each event after the first failed once and went again at
    # once, before the next one.
    assert sent == [0, *(n for n in range(1, 10) for _ in (1, 2))]
    assert attempts == [1] + [2] * 9


def test_a_healthy_receiver_is_not_held_up_by_a_failing_ones_backlog(store: Store) -> None:
    async def scenario() -> int:
        async with receiving() as rx:
            # A backlog larger than any batch, to a receiver that fails at once.
            store.add_webhook(rx.route("/down", fail), ["deployment.failed"], "a")
            for n in range(150):
                store.enqueue_event("deployment.failed", {"n": n})
            store.add_webhook(rx.route("/ok", ok), ["ping"], "b")
            # idle_s: only a wake or a lane of its own can explain a delivery in time
            sender, stop = Sender(store, idle_s=3600, allow=ALLOW), asyncio.Event()
            task = asyncio.create_task(sender.run(stop))
            await asyncio.sleep(0.1)  # the failing lane has started (and failed)
            await asyncio.to_thread(store.enqueue_event, "ping", {"n": 0})
            sender.wake()
            async with asyncio.timeout(WAIT_S):
                while not rx.got("/ok"):
                    await asyncio.sleep(0.02)
            stop.set()
            sender.wake()
            await task
            return len(rx.got("/down"))

    # the failing receiver had its first try and the quick retry, nothing more, meanwhile
    assert asyncio.run(scenario()) <= 2


# ------------------------------------------------------------------ where webhooks may go


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"), ("0.0.0.0", "loopback"), ("::", "loopback"),
        ("169.254.169.254", "link_local"), ("fe80::1", "link_local"),
        ("fe80::1%lo", "link_local"), ("fd00:ec2::254", "link_local"),
        ("100.100.100.200", "link_local"),
        ("192.0.2.10", None), ("203.0.113.5", None), ("2001:db8::1", None), ("not-an-ip", None),
    ],
)
def test_address_kinds(address: str, kind: str | None) -> None:
    assert address_kind(address) == kind


def test_an_address_of_the_engines_own_host_is_engine_host() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this picks the outgoing address
        except OSError:
            pytest.skip("this host has no route, so no address but loopback")
        own = probe.getsockname()[0]
    if own.startswith("127."):
        pytest.skip("this host has no address but loopback")
    assert address_kind(own) == "engine_host"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:8080/api/v1/sync", "loopback"),
        ("http://localhost:9/hook", "loopback"),
        ("http://[::1]/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://2130706433/", "loopback"),  # 127.0.0.1 written as one number
        ("http://[fe80::1%25eth0]/", "link-local"),  # a zone id, as a URL writes it
        ("http://[fe80::1%eth0]/", "link-local"),
        ("http://[::ffff:169.254.169.254]/", "link-local"),
    ],
)
def test_registration_refuses_this_machine_naming_the_setting(url: str, says: str) -> None:
    problem = check_destination(url, frozenset())
    assert problem is not None and says in problem and "engine.yaml" in problem
    assert check_destination(url, frozenset(KINDS)) is None


CONTAINERS = ipaddress.ip_network("198.51.100.0/24")  # stands for a Docker network's subnet


def test_an_address_on_a_container_network_of_the_host_is_engine_host() -> None:
    assert address_kind("198.51.100.7", [CONTAINERS]) == "engine_host"
    assert address_kind("198.51.100.7") is None
    problem = check_destination("http://198.51.100.7:8080/admin", frozenset(), lambda: [CONTAINERS])
    assert problem is not None and "container network" in problem
    assert "webhooks: {allow: [engine_host]}" in problem
    assert check_destination("http://198.51.100.7/", {"engine_host"}, lambda: [CONTAINERS]) is None


def test_delivery_refuses_an_address_on_a_container_network_of_the_host(store: Store) -> None:
    async def scenario() -> None:
        hook = store.add_webhook("http://198.51.100.7:8080/admin", ["ping"], "s")
        store.enqueue_event("ping", {})
        sender = Sender(store, clock=FakeClock(), host_networks=lambda: [CONTAINERS])
        assert await sender.send_once() == 1
        [delivery] = store.deliveries(hook.id)
        assert delivery.status is DeliveryStatus.FAILED  # refused, never posted nor retried
        assert delivery.last_error and "container network" in delivery.last_error

    asyncio.run(scenario())


def test_delivery_refuses_a_name_that_resolves_to_loopback(store: Store) -> None:
    async def scenario() -> None:
        async with receiving() as rx:
            rx.route("/hook", ok)
            # Registered some other way (an old database, or DNS that answered otherwise then).
            port = rx.base.rsplit(":", 1)[1]
            by_name = store.add_webhook(f"http://localhost:{port}/hook", ["ping"], "s")
            by_ip = store.add_webhook(f"http://127.0.0.1:{port}/hook", ["ping"], "s")
            metadata = store.add_webhook("http://169.254.169.254/latest/", ["ping"], "s")
            store.enqueue_event("ping", {})
            assert await Sender(store, clock=FakeClock()).send_once() == 3
            assert rx.got("/hook") == []
            for hook, says in ((by_name, "localhost resolves to"), (by_ip, "127.0.0.1"),
                               (metadata, "169.254.169.254")):
                [delivery] = store.deliveries(hook.id)
                assert delivery.status is DeliveryStatus.FAILED  # refused, not retried
                assert delivery.last_error and says in delivery.last_error
                assert "engine.yaml" in delivery.last_error
            # Allowed by the operator, the same webhooks are delivered.
            store.enqueue_event("ping", {})
            await Sender(store, clock=FakeClock(), allow=ALLOW).send_once()
            assert len(rx.got("/hook")) == 2

    asyncio.run(scenario())


def test_the_resolver_keeps_only_allowed_addresses() -> None:
    async def scenario() -> None:
        guarded = GuardedResolver(frozenset())
        with pytest.raises(RefusedAddress, match="loopback"):
            await guarded.resolve("localhost", 80)
        allowed = GuardedResolver(frozenset({"loopback"}))
        found = await allowed.resolve("localhost", 80)
        assert found and all(address_kind(r["host"]) == "loopback" for r in found)
        await guarded.close()
        await allowed.close()

    asyncio.run(scenario())


# ------------------------------------------------------------------ `deployally webhook verify`


def _verify(body: bytes, *args: str) -> tuple[int, str]:
    from click.testing import CliRunner

    from deployally.cli import main

    done = CliRunner().invoke(main, ["webhook", "verify", "--secret", "s3cret", *args], input=body)
    return done.exit_code, done.output.strip()


@pytest.mark.parametrize(
    ("shift", "tolerance", "says"),
    [(0, None, "valid"), (-200, None, "valid"), (-400, None, "old"), (400, None, "future"),
     (-400, "600", "valid"), (-20, "10", "old")],
)
def test_verify_checks_the_standard_signature_and_its_age(
    shift: int, tolerance: str | None, says: str
) -> None:
    body = b'{"event":"ping"}'
    at = int(time.time()) + shift
    headers = standard_headers("s3cret", "dlv_0123456789ab", at, body)
    args = ["--signature", headers["webhook-signature"], "--id", headers["webhook-id"],
            "--timestamp", headers["webhook-timestamp"]]
    if tolerance is not None:
        args += ["--tolerance", tolerance]
    code, said = _verify(body, *args)
    if says == "valid":
        assert (code, said) == (0, "valid")
    else:
        assert code == 1 and said.startswith("invalid:") and says in said


def test_verify_needs_the_id_and_time_of_a_v1_signature_and_still_takes_the_older_one() -> None:
    body = b"{}"
    code, said = _verify(body, "--signature", "v1,AAAA")
    assert code == 2 and "--timestamp" in said
    assert _verify(body, "--signature", sign("s3cret", body)) == (0, "valid")
    code, said = _verify(body + b"\n", "--signature", sign("s3cret", body))
    assert code == 1 and said.startswith("invalid")


def test_a_whsec_secret_keys_each_header_as_its_receivers_read_it(store: Store) -> None:
    """Both signatures computed here with hmac alone, as a receiver of each header does."""
    from click.testing import CliRunner

    from deployally.cli import main

    key = bytes(range(32))
    secret = "whsec_" + base64.b64encode(key).decode()

    async def scenario() -> list[tuple[dict[str, str], bytes]]:
        async with receiving() as rx:
            store.add_webhook(rx.route("/hook", ok), ["ping"], secret)
            store.enqueue_event("ping", {"hello": "world"})
            assert await Sender(store, clock=FakeClock(), allow=ALLOW).send_once() == 1
            return rx.got("/hook")

    [(headers, body)] = asyncio.run(scenario())
    # X-DeployAlly-Signature: the whole string keys it, as it did before whsec_ meant anything.
    whole = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    decoded = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
    assert headers["X-DeployAlly-Signature"] == whole != decoded
    # webhook-signature: the bytes the base64 encodes, as Standard Webhooks reads a whsec_ key.
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(digest).decode()

    def verify_cli(*args: str) -> tuple[int, str]:
        done = CliRunner().invoke(main, ["webhook", "verify", "--secret", secret, *args], input=body)
        return done.exit_code, done.output.strip()

    assert verify_cli("--signature", whole) == (0, "valid")
    code, said = verify_cli("--signature", decoded)
    assert code == 1 and said.startswith("invalid:") and "whole secret string" in said
    assert verify_cli("--signature", headers["webhook-signature"], "--id", headers["webhook-id"],
                      "--timestamp", headers["webhook-timestamp"]) == (0, "valid")
