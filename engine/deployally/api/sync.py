"""POST /api/v1/sync: run a sync now; from a Bearer token, a GitHub or a GitLab push webhook.

A push webhook carries no token: GitHub signs the body (`X-Hub-Signature-256:
sha256=<HMAC>`), GitLab sends the shared secret (`X-Gitlab-Token`); both are
checked against the configured webhook secret in constant time. With
`{"wait": true}` the answer comes when the sync covering the push has finished,
with its deployments: what the post-receive hook prints into `git push`.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from deployally.api.auth import PUBLIC, READ, WRITE, access, bearer_token
from deployally.api.context import ServerIds, context
from deployally.api.envelope import ApiError, invalid, json_object, success
from deployally.api.views import deployment_view
from deployally.notify.signature import verify
from deployally.sync.reconcile import SyncReport
from deployally.types import RefusedCommit

routes = web.RouteTableDef()

# Where a body names the commit to wait for: ours, then GitHub's and GitLab's push events.
COMMIT_FIELDS = ("commit", "after", "checkout_sha")
# A full commit id: SHA-1, or SHA-256 for a repository made with --object-format=sha256.
OBJECT_ID = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
MAX_BODY = 1024 * 1024  # a push webhook with many commits is a few hundred KB at most


@dataclass(frozen=True)
class SyncOutcome:
    """A finished sync: its report and the progress lines it printed ("site: revision 3 deployed")."""

    report: SyncReport
    lines: tuple[str, ...] = ()
    next_retry_s: float | None = None  # when a failed definition is due again, if one failed


class SyncService(Protocol):
    """What the running engine offers this route (set by `deployally serve`)."""

    webhook_secret: str | None
    branch: str

    def trigger(self, why: str) -> None:
        """Ask for a sync soon (fetching first for a mirrored remote); never waits."""

    async def sync_covering(self, commit: str | None, why: str) -> SyncOutcome:
        """Wait for a sync that started after this call, and answer with the one that reached `commit`."""


SYNC = web.AppKey("deployally.sync", SyncService)


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message)


async def _authorize(request: web.Request, body: bytes, secret: str | None) -> str:
    """Who is asking: "github", "gitlab" or "token"; 401/403 otherwise."""
    github = request.headers.get("X-Hub-Signature-256")
    gitlab = request.headers.get("X-Gitlab-Token")
    if github is not None or gitlab is not None:
        if not secret:
            raise _unauthorized(
                "push webhooks are not accepted: start `deployally serve` with --push-secret "
                "(or DEPLOYALLY_PUSH_SECRET)"
            )
        if github is not None:
            if not verify(secret, body, github):
                raise _unauthorized("X-Hub-Signature-256 does not match the body and secret")
            return "github"
        assert gitlab is not None
        if not hmac.compare_digest(_raw(gitlab), secret.encode()):
            raise _unauthorized("X-Gitlab-Token does not match the webhook secret")
        return "gitlab"
    token = bearer_token(request)
    if token is None:
        raise _unauthorized(
            "send `Authorization: Bearer da_...` (write scope) or a signed push webhook"
        )
    ctx = context(request)
    record = await ctx.run(ctx.ws.store.verify_token, token)
    if record is None:
        raise _unauthorized("the token is not known or was revoked; make one with `deployally token create NAME`")
    if record.scope not in (WRITE, "admin"):
        raise ApiError(403, "forbidden", f"token {record.name!r} has scope {record.scope!r}; this needs 'write'")
    return "token"


def pushed_commit(payload: dict[str, Any]) -> str | None:
    """The commit a body names (`commit`, GitHub's `after`, GitLab's `checkout_sha`), lower
    case; 422 naming the field when it is not a full commit id."""
    for field in COMMIT_FIELDS:
        value = payload.get(field)
        if value is None or value == "":
            continue
        if not isinstance(value, str) or not OBJECT_ID.fullmatch(value.lower()):
            shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
            raise invalid([{
                "field": field,
                "message": f"{shown} is not a commit id: 40 hexadecimal digits (64 for a "
                           "SHA-256 repository), as `git rev-parse HEAD` prints it",
            }])
        return value.lower()
    return None


def _raw(header: str) -> bytes:
    """A header's bytes as received: aiohttp decodes non-UTF-8 bytes to surrogate escapes."""
    return header.encode("utf-8", "surrogateescape")


def outcome_view(outcome: SyncOutcome, servers: ServerIds) -> dict[str, Any]:
    """A finished sync as the API shows it, each deployment with its server's environment."""
    report = outcome.report
    return {
        "commit": report.commit,
        "ok": report.ok,
        "lines": list(outcome.lines),
        "deployments": [deployment_view(d, environment=servers.environment(d.server_id))
                        for d in report.deployments],
        "errors": [e.as_dict() for e in report.errors],
        "unchanged": report.unchanged,
        "unreachable": report.unreachable,
        "refused_commits": [refused_view(r) for r in report.refused],
    }


def refused_view(refused: RefusedCommit) -> dict[str, str]:
    """A commit the engine would not deploy, as the API shows it."""
    return {"commit": refused.sha, "summary": refused.summary, "reason": refused.reason}


@routes.get("/api/v1/sync")
@access(READ)
async def sync_status(request: web.Request) -> web.Response:
    """Where the engine stands: the branch head, the commit deployed, and the newer commits
    it would not deploy (not signed by a trusted key) with the reason."""
    ctx = context(request)
    store = ctx.ws.store

    def read() -> dict[str, Any]:
        return {
            "head": ctx.ws.repo.head(),
            "deployed_commit": store.get_meta("desired_commit"),
            "last_applied_commit": store.last_applied_commit(),
            "verifies_commits": ctx.ws.engine_config.verifies_commits,
            "refused_commits": [refused_view(r) for r in store.refused_commits()],
        }

    return success(await ctx.run(read))


@routes.post("/api/v1/sync")
@access(PUBLIC)  # checked below: a push webhook proves itself with a signature, not a token
async def sync(request: web.Request) -> web.Response:
    """Sync now (202), or with `{"wait": true}` answer with the finished sync's deployments (200)."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, "payload_too_large", f"the body is over {MAX_BODY} bytes")
    body = await request.read()
    service = request.app.get(SYNC)
    sender = await _authorize(request, body, service.webhook_secret if service else None)
    if sender == "github" and request.headers.get("X-GitHub-Event", "push") == "ping":
        return success({"queued": False, "reason": "ping"})
    payload = json_object(body, required=False)
    ref = payload.get("ref")
    tracked = f"refs/heads/{service.branch}" if service is not None else None
    if sender != "token" and isinstance(ref, str) and tracked and ref != tracked:
        return success({"queued": False, "reason": f"{ref} is not the tracked branch"})
    commit = pushed_commit(payload)
    why = f"{sender} push" if sender != "token" else "POST /api/v1/sync"
    if service is None:
        ctx = context(request)
        if ctx.trigger_sync is None:
            raise ApiError(503, "unavailable", "no engine runs in this process: start `deployally serve`")
        await ctx.run(ctx.sync_soon)
        return success({"queued": True}, status=202)
    if payload.get("wait") is True:
        outcome = await service.sync_covering(commit, why)
        ctx = context(request)
        return success(outcome_view(outcome, ServerIds(await ctx.run(ctx.ws.store.servers))))
    service.trigger(why)
    return success({"queued": True}, status=202)
