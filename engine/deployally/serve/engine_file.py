"""engine.json in the state directory: how a post-receive hook finds the running engine.

It holds the engine's URL and a write token made for the hook, readable by the
owner only, and over HTTPS the path of the certificate the engine serves, which
the clients on this host trust (serve/tls.py). `deployally serve` writes it once listening and removes it, and
revokes the token, when it stops.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deployally.errors import NotFound
from deployally.serve.tls import TlsError, engine_file_context

if TYPE_CHECKING:
    from deployally.workspace import Workspace

ENGINE_FILE = "engine.json"
HOOK_TOKEN_NAME = "hook"
# The sh hooks' way to the engine: a curl config (`curl -K`) with the URL, the hook token and
# the certificate to trust, so the token is never on a command line `ps` shows.
HOOK_CURL_CONFIG = "hook.curlrc"
HOOK_ROUTE = "/api/v1/hook"
# A hook that cannot reach the engine in this long falls back to doing the work itself.
HOOK_CONNECT_TIMEOUT_S = 2


def read_engine_file(state_dir: Path) -> dict[str, Any] | None:
    """The running engine's URL and hook token, or None when no engine runs on this state dir."""
    try:
        data = json.loads((state_dir / ENGINE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "url" in data and "token" in data else None


def write_engine_file(
    state_dir: Path, *, url: str, token: str, repo: Path, branch: str, tls_cert: Path | None = None
) -> None:
    """Say where this engine listens and the hook's token, for hooks on this state dir to find;
    over HTTPS, also the certificate they are to trust (see engine_ssl_context)."""
    data: dict[str, Any] = {"url": url, "token": token, "pid": os.getpid(),
                            "repo": str(repo), "branch": branch}
    if tls_cert is not None:
        data["tls_cert"] = str(tls_cert)
    _write_private(state_dir / ENGINE_FILE, json.dumps(data))


def engine_ssl_context(engine: dict[str, Any]) -> ssl.SSLContext | None:
    """How a client on this host checks the engine engine.json describes: trusting exactly the
    certificate it serves, when its URL is https; None for plain HTTP. TlsError when the
    certificate named cannot be read."""
    if not str(engine.get("url", "")).startswith("https://"):
        return None
    cert = engine.get("tls_cert")
    if not isinstance(cert, str) or not cert:
        raise TlsError(f"{ENGINE_FILE} gives an https URL but no tls_cert to trust")
    return engine_file_context(Path(cert))


def remove_engine_file(state_dir: Path) -> None:
    """No engine runs here any more: hooks sync in the push instead."""
    (state_dir / ENGINE_FILE).unlink(missing_ok=True)
    (state_dir / HOOK_CURL_CONFIG).unlink(missing_ok=True)


def new_hook_secret() -> str:
    """The secret the sh hooks show the engine: made at each start, kept in memory and in the
    state directory's hook.curlrc (owner only), never in the store, git or a log."""
    return "da_hook_" + secrets.token_urlsafe(32)


def write_hook_curl_config(
    state_dir: Path, *, url: str, secret: str, tls_cert: Path | None = None
) -> None:
    """Write hook.curlrc, owner-only: where the sh hooks reach this engine, with what."""
    lines = [
        "# Written by `deployally serve` for the git hooks (curl -K); removed when it stops.",
        f"url = {_curl_quoted(url + HOOK_ROUTE)}",
        f"header = {_curl_quoted('Authorization: Bearer ' + secret)}",
        f"connect-timeout = {HOOK_CONNECT_TIMEOUT_S}",
        "silent",
    ]
    if tls_cert is not None:
        lines.append(f"cacert = {_curl_quoted(str(tls_cert))}")
    _write_private(state_dir / HOOK_CURL_CONFIG, "\n".join(lines) + "\n")


def _curl_quoted(value: str) -> str:
    """A value in a curl config file: double-quoted, with backslash escapes."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


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
