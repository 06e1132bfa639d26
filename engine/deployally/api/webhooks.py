"""/webhooks: who is told of which events, how each delivery went, and a test ping.

The secret is never shown back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from deployally.api.auth import ADMIN, access
from deployally.api.context import context
from deployally.api.envelope import BodyCheck, listing, not_found, parse_page, read_json, success
from deployally.api.views import iso
from deployally.notify.events import EVENTS as ALL_EVENTS
from deployally.notify.signature import secret_problem
from deployally.notify.urls import check_destination
from deployally.store import DeliveryAttempt, DeliveryRecord, Store, WebhookRecord

routes = web.RouteTableDef()

# "ping" is the notifier's own test event, not one a subscriber chooses.
EVENTS = tuple(sorted(ALL_EVENTS - {"ping"}))
PING = "ping"

# Set by `serve` to the Sender's wake(): a test ping goes out now, not after the sender's idle wait.
WakeSender = Callable[[], None]
WAKE_SENDER: web.AppKey[WakeSender] = web.AppKey("deployally.wake_sender")


def webhook_view(w: WebhookRecord) -> dict[str, Any]:
    """A webhook as the API shows it: never its secret."""
    return {"id": w.id, "url": w.url, "events": list(w.events), "created_at": iso(w.created_at)}


def delivery_view(d: DeliveryRecord, attempts: list[DeliveryAttempt]) -> dict[str, Any]:
    """One delivery with every attempt: status code, duration and error of each."""
    return {
        "id": d.id,
        "event_id": d.event_id,
        "event": d.event,
        "status": d.status.value,
        "attempts": [
            {
                "number": a.number,
                "at": iso(a.at),
                "status_code": a.status_code,
                "duration_ms": a.duration_ms,
                "error": a.error,
            }
            for a in attempts
        ],
        "created_at": iso(d.created_at),
        "next_attempt_at": iso(d.next_attempt_at),
    }


@routes.post("/api/v1/webhooks")
@access(ADMIN)
async def create_webhook(request: web.Request) -> web.Response:
    """Subscribe a URL to events; payloads are signed with `secret`."""
    check = BodyCheck(await read_json(request), ("url", "events", "secret"))
    ctx = context(request)
    url = check.string("url")
    if url is not None:
        allowed = ctx.ws.engine_config.webhook_allow
        # Resolving the host name may wait on DNS, and the networks on Docker: off the loop.
        if problem := await ctx.run(check_destination, url, allowed, ctx.ws.host_networks):
            check.problem("url", problem.removeprefix("url: "))
    events = check.body.get("events")
    if not isinstance(events, list) or not events or not all(isinstance(e, str) for e in events):
        check.problem("events", f"must be a non-empty list of event names: {', '.join(EVENTS)}")
        events = []
    for i, event in enumerate(events):
        if event not in EVENTS:
            check.problem(
                f"events[{i}]", f"{event!r} is not an event; use one of {', '.join(EVENTS)}"
            )
    secret = check.string("secret")
    if secret is not None and (problem := secret_problem(secret)):
        check.problem("secret", problem)
    check.raise_if_any()
    assert url is not None and secret is not None
    record = await ctx.run(ctx.ws.store.add_webhook, url.strip(), events, secret)
    return success(webhook_view(record), status=201)


@routes.get("/api/v1/webhooks")
@access(ADMIN)
async def list_webhooks(request: web.Request) -> web.Response:
    """Every webhook, oldest first."""
    page = parse_page(request.query)
    ctx = context(request)
    found = await ctx.run(ctx.ws.store.webhooks)
    return listing([webhook_view(w) for w in page.slice(found)], page, len(found))


@routes.delete("/api/v1/webhooks/{id}")
@access(ADMIN)
async def delete_webhook(request: web.Request) -> web.Response:
    """Remove a webhook and its pending deliveries."""
    ctx = context(request)
    key = request.match_info["id"]
    record = await ctx.run(ctx.ws.store.webhook, key)
    if record is None:
        raise not_found(f"no webhook {key!r}; GET /api/v1/webhooks lists them")
    await ctx.run(ctx.ws.store.delete_webhook, key)
    return success({"id": key, "deleted": True})


@routes.get("/api/v1/webhooks/{id}/deliveries")
@access(ADMIN)
async def list_deliveries(request: web.Request) -> web.Response:
    """A webhook's deliveries, newest first, each with its attempts."""
    page = parse_page(request.query)
    ctx = context(request)
    key = request.match_info["id"]
    found = await ctx.run(_deliveries_page, ctx.ws.store, key, page.per_page, page.offset)
    if found is None:
        raise not_found(f"no webhook {key!r}; GET /api/v1/webhooks lists them")
    views, total = found
    return listing(views, page, total)


def _deliveries_page(
    store: Store, webhook_id: str, limit: int, offset: int
) -> tuple[list[dict[str, Any]], int] | None:
    """One page of delivery views and the total, or None when the webhook does not exist."""
    if store.webhook(webhook_id) is None:
        return None
    page = store.deliveries(webhook_id, limit=limit, offset=offset)
    views = [delivery_view(d, store.delivery_attempts(d.id)) for d in page]
    return views, store.count_deliveries(webhook_id)


@routes.post("/api/v1/webhooks/{id}/test")
@access(ADMIN)
async def test_webhook(request: web.Request) -> web.Response:
    """Queue a signed `ping` for this webhook only and wake the sender; 202 with the delivery id."""
    ctx = context(request)
    key = request.match_info["id"]
    record = await ctx.run(ctx.ws.store.webhook, key)
    if record is None:
        raise not_found(f"no webhook {key!r}; GET /api/v1/webhooks lists them")
    data = {"webhook_id": record.id, "url": record.url, "events": list(record.events)}
    delivery_id = await ctx.run(ctx.ws.store.enqueue_for, record.id, PING, data)
    wake = request.app.get(WAKE_SENDER)
    if wake is not None:
        wake()
    return success(
        {"delivery_id": delivery_id, "webhook_id": record.id, "event": PING, "status": "pending"},
        status=202,
    )
