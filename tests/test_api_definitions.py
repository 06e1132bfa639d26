"""Definitions over real HTTP, real git, a real store and Docker: reads, and writes that become commits."""

from __future__ import annotations

import json
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from click.testing import CliRunner

from conftest import ApiServer
from deployally.cli import main
from deployally.identity import definition_id
from deployally.workspace import Workspace

SECRET_TEMPLATE = """\
name: Busybox With Password
description: busybox keeping a password in its environment
version: stable
taxonomy: {kingdom: assets, family: tools, species: busybox, variant: secret, specimen: stable}
deprecated: false
spec:
  image: {repository: busybox, tag: stable}
  user_inputs:
    admin_password: {type: password, required: true}
    greeting: {type: string, default: hello}
  profiles: [minimal, development, production]
  command: ["sh", "-c", "sleep 2147483647"]
  env:
    ADMIN_PASSWORD: "{{ params.admin_password }}"
    GREETING: "{{ params.greeting }}"
  stop_signal: SIGKILL
"""
TEMPLATE_PATH = "tools/busybox/secret/stable"


def git(ws: Workspace, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ws.repo_path, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def docker_ws(api_ws: Workspace, names: str, busybox_image: str) -> Workspace:
    """`api_ws` with a per-test network and a repo template that takes a password."""
    repo = api_ws.repo
    repo.write(
        {
            "deployally.yaml": f"network: {names}net\nhealth_timeout: 30s\n",
            "catalog/busybox-secret.yaml": SECRET_TEMPLATE,
        },
        message="Test settings and template",
        author_name="Test",
        author_email="test@example.com",
        expected_head=repo.head(),
    )
    return api_ws


@pytest.fixture
def tpl_id(api: ApiServer, api_tokens: dict[str, str], docker_ws: Workspace) -> str:
    found = api.request("GET", "/templates?family=tools", api_tokens["read"]).json()["data"]
    return next(t["id"] for t in found if t["path"] == TEMPLATE_PATH)


@pytest.fixture
def local_id(api: ApiServer, api_tokens: dict[str, str]) -> str:
    servers = api.request("GET", "/servers", api_tokens["read"]).json()["data"]
    return next(s["id"] for s in servers if s["name"] == "local")


def create(
    api: ApiServer, token: str, tpl_id: str, server: str, name: str, **extra: object
) -> dict:  # type: ignore[type-arg]
    body = {
        "template_id": tpl_id,
        "server_id": server,
        "name": name,
        "params": {"admin_password": "s3cret-pw-123"},
        **extra,
    }
    r = api.request("POST", "/definitions", token, json=body)
    assert r.status_code == 201, r.text
    return r.json()["data"]  # type: ignore[no-any-return]


def test_create_commits_a_reference_and_stores_the_password(
    api: ApiServer,
    api_tokens: dict[str, str],
    docker_ws: Workspace,
    tpl_id: str,
    local_id: str,
    names: str,
) -> None:
    name = f"{names}-app"
    data = create(api, api_tokens["write"], tpl_id, local_id, name, profile="production")
    assert data["id"] == definition_id(name)
    assert data["name"] == name and data["status"] == "pending"
    assert data["current_revision"] == 1
    assert data["created_at"].endswith("Z")
    assert docker_ws.repo.head() == data["commit"]

    shown = git(docker_ws, "show", "HEAD")
    assert "s3cret-pw-123" not in git(docker_ws, "log", "-p", "--all")
    assert f"admin_password: {{secret: {name}_admin_password, version: 1}}" in shown
    assert "profile: production" in shown
    assert git(docker_ws, "log", "-1", "--format=%an").strip() == "write-bot"
    assert f"Create definition {name}" in git(docker_ws, "log", "-1", "--format=%B")
    assert docker_ws.store.secret_value(f"{name}_admin_password") == "s3cret-pw-123"

    again = api.request(
        "POST",
        "/definitions",
        api_tokens["write"],
        json={
            "template_id": tpl_id,
            "server_id": local_id,
            "name": name,
            "params": {"admin_password": "x"},
        },
    )
    assert again.status_code == 409
    assert name in again.json()["error"]["message"]


def test_synced_definitions_list_and_get_with_revisions(
    api: ApiServer,
    api_tokens: dict[str, str],
    docker_ws: Workspace,
    tpl_id: str,
    local_id: str,
    names: str,
) -> None:
    name = f"{names}-app"
    create(api, api_tokens["write"], tpl_id, "local", name)
    report = docker_ws.engine.sync()
    assert report.ok, report

    listed = api.request("GET", "/definitions", api_tokens["read"]).json()
    assert listed["pagination"] == {"page": 1, "per_page": 20, "total": 1}
    [row] = listed["data"]
    assert set(row) >= {
        "id",
        "name",
        "template_id",
        "server_id",
        "status",
        "current_revision",
        "container_name",
        "created_at",
        "updated_at",
    }
    assert row["template_id"] == tpl_id and row["server_id"] == local_id
    assert row["status"] == "active" and row["current_revision"] == 1
    assert row["container_name"] == name
    assert row["params"]["admin_password"] == "********"
    assert "s3cret-pw-123" not in str(listed)

    for query, count in [
        (f"server_id={local_id}", 1),
        ("server_id=local", 1),
        ("server_id=srv_000000000000", 0),
        ("status=active", 1),
        ("status=failed", 0),
    ]:
        r = api.request("GET", f"/definitions?{query}", api_tokens["read"]).json()
        assert r["pagination"]["total"] == count, query

    one = api.request("GET", f"/definitions/{row['id']}", api_tokens["read"]).json()["data"]
    assert [r["number"] for r in one["revisions"]] == [1]
    assert one["revisions"][0]["commit"] == docker_ws.repo.head()
    by_name = api.request("GET", f"/definitions/{name}", api_tokens["read"])
    assert by_name.json()["data"]["id"] == row["id"]


def test_put_makes_a_new_revision_and_delete_commits_the_removal(
    api: ApiServer,
    api_tokens: dict[str, str],
    docker_ws: Workspace,
    tpl_id: str,
    names: str,
) -> None:
    name = f"{names}-app"
    made = create(api, api_tokens["write"], tpl_id, "local", name)
    assert docker_ws.engine.sync().ok

    r = api.request(
        "PUT",
        f"/definitions/{made['id']}",
        api_tokens["write"],
        json={
            "profile": "production",
            "params": {"greeting": "ola", "admin_password": "n0va-senha"},
        },
    )
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["current_revision"] == 2 and data["status"] == "pending"
    text = git(docker_ws, "show", "HEAD:" + f"definitions/{name}.yaml")
    assert "greeting: ola" in text and "profile: production" in text
    assert "n0va-senha" not in git(docker_ws, "log", "-p", "--all")
    assert docker_ws.store.secret_value(f"{name}_admin_password") == "n0va-senha"
    assert docker_ws.engine.sync().ok
    got = api.request("GET", f"/definitions/{made['id']}", api_tokens["read"]).json()["data"]
    assert got["current_revision"] == 2 and got["profile"] == "production"
    assert [rev["number"] for rev in got["revisions"]] == [1, 2]

    bad = api.request(
        "PUT",
        f"/definitions/{made['id']}",
        api_tokens["write"],
        json={"params": {"nope": 1}, "profile": "huge"},
    )
    assert bad.status_code == 422
    fields = {d["field"] for d in bad.json()["error"]["details"]}
    assert {"params.nope", "profile"} <= fields
    assert git(docker_ws, "rev-parse", "HEAD").strip() == data["commit"]  # nothing committed

    gone = api.request("DELETE", f"/definitions/{made['id']}", api_tokens["write"])
    assert gone.status_code == 200
    assert gone.json()["data"]["current_revision"] == 3
    assert f"definitions/{name}.yaml" in git(docker_ws, "show", "--stat", "HEAD")
    assert git(docker_ws, "ls-tree", "HEAD", "definitions/").strip() == ""
    assert docker_ws.engine.sync().ok
    assert name not in docker_ws.driver_for("local").live()  # type: ignore[union-attr]
    again = api.request("DELETE", f"/definitions/{made['id']}", api_tokens["write"])
    assert again.status_code == 404


def test_create_checks_every_field(
    api: ApiServer,
    api_tokens: dict[str, str],
    docker_ws: Workspace,
    tpl_id: str,
) -> None:
    head = docker_ws.repo.head()
    r = api.request("POST", "/definitions", api_tokens["write"], json={"params": []})
    assert r.status_code == 422
    fields = {d["field"] for d in r.json()["error"]["details"]}
    assert fields == {"template_id", "server_id", "name", "params"}

    r = api.request(
        "POST",
        "/definitions",
        api_tokens["write"],
        json={"template_id": "tpl_000000000000", "server_id": "mars", "name": "x", "params": {}},
    )
    assert {d["field"] for d in r.json()["error"]["details"]} == {"template_id", "server_id"}

    r = api.request(
        "POST",
        "/definitions",
        api_tokens["write"],
        json={"template_id": tpl_id, "server_id": "local", "name": "Bad/../Name", "params": {}},
    )
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "name"

    r = api.request(
        "POST",
        "/definitions",
        api_tokens["write"],
        json={"template_id": tpl_id, "server_id": "local", "name": "ok-name", "params": {}},
    )
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == "params.admin_password"
    assert docker_ws.repo.head() == head  # nothing invalid was committed


def test_a_password_never_takes_over_another_definitions_secret(
    api: ApiServer,
    api_tokens: dict[str, str],
    docker_ws: Workspace,
    tpl_id: str,
    local_id: str,
    names: str,
) -> None:
    # Someone's secret already has the name a new definition would derive for its password.
    taken = f"{names}-b_admin_password"
    docker_ws.store.set_secret(taken, "belongs-to-someone-else")
    r = api.request(
        "POST",
        "/definitions",
        api_tokens["write"],
        json={"template_id": tpl_id, "server_id": local_id, "name": f"{names}-b",
              "params": {"admin_password": "would-overwrite"}},
    )
    assert r.status_code == 409, r.text
    assert taken in r.json()["error"]["message"]
    assert docker_ws.store.secret_value(taken) == "belongs-to-someone-else"


def test_quick_successive_writes_answer_the_revision_each_commit_makes(
    api: ApiServer,
    api_tokens: dict[str, str],
    docker_ws: Workspace,
    tpl_id: str,
    local_id: str,
    names: str,
) -> None:
    name = f"{names}-fast"
    assert create(api, api_tokens["write"], tpl_id, local_id, name)["current_revision"] == 1
    answered = []
    for greeting in ("one", "two", "three"):  # no sync in between
        r = api.request("PUT", f"/definitions/{name}", api_tokens["write"],
                        json={"params": {"greeting": greeting}})
        assert r.status_code == 200, r.text
        answered.append(r.json()["data"]["current_revision"])
    assert answered == [2, 3, 4]
    docker_ws.engine.sync()
    shown = api.request("GET", f"/definitions/{name}", api_tokens["read"]).json()["data"]
    assert shown["current_revision"] == 4


def test_a_param_spelling_another_definitions_secret_is_refused_through_the_api(
    api: ApiServer,
    api_tokens: dict[str, str],
    docker_ws: Workspace,
    tpl_id: str,
    local_id: str,
    names: str,
) -> None:
    owner = create(api, api_tokens["write"], tpl_id, local_id, f"{names}-owner")
    victim = f"{owner['name']}_admin_password"
    forged = f"\x00secret:{victim}\x00"
    head = docker_ws.repo.head()
    r = api.request(
        "POST", "/definitions", api_tokens["write"],
        json={"template_id": tpl_id, "server_id": local_id, "name": f"{names}-thief",
              "params": {"admin_password": "thiefs-own-pw", "greeting": forged}},
    )
    assert r.status_code == 422, r.text
    assert [d["field"] for d in r.json()["error"]["details"]] == ["params.greeting"]
    r = api.request("PUT", f"/definitions/{owner['name']}", api_tokens["write"],
                    json={"params": {"greeting": forged}})
    assert r.status_code == 422, r.text
    assert docker_ws.repo.head() == head  # nothing was committed


def test_a_password_of_a_long_definition_name_gets_a_valid_secret_name(
    api: ApiServer,
    api_tokens: dict[str, str],
    docker_ws: Workspace,
    tpl_id: str,
    local_id: str,
    names: str,
) -> None:
    name = (names + "-" + "x" * 63)[:63]
    create(api, api_tokens["write"], tpl_id, local_id, name)
    [listed] = docker_ws.store.list_secrets()
    assert len(listed.name) == 63 and listed.name.startswith(f"{name[:40]}")
    assert f"admin_password: {{secret: {listed.name}" in git(docker_ws, "show", "HEAD")


def running_env(docker_ws: Workspace, name: str) -> dict[str, str]:
    import docker

    client = docker.from_env()
    try:
        env = client.containers.get(name).attrs["Config"]["Env"]
    finally:
        client.close()
    return dict(e.split("=", 1) for e in env)


def test_the_example_of_the_api_document_is_a_revision_that_pins_the_password(
    api: ApiServer,
    api_tokens: dict[str, str],
    docker_ws: Workspace,
    tpl_id: str,
    local_id: str,
    names: str,
) -> None:
    name = f"{names}-pin"
    secret = f"{name}_admin_password"
    made = create(api, api_tokens["write"], tpl_id, local_id, name)  # admin_password: s3cret-pw-123
    assert docker_ws.engine.sync().ok
    assert running_env(docker_ws, name)["ADMIN_PASSWORD"] == "s3cret-pw-123"

    # As in the API document: PUT changing only the password.
    r = api.request("PUT", f"/definitions/{made['id']}", api_tokens["write"],
                    json={"params": {"admin_password": "second-pw-456"}})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["current_revision"] == 2
    text = git(docker_ws, "show", f"HEAD:definitions/{name}.yaml")
    assert f"admin_password: {{secret: {secret}, version: 2}}" in text
    report = docker_ws.engine.sync()
    assert report.ok and [d.reason.kind.value for d in report.deployments] == ["definition"]
    assert running_env(docker_ws, name)["ADMIN_PASSWORD"] == "second-pw-456"
    listed = CliRunner().invoke(main, ["secret", "list", "--json", "--repo", str(docker_ws.repo_path),
                                       "--state-dir", str(docker_ws.state_dir)])
    [row] = json.loads(listed.output)
    assert (row["name"], row["version"], row["versions"]) == (secret, 2, [1, 2])

    # Rolling back to revision 1 brings back the version it pinned.
    r = api.request("POST", "/deployments", api_tokens["write"],
                    json={"definition_id": made["id"], "revision": 1})
    assert r.status_code == 202, r.text
    report = docker_ws.engine.sync()
    assert report.ok and [d.reason.kind.value for d in report.deployments] == ["rollback"]
    assert running_env(docker_ws, name)["ADMIN_PASSWORD"] == "s3cret-pw-123"
    shown = api.request("GET", f"/definitions/{made['id']}", api_tokens["read"]).json()["data"]
    assert shown["current_revision"] == 3 and shown["params"]["admin_password"] == "********"
    # The values are in no commit, no API answer and no deployment log.
    history = git(docker_ws, "log", "-p", "--all")
    logs = [api.request("GET", f"/deployments/{d.id}", api_tokens["read"]).text
            for d in report.deployments]
    for value in ("s3cret-pw-123", "second-pw-456"):
        assert value not in history and value not in json.dumps(shown) and value not in str(logs)
    # A setting of the secret from the command line does not move a pinned definition.
    CliRunner().invoke(main, ["secret", "set", secret, "--repo", str(docker_ws.repo_path),
                              "--state-dir", str(docker_ws.state_dir)], input="third")
    assert docker_ws.engine.sync().deployments == ()


def test_twenty_concurrent_password_changes_run_the_password_of_the_commit_that_won(
    api: ApiServer,
    api_tokens: dict[str, str],
    docker_ws: Workspace,
    tpl_id: str,
    local_id: str,
    names: str,
) -> None:
    name = f"{names}-race"
    made = create(api, api_tokens["write"], tpl_id, local_id, name)
    url = f"{api.url}/api/v1/definitions/{made['id']}"
    headers = {"Authorization": f"Bearer {api_tokens['write']}"}
    start = threading.Barrier(20)

    def put(n: int) -> tuple[str, requests.Response]:
        password = f"racer-{n:02d}-pw"
        start.wait(30)
        return password, requests.put(url, headers=headers, timeout=60,
                                      json={"params": {"admin_password": password}})

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(put, range(20)))
    assert {r.status_code for _, r in answers} <= {200, 409}
    head = docker_ws.repo.head()
    [winner] = [pw for pw, r in answers if r.status_code == 200 and r.json()["data"]["commit"] == head]

    assert docker_ws.engine.sync().ok
    assert running_env(docker_ws, name)["ADMIN_PASSWORD"] == winner
    # What each lost race staged is gone; each commit's version stays while a revision pins it.
    won = sum(1 for _, r in answers if r.status_code == 200)
    [listed] = docker_ws.store.list_secrets()
    assert len(listed.versions) == 1 + won


