"""GET /servers and POST /servers (the agent key is in that one response only, stored as a hash)."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from deployally.api.auth import ADMIN, AGENT, READ, SERVER, access
from deployally.api.context import context
from deployally.api.envelope import BodyCheck, listing, parse_page, read_json, success
from deployally.api.views import iso, spec_view
from deployally.store import LOCAL_SERVER_ID, ServerRecord

routes = web.RouteTableDef()

ENVIRONMENTS = ("development", "staging", "production")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def server_view(s: ServerRecord) -> dict[str, Any]:
    """A server as the API shows it; `pending` until its agent is first heard from."""
    waiting = s.id != LOCAL_SERVER_ID and s.last_seen_at is None
    return {
        "id": s.id,
        "name": s.name,
        "environment": s.environment,
        "description": s.description,
        "status": "pending" if waiting else s.status,
        "kind": s.kind,
        "applied_commit": s.applied_commit,
        "created_at": iso(s.created_at),
        "last_seen_at": iso(s.last_seen_at),
    }


@routes.get("/api/v1/servers")
@access(READ)
async def list_servers(request: web.Request) -> web.Response:
    """Registered servers by name; `local` (this host) is always one."""
    page = parse_page(request.query)
    ctx = context(request)
    found = await ctx.run(ctx.ws.store.servers)
    return listing([server_view(s) for s in page.slice(found)], page, len(found))


@routes.post("/api/v1/servers")
@access(ADMIN)
async def register_server(request: web.Request) -> web.Response:
    """Register a server; answers its api_key this once."""
    check = BodyCheck(await read_json(request), ("name", "environment", "description"))
    name = check.string("name")
    environment = check.string("environment", allowed=ENVIRONMENTS)
    description = check.body.get("description", "")
    if not isinstance(description, str):
        check.problem("description", "must be a string")
    if name is not None and not _NAME.fullmatch(name):
        check.problem("name", "use 1-63 of a-z 0-9 _ . - starting with a letter or digit")
    check.raise_if_any()
    assert name is not None and environment is not None and isinstance(description, str)
    ctx = context(request)
    record, key = await ctx.run(ctx.ws.store.add_server, name, environment, description)
    data = server_view(record)
    data["api_key"] = key
    return success(data, status=201)


@routes.get("/api/v1/agent/desired")
@access(AGENT)
async def agent_desired(request: web.Request) -> web.Response:
    """The desired specs of the calling server (by its key), secrets as references."""
    server = request[SERVER]
    ctx = context(request)
    store = ctx.ws.store

    def gather() -> list[dict[str, Any]]:
        store.touch_server(server.id)  # the agent was heard from: no longer pending
        records = [r for key in (server.name, server.id) for r in store.definitions(server_id=key)]
        return [
            {
                "definition_id": r.id,
                "name": r.name,
                "revision": r.current_revision,
                "spec": spec_view(r.desired),
            }
            for r in sorted(records, key=lambda r: r.name)
            if r.desired is not None
        ]

    return success({"server_id": server.id, "definitions": await ctx.run(gather)})
