"""GET /health, without auth: healthy, or degraded with the reason when Docker or the repository
is unreachable, or the state store cannot be written."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from deployally import __version__
from deployally.api.auth import PUBLIC, access
from deployally.api.context import Context, context
from deployally.api.views import engine_status_view, iso
from deployally.errors import DeployAllyError, DriverError

routes = web.RouteTableDef()

CHECK_TIMEOUT_S = 5.0


async def _check(
    ctx: Context, what: str, fn: Any, failed: str = "unreachable", *, docker: bool = False
) -> dict[str, Any]:
    try:
        await asyncio.wait_for((ctx.run_docker if docker else ctx.run)(fn), CHECK_TIMEOUT_S)
    except TimeoutError:
        return {"status": failed, "reason": f"{what} did not answer in {CHECK_TIMEOUT_S:g}s"}
    except Exception as exc:  # noqa: BLE001 - a probe reports any failure as its reason
        return {"status": failed, "reason": str(exc) or type(exc).__name__}
    return {"status": "ok"}


@routes.get("/api/v1/health")
@access(PUBLIC)
async def health(request: web.Request) -> web.Response:
    """`{"status", "version", "timestamp", "checks"}`; always 200 so a probe can read the reason."""
    ctx = context(request)

    def ping_servers() -> None:
        # Every server this engine applies to must answer (today: this host's Docker).
        problems = []
        for server, driver in ctx.ws.drivers.applied_here():
            try:
                driver.ping()
            except DeployAllyError as exc:
                problems.append(f"server {server.name}: {exc}")
        if problems:
            raise DriverError("; ".join(problems))

    checks = {
        "repository": await _check(ctx, "the git repository", lambda: ctx.ws.repo.head()),
        "docker": await _check(ctx, "the Docker engine", ping_servers, docker=True),
        # A write, not a read: under WAL a locked or full store still reads fine.
        "store": await _check(ctx, "the state store", lambda: ctx.ws.store.probe_write(),
                              failed="unwritable"),
    }
    if ctx.status is not None:
        checks["engine"] = engine_status_view(await ctx.run(ctx.status))
    bad = [f"{name}: {c['reason']}" for name, c in checks.items() if c["status"] != "ok"]
    body: dict[str, Any] = {
        "status": "degraded" if bad else "healthy",
        "version": __version__,
        "timestamp": iso(datetime.now(UTC)),
        "checks": checks,
    }
    if bad:
        body["reason"] = "; ".join(bad)
    return web.json_response(body)