def test_a_password_change_without_the_secret_key_is_refused_and_commits_nothing(
    api: ApiServer,
    api_tokens: dict[str, str],
    docker_ws: Workspace,
    tpl_id: str,
    local_id: str,
    names: str,
) -> None:
    made = create(api, api_tokens["write"], tpl_id, local_id, f"{names}-nokey")
    docker_ws.store.secret_key_file().path.unlink()
    head = docker_ws.repo.head()
    r = api.request("PUT", f"/definitions/{made['id']}", api_tokens["write"],
                    json={"params": {"admin_password": "new-pw-789"}})
    assert r.status_code == 503, r.text
    assert "restore it from your backup" in r.json()["error"]["message"]
    assert docker_ws.repo.head() == head


@pytest.mark.parametrize(("name", "says"), [("a", "Docker needs at least 2"), ("web.old", ".old")])
def test_a_name_docker_or_an_update_would_refuse_is_422_and_no_commit(
    api: ApiServer, api_ws: Workspace, api_tokens: dict[str, str], name: str, says: str
) -> None:
    head = api_ws.repo.head()
    r = api.request(
        "POST",
        "/definitions",
        api_tokens["write"],
        json={"template_id": "tools/busybox/plain/stable", "server_id": "local", "name": name,
              "params": {"script": "sleep 1"}},
    )
    assert r.status_code == 422, r.text
    [detail] = r.json()["error"]["details"]
    assert detail["field"] == "name" and says in detail["message"]
    assert api_ws.repo.head() == head


