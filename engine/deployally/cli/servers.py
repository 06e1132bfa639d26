"""`deployally server add|list|rm|rotate-key`: the servers in the state store, as the API keeps them."""

from __future__ import annotations

import click

from deployally.api.views import servers_view
from deployally.cli.common import _engine_workspace, _listing, json_option, workspace_options
from deployally.errors import DeployAllyError, ValidationError
from deployally.store import ENVIRONMENTS
from deployally.sync.edits import named_at_head

# What the store calls each field of a server, as `server add` spells it.
_OPTION_OF: dict[str, str] = {
    "name": "NAME", "environment": "--environment", "description": "--description",
    "kind": "--kind", "docker_host": "--docker-host",
}


@click.group()
def server() -> None:
    """Servers definitions run on: `local` (this host), agents, Swarm managers."""


@server.command("add")
@click.argument("name")
@click.option("--environment", type=click.Choice(ENVIRONMENTS), required=True,
              help="Shown on its definitions, instances and deployments.")
@click.option("--description", default="", help="A line for people.")
@click.option("--kind", type=click.Choice(["agent", "swarm"]), default="agent", show_default=True,
              help="agent: a host running `deployally agent`; swarm: a Swarm manager the engine reaches.")
@click.option("--docker-host", default=None,
              help="A swarm manager: unix:///abs/path, tcp://HOST:PORT or ssh://USER@HOST[:PORT].")
@workspace_options
def server_add(name: str, environment: str, description: str, kind: str, docker_host: str | None,
               state_dir: str | None, repo: str, branch: str) -> None:
    """Register a server; an agent's key is printed this once (only its hash is kept)."""
    ws = _engine_workspace(repo, state_dir, branch)
    try:
        record, key = ws.store.add_server(name, environment, description, kind, docker_host)
    except ValidationError as exc:
        # Said as the option the user typed, not the API's field.
        raise click.BadParameter(exc.message, param_hint=_OPTION_OF.get(exc.field, exc.field)) from None
    if key is not None:
        click.echo(key)
        click.echo(f"server {name} ({kind}, {environment}) registered as {record.id}; "
                   "its key is shown only now", err=True)
    else:
        click.echo(f"server {name} ({kind}, {environment}) registered as {record.id}; "
                   f"the engine reaches it at {docker_host}")


@server.command("list")
@workspace_options
@json_option
def server_list(state_dir: str | None, repo: str, branch: str, as_json: bool) -> None:
    """Servers with kind, status, definitions and running instances (never a key)."""
    ws = _engine_workspace(repo, state_dir, branch)
    running: dict[str, int | None] = {}
    for found, driver in ws.drivers.applied_here():
        if found.kind == "agent":
            continue  # its agent polls the serving engine: its last_seen_at in the store says
        try:
            # A swarm service's instances are its tasks.
            running[found.id] = sum(t.running for i in driver.live().values() for t in i.tasks or (i,))
        except DeployAllyError:
            running[found.id] = None
    shown = servers_view(ws.store.servers(), ws.store.definitions_per_server(), running)
    _listing(
        as_json, shown,
        [(s["name"], s["kind"], s["environment"], s["status"], s["definitions"],
          "-" if s["running_instances"] is None else s["running_instances"],
          s["last_seen_at"] or "-", s["docker_host"] or "", s["id"]) for s in shown],
        ["NAME", "KIND", "ENVIRONMENT", "STATUS", "DEFINITIONS", "RUNNING", "LAST SEEN",
         "DOCKER HOST", "ID"],
    )


@server.command("rm")
@click.argument("name_or_id")
@workspace_options
def server_rm(name_or_id: str, state_dir: str | None, repo: str, branch: str) -> None:
    """Remove a server and its key; refused for `local` and for one that definitions name."""
    ws = _engine_workspace(repo, state_dir, branch)
    found = ws.store.server(name_or_id)
    record = ws.store.remove_server(name_or_id, named_at_head(ws.repo, found) if found else [])
    click.echo(f"server {record.name} removed")


@server.command("rotate-key")
@click.argument("name_or_id")
@workspace_options
def server_rotate_key(name_or_id: str, state_dir: str | None, repo: str, branch: str) -> None:
    """Print a new agent key this once; the old one is refused from now on."""
    ws = _engine_workspace(repo, state_dir, branch)
    record, key = ws.store.rotate_server_key(name_or_id)
    click.echo(key)
    click.echo(f"server {record.name} has a new key, shown only now; its agent needs it: "
               "the old one is refused from now on", err=True)
