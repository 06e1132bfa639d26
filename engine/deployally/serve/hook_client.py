"""`deployally hook post-receive`: tell the running engine about a push and print each outcome.

The lines go to the pusher's terminal ("remote: site: revision 3 deployed"),
as with Dokku or Heroku. The installed sh hook runs this only when it cannot ask the
engine itself with curl (api/hooks.py). With no engine running the sync runs right here,
in the push; the sync lock keeps it from overlapping an engine that starts meanwhile.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from deployally.errors import DeployAllyError
from deployally.serve.engine_file import engine_ssl_context, read_engine_file
from deployally.serve.push_output import (
    PREFIX,
    Echo,
    deploying,
    print_engine_answer,
    say_refused,
    say_unreachable,
)
from deployally.serve.tls import TlsError
from deployally.source.git import GitRepo
from deployally.state_dir import engine_state_dir
from deployally.workspace import Workspace

# A deploy waits for health checks; a push may take this long before the hook gives up.
ENGINE_TIMEOUT_S = 30 * 60


def state_dir_for(git_dir: Path) -> Path:
    """Where the engine of this repository keeps its state: `deployally.stateDir`, else beside it."""
    return engine_state_dir(GitRepo(git_dir))


def _ask_engine(engine: dict[str, Any], commit: str) -> dict[str, Any]:
    """POST /api/v1/sync with wait; the parsed envelope (raises URLError when nobody listens)."""
    request = urllib.request.Request(
        f"{engine['url']}/api/v1/sync",
        data=json.dumps({"commit": commit, "wait": True}).encode(),
        headers={"Authorization": f"Bearer {engine['token']}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(
            request, timeout=ENGINE_TIMEOUT_S, context=engine_ssl_context(engine)
        ) as response:
            body: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read() or b"{}")
    return body


def _refused(exc: urllib.error.URLError) -> bool:
    return isinstance(exc.reason, (ConnectionRefusedError, FileNotFoundError))


def post_receive(
    repo: Path, branch: str, commit: str, echo: Echo, state_dir: Path | None = None
) -> int:
    """Deploy a push through the running engine (or in-process); 0 when every deployment succeeded."""
    git_dir = Path(repo).resolve()
    state = state_dir or state_dir_for(git_dir)
    engine = read_engine_file(state)
    echo(deploying(commit))
    if engine is not None:
        try:
            body = _ask_engine(engine, commit)
        except TlsError as exc:
            echo(f"{PREFIX}cannot check the engine at {engine['url']}: {exc}")
            return 1
        except urllib.error.URLError as exc:
            if not _refused(exc):
                echo(f"{PREFIX}the engine at {engine['url']} did not answer: {exc.reason}")
                return 1
            echo(f"{PREFIX}no engine answers at {engine['url']}; deploying here")
        except (http.client.HTTPException, OSError, ValueError) as exc:
            # The engine went away mid-answer (killed, restarted) or answered garbage.
            echo(f"{PREFIX}lost the connection to the engine at {engine['url']} "
                 f"({_described(exc)}); the push is in git and deploys when the engine "
                 "runs again: see `deployally status`")
            return 1
        else:
            return print_engine_answer(body, echo)
    return _sync_here(git_dir, state, branch, echo)


def _described(exc: BaseException) -> str:
    """An exception in a few words, for one line of push output."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _sync_here(git_dir: Path, state: Path, branch: str, echo: Echo) -> int:
    ws = Workspace.open(git_dir, state, branch, progress=echo)
    try:
        report = ws.engine.sync()
    except DeployAllyError as exc:
        echo(f"{PREFIX}sync failed: {exc}")
        return 1
    finally:
        ws.close()
    for err in report.errors:
        echo(f"error: {err}")
    say_unreachable(report.unreachable, echo)
    echo(f"{PREFIX}{report.summary()}")
    say_refused(len(report.refused), echo)
    return 0 if report.ok else 1
