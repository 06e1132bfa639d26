"""The /servers endpoints over real HTTP: kinds, status and counts, removal, key rotation; the
api_key is shown once and stored only as a hash."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ApiServer, _git_repo_with_first_commit, commit_busybox
from deployally.api.context import CONTEXT
from deployally.drivers.base import DriverConfig
from deployally.drivers.fake import FakeDriver, FakeHost
from deployally.store import ServerRecord
from deployally.workspace import Workspace


def test_register_as_in_the_document_then_list(
    api: ApiServer, api_tokens: dict[str, str], api_ws: object
) -> None:
    r = api.request(
        "POST",
        "/servers",
        api_tokens["admin"],
        json={
            "name": "servidor-producao-01",
            "environment": "production",
            "description": "Servidor principal de produção",
        },
    )
    assert r.status_code == 201
    data = r.json()["data"]
    assert set(data) >= {"id", "name", "api_key", "status", "created_at"}
    assert data["id"].startswith("srv_") and data["status"] == "pending"
    assert data["api_key"].startswith("da_server_")
    assert data["kind"] == "agent" and data["docker_host"] is None  # agent is the default

    listed = api.request("GET", "/servers", api_tokens["read"]).json()
    assert listed["pagination"]["total"] == 2  # local is always there
    by_name = {s["name"]: s for s in listed["data"]}
    mine = by_name["servidor-producao-01"]
    assert mine["description"] == "Servidor principal de produção"
    assert (mine["status"], mine["last_seen_at"], mine["agent_version"], mine["docker_version"]) == (
        "pending", None, None, None
    )
    assert (mine["definitions"], mine["running_instances"]) == (0, None)
    assert by_name["local"]["kind"] == "local"
    assert data["api_key"] not in listed.__repr__()
    # Only a hash is stored: the key itself is nowhere in the database.
    db = sqlite3.connect(api_ws.store.path)  # type: ignore[attr-defined]
    try:
        dump = "\n".join(db.iterdump())
    finally:
        db.close()
    assert data["api_key"] not in dump


def test_a_taken_name_is_409(api: ApiServer, api_tokens: dict[str, str]) -> None:
    body = {"name": "edge", "environment": "staging"}
    assert api.request("POST", "/servers", api_tokens["admin"], json=body).status_code == 201
    again = api.request("POST", "/servers", api_tokens["admin"], json=body)
    assert again.status_code == 409
    assert "edge" in again.json()["error"]["message"]


def test_environment_must_be_one_of_three(api: ApiServer, api_tokens: dict[str, str]) -> None:
    r = api.request(
        "POST", "/servers", api_tokens["admin"], json={"name": "x1", "environment": "prod"}
    )
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == "environment"


@pytest.mark.parametrize(
    ("extra", "field", "says"),
    [
        ({"kind": "local"}, "kind", "engine's own server"),
        ({"kind": "kubernetes"}, "kind", "agent, swarm"),
        ({"kind": "swarm"}, "docker_host", "needs the address"),
        ({"kind": "agent", "docker_host": "tcp://10.0.0.5:2376"}, "docker_host", "swarm servers only"),
        ({"docker_host": "unix:///var/run/docker.sock"}, "docker_host", "swarm servers only"),
        ({"kind": "swarm", "docker_host": "http://manager:2375"}, "docker_host", "tcp://"),
        ({"kind": "swarm", "docker_host": "ssh://ops:hunter2@manager"}, "docker_host", "password"),
        ({"kind": "swarm", "docker_host": "tcp://"}, "docker_host", "needs a host"),
        ({"kind": "swarm", "docker_host": 2376}, "docker_host", "must be a string"),
        ({"kind": None}, "kind", "not null"),
        ({"description": "two\nlines"}, "description", "one line"),
        ({"description": "x" * 1001}, "description", "at most 1000"),
    ],
)
def test_a_kind_and_docker_host_that_do_not_fit_are_422_naming_the_field(
    api: ApiServer, api_tokens: dict[str, str], extra: dict[str, object], field: str, says: str
) -> None:
    body = {"name": "mgr", "environment": "production", **extra}
    r = api.request("POST", "/servers", api_tokens["admin"], json=body)
    assert r.status_code == 422, r.text
    (detail,) = r.json()["error"]["details"]
    assert detail["field"] == field and says in detail["message"], detail
    assert "hunter2" not in r.text
    names = [s["name"] for s in api.request("GET", "/servers", api_tokens["read"]).json()["data"]]
    assert names == ["local"]


def test_a_swarm_server_shows_its_manager_and_has_no_key(
    api: ApiServer, api_tokens: dict[str, str]
) -> None:
    body = {"name": "mgr", "environment": "production", "kind": "swarm",
            "docker_host": "ssh://ops@manager.example"}
    made = api.request("POST", "/servers", api_tokens["admin"], json=body)
    assert made.status_code == 201, made.text
    data = made.json()["data"]
    assert (data["kind"], data["docker_host"], data["api_key"]) == (
        "swarm", "ssh://ops@manager.example", None
    )
    (mgr,) = [s for s in api.request("GET", "/servers", api_tokens["read"]).json()["data"]
              if s["name"] == "mgr"]
    # The engine reaches a swarm manager itself: one that does not answer is offline.
    assert (mgr["kind"], mgr["status"], mgr["docker_host"]) == (
        "swarm", "offline", "ssh://ops@manager.example"
    )
    rotated = api.request("POST", f"/servers/{data['id']}/rotate-key", api_tokens["admin"])
    assert rotated.status_code == 409 and "no agent" in rotated.json()["error"]["message"]


# ---------------------------------------------------------------- counts and status, on a fake host


@pytest.fixture
def fake_host() -> FakeHost:
    return FakeHost()


@pytest.fixture
def fake_ws(tmp_path: Path, fake_host: FakeHost) -> Iterator[Workspace]:
    """A workspace whose `local` server is a fake host (no Docker)."""

    def factory(server: ServerRecord, config: DriverConfig) -> FakeDriver:
        return FakeDriver(fake_host, owner="eng_test", server=server.name, config=config)

    ws = Workspace.open(
        _git_repo_with_first_commit(tmp_path / "repo"), tmp_path / "state",
        driver_factories={"local": factory},
    )
    yield ws
    ws.close()


@pytest.fixture
def fake_api(fake_ws: Workspace) -> Iterator[tuple[ApiServer, str]]:
    server = ApiServer(fake_ws)
    yield server, fake_ws.store.create_token("ops", "admin")
    server.close()


def _servers(api: ApiServer, token: str) -> dict[str, dict[str, object]]:
    return {s["name"]: s for s in api.request("GET", "/servers", token).json()["data"]}


def _define_far_on_edge(ws: Workspace) -> None:
    """Register server `edge` (staging), commit definition `far` on it, and sync."""
    ws.store.add_server("edge", "staging")
    ws.repo.write(
        {"definitions/far.yaml": "name: far\ntemplate: tools/busybox/plain/stable\nserver: edge\n"
         "params:\n  script: sleep 9\n"},
        message="Define far on edge", author_name="Test", author_email="test@example.com",
        expected_head=ws.repo.head(),
    )
    ws.engine.sync()


def test_list_counts_definitions_and_running_instances_and_shows_reachability(
    fake_ws: Workspace, fake_api: tuple[ApiServer, str], fake_host: FakeHost
) -> None:
    api, token = fake_api
    commit_busybox(fake_ws, "web")
    commit_busybox(fake_ws, "worker")
    _define_far_on_edge(fake_ws)

    seen = _servers(api, token)
    assert {k: seen["local"][k] for k in ("status", "definitions", "running_instances")} == {
        "status": "online", "definitions": 2, "running_instances": 2
    }
    # An agent's containers are not seen here: its count is not known, not zero.
    assert {k: seen["edge"][k] for k in ("status", "definitions", "running_instances")} == {
        "status": "pending", "definitions": 1, "running_instances": None
    }

    fake_host.reachable = False
    api.app[CONTEXT].live.invalidate()
    down = _servers(api, token)["local"]
    assert (down["status"], down["running_instances"]) == ("offline", None)


# ---------------------------------------------------------------- removing, rotating


def test_remove_refuses_local_and_a_server_definitions_name(
    fake_ws: Workspace, fake_api: tuple[ApiServer, str]
) -> None:
    api, admin = fake_api
    read = fake_ws.store.create_token("viewer", "read")
    edge, key = fake_ws.store.add_server("edge", "staging")
    spare, spare_key = fake_ws.store.add_server("spare", "development")
    assert spare_key is not None
    repo = fake_ws.repo
    for name in ("api", "cache"):
        repo.write(
            {f"definitions/{name}.yaml": f"name: {name}\ntemplate: tools/busybox/plain/stable\n"
             f"server: {'edge' if name == 'api' else edge.id}\nparams:\n  script: sleep 9\n"},
            message=f"Define {name}", author_name="Test", author_email="test@example.com",
            expected_head=repo.head(),
        )
    fake_ws.engine.sync()

    local = api.request("DELETE", "/servers/local", admin)
    assert local.status_code == 409 and "cannot be removed" in local.json()["error"]["message"]
    named = api.request("DELETE", f"/servers/{edge.id}", admin)
    assert named.status_code == 409
    assert "api, cache" in named.json()["error"]["message"]  # by name and by srv_ id alike
    assert api.request("DELETE", "/servers/spare", read).status_code == 403
    assert api.request("DELETE", "/servers/srv_000000000000", admin).status_code == 404

    gone = api.request("DELETE", "/servers/spare", admin)
    assert gone.status_code == 200 and gone.json()["data"] == {"id": spare.id, "deleted": True}
    assert set(_servers(api, admin)) == {"local", "edge"}
    refused = api.request("GET", "/agent/desired", spare_key)
    assert refused.status_code == 401 and "removed" in refused.json()["error"]["message"]
    assert api.request("GET", "/agent/desired", key).status_code == 200


def test_rotate_key_shows_a_new_key_once_and_refuses_the_old(
    api: ApiServer, api_tokens: dict[str, str], api_ws: Workspace
) -> None:
    made = api.request(
        "POST", "/servers", api_tokens["admin"], json={"name": "edge-1", "environment": "staging"}
    ).json()["data"]
    old = made["api_key"]
    assert api.request("GET", "/agent/desired", old).status_code == 200
    assert api.request("POST", "/servers/edge-1/rotate-key", api_tokens["write"]).status_code == 403

    rotated = api.request("POST", f"/servers/{made['id']}/rotate-key", api_tokens["admin"])
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["data"]["api_key"]
    assert new.startswith("da_server_") and new != old
    assert rotated.json()["data"]["id"] == made["id"]

    refused = api.request("GET", "/agent/desired", old)
    assert refused.status_code == 401
    assert "rotate-key" in refused.json()["error"]["message"]
    assert api.request("GET", "/agent/desired", new).status_code == 200
    assert new not in str(api.request("GET", "/servers", api_tokens["admin"]).json())
    local = api.request("POST", "/servers/local/rotate-key", api_tokens["admin"])
    assert local.status_code == 409
    missing = api.request("POST", "/servers/nowhere/rotate-key", api_tokens["admin"])
    assert missing.status_code == 404


# ---------------------------------------------------------------- environments


def test_each_view_shows_its_servers_environment_and_definitions_filter_by_it(
    fake_ws: Workspace, fake_api: tuple[ApiServer, str]
) -> None:
    api, token = fake_api
    commit_busybox(fake_ws, "web")  # on local, which is production
    _define_far_on_edge(fake_ws)

    def names(query: str) -> list[str]:
        r = api.request("GET", f"/definitions{query}", token)
        assert r.status_code == 200, r.text
        return [d["name"] for d in r.json()["data"]]

    listed = api.request("GET", "/definitions", token).json()["data"]
    assert {d["name"]: d["environment"] for d in listed} == {"web": "production", "far": "staging"}
    assert names("?environment=staging") == ["far"]
    assert names("?environment=production") == ["web"]
    assert names("?environment=development") == []
    assert names("?environment=staging&server_id=local") == []
    assert names("?environment=staging&server_id=edge") == ["far"]
    bad = api.request("GET", "/definitions?environment=prod", token)
    assert bad.status_code == 400
    assert bad.json()["error"]["details"][0]["field"] == "environment"

    web_id = next(d["id"] for d in listed if d["name"] == "web")
    assert api.request("GET", f"/definitions/{web_id}", token).json()["data"]["environment"] == (
        "production"
    )
    (instance,) = api.request("GET", "/instances", token).json()["data"]
    assert (instance["container_name"], instance["environment"]) == ("web", "production")
    restarted = api.request("POST", f"/instances/{instance['id']}/restart", token)
    assert restarted.status_code == 200 and restarted.json()["data"]["environment"] == "production"
    deployments = api.request("GET", "/deployments", token).json()["data"]
    assert deployments and {d["definition_name"]: d["environment"] for d in deployments}["web"] == (
        "production"
    )
    one = api.request("GET", f"/deployments/{deployments[0]['id']}", token).json()["data"]
    assert one["environment"] == deployments[0]["environment"]
    # The CLI's JSON is the same view.
    from click.testing import CliRunner

    from deployally.cli import main

    where = ["--repo", str(fake_ws.repo_path), "--state-dir", str(fake_ws.state_dir)]
    shown = CliRunner().invoke(main, ["definitions", "list", "--json", *where])
    assert shown.exit_code == 0, shown.output
    assert {d["name"]: d["environment"] for d in json.loads(shown.stdout)} == {
        "web": "production", "far": "staging"
    }
    history = CliRunner().invoke(main, ["deployments", "list", "--json", *where])
    assert {d["definition_name"]: d["environment"] for d in json.loads(history.stdout)}["web"] == (
        "production"
    )


# ---------------------------------------------------------------- names, docker_host, keys


def test_a_name_shaped_like_a_server_id_is_422_naming_name(
    api: ApiServer, api_tokens: dict[str, str]
) -> None:
    body = {"name": "srv_0123456789ab", "environment": "staging"}
    r = api.request("POST", "/servers", api_tokens["admin"], json=body)
    assert r.status_code == 422, r.text
    (detail,) = r.json()["error"]["details"]
    assert detail["field"] == "name" and "server id" in detail["message"]
    names = [s["name"] for s in api.request("GET", "/servers", api_tokens["read"]).json()["data"]]
    assert names == ["local"]


# Each refused form, and what its message must say: ours, with the form expected.
BAD_DOCKER_HOSTS = [
    ("tcp://manager.example", "tcp://HOST:PORT"),  # no port
    ("tcp://manager.example:99999", "1 to 65535"),
    ("tcp://manager.example:port", "1 to 65535"),
    ("ssh://manager.example", "ssh://USER@HOST[:PORT]"),  # no user
    ("ssh://ops@manager.example:0", "1 to 65535"),
    ("unix://var/run/docker.sock", "unix:///abs/path"),  # relative
    ("unix://", "unix:///abs/path"),
    (" tcp://manager.example:2376", "leading or trailing spaces"),
    ("tcp://manager.example:2376 ", "leading or trailing spaces"),
    ("TCP://manager.example:2376", "lower case"),
    ("Ssh://ops@manager.example", "lower case"),
    ("tcp://manager.example:2376/v1.41", "no path"),
    ("tcp://manager.example:2376?tls=1", "no path, query"),
    ("ssh://ops@manager.example/home", "no path"),
    ("tcp://ops@manager.example:2376", "takes no user"),
    ("tcp://[::1:2376", "tcp://HOST:PORT"),
    ("tcp://[zz::1]:2376", "tcp://HOST:PORT"),
    ("tcp://man ager:2376", "space"),
    ("manager.example:2376", "unix:///abs/path, tcp://HOST:PORT or ssh://USER@HOST[:PORT]"),
]


@pytest.mark.parametrize(("docker_host", "says"), BAD_DOCKER_HOSTS)
def test_a_docker_host_not_in_a_documented_form_is_422_saying_the_form(
    api: ApiServer, api_tokens: dict[str, str], docker_host: str, says: str
) -> None:
    body = {"name": "mgr", "environment": "production", "kind": "swarm", "docker_host": docker_host}
    r = api.request("POST", "/servers", api_tokens["admin"], json=body)
    assert r.status_code == 422, r.text
    (detail,) = r.json()["error"]["details"]
    assert detail["field"] == "docker_host" and says in detail["message"], detail
    # Our words, not the URL parser's ("Port could not be cast", "out of range").
    assert "cast" not in detail["message"] and "out of range" not in detail["message"]


# The ssh:// forms name hosts that fail at once (no DNS name, a closed loopback port): an ssh
# command to a host that takes the connection and never answers waits without end.
@pytest.mark.parametrize(
    "docker_host",
    ["unix:///var/run/docker.sock", "tcp://10.0.0.5:2376", "tcp://manager.example:2375",
     "tcp://[fd00::5]:2376", "ssh://ops@manager.example", "ssh://ops@127.0.0.1:2222"],
)
def test_each_documented_docker_host_form_is_taken(
    api: ApiServer, api_tokens: dict[str, str], docker_host: str
) -> None:
    body = {"name": "mgr", "environment": "production", "kind": "swarm", "docker_host": docker_host}
    r = api.request("POST", "/servers", api_tokens["admin"], json=body)
    assert r.status_code == 201, r.text
    assert r.json()["data"]["docker_host"] == docker_host


def test_a_refused_key_is_told_whether_it_was_replaced_removed_or_never_known(
    api: ApiServer, api_tokens: dict[str, str], api_ws: Workspace
) -> None:
    admin = api_tokens["admin"]
    first = api.request(
        "POST", "/servers", admin, json={"name": "edge-1", "environment": "staging"}
    ).json()["data"]["api_key"]
    second = api.request("POST", "/servers/edge-1/rotate-key", admin).json()["data"]["api_key"]
    third = api.request("POST", "/servers/edge-1/rotate-key", admin).json()["data"]["api_key"]

    for replaced in (first, second):
        r = api.request("GET", "/agent/desired", replaced)
        assert r.status_code == 401
        message = r.json()["error"]["message"]
        assert "replaced by rotate-key at 20" in message and "use the new key" in message, message
    never = api.request("GET", "/agent/desired", "da_server_" + "x" * 32)
    assert never.status_code == 401 and "not known" in never.json()["error"]["message"]
    assert "replaced" not in never.json()["error"]["message"]

    assert api.request("DELETE", "/servers/edge-1", admin).status_code == 200
    for key in (first, third):
        r = api.request("GET", "/agent/desired", key)
        assert r.status_code == 401
        message = r.json()["error"]["message"]
        assert "its server 'edge-1' was removed" in message and "replaced" not in message, message
    # Replaced keys are kept as hashes only.
    db = sqlite3.connect(api_ws.store.path)
    try:
        dump = "\n".join(db.iterdump())
    finally:
        db.close()
    assert all(key not in dump for key in (first, second, third))


def test_remove_counts_definitions_at_the_branch_head_not_yet_synced(
    fake_ws: Workspace, fake_api: tuple[ApiServer, str]
) -> None:
    api, admin = fake_api
    edge, _key = fake_ws.store.add_server("edge", "staging")
    fake_ws.store.add_server("spare", "staging")
    repo = fake_ws.repo
    repo.write(
        {"definitions/late.yaml": f"name: late\ntemplate: tools/busybox/plain/stable\n"
         f"server: {edge.id}\nparams:\n  script: sleep 9\n",
         "definitions/broken.yaml": "name: broken\nserver: edge\ntemplate: no/such/template\n"},
        message="Define late and broken on edge, not synced", author_name="Test",
        author_email="test@example.com", expected_head=repo.head(),
    )
    refused = api.request("DELETE", "/servers/edge", admin)
    assert refused.status_code == 409, refused.text
    assert "broken, late" in refused.json()["error"]["message"]
    assert "edge" in _servers(api, admin)
    assert api.request("DELETE", "/servers/spare", admin).status_code == 200


def test_repeated_query_parameters_are_400_naming_them(
    api: ApiServer, api_tokens: dict[str, str]
) -> None:
    for query, name in (("environment=staging&environment=production", "environment"),
                        ("server_id=local&server_id=edge", "server_id"),
                        ("page=1&page=2", "page")):
        r = api.request("GET", f"/definitions?{query}", api_tokens["read"])
        assert r.status_code == 400, r.text
        assert r.json()["error"]["details"][0]["field"] == name and "once" in r.text


def test_a_waited_sync_shows_each_deployments_environment(fake_ws: Workspace) -> None:
    import asyncio

    from deployally.api.sync import SYNC, SyncOutcome

    class Syncs:
        """What `serve` offers POST /sync, here: each sync runs at once on the fake host."""

        webhook_secret = None
        branch = "main"

        def trigger(self, why: str) -> None:
            raise AssertionError("asked to wait, not to trigger")

        async def sync_covering(self, commit: str | None, why: str) -> SyncOutcome:
            return SyncOutcome(await asyncio.to_thread(fake_ws.engine.sync))

    commit_busybox(fake_ws, "web")
    api = ApiServer(fake_ws, app_values={SYNC: Syncs()})
    try:
        token = fake_ws.store.create_token("ci", "write")
        waited = api.request("POST", "/sync", token, json={"wait": True})
        assert waited.status_code == 200, waited.text
        (deployment,) = waited.json()["data"]["deployments"]
        assert (deployment["definition_name"], deployment["environment"]) == ("web", "production")
    finally:
        api.close()
