"""GET /api/v1/openapi.json (the same document as schemas/openapi.yaml) and GET /metrics (Prometheus text)."""

from __future__ import annotations

import functools
from typing import Any

import yaml
from aiohttp import web

from deployally.api.auth import PUBLIC, access
from deployally.api.context import context
from deployally.api.metrics import CONTENT_TYPE
from deployally.data import SCHEMAS
from deployally.types import DefinitionStatus

routes = web.RouteTableDef()

OPENAPI_PATH = SCHEMAS / "openapi.yaml"
# The engine's status() may report how long its last sync took under this key.
SYNC_SECONDS_KEY = "last_sync_duration_seconds"


@functools.cache
def openapi_document() -> dict[str, Any]:
    """schemas/openapi.yaml, read once."""
    document: dict[str, Any] = yaml.safe_load(OPENAPI_PATH.read_text(encoding="utf-8"))
    return document


@routes.get("/api/v1/openapi.json")
@access(PUBLIC)
async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 contract of this API."""
    return web.json_response(await context(request).run(openapi_document))


@routes.get("/metrics")
@access(PUBLIC)
async def metrics(request: web.Request) -> web.Response:
    """Requests and latency by route, deployments and definitions by status, sync duration."""
    ctx = context(request)
    store = ctx.ws.store

    def gather() -> tuple[dict[str, int], dict[str, int], float | None]:
        definitions = {s.value: store.count_definitions(status=s) for s in DefinitionStatus}
        seconds = (ctx.status() if ctx.status else {}).get(SYNC_SECONDS_KEY)
        return (
            store.counts_by_status(),
            definitions,
            float(seconds) if seconds is not None else None,
        )

    deployments, definitions, sync_seconds = await ctx.run(gather)
    text = ctx.metrics.render(
        deployments=deployments, definitions=definitions, sync_seconds=sync_seconds
    )
    return web.Response(body=text.encode("utf-8"), headers={"Content-Type": CONTENT_TYPE})
