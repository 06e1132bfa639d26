"""The agent's loop over real HTTP: the real API, the real `Agent` polling it, the engine's syncs
through the agent driver; the agent's host a fake one, so these need no Docker engine
(tests/test_agent_e2e.py runs the real processes on a second Docker engine).
"""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner

from conftest import ApiServer, DefinitionsRepo, wait_until
from deployally.agent.link import EngineLink
from deployally.agent.process import EXIT_KEY_REFUSED, EXIT_SETUP, Agent
from deployally.cli import main
from deployally.drivers.agent.driver import AgentDriver
from deployally.drivers.base import DriverConfig
from deployally.drivers.fake import FakeDriver, FakeHost
from deployally.serve.tls import client_context
from deployally.store import ServerRecord
from deployally.types import (
    Action,
    ApplyResult,
    DeploymentStatus,
    InstanceEvent,
    InstanceEventKind,
)
from deployally.workspace import Workspace
from test_tls import _key, _self_signed, _write_key

HEARTBEAT_S = 0.1
WAIT_S = 30.0  # a bound on waiting, never an expectation of speed


class Running:
    """An Agent on its own thread, with its exit code once it ends."""

    def __init__(self, url: str, key: str, host: FakeHost) -> None:
        self.host = host
        self.agent = Agent(
            EngineLink(url, key),
            lambda server, owner: FakeDriver(host, owner=owner, server=server),
            heartbeat_s=HEARTBEAT_S,
            docker_version=lambda: "27.0-test",
        )
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.code = self.agent.run()

    def stop(self) -> int | None:
        self.agent.stop()
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive(), "the agent did not stop"
        return self.code


@pytest.fixture
def repo(tmp_path: Path) -> DefinitionsRepo:
    return DefinitionsRepo(tmp_path / "repo", "a" + tmp_path.name[-6:].replace("_", ""))


@pytest.fixture
def ws(repo: DefinitionsRepo, tmp_path: Path) -> Iterator[Workspace]:
    local = FakeHost()

    def local_driver(server: ServerRecord, config: DriverConfig) -> FakeDriver:
        return FakeDriver(local, owner="eng_test", server=server.name, config=config)

    def agent_driver(server: ServerRecord, config: DriverConfig) -> AgentDriver:
        return AgentDriver(server.name, owner="eng_test", config=config)

    factories = {"local": local_driver, "agent": agent_driver}
    ws = Workspace.open(repo.path, tmp_path / "state", driver_factories=factories)
    ws.local_host = local  # type: ignore[attr-defined]
    yield ws
    ws.close()


@pytest.fixture
def api(ws: Workspace) -> Iterator[ApiServer]:
    server = ApiServer(ws)
    yield server
    server.close()


def _servers(api: ApiServer, token: str) -> dict[str, dict[str, object]]:
    return {s["name"]: s for s in api.request("GET", "/servers", token).json()["data"]}


def _id(ws: Workspace, name: str) -> str:
    record = ws.store.definition(name)
    assert record is not None
    return record.id


def _sync_in_thread(ws: Workspace) -> object:
    """ws.engine.sync() on a thread of its own (as `serve` runs it), its report returned."""
    out: list[object] = []
    thread = threading.Thread(target=lambda: out.append(ws.engine.sync()))
    thread.start()
    thread.join(WAIT_S * 2)
    assert out, "the sync did not finish"
    return out[0]


