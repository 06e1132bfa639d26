"""Deployments over real HTTP, git and Docker: list with filters, get with logs, redeploy, rollback as a commit."""

from __future__ import annotations

import subprocess

from conftest import ApiServer, commit_busybox
from deployally.workspace import Workspace


def test_list_filter_and_get_with_logs(
    api: ApiServer, api_tokens: dict[str, str], api_docker_ws: Workspace, names: str
) -> None:
    ws = api_docker_ws
    commit_busybox(ws, f"{names}-a")
    commit_busybox(ws, f"{names}-b")
    assert ws.engine.sync().ok
    token = api_tokens["read"]
    listed = api.request("GET", "/deployments", token).json()
    assert listed["pagination"]["total"] == 2
    row = listed["data"][0]
    assert set(row) >= {"id", "definition_id", "server_id", "status", "created_at"}
    assert row["status"] == "success" and row["server_id"].startswith("srv_")

    a = api.request("GET", f"/definitions/{names}-a", token).json()["data"]
    only_a = api.request("GET", f"/deployments?definition_id={a['id']}", token).json()
    assert [d["definition_name"] for d in only_a["data"]] == [f"{names}-a"]
    assert (
        api.request("GET", f"/deployments?definition_id={names}-a", token).json()["pagination"][
            "total"
        ]
        == 1
    )
    assert (
        api.request("GET", "/deployments?server_id=local", token).json()["pagination"]["total"] == 2
    )
    assert (
        api.request("GET", f"/deployments?server_id={row['server_id']}", token).json()[
            "pagination"
        ]["total"]
        == 2
    )
    assert api.request("GET", "/deployments?status=failed", token).json()["data"] == []
    assert api.request("GET", "/deployments?status=bogus", token).status_code == 400

    one = api.request("GET", f"/deployments/{row['id']}", token).json()["data"]
    assert one["id"] == row["id"]
    assert one["logs"] and all(set(line) == {"at", "message"} for line in one["logs"])
    assert api.request("GET", "/deployments/deploy_000000000000", token).status_code == 404


def test_post_without_revision_records_a_redeploy(
    api: ApiServer, api_tokens: dict[str, str], api_docker_ws: Workspace, names: str
) -> None:
    ws = api_docker_ws
    commit_busybox(ws, f"{names}-a")
    assert ws.engine.sync().ok
    a = api.request("GET", f"/definitions/{names}-a", api_tokens["read"]).json()["data"]
    r = api.request("POST", "/deployments", api_tokens["write"], json={"definition_id": a["id"]})
    assert r.status_code == 202
    data = r.json()["data"]
    assert data["id"].startswith("deploy_")
    assert data["definition_id"] == a["id"] and data["server_id"] == a["server_id"]
    assert data["status"] == "pending" and data["created_at"].endswith("Z")
    assert data["reason"]["kind"] == "operator"
    got = api.request("GET", f"/deployments/{data['id']}", api_tokens["read"]).json()["data"]
    assert "write-bot" in got["logs"][0]["message"]

    # The engine carries the request out under the same id: a new container, same revision.
    before = ws.driver_for("local").live()[f"{names}-a"].ref  # type: ignore[union-attr]
    report = ws.engine.sync()
    assert [d.id for d in report.deployments] == [data["id"]]
    done = api.request("GET", f"/deployments/{data['id']}", api_tokens["read"]).json()["data"]
    assert done["status"] == "success" and done["reason"]["kind"] == "operator"
    after = ws.driver_for("local").live()[f"{names}-a"]  # type: ignore[union-attr]
    assert after.ref != before and after.revision == a["current_revision"]

    wrong = api.request(
        "POST",
        "/deployments",
        api_tokens["write"],
        json={"definition_id": a["id"], "server_id": "srv_000000000000"},
    )
    assert wrong.status_code == 422
    missing = api.request(
        "POST", "/deployments", api_tokens["write"], json={"definition_id": "def_000000000000"}
    )
    assert missing.status_code == 404


def test_post_with_revision_commits_the_old_file_back(
    api: ApiServer, api_tokens: dict[str, str], api_docker_ws: Workspace, names: str
) -> None:
    ws = api_docker_ws
    name = f"{names}-a"
    commit_busybox(ws, name, "sleep 1000001")
    assert ws.engine.sync().ok
    commit_busybox(ws, name, "sleep 1000002")
    assert ws.engine.sync().ok
    d = api.request("GET", f"/definitions/{name}", api_tokens["read"]).json()["data"]
    assert d["current_revision"] == 2

    r = api.request(
        "POST", "/deployments", api_tokens["write"], json={"definition_id": d["id"], "revision": 1}
    )
    assert r.status_code == 202, r.text
    data = r.json()["data"]
    assert data["reason"]["kind"] == "rollback" and data["revision"] == 3
    assert data["commit"] == ws.repo.head()
    text = subprocess.run(
        ["git", "show", f"HEAD:definitions/{name}.yaml"],
        cwd=ws.repo_path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "sleep 1000001" in text
    assert ws.repo.commit_info("HEAD").author_name == "write-bot"
    assert ws.engine.sync().ok
    live = ws.driver_for("local").live()[name]  # type: ignore[union-attr]
    assert live.revision == 3

    none = api.request(
        "POST", "/deployments", api_tokens["write"], json={"definition_id": d["id"], "revision": 9}
    )
    assert none.status_code == 404
    assert "revisions" in none.json()["error"]["message"]
    bad = api.request(
        "POST", "/deployments", api_tokens["write"], json={"definition_id": d["id"], "revision": 0}
    )
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "revision"
