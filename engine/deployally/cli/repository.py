"""Commands on the definitions repository: init, plan, sync and rollback (validate: validate.py)."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import click

from deployally.api.views import deployment_view
from deployally.cli.common import (
    _echo_json,
    _print_errors,
    _tree,
    _workspace,
    branch_option,
    engine_state,
    json_option,
    server_environments,
    workspace_options,
)
from deployally.data import HOOKS
from deployally.model import desired as desired_mod
from deployally.model.engine_config import EngineConfig, load_engine_config
from deployally.plan.actions import live_from_specs
from deployally.plan.actions import plan as make_plan
from deployally.plan.report import plan_json, plan_markdown, plan_text
from deployally.source.git import GitRepo
from deployally.sync import edits
from deployally.sync.preview import preview
from deployally.types import SecretVersions
from deployally.workspace import STATE_DIR_NAME

# ---------------------------------------------------------------- init


@click.command()
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--bare", is_flag=True, help="Make a bare repository to push to (git push to deploy).")
@branch_option
def init(path: str, bare: bool, branch: str) -> None:
    """Make a new definitions repository with its settings file and git hooks."""
    target = Path(path)
    if target.exists() and any(target.iterdir()):
        raise click.ClickException(f"{target} exists and is not empty")
    repo = GitRepo.init(target, bare=bare, branch=branch)
    files = {
        "deployally.yaml": f"# DeployAlly settings: see the README\nbranch: {branch}\nreconcile_interval: 30\n",
        "definitions/.gitkeep": "",
        ".gitignore": f"{STATE_DIR_NAME}/\n",
    }
    repo.write(files, message="Start a DeployAlly repository", author_name="deployally",
               author_email="deployally@localhost", expected_head=None)
    repo.set_config("deployally.branch", branch)
    installed = install_hooks(repo)
    click.echo(f"Initialized {'bare ' if bare else ''}DeployAlly repository in {target.resolve()}")
    click.echo(f"Hooks installed: {', '.join(installed)}")


def install_hooks(repo: GitRepo) -> list[str]:
    """Install the shipped git hooks into the repository, pointing them at this Python's deployally."""
    hooks_dir = repo.git_dir / "hooks"
    hooks_dir.mkdir(parents=True, exist_ok=True)
    names = ["pre-receive", "post-receive"] if repo.bare else ["pre-commit"]
    command = f'"{sys.executable}" -m deployally'
    for name in names:
        source = HOOKS / name
        dest = hooks_dir / name
        dest.write_text(source.read_text(encoding="utf-8").replace("@DEPLOYALLY@", command))
        dest.chmod(dest.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return names


# ---------------------------------------------------------------- plan (validate: cli/validate.py)


def _engine_config(repo: str, state_dir: str | None, branch: str) -> EngineConfig:
    """The engine configuration validate and plan check against (see `validate`)."""
    return load_engine_config(engine_state(repo, state_dir, branch))


@click.command()
@workspace_options
@click.option("--base", default=None, help="Compare against this revision instead of live state.")
@click.option("--head", default=None, help="The revision to plan [default: working directory, or the branch head when bare].")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json"]), default="text")
def plan(repo: str, state_dir: str | None, branch: str, base: str | None, head: str | None, fmt: str) -> None:
    """Show what applying would create, update or remove, field by field."""
    engine = _engine_config(repo, state_dir, branch)
    if base is not None:
        head_state = desired_mod.load(_tree(repo, head, branch), secret_versions=SecretVersions.unchecked(), engine=engine)
        base_state = desired_mod.load(_tree(repo, base, branch), secret_versions=SecretVersions.unchecked(), engine=engine)
        base_specs = base_state.specs()
        # Definitions that fail on head keep their base spec: a merge would not touch them.
        desired = {**{n: base_specs[n] for n in head_state.invalid_names.values() if n in base_specs},
                   **head_state.specs()}
        the_plan = make_plan(desired, live_from_specs(base_specs), base_specs)
        errors = head_state.all_errors()
    else:
        # Against live state: exactly the steps a sync of this tree would take, recording nothing.
        ws = _workspace(repo, state_dir, branch)
        the_plan, state = preview(ws.repo, ws.store, _tree(repo, head, branch), ws.drivers, engine)
        errors = state.all_errors()
    if fmt == "json":
        out = plan_json(the_plan)
        out["errors"] = [e.as_dict() for e in errors]
        _echo_json(out)
    else:
        click.echo(plan_markdown(the_plan) if fmt == "markdown" else plan_text(the_plan))
        _print_errors(errors)
    sys.exit(1 if errors else 0)


# ---------------------------------------------------------------- sync


@click.command()
@workspace_options
@click.option("--parallel", default=None, type=click.IntRange(min=1),
              help="Concurrent Docker creates/starts [default: deployally.yaml's max_parallel, else 8].")
@json_option
def sync(repo: str, state_dir: str | None, branch: str, parallel: int | None, as_json: bool) -> None:
    """Apply the head of the tracked branch to Docker, once."""
    progress = None if as_json else (lambda line: click.echo(line))
    ws = _workspace(repo, state_dir, branch, max_parallel=parallel, progress=progress)
    report = ws.engine.sync()
    if as_json:
        environments = server_environments(ws)
        _echo_json({
            "commit": report.commit,
            "ok": report.ok,
            "deployments": [deployment_view(d, environment=environments.get(d.server_id))
                            for d in report.deployments],
            "errors": [e.as_dict() for e in report.errors],
            "unchanged": report.unchanged,
            "unreachable": report.unreachable,
        })
    else:
        _print_errors(report.errors)
        for server, cause in report.unreachable.items():
            click.echo(f"error: server {server} is unreachable: {cause}", err=True)
        commit = report.commit[:12] if report.commit else "(no commits)"
        click.echo(f"Synced {commit}: {report.summary()}")
    sys.exit(0 if report.ok else 1)


@click.command()
@click.argument("name")
@click.option("--to", "to", type=int, required=True, help="The revision number to go back to.")
@workspace_options
def rollback(name: str, to: int, repo: str, state_dir: str | None, branch: str) -> None:
    """Commit a past revision of a definition back (rollback is a commit)."""
    ws = _workspace(repo, state_dir, branch)
    sha = edits.rollback(ws.repo, ws.store, name, to, author="deployally cli")
    click.echo(f"{name}: committed revision {to} back as {sha[:12]}; run `deployally sync` or push to apply")
