"""JSON shapes of templates, definitions, instances, deployments and the engine (the API document's fields).

The API and the CLI's `--json` share these, so a script sees the same fields
whichever it asks. Pure: values in, JSON-safe dicts out; never a secret value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from deployally import secrets
from deployally.codec import spec_to_json
from deployally.identity import instance_id
from deployally.store import ServerRecord
from deployally.types import (
    ContainerSpec,
    DefinitionRecord,
    Deployment,
    EngineStatus,
    FieldChange,
    LiveInstance,
    Reason,
    SecretRef,
    SyncResult,
    SyncSnapshot,
    Template,
    Waiting,
)

MASK = "********"
# An agent not heard from for this long is offline (it long-polls far more often).
OFFLINE_AFTER_S = 90.0


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
        is_secret = isinstance(value, SecretRef) or (isinstance(value, Mapping) and "secret" in value)
        out[key] = MASK if is_secret or (password_inputs and key in password_inputs) else value
    return out


def definition_view(
    r: DefinitionRecord,
    instance: LiveInstance | None = None,
    waiting: Deployment | None = None,
    *,
    environment: str | None = None,
) -> dict[str, Any]:
    """A definition; `waiting` is its deployment waiting to run, if one is; `environment` its
    server's (None when the server is not registered)."""
    return {
        "id": r.id,
        "name": r.name,
        "template_id": r.template_id,
        "server_id": r.server_id,
        "environment": environment,
        "profile": r.profile,
        "status": r.status.value,
        "current_revision": r.current_revision,
        "applied_revision": r.applied_revision,
        "container_name": r.name,
        "params": masked_params(r.params),
        "path": r.path,
        "last_error": r.last_error,
        "instance_id": instance_id(instance.ref) if instance else None,
        "health": instance.health.value if instance and instance.health else None,
        "waiting_for": waiting_view(waiting.waiting) if waiting and waiting.waiting else None,
        "created_at": iso(r.created_at),
        "updated_at": iso(r.updated_at),
    }


def instance_view(
    i: LiveInstance, now: datetime | None = None, *, environment: str | None = None,
    server_id: str | None = None,
) -> dict[str, Any]:
    """An instance, with uptime at `now`, the server it runs on and that server's `environment`."""
    now = now or datetime.now(UTC)
    running = i.running and i.started_at is not None
    return {
        "id": instance_id(i.ref),
        "definition_id": i.definition_id,
        "server_id": server_id,
        "environment": environment,
        "container_id": i.ref[:12],  # the API document's name for the instance's reference
        "container_name": i.name,
        "status": i.state.value,
        "health": i.health.value if i.health else None,
        "revision": i.revision,
        "node": i.node,
        "started_at": iso(i.started_at),
        "uptime_seconds": int((now - i.started_at).total_seconds()) if running and i.started_at else 0,
    }


def server_status(s: ServerRecord, now: datetime, reachable: bool | None = None) -> str:
    """`pending` until first heard from, then `online` or `offline`; `reachable` is whether a
    server this engine applies to answered its live list (None for one it does not apply)."""
    if s.last_seen_at is None and s.kind == "agent":
        return "pending"  # its agent never connected
    if reachable is not None:
        return "online" if reachable else "offline"
    if s.last_seen_at is None:
        return "pending"
    return "online" if (now - s.last_seen_at).total_seconds() <= OFFLINE_AFTER_S else "offline"


def server_view(
    s: ServerRecord,
    *,
    status: str,
    definitions: int = 0,
    running_instances: int | None = None,
) -> dict[str, Any]:
    """A server as the API shows it: never its key. `running_instances` is None where this
    engine does not see the server's containers."""
    return {
        "id": s.id,
        "name": s.name,
        "environment": s.environment,
        "description": s.description,
        "kind": s.kind,
        "status": status,
        "last_seen_at": iso(s.last_seen_at),
        "docker_host": s.docker_host if s.kind == "swarm" else None,
        "agent_version": s.agent_version,
        "docker_version": s.docker_version,
        "definitions": definitions,
        "running_instances": running_instances,
        "applied_commit": s.applied_commit,
        "created_at": iso(s.created_at),
    }


