"""GET /health over real HTTP: healthy, and degraded with the reason when Docker or the repository is gone."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from conftest import ApiServer
from deployally import __version__
from deployally.api.views import engine_status_from_view, engine_status_view
from deployally.types import EngineStatus, SyncResult


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


def test_engine_status_is_included_and_a_degraded_engine_degrades_health(api_ws: object) -> None:
    last = datetime(2026, 2, 13, 12, 0, 0, 250000, tzinfo=UTC)
    ok = EngineStatus(syncs=3, last_sync_at=last, last_sync_commit="c" * 40,
                      last_sync_result=SyncResult.PARTIAL, last_sync_seconds=0.4567, watching=True)
    failing = EngineStatus(syncs=4, failures=1, last_sync_result=SyncResult.ERROR,
                           reasons=("the last 1 sync(s) failed: no repository",))
    statuses = iter([ok, failing])
    server = ApiServer(api_ws, status=lambda: next(statuses))
    try:
        first = server.request("GET", "/health").json()
        second = server.request("GET", "/health").json()
    finally:
        server.close()
    assert first["checks"]["engine"] == {
        "status": "ok", "syncs": 3, "syncing": False, "failures": 0,
        "last_sync_at": "2026-02-13T12:00:00.250000Z", "last_sync_commit": "c" * 40,
        "last_sync_result": "partial", "last_sync_seconds": 0.457,
        "watching": True, "docker_events": False, "mirror": None,
    }
    assert second["status"] == "degraded"
    assert second["checks"]["engine"]["last_sync_result"] == "error"
    assert "engine: the last 1 sync(s) failed: no repository" in second["reason"]


def test_engine_status_reads_back_from_its_view() -> None:
    status = EngineStatus(
        syncs=7, syncing=True, failures=2, last_sync_at=datetime(2026, 2, 13, 12, 0, 1, 5, tzinfo=UTC),
        last_sync_commit="a" * 40, last_sync_result=SyncResult.ERROR, last_sync_seconds=1.25,
        watching=True, docker_events=True, mirror="https://example.com/defs.git",
        reasons=("the last 2 sync(s) failed: x; y", "fetching the remote failed: z"),
    )
    assert engine_status_from_view(engine_status_view(status)) == status
    assert engine_status_from_view(engine_status_view(EngineStatus())) == EngineStatus()
