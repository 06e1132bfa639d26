"""drivers/registry.py: a driver per server, chosen by the server record's kind."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from deployally.drivers.base import DriverConfig
from deployally.drivers.fake import FakeDriver, FakeHost
from deployally.drivers.registry import DriverRegistry
from deployally.store import LOCAL_SERVER_ID, ServerRecord, Store
from deployally.store.db import _MIGRATIONS


def test_each_server_gets_the_driver_of_its_kind_once(state_dir: Path) -> None:
    host = FakeHost()
    made: list[str] = []

    def local(server: ServerRecord, config: DriverConfig) -> FakeDriver:
        made.append(server.name)
        return FakeDriver(host, owner="eng_test", server=server.name, config=config)

    with Store(state_dir) as store:
        agent, _key = store.add_server("edge-1", "production")
        registry = DriverRegistry(store, {"local": local}, DriverConfig(parallel=2))

        by_name = registry.for_server("local")
        assert by_name is not None and by_name is registry.for_server(LOCAL_SERVER_ID)
        assert by_name.config.parallel == 2
        # An agent applies on its own host; an unknown server has no driver at all.
        assert registry.for_server(agent.id) is None and registry.for_server("edge-1") is None
        assert registry.for_server("nowhere") is None
        assert [(s.name, d) for s, d in registry.applied_here()] == [("local", by_name)]
        assert made == ["local"]


def test_server_kinds_survive_a_migration_from_the_first_schema(state_dir: Path) -> None:
    # A database as the first schema left it (no kind column yet), every later migration to run.
    conn = sqlite3.connect(state_dir / "deployally.db")
    for statement in _MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.executemany(
        "INSERT INTO servers (id, name, environment, description, status, created_at)"
        " VALUES (?, ?, ?, '', 'active', '2026-01-01T00:00:00.000000Z')",
        [(LOCAL_SERVER_ID, "local", "production"), ("srv_0123456789ab", "edge-1", "staging")],
    )
    conn.commit()
    conn.close()
    with Store(state_dir) as store:
        kinds = {s.name: s.kind for s in store.servers()}
    assert kinds == {"edge-1": "agent", "local": "local"}
