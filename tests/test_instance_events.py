"""serve/instance_events.py on the fake driver (real git, a real store, no Docker): what an
instance.* webhook says of the instance it is about."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import DefinitionsRepo
from deployally.drivers.base import DriverConfig
from deployally.drivers.fake import FakeDriver, FakeHost
from deployally.serve.instance_events import HEAL_DELAY_S, InstanceEventHandler
from deployally.store import ServerRecord
from deployally.workspace import Workspace

BROKEN = "broken"  # a MESSAGE that makes the fake fail the health gate


@pytest.fixture
def host() -> FakeHost:
    host = FakeHost()
    host.fail_where(lambda s: ("MESSAGE", BROKEN) in s.env, "exited with code 3")
    return host


@pytest.fixture
def ws(tmp_path: Path, host: FakeHost) -> Iterator[Workspace]:
    def factory(server: ServerRecord, config: DriverConfig) -> FakeDriver:
        return FakeDriver(host, owner="eng_test", server=server.name, config=config)

    repo = DefinitionsRepo(tmp_path / "repo", "i" + tmp_path.name[-6:].replace("_", ""))
    ws = Workspace.open(repo.path, tmp_path / "state", driver_factories={"local": factory})
    ws.test_repo = repo  # type: ignore[attr-defined]
    yield ws
    ws.close()


def instance_webhooks(ws: Workspace) -> list[tuple[str, dict[str, object]]]:
    """Every instance.* event queued for webhooks, oldest first."""
    conn = sqlite3.connect(ws.store.path)
    try:
        rows = conn.execute("SELECT event, data FROM events ORDER BY rowid").fetchall()
    finally:
        conn.close()
    return [(e, json.loads(d)) for e, d in rows if e.startswith("instance.")]


def test_instance_webhooks_carry_the_revision_and_commit_the_instance_runs(
    ws: Workspace, host: FakeHost
) -> None:
    repo: DefinitionsRepo = ws.test_repo  # type: ignore[attr-defined]
    name = repo.worker("web")
    first = repo.commit("Add web")
    assert ws.engine.sync().ok

    loop = asyncio.new_event_loop()  # only a heal is scheduled on it; none is run here
    try:
        [(server, driver)] = ws.drivers.applied_here()
        handler = InstanceEventHandler(
            ws, server, loop, wake_sender=lambda: None, trigger_sync=lambda why: None
        )
        stream = driver.watch(handler)
        repo.worker("web", message="two")
        second = repo.commit("Change web")
        assert ws.engine.sync().ok  # the new instance starts before revision 2 is recorded
        repo.worker("web", message=BROKEN)
        repo.commit("Break web")
        ws.engine.sync()  # revision 3 fails its health gate: revision 2 keeps running
        host.stop_behind_our_back(name)
        stream.stop()
        handler.close()  # what it still holds is written, as serve does when it stops
    finally:
        loop.close()

    said = [(e, d["name"], d["revision"], d["commit"]) for e, d in instance_webhooks(ws)]
    assert said == [
        ("instance.started", name, 2, second),
        ("instance.stopped", name, 2, second),
    ], f"revision 1 was {first}"


def test_an_instance_removed_behind_our_back_is_healed_and_is_no_webhook(
    ws: Workspace, host: FakeHost
) -> None:
    repo: DefinitionsRepo = ws.test_repo  # type: ignore[attr-defined]
    name = repo.worker("web")
    repo.commit("Add web")
    assert ws.engine.sync().ok
    heals: list[str] = []
    loop = asyncio.new_event_loop()
    try:
        [(server, driver)] = ws.drivers.applied_here()
        stream = driver.watch(InstanceEventHandler(
            ws, server, loop, wake_sender=lambda: None, trigger_sync=heals.append
        ))
        before = instance_webhooks(ws)
        # Docker says `die` then `destroy`; a heal run between them still saw the container,
        # so the removal itself must ask for one.
        host.remove_behind_our_back(name)
        loop.run_until_complete(asyncio.sleep(HEAL_DELAY_S + 0.3))
        stream.stop()
    finally:
        loop.close()
    assert heals == ["instance.removed"]
    assert instance_webhooks(ws) == before
