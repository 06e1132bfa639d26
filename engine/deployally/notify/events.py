"""Every event: its name, the `data` each carries, and the exact body a receiver gets.

Pure: values in, JSON-safe payloads out. Values under secret-looking keys are
masked as a second line of defence; the payloads never hold a secret to begin with.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from deployally.types import DefinitionRecord, Deployment

EVENTS: frozenset[str] = frozenset(
    {
        "deployment.started",
        "deployment.success",
        "deployment.failed",
        "instance.started",
        "instance.stopped",
        "instance.unhealthy",
        "definition.created",
        "definition.updated",
        "definition.deleted",
        "ping",
    }
)

MASK = "***"
_SECRET_KEY = re.compile(
    r"passw(or)?d|passphrase|secret|token|api[_-]?key|private[_-]?key|credential|authorization",
    re.IGNORECASE,
)


def definition_event(
    record: DefinitionRecord,
    commit: str,
    server_id: str,
    *,
    since: str | None = None,
    revisions: Sequence[int] = (),
) -> dict[str, object]:
    """The `data` of a definition.* event: one per definition per sync, for the commits
    after `since` up to `commit`, with the revisions they made of it (oldest first);
    `server_id` is the srv_ id, as the API shows it."""
    return {
        "definition_id": record.id,
        "name": record.name,
        "revision": record.current_revision,
        "commit": commit,
        "since_commit": since,
        "revisions": list(revisions),
        "server_id": server_id,
        "server": record.server_id,
        "template_id": record.template_id,
        "status": record.status.value,
    }


def deployment_event(d: Deployment, server_id: str) -> dict[str, object]:
    """The `data` of a deployment.* event; `server_id` is the srv_ id, as the API shows it."""
    return {
        "deployment_id": d.id,
        "definition_id": d.definition_id,
        "name": d.definition_name,
        "revision": d.revision,
        "commit": d.commit,
        "server_id": server_id,
        "server": d.server_id,
        "action": d.action.value,
        "status": d.status.value,
        "reason": {"kind": d.reason.kind.value, "summary": d.reason.summary},
    }


def body_for(event_id: str, event: str, created_at: datetime, data: Mapping[str, Any]) -> bytes:
    """The exact bytes POSTed (and signed): {"id","event","created_at","data"}, created_at in UTC."""
    if created_at.tzinfo is None:
        created_at = created_at.replace(tzinfo=UTC)
    stamp = created_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    payload = {"id": event_id, "event": event, "created_at": stamp, "data": scrub(data)}
    return json.dumps(payload, sort_keys=True, separators=(",", ":")).encode("utf-8")


def scrub(data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of data with values under secret-looking keys (password, token...) masked, at any depth."""
    return {k: MASK if _SECRET_KEY.search(str(k)) else _scrub_value(v) for k, v in data.items()}


def _scrub_value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return scrub(value)
    if isinstance(value, list | tuple):
        return [_scrub_value(v) for v in value]
    return value
