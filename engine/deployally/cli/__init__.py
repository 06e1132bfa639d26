"""The `deployally` command: thin click commands that parse, call the core and format.

Each command's module is imported when that command runs, not before: `deployally --help`
imports none of them, and `validate` in a CI job or a push hook only what it needs.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from deployally import __version__
from deployally.errors import DeployAllyError

__all__ = ["COMMANDS", "main"]

# Every command, in the order `--help` lists them: its module under deployally.cli, and the
# one line `--help` shows (tests/test_cli_startup.py checks it is the command's own).
COMMANDS: dict[str, tuple[str, str]] = {
    # the repository
    "init": ("repository", "Make a new definitions repository with its settings file and git..."),
    "validate": ("validate", "Check every definition; exit 1 with every error, each naming its..."),
    "plan": ("repository", "Show what applying would create, update or remove, field by field."),
    "sync": ("repository", "Apply the head of the tracked branch to Docker, once."),
    "rollback": ("repository", "Commit a past revision of a definition back (rollback is a commit)."),
    # the catalog and the records
    "templates": ("records", "Browse the template catalog."),
    "definitions": ("records", "Definitions the engine knows, with their status."),
    "deployments": ("records", "The record of every deployment."),
    "status": ("records", "Every definition with its revision, status, health and uptime."),
    "logs": ("records", "Print a deployment's log (a deployment id, or a definition name for..."),
    # what stays out of git
    "secret": ("credentials", "Secrets live in the state store, never in git."),
    "token": ("credentials", "API tokens (`Authorization: Bearer da_...`): read, write or admin."),
    "server": ("servers", "Servers definitions run on: `local` (this host), agents, Swarm..."),
    "webhook": ("webhooks", "Webhooks: signed POSTs of deployment, instance and definition events."),
    # the engine
    "serve": ("engine", "Run the engine and the API until SIGTERM/SIGINT: push to git, and..."),
    "demo": ("engine", "A bare repo to push to, a working clone of example-repo/, deployed,..."),
    "hook": ("engine", "What the installed git hooks call."),
    # a registered server's host
    "agent": ("agent", "Deploy a registered server's definitions on this host, polling out..."),
}


class _Group(click.Group):
    """Loads a command's module on first use, and turns our own errors into one readable
    line and exit 2, never a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module = importlib.import_module(f"deployally.cli.{entry[0]}")
        command = getattr(module, cmd_name)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # The listing from the table, so `--help` imports no command's module.
        with formatter.section("Commands"):
            formatter.write_dl([(name, help_line) for name, (_, help_line) in COMMANDS.items()])

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DeployAllyError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="deployally")
def main() -> None:
    """DeployAlly: deploy Docker containers from definitions kept in git."""
