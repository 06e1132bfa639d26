"""`deployally token` and `deployally webhook`: a token printed once works over HTTP until revoked."""

from __future__ import annotations

from click.testing import CliRunner

from conftest import ApiServer
from deployally.cli import main
from deployally.workspace import Workspace


def _args(ws: Workspace) -> list[str]:
    return ["--repo", str(ws.repo_path), "--state-dir", str(ws.state_dir)]


def test_token_create_list_revoke(api: ApiServer, api_ws: Workspace) -> None:
    runner = CliRunner()
    made = runner.invoke(main, ["token", "create", "ci", "--scope", "write", *_args(api_ws)])
    assert made.exit_code == 0, made.output
    token = made.stdout.strip().splitlines()[0]
    assert token.startswith("da_") and not token.startswith("da_server_")
    assert api.request("GET", "/definitions", token).status_code == 200
    assert api.request("POST", "/servers", token, json={}).status_code == 403  # write, not admin

    listed = runner.invoke(main, ["token", "list", "--json", *_args(api_ws)])
    assert '"name": "ci"' in listed.stdout and '"scope": "write"' in listed.stdout
    assert token not in listed.stdout

    dup = runner.invoke(main, ["token", "create", "ci", *_args(api_ws)])
    assert dup.exit_code == 2 and "already exists" in dup.output

    gone = runner.invoke(main, ["token", "revoke", "ci", *_args(api_ws)])
    assert gone.exit_code == 0
    assert api.request("GET", "/definitions", token).status_code == 401
    again = runner.invoke(main, ["token", "revoke", "ci", *_args(api_ws)])
    assert again.exit_code == 2 and "token list" in again.output


def test_webhook_add_list_rm(api: ApiServer, api_ws: Workspace, api_tokens: dict[str, str]) -> None:
    runner = CliRunner()
    added = runner.invoke(
        main,
        [
            "webhook",
            "add",
            "https://hooks.example.com/x",
            "--event",
            "deployment.failed",
            *_args(api_ws),
        ],
        input="signing-secret\n",
    )
    assert added.exit_code == 0, added.output
    wid = added.stdout.strip()
    seen = api.request("GET", "/webhooks", api_tokens["admin"]).json()["data"]
    assert [(w["id"], w["events"]) for w in seen] == [(wid, ["deployment.failed"])]
    listed = runner.invoke(main, ["webhook", "list", *_args(api_ws)])
    assert wid in listed.stdout and "signing-secret" not in listed.stdout

    bad = runner.invoke(
        main, ["webhook", "add", "ftp://x", "--event", "nope", *_args(api_ws)], input="s\n"
    )
    assert bad.exit_code != 0 and "http" in bad.output
    loopback = runner.invoke(
        main, ["webhook", "add", "http://localhost:9/x", "--event", "deployment.failed",
               *_args(api_ws)], input="s\n",
    )
    assert loopback.exit_code != 0
    assert "loopback" in loopback.output and "engine.yaml" in loopback.output

    assert runner.invoke(main, ["webhook", "rm", wid, *_args(api_ws)]).exit_code == 0
    assert api.request("GET", "/webhooks", api_tokens["admin"]).json()["data"] == []
