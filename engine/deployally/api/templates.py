"""GET /templates (filters kingdom, family, species) and GET /templates/{id}."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from deployally.api.auth import READ, access
from deployally.api.context import context
from deployally.api.envelope import listing, not_found, parse_page, success
from deployally.api.views import template_detail, template_summary
from deployally.data import CATALOG
from deployally.model.catalog import BUILTIN_PREFIX
from deployally.types import Template

routes = web.RouteTableDef()


def created_at(t: Template) -> datetime | None:
    """When a template appeared: a built-in's file time (repo templates carry no such time)."""
    if not t.builtin:
        return None
    path = CATALOG / t.source.removeprefix(BUILTIN_PREFIX)
    if not isinstance(path, Path):  # a package read from a zip archive has no file times
        return None
    try:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError:
        return None


@routes.get("/api/v1/templates")
@access(READ)
async def list_templates(request: web.Request) -> web.Response:
    """Templates by taxonomy path, filtered by kingdom, family and species."""
    page = parse_page(request.query)
    ctx = context(request)
    found = await ctx.run(ctx.catalog)
    wanted = {k: request.query[k] for k in ("kingdom", "family", "species") if k in request.query}
    matching = [
        t for t in found.all() if all(getattr(t.taxonomy, k) == v for k, v in wanted.items())
    ]
    data = [template_summary(t, created_at(t)) for t in page.slice(matching)]
    return listing(data, page, len(matching))


@routes.get("/api/v1/templates/{id}")
@access(READ)
async def get_template(request: web.Request) -> web.Response:
    """One template with its description, spec and spec_hash."""
    ctx = context(request)
    found = await ctx.run(ctx.catalog)
    key = request.match_info["id"]
    template = found.by_id(key) or found.resolve(key)
    if template is None:
        raise not_found(f"no template {key!r}; GET /api/v1/templates lists them")
    return success(template_detail(template, created_at(template)))
