"""Only signed commits deploy when engine.yaml lists trusted keys: sync, status, API and pre-receive."""

from __future__ import annotations

import json
from pathlib import Path

import docker
import pytest
from click.testing import CliRunner

from conftest import ApiServer, DefinitionsRepo, PushRepo
from deployally.cli import main
from deployally.identity import template_id
from deployally.model.engine_config import CONFIG_ENV
from deployally.store import LOCAL_SERVER_ID
from deployally.workspace import Workspace
from test_signatures import SshKey, make_ssh_key, ssh_signed_commit

pytestmark = pytest.mark.docker


@pytest.fixture(autouse=True)
def _no_config_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)


@pytest.fixture
def alice(tmp_path: Path) -> SshKey:
    return make_ssh_key(tmp_path / "keys", "alice")


def trusting(state: Path, key: SshKey, extra: str = "") -> None:
    state.mkdir(parents=True, exist_ok=True)
    (state / "engine.yaml").write_text(f"trusted_keys:\n  - {key.public}\n{extra}")


def message_of(client: docker.DockerClient, name: str) -> str:
    env = client.api.inspect_container(name)["Config"]["Env"]
    return next(e.removeprefix("MESSAGE=") for e in env if e.startswith("MESSAGE="))


def test_only_what_a_trusted_key_signed_deploys_and_the_rest_is_recorded(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient, tmp_path: Path, alice: SshKey
) -> None:
    state = tmp_path / "state"
    trusting(state, alice)
    name = defs_repo.worker("web", message="signed-1")
    first = ssh_signed_commit(defs_repo, "Add web, signed", alice)
    ws = Workspace.open(defs_repo.path, state, health_timeout_s=30)
    try:
        assert ws.engine.sync().commit == first
        assert message_of(docker_client, name) == "signed-1"
        container = docker_client.containers.get(name).id

        defs_repo.worker("web", message="unsigned")
        unsigned = defs_repo.commit("Change web, unsigned")
        report = ws.engine.sync()

        # Nothing changes for any definition in the unsigned commit.
        assert report.commit == first and report.deployments == () and not report.ok
        [refused] = report.refused
        assert (refused.sha, refused.summary, refused.reason) == (
            unsigned, "Change web, unsigned", "not signed"
        )
        assert docker_client.containers.get(name).id == container
        record = ws.store.definition(name)
        assert record is not None and record.current_revision == 1
        assert record.status.value == "active"

        # `status` says it; so does the API (below).
        shown = CliRunner().invoke(main, ["status", "--repo", str(defs_repo.path),
                                          "--state-dir", str(state), "--json"])
        assert json.loads(shown.output)["refused_commits"] == [
            {"commit": unsigned, "summary": "Change web, unsigned", "reason": "not signed"}
        ]
        api = ApiServer(ws)
        try:
            token = ws.store.create_token("reader", "read")
            data = api.request("GET", "/sync", token).json()["data"]
        finally:
            api.close()
        assert data["head"] == unsigned and data["deployed_commit"] == first
        assert data["verifies_commits"] is True
        assert [r["commit"] for r in data["refused_commits"]] == [unsigned]

        # A signed commit on top vouches for its whole tree, the unsigned change included.
        defs_repo.worker("web", message="signed-2")
        second = ssh_signed_commit(defs_repo, "Change web again, signed", alice)
        report = ws.engine.sync()
        assert report.commit == second and report.refused == () and report.ok
        assert message_of(docker_client, name) == "signed-2"
        assert ws.store.refused_commits() == ()
        # Revisions still count every commit that changed the file, signed or not.
        record = ws.store.definition(name)
        assert record is not None and record.current_revision == 3
    finally:
        ws.close()


def test_a_commit_signed_by_an_untrusted_key_is_not_deployed(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient, tmp_path: Path, alice: SshKey
) -> None:
    state = tmp_path / "state"
    trusting(state, alice)
    mallory = make_ssh_key(tmp_path / "keys", "mallory")
    name = defs_repo.worker("web")
    head = ssh_signed_commit(defs_repo, "Add web, signed by mallory", mallory)
    ws = Workspace.open(defs_repo.path, state, health_timeout_s=30)
    try:
        report = ws.engine.sync()
    finally:
        ws.close()

    assert report.commit is None and report.deployments == ()
    assert [r.sha for r in report.refused] == [head, defs_repo.git("rev-parse", "HEAD~1").strip()]
    assert "not in trusted_keys" in report.refused[0].reason
    assert not docker_client.containers.list(all=True, filters={"name": name})


def test_pre_receive_refuses_a_push_with_any_unsigned_commit(
    push_repo: PushRepo, docker_client: docker.DockerClient, alice: SshKey
) -> None:
    trusting(push_repo.bare / ".deployally", alice)
    ssh_signed_commit(push_repo, "Test settings, signed", alice)  # the fixture's commit is not
    push_repo.git("reset", "-q", "--soft", "HEAD~2")
    settings = ssh_signed_commit(push_repo, "Settings, signed", alice)
    name = push_repo.worker("web", message="one")
    unsigned = push_repo.commit("Add web, unsigned")
    ssh_signed_commit(push_repo, "Something else, signed", alice)

    pushed = push_repo.push()

    assert pushed.returncode != 0
    assert f"commit {unsigned[:12]}: 'Add web, unsigned' is not signed" in pushed.stdout
    assert "trusted_keys" in pushed.stdout and "push refused" in pushed.stdout
    assert settings[:12] not in pushed.stdout  # the signed ones are fine
    assert not docker_client.containers.list(all=True, filters={"name": name})

    push_repo.git("reset", "-q", "--soft", settings)
    ssh_signed_commit(push_repo, "Add web, signed", alice)
    pushed = push_repo.push()

    assert pushed.returncode == 0, pushed.stdout
    assert f"{name}: revision 1 deployed" in pushed.stdout


def test_api_writes_are_refused_without_a_signing_key_and_signed_with_one(
    tmp_path: Path, alice: SshKey, names: str, busybox_image: str,
    docker_client: docker.DockerClient,
) -> None:
    repo = DefinitionsRepo(tmp_path / "repo", names)
    ssh_signed_commit(repo, "Settings, signed", alice)
    body = {
        "template_id": template_id("tools/busybox/plain/stable"),
        "server_id": LOCAL_SERVER_ID,
        "name": f"{names}-api",
        "params": {"script": "sleep 3600"},
    }
    for state, extra, expected in (
        (tmp_path / "unsigning", "", 409),
        (tmp_path / "signing", f"signing_key: {alice.private}\n", 201),
    ):
        trusting(state, alice, extra)
        ws = Workspace.open(repo.path, state, health_timeout_s=30)
        api = ApiServer(ws)
        try:
            token = ws.store.create_token("writer", "write")
            answer = api.request("POST", "/definitions", token, json=body)
            assert answer.status_code == expected, answer.text
            if expected == 409:
                assert "signing_key" in answer.json()["error"]["message"]
                continue
            report = ws.engine.sync()
        finally:
            api.close()
            ws.close()
    assert report.ok and report.commit == repo.git("rev-parse", "HEAD").strip()
    assert docker_client.containers.get(f"{names}-api").status == "running"