def test_an_agent_server_deploys_through_its_agent_and_goes_offline_without_it(
    ws: Workspace, api: ApiServer, repo: DefinitionsRepo
) -> None:
    token = ws.store.create_token("reader", "read")
    _, key = ws.store.add_server("edge", "staging")
    assert _servers(api, token)["edge"]["status"] == "pending"
    edge = FakeHost()
    agent = Running(api.url, key, edge)
    try:
        shown = wait_until(
            lambda: (s := _servers(api, token)["edge"])["status"] == "online" and s, WAIT_S,
            "the agent's server online",
        )
        assert shown["docker_version"] == "27.0-test" and shown["agent_version"]  # type: ignore[index]
        assert shown["last_seen_at"]  # type: ignore[index]
        # `deployally server list` (another process: it reads what the engine recorded) agrees.
        listed_cli = CliRunner().invoke(
            main, ["server", "list", "--json", "--repo", str(ws.repo_path), "--state-dir",
                   str(ws.state_dir)],
        )
        assert listed_cli.exit_code == 0, listed_cli.output
        by_name = {s["name"]: s for s in json.loads(listed_cli.stdout)}
        assert by_name["edge"]["status"] == "online"

        app = repo.worker("app", _extra="server: edge\n")
        here = repo.worker("here")
        repo.commit("One on the agent's server, one here")
        report = _sync_in_thread(ws)
        statuses = {d.definition_name: d.status for d in report.deployments}  # type: ignore[attr-defined]
        assert statuses == {app: DeploymentStatus.SUCCESS, here: DeploymentStatus.SUCCESS}
        assert app in edge.instances and app not in ws.local_host.instances  # type: ignore[attr-defined]
        assert here not in edge.instances

        # Its deployment log came back from the agent's host, line by line.
        (deployment,) = ws.store.deployments(definition_id=_id(ws, app))
        lines = [line.message for _, line in ws.store.logs_since(deployment.id, 0)]
        assert any("created" in line for line in lines), lines

        srv = ws.store.server("edge")
        assert srv is not None
        listed = api.request("GET", "/instances", token).json()["data"]
        assert {(i["container_name"], i["server_id"]) for i in listed} >= {(app, srv.id)}
        assert _servers(api, token)["edge"]["running_instances"] == 1

        # An operator's stop goes to the agent's host, and its Docker event comes back.
        heard: list[InstanceEvent] = []
        driver = ws.driver_for("edge")
        assert driver is not None
        stream = driver.watch(heard.append)
        try:
            (inst,) = [i for i in listed if i["container_name"] == app]
            writer = ws.store.create_token("writer", "write")
            stopped = api.request("POST", f"/instances/{inst['id']}/stop", writer)
            assert stopped.status_code == 200 and stopped.json()["data"]["status"] == "exited"
            assert edge.instances[app].state.value != "running"
            wait_until(lambda: any(e.name == app and e.kind is InstanceEventKind.STOPPED
                                   for e in heard), WAIT_S, "the agent's stop event")
        finally:
            stream.stop()
    finally:
        assert agent.stop() == 0
    wait_until(lambda: _servers(api, token)["edge"]["status"] == "offline", WAIT_S, "edge offline")


def test_a_deployment_for_an_offline_server_waits_and_then_runs_once(
    ws: Workspace, api: ApiServer, repo: DefinitionsRepo
) -> None:
    token = ws.store.create_token("reader", "read")
    _, key = ws.store.add_server("edge", "production")
    edge = FakeHost()
    app = repo.worker("app", _extra="server: edge\n", message="one")
    repo.commit("Define app on edge")
    first = Running(api.url, key, edge)
    wait_until(lambda: _servers(api, token)["edge"]["status"] == "online", WAIT_S, "edge online")
    assert _sync_in_thread(ws).ok  # type: ignore[attr-defined]
    first.stop()
    wait_until(lambda: _servers(api, token)["edge"]["status"] == "offline", WAIT_S, "edge offline")

    repo.worker("app", _extra="server: edge\n", message="two")
    repo.commit("A new revision while edge is offline")
    _sync_in_thread(ws)
    shown = api.request("GET", "/deployments?status=waiting", token).json()["data"]
    (waiting,) = [d for d in shown if d["definition_name"] == app]
    assert waiting["revision"] == 2
    assert waiting["waiting_for"]["kind"] == "server" and waiting["waiting_for"]["since"]
    assert "edge" in waiting["waiting_for"]["summary"] and "offline" in waiting["waiting_for"]["summary"]
    _sync_in_thread(ws)  # still offline: the same one still waits, nothing more is recorded
    assert len(ws.store.deployments(definition_id=_id(ws, app))) == 2

    second = Running(api.url, key, edge)
    try:
        wait_until(lambda: _servers(api, token)["edge"]["status"] == "online", WAIT_S, "edge back")
        assert _sync_in_thread(ws).ok  # type: ignore[attr-defined]
        again = _sync_in_thread(ws)
        assert again.deployments == ()  # type: ignore[attr-defined]
    finally:
        second.stop()
    ran = [d for d in ws.store.deployments(definition_id=_id(ws, app)) if d.revision == 2]
    assert [(d.id, d.status) for d in ran] == [(waiting["id"], DeploymentStatus.SUCCESS)]
    assert edge.instances[app].revision == 2
    # Revision 2 replaced revision 1 once: one update, never two.
    assert [what for what, name in edge.history if name == app] == ["create", "update"]


