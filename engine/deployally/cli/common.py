"""What every `deployally` command shares: the workspace options, JSON and table output."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from deployally.errors import ValidationError
from deployally.source.git import GitRepo
from deployally.source.tree import CommitTree, DirTree, Tree
from deployally.state_dir import engine_state_dir, has_store

if TYPE_CHECKING:
    from deployally.workspace import Workspace

repo_option = click.option(
    "--repo", default=".", show_default=True, type=click.Path(file_okay=False),
    help="The git repository of definitions (working or bare).",
)
state_option = click.option(
    "--state-dir", default=None, type=click.Path(file_okay=False),
    help="Where the state store lives [default: .deployally/ in the repository].",
)
branch_option = click.option("--branch", default="main", show_default=True, help="Tracked branch.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def workspace_options(command: Any) -> Any:
    """--repo, --state-dir and --branch: where a command finds the repository and its state."""
    for option in (branch_option, state_option, repo_option):
        command = option(command)
    return command


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False, default=str))


def _table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    cells = [list(map(str, headers))] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def _listing(as_json: bool, json_rows: Any, rows: Sequence[Sequence[Any]],
             headers: Sequence[str]) -> None:
    """A list command's output: JSON for scripts, or a table for people."""
    if as_json:
        _echo_json(json_rows)
    else:
        _table(rows, headers)


def read_secret_value(source: Any, what: str) -> str:
    """A secret from an opened --file, else standard input, else a hidden prompt on a terminal.

    Never an argument (it would land in shell history and `ps`). One trailing newline from
    `echo` or an editor is not part of the value.
    """
    stream = source or sys.stdin  # click's own stream helpers are deprecated from 8.5
    if stream.isatty():
        value = str(click.prompt(what, hide_input=True, confirmation_prompt=True))
    else:
        value = stream.read()
    value = value.rstrip("\r\n")
    if not value:
        raise click.ClickException(f"the {what} is empty")
    return value


def _workspace(repo: str, state_dir: str | None, branch: str, **kw: Any) -> Workspace:
    from deployally.workspace import Workspace  # the engine's wiring: not for validate

    return _closed_with_command(Workspace.open(repo, state_dir, branch, **kw))


def _closed_with_command(ws: Workspace) -> Workspace:
    """`ws`, closed when the running command ends (its store, its Docker clients): a command
    run in a longer-lived process, as `CliRunner` does, must not leave them open."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(ws.close)
    return ws


def server_environments(ws: Workspace) -> dict[str, str]:
    """Each server's environment, by its name and by its srv_ id (definitions name it either way)."""
    return {key: s.environment for s in ws.store.servers() for key in (s.name, s.id)}


def engine_state(repo: str, state_dir: str | None, branch: str) -> Path:
    """The engine's state directory a command reads: --state-dir, else the repository's
    (its `deployally.stateDir`, which `serve` sets, else `.deployally/` in it)."""
    return Path(state_dir) if state_dir else engine_state_dir(GitRepo(Path(repo), branch))


def _engine_workspace(repo: str, state_dir: str | None, branch: str) -> Workspace:
    """A workspace on the engine's existing state store; an error naming --state-dir when
    there is none here, rather than a new, empty store nothing else reads."""
    state = engine_state(repo, state_dir, branch)
    if not has_store(state):
        raise click.ClickException(
            f"no state store here ({state}): give --state-dir, the directory the engine keeps"
            " its state in (`deployally serve --state-dir`)"
        )
    from deployally.workspace import Workspace

    return _closed_with_command(Workspace.open(repo, state, branch))


def _tree(repo: str, rev: str | None, branch: str) -> Tree:
    """A commit when --rev is given or the repo is bare; otherwise the working directory."""
    path = Path(repo)
    git_repo = GitRepo(path, branch)
    if rev is None and not git_repo.bare:
        return DirTree(path)
    commit = git_repo.resolve(rev or f"refs/heads/{branch}")
    return CommitTree(git_repo, commit)


def _print_errors(errors: Iterable[ValidationError]) -> None:
    for err in errors:
        click.echo(f"error: {err}", err=True)
