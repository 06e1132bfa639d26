"""GET/POST /servers, DELETE /servers/{id}, POST /servers/{id}/rotate-key, and the agent endpoint.

An agent key is in the one response that makes it (registering, rotating), stored as a hash.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from deployally.api.auth import ADMIN, AGENT, READ, SERVER, access
from deployally.api.context import Context, context
from deployally.api.envelope import BodyCheck, listing, parse_page, read_json, success
from deployally.api.views import servers_view, spec_view
from deployally.errors import DriverError, ValidationError
from deployally.store import (
    ENVIRONMENTS,
    ServerRecord,
    check_server_kind,
    server_description_problem,
    server_name_problem,
)
from deployally.sync.edits import named_at_head

routes = web.RouteTableDef()


async def shown_servers(ctx: Context, servers: list[ServerRecord]) -> list[dict[str, Any]]:
    """The servers as the API shows them, running instances from the shared live snapshot."""
    running: dict[str, int | None] = {}
    for server, driver in await ctx.run(ctx.ws.drivers.applied_here):
        try:
            snapshot = await ctx.live.snapshot(driver, ctx.run_docker)
        except DriverError:
            running[server.id] = None
            continue
        # A swarm service's instances are its tasks.
        running[server.id] = sum(t.running for i in snapshot.values() for t in i.tasks or (i,))
    per_key = await ctx.run(ctx.ws.store.definitions_per_server)
    return servers_view(servers, per_key, running)


@routes.get("/api/v1/servers")
@access(READ)
async def list_servers(request: web.Request) -> web.Response:
    """Registered servers by name; `local` (this host) is always one."""
    page = parse_page(request.query)
    ctx = context(request)
    found = await ctx.run(ctx.ws.store.servers)
    return listing(await shown_servers(ctx, page.slice(found)), page, len(found))


@routes.post("/api/v1/servers")
@access(ADMIN)
async def register_server(request: web.Request) -> web.Response:
    """Register an agent or swarm server; answers an agent's api_key this once."""
    check = BodyCheck(
        await read_json(request), ("name", "environment", "description", "kind", "docker_host")
    )
    name = check.string("name")
    environment = check.string("environment", allowed=ENVIRONMENTS)
    description = check.body.get("description", "")
    if not isinstance(description, str):
        check.problem("description", "must be a string")
    elif problem := server_description_problem(description):
        check.problem("description", problem)
    if name is not None and (problem := server_name_problem(name)):
        check.problem("name", problem)
    if "kind" in check.body and check.body["kind"] is None:
        check.problem("kind", "must be 'agent' or 'swarm' (leave it out for agent), not null")
    kind = check.string("kind", required=False) or "agent"
    raw_host = check.body.get("docker_host")
    docker_host = raw_host if isinstance(raw_host, str) else None
    if raw_host is not None and not isinstance(raw_host, str):
        check.problem("docker_host", "must be a string such as tcp://HOST:2376")
    elif "kind" not in {d["field"] for d in check.details}:
        try:
            check_server_kind(kind, docker_host)
        except ValidationError as exc:
            check.problem(exc.field, exc.message)
    check.raise_if_any()
    assert name is not None and environment is not None and isinstance(description, str)
    ctx = context(request)
    record, key = await ctx.run(
        ctx.ws.store.add_server, name, environment, description, kind, docker_host
    )
    (data,) = await shown_servers(ctx, [record])
    data["api_key"] = key
    return success(data, status=201)


@routes.delete("/api/v1/servers/{id}")
@access(ADMIN)
async def remove_server(request: web.Request) -> web.Response:
    """Remove a registered server and its key; 409 for `local` or one that definitions name
    (synced, or at the branch head)."""
    ctx = context(request)
    store, key = ctx.ws.store, request.match_info["id"]

    def remove() -> ServerRecord:
        found = store.server(key)
        # Definitions committed but not synced yet name it too: they would run nowhere.
        at_head = named_at_head(ctx.ws.repo, found) if found is not None else []
        return store.remove_server(key, at_head)

    record = await ctx.run(remove)
    return success({"id": record.id, "deleted": True})


@routes.post("/api/v1/servers/{id}/rotate-key")
@access(ADMIN)
async def rotate_server_key(request: web.Request) -> web.Response:
    """A new agent key, answered this once; the old one is refused from now on."""
    ctx = context(request)
    record, key = await ctx.run(ctx.ws.store.rotate_server_key, request.match_info["id"])
    (data,) = await shown_servers(ctx, [record])
    data["api_key"] = key
    return success(data)


@routes.get("/api/v1/agent/desired")
@access(AGENT)
async def agent_desired(request: web.Request) -> web.Response:
    """The desired specs of the calling server (by its key), secrets as references."""
    server = request[SERVER]
    ctx = context(request)
    store = ctx.ws.store

    def gather() -> list[dict[str, Any]]:
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
