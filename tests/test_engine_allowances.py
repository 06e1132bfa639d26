"""What the engine's operator allows (engine.yaml), end to end: validate, pre-receive, sync, Docker."""

from __future__ import annotations

import json
from pathlib import Path

import docker
import pytest
from click.testing import CliRunner

from conftest import DefinitionsRepo, PushRepo
from deployally.cli import main
from deployally.model.engine_config import CONFIG_ENV
from deployally.sync.reconcile import SyncReport
from deployally.types import ReasonKind
from deployally.workspace import Workspace


def low_port(prefix: str) -> int:
    """A host port below 1024 that differs from test to test."""
    return 900 + int(prefix[1:], 16) % 100


def high_port(prefix: str) -> int:
    return 20000 + int(prefix[1:], 16) % 20000


def sync(repo: Path, state: Path) -> SyncReport:
    ws = Workspace.open(repo, state, health_timeout_s=30)
    try:
        return ws.engine.sync()
    finally:
        ws.close()


@pytest.fixture(autouse=True)
def _no_config_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)


def test_validate_checks_against_the_engines_configuration_and_says_which(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = DefinitionsRepo(tmp_path / "repo", "tval")
    port = low_port("t0a0a0a")
    repo.worker("web", _extra=f"publish: {{8080: {port}}}\n")
    repo.commit("Publish a low port")
    runner = CliRunner()

    refused = runner.invoke(main, ["validate", "--repo", str(repo.path)])

    assert refused.exit_code == 1
    assert "definitions/tval_web.yaml:3: publish.8080:" in refused.output
    assert "ports_below_1024" in refused.output and "engine.yaml" in refused.output
    assert "host allowances: the defaults" in refused.output  # a plain checkout, as in CI

    # The engine's own configuration, where validate finds it: in its state directory...
    (repo.path / ".deployally").mkdir()
    allowed = repo.path / ".deployally" / "engine.yaml"
    allowed.write_text(f"allow: {{ports_below_1024: [{port}]}}\n")
    ok = runner.invoke(main, ["validate", "--repo", str(repo.path)])
    assert ok.exit_code == 0, ok.output
    assert f"host allowances from {allowed}" in ok.output
    # ...or where DEPLOYALLY_CONFIG says, which is how a CI job checks against it.
    elsewhere = tmp_path / "ops" / "engine.yaml"
    elsewhere.parent.mkdir()
    elsewhere.write_text("{}\n")
    monkeypatch.setenv(CONFIG_ENV, str(elsewhere))
    as_json = runner.invoke(main, ["validate", "--repo", str(repo.path), "--json"])
    assert as_json.exit_code == 1
    data = json.loads(as_json.output)
    assert data["engine_config"] == str(elsewhere)
    assert [e["field"] for e in data["errors"]] == ["publish.8080"]


def test_a_broken_engine_configuration_fails_validate_naming_it(tmp_path: Path) -> None:
    repo = DefinitionsRepo(tmp_path / "repo", "tbad")
    (repo.path / ".deployally").mkdir()
    (repo.path / ".deployally" / "engine.yaml").write_text("allow: {privileged: true}\n")

    result = CliRunner().invoke(main, ["validate", "--repo", str(repo.path)])

    assert result.exit_code == 1
    assert "engine.yaml" in result.output and "allow.privileged" in result.output


@pytest.mark.docker
def test_pre_receive_refuses_what_the_operator_has_not_allowed(
    push_repo: PushRepo, docker_client: docker.DockerClient
) -> None:
    port = low_port(push_repo.prefix)
    name = push_repo.worker("web", _extra=f"publish: {{8080: {port}}}\n")
    push_repo.commit("Publish a low port")

    pushed = push_repo.push()

    assert pushed.returncode != 0
    assert f"definitions/{name}.yaml:3: publish.8080:" in pushed.stdout
    assert f"ports_below_1024: [{port}]" in pushed.stdout and "push refused" in pushed.stdout
    assert not docker_client.containers.list(all=True, filters={"name": name})

    # The engine's operator allows it in the engine's state directory; the same push lands.
    state = push_repo.bare / ".deployally"
    state.mkdir(exist_ok=True)
    (state / "engine.yaml").write_text(f"allow: {{ports_below_1024: [{port}]}}\n")
    pushed = push_repo.push()

    assert pushed.returncode == 0, pushed.stdout
    assert f"{name}: revision 1 deployed" in pushed.stdout
    bindings = docker_client.api.inspect_container(name)["HostConfig"]["PortBindings"]
    assert bindings == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}