@pytest.mark.parametrize("version", [2**63, 99999999999999999999999])
def test_a_pin_beyond_the_store_is_refused_and_commits_nothing(
    api: ApiServer,
    api_tokens: dict[str, str],
    docker_ws: Workspace,
    tpl_id: str,
    local_id: str,
    names: str,
    version: int,
) -> None:
    made = create(api, api_tokens["write"], tpl_id, local_id, f"{names}-huge")
    head = docker_ws.repo.head()
    r = api.request("PUT", f"/definitions/{made['id']}", api_tokens["write"],
                    json={"params": {"admin_password": {"secret": "x_pw", "version": version}}})
    assert r.status_code == 422, r.text
    [detail] = r.json()["error"]["details"]
    assert detail["field"] == "params.admin_password.version"
    assert docker_ws.repo.head() == head
    assert docker_ws.engine.sync().errors == ()


def test_a_password_write_only_writes_the_secret_its_definition_made(
    api: ApiServer,
    api_tokens: dict[str, str],
    docker_ws: Workspace,
    tpl_id: str,
    local_id: str,
    names: str,
) -> None:
    store = docker_ws.store
    victim = create(api, api_tokens["write"], tpl_id, local_id, f"{names}-victim")["name"]
    operators = f"{names}_operators"
    store.set_secret(operators, "operators-own")
    thief = create(api, api_tokens["write"], tpl_id, local_id, f"{names}-thief")["name"]
    for foreign in (f"{victim}_admin_password", operators):
        before = {s.name: s.versions for s in store.list_secrets()}[foreign]
        value = store.secret_value(foreign)
        point = api.request("PUT", f"/definitions/{thief}", api_tokens["write"],
                            json={"params": {"admin_password": {"secret": foreign}}})
        assert point.status_code == 200, point.text
        # Before: the password became a new version of the secret the file referenced.
        r = api.request("PUT", f"/definitions/{thief}", api_tokens["write"],
                        json={"params": {"admin_password": f"thiefs-{foreign}"}})
        assert r.status_code == 200, r.text
        assert store.secret_value(foreign) == value
        assert {s.name: s.versions for s in store.list_secrets()}[foreign] == before
        own = f"{thief}_admin_password"
        assert f"admin_password: {{secret: {own}, version:" in git(
            docker_ws, "show", f"HEAD:definitions/{thief}.yaml")
        assert store.secret_value(own) == f"thiefs-{foreign}"

    # A secret the operator set under the name our rule gives is the operator's all the same.
    named = f"{names}-pushed"
    store.set_secret(f"{named}_admin_password", "set-by-the-operator")
    create(api, api_tokens["write"], tpl_id, local_id, named,
           params={"admin_password": {"secret": f"{named}_admin_password"}})
    head = docker_ws.repo.head()
    r = api.request("PUT", f"/definitions/{named}", api_tokens["write"],
                    json={"params": {"admin_password": "would-overwrite"}})
    assert r.status_code == 409, r.text
    assert "params.admin_password" in r.json()["error"]["message"]
    assert "operator's" in r.json()["error"]["message"]
    assert store.secret_value(f"{named}_admin_password") == "set-by-the-operator"
    assert docker_ws.repo.head() == head


