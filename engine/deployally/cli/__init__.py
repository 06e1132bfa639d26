"""The `deployally` command: thin click commands that parse, call the core and format."""

from __future__ import annotations

import sys
from typing import Any

import click

from deployally import __version__
from deployally.cli.credentials import secret, token
from deployally.cli.engine import demo, hook, serve
from deployally.cli.records import definitions, deployments, logs, status, templates
from deployally.cli.repository import init, install_hooks, plan, rollback, sync, validate
from deployally.cli.servers import server
from deployally.cli.webhooks import webhook
from deployally.errors import DeployAllyError

__all__ = ["install_hooks", "main"]


class _Group(click.Group):
    """Turn our own errors into one readable line and exit 2, never a traceback."""

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


for _command in (
    init, validate, plan, sync, rollback,  # the repository
    templates, definitions, deployments, status, logs,  # the catalog and the records
    secret, token, server,  # what stays out of git
    webhook,
    serve, demo, hook,  # the engine
):
    main.add_command(_command)
