"""The aiohttp app factory: routes under /api/v1 plus /metrics, with envelope, auth and metrics middlewares."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiohttp import web

from deployally.api import (
    agent,
    definitions,
    deployments,
    health,
    hooks,
    instances,
    meta,
    servers,
    sync,
    templates,
    webhooks,
)
from deployally.api.auth import Handler, auth_middleware
from deployally.api.context import CONTEXT, Context, context
from deployally.api.envelope import ApiError, failure
from deployally.api.metrics import Metrics
from deployally.errors import (
    Conflict,
    DeployAllyError,
    DriverError,
    NotFound,
    SecretKeyError,
    SourceError,
    StoreUnavailable,
    ValidationError,
    ValidationErrors,
)
from deployally.types import EngineStatus
from deployally.workspace import Workspace

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def create_app(
    ws: Workspace,
    *,
    trigger_sync: Callable[[str], None] | None = None,
    status: Callable[[], EngineStatus] | None = None,
    metrics: Metrics | None = None,
) -> web.Application:
    """The API for one workspace; `trigger_sync` is called after each write commit.

    `status` and `metrics` come from the engine that serves this API, when one does.
    """
    app = web.Application(middlewares=[metrics_middleware, error_middleware, auth_middleware])
    app[CONTEXT] = Context(ws, trigger_sync=trigger_sync, status=status, metrics=metrics or Metrics())

    async def close_context(app: web.Application) -> None:
        app[CONTEXT].close()

    app.on_cleanup.append(close_context)
    for module in (
        agent,
        templates,
        definitions,
        instances,
        servers,
        deployments,
        webhooks,
        health,
        meta,
        sync,
        hooks,
    ):
        app.router.add_routes(module.routes)
    return app


def as_api_error(exc: BaseException) -> ApiError | None:
    """The API error an exception stands for, or None when it is unexpected."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, web.HTTPException):
        code = _HTTP_CODES.get(exc.status, "error")
        return ApiError(exc.status, code, exc.reason if exc.status != 404 else "no such endpoint")
    if isinstance(exc, NotFound):
        return ApiError(404, "not_found", str(exc))
    if isinstance(exc, Conflict):
        return ApiError(409, "conflict", str(exc))
    if isinstance(exc, ValidationErrors):
        return ApiError(422, "validation_failed", str(exc), [e.as_dict() for e in exc.errors])
    if isinstance(exc, ValidationError):
        return ApiError(422, "validation_failed", str(exc), [exc.as_dict()])
    if isinstance(exc, (DriverError, SourceError, SecretKeyError, StoreUnavailable)):
        return ApiError(503, "unavailable", str(exc))
    if isinstance(exc, DeployAllyError):
        return ApiError(400, "bad_request", str(exc))
    return None


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as the error envelope; an unexpected one as a 500 without a stack trace."""
    try:
        return await handler(request)
    except Exception as exc:
        err = as_api_error(exc)
        if err is None:
            log.exception("unexpected error answering %s %s", request.method, request.path)
            err = ApiError(
                500, "internal_error", "an unexpected error happened; see the server log"
            )
        response = failure(err)
        if err.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="deployally"'
        if isinstance(exc, web.HTTPMethodNotAllowed):
            response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        return response


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every answer and its latency, by route template (not path, to bound the labels)."""
    started = time.perf_counter()
    response = await handler(request)
    route = request.match_info.route.resource
    name = route.canonical if route is not None else "unmatched"
    context(request).metrics.observe_request(
        request.method, name, response.status, time.perf_counter() - started
    )
    return response
