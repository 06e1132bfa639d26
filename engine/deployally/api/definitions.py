"""GET/POST /definitions, GET/PUT/DELETE /definitions/{id}: reads from the store, writes as git commits."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from deployally.api.auth import READ, WRITE, access, author
from deployally.api.context import Context, ServerIds, context
from deployally.api.envelope import (
    BodyCheck,
    choice,
    listing,
    not_found,
    parse_page,
    query_value,
    read_json,
    success,
)
from deployally.api.views import definition_view, iso
from deployally.errors import DriverError
from deployally.model import desired
from deployally.model.settings import Settings
from deployally.source.tree import CommitTree
from deployally.store import ENVIRONMENTS, Store
from deployally.sync import edits
from deployally.types import (
    DEFAULT_PROFILE,
    DefinitionRecord,
    DefinitionStatus,
    Deployment,
    LiveInstance,
    Revision,
)

routes = web.RouteTableDef()
log = logging.getLogger(__name__)

STATUSES = tuple(s.value for s in DefinitionStatus)


def revision_view(r: Revision) -> dict[str, Any]:
    """One revision of a definition: its number, commit and file (empty when it removed the file)."""
    return {
        "number": r.number,
        "commit": r.commit,
        "path": r.path,
        "removed": not r.path,
        "created_at": iso(r.created_at),
    }


# Live instances by (server name or srv_ id, definition name): a definition's instance is
# the one on its own server.
Live = dict[tuple[str, str], LiveInstance]


def shown(
    r: DefinitionRecord, servers: ServerIds, live: Live, waiting: Mapping[str, Deployment]
) -> dict[str, Any]:
    """A definition as the API shows it: server by srv_ id, passwords masked, its instance if
    live, and what it waits for if its deployment waits (`waiting` by definition id)."""
    view = definition_view(
        r,
        live.get((r.server_id, r.name)),
        waiting.get(r.id),
        environment=servers.environment(r.server_id),
    )
    view["server_id"] = servers.shown(r.server_id)
    return view


async def live_or_empty(ctx: Context) -> Live:
    """Every server's live snapshot; a server that does not answer has none (a list still answers)."""
    out: Live = {}
    for server, driver in await ctx.run(ctx.ws.drivers.applied_here):
        try:
            snapshot = await ctx.live.snapshot(driver, ctx.run_docker)
        except DriverError:
            continue
        for name, inst in snapshot.items():
            out[(server.name, name)] = out[(server.id, name)] = inst
    return out


async def written(ctx: Context, edit: edits.Edit, at_key: str) -> dict[str, Any]:
    """What a write answers: id, name, status pending, the revision its commit makes, the commit."""
    return {
        "id": edit.definition_id,
        "name": edit.name,
        "status": DefinitionStatus.PENDING.value,
        "current_revision": await ctx.run(ctx.revision_of, edit.name, edit.commit),
        "commit": edit.commit,
        at_key: iso(datetime.now(UTC)),
    }


def after_write(ctx: Context) -> None:
    """Ask the engine to deploy the new commit, without making the response wait for it."""
    if ctx.trigger_sync is None:
        return
    future = asyncio.get_running_loop().run_in_executor(None, ctx.sync_soon)

    def report(done: asyncio.Future[None]) -> None:
        if not done.cancelled() and done.exception() is not None:
            log.error("sync after an API write failed: %s", done.exception())

    future.add_done_callback(report)


def _settings(ctx: Context) -> Settings:
    head = ctx.ws.repo.head()
    return desired.load_settings(CommitTree(ctx.ws.repo, head))[0] if head else Settings()


def _page_of_definitions(
    store: Store,
    servers: ServerIds,
    server: str | None,
    environment: str | None,
    status: str | None,
    offset: int,
    limit: int,
) -> tuple[list[DefinitionRecord], int]:
    if server is None and environment is None:
        rows = store.definitions(status=status, limit=limit, offset=offset)
        return rows, store.count_definitions(status=status)
    # A definition names its server by name or by id: list every key, in name order.
    keys = set(servers.keys(server)) if server is not None else None
    if environment is not None:
        in_environment = servers.in_environment(environment)
        keys = set(in_environment) if keys is None else keys & in_environment
    assert keys is not None
    rows = sorted(
        (r for key in keys for r in store.definitions(server_id=key, status=status)),
        key=lambda r: r.name,
    )
    return rows[offset : offset + limit], len(rows)


