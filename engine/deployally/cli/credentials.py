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
from deployally.store import Store
from deployally.store.secret_key import KEY_ENV, new_key

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
    """Set a secret's next version; the value comes from stdin or a file, never an argument.

    NAME: 1-63 of a-z 0-9 _ . - starting with a letter or digit, as a definition name.
    """
    check_name(name)  # before a prompt asks for a value that could not be kept
    value = read_secret_value(from_file, f"value of secret {name}")
    ws = _workspace(repo, state_dir, branch)
    version = ws.store.set_secret(name, value)
    click.echo(f"secret {name} set (version {version})")
    _tell_about_a_new_key(ws.store)


@secret.command("list")
@workspace_options
@json_option
def secret_list(state_dir: str | None, repo: str, branch: str, as_json: bool) -> None:
    """List secret names, current and kept versions (never values)."""
    ws = _workspace(repo, state_dir, branch)
    items = ws.store.list_secrets()
    _listing(
        as_json,
        [{"name": i.name, "version": i.version, "versions": list(i.versions),
          "updated_at": str(i.updated_at)} for i in items],
        [(i.name, i.version, ",".join(map(str, i.versions)), i.updated_at) for i in items],
        ["NAME", "VERSION", "KEPT", "UPDATED"],
    )


@secret.command("rm")
@click.argument("name")
@workspace_options
def secret_rm(name: str, state_dir: str | None, repo: str, branch: str) -> None:
    """Delete a secret: every version of its value."""
    ws = _workspace(repo, state_dir, branch)
    ws.store.delete_secret(name)
    click.echo(f"secret {name} removed")


@secret.command("key")
@click.option("--new", "print_new", is_flag=True,
              help=f"Print a fresh key (for {KEY_ENV}) and change nothing.")
@workspace_options
def secret_key(print_new: bool, state_dir: str | None, repo: str, branch: str) -> None:
    """Where the key that encrypts the secrets is, and that it opens them."""
    if print_new:
        click.echo(new_key())
        return
    ws = _workspace(repo, state_dir, branch)
    status = ws.store.unlock_secrets(create=False)
    if not status.key_ids:
        click.echo(f"no key yet: the first `secret set` makes {status.source}")
        return
    click.echo(f"key: {status.source}")
    click.echo(f"ids: {', '.join(status.key_ids)} (the first encrypts)")
    click.echo(f"it opens all {status.values} stored values")


@secret.command("rotate-key")
@click.option("--drop-old", is_flag=True,
              help="Encrypt everything under the first key and remove the others from the file.")
@workspace_options
def secret_rotate_key(drop_old: bool, state_dir: str | None, repo: str, branch: str) -> None:
    """Encrypt every stored value under a new key, which goes first in the key file."""
    ws = _workspace(repo, state_dir, branch)
    status = ws.store.rotate_secret_key(drop_old=drop_old)
    click.echo(f"{status.values} values encrypted with key {status.key_ids[0]} ({status.source})")
    if len(status.key_ids) > 1:
        click.echo(
            f"the older keys stay in {status.source} ({', '.join(status.key_ids[1:])}) for "
            "values being read meanwhile; `deployally secret rotate-key --drop-old` removes them"
        )
    click.echo("back the key up again, apart from the state directory", err=True)


def _tell_about_a_new_key(store: Store) -> None:
    if store.new_key_file is not None:
        click.echo(
            f"made the secret key {store.new_key_file} (mode 0600): back it up, apart from "
            "the state directory; without it the secrets cannot be read",
            err=True,
        )


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
