"""A restart policy changed outside DeployAlly is put back in place, whether the engine was
running (Docker's `update` event) or not (it looks at every instance when it starts)."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from conftest import DefinitionsRepo, ServeProcess, wait_until
from conftest import running_revision as revision
from deployally.store import Store

pytestmark = pytest.mark.docker


def policy(client: docker.DockerClient, name: str) -> str:
    return str(client.api.inspect_container(name)["HostConfig"]["RestartPolicy"]["Name"] or "no")


def test_a_restart_policy_changed_outside_is_put_back_without_replacing_the_container(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    name = defs_repo.worker("web")
    defs_repo.commit("Add web")
    state = tmp_path / "state"
    engine = ServeProcess(defs_repo.path, state, "--reconcile-interval", "600")
    try:
        wait_until(lambda: revision(docker_client, name) == "1", 60, "revision 1 running")
        wait_until(lambda: policy(docker_client, name) == "unless-stopped", 30, "its restart policy")
        container = docker_client.containers.get(name).id
        docker_client.api.update_container(name, restart_policy={"Name": "no"})  # out of band
        wait_until(lambda: policy(docker_client, name) == "unless-stopped", 60,
                   "the restart policy put back while the engine runs")
    finally:
        assert engine.stop() == 0, engine.log()

    docker_client.api.update_container(name, restart_policy={"Name": "no"})  # while it is down
    again = ServeProcess(defs_repo.path, state, "--reconcile-interval", "600")
    try:
        wait_until(lambda: policy(docker_client, name) == "unless-stopped", 60,
                   "the restart policy put back when the engine starts")
    finally:
        assert again.stop() == 0, again.log()
    assert docker_client.containers.get(name).id == container  # healed in place, twice
    with Store(state) as store:
        record = store.definition(name)
        assert record is not None
        healed = [d for d in store.deployments(definition_id=record.id) if d.action.value == "start"]
    assert len(healed) == 2
    assert all(d.reason.kind.value == "drift" and "restart" in d.reason.summary for d in healed)