@routes.get("/api/v1/definitions")
@access(READ)
async def list_definitions(request: web.Request) -> web.Response:
    """Definitions by name, filtered by server_id, environment (of their server) and status."""
    page = parse_page(request.query)
    status = choice(request.query, "status", STATUSES)
    environment = choice(request.query, "environment", ENVIRONMENTS)
    server = query_value(request.query, "server_id")
    ctx = context(request)
    servers = ServerIds(await ctx.run(ctx.ws.store.servers))
    rows, total = await ctx.run(
        _page_of_definitions,
        ctx.ws.store,
        servers,
        server,
        environment,
        status,
        page.offset,
        page.per_page,
    )
    live = await live_or_empty(ctx)
    waiting = await ctx.run(ctx.ws.store.waiting_by_definition)
    return listing([shown(r, servers, live, waiting) for r in rows], page, total)


@routes.get("/api/v1/definitions/{id}")
@access(READ)
async def get_definition(request: web.Request) -> web.Response:
    """One definition with its revisions, oldest first."""
    ctx = context(request)
    key = request.match_info["id"]
    record = await ctx.run(ctx.ws.store.definition, key)
    if record is None:
        raise not_found(f"no definition {key!r}; GET /api/v1/definitions lists them")
    servers = ServerIds(await ctx.run(ctx.ws.store.servers))
    waiting = await ctx.run(ctx.ws.store.waiting_by_definition)
    view = shown(record, servers, await live_or_empty(ctx), waiting)
    view["revisions"] = [revision_view(r) for r in await ctx.run(ctx.ws.store.revisions, record.id)]
    return success(view)


@routes.post("/api/v1/definitions")
@access(WRITE)
async def create_definition(request: web.Request) -> web.Response:
    """Commit a new definition; passwords in params become secrets, git holds references only."""
    check = BodyCheck(
        await read_json(request), ("template_id", "server_id", "name", "params", "profile")
    )
    template_id = check.string("template_id")
    server_key = check.string("server_id")
    name = check.string("name")
    params = check.mapping("params")
    profile = check.string("profile", required=False) or DEFAULT_PROFILE
    ctx = context(request)
    catalog = await ctx.run(ctx.catalog)
    servers = ServerIds(await ctx.run(ctx.ws.store.servers))
    if template_id is not None and catalog.resolve(template_id) is None:
        check.problem(
            "template_id", f"no template {template_id!r}; GET /api/v1/templates lists them"
        )
    server = servers.get(server_key) if server_key is not None else None
    if server_key is not None and server is None:
        check.problem("server_id", f"no server {server_key!r}; GET /api/v1/servers lists them")
    check.raise_if_any()
    assert template_id and server and name and params is not None
    edit = await ctx.run(
        edits.create_definition,
        ctx.ws.repo,
        ctx.ws.store,
        catalog,
        name=name,
        template=template_id,
        server=server.name,
        params=params,
        profile=profile,
        author=author(request),
        settings=await ctx.run(_settings, ctx),
    )
    after_write(ctx)
    return success(await written(ctx, edit, "created_at"), status=201)


@routes.put("/api/v1/definitions/{id}")
@access(WRITE)
async def update_definition(request: web.Request) -> web.Response:
    """Commit a partial update of profile and params: a new revision."""
    check = BodyCheck(await read_json(request), ("profile", "params"))
    profile = check.string("profile", required=False)
    params = check.mapping("params", required=False)
    if profile is None and params is None and not check.details:
        check.problem("body", "give `profile`, `params` or both")
    check.raise_if_any()
    ctx = context(request)
    catalog = await ctx.run(ctx.catalog)
    edit = await ctx.run(
        edits.update_definition,
        ctx.ws.repo,
        ctx.ws.store,
        catalog,
        request.match_info["id"],
        profile=profile,
        params=params,
        author=author(request),
        settings=await ctx.run(_settings, ctx),
    )
    after_write(ctx)
    return success(await written(ctx, edit, "updated_at"))


@routes.delete("/api/v1/definitions/{id}")
@access(WRITE)
async def delete_definition(request: web.Request) -> web.Response:
    """Commit the removal of the definition's file; the engine then removes its container."""
    ctx = context(request)
    edit = await ctx.run(
        edits.delete_definition,
        ctx.ws.repo,
        ctx.ws.store,
        request.match_info["id"],
        author=author(request),
    )
    after_write(ctx)
    return success(await written(ctx, edit, "deleted_at"))
