"""Commands on what the state store keeps out of git: secrets and API tokens."""

from __future__ import annotations

from typing import Any

import click

from deployally.cli.common import (
    _listing,
    _workspace,
    json_option,
    read_secret_value,
    workspace_options,
)
from deployally.secrets import check_name

# ---------------------------------------------------------------- secrets


@click.group()
def secret() -> None:
    """Secrets live in the state store, never in git."""


@secret.command("set")
@click.argument("name")
@click.option("--file", "from_file", type=click.File("r"), default=None,
              help="Read the value from this file [default: standard input].")
@workspace_options
def secret_set(name: str, from_file: Any, state_dir: str | None, repo: str, branch: str) -> None:
    """Set a secret; the value comes from stdin or a file, never an argument.

    NAME: 1-63 of a-z 0-9 _ . - starting with a letter or digit, as a definition name.
    """
    check_name(name)  # before a prompt asks for a value that could not be kept
    value = read_secret_value(from_file, f"value of secret {name}")
    ws = _workspace(repo, state_dir, branch)
    version = ws.store.set_secret(name, value)
    click.echo(f"secret {name} set (version {version})")


@secret.command("list")
@workspace_options
@json_option
def secret_list(state_dir: str | None, repo: str, branch: str, as_json: bool) -> None:
    """List secret names and versions (never values)."""
    ws = _workspace(repo, state_dir, branch)
    items = ws.store.list_secrets()
    _listing(as_json, [{"name": n, "version": v, "updated_at": str(u)} for n, v, u in items],
             items, ["NAME", "VERSION", "UPDATED"])


@secret.command("rm")
@click.argument("name")
@workspace_options
def secret_rm(name: str, state_dir: str | None, repo: str, branch: str) -> None:
    """Delete a secret."""
    ws = _workspace(repo, state_dir, branch)
    ws.store.delete_secret(name)
    click.echo(f"secret {name} removed")


# ---------------------------------------------------------------- API tokens


@click.group()
def token() -> None:
    """API tokens (`Authorization: Bearer da_...`): read, write or admin."""


@token.command("create")
@click.argument("name")
@click.option("--scope", type=click.Choice(["read", "write", "admin"]), default="read",
              show_default=True, help="read sees all but secrets; write changes; admin all.")
@workspace_options
def token_create(name: str, scope: str, state_dir: str | None, repo: str, branch: str) -> None:
    """Make a token and print it this once; only its hash is kept."""
    ws = _workspace(repo, state_dir, branch)
    click.echo(ws.store.create_token(name, scope))
    click.echo(f"token {name} ({scope}) created; it is shown only now", err=True)


@token.command("list")
@workspace_options
@json_option
def token_list(state_dir: str | None, repo: str, branch: str, as_json: bool) -> None:
    """List tokens by name and scope (never the tokens)."""
    ws = _workspace(repo, state_dir, branch)
    items = ws.store.list_tokens()
    _listing(as_json,
             [{"id": t.id, "name": t.name, "scope": t.scope, "created_at": str(t.created_at)}
              for t in items],
             [(t.name, t.scope, t.id, t.created_at) for t in items],
             ["NAME", "SCOPE", "ID", "CREATED"])


@token.command("revoke")
@click.argument("name")
@workspace_options
def token_revoke(name: str, state_dir: str | None, repo: str, branch: str) -> None:
    """Revoke a token by name or id; it stops working at once."""
    ws = _workspace(repo, state_dir, branch)
    ws.store.revoke_token(name)
    click.echo(f"token {name} revoked")
