"""Webhook commands: add, list, rm, and verify a received signature."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from deployally.cli.common import (
    _listing,
    _workspace,
    json_option,
    read_secret_value,
    workspace_options,
)
from deployally.notify.signature import DEFAULT_TOLERANCE_S


@click.group()
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
    from deployally.notify.events import EVENTS
    from deployally.notify.signature import secret_problem
    from deployally.notify.urls import check_destination, check_url

    if problem := check_url(url):
        raise click.BadParameter(problem, param_hint="URL")
    unknown = [e for e in events if e not in EVENTS]
    if unknown:
        raise click.BadParameter(
            f"{', '.join(unknown)}: not events; use {', '.join(sorted(EVENTS))}",
            param_hint="--event",
        )
    ws = _workspace(repo, state_dir, branch)
    if problem := check_destination(url, ws.engine_config.webhook_allow, ws.host_networks):
        raise click.BadParameter(problem, param_hint="URL")
    value = read_secret_value(secret_file, "webhook secret")
    if problem := secret_problem(value):
        raise click.BadParameter(problem, param_hint="the secret")
    record = ws.store.add_webhook(url, events, value)
    click.echo(record.id)


@webhook.command("list")
@workspace_options
@json_option
def webhook_list(state_dir: str | None, repo: str, branch: str, as_json: bool) -> None:
    """List webhooks (never their secrets)."""
    ws = _workspace(repo, state_dir, branch)
    items = ws.store.webhooks()
    _listing(as_json,
             [{"id": w.id, "url": w.url, "events": list(w.events), "created_at": str(w.created_at)}
              for w in items],
             [(w.id, w.url, ",".join(w.events)) for w in items], ["ID", "URL", "EVENTS"])


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
              help="The webhook-signature header as received (v1,<base64> ...), or the older "
                   "X-DeployAlly-Signature (sha256=<hex>).")
@click.option("--id", "msg_id", default=None, help="The webhook-id header (with a v1 signature).")
@click.option("--timestamp", default=None,
              help="The webhook-timestamp header, Unix seconds (with a v1 signature).")
@click.option("--tolerance", default=DEFAULT_TOLERANCE_S, show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="Seconds the timestamp may be from this machine's clock, either way.")
@click.option("--secret", envvar="DEPLOYALLY_WEBHOOK_SECRET", default=None,
              help="The webhook's secret [env: DEPLOYALLY_WEBHOOK_SECRET].")
@click.option("--secret-file", type=click.File("r"), default=None,
              help="Read the webhook's secret from this file instead.")
def webhook_verify(signature: str, msg_id: str | None, timestamp: str | None, tolerance: float,
                   secret: str | None, secret_file: Any) -> None:
    """Read a webhook body on stdin: print "valid" (exit 0) if it is signed with the secret,
    recently enough, else "invalid: why" (exit 1)."""
    from deployally.notify.signature import SIGNATURE_PREFIX, check_legacy, check_standard

    if secret_file is not None:
        secret = secret_file.read().rstrip("\r\n")
    if not secret:
        raise click.UsageError(
            "give the webhook's secret: --secret-file PATH, env DEPLOYALLY_WEBHOOK_SECRET, or --secret"
        )
    # The exact bytes: one changed byte (even a trailing newline) is a different body.
    body = sys.stdin.buffer.read()
    if signature.strip().startswith(SIGNATURE_PREFIX):
        # The older header signs the body alone: it says nothing of when it was sent.
        problem = check_legacy(secret, body, signature)
    else:
        if msg_id is None or timestamp is None:
            raise click.UsageError(
                "a v1 signature is checked with its --id (webhook-id) and --timestamp "
                "(webhook-timestamp)"
            )
        headers = {"webhook-id": msg_id, "webhook-timestamp": timestamp,
                   "webhook-signature": signature}
        problem = check_standard(secret, body, headers, now=time.time(), tolerance_s=tolerance)
    click.echo("valid" if problem is None else f"invalid: {problem}")
    sys.exit(0 if problem is None else 1)
