"""How a command reaches the engine running on a state directory: engine.json, then its API."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from deployally.api.views import engine_status_from_view
from deployally.serve.engine_file import engine_ssl_context, read_engine_file
from deployally.serve.tls import TlsError
from deployally.types import EngineStatus

STATUS_TIMEOUT_S = 5.0


def running_engine_status(state_dir: Path) -> EngineStatus | None:
    """The status of the engine serving `state_dir`, or None when no engine answers there."""
    engine = read_engine_file(state_dir)
    if engine is None:
        return None
    try:
        # /health needs no token and answers while a sync runs.
        with urllib.request.urlopen(
            f"{engine['url']}/api/v1/health", timeout=STATUS_TIMEOUT_S,
            context=engine_ssl_context(engine),
        ) as response:
            body = json.loads(response.read())
    except (OSError, ValueError, TlsError):
        return None  # an engine.json left by an engine that was killed
    check = body.get("checks", {}).get("engine") if isinstance(body, dict) else None
    return engine_status_from_view(check) if isinstance(check, dict) else None
