"""GET /instances and POST /instances/{id}/start|stop|restart, from the shared live snapshot.

A stop is recorded as operator intent (the definition's operator_stopped), so
self-heal does not start it again; a start clears it.
"""

from __future__ import annotations

from aiohttp import web

from deployally.api.auth import READ, WRITE, access
from deployally.api.context import Context, context
from deployally.api.envelope import ApiError, listing, not_found, parse_page, success
from deployally.api.views import instance_view
from deployally.drivers.base import Driver
from deployally.errors import DriverError
from deployally.types import DEFAULT_SERVER, DefinitionStatus, LiveInstance

routes = web.RouteTableDef()


async def _driver(ctx: Context) -> Driver:
    driver = await ctx.run(ctx.ws.driver_for, DEFAULT_SERVER)
    if driver is None:
        raise ApiError(503, "unavailable", "no driver for this host's Docker engine")
    return driver


async def _snapshot(ctx: Context, driver: Driver) -> dict[str, LiveInstance]:
    try:
        return await ctx.live.snapshot(driver, ctx.run)
    except DriverError as exc:
        raise ApiError(503, "unavailable", f"Docker is unreachable: {exc}") from None


@routes.get("/api/v1/instances")
@access(READ)
async def list_instances(request: web.Request) -> web.Response:
    """Managed containers on this host, by name, with health and uptime."""
    page = parse_page(request.query)
    ctx = context(request)
    driver = await _driver(ctx)
    everything = sorted((await _snapshot(ctx, driver)).values(), key=lambda i: i.name)
    shown = await ctx.live.with_start_times(driver, page.slice(everything), ctx.run)
    return listing([instance_view(i) for i in shown], page, len(everything))


async def _act(request: web.Request, action: str) -> web.Response:
    ctx = context(request)
    driver = await _driver(ctx)
    iid = request.match_info["id"]
    found = ctx.live.by_instance_id(await _snapshot(ctx, driver), iid)
    if found is None:  # it may have been made since the snapshot
        ctx.live.invalidate()
        found = ctx.live.by_instance_id(await _snapshot(ctx, driver), iid)
    if found is None:
        raise not_found(f"no instance {iid!r}; GET /api/v1/instances lists them")
    store = ctx.ws.store
    record = await ctx.run(store.definition, found.name)
    if action == "stop":
        if record is not None:  # intent first, so a sync in between does not start it again
            await ctx.run(store.set_operator_stopped, record.id, True)
            await ctx.run(store.set_definition_status, record.id, DefinitionStatus.STOPPED)
        await ctx.run(driver.stop, found.name)
    elif action == "start":
        await ctx.run(driver.start, found.name)
        if record is not None:
            await ctx.run(store.set_operator_stopped, record.id, False)
            if record.status is DefinitionStatus.STOPPED:
                await ctx.run(store.set_definition_status, record.id, DefinitionStatus.ACTIVE)
    else:
        await ctx.run(driver.restart, found.name)
    ctx.live.invalidate(found.container_id)
    now = (await _snapshot(ctx, driver)).get(found.name, found)
    [now] = await ctx.live.with_start_times(driver, [now], ctx.run)
    return success(instance_view(now))


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
