"""JSON shapes of templates, definitions, instances and deployments (the API document's fields).

The API and the CLI's `--json` share these, so a script sees the same fields
whichever it asks. Pure: values in, JSON-safe dicts out; never a secret value.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from deployally import secrets
from deployally.identity import instance_id
from deployally.types import (
    DefinitionRecord,
    Deployment,
    FieldChange,
    LiveInstance,
    Reason,
    SecretRef,
    Template,
)

MASK = "********"


def iso(at: datetime | None) -> str | None:
    """ISO-8601 in UTC with a Z, as the API document writes times."""
    if at is None:
        return None
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def template_summary(t: Template, created_at: datetime | None = None) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "version": t.version,
        "taxonomy": {
            "kingdom": t.taxonomy.kingdom,
            "family": t.taxonomy.family,
            "species": t.taxonomy.species,
            "variant": t.taxonomy.variant,
            "specimen": t.taxonomy.specimen,
        },
        "path": t.taxonomy.path,
        "spec_hash": t.spec_hash,
        "deprecated": t.deprecated,
        "created_at": iso(created_at),
    }


def template_detail(t: Template, created_at: datetime | None = None) -> dict[str, Any]:
    out = template_summary(t, created_at)
    out["description"] = t.description
    out["spec"] = _plain(t.spec)
    return out


def masked_params(params: Mapping[str, Any], password_inputs: set[str] | None = None) -> dict[str, Any]:
    """Params as shown to people: secret references and password inputs as ********."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        is_secret = isinstance(value, SecretRef) or (isinstance(value, Mapping) and set(value) == {"secret"})
        out[key] = MASK if is_secret or (password_inputs and key in password_inputs) else value
    return out


def definition_view(r: DefinitionRecord, instance: LiveInstance | None = None) -> dict[str, Any]:
    return {
        "id": r.id,
        "name": r.name,
        "template_id": r.template_id,
        "server_id": r.server_id,
        "profile": r.profile,
        "status": r.status.value,
        "current_revision": r.current_revision,
        "applied_revision": r.applied_revision,
        "container_name": r.name,
        "params": masked_params(r.params),
        "path": r.path,
        "last_error": r.last_error,
        "instance_id": instance_id(instance.container_id) if instance else None,
        "health": instance.health if instance else None,
        "created_at": iso(r.created_at),
        "updated_at": iso(r.updated_at),
    }


def instance_view(i: LiveInstance, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    running = i.status == "running" and i.started_at is not None
    return {
        "id": instance_id(i.container_id),
        "definition_id": i.definition_id,
        "container_id": i.container_id[:12],
        "container_name": i.name,
        "status": i.status,
        "health": i.health,
        "revision": i.revision,
        "started_at": iso(i.started_at),
        "uptime_seconds": int((now - i.started_at).total_seconds()) if running and i.started_at else 0,
    }


def change_view(c: FieldChange) -> dict[str, Any]:
    return {"field": c.field, "before": _shown(c.before), "after": _shown(c.after)}


def reason_view(r: Reason) -> dict[str, Any]:
    return {
        "kind": r.kind.value,
        "summary": r.summary,
        "commit": r.commit,
        "changes": [change_view(c) for c in r.changes],
    }


def deployment_view(d: Deployment, *, with_logs: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": d.id,
        "definition_id": d.definition_id,
        "definition_name": d.definition_name,
        "server_id": d.server_id,
        "revision": d.revision,
        "commit": d.commit,
        "action": d.action.value,
        "status": d.status.value,
        "reason": reason_view(d.reason),
        "created_at": iso(d.created_at),
        "started_at": iso(d.started_at),
        "finished_at": iso(d.finished_at),
    }
    if with_logs:
        out["logs"] = [{"at": iso(line.at), "message": line.message} for line in d.logs]
    return out


def _shown(value: Any) -> Any:
    """A value as a person may see it: placeholders as <secret:NAME>."""
    if isinstance(value, str):
        return secrets.display(value)
    return _plain(value)


def _plain(value: Any) -> Any:
    """Tuples and mappings as JSON lists and objects."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return secrets.display(value)
    if hasattr(value, "__dataclass_fields__"):
        return {k: _plain(getattr(value, k)) for k in value.__dataclass_fields__}
    return value