def servers_view(
    servers: Sequence[ServerRecord],
    definitions: Mapping[str, int],
    running: Mapping[str, int | None],
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Servers as the API and `server list --json` show them. `definitions`: how many name each
    server, by name or srv_ id; `running`: by srv_ id, for the servers this engine applies to,
    how many instances run there (None: it did not answer)."""
    now = now or datetime.now(UTC)
    return [
        server_view(
            s,
            status=server_status(s, now, (running[s.id] is not None) if s.id in running else None),
            definitions=definitions.get(s.name, 0) + definitions.get(s.id, 0),
            running_instances=running.get(s.id),
        )
        for s in servers
    ]


def spec_view(spec: ContainerSpec) -> dict[str, Any]:
    """A desired spec in the one codec's shape, every secret as <secret:NAME>, never its value."""
    shown: dict[str, Any] = _plain(spec_to_json(spec))
    return shown


def change_view(c: FieldChange) -> dict[str, Any]:
    return {"field": c.field, "before": _shown(c.before), "after": _shown(c.after)}


def reason_view(r: Reason) -> dict[str, Any]:
    return {
        "kind": r.kind.value,
        "summary": r.summary,
        "commit": r.commit,
        "changes": [change_view(c) for c in r.changes],
    }


def waiting_view(w: Waiting) -> dict[str, Any]:
    """What a waiting deployment waits for: `dependency` (the names) or `server`, and since when."""
    return {"kind": w.kind.value, "summary": w.summary, "on": list(w.on), "since": iso(w.since)}


def deployment_view(
    d: Deployment, *, with_logs: bool = False, environment: str | None = None
) -> dict[str, Any]:
    """A deployment, with its logs when asked, and its server's `environment`."""
    out: dict[str, Any] = {
        "id": d.id,
        "definition_id": d.definition_id,
        "definition_name": d.definition_name,
        "server_id": d.server_id,
        "environment": environment,
        "revision": d.revision,
        "commit": d.commit,
        "action": d.action.value,
        "status": d.status.value,
        "reason": reason_view(d.reason),
        "created_at": iso(d.created_at),
        "started_at": iso(d.started_at),
        "finished_at": iso(d.finished_at),
        "waiting_for": waiting_view(d.waiting) if d.waiting else None,
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


def engine_status_view(s: EngineStatus) -> dict[str, Any]:
    """The engine's check in /api/v1/health, also what `deployally status --json` shows."""
    out: dict[str, Any] = {
        "status": "degraded" if s.degraded else "ok",
        "syncs": s.syncs,
        "syncing": s.syncing,
        "failures": s.failures,
        "last_sync_at": _precise(s.last_sync_at),
        "last_sync_commit": s.last_sync_commit,
        "last_sync_result": s.last_sync_result.value if s.last_sync_result else None,
        "last_sync_seconds": round(s.last_sync_seconds, 3) if s.last_sync_seconds is not None else None,
        "watching": s.watching,
        "docker_events": s.docker_events,
        "mirror": s.mirror,
    }
    if s.sync is not None:
        out["sync"] = {
            "running_s": round(s.sync.running_s, 1),
            "doing": s.sync.doing,
            "last": s.sync.last or None,
            "changes": s.sync.changes,
            "health_timeout_s": s.sync.health_timeout_s,
            "stuck_after_s": s.sync.stuck_after_s,
        }
    if s.reasons:
        out["reason"] = "; ".join(s.reasons)
        out["reasons"] = list(s.reasons)
    return out


def engine_status_from_view(data: Mapping[str, Any]) -> EngineStatus:
    """The EngineStatus that `engine_status_view` wrote (how a client reads /api/v1/health)."""
    at = data.get("last_sync_at")
    result = data.get("last_sync_result")
    seconds = data.get("last_sync_seconds")
    return EngineStatus(
        syncs=int(data.get("syncs") or 0),
        syncing=bool(data.get("syncing")),
        failures=int(data.get("failures") or 0),
        last_sync_at=datetime.fromisoformat(at) if isinstance(at, str) else None,
        last_sync_commit=data.get("last_sync_commit"),
        last_sync_result=SyncResult(result) if result in {r.value for r in SyncResult} else None,
        last_sync_seconds=float(seconds) if isinstance(seconds, (int, float)) else None,
        watching=bool(data.get("watching")),
        docker_events=bool(data.get("docker_events")),
        mirror=data.get("mirror"),
        reasons=tuple(str(r) for r in data.get("reasons") or ()),
        sync=_sync_from_view(data.get("sync")),
    )


def _sync_from_view(data: object) -> SyncSnapshot | None:
    if not isinstance(data, Mapping):
        return None
    return SyncSnapshot(
        running_s=float(data.get("running_s") or 0),
        doing=str(data.get("doing") or ""),
        last=str(data.get("last") or ""),
        changes=int(data.get("changes") or 0),
        health_timeout_s=float(data.get("health_timeout_s") or 0),
        stuck_after_s=float(data.get("stuck_after_s") or 0),
    )


def _precise(at: datetime | None) -> str | None:
    # The engine's times keep their fraction of a second: a probe compares them with its own clock.
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z") if at is not None else None
