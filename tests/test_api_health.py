"""GET /health over real HTTP: healthy, and degraded with the reason when Docker or the repository is gone."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ApiServer
from deployally import __version__


def test_healthy_with_version_and_timestamp(api: ApiServer, docker_client: object) -> None:
    r = api.request("GET", "/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "healthy", body
    assert body["version"] == __version__
    assert body["timestamp"].endswith("Z")
    assert {c["status"] for c in body["checks"].values()} == {"ok"}


@pytest.fixture
def docker_down(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    yield


def test_degraded_when_docker_is_unreachable(api_ws: object, docker_down: None) -> None:
    server = ApiServer(api_ws)
    try:
        body = server.request("GET", "/health").json()
    finally:
        server.close()
    assert body["status"] == "degraded"
    assert body["checks"]["docker"]["status"] == "unreachable"
    assert "docker" in body["reason"]
    assert body["checks"]["repository"]["status"] == "ok"


def test_degraded_when_the_repository_is_gone(api: ApiServer, api_ws: object) -> None:
    shutil.rmtree(api_ws.repo_path / ".git")  # type: ignore[attr-defined]
    body = api.request("GET", "/health").json()
    assert body["status"] == "degraded"
    assert body["checks"]["repository"]["status"] == "unreachable"
    assert body["checks"]["repository"]["reason"]


def test_engine_status_is_included(api_ws: object) -> None:
    server = ApiServer(api_ws, status=lambda: {"last_sync": "2026-02-13T12:00:00Z"})
    try:
        body = server.request("GET", "/health").json()
    finally:
        server.close()
    assert body["checks"]["engine"] == {"status": "ok", "last_sync": "2026-02-13T12:00:00Z"}
