"""`deployally token`, `webhook` and `server`: what they print once works over HTTP until revoked."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from click.testing import CliRunner

from conftest import ApiServer, DefinitionsRepo
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


def test_server_add_list_rotate_key_rm(api: ApiServer, api_ws: Workspace) -> None:
    runner = CliRunner()
    added = runner.invoke(
        main, ["server", "add", "edge-1", "--environment", "staging", "--description", "rack 4",
               *_args(api_ws)],
    )
    assert added.exit_code == 0, added.output
    key = added.stdout.strip()
    assert key.startswith("da_server_") and "shown only now" in added.stderr
    assert api.request("GET", "/agent/desired", key).status_code == 200

    swarm = runner.invoke(
        main, ["server", "add", "mgr", "--environment", "production", "--kind", "swarm",
               "--docker-host", "tcp://manager.example:2376", *_args(api_ws)],
    )
    assert swarm.exit_code == 0, swarm.output
    assert "da_server_" not in swarm.output and "tcp://manager.example:2376" in swarm.stdout
    # Said as the option typed, never the API's field name.
    for bad, option in ((["--kind", "swarm"], "--docker-host"),
                        (["--docker-host", "unix:///var/run/docker.sock"], "--docker-host"),
                        (["--kind", "swarm", "--docker-host", "ftp://m"], "--docker-host"),
                        (["--description", "a\nb"], "--description")):
        refused = runner.invoke(
            main, ["server", "add", "bad", "--environment", "staging", *bad, *_args(api_ws)]
        )
        assert refused.exit_code == 2 and f"Invalid value for {option}" in refused.output, (
            refused.output
        )
        assert "docker_host" not in refused.output
    for name, says in (("Bad!", "not a server name"), ("srv_1234", "server id")):
        named = runner.invoke(main, ["server", "add", name, "--environment", "staging", *_args(api_ws)])
        assert named.exit_code == 2 and says in named.output and "NAME" in named.output

    listed = runner.invoke(main, ["server", "list", "--json", *_args(api_ws)])
    assert listed.exit_code == 0, listed.output
    by_name = {s["name"]: s for s in json.loads(listed.stdout)}
    assert set(by_name) == {"local", "edge-1", "mgr"}
    assert (by_name["edge-1"]["kind"], by_name["edge-1"]["status"]) == ("agent", "pending")  # no agent polled yet
    assert by_name["mgr"]["docker_host"] == "tcp://manager.example:2376"
    # The engine reaches a swarm manager itself: one that does not answer (no TLS files for
    # tcp://, here) is offline.
    assert by_name["mgr"]["status"] == "offline" and key not in listed.stdout
    table = runner.invoke(main, ["server", "list", *_args(api_ws)])
    assert "DOCKER HOST" in table.stdout and "edge-1" in table.stdout

    rotated = runner.invoke(main, ["server", "rotate-key", "edge-1", *_args(api_ws)])
    assert rotated.exit_code == 0, rotated.output
    new = rotated.stdout.strip()
    assert new.startswith("da_server_") and new != key
    old = api.request("GET", "/agent/desired", key)
    assert old.status_code == 401 and "rotate-key" in old.json()["error"]["message"]
    assert api.request("GET", "/agent/desired", new).status_code == 200

    local = runner.invoke(main, ["server", "rm", "local", *_args(api_ws)])
    assert local.exit_code == 2 and "cannot be removed" in local.output
    gone = runner.invoke(main, ["server", "rm", "edge-1", *_args(api_ws)])
    assert gone.exit_code == 0 and "removed" in gone.stdout
    assert api.request("GET", "/agent/desired", new).status_code == 401
    again = runner.invoke(main, ["server", "rm", "edge-1", *_args(api_ws)])
    assert again.exit_code == 2 and "does not exist" in again.output


def test_server_commands_in_a_clone_without_engine_state_refuse_instead_of_making_one(
    tmp_path: Path,
) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "init", "-q", "-b", "main", str(clone)], check=True)
    runner = CliRunner()
    for args in (["list"], ["add", "edge", "--environment", "staging"], ["rm", "edge"],
                 ["rotate-key", "edge"]):
        done = runner.invoke(main, ["server", *args, "--repo", str(clone)])
        assert done.exit_code == 1, done.output
        assert "no state store here" in done.output and "--state-dir" in done.output
    assert not (clone / ".deployally").exists()


def test_sync_and_status_json_show_each_definitions_environment(
    defs_repo: DefinitionsRepo, state_dir: Path
) -> None:
    web = defs_repo.worker("web")
    defs_repo.commit("Add web")
    where = ["--repo", str(defs_repo.path), "--state-dir", str(state_dir)]
    runner = CliRunner()
    synced = runner.invoke(main, ["sync", "--json", *where])
    assert synced.exit_code == 0, synced.output
    (deployment,) = json.loads(synced.stdout)["deployments"]
    assert (deployment["definition_name"], deployment["environment"]) == (web, "production")
    shown = runner.invoke(main, ["status", "--json", *where])
    assert shown.exit_code == 0, shown.output
    (row,) = json.loads(shown.stdout)["definitions"]
    assert (row["name"], row["server_id"], row["environment"]) == (web, "local", "production")
