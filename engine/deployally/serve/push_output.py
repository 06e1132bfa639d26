"""The lines a push prints of the sync that deployed it ("remote: site: revision 3 deployed").

Written once, for both ways a post-receive hook reaches a running engine: the Python hook
prints them from the engine's JSON answer, the engine streams them to the sh hook's curl.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from deployally.sync.reconcile import summary
from deployally.types import DeploymentStatus

Echo = Callable[[str], None]
PREFIX = "DeployAlly: "


def print_engine_answer(body: dict[str, Any], echo: Echo) -> int:
    """Print the engine's answer to `POST /api/v1/sync` with wait (the envelope); 0 when every
    deployment succeeded."""
    if not body.get("success"):
        error = body.get("error") or {}
        message = error.get("message", body)
        if error.get("code") == "unavailable":
            # The engine cannot work right now (store, Docker or git); the push itself is kept.
            echo(f"{PREFIX}the engine could not deploy this push: {message}; "
                 "it retries by itself once that is fixed")
        else:
            echo(f"{PREFIX}the engine refused the sync: {message}")
        return 1
    data = body["data"]
    for line in data.get("lines") or []:
        echo(line)
    for err in data.get("errors") or []:
        where = err["file"] + (f":{err['line']}" if err.get("line") else "")
        field = f" {err['field']}:" if err.get("field") else ""
        echo(f"error: {where}:{field} {err['message']}")
    say_unreachable(data.get("unreachable") or {}, echo)
    statuses = [d["status"] for d in data.get("deployments") or []]
    waiting = statuses.count(DeploymentStatus.WAITING.value)
    deployed = statuses.count(DeploymentStatus.SUCCESS.value)
    echo(f"{PREFIX}{summary(deployed, len(statuses) - deployed - waiting, waiting, int(data.get('unchanged', 0)), len(data.get('errors') or []))}")
    say_refused(len(data.get("refused_commits") or []), echo)
    return 0 if data.get("ok") else 1


def say_unreachable(unreachable: dict[str, str], echo: Echo) -> None:
    """An unreachable server is no error of the push: its deployments wait for it."""
    for server, cause in unreachable.items():
        echo(f"{PREFIX}server {server} is unreachable ({cause}); its deployments wait and run"
             " when it answers")


def say_refused(count: int, echo: Echo) -> None:
    """How many commits of the push the engine would not deploy for want of a trusted signature."""
    if count:
        echo(f"{PREFIX}{count} commit(s) not deployed: not signed by a key the engine trusts")


def deploying(commit: str) -> str:
    """The line a push prints before it waits for the deploy."""
    return f"{PREFIX}deploying {commit[:12]}"
