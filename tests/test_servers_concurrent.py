"""Servers are applied at once: one that is slow delays no other server's deployments.

`local` is this host's real Docker engine; the slow server is a fake host whose rollouts
wait until the test lets them go, so the test steps through events, never timings.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from conftest import DefinitionsRepo
from deployally.drivers.base import DriverConfig
from deployally.drivers.fake import FakeDriver, FakeHost
from deployally.store import ServerRecord
from deployally.sync.reconcile import SyncReport
from deployally.types import DeploymentStatus
from deployally.workspace import Workspace

BOUND_S = 120  # only a guard: a sync that never gets there fails the test instead of hanging it


class Lines:
    """The sync's progress lines, as they come."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()

    def __call__(self, line: str) -> None:
        with self._changed:
            self.lines.append(line)
            self._changed.notify_all()

    def first(self, start: str) -> str | None:
        """The first line that starts with `start`, once there is one (None past the bound)."""
        with self._changed:
            self._changed.wait_for(
                lambda: any(line.startswith(start) for line in self.lines), timeout=BOUND_S
            )
            return next((line for line in self.lines if line.startswith(start)), None)


@pytest.fixture
def slow_host() -> Iterator[FakeHost]:
    host = FakeHost()
    yield host
    host.release()  # never leave a sync thread waiting behind a failed assertion


@pytest.fixture
def lines() -> Lines:
    return Lines()


@pytest.fixture
def ws(defs_repo: DefinitionsRepo, tmp_path: Path, lines: Lines) -> Iterator[Workspace]:
    ws = Workspace.open(defs_repo.path, tmp_path / "state", progress=lines)
    yield ws
    ws.close()


def test_a_slow_server_does_not_delay_local(
    defs_repo: DefinitionsRepo, ws: Workspace, lines: Lines, slow_host: FakeHost,
    docker_client: docker.DockerClient,
) -> None:
    def slow(server: ServerRecord, config: DriverConfig) -> FakeDriver:
        return FakeDriver(slow_host, owner=ws.engine_id, server=server.name, config=config)

    ws.driver_factories = {"local": ws._local_driver, "swarm": slow}
    # "edge" sorts before "local": applied one after the other, it would go first and hold
    # local up for as long as its rollout takes.
    ws.store.add_server("edge", "staging", kind="swarm", docker_host="tcp://edge.example:2376")
    here = defs_repo.worker("here")
    there = defs_repo.worker("there", _extra="server: edge\n")
    head = defs_repo.commit("One definition here, one on the slow server")
    slow_host.hold()

    reports: list[SyncReport] = []
    sync = threading.Thread(target=lambda: reports.append(ws.engine.sync()), daemon=True)
    sync.start()
    try:
        assert slow_host.holding.wait(BOUND_S), "the slow server's rollout never began"
        assert lines.first(f"{here}: revision 1") == f"{here}: revision 1 deployed", lines.lines

        # local is done and settled while the slow server's rollout is still under way.
        assert sync.is_alive() and not reports
        record = ws.store.definition(here)
        assert record is not None and record.status.value == "active"
        (done,) = ws.store.deployments(definition_id=record.id)
        assert done.status is DeploymentStatus.SUCCESS
        assert docker_client.containers.get(here).status == "running"
        local = ws.store.server("local")
        assert local is not None and local.applied_commit == head
        far = ws.store.definition(there)
        assert far is not None
        (under_way,) = ws.store.deployments(definition_id=far.id)
        assert under_way.status is DeploymentStatus.RUNNING
        assert ws.store.last_applied_commit() != head  # not every server has it yet
    finally:
        slow_host.release()
        sync.join(BOUND_S)

    assert not sync.is_alive()
    (report,) = reports
    # The report keeps the registry's order, whichever server finished first.
    assert [s.server for s in report.servers] == ["edge", "local"]
    assert {d.definition_name: d.status for d in report.deployments} == {
        there: DeploymentStatus.SUCCESS, here: DeploymentStatus.SUCCESS
    }
    assert report.ok and ws.store.last_applied_commit() == head
    edge = ws.store.server("edge")
    assert edge is not None and edge.applied_commit == head
