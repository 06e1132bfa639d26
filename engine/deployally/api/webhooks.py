"""POST, GET and DELETE /webhooks: who is told of which events. The secret is never shown back."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import notify
from ..store import WebhookRecord
from ..views import iso
from .auth import ADMIN, READ, access
from .context import context
from .envelope import BodyCheck, listing, not_found, parse_page, read_json, success

routes = web.RouteTableDef()

# "ping" is the notifier's own test event, not one a subscriber chooses.
EVENTS = tuple(sorted(notify.EVENTS - {"ping"}))


def webhook_view(w: WebhookRecord) -> dict[str, Any]:
    """A webhook as the API shows it: never its secret."""
    return {"id": w.id, "url": w.url, "events": list(w.events), "created_at": iso(w.created_at)}


@routes.post("/api/v1/webhooks")
@access(ADMIN)
async def create_webhook(request: web.Request) -> web.Response:
    """Subscribe a URL to events; payloads are signed with `secret`."""
    check = BodyCheck(await read_json(request), ("url", "events", "secret"))
    url = check.string("url")
    if url is not None and (problem := notify.check_url(url)):
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
    check.raise_if_any()
    assert url is not None and secret is not None
    ctx = context(request)
    record = await ctx.run(ctx.ws.store.add_webhook, url.strip(), events, secret)
    return success(webhook_view(record), status=201)


@routes.get("/api/v1/webhooks")
@access(READ)
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