def test_a_wrong_or_rotated_key_is_refused_and_the_agent_exits(
    ws: Workspace, api: ApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    record, key = ws.store.add_server("edge", "staging")
    edge = FakeHost()
    wrong = Running(api.url, "da_server_" + "0" * 32, edge)
    wrong.thread.join(WAIT_S)
    assert wrong.code == EXIT_KEY_REFUSED
    assert "refused this server key" in caplog.text and "not known" in caplog.text
    caplog.clear()

    running = Running(api.url, key, edge)
    wait_until(lambda: ws.store.server("edge").agent_version, WAIT_S, "edge heard from")  # type: ignore[union-attr]
    ws.store.rotate_server_key(record.id)
    running.thread.join(WAIT_S)
    assert running.code == EXIT_KEY_REFUSED
    assert "refused this server key" in caplog.text and "rotate-key" in caplog.text


class Resolving(FakeDriver):
    """A fake host's driver that keeps what each applied spec's env resolved to, as Docker would
    receive it on the agent's host."""

    resolved: ClassVar[dict[str, dict[str, str]]] = {}

    def apply(self, action: Action, **kw: Any) -> ApplyResult:  # type: ignore[override]
        if action.desired is not None:
            Resolving.resolved[action.name] = {k: kw["resolve"](v) for k, v in action.desired.env}
        return super().apply(action, **kw)


def test_a_secret_goes_to_its_servers_agent_only_and_never_into_a_log(
    ws: Workspace, api: ApiServer, repo: DefinitionsRepo, caplog: pytest.LogCaptureFixture
) -> None:
    value = "s3cret-" + "x" * 12
    ws.store.set_secret("token", value)
    token = ws.store.create_token("reader", "read")
    _, key = ws.store.add_server("edge", "staging")
    edge = FakeHost()
    app = repo.worker("app", _extra="server: edge\n", message={"secret": "token"})  # type: ignore[arg-type]
    here = repo.worker("here", message={"secret": "token"})  # type: ignore[arg-type]
    repo.commit("A secret used on the edge server and here")
    agent = Agent(
        EngineLink(api.url, key),
        lambda server, owner: Resolving(edge, owner=owner, server=server),
        heartbeat_s=HEARTBEAT_S,
    )
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: _servers(api, token)["edge"]["status"] == "online", WAIT_S, "edge online")
        Resolving.resolved.clear()
        assert _sync_in_thread(ws).ok  # type: ignore[attr-defined]
    finally:
        agent.stop()
        thread.join(WAIT_S)
    # The agent resolved the value it was sent, for its own definition alone.
    assert Resolving.resolved == {app: {"MESSAGE": value}}
    assert here in ws.local_host.instances  # type: ignore[attr-defined]
    # Neither the agent's log nor any deployment's log nor the API shows it.
    assert value not in caplog.text
    for name in (app, here):
        for d in ws.store.deployments(definition_id=_id(ws, name)):
            assert all(value not in line.message for _, line in ws.store.logs_since(d.id, 0))
    assert value not in api.request("GET", "/deployments", token).text
    assert value not in api.request("GET", "/instances", token).text


def test_the_agent_endpoints_refuse_what_no_agent_sends(ws: Workspace, api: ApiServer) -> None:
    _, key = ws.store.add_server("edge", "staging")
    admin = ws.store.create_token("admin", "admin")
    bad = api.request("POST", "/agent/poll", key, json={"heartbeat_s": -1, "extra": 1})
    assert bad.status_code == 422
    assert {d["field"] for d in bad.json()["error"]["details"]} == {"session", "heartbeat_s", "extra"}
    assert api.request("POST", "/agent/poll", admin, json={}).status_code == 403  # a token is no key
    gone = api.request("POST", "/agent/calls/call_0", key,
                       json={"session": "s", "kind": "result", "payload": {"ok": True}})
    assert gone.status_code == 409 and "not waited for" in gone.json()["error"]["message"]
    events = api.request("POST", "/agent/events", key, json={"session": "s", "events": [{"kind": 1}]})
    assert events.status_code == 422
    assert ws.store.server("edge").last_seen_at is None  # type: ignore[union-attr]