@pytest.mark.docker
def test_a_commit_past_the_hooks_is_refused_at_sync_and_touches_nothing_running(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    name = defs_repo.worker("web", message="one")
    defs_repo.commit("Add web")
    assert sync(defs_repo.path, state).ok
    before = docker_client.containers.get(name).id
    port = low_port(defs_repo.prefix)
    defs_repo.worker("web", message="two", _extra=f"publish: {{8080: {port}}}\n")
    defs_repo.commit("Publish a low port")

    report = sync(defs_repo.path, state)

    assert report.deployments == ()
    [error] = report.errors
    assert (error.path, error.field) == (f"definitions/{name}.yaml", "publish.8080")
    assert "ports_below_1024" in error.message
    assert docker_client.containers.get(name).id == before
    ws = Workspace.open(defs_repo.path, state)
    record = ws.store.definition(name)
    ws.close()
    assert record is not None and record.status.value == "invalid"
    assert record.last_error is not None and "ports_below_1024" in record.last_error


@pytest.mark.docker
def test_published_ports_listen_on_loopback_unless_the_operator_says_otherwise(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    port = high_port(defs_repo.prefix)
    name = defs_repo.worker("web", _extra=f"publish: {{8080: {port}}}\n")
    defs_repo.commit("Publish")

    assert sync(defs_repo.path, state).ok
    bindings = docker_client.api.inspect_container(name)["HostConfig"]["PortBindings"]
    assert bindings == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}

    # The operator opens it to every interface; the next start of the engine applies it.
    (state / "engine.yaml").write_text("publish_address: 0.0.0.0\n")
    report = sync(defs_repo.path, state)

    [deployment] = report.deployments
    assert deployment.status.value == "success"
    assert deployment.reason.kind is ReasonKind.ENGINE_CONFIG
    assert "0.0.0.0" in deployment.reason.summary
    bindings = docker_client.api.inspect_container(name)["HostConfig"]["PortBindings"]
    assert bindings == {"8080/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(port)}]}
    assert sync(defs_repo.path, state).deployments == ()


@pytest.mark.docker
def test_network_host_only_when_the_operator_allows_it(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    defs_repo.write("deployally.yaml", "network: host\nhealth_timeout: 30s\n")
    name = defs_repo.worker("hostnet")
    defs_repo.commit("Ask for the host's network")

    refused = sync(defs_repo.path, state)

    assert refused.deployments == ()
    errors = {(e.path, e.field): e.message for e in refused.errors}
    assert "host_network: true" in errors[("deployally.yaml", "network")]
    assert not docker_client.containers.list(all=True, filters={"name": name})

    state.joinpath("engine.yaml").write_text("allow: {host_network: true}\n")
    allowed = sync(defs_repo.path, state)

    assert allowed.ok, allowed
    info = docker_client.api.inspect_container(name)
    assert info["HostConfig"]["NetworkMode"] == "host"
    assert info["State"]["Running"]


# ---------------------------------------------------------------- volumes and networks it did not create


@pytest.mark.docker
def test_a_volume_deployally_did_not_create_is_neither_mounted_nor_pruned_unless_adopted(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient, tmp_path: Path,
    busybox_image: str,
) -> None:
    state = tmp_path / "state"
    name = defs_repo.name("x")
    # Another project's data, in the volume a definition named `x` would mount at /data.
    docker_client.volumes.create(f"{name}_data")
    docker_client.containers.run(
        busybox_image, ["sh", "-c", "echo theirs > /v/file"], volumes={f"{name}_data": {"bind": "/v"}},
        remove=True, labels={"com.deployally.test": defs_repo.prefix},
    )
    defs_repo.worker("x", _extra="prune_volumes: true\n")
    defs_repo.commit("Add x")

    report = sync(defs_repo.path, state)

    [deployment] = report.deployments
    assert deployment.status.value == "failed"
    ws = Workspace.open(defs_repo.path, state)
    found = ws.store.deployment(deployment.id)
    ws.close()
    assert found is not None
    log = "\n".join(line.message for line in found.logs)
    assert f"volume {name}_data exists and this engine did not create it" in log
    assert f"adopt: {{volumes: [{name}_data]}}" in log
    assert not docker_client.containers.list(all=True, filters={"name": f"^{name}$"})

    # Removing the definition with prune_volumes removes nothing it did not create.
    defs_repo.remove(f"definitions/{name}.yaml")
    defs_repo.commit("Remove x")
    sync(defs_repo.path, state)
    assert docker_client.volumes.get(f"{name}_data")

    # Adopted by the operator: mounted, and still never pruned.
    (state / "engine.yaml").write_text(f"adopt: {{volumes: [{name}_data]}}\n")
    defs_repo.worker("x", script="cat /data/file; exec sleep 3600", _extra="prune_volumes: true\n")
    defs_repo.commit("Add x again")
    assert sync(defs_repo.path, state).ok
    assert b"theirs" in docker_client.containers.get(name).logs()
    defs_repo.remove(f"definitions/{name}.yaml")
    defs_repo.commit("Remove x again")
    assert sync(defs_repo.path, state).ok
    assert not docker_client.containers.list(all=True, filters={"name": f"^{name}$"})
    assert docker_client.volumes.get(f"{name}_data")


@pytest.mark.docker
def test_the_settings_network_joins_only_a_network_this_engine_created_or_adopted(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient, tmp_path: Path,
    busybox_image: str,
) -> None:
    state = tmp_path / "state"
    other = f"{defs_repo.prefix}other"
    docker_client.networks.create(other, driver="bridge")  # another project's network
    defs_repo.write("deployally.yaml", f"network: {other}\nhealth_timeout: 30s\n")
    name = defs_repo.worker("joiner")
    defs_repo.commit("Join the other project's network")

    [deployment] = sync(defs_repo.path, state).deployments

    assert deployment.status.value == "failed"
    assert not docker_client.containers.list(all=True, filters={"name": f"^{name}$"})
    (state / "engine.yaml").write_text(f"adopt: {{networks: [{other}]}}\n")
    assert sync(defs_repo.path, state).ok
    networks = docker_client.api.inspect_container(name)["NetworkSettings"]["Networks"]
    assert list(networks) == [other]
