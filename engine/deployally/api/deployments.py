"""GET /deployments (filters definition_id, server_id, status), POST /deployments, GET /deployments/{id} with logs.

POST with a `revision` is a rollback: that revision's file is committed back.
Without one it asks for a redeploy of the current revision. Either way the
engine does the deploying; the request is recorded as a pending deployment.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from deployally.api.auth import READ, WRITE, access, author
from deployally.api.context import ServerIds, context
from deployally.api.definitions import after_write
from deployally.api.envelope import (
    BodyCheck,
    choice,
    listing,
    not_found,
    parse_page,
    read_json,
    success,
)
from deployally.api.views import deployment_view
from deployally.identity import random_id
from deployally.store import Store
from deployally.sync import edits
from deployally.types import (
    ActionKind,
    DefinitionRecord,
    DefinitionStatus,
    Deployment,
    DeploymentStatus,
    LogLine,
    Reason,
    ReasonKind,
)

routes = web.RouteTableDef()

STATUSES = tuple(s.value for s in DeploymentStatus)


def shown(d: Deployment, servers: ServerIds, *, with_logs: bool = False) -> dict[str, Any]:
    """A deployment as the API shows it, its server by srv_ id."""
    view = deployment_view(d, with_logs=with_logs, environment=servers.environment(d.server_id))
    view["server_id"] = servers.shown(d.server_id)
    return view


@routes.get("/api/v1/deployments")
@access(READ)
async def list_deployments(request: web.Request) -> web.Response:
    """Deployments, newest first."""
    page = parse_page(request.query)
    status = choice(request.query, "status", STATUSES)
    ctx = context(request)
    store = ctx.ws.store
    servers = ServerIds(await ctx.run(store.servers))
    definition = request.query.get("definition_id")
    server = request.query.get("server_id")

    def query() -> tuple[list[Deployment], int]:
        def_id = None
        if definition is not None:
            record = store.definition(definition)
            def_id = record.id if record is not None else definition
        # Deployments record the server as the driver names it: by name.
        server_name = None
        if server is not None:
            found = servers.get(server)
            server_name = found.name if found is not None else server
        filters: dict[str, Any] = {
            "definition_id": def_id,
            "server_id": server_name,
            "status": status,
        }
        rows = store.deployments(**filters, limit=page.per_page, offset=page.offset)
        return rows, store.count_deployments(**filters)

    rows, total = await ctx.run(query)
    return listing([shown(d, servers) for d in rows], page, total)


@routes.get("/api/v1/deployments/{id}")
@access(READ)
async def get_deployment(request: web.Request) -> web.Response:
    """One deployment with its reason and logs."""
    ctx = context(request)
    key = request.match_info["id"]
    found = await ctx.run(ctx.ws.store.deployment, key)
    if found is None:
        raise not_found(f"no deployment {key!r}; GET /api/v1/deployments lists them")
    servers = ServerIds(await ctx.run(ctx.ws.store.servers))
    return success(shown(found, servers, with_logs=True))


def _request_deployment(
    store: Store,
    record: DefinitionRecord,
    server: str,
    reason: Reason,
    revision: int,
    commit: str | None,
    who: str,
) -> Deployment:
    now = datetime.now(UTC)
    deployment = Deployment(
        id=random_id("deploy"),
        definition_id=record.id,
        definition_name=record.name,
        server_id=server,
        revision=revision,
        commit=commit,
        action=ActionKind.UPDATE,
        status=DeploymentStatus.PENDING,
        reason=reason,
        created_at=now,
        logs=(LogLine(now, f"requested through the API by {who}: {reason.summary}"),),
    )
    store.create_deployment(deployment)
    return deployment


@routes.post("/api/v1/deployments")
@access(WRITE)
async def create_deployment(request: web.Request) -> web.Response:
    """Redeploy a definition's current revision, or roll it back to `revision` (a commit)."""
    check = BodyCheck(await read_json(request), ("definition_id", "server_id", "revision"))
    key = check.string("definition_id")
    server_key = check.string("server_id", required=False)
    revision = check.integer("revision")
    check.raise_if_any()
    assert key is not None
    ctx = context(request)
    store = ctx.ws.store
    record = await ctx.run(store.definition, key)
    if record is None:
        raise not_found(f"no definition {key!r}; GET /api/v1/definitions lists them")
    servers = ServerIds(await ctx.run(store.servers))
    if server_key is not None and server_key not in servers.keys(record.server_id):
        check.problem(
            "server_id",
            f"{record.name} runs on {servers.shown(record.server_id)}; "
            "move it with PUT /definitions, not a deployment",
        )
        check.raise_if_any()
    who = author(request)
    server = servers.get(record.server_id)
    server_name = server.name if server is not None else record.server_id
    commit: str | None
    if revision is not None:
        commit = await ctx.run(
            edits.rollback, ctx.ws.repo, store, record.name, revision, author=who
        )
        number = await ctx.run(ctx.revision_of, record.name, commit)
        reason = Reason(
            ReasonKind.ROLLBACK, f"roll back {record.name} to revision {revision}", commit
        )
    else:
        commit = await ctx.run(ctx.ws.repo.head)
        number = record.current_revision
        reason = Reason(ReasonKind.OPERATOR, f"redeploy revision {number} of {record.name}", commit)
        # Forget what was applied, so the engine deploys the current revision again.
        await ctx.run(
            store.set_definition_status, record.id, DefinitionStatus.PENDING, applied_hash=None
        )
    deployment = await ctx.run(
        _request_deployment, store, record, server_name, reason, number, commit, who
    )
    after_write(ctx)
    return success(shown(deployment, servers), status=202)
