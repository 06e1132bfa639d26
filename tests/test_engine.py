"""Engine.sync() orchestration on the fake driver: real git, a real store, no Docker.

Waiting outcomes, servers whose outcomes are their own, and `deployally plan`
previewing exactly what the sync then does.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ApiServer, DefinitionsRepo
from deployally.api.views import definition_view
from deployally.drivers.base import DriverConfig
from deployally.drivers.fake import FakeDriver, FakeHost
from deployally.source.tree import DirTree
from deployally.store import ServerRecord
from deployally.sync.preview import preview
from deployally.types import ActionKind, DeploymentStatus, WaitKind
from deployally.workspace import Workspace

BROKEN = "broken"  # a MESSAGE that makes the fake fail the health gate


@pytest.fixture
def repo(tmp_path: Path) -> DefinitionsRepo:
    return DefinitionsRepo(tmp_path / "repo", "e" + tmp_path.name[-6:].replace("_", ""))


class Hosts:
    """One fake host per server name; `down` ones are switched off."""

    def __init__(self) -> None:
        self.by_server: dict[str, FakeHost] = {}

    def __getitem__(self, server: str) -> FakeHost:
        if server not in self.by_server:
            host = self.by_server[server] = FakeHost()
            host.fail_where(lambda s: ("MESSAGE", BROKEN) in s.env, "exited with code 3")
        return self.by_server[server]

    def factory(self, server: ServerRecord, config: DriverConfig) -> FakeDriver:
        return FakeDriver(self[server.name], owner="eng_test", server=server.name, config=config)


@pytest.fixture
def hosts() -> Hosts:
    return Hosts()


@pytest.fixture
def ws(repo: DefinitionsRepo, tmp_path: Path, hosts: Hosts) -> Iterator[Workspace]:
    factories = {"local": hosts.factory, "swarm": hosts.factory}
    ws = Workspace.open(repo.path, tmp_path / "state", driver_factories=factories)
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


def test_a_definition_waiting_for_its_dependency_is_no_failure(
    repo: DefinitionsRepo, ws: Workspace
) -> None:
    db = repo.worker("db", message=BROKEN)
    app = repo.worker("app", _extra=f"depends_on: [{db}]\n")
    repo.commit("db fails, app needs it")

    report = ws.engine.sync()

    by_name = {d.definition_name: d for d in report.deployments}
    assert by_name[db].status is DeploymentStatus.FAILED
    waiting = by_name[app]
    assert waiting.status is DeploymentStatus.WAITING
    stored = ws.store.deployment(waiting.id)
    assert stored is not None and stored.waiting is not None and stored.waiting.on == (db,)
    assert any("waiting: dependency" in line.message for line in stored.logs)
    # No failure webhook and no backoff for the one that waits; the failed one has both.
    failed = [d["name"] for e, d in events(ws) if e == "deployment.failed"]
    assert failed == [db]
    assert not any(e == "deployment.started" and d["name"] == app for e, d in events(ws))
    assert ws.engine.retries.waiting(db) and not ws.engine.retries.waiting(app)
    record = ws.store.definition(app)
    assert record is not None and record.status.value == "pending" and record.last_error is None
    view = definition_view(record, None, ws.store.waiting_by_definition().get(record.id))
    assert view["waiting_for"]["kind"] == "dependency" and view["waiting_for"]["on"] == [db]
    assert "1 waiting" in report.summary()
    api = ApiServer(ws)
    try:
        token = ws.store.create_token("reader", "read")
        shown = api.request("GET", f"/deployments/{waiting.id}", token).json()["data"]
        assert shown["status"] == "waiting" and shown["waiting_for"]["on"] == [db]
        assert shown["waiting_for"]["kind"] == "dependency" and shown["waiting_for"]["since"]
        listed = api.request("GET", "/deployments?status=waiting", token).json()["data"]
        assert [d["id"] for d in listed] == [waiting.id]
        defined = api.request("GET", f"/definitions/{app}", token).json()["data"]
        assert defined["status"] == "pending" and defined["waiting_for"]["on"] == [db]
    finally:
        api.close()

    # Nothing changed: the next sync records nothing new for it.
    again = ws.engine.sync()
    assert app not in {d.definition_name for d in again.deployments}
    assert len(ws.store.deployments(definition_id=record.id)) == 1

    # db is fixed: app's same deployment runs, after db.
    repo.worker("db", message="fixed")
    repo.commit("Fix db")
    fixed = ws.engine.sync()
    done = {d.definition_name: d for d in fixed.deployments}
    assert done[db].status is DeploymentStatus.SUCCESS
    assert done[app].id == waiting.id and done[app].status is DeploymentStatus.SUCCESS
    assert ws.store.waiting_by_definition() == {}
    assert fixed.ok and ws.store.last_applied_commit() == fixed.commit


def test_an_unreachable_server_holds_up_no_other(
    repo: DefinitionsRepo, ws: Workspace, hosts: Hosts
) -> None:
    ws.store.add_server("far", "production", kind="swarm", docker_host="tcp://far.example:2376")
    hosts["far"].reachable = False
    near = repo.worker("near")
    far = repo.worker("far", _extra="server: far\n")
    head = repo.commit("One here, one on a server that does not answer")

    report = ws.engine.sync()

    # The report counts what waits (the push's summary says "1 waiting"), as no failure.
    assert {d.definition_name: d.status.value for d in report.deployments} == {
        near: "success", far: "waiting"
    }
    assert "1 waiting" in report.summary() and "0 failed" in report.summary()
    assert near in hosts["local"].instances
    assert list(report.unreachable) == ["far"] and "switched off" in report.unreachable["far"]
    assert not report.ok
    # The change that could not go out waits for the server, saying since when and why.
    (waiting,) = ws.store.deployments(definition_id=ws.store.definition(far).id)  # type: ignore[union-attr]
    assert waiting.status is DeploymentStatus.WAITING and waiting.server_id == "far"
    assert waiting.waiting is not None and waiting.waiting.kind is WaitKind.SERVER
    assert "server far is unreachable" in waiting.waiting.summary
    assert "switched off" in waiting.waiting.summary
    since = waiting.waiting.since
    ws.engine.sync()  # still down: the same deployment still waits, since the same moment
    (still,) = ws.store.deployments(definition_id=ws.store.definition(far).id)  # type: ignore[union-attr]
    assert (still.id, still.status, still.waiting.since if still.waiting else None) == (
        waiting.id, DeploymentStatus.WAITING, since
    )
    # Each server's applied commit is its own; the engine's waits for both.
    assert ws.store.server("local").applied_commit == head  # type: ignore[union-attr]
    assert ws.store.server("far").applied_commit is None  # type: ignore[union-attr]
    assert ws.store.last_applied_commit() is None
    assert ws.engine.next_retry_s() is not None  # tried again soon

    hosts["far"].reachable = True
    back = ws.engine.sync()
    assert {d.definition_name: d.status.value for d in back.deployments} == {far: "success"}
    assert ws.store.last_applied_commit() == head
    # It ran once, as the deployment that waited.
    (ran,) = ws.store.deployments(definition_id=ws.store.definition(far).id)  # type: ignore[union-attr]
    assert (ran.id, ran.status, ran.waiting) == (waiting.id, DeploymentStatus.SUCCESS, None)


def test_the_plan_preview_is_what_the_sync_then_does(
    repo: DefinitionsRepo, ws: Workspace, tmp_path: Path
) -> None:
    ws.store.add_server("edge", "staging")  # an agent: applied on its own host, not here
    ws.store.set_secret("token", "s3cret")
    repo.write(
        "catalog/tools/needs-secret.yaml",
        "name: Needs a secret\ndescription: d\nversion: '1'\n"
        "taxonomy: {kingdom: assets, family: tools, species: secret, variant: plain, specimen: '1'}\n"
        "deprecated: false\n"
        "spec:\n  image: {repository: busybox, tag: stable}\n  profiles: [development]\n"
        "  user_inputs:\n    token: {type: password, required: true}\n"
        "  env:\n    TOKEN: '{{ params.token }}'\n",
    )
    keyed = repo.name("keyed")
    repo.write(f"definitions/{keyed}.yaml",
               f"name: {keyed}\ntemplate: tools/secret/plain/1\nparams:\n  token: {{secret: token}}\n")
    web, steady, going = repo.worker("web", message="one"), repo.worker("steady"), repo.worker("going")
    repo.commit("Start")
    assert ws.engine.sync().ok

    repo.worker("web", message="two")  # an update
    repo.worker("edge", _extra="server: edge\n")  # on the agent's server: not applied here
    repo.remove(f"definitions/{going}.yaml")  # a removal held back...
    repo.write("definitions/unreadable.yaml", "name: [unclosed\n")  # ...while this cannot be read
    record = ws.store.definition(steady)
    assert record is not None
    from deployally.api.deployments import _request_deployment
    from deployally.types import Reason, ReasonKind

    _request_deployment(ws.store, record, "local", Reason(ReasonKind.OPERATOR, "redeploy"),
                        record.current_revision, None, "test")

    the_plan, _ = preview(ws.repo, ws.store, DirTree(repo.path), ws.drivers)
    previewed = {a.name: a.kind for a in the_plan.changed()}
    assert previewed == {web: ActionKind.UPDATE, steady: ActionKind.UPDATE}

    repo.commit("The change the preview showed")
    report = ws.engine.sync()
    assert {d.definition_name: d.action for d in report.deployments} == previewed


def test_commits_folded_into_one_sync_send_one_definition_event_naming_their_revisions(
    repo: DefinitionsRepo, ws: Workspace
) -> None:
    web = repo.worker("web")
    first = repo.commit("Add web")
    assert ws.engine.sync().ok
    for n in (2, 3, 4):  # three pushes land before the engine looks
        repo.worker("web", message=f"v{n}")
        repo.commit(f"web v{n}")
    cache = repo.worker("cache")
    head = repo.commit("Add cache")
    assert ws.engine.sync().ok

    told = [(e, d["name"], d["revision"], d["revisions"], d["since_commit"], d["commit"])
            for e, d in events(ws) if e.startswith("definition.")]
    assert told == [
        ("definition.created", web, 1, [1], None, first),
        ("definition.created", cache, 1, [1], first, head),  # one sync's events go by name
        ("definition.updated", web, 4, [2, 3, 4], first, head),
    ]


def test_a_registered_server_no_definition_names_holds_up_no_sync(
    repo: DefinitionsRepo, ws: Workspace, hosts: Hosts
) -> None:
    """An agent registered before it is started (nothing named it, nothing applied there) is
    not asked: the sync is ok and the commit counts as applied."""
    ws.store.add_server("far", "production", kind="swarm", docker_host="tcp://far.example:2376")
    hosts["far"].reachable = False
    repo.worker("near")
    head = repo.commit("One here; far is registered but named by nothing yet")

    report = ws.engine.sync()

    assert report.ok and report.unreachable == {}, report
    assert ws.store.last_applied_commit() == head