def test_a_write_answers_the_revision_the_sync_then_records(
    api: ApiServer,
    api_tokens: dict[str, str],
    docker_ws: Workspace,
    tpl_id: str,
    local_id: str,
    names: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = f"{names}-count"
    made = create(api, api_tokens["write"], tpl_id, local_id, name)
    repo, store = docker_ws.repo, docker_ws.store
    docker_ws.engine.intake.refresh(repo.head() or "")

    def put(greeting: str) -> int:
        r = api.request("PUT", f"/definitions/{name}", api_tokens["write"],
                        json={"params": {"greeting": greeting}})
        assert r.status_code == 200, r.text
        return int(r.json()["data"]["current_revision"])

    def recorded() -> int:
        docker_ws.engine.intake.refresh(repo.head() or "")
        latest = store.latest_revision(made["id"])
        assert latest is not None
        return latest.number

    # A push changing only its template, not synced yet: a revision of its own (before: 2).
    repo.write({"catalog/busybox-secret.yaml": SECRET_TEMPLATE.replace("sleep", "exec sleep")},
               message="Template", author_name="Test", author_email="test@example.com",
               expected_head=repo.head())
    answered = put("two")
    assert (answered, recorded()) == (3, 3)

    # A sync that stopped after recording the revisions of new commits (a crash, or a sync
    # still under way): they are not counted twice (before: 6).
    assert put("three") == 4
    real = store.set_meta

    def stop_before_the_end(key: str, value: str) -> None:
        if key == "desired_commit":
            raise RuntimeError("stopped")
        real(key, value)

    monkeypatch.setattr(store, "set_meta", stop_before_the_end)
    with pytest.raises(RuntimeError):
        docker_ws.engine.intake.refresh(repo.head() or "")
    monkeypatch.undo()
    assert store.latest_revision(made["id"]).number == 4  # type: ignore[union-attr]
    answered = put("four")
    assert (answered, recorded()) == (5, 5)

    r = api.request("DELETE", f"/definitions/{name}", api_tokens["write"])
    assert r.status_code == 200 and r.json()["data"]["current_revision"] == 6 == recorded()


def test_a_pin_of_a_version_the_store_does_not_keep_is_refused_and_commits_nothing(
    api: ApiServer,
    api_tokens: dict[str, str],
    docker_ws: Workspace,
    tpl_id: str,
    local_id: str,
    names: str,
) -> None:
    name = f"{names}-pin9"
    create(api, api_tokens["write"], tpl_id, local_id, name)  # version 1 of its secret
    head = docker_ws.repo.head()
    for body in ({"admin_password": {"secret": f"{name}_admin_password", "version": 9}},
                 {"admin_password": {"secret": f"{names}-never-set", "version": 1}}):
        r = api.request("PUT", f"/definitions/{name}", api_tokens["write"], json={"params": body})
        assert r.status_code == 422, r.text  # before: 200, and the sync then failed on it
        [detail] = r.json()["error"]["details"]
        secret, version = body["admin_password"]["secret"], body["admin_password"]["version"]
        assert detail["field"] == "params.admin_password.version"
        assert f"{name}: secret {secret!r} has no version {version}" in detail["message"]
    assert docker_ws.repo.head() == head
    r = api.request("POST", "/definitions", api_tokens["write"], json={
        "template_id": tpl_id, "server_id": local_id, "name": f"{names}-pin9b",
        "params": {"admin_password": {"secret": f"{name}_admin_password", "version": 2}}})
    assert r.status_code == 422, r.text
    assert "(kept: 1)" in r.json()["error"]["details"][0]["message"]
    assert docker_ws.repo.head() == head
