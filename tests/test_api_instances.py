"""Instances over real HTTP and Docker: the document's fields, and stop/start/restart as operator intent."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from conftest import ApiServer, DockerProxy, commit_busybox, wait_until
from deployally.api.context import CONTEXT
from deployally.workspace import Workspace


def test_list_has_the_documented_fields(
    api: ApiServer, api_tokens: dict[str, str], api_docker_ws: Workspace, names: str
) -> None:
    commit_busybox(api_docker_ws, f"{names}-a")
    assert api_docker_ws.engine.sync().ok
    r = api.request("GET", "/instances", api_tokens["read"])
    assert r.status_code == 200
    mine = [i for i in r.json()["data"] if i["container_name"] == f"{names}-a"]
    assert len(mine) == 1
    inst = mine[0]
    assert set(inst) >= {
        "id",
        "definition_id",
        "container_id",
        "container_name",
        "status",
        "health",
        "started_at",
        "uptime_seconds",
    }
    assert re.fullmatch(r"[0-9a-f]{12}", inst["container_id"])
    assert inst["id"] == "inst_" + inst["container_id"]
    assert (
        inst["status"] == "running" and inst["health"] is None
    )  # busybox-plain has no healthcheck
    assert isinstance(inst["uptime_seconds"], int) and inst["uptime_seconds"] >= 0
    assert inst["started_at"] is not None and inst["started_at"].endswith("Z")
    d = api.request("GET", f"/definitions/{names}-a", api_tokens["read"]).json()["data"]
    assert inst["definition_id"] == d["id"] and d["instance_id"] == inst["id"]


def test_stop_holds_against_self_heal_and_start_releases_it(
    api: ApiServer, api_tokens: dict[str, str], api_docker_ws: Workspace, names: str
) -> None:
    ws = api_docker_ws
    name = f"{names}-a"
    commit_busybox(ws, name)
    assert ws.engine.sync().ok
    [inst] = [
        i
        for i in api.request("GET", "/instances", api_tokens["read"]).json()["data"]
        if i["container_name"] == name
    ]

    stopped = api.request("POST", f"/instances/{inst['id']}/stop", api_tokens["write"])
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["data"]["status"] == "exited"
    record = ws.store.definition(name)
    assert record is not None and record.operator_stopped
    ws.engine.sync()  # self-heal must leave it stopped
    assert ws.driver_for("local").live()[name].state == "exited"  # type: ignore[union-attr]

    started = api.request("POST", f"/instances/{inst['id']}/start", api_tokens["write"])
    assert started.status_code == 200
    assert started.json()["data"]["status"] == "running"
    record = ws.store.definition(name)
    assert record is not None and not record.operator_stopped

    restarted = api.request("POST", f"/instances/{inst['id']}/restart", api_tokens["write"])
    assert restarted.status_code == 200
    assert restarted.json()["data"]["status"] == "running"

    missing = api.request("POST", "/instances/inst_000000000000/stop", api_tokens["write"])
    assert missing.status_code == 404


@pytest.mark.docker
def test_readers_are_answered_while_a_docker_call_is_held(
    api: ApiServer, api_tokens: dict[str, str], api_docker_ws: Workspace, names: str,
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    proxy = DockerProxy(tmp_path / "docker.sock")
    proxy.start()
    monkeypatch.setenv("DOCKER_HOST", f"unix://{proxy.path}")  # the driver's client is made lazily
    ws = api_docker_ws
    for short in ("a", "b"):
        commit_busybox(ws, f"{names}-{short}")
    assert ws.engine.sync().ok
    token = api_tokens["read"]

    def mine(response: requests.Response) -> list[str]:
        return sorted(i["container_name"] for i in response.json()["data"] if i["container_name"].startswith(names))

    assert mine(api.request("GET", "/instances", token)) == [f"{names}-a", f"{names}-b"]
    proxy.hold()
    try:
        api.app[CONTEXT].live.invalidate()  # the next reader refreshes: its list call is held
        with ThreadPoolExecutor(max_workers=25) as pool:
            refreshing = pool.submit(api.request, "GET", "/instances", token)
            wait_until(lambda: proxy.held > 0, 30, "the refresh's list call to be held")
            readers = [pool.submit(api.request, "GET", "/instances", token, timeout=20) for _ in range(50)]
            answers = [r.result() for r in readers]
            still_held = proxy.held
            proxy.release()
            assert refreshing.result().status_code == 200
    finally:
        proxy.stop()
    assert still_held > 0  # every answer came while Docker had not been asked yet
    assert [r.status_code for r in answers] == [200] * 50
    assert all(mine(r) == [f"{names}-a", f"{names}-b"] for r in answers)
