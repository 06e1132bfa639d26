"""A sync's cost follows the change, not the repository: real git, a real store, the fake
driver where Docker is not the point and a real Docker engine where it is.

A commit changing one definition among many deploys that one alone; a sync with nothing
changed creates no deployment, reads no definition's row again and asks Docker for one
container list, no inspect; what another process writes to the store is what the next sync
sees.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import DefinitionsRepo, DockerProxy
from deployally.drivers.base import DriverConfig
from deployally.drivers.fake import FakeDriver, FakeHost
from deployally.store import ServerRecord, Store
from deployally.types import ActionKind, DeploymentStatus, InstanceState
from deployally.workspace import Workspace

MANY = 40


@pytest.fixture
def repo(tmp_path: Path) -> DefinitionsRepo:
    return DefinitionsRepo(tmp_path / "repo", "s" + tmp_path.name[-6:].replace("_", ""))


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


def many(repo: DefinitionsRepo, ws: Workspace) -> list[str]:
    """MANY definitions, committed and deployed; their names."""
    names = [repo.worker(f"w{i:02d}", message="one") for i in range(MANY)]
    repo.commit("many definitions")
    report = ws.engine.sync()
    assert report.ok and len(report.deployments) == MANY
    return names


def definition_rows(store: Store) -> Callable[[], list[str]]:
    """Count the definition rows this thread's store connection reads (the sync's intake runs
    on the caller's thread): the names of those read since the last call."""
    read: list[str] = []

    def counting(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> sqlite3.Row:
        columns = [d[0] for d in cursor.description]
        if "desired" in columns and "name" in columns:  # a row of the definitions table
            read.append(row[columns.index("name")])
        return sqlite3.Row(cursor, row)

    store._conn().row_factory = counting

    def since() -> list[str]:
        out = list(read)
        read.clear()
        return out

    return since


def test_a_commit_changing_one_definition_among_many_deploys_that_one_alone(
    repo: DefinitionsRepo, ws: Workspace, host: FakeHost
) -> None:
    names = many(repo, ws)
    refs = {n: host.instances[n].ref for n in names}
    host.history.clear()
    changed = names[17]
    repo.worker("w17", message="two")
    head = repo.commit("change one")

    report = ws.engine.sync()

    assert report.ok
    assert [(d.definition_name, d.action, d.status, d.revision, d.commit) for d in report.deployments] == [
        (changed, ActionKind.UPDATE, DeploymentStatus.SUCCESS, 2, head)
    ]
    assert host.history == [("update", changed)]
    assert host.instances[changed].revision == 2
    assert ("MESSAGE", "two") in host.instances[changed].spec.env
    for record in ws.store.definitions():
        expected = 2 if record.name == changed else 1
        assert (record.name, record.current_revision, record.applied_revision) == (
            record.name, expected, expected
        )
    others = [n for n in names if n != changed]
    assert {n: host.instances[n].ref for n in others} == {n: refs[n] for n in others}
    assert [r.number for r in ws.store.revisions(ws.store.definition(changed).id)] == [1, 2]  # type: ignore[union-attr]


def test_a_sync_with_nothing_changed_creates_no_deployment_and_reads_no_definition_row(
    repo: DefinitionsRepo, ws: Workspace, host: FakeHost
) -> None:
    many(repo, ws)
    ws.engine.sync()  # the rows the first sync's deployments wrote are read once more
    before = ws.store.count_deployments()
    rows = definition_rows(ws.store)
    host.history.clear()

    for _ in range(3):
        report = ws.engine.sync()
        assert report.ok and report.deployments == () and report.unchanged == MANY

    assert ws.store.count_deployments() == before
    assert host.history == []
    assert rows() == []  # not one of the MANY rows read again, let alone decoded
    repo.worker("w03", message="two")
    repo.commit("change one")
    assert len(ws.engine.sync().deployments) == 1
    # What the commit changed is read again (its new spec, its status as it deployed), no other.
    assert set(rows()) == {repo.name("w03")}


def test_what_another_process_writes_to_a_definition_is_what_the_next_sync_sees(
    repo: DefinitionsRepo, ws: Workspace, host: FakeHost
) -> None:
    names = many(repo, ws)
    stopped = names[5]
    assert len(ws.store.definitions()) == MANY  # read and kept by this engine
    # An operator's stop from another process (the CLI beside a running engine): the store's
    # record, then the instance itself.
    script = (
        "import sys; from pathlib import Path; from deployally.store import Store\n"
        "with Store(Path(sys.argv[1])) as s:\n"
        "    s.set_operator_stopped(s.definition(sys.argv[2]).id, True)\n"
    )
    subprocess.run([sys.executable, "-c", script, str(ws.state_dir), stopped], check=True)
    host.stop_behind_our_back(stopped)
    host.history.clear()

    report = ws.engine.sync()

    assert report.deployments == ()  # not started again: the operator stopped it
    assert host.instances[stopped].state is InstanceState.EXITED
    record = ws.store.definition(stopped)
    assert record is not None and record.operator_stopped
    assert [r.operator_stopped for r in ws.store.definitions() if r.name == stopped] == [True]
    # And a definition another process deletes is gone from the next complete read.
    delete = (
        "import sys; from pathlib import Path; from deployally.store import Store\n"
        "with Store(Path(sys.argv[1])) as s:\n"
        "    s.delete_definition(s.definition(sys.argv[2]).id)\n"
    )
    subprocess.run([sys.executable, "-c", delete, str(ws.state_dir), names[6]], check=True)
    assert names[6] not in {r.name for r in ws.store.definitions()}
    assert len(ws.store.definitions()) == MANY - 1


@pytest.mark.docker
def test_a_sync_with_nothing_changed_asks_docker_for_one_container_list_and_no_inspect(
    defs_repo: DefinitionsRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    short = tempfile.TemporaryDirectory(prefix="da-", dir="/tmp")  # a socket path fits 108 bytes
    proxy = DockerProxy(Path(short.name) / "docker.sock", host.removeprefix("unix://"))
    proxy.start()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{proxy.path}")  # the driver's client is made lazily
    names = [defs_repo.worker(short_name, message="one") for short_name in ("a", "b", "c")]
    defs_repo.commit("three definitions")
    ws = Workspace.open(defs_repo.path, health_timeout_s=60)
    try:
        assert ws.engine.sync().ok
        ws.engine.sync()  # an engine's first look at the host is behind it
        before = len(proxy.requests)
        report = ws.engine.sync()
        sent = proxy.requests[before:]
    finally:
        ws.close()
        proxy.stop()
        short.cleanup()

    assert report.ok and report.deployments == () and report.unchanged == len(names)
    containers = [line for line in sent if re.match(r"\w+ /v[\d.]+/containers/", line)]
    assert len(containers) == 1 and containers[0].startswith("GET ") and "/containers/json" in containers[0]


def test_a_running_engine_whose_last_commit_was_force_pushed_away_and_collected_syncs_on(
    repo: DefinitionsRepo, ws: Workspace, host: FakeHost
) -> None:
    name = repo.worker("gc", message="one")
    repo.commit("one")
    repo.worker("gc", message="two")
    repo.commit("two")
    assert ws.engine.sync().ok  # this engine has read the commit "two" and what it holds
    repo.git("reset", "-q", "--hard", "HEAD~1")  # a force-push, in effect
    repo.worker("gc", message="three")
    head = repo.commit("three")
    repo.git("reflog", "expire", "--expire=now", "--all")
    repo.git("gc", "-q", "--prune=now")

    report = ws.engine.sync()

    assert report.ok and [(d.definition_name, d.commit) for d in report.deployments] == [(name, head)]
    assert ("MESSAGE", "three") in host.instances[name].spec.env
