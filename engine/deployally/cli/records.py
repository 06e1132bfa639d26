"""Commands that read the catalog and the records: templates, definitions, deployments, logs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from deployally.api.views import (
    definition_view,
    deployment_view,
    engine_status_view,
    template_detail,
    template_summary,
    waiting_view,
)
from deployally.cli.common import (
    _echo_json,
    _listing,
    _table,
    _tree,
    _workspace,
    branch_option,
    json_option,
    repo_option,
    server_environments,
    workspace_options,
)
from deployally.errors import DeployAllyError
from deployally.model import desired as desired_mod
from deployally.source.tree import DirTree, Tree
from deployally.types import DeploymentStatus, EngineStatus

# ---------------------------------------------------------------- templates


@click.group()
def templates() -> None:
    """Browse the template catalog."""


@templates.command("list")
@repo_option
@branch_option
@click.option("--family", default=None)
@json_option
def templates_list(repo: str, branch: str, family: str | None, as_json: bool) -> None:
    """List built-in and repository templates."""
    catalog, _ = desired_mod.load_catalog(_tree_or_builtin(repo, branch))
    items = [t for t in catalog.all() if family in (None, t.taxonomy.family)]
    _listing(as_json, [template_summary(t) for t in items],
             [(t.taxonomy.path, t.name, t.id, "deprecated" if t.deprecated else "") for t in items],
             ["TEMPLATE", "NAME", "ID", ""])


@templates.command("show")
@click.argument("ref")
@repo_option
@branch_option
@json_option
def templates_show(ref: str, repo: str, branch: str, as_json: bool) -> None:
    """Show one template: its inputs, profiles and spec."""
    catalog, _ = desired_mod.load_catalog(_tree_or_builtin(repo, branch))
    template = catalog.resolve(ref)
    if template is None:
        raise click.ClickException(f"no template {ref!r}: see `deployally templates list`")
    detail = template_detail(template)
    if as_json:
        _echo_json(detail)
        return
    click.echo(f"{template.name} ({template.taxonomy.path}, {template.id})")
    click.echo(template.description)
    click.echo(f"spec_hash: {template.spec_hash}")
    click.echo("inputs:")
    for ui in template.user_inputs:
        req = "required" if ui.required else f"default {ui.default!r}"
        click.echo(f"  {ui.name}: {ui.type} ({req}) {ui.description}".rstrip())
    click.echo("profiles: " + ", ".join(template.spec.get("profiles", [])))
    click.echo(json.dumps(detail["spec"], indent=2))


def _tree_or_builtin(repo: str, branch: str) -> Tree:
    path = Path(repo)
    if (path / ".git").exists() or (path / "HEAD").exists():
        try:
            return _tree(repo, None, branch)
        except DeployAllyError:
            pass
    return DirTree(path)


# ---------------------------------------------------------------- definitions and deployments




@click.group()
def definitions() -> None:
    """Definitions the engine knows, with their status."""


@definitions.command("list")
@workspace_options
@json_option
def definitions_list(repo: str, state_dir: str | None, branch: str, as_json: bool) -> None:
    """List definitions with revision and status."""
    ws = _workspace(repo, state_dir, branch)
    records = ws.store.definitions()
    environments = server_environments(ws)
    _listing(as_json,
             [definition_view(r, environment=environments.get(r.server_id)) for r in records],
             [(r.name, r.current_revision, r.status.value, r.server_id, r.last_error or "")
              for r in records], ["NAME", "REV", "STATUS", "SERVER", "ERROR"])


@click.group()
def deployments() -> None:
    """The record of every deployment."""


@deployments.command("list")
@workspace_options
@click.option("--definition", default=None, help="Only this definition (name or id).")
@click.option("--limit", default=20, show_default=True)
@json_option
def deployments_list(repo: str, state_dir: str | None, branch: str, definition: str | None,
                     limit: int, as_json: bool) -> None:
    """List deployments, newest first."""
    ws = _workspace(repo, state_dir, branch)
    def_id = None
    if definition:
        record = ws.store.definition(definition)
        def_id = record.id if record else definition
    items = ws.store.deployments(definition_id=def_id, limit=limit)
    environments = server_environments(ws)
    _listing(as_json,
             [deployment_view(d, environment=environments.get(d.server_id)) for d in items],
             [(d.id, d.definition_name, d.revision or "", d.action.value, d.status.value,
               d.created_at.strftime("%Y-%m-%d %H:%M:%S"), d.reason.summary) for d in items],
             ["ID", "DEFINITION", "REV", "ACTION", "STATUS", "CREATED", "REASON"])


@deployments.command("show")
@click.argument("deployment_id")
@workspace_options
@json_option
def deployments_show(deployment_id: str, repo: str, state_dir: str | None, branch: str,
                     as_json: bool) -> None:
    """Show one deployment: its reason, field changes and log."""
    ws = _workspace(repo, state_dir, branch)
    d = ws.store.deployment(deployment_id)
    if d is None:
        raise click.ClickException(f"no deployment {deployment_id}")
    if as_json:
        environment = server_environments(ws).get(d.server_id)
        _echo_json(deployment_view(d, with_logs=True, environment=environment))
        return
    click.echo(f"{d.id}  {d.definition_name}  revision {d.revision}  {d.action.value}  {d.status.value}")
    click.echo(f"reason: {d.reason.kind.value}: {d.reason.summary}")
    for line in d.logs:
        click.echo(f"{line.at.strftime('%H:%M:%S.%f')[:-3]}  {line.message}")


# ---------------------------------------------------------------- status and logs


def _uptime(since: Any) -> str:
    from datetime import UTC, datetime

    if since is None:
        return ""
    seconds = int((datetime.now(UTC) - since).total_seconds())
    days, rest = divmod(max(seconds, 0), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    return f"{minutes}m{secs}s" if minutes else f"{secs}s"


def _waiting_note(waiting: dict[str, Any] | None) -> str:
    """`waiting: dependency db is not running and healthy (since 2026-02-13T10:00:00Z)`."""
    return f"waiting: {waiting['summary']} (since {waiting['since']})" if waiting else ""


@click.command()
@workspace_options
@json_option
def status(repo: str, state_dir: str | None, branch: str, as_json: bool) -> None:
    """Every definition with its revision, status, health and uptime."""
    from deployally.serve.engine_client import running_engine_status
    from deployally.types import LiveInstance

    ws = _workspace(repo, state_dir, branch)
    engine = running_engine_status(ws.state_dir)
    records = ws.store.definitions()
    errors: list[str] = []
    live: dict[tuple[str, str], LiveInstance] = {}  # (server name or id, definition name)
    unreachable: set[str] = set()
    for server, driver in ws.drivers.applied_here():
        try:
            for name, found in driver.live().items():
                live[(server.name, name)] = live[(server.id, name)] = found
        except DeployAllyError as exc:
            errors.append(f"server {server.name}: {exc}" if server.name != "local" else str(exc))
            unreachable |= {server.name, server.id}
    docker_error = "; ".join(errors) or None
    waiting = ws.store.waiting_by_definition()
    environments = server_environments(ws)
    rows: list[dict[str, Any]] = []
    for r in records:
        wait = waiting.get(r.id)
        inst = live.get((r.server_id, r.name))
        since = (inst.started_at or inst.created_at) if inst is not None and inst.running else None
        absent = "unknown" if r.server_id in unreachable else "absent"
        rows.append({
            "name": r.name,
            "server_id": r.server_id,
            "environment": environments.get(r.server_id),
            "revision": r.current_revision,
            "applied_revision": r.applied_revision,
            "status": r.status.value,
            "instance": inst.state.value if inst is not None else absent,
            "health": inst.health.value if inst is not None and inst.health else None,
            "uptime": _uptime(since),
            "error": r.last_error,
            "waiting_for": waiting_view(wait.waiting) if wait and wait.waiting else None,
        })
    refused = ws.store.refused_commits()
    if as_json:
        _echo_json({"engine": engine_status_view(engine) if engine is not None else None,
                    "definitions": rows, "docker_error": docker_error,
                    "refused_commits": [{"commit": c.sha, "summary": c.summary, "reason": c.reason}
                                        for c in refused]})
        return
    click.echo(_engine_line(engine))
    _table([(x["name"], x["revision"], x["status"], x["instance"], x["health"] or "",
             x["uptime"], x["error"] or _waiting_note(x["waiting_for"])) for x in rows],
           ["NAME", "REV", "STATUS", "INSTANCE", "HEALTH", "UPTIME", "NOTE"])
    if docker_error:
        click.echo(f"warning: {docker_error}", err=True)
    for commit in refused:
        click.echo(f"warning: commit {commit.sha[:12]} ({commit.summary}) is not deployed: "
                   f"{commit.reason}", err=True)


def _engine_line(engine: EngineStatus | None) -> str:
    """One line on the engine serving this state directory: how it stands and its last sync."""
    if engine is None:
        return "engine: not running (`deployally serve` runs it)"
    state = "degraded: " + "; ".join(engine.reasons) if engine.degraded else "ok"
    last = "no sync has finished yet"
    if engine.last_sync_at is not None:
        at = engine.last_sync_at.strftime("%Y-%m-%d %H:%M:%SZ")
        last = f"last completed sync {at} at {(engine.last_sync_commit or '(no commits)')[:12]}"
    result = ""
    if engine.last_sync_result is not None and engine.last_sync_seconds is not None:
        result = f" (last sync: {engine.last_sync_result.value}, {engine.last_sync_seconds:.2f} s)"
    syncing = ", syncing now" if engine.syncing else ""
    return f"engine: {state}; {engine.syncs} sync(s), {last}{result}{syncing}"


@click.command()
@click.argument("deployment")
@click.option("-f", "--follow", is_flag=True, help="Follow a deployment in progress until it ends.")
@workspace_options
def logs(deployment: str, follow: bool, repo: str, state_dir: str | None, branch: str) -> None:
    """Print a deployment's log (a deployment id, or a definition name for its latest)."""
    import time

    ws = _workspace(repo, state_dir, branch)
    found = ws.store.deployment(deployment, with_logs=False)
    if found is None:
        record = ws.store.definition(deployment)
        latest = ws.store.deployments(definition_id=record.id, limit=1) if record else []
        if not latest:
            raise click.ClickException(
                f"no deployment {deployment}: `deployally deployments list` shows them"
            )
        found = latest[0]
    seen = 0
    # A waiting deployment may wait for hours: following stops there too, saying so.
    final = (DeploymentStatus.SUCCESS, DeploymentStatus.FAILED, DeploymentStatus.ROLLED_BACK,
             DeploymentStatus.WAITING)
    while True:
        current = ws.store.deployment(found.id, with_logs=False)
        for number, line in ws.store.logs_since(found.id, seen):
            seen = number
            click.echo(f"{line.at.strftime('%H:%M:%S.%f')[:-3]}  {line.message}")
        if not follow or current is None or current.status in final:
            break
        time.sleep(0.3)
    if current is not None:
        note = f" ({current.waiting.summary})" if current.waiting else ""
        click.echo(f"-- {current.id} {current.definition_name}: {current.status.value}{note}", err=True)