def test_an_agent_checks_an_https_engine_against_its_ca_file(
    ws: Workspace, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key_pem = _key()
    cert_file = _self_signed(key_pem, tmp_path / "engine.crt")
    key_file = _write_key(key_pem, tmp_path / "engine.key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    served = ApiServer(ws, ssl_context=context)
    try:
        _, key = ws.store.add_server("edge", "staging")
        edge = FakeHost()
        # Without the engine's CA the certificate is refused, and the agent keeps trying.
        unchecked = Agent(EngineLink(served.url, key), lambda s, o: FakeDriver(edge, owner=o, server=s),
                          heartbeat_s=HEARTBEAT_S)
        thread = threading.Thread(target=unchecked.run, daemon=True)
        thread.start()
        def refused() -> bool:
            errors = [str(getattr(r, "fields", {}).get("error")) for r in caplog.records]
            return any("certificate verify failed" in e and "--ca-file" in e for e in errors)

        wait_until(refused, WAIT_S, "a refused certificate")
        unchecked.stop()
        thread.join(WAIT_S)
        assert ws.store.server("edge").last_seen_at is None  # type: ignore[union-attr]
        # With --ca-file it connects.
        checked = Agent(EngineLink(served.url, key, context=client_context(cert_file)),
                        lambda s, o: FakeDriver(edge, owner=o, server=s), heartbeat_s=HEARTBEAT_S)
        thread = threading.Thread(target=checked.run, daemon=True)
        thread.start()
        wait_until(lambda: ws.store.server("edge").agent_version, WAIT_S, "the agent connected")  # type: ignore[union-attr]
        checked.stop()
        thread.join(WAIT_S)
    finally:
        served.close()


def _poll(api: ApiServer, key: str, session: str, **body: object) -> Any:
    return api.session.post(
        api.url + "/api/v1/agent/poll",
        json={"session": session, "heartbeat_s": HEARTBEAT_S, **body},
        headers={"Authorization": f"Bearer {key}"},
        timeout=WAIT_S,
    )


def test_a_second_agent_with_the_same_key_is_refused_and_the_first_keeps_its_server(
    ws: Workspace, api: ApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    token = ws.store.create_token("reader", "read")
    _, key = ws.store.add_server("edge", "production")
    first = Running(api.url, key, FakeHost())
    try:
        wait_until(lambda: _servers(api, token)["edge"]["status"] == "online", WAIT_S, "edge online")
        answer = _poll(api, key, "session_second")
        assert answer.status_code == 409
        message = answer.json()["error"]["message"]
        assert "another agent with this key is polling from 127.0.0.1 since" in message
        assert "rotate-key edge" in message
        driver = ws.drivers.for_server(ws.store.server("edge").id)  # type: ignore[union-attr]
        assert driver.channel.session == first.agent.session  # type: ignore[attr-defined]
    finally:
        first.stop()


def test_a_heartbeat_above_the_bound_is_refused_naming_it(ws: Workspace, api: ApiServer) -> None:
    _, key = ws.store.add_server("edge", "production")
    answer = _poll(api, key, "session_a", heartbeat_s=3600)
    assert answer.status_code == 422
    assert "heartbeat_s" in answer.text and "60" in answer.text


def test_a_new_session_without_a_docker_version_clears_the_old_one(ws: Workspace, api: ApiServer) -> None:
    token = ws.store.create_token("reader", "read")
    _, key = ws.store.add_server("edge", "production")
    assert _poll(api, key, "session_a", docker_version="27.0").status_code == 200
    assert _servers(api, token)["edge"]["docker_version"] == "27.0"
    driver = ws.drivers.for_server(ws.store.server("edge").id)  # type: ignore[union-attr]
    driver.channel._last_poll = None  # type: ignore[attr-defined]  # session_a went silent
    assert _poll(api, key, "session_b").status_code == 200
    assert _servers(api, token)["edge"]["docker_version"] is None


def test_a_url_with_a_wrong_path_ends_the_agent_with_exit_4_naming_url(
    ws: Workspace, api: ApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    _, key = ws.store.add_server("edge", "production")
    wrong = Running(api.url + "/foo", key, FakeHost())
    wrong.thread.join(WAIT_S)
    assert wrong.code == EXIT_SETUP
    assert "404" in caplog.text and "--url" in caplog.text


def test_a_key_file_others_can_read_is_refused(ws: Workspace, api: ApiServer, tmp_path: Path) -> None:
    _, key = ws.store.add_server("edge", "production")
    key_file = tmp_path / "edge.key"
    key_file.write_text(key)
    key_file.chmod(0o644)
    result = CliRunner().invoke(main, ["agent", "--url", api.url, "--key-file", str(key_file)])
    assert result.exit_code != 0
    assert "can be read by others" in result.output and f"chmod 600 {key_file}" in result.output
