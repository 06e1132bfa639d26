"""The `deployally` command: thin click commands that parse, call the core and format."""

from __future__ import annotations

import json
import stat
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import click

from . import __version__, edits
from . import desired as desired_mod
from .errors import DeployAllyError, ValidationError
from .plan import live_from_specs
from .plan import plan as make_plan
from .report import plan_json, plan_markdown, plan_text
from .source.git import GitRepo
from .source.tree import CommitTree, DirTree, Tree
from .types import DeploymentStatus
from .views import definition_view, deployment_view, template_detail, template_summary
from .workspace import STATE_DIR_NAME, Workspace

HOOKS_DIR = Path(__file__).resolve().parents[2] / "hooks"

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


def _workspace(repo: str, state_dir: str | None, branch: str, **kw: Any) -> Workspace:
    return Workspace.open(repo, state_dir, branch, **kw)


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


# ---------------------------------------------------------------- init


@main.command()
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
    """Copy hooks/ into the repository, pointing them at this Python's deployally."""
    hooks_dir = repo.git_dir / "hooks"
    hooks_dir.mkdir(parents=True, exist_ok=True)
    names = ["pre-receive", "post-receive"] if repo.bare else ["pre-commit"]
    command = f'"{sys.executable}" -m deployally'
    for name in names:
        source = HOOKS_DIR / name
        dest = hooks_dir / name
        dest.write_text(source.read_text().replace("@DEPLOYALLY@", command))
        dest.chmod(dest.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return names


# ---------------------------------------------------------------- validate and plan


@main.command()
@repo_option
@branch_option
@click.option("--rev", default=None, help="Validate this commit instead of the working directory.")
@json_option
def validate(repo: str, branch: str, rev: str | None, as_json: bool) -> None:
    """Check every definition; exit 1 with every error, each naming its file and field."""
    tree = _tree(repo, rev, branch)
    state = desired_mod.load(tree, secret_versions=desired_mod.AnySecretVersion())
    errors = state.all_errors()
    if as_json:
        _echo_json({"valid": not errors, "definitions": len(state.ok),
                    "errors": [e.as_dict() for e in errors]})
    elif errors:
        _print_errors(errors)
        click.echo(f"{len(errors)} error(s) in {tree.label}", err=True)
    else:
        click.echo(f"{len(state.ok)} definition(s) valid in {tree.label}")
    sys.exit(1 if errors else 0)


@main.command()
@workspace_options
@click.option("--base", default=None, help="Compare against this revision instead of live state.")
@click.option("--head", default=None, help="The revision to plan [default: working directory, or the branch head when bare].")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json"]), default="text")
def plan(repo: str, state_dir: str | None, branch: str, base: str | None, head: str | None, fmt: str) -> None:
    """Show what applying would create, update or remove, field by field."""
    head_state = desired_mod.load(_tree(repo, head, branch), secret_versions=desired_mod.AnySecretVersion())
    if base is not None:
        base_state = desired_mod.load(_tree(repo, base, branch), secret_versions=desired_mod.AnySecretVersion())
        base_specs = base_state.specs()
        # Definitions that fail on head keep their base spec: a merge would not touch them.
        desired = {**{n: base_specs[n] for n in head_state.invalid_names.values() if n in base_specs},
                   **head_state.specs()}
        the_plan = make_plan(desired, live_from_specs(base_specs), base_specs)
    else:
        ws = _workspace(repo, state_dir, branch)
        records = {r.name: r for r in ws.store.definitions()}
        driver = ws.driver_for("local")
        assert driver is not None
        applied = {n: r.desired for n, r in records.items() if r.desired is not None}
        desired = {**{n: applied[n] for n in head_state.invalid_names.values() if n in applied},
                   **head_state.specs()}
        held = {n for n, r in records.items() if r.operator_stopped}
        the_plan = make_plan(desired, driver.live(), applied, held=held)
    errors = head_state.all_errors()
    if fmt == "json":
        out = plan_json(the_plan)
        out["errors"] = [e.as_dict() for e in errors]
        _echo_json(out)
    else:
        click.echo(plan_markdown(the_plan) if fmt == "markdown" else plan_text(the_plan))
        _print_errors(errors)
    sys.exit(1 if errors else 0)


# ---------------------------------------------------------------- sync


@main.command()
@workspace_options
@click.option("--parallel", default=4, show_default=True, help="Definitions applied at once.")
@json_option
def sync(repo: str, state_dir: str | None, branch: str, parallel: int, as_json: bool) -> None:
    """Apply the head of the tracked branch to Docker, once."""
    progress = None if as_json else (lambda line: click.echo(line))
    ws = _workspace(repo, state_dir, branch, max_parallel=parallel, progress=progress)
    report = ws.engine.sync()
    if as_json:
        _echo_json({
            "commit": report.commit,
            "ok": report.ok,
            "deployments": [deployment_view(d) for d in report.deployments],
            "errors": [e.as_dict() for e in report.errors],
            "unchanged": report.unchanged,
        })
    else:
        _print_errors(report.errors)
        failed = sum(1 for d in report.deployments if d.status is not DeploymentStatus.SUCCESS)
        commit = report.commit[:12] if report.commit else "(no commits)"
        click.echo(
            f"Synced {commit}: {len(report.deployments) - failed} deployed, {failed} failed, "
            f"{report.unchanged} unchanged, {len(report.errors)} invalid"
        )
    sys.exit(0 if report.ok else 1)


@main.command()
@click.argument("name")
@click.option("--to", "to", type=int, required=True, help="The revision number to go back to.")
@workspace_options
def rollback(name: str, to: int, repo: str, state_dir: str | None, branch: str) -> None:
    """Commit a past revision of a definition back (rollback is a commit)."""
    ws = _workspace(repo, state_dir, branch)
    sha = edits.rollback(ws.repo, ws.store, name, to, author="deployally cli")
    click.echo(f"{name}: committed revision {to} back as {sha[:12]}; run `deployally sync` or push to apply")


# ---------------------------------------------------------------- templates


@main.group()
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
    if as_json:
        _echo_json([template_summary(t) for t in items])
        return
    _table([(t.taxonomy.path, t.name, t.id, "deprecated" if t.deprecated else "") for t in items],
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


@main.group()
def definitions() -> None:
    """Definitions the engine knows, with their status."""


@definitions.command("list")
@workspace_options
@json_option
def definitions_list(repo: str, state_dir: str | None, branch: str, as_json: bool) -> None:
    """List definitions with revision and status."""
    ws = _workspace(repo, state_dir, branch)
    records = ws.store.definitions()
    if as_json:
        _echo_json([definition_view(r) for r in records])
        return
    _table([(r.name, r.current_revision, r.status.value, r.server_id, r.last_error or "")
            for r in records], ["NAME", "REV", "STATUS", "SERVER", "ERROR"])


@main.group()
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
    if as_json:
        _echo_json([deployment_view(d) for d in items])
        return
    _table([(d.id, d.definition_name, d.revision or "", d.action.value, d.status.value,
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
        _echo_json(deployment_view(d, with_logs=True))
        return
    click.echo(f"{d.id}  {d.definition_name}  revision {d.revision}  {d.action.value}  {d.status.value}")
    click.echo(f"reason: {d.reason.kind.value}: {d.reason.summary}")
    for line in d.logs:
        click.echo(f"{line.at.strftime('%H:%M:%S.%f')[:-3]}  {line.message}")


# ---------------------------------------------------------------- secrets


@main.group()
def secret() -> None:
    """Secrets live in the state store, never in git."""


@secret.command("set")
@click.argument("name")
@click.option("--file", "from_file", type=click.File("r"), default=None,
              help="Read the value from this file [default: standard input].")
@workspace_options
def secret_set(name: str, from_file: Any, state_dir: str | None, repo: str, branch: str) -> None:
    """Set a secret; the value comes from stdin or a file, never an argument."""
    source = from_file or click.get_text_stream("stdin")
    if source.isatty():
        value = click.prompt(f"value for {name}", hide_input=True, confirmation_prompt=True)
    else:
        value = source.read()
    value = value.rstrip("\r\n")  # a trailing newline from `echo` or an editor is not part of it
    if not value:
        raise click.ClickException("the secret value is empty")
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
    if as_json:
        _echo_json([{"name": n, "version": v, "updated_at": str(u)} for n, v, u in items])
        return
    _table(items, ["NAME", "VERSION", "UPDATED"])


@secret.command("rm")
@click.argument("name")
@workspace_options
def secret_rm(name: str, state_dir: str | None, repo: str, branch: str) -> None:
    """Delete a secret."""
    ws = _workspace(repo, state_dir, branch)
    ws.store.delete_secret(name)
    click.echo(f"secret {name} removed")


# ---------------------------------------------------------------- API tokens


@main.group()
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
    if as_json:
        _echo_json([{"id": t.id, "name": t.name, "scope": t.scope,
                     "created_at": str(t.created_at)} for t in items])
        return
    _table([(t.name, t.scope, t.id, t.created_at) for t in items],
           ["NAME", "SCOPE", "ID", "CREATED"])


@token.command("revoke")
@click.argument("name")
@workspace_options
def token_revoke(name: str, state_dir: str | None, repo: str, branch: str) -> None:
    """Revoke a token by name or id; it stops working at once."""
    ws = _workspace(repo, state_dir, branch)
    ws.store.revoke_token(name)
    click.echo(f"token {name} revoked")


# ---------------------------------------------------------------- webhooks


@main.group()
def webhook() -> None:
    """Webhooks: signed POSTs of deployment, instance and definition events."""


@webhook.command("add")
@click.argument("url")
@click.option("--event", "events", multiple=True, required=True,
              help="An event to send (repeat for more), e.g. deployment.failed.")
@click.option("--secret-file", type=click.File("r"), default=None,
              help="Read the signing secret from this file [default: prompt or stdin].")
@workspace_options
def webhook_add(url: str, events: tuple[str, ...], secret_file: Any, state_dir: str | None,
                repo: str, branch: str) -> None:
    """Subscribe URL to events; payloads are signed with the secret (never an argument)."""
    from .notify import EVENTS, check_url

    if problem := check_url(url):
        raise click.BadParameter(problem, param_hint="URL")
    unknown = [e for e in events if e not in EVENTS]
    if unknown:
        raise click.BadParameter(
            f"{', '.join(unknown)}: not events; use {', '.join(sorted(EVENTS))}",
            param_hint="--event",
        )
    source = secret_file or click.get_text_stream("stdin")
    if source.isatty():
        value = click.prompt("webhook secret", hide_input=True, confirmation_prompt=True)
    else:
        value = source.read()
    value = value.rstrip("\r\n")
    if not value:
        raise click.ClickException("the webhook secret is empty")
    ws = _workspace(repo, state_dir, branch)
    record = ws.store.add_webhook(url, events, value)
    click.echo(record.id)


@webhook.command("list")
@workspace_options
@json_option
def webhook_list(state_dir: str | None, repo: str, branch: str, as_json: bool) -> None:
    """List webhooks (never their secrets)."""
    ws = _workspace(repo, state_dir, branch)
    items = ws.store.webhooks()
    if as_json:
        _echo_json([{"id": w.id, "url": w.url, "events": list(w.events),
                     "created_at": str(w.created_at)} for w in items])
        return
    _table([(w.id, w.url, ",".join(w.events)) for w in items], ["ID", "URL", "EVENTS"])


@webhook.command("rm")
@click.argument("webhook_id")
@workspace_options
def webhook_rm(webhook_id: str, state_dir: str | None, repo: str, branch: str) -> None:
    """Remove a webhook and its pending deliveries."""
    ws = _workspace(repo, state_dir, branch)
    ws.store.delete_webhook(webhook_id)
    click.echo(f"webhook {webhook_id} removed")


@webhook.command("verify")
@click.option("--signature", required=True,
              help="The X-DeployAlly-Signature header as received: sha256=<hex>.")
@click.option("--secret", envvar="DEPLOYALLY_WEBHOOK_SECRET", default=None,
              help="The webhook's secret [env: DEPLOYALLY_WEBHOOK_SECRET].")
@click.option("--secret-file", type=click.File("r"), default=None,
              help="Read the webhook's secret from this file instead.")
def webhook_verify(signature: str, secret: str | None, secret_file: Any) -> None:
    """Read a webhook body on stdin: print "valid" (exit 0) if SIGNATURE signs it, else "invalid" (exit 1)."""
    from .notify import verify

    if secret_file is not None:
        secret = secret_file.read().rstrip("\r\n")
    if not secret:
        raise click.UsageError(
            "give the webhook's secret: --secret-file PATH, env DEPLOYALLY_WEBHOOK_SECRET, or --secret"
        )
    # The exact bytes: one changed byte (even a trailing newline) is a different body.
    body = click.get_binary_stream("stdin").read()
    ok = verify(secret, body, signature)
    click.echo("valid" if ok else "invalid")
    sys.exit(0 if ok else 1)


# ---------------------------------------------------------------- serve, demo, status, logs, hooks


@main.command()
@click.option("--repo", default=".", show_default=True,
              help="A local working or bare repository, or a remote URL to mirror and fetch.")
@state_option
@branch_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the API listens on.")
@click.option("--port", default=8080, show_default=True, type=int, help="API port (0: any free port).")
@click.option("--reconcile-interval", default=30.0, show_default=True, type=float,
              help="Seconds between drift checks (and fetches of a remote).")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Log lines on stderr: text, or one JSON object a line.")
@click.option("--push-secret", "webhook_secret", envvar="DEPLOYALLY_PUSH_SECRET", default=None,
              help="Secret for GitHub/GitLab push webhooks [env: DEPLOYALLY_PUSH_SECRET].")
@click.option("--parallel", default=4, show_default=True, help="Definitions applied at once.")
def serve(repo: str, state_dir: str | None, branch: str, host: str, port: int,
          reconcile_interval: float, log_format: str, webhook_secret: str | None,
          parallel: int) -> None:
    """Run the engine and the API until SIGTERM/SIGINT: push to git, and the change goes live."""
    from . import logs
    from .server import ServeConfig
    from .server import serve as run_server

    logs.configure(log_format)
    config = ServeConfig(
        repo=repo, state_dir=Path(state_dir) if state_dir else None, branch=branch, host=host,
        port=port, reconcile_interval_s=reconcile_interval, webhook_secret=webhook_secret or None,
        max_parallel=parallel,
    )
    sys.exit(run_server(config))


@main.command()
@click.argument("directory", default="./deployally-demo", type=click.Path(file_okay=False))
@click.option("--port", default=8080, show_default=True, type=int, help="API port.")
@click.option("--no-serve", is_flag=True, help="Set up and deploy once, then exit.")
@click.pass_context
def demo(ctx: click.Context, directory: str, port: int, no_serve: bool) -> None:
    """A bare repo to push to, a working clone of example-repo/, deployed, then `serve` on it."""
    from . import demo as demo_mod

    layout = demo_mod.DemoLayout(Path(directory).resolve())
    image = demo_mod.check_docker()
    click.echo(f"Docker answers; image {image} is present")
    if layout.bare.exists():
        click.echo(f"{layout.bare} exists: using it as it is")
    else:
        layout.root.mkdir(parents=True, exist_ok=True)
        ctx.invoke(init, path=str(layout.bare), bare=True, branch="main")
        GitRepo(layout.bare).set_config("deployally.stateDir", str(layout.state))
        demo_mod.clone_and_push(layout, click.echo)
    token_value = demo_mod.read_token(layout.state)
    api_url = f"http://127.0.0.1:{port}/api/v1"
    click.echo("")
    click.echo(f"Site:       {demo_mod.SITE_URL}")
    click.echo(f"API:        {api_url}   (try: curl -H 'Authorization: Bearer {token_value}' "
               f"{api_url}/definitions)")
    click.echo(f"Read token: {token_value}")
    click.echo(f"State:      {layout.state}")
    click.echo("Next: cd " + str(layout.work) + "; edit definitions/site.yaml; "
               "git commit -am 'Change the site'; git push   -- and watch it redeploy")
    if no_serve:
        return
    from . import logs
    from .server import ServeConfig
    from .server import serve as run_server

    click.echo(f"Serving on {api_url} (Ctrl-C to stop)")
    logs.configure("text")
    sys.exit(run_server(ServeConfig(repo=str(layout.bare), state_dir=layout.state, port=port)))


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


@main.command()
@workspace_options
@json_option
def status(repo: str, state_dir: str | None, branch: str, as_json: bool) -> None:
    """Every definition with its revision, status, health and uptime."""
    from .types import LiveInstance

    ws = _workspace(repo, state_dir, branch)
    records = ws.store.definitions()
    driver = ws.driver_for("local")
    docker_error = None
    live: dict[str, LiveInstance] = {}
    try:
        live = driver.live() if driver is not None else {}
    except DeployAllyError as exc:
        docker_error = str(exc)
    rows = []
    for r in records:
        inst = live.get(r.name)
        running = inst is not None and inst.status == "running"
        since = (inst.started_at or inst.created_at) if inst is not None and running else None
        rows.append({
            "name": r.name,
            "revision": r.current_revision,
            "applied_revision": r.applied_revision,
            "status": r.status.value,
            "instance": inst.status if inst is not None else ("unknown" if docker_error else "absent"),
            "health": inst.health if inst is not None else None,
            "uptime": _uptime(since),
            "error": r.last_error,
        })
    if as_json:
        _echo_json({"definitions": rows, "docker_error": docker_error})
        return
    _table([(x["name"], x["revision"], x["status"], x["instance"], x["health"] or "",
             x["uptime"], x["error"] or "") for x in rows],
           ["NAME", "REV", "STATUS", "INSTANCE", "HEALTH", "UPTIME", "ERROR"])
    if docker_error:
        click.echo(f"warning: {docker_error}", err=True)


@main.command()
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
    final = (DeploymentStatus.SUCCESS, DeploymentStatus.FAILED, DeploymentStatus.ROLLED_BACK)
    while True:
        current = ws.store.deployment(found.id, with_logs=False)
        for number, line in ws.store.logs_since(found.id, seen):
            seen = number
            click.echo(f"{line.at.strftime('%H:%M:%S.%f')[:-3]}  {line.message}")
        if not follow or current is None or current.status in final:
            break
        time.sleep(0.3)
    if current is not None:
        click.echo(f"-- {current.id} {current.definition_name}: {current.status.value}", err=True)


@main.group()
def hook() -> None:
    """What the installed git hooks call."""


@hook.command("post-receive")
@click.option("--repo", required=True, type=click.Path(file_okay=False), help="The git dir pushed to.")
@branch_option
@click.option("--commit", required=True, help="The new head of the branch.")
@state_option
def hook_post_receive(repo: str, branch: str, commit: str, state_dir: str | None) -> None:
    """Deploy a push through the running engine (or here) and print each deployment's outcome."""
    from .hook import post_receive

    code = post_receive(Path(repo), branch, commit, click.echo,
                        Path(state_dir) if state_dir else None)
    sys.exit(code)


if __name__ == "__main__":
    main()
