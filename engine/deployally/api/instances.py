"""GET /instances and POST /instances/{id}/start|stop|restart, from the shared live snapshot.

A stop is recorded as operator intent (the definition's operator_stopped), so
self-heal does not start it again; a start clears it.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from aiohttp import web

from deployally.api.auth import READ, WRITE, access
from deployally.api.context import Context, context
from deployally.api.envelope import (
    ApiError,
    json_body,
    listing_body,
    not_found,
    parse_page,
    success,
)
from deployally.api.views import instance_view
from deployally.drivers.base import Driver
from deployally.errors import DriverError
from deployally.identity import instance_id
from deployally.types import DefinitionStatus, LiveInstance

routes = web.RouteTableDef()


Snapshot = dict[str, LiveInstance]


async def _snapshots(ctx: Context, *, fresh: bool = False) -> list[tuple[Driver, Snapshot]]:
    """The live snapshot of every server this engine applies to; 503 when none answers.
    `fresh`: from list calls made after this call (what an operator action just changed)."""
    drivers = [d for _, d in ctx.ws.drivers.applied_here()]  # the store's servers: a WAL read
    found: list[tuple[Driver, Snapshot]] = []
    errors: list[str] = []
    for driver in drivers:
        try:
            read = ctx.live.fresh if fresh else ctx.live.snapshot
            found.append((driver, await read(driver, ctx.run_docker)))
        except DriverError as exc:
            errors.append(f"server {driver.server} is unreachable: {exc}")
    if errors and len(errors) == len(drivers):
        raise ApiError(503, "unavailable", "; ".join(errors))
    if not drivers:
        raise ApiError(503, "unavailable", "this engine applies to no server")
    return found


def _servers(ctx: Context) -> dict[str, tuple[str, str]]:
    """The srv_ id and environment of each server this engine applies to, by the name its
    driver has."""
    return {s.name: (s.id, s.environment) for s, _ in ctx.ws.drivers.applied_here()}


def _shown(inst: LiveInstance, driver: Driver, servers: dict[str, tuple[str, str]],
           now: datetime | None = None) -> dict[str, object]:
    server_id, environment = servers.get(driver.server, (None, None))
    return instance_view(inst, now, environment=environment, server_id=server_id)


def _by_name(snapshots: list[tuple[Driver, Snapshot]]) -> list[tuple[Driver, LiveInstance]]:
    """Every instance of the snapshots (each task of a swarm service), by name, then server."""
    found = [
        (driver, task)
        for driver, snapshot in snapshots
        for inst in snapshot.values()
        for task in inst.tasks or (inst,)
    ]
    return sorted(found, key=lambda pair: (pair[1].name, pair[0].server, pair[1].node or ""))


async def _live(ctx: Context, *, fresh: bool = False) -> list[tuple[Driver, LiveInstance]]:
    """Every instance of every server this engine applies to, by name; 503 when none answers."""
    return _by_name(await _snapshots(ctx, fresh=fresh))


@routes.get("/api/v1/instances")
@access(READ)
async def list_instances(request: web.Request) -> web.Response:
    """This engine's instances on its servers, by name, with health and uptime."""
    page = parse_page(request.query)
    ctx = context(request)
    snapshots = await _snapshots(ctx)
    second = int(time.time())  # uptimes are whole seconds: one answer serves the whole second

    def build() -> bytes:
        everything = _by_name(snapshots)
        now = datetime.fromtimestamp(second, UTC)
        servers = _servers(ctx)
        data = [_shown(i, d, servers, now) for d, i in page.slice(everything)]
        return json.dumps(listing_body(data, page, len(everything))).encode()

    return json_body(ctx.answers.get([s for _, s in snapshots], second, page, build))


async def _find(ctx: Context, iid: str, *, fresh: bool = False) -> tuple[Driver, LiveInstance] | None:
    for driver, inst in await _live(ctx, fresh=fresh):
        if instance_id(inst.ref) == iid:
            return driver, inst
    return None


async def _act(request: web.Request, action: str) -> web.Response:
    ctx = context(request)
    iid = request.match_info["id"]
    found = await _find(ctx, iid)
    if found is None:  # it may have been made since the snapshot
        found = await _find(ctx, iid, fresh=True)
    if found is None:
        raise not_found(f"no instance {iid!r}; GET /api/v1/instances lists them")
    driver, inst = found
    store = ctx.ws.store
    record = await ctx.run(store.definition, inst.name)
    if action == "stop":
        if record is not None:  # intent first, so a sync in between does not start it again
            await ctx.run(store.set_operator_stopped, record.id, True)
            await ctx.run(store.set_definition_status, record.id, DefinitionStatus.STOPPED)
        await ctx.run_docker(driver.stop, inst.name)
    elif action == "start":
        await ctx.run_docker(driver.start, inst.name)
        if record is not None:
            await ctx.run(store.set_operator_stopped, record.id, False)
            if record.status is DefinitionStatus.STOPPED:
                await ctx.run(store.set_definition_status, record.id, DefinitionStatus.ACTIVE)
    else:
        await ctx.run_docker(driver.restart, inst.name)
    ctx.live.invalidate(inst.ref)
    now = (await ctx.live.fresh(driver, ctx.run_docker)).get(inst.name, inst)
    return success(_shown(now, driver, _servers(ctx)))


@routes.post("/api/v1/instances/{id}/start")
@access(WRITE)
async def start_instance(request: web.Request) -> web.Response:
    """Start a stopped container and let self-heal keep it running again."""
    return await _act(request, "start")


@routes.post("/api/v1/instances/{id}/stop")
@access(WRITE)
async def stop_instance(request: web.Request) -> web.Response:
    """Stop a container; self-heal leaves it stopped until it is started through the API."""
    return await _act(request, "stop")


@routes.post("/api/v1/instances/{id}/restart")
@access(WRITE)
async def restart_instance(request: web.Request) -> web.Response:
    """Restart a container."""
    return await _act(request, "restart")
