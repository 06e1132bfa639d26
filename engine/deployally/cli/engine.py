"""Commands that run the engine: serve, demo, and what the git hooks call."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from deployally.cli.common import branch_option, state_option
from deployally.cli.repository import init
from deployally.source.git import GitRepo


@click.command()
@click.option("--repo", default=".", show_default=True,
              help="A local working or bare repository, or a remote URL to mirror and fetch.")
@state_option
@branch_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the API listens on.")
@click.option("--port", default=8080, show_default=True, type=int, help="API port (0: any free port).")
@click.option("--reconcile-interval", default=None, type=click.FloatRange(min=1),
              help="Seconds between drift checks (and fetches of a remote) "
                   "[default: deployally.yaml's reconcile_interval, else 30].")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Log lines on stderr: text, or one JSON object a line.")
@click.option("--push-secret", "webhook_secret", envvar="DEPLOYALLY_PUSH_SECRET", default=None,
              help="Secret for GitHub/GitLab push webhooks [env: DEPLOYALLY_PUSH_SECRET].")
@click.option("--parallel", default=None, type=click.IntRange(min=1),
              help="Concurrent Docker creates/starts [default: deployally.yaml's max_parallel, else 8].")
@click.option("--tls-cert", default=None, type=click.Path(path_type=Path),
              help="Serve the API over HTTPS with this PEM certificate (chain); needs --tls-key.")
@click.option("--tls-key", default=None, type=click.Path(path_type=Path),
              help="The certificate's PEM private key, unencrypted; needs --tls-cert.")
def serve(repo: str, state_dir: str | None, branch: str, host: str, port: int,
          reconcile_interval: float | None, log_format: str, webhook_secret: str | None,
          parallel: int | None, tls_cert: Path | None, tls_key: Path | None) -> None:
    """Run the engine and the API until SIGTERM/SIGINT: push to git, and the change goes live."""
    from deployally import logs
    from deployally.serve.process import ServeConfig
    from deployally.serve.process import serve as run_server

    if (tls_cert is None) != (tls_key is None):
        given, missing = ("--tls-cert", "--tls-key") if tls_key is None else ("--tls-key", "--tls-cert")
        raise click.UsageError(
            f"{given} needs {missing}: HTTPS takes both the certificate and its private key"
        )
    logs.configure(log_format)
    config = ServeConfig(
        repo=repo, state_dir=Path(state_dir) if state_dir else None, branch=branch, host=host,
        port=port, reconcile_interval_s=reconcile_interval, webhook_secret=webhook_secret or None,
        max_parallel=parallel, tls_cert=tls_cert, tls_key=tls_key,
    )
    sys.exit(run_server(config))


@click.command()
@click.argument("directory", default="./deployally-demo", type=click.Path(file_okay=False))
@click.option("--port", default=8080, show_default=True, type=int, help="API port.")
@click.option("--no-serve", is_flag=True, help="Set up and deploy once, then exit.")
@click.pass_context
def demo(ctx: click.Context, directory: str, port: int, no_serve: bool) -> None:
    """A bare repo to push to, a working clone of example-repo/, deployed, then `serve` on it."""
    from deployally.cli import demo_setup as demo_mod
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
    from deployally import logs
    from deployally.serve.process import ServeConfig
    from deployally.serve.process import serve as run_server

    click.echo(f"Serving on {api_url} (Ctrl-C to stop)")
    logs.configure("text")
    sys.exit(run_server(ServeConfig(repo=str(layout.bare), state_dir=layout.state, port=port)))


@click.group()
def hook() -> None:
    """What the installed git hooks call."""


@hook.command("post-receive")
@click.option("--repo", required=True, type=click.Path(file_okay=False), help="The git dir pushed to.")
@branch_option
@click.option("--commit", required=True, help="The new head of the branch.")
@state_option
def hook_post_receive(repo: str, branch: str, commit: str, state_dir: str | None) -> None:
    """Deploy a push through the running engine (or here) and print each deployment's outcome."""
    from deployally.serve.hook_client import post_receive

    code = post_receive(Path(repo), branch, commit, click.echo,
                        Path(state_dir) if state_dir else None)
    sys.exit(code)
