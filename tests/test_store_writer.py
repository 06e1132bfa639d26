"""Deployments recorded in batches: every row and log line there, in order, durable when the
journal says so, in far fewer commits than rows, and nothing lost while the store refuses writes."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from deployally import identity
from deployally.errors import NotFound, StoreUnavailable
from deployally.store import LOCAL_SERVER_ID, Store
from deployally.store import db as store_db
from deployally.store.writer import BatchWriter
from deployally.sync.record import StoreJournal
from deployally.types import (
    Action,
    ActionKind,
    Deployment,
    DeploymentStatus,
    Reason,
    ReasonKind,
)

T0 = datetime(2026, 12, 1, 23, 0, tzinfo=UTC)


class CountingStore(Store):
    """A store that counts the transactions it commits, on every thread's connection."""

    commits = 0
    _count_lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        fresh = getattr(self._local, "conn", None) is None
        conn = super()._conn()
        if fresh:
            conn.set_trace_callback(self._saw)
        return conn

    def _saw(self, statement: str) -> None:
        if statement.strip().upper() == "COMMIT":
            with self._count_lock:
                CountingStore.commits += 1


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "state")
    yield s
    s.close()


def deployment(n: int) -> Deployment:
    name = f"web{n:03d}"
    return Deployment(
        id=f"deploy_{n:012x}", definition_id=identity.definition_id(name), definition_name=name,
        server_id=LOCAL_SERVER_ID, revision=1, commit="a" * 40, action=ActionKind.CREATE,
        status=DeploymentStatus.PENDING, reason=Reason(ReasonKind.DEFINITION, "new", "a" * 40),
        created_at=T0,
    )


def record_one(journal: StoreJournal, dep: Deployment) -> None:
    """What an applier reports for one rollout that succeeds."""
    journal.opened(dep)
    journal.log(dep.id, f"create {dep.definition_name}: new")
    journal.log(dep.id, "created container 0123456789ab")
    dep = replace(dep, status=DeploymentStatus.RUNNING, started_at=T0)
    journal.started(dep)
    journal.log(dep.id, "running after 2.0s")
    journal.finished(Action(ActionKind.CREATE, dep.definition_name, None, None), None,
                     replace(dep, status=DeploymentStatus.SUCCESS, finished_at=T0), "deployed")


def test_a_hundred_rollouts_at_once_are_all_recorded_in_order_in_far_fewer_commits_than_rows(
    tmp_path: Path,
) -> None:
    store = CountingStore(tmp_path / "state")
    journal = StoreJournal(store, progress=lambda line: None)
    start = threading.Barrier(100)

    def rollout(n: int) -> None:
        start.wait()
        record_one(journal, deployment(n))

    CountingStore.commits = 0
    threads = [threading.Thread(target=rollout, args=(n,)) for n in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    commits = CountingStore.commits
    store.close()
    with Store(tmp_path / "state") as reader:  # what another process (the API) sees
        deps = reader.deployments(limit=200)
        assert len(deps) == 100
        assert {d.status for d in deps} == {DeploymentStatus.SUCCESS}
        for d in deps:
            logs = [line.message for line in reader.deployment(d.id).logs]  # type: ignore[union-attr]
            assert logs == [f"create {d.definition_name}: new", "created container 0123456789ab",
                            "running after 2.0s"]
    # 600 writes (opened, three lines, started, finished per rollout), one commit each before.
    assert commits < 300, f"{commits} commits for 600 writes"


def test_a_running_record_is_durable_when_started_returns(tmp_path: Path, store: Store) -> None:
    journal = StoreJournal(store, progress=lambda line: None)
    dep = deployment(1)
    journal.opened(dep)
    journal.log(dep.id, "create web001: new")
    journal.started(replace(dep, status=DeploymentStatus.RUNNING, started_at=T0))
    # Another connection, as the engine after a crash would open: the row and the line are there.
    with Store(tmp_path / "state") as after_crash:
        seen = after_crash.deployment(dep.id)
        assert seen is not None and seen.status is DeploymentStatus.RUNNING
        assert [line.message for line in seen.logs] == ["create web001: new"]


def test_log_lines_are_kept_while_the_store_is_locked_and_written_before_the_outcome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_db, "BUSY_TIMEOUT_MS", 200)
    store = Store(tmp_path / "state")
    journal = StoreJournal(store, progress=lambda line: None)
    dep = replace(deployment(1), status=DeploymentStatus.RUNNING, started_at=T0)
    journal.opened(dep)
    holder = sqlite3.connect(tmp_path / "state" / "deployally.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process mid-transaction
    try:
        journal.log(dep.id, "created container 0123456789ab")  # no error: kept
        with pytest.raises(StoreUnavailable, match="locked by another process"):
            journal.started(dep)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    journal.started(dep)
    journal.finished(Action(ActionKind.CREATE, dep.definition_name, None, None), None,
                     replace(dep, status=DeploymentStatus.SUCCESS, finished_at=T0), "deployed")
    seen = store.deployment(dep.id)
    assert seen is not None and seen.status is DeploymentStatus.SUCCESS
    assert [line.message for line in seen.logs] == ["created container 0123456789ab"]
    store.close()


def test_one_failing_write_fails_alone_not_the_others_of_its_batch(store: Store) -> None:
    writer = BatchWriter(store)
    writer.keep(lambda: store.append_log("deploy_000000000bad", "of a deployment never made"))
    writer.write(lambda: store.create_deployment(deployment(2)))
    with pytest.raises(NotFound, match="deploy_000000000bad"):
        writer.write(lambda: store.append_log("deploy_000000000bad", "again"))
    writer.write(lambda: store.append_log(deployment(2).id, "made"))
    seen = store.deployment(deployment(2).id)
    assert seen is not None and [line.message for line in seen.logs] == ["made"]
