"""POST /api/v1/hook: the git hooks of the repository this engine serves, in one HTTP call each.

The installed sh hooks call it with curl and the hook token of hook.curlrc in the state
directory (owner-only, made at each start, never in the store or git), so a push costs no
Python start-up. `pre-receive` answers with the text `deployally validate --pushed` prints,
200 when the push may land and 422 when it is refused; `post-receive` streams the lines of
the sync that deploys it. Anything else (401, 404 from an older engine, 409 for another
repository) sends the hook back to doing the work itself.
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from deployally.api.auth import PUBLIC, access, bearer_token
from deployally.api.context import ServerIds, context
from deployally.api.envelope import ApiError
from deployally.api.sync import OBJECT_ID, SYNC, outcome_view
from deployally.errors import SourceError
from deployally.logs import fields
from deployally.serve.engine_file import HOOK_CURL_CONFIG, HOOK_ROUTE
from deployally.serve.push_output import deploying, print_engine_answer
from deployally.source.tree import CommitTree
from deployally.validation import StoreChecks, Validation, validate

log = logging.getLogger("deployally.hooks")
routes = web.RouteTableDef()

HOOK_SECRET = web.AppKey("deployally.hook_secret", str)
HOOKS = ("pre-receive", "post-receive")


def _bad(field: str, message: str) -> ApiError:
    return ApiError(400, "bad_request", f"{field}: {message}")


def _field(form: MultiDictProxy[str | bytes | Any], name: str, *, required: bool = True) -> str:
    value = form.get(name)
    if value is None or value == "":
        if required:
            raise _bad(name, "is required")
        return ""
    if not isinstance(value, str):
        raise _bad(name, "must be a form field, not a file")
    return value


@routes.post(HOOK_ROUTE)
@access(PUBLIC)  # checked below: the hook token, which no API token can stand in for
async def hook(request: web.Request) -> web.StreamResponse:
    """Run one git hook of the served repository: `hook` (pre-receive or post-receive),
    `repo` (its git directory), `commit`, and for pre-receive `quarantine` (the directory
    git keeps the pushed objects in until the hook accepts them)."""
    secret = request.app.get(HOOK_SECRET)
    token = bearer_token(request)
    if secret is None or token is None or not hmac.compare_digest(token.encode(), secret.encode()):
        raise ApiError(401, "unauthorized",
                       f"this endpoint takes the hook token of {HOOK_CURL_CONFIG} in the engine's "
                       "state directory")
    form = await request.post()
    name = _field(form, "hook")
    if name not in HOOKS:
        raise _bad("hook", f"{name!r} is not one of {', '.join(HOOKS)}")
    ctx = context(request)
    served = ctx.ws.repo.git_dir.resolve()
    if Path(_field(form, "repo")).resolve() != served:
        raise ApiError(409, "conflict", f"repo: this engine serves {served}")
    commit = _field(form, "commit").lower()
    if not OBJECT_ID.fullmatch(commit):
        raise _bad("commit", "is not a full commit id")
    if name == "pre-receive":
        return await _pre_receive(request, commit, _field(form, "quarantine", required=False))
    return await _post_receive(request, commit)


async def _pre_receive(request: web.Request, commit: str, quarantine: str) -> web.Response:
    """Validate the pushed commit with the push's quarantined objects visible, and only for
    this validation's own git reads."""
    ctx = context(request)

    def check() -> Validation:
        repo = ctx.ws.repo
        if quarantine:
            try:
                repo = repo.with_quarantine(Path(quarantine))
            except SourceError as exc:
                raise _bad("quarantine", str(exc)) from None
        if not repo.has_commit(commit):
            raise _bad("commit", f"{commit} is not in the repository nor in the push")
        return validate(CommitTree(repo, commit), lambda: ctx.ws.engine_config,
                        lambda: StoreChecks.of(ctx.ws.store), pushed=True)

    result = await ctx.run(check)
    ctx.metrics.observe_hook("pre-receive", "accepted" if result.ok else "refused")
    log.info("pre-receive: push %s", "accepted" if result.ok else "refused",
             extra=fields(commit=commit, errors=len(result.errors)))
    text = "".join(f"{line}\n" for line, _ in result.lines())
    return web.Response(text=text, status=200 if result.ok else 422)


async def _post_receive(request: web.Request, commit: str) -> web.StreamResponse:
    """Stream the push's outcome: the line saying it deploys at once, the rest when the sync
    that covers it has finished."""
    service = request.app.get(SYNC)
    if service is None:
        raise ApiError(503, "unavailable", "no engine runs in this process")
    ctx = context(request)
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await response.prepare(request)
    await response.write(f"{deploying(commit)}\n".encode())
    try:
        outcome = await service.sync_covering(commit, "push")
        body: dict[str, Any] = {"success": True, "data": outcome_view(
            outcome, ServerIds(await ctx.run(ctx.ws.store.servers)))}
    except Exception as exc:  # the answer has begun: say it in the stream, as the envelope would
        from deployally.api.app import as_api_error  # the app module imports this one

        err = as_api_error(exc)
        if err is None:
            log.exception("post-receive: the sync failed")
        body = {"success": False, "error": {
            "code": err.code if err else "internal_error",
            "message": err.message if err else "an unexpected error happened; see the server log",
        }}
    lines: list[str] = []
    print_engine_answer(body, lines.append)
    ctx.metrics.observe_hook("post-receive", "reported")
    await response.write("".join(f"{line}\n" for line in lines).encode())
    await response.write_eof()
    return response
