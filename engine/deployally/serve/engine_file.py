"""engine.json in the state directory: how a post-receive hook finds the running engine.

It holds the engine's URL and a write token made for the hook, readable by the
owner only. `deployally serve` writes it once listening and removes it, and
revokes the token, when it stops.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployally.errors import NotFound

if TYPE_CHECKING:
    from deployally.workspace import Workspace

ENGINE_FILE = "engine.json"
HOOK_TOKEN_NAME = "hook"


def read_engine_file(state_dir: Path) -> dict[str, Any] | None:
    """The running engine's URL and hook token, or None when no engine runs on this state dir."""
    try:
        data = json.loads((state_dir / ENGINE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "url" in data and "token" in data else None


def write_engine_file(state_dir: Path, *, url: str, token: str, repo: Path, branch: str) -> None:
    """Say where this engine listens and the hook's token, for hooks on this state dir to find."""
    _write_private(
        state_dir / ENGINE_FILE,
        json.dumps({"url": url, "token": token, "pid": os.getpid(),
                    "repo": str(repo), "branch": branch}),
    )


def remove_engine_file(state_dir: Path) -> None:
    """No engine runs here any more: hooks sync in the push instead."""
    (state_dir / ENGINE_FILE).unlink(missing_ok=True)


def issue_hook_token(ws: Workspace) -> str:
    """A fresh write token for the post-receive hook; the one a killed engine left is replaced."""
    revoke_hook_token(ws)
    return ws.store.create_token(HOOK_TOKEN_NAME, "write")


def revoke_hook_token(ws: Workspace) -> None:
    """Revoke the hook's token, if there is one."""
    try:
        ws.store.revoke_token(HOOK_TOKEN_NAME)
    except NotFound:
        pass


def _write_private(path: Path, text: str) -> None:
    """Write `text` readable by the owner only (it holds a token), replacing atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
