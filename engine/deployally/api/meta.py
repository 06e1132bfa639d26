"""GET /api/v1/openapi.json (the same document as schemas/openapi.yaml) and GET /metrics (Prometheus)."""

from __future__ import annotations

import functools
from typing import Any

import yaml
from aiohttp import web

from deployally.api.auth import PUBLIC, access
from deployally.api.context import context
from deployally.data import SCHEMAS
from deployally.types import DefinitionStatus

routes = web.RouteTableDef()

OPENAPI_PATH = SCHEMAS / "openapi.yaml"


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
    """Prometheus text (or OpenMetrics when asked): requests, syncs, store counts, build, process."""
    ctx = context(request)
    store = ctx.ws.store

    def scrape() -> tuple[bytes, str]:
        return ctx.metrics.exposition(
            request.headers.get("Accept", ""),
            deployments=store.counts_by_status(),
            definitions={s.value: store.count_definitions(status=s) for s in DefinitionStatus},
            deliveries=store.deliveries_by_status(),
            engine=ctx.status() if ctx.status is not None else None,
        )

    body, content_type = await ctx.run(scrape)
    return web.Response(body=body, headers={"Content-Type": content_type})
