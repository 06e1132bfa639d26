"""Bearer tokens and scopes: who may call which endpoint.

`read` sees everything but secrets; `write` may also change definitions,
instances and deployments; `admin` also servers, webhooks and tokens. A server
key (`da_server_...`) reaches only the agent endpoints of its own server.
Each handler declares what it needs with `@access(...)`; a handler that
declares nothing is treated as admin-only, so a forgotten marker fails closed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from deployally.api.context import context
from deployally.api.envelope import ApiError
from deployally.api.views import iso
from deployally.store import SERVER_KEY_PREFIX, RetiredKey, ServerRecord, TokenRecord

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PUBLIC: Final = "public"
READ: Final = "read"
WRITE: Final = "write"
ADMIN: Final = "admin"
AGENT: Final = "agent"  # a server key, for that server's own agent endpoints
_RANK: Final = {READ: 1, WRITE: 2, ADMIN: 3}
_ATTR: Final = "__deployally_access__"

TOKEN = web.RequestKey("deployally.token", TokenRecord)
SERVER = web.RequestKey("deployally.server", ServerRecord)


def access(level: str) -> Callable[[Handler], Handler]:
    """Mark a handler with what it needs: PUBLIC, READ, WRITE, ADMIN or AGENT."""

    def mark(handler: Handler) -> Handler:
        setattr(handler, _ATTR, level)
        return handler

    return mark


def required(handler: object) -> str:
    """The access a handler declared (ADMIN when it declared none)."""
    return str(getattr(handler, _ATTR, ADMIN))


def author(request: web.Request) -> str:
    """Who a write is made for: the token's name (the commit author)."""
    token = request.get(TOKEN)
    return token.name if token is not None else "deployally-api"


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """401 without a known token, 403 when its scope (or kind) does not reach the endpoint."""
    match = request.match_info
    if match.http_exception is not None:  # unknown route or method: 404/405 need no token
        return await handler(request)
    needed = required(match.handler)
    if needed == PUBLIC:
        return await handler(request)
    token = _bearer(request)
    ctx = context(request)
    store = ctx.ws.store
    if token.startswith(SERVER_KEY_PREFIX):
        server = await ctx.run(store.verify_server_key, token)
        if server is None:
            raise _unauthorized(_refused_server_key(await ctx.run(store.retired_server_key, token)))
        if needed != AGENT:
            raise ApiError(
                403, "forbidden", "a server key reaches only its agent endpoints; use an API token"
            )
        request[SERVER] = server
        return await handler(request)
    # One indexed read of a WAL database, which never waits for a writer: on the loop it
    # costs microseconds, where a thread hand-off waits for the GIL behind a busy sync.
    record = store.verify_token(token)
    if record is None:
        raise _unauthorized(
            "the token is not known or was revoked; make one with `deployally token create NAME`"
        )
    if needed == AGENT:
        raise ApiError(403, "forbidden", "agent endpoints take a server key (da_server_...)")
    if _RANK.get(record.scope, 0) < _RANK[needed]:
        raise ApiError(
            403,
            "forbidden",
            f"token {record.name!r} has scope {record.scope!r}; this needs {needed!r}",
        )
    request[TOKEN] = record
    return await handler(request)


def _refused_server_key(retired: RetiredKey | None) -> str:
    """What an agent whose key does not verify is told: replaced, removed, or never known."""
    if retired is None:
        return (
            "this server key is not known: register the server (`deployally server add` or"
            " POST /api/v1/servers), which shows its key once"
        )
    at = iso(retired.retired_at)
    if retired.why == "rotated":
        return (
            f"this server key was replaced by rotate-key at {at}; use the new key"
            f" (server '{retired.server_name}')"
        )
    return f"this server key is no longer valid: its server '{retired.server_name}' was removed at {at}"


def _bearer(request: web.Request) -> str:
    token = bearer_token(request)
    if token is None:
        raise _unauthorized("send `Authorization: Bearer da_...`")
    return token


def bearer_token(request: web.Request) -> str | None:
    """The token of `Authorization: Bearer <token>` (the scheme in any case, RFC 6750), None
    when there is no such header; 401 when the header is not a bearer token."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    # Tokens are ASCII; a header of other bytes arrives as surrogate escapes, no token at all.
    if scheme.lower() != "bearer" or not token or not header.isascii():
        raise _unauthorized("the Authorization header must be `Bearer da_...` (ASCII)")
    return token


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message)
