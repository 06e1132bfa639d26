"""After a crash, on the fake driver (real git, a real store, no Docker): deployments left open
are closed with a deployment.failed, and an instance running its spec that no deployment
confirmed is healed in place and its definition recorded as it truly stands."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conftest import DefinitionsRepo
from deployally.drivers.base import DriverConfig
from deployally.drivers.fake import FakeDriver, FakeHost
from deployally.store import ServerRecord
from deployally.types import (
    ActionKind,
    DefinitionStatus,
    Deployment,
    DeploymentStatus,
    Reason,
    ReasonKind,
)
from deployally.workspace import Workspace


@pytest.fixture
def repo(tmp_path: Path) -> DefinitionsRepo:
    return DefinitionsRepo(tmp_path / "repo", "r" + tmp_path.name[-6:].replace("_", ""))


@pytest.fixture
def host() -> FakeHost:
    return FakeHost()


@pytest.fixture
def ws(repo: DefinitionsRepo, tmp_path: Path, host: FakeHost) -> Iterator[Workspace]:
    def factory(server: ServerRecord, config: DriverConfig) -> FakeDriver:
        return FakeDriver(host, owner="eng_test", server=server.name, config=config)

    ws = Workspace.open(repo.path, tmp_path / "state", driver_factories={"local": factory})
    yield ws
    ws.close()


def events(ws: Workspace) -> list[tuple[str, dict[str, object]]]:
    """Every webhook event the engine queued, oldest first."""
    conn = sqlite3.connect(ws.store.path)
    try:
        rows = conn.execute("SELECT event, data FROM events ORDER BY rowid").fetchall()
    finally:
        conn.close()
    return [(e, json.loads(d)) for e, d in rows]


def test_a_deployment_a_crash_left_running_is_closed_with_deployment_failed(
    repo: DefinitionsRepo, ws: Workspace
) -> None:
    name = repo.worker("web")
    repo.commit("Add web")
    assert ws.engine.sync().ok
    record = ws.store.definition(name)
    assert record is not None
    now = datetime.now(UTC)
    # What a SIGKILL leaves: a deployment that started and never ended.
    left = Deployment("deploy_0123456789ab", record.id, name, "local", 1, None, ActionKind.UPDATE,
                      DeploymentStatus.RUNNING, Reason(ReasonKind.DRIFT, "x"), now, started_at=now)
    ws.store.create_deployment(left)

    ws.engine.sync()

    closed = ws.store.deployment(left.id)
    assert closed is not None and closed.status is DeploymentStatus.FAILED
    assert any("the engine stopped during this deployment" in line.message for line in closed.logs)
    failed = [d for e, d in events(ws) if e == "deployment.failed" and d["deployment_id"] == left.id]
    assert len(failed) == 1
    assert "the engine stopped during this deployment" in str(failed[0]["error"])
    assert failed[0]["rolled_back"] is False


def test_an_instance_running_its_spec_that_no_deployment_confirmed_is_healed_and_recorded(
    repo: DefinitionsRepo, ws: Workspace, host: FakeHost
) -> None:
    name = repo.worker("web")
    repo.commit("Add web")
    assert ws.engine.sync().ok
    record = ws.store.definition(name)
    assert record is not None
    ref = host.instances[name].ref
    # Killed after the instance came up, before the outcome was recorded.
    ws.store.set_definition_status(record.id, DefinitionStatus.PENDING, applied_hash=None)

    report = ws.engine.sync()

    [deployment] = list(report.deployments)
    assert deployment.action is ActionKind.START and deployment.status is DeploymentStatus.SUCCESS
    assert host.instances[name].ref == ref  # healed in place, not replaced
    healed = ws.store.definition(name)
    assert healed is not None and healed.status is DefinitionStatus.ACTIVE
    assert healed.desired is not None and healed.applied_hash == healed.desired.rendered_hash
    assert ws.engine.sync().deployments == ()  # and it stays so


BROKEN = "broken"  # a MESSAGE whose instances the fake host fails at their health gate


def test_a_spec_that_failed_its_health_gate_is_not_retried_until_something_changes(
    repo: DefinitionsRepo, ws: Workspace, host: FakeHost
) -> None:
    host.fail_where(lambda s: ("MESSAGE", BROKEN) in s.env, "exited with code 3")
    name = repo.worker("web", message="one")
    repo.commit("Add web")
    assert ws.engine.sync().ok
    good = host.instances[name].ref
    repo.worker("web", message=BROKEN)
    repo.commit("A revision that does not come up")

    [rolled_back] = ws.engine.sync().deployments
    assert rolled_back.status is DeploymentStatus.ROLLED_BACK
    for _ in range(3):  # the backoff is due again and again: still nothing is tried
        ws.engine.retries.forget(name)
        assert ws.engine.sync().deployments == ()
    assert host.instances[name].ref == good and host.instances[name].state.value == "running"
    record = ws.store.definition(name)
    assert record is not None and record.status is DefinitionStatus.FAILED
    assert record.applied_revision == 1 and record.held_unready

    repo.write(f"definitions/{name}.yaml",
               (repo.path / f"definitions/{name}.yaml").read_text() + "# try it again\n")
    repo.commit("Same spec, a new revision")
    [retried] = ws.engine.sync().deployments  # a commit of the definition tries again
    assert retried.status is DeploymentStatus.ROLLED_BACK and retried.revision == 3


def test_a_transient_failure_is_still_retried(
    repo: DefinitionsRepo, ws: Workspace, host: FakeHost
) -> None:
    name = repo.worker("web", message="one")
    repo.commit("Add web")
    spec_image = "busybox:stable"
    host.missing_image(spec_image)  # a pull that fails: nothing of the spec's own doing
    [failed] = ws.engine.sync().deployments
    assert failed.status is DeploymentStatus.FAILED
    record = ws.store.definition(name)
    assert record is not None and not record.held_unready
    ws.engine.retries.forget(name)  # its backoff is due
    [again] = ws.engine.sync().deployments
    assert again.status is DeploymentStatus.FAILED and again.id != failed.id


def test_a_stop_finishes_what_began_and_the_next_start_carries_on_the_rest(
    repo: DefinitionsRepo, tmp_path: Path, host: FakeHost
) -> None:
    names = [repo.worker(f"w{n}") for n in range(6)]
    repo.commit("Six workers")
    lines: list[str] = []

    def factory(server: ServerRecord, config: DriverConfig) -> FakeDriver:
        return FakeDriver(host, owner="eng_test", server=server.name, config=config)

    def progress(line: str) -> None:
        lines.append(line)
        if "deployed" in line:
            first.engine.stop_soon()  # SIGTERM as the first deployment ends

    first = Workspace.open(repo.path, tmp_path / "state", driver_factories={"local": factory},
                           progress=progress, max_parallel=1)
    try:
        report = first.engine.sync()
    finally:
        first.close()
    done = [d for d in report.deployments if d.status is DeploymentStatus.SUCCESS]
    waiting = [d for d in report.deployments if d.status is DeploymentStatus.WAITING]
    assert 1 <= len(done) < len(names)  # what had begun finished; not the whole sync
    assert len(host.instances) == len(done)  # the rest was left untouched
    assert all(d.waiting is not None and d.waiting.kind.value == "restart" for d in waiting)

    again = Workspace.open(repo.path, tmp_path / "state", driver_factories={"local": factory})
    try:
        rest = again.engine.sync()
        assert sorted(host.instances) == sorted(names)
        assert {d.id for d in waiting} <= {d.id for d in rest.deployments}  # carried on, not anew
        assert all(d.status is DeploymentStatus.SUCCESS for d in rest.deployments)
        assert {r.status for r in again.store.definitions()} == {DefinitionStatus.ACTIVE}
    finally:
        again.close()
