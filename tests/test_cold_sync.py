"""A cold sync of many definitions at once (the applier's pipeline against real Docker): every
one deployed and recorded with its log, the health gate still fails the bad one among them,
and depends_on still orders the one that waits for another."""

from __future__ import annotations

import docker
import pytest

from conftest import DefinitionsRepo
from deployally.types import DeploymentStatus
from deployally.workspace import Workspace

pytestmark = pytest.mark.docker

MANY = 20  # more than the applier had under way at once before (16): now all of them are


def plain(repo: DefinitionsRepo, short: str, script: str = "exec sleep 2147483647",
          extra: str = "") -> str:
    """definitions/<name>.yaml of the busybox command template (no healthcheck, no volume)."""
    name = repo.name(short)
    repo.write(f"definitions/{name}.yaml", f"name: {name}\ntemplate: tools/busybox/plain/stable\n"
               f"params: {{script: '{script}'}}\n{extra}")
    return name


def test_many_at_once_are_all_deployed_and_recorded_the_gate_fails_the_bad_one_and_order_holds(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient
) -> None:
    # A short min_ready keeps the test short; the gate still sees the one that exits at once.
    defs_repo.write("deployally.yaml", f"network: {defs_repo.prefix}net\nhealth_timeout: 30s\n"
                    "min_ready: 1s\n")
    good = [plain(defs_repo, f"w{n:02d}") for n in range(MANY)]
    bad = plain(defs_repo, "bad", script="echo broken; exit 3")
    base = plain(defs_repo, "base")
    app = plain(defs_repo, "app", extra=f"depends_on: [{base}]\n")
    defs_repo.commit("Many definitions, a bad one, and one that depends on another")

    ws = Workspace.open(defs_repo.path, health_timeout_s=30)
    try:
        report = ws.engine.sync()
        outcome = {d.definition_name: d for d in report.deployments}
        assert {n: outcome[n].status for n in [*good, base, app]} == {
            n: DeploymentStatus.SUCCESS for n in [*good, base, app]
        }
        assert outcome[bad].status is DeploymentStatus.FAILED
        # What a user reads back from the store (the API's source): every one, closed, logged.
        recorded = {d.id: ws.store.deployment(d.id) for d in report.deployments}
        assert all(d is not None and d.finished_at is not None for d in recorded.values())
        for name in [*good, base, app]:
            lines = [line.message for line in recorded[outcome[name].id].logs]  # type: ignore[union-attr]
            assert lines[0].startswith(f"create {name}:"), lines
            assert any(line.startswith("created container") for line in lines), lines
            assert any(line.startswith("running after") for line in lines), lines
        bad_lines = "\n".join(line.message for line in recorded[outcome[bad].id].logs)  # type: ignore[union-attr]
        assert "container exited with code 3" in bad_lines and "| broken" in bad_lines
        # depends_on: app's container was created only once base had proven ready.
        base_done = recorded[outcome[base].id].finished_at  # type: ignore[union-attr]
        app_created = next(line.at for line in recorded[outcome[app].id].logs  # type: ignore[union-attr]
                           if line.message.startswith("created container"))
        assert base_done is not None and app_created >= base_done
    finally:
        ws.close()
    running = {c.name for c in docker_client.containers.list(filters={"name": defs_repo.prefix})}
    assert running == {*good, base, app}  # the bad one removed, no leftover
