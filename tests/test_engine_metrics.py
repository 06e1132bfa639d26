"""/metrics, /health and `deployally status` against a real engine: real git, real syncs, real Docker."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import docker
import pytest
import requests

import deployally
from conftest import DefinitionsRepo, Scrape, ServeProcess, wait_until
from conftest import running_revision as revision
from deployally.store import Store

pytestmark = pytest.mark.docker


def scrape(engine: ServeProcess) -> Scrape:
    return Scrape(requests.get(engine.url + "/metrics", timeout=30).text)


def engine_check(engine: ServeProcess) -> dict[str, object]:
    return engine.request("GET", "/health").json()["checks"]["engine"]  # type: ignore[no-any-return]


def closed_loopback_url() -> str:
    """A loopback URL nobody listens on: a webhook receiver that is down."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def status_cli(repo: Path, state: Path, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "deployally", "status", "--repo", str(repo), "--state-dir", str(state), *args],
        capture_output=True, text=True, check=True, env=os.environ, timeout=120,
    ).stdout


def test_metrics_of_a_real_sync(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    before = time.time()
    state = tmp_path / "state"
    state.mkdir()
    # The receiver is on loopback, where webhooks go only when the operator allows it.
    (state / "engine.yaml").write_text("webhooks:\n  allow: [loopback]\n")
    with Store(state) as store:  # a receiver that is down: its delivery waits in the outbox
        store.add_webhook(closed_loopback_url(), ["deployment.success"], "s3cret")
    name = defs_repo.worker("web")
    defs_repo.commit("Add web")
    engine = ServeProcess(defs_repo.path, state, "--reconcile-interval", "600",
                          env={"DEPLOYALLY_WEBHOOK_BACKOFF": "600"})
    try:
        wait_until(lambda: revision(docker_client, name) == "1", 60, "revision 1 running")
        wait_until(lambda: scrape(engine)("deployally_webhook_deliveries", status="pending") == 1, 60,
                   "the deployment.success delivery waiting in the outbox")
        metrics = scrape(engine)
        check = engine_check(engine)
    finally:
        assert engine.stop() == 0, engine.log()

    syncs = metrics.labelled("deployally_syncs_total", "result")
    assert syncs["success"] >= 1 and syncs["partial"] == 0 and syncs["error"] == 0
    assert sum(syncs.values()) == check["syncs"]  # one status behind /health and /metrics
    assert metrics.types["deployally_sync_duration_seconds"] == "histogram"
    assert metrics("deployally_sync_duration_seconds_count") == check["syncs"]
    assert metrics("deployally_sync_duration_seconds_sum") > 0
    assert metrics("deployally_sync_duration_seconds_bucket", le="+Inf") == check["syncs"]
    last_success = metrics("deployally_last_successful_sync_timestamp_seconds")
    assert isinstance(check["last_sync_at"], str)
    assert last_success == pytest.approx(datetime.fromisoformat(check["last_sync_at"]).timestamp())
    assert before < last_success < time.time()
    assert metrics("deployally_sync_in_progress") == 0
    assert metrics("deployally_sync_consecutive_failures") == 0

    assert metrics("deployally_deployments", status="success") == 1
    assert metrics("deployally_deployments", status="failed") == 0
    assert metrics.labelled("deployally_definitions", "status") == {
        "pending": 0, "active": 1, "failed": 0, "invalid": 0, "stopped": 0}
    assert metrics.labelled("deployally_webhook_deliveries", "status") == {
        "pending": 1, "delivered": 0, "failed": 0}

    info = [dict(labels) for (n, labels) in metrics.samples if n == "deployally_build_info"]
    assert [i["version"] for i in info] == [deployally.__version__]
    assert before - 2 < metrics("process_start_time_seconds") < time.time()  # the serve process
    assert metrics("process_resident_memory_bytes") > 0
    assert metrics("process_open_fds") > 0


def test_partial_and_failed_syncs_in_metrics_health_and_status(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    name = defs_repo.worker("web")
    defs_repo.commit("Add web")
    engine = ServeProcess(defs_repo.path, state, "--reconcile-interval", "1")
    aside = tmp_path / "aside"
    try:
        wait_until(lambda: revision(docker_client, name) == "1", 60, "revision 1 running")
        assert status_cli(defs_repo.path, state).splitlines()[0].startswith("engine: ok; ")

        # The repository goes away: syncs end in error, and all three places say so.
        defs_repo.path.rename(aside)
        wait_until(lambda: scrape(engine)("deployally_syncs_total", result="error") >= 1, 60,
                   "a sync that ended in error")
        failing = json.loads(status_cli(aside, state, "--json"))["engine"]
        assert failing["status"] == "degraded" and failing["failures"] >= 1, failing
        assert failing["last_sync_result"] == "error" and "repo" in failing["reason"], failing
        text = status_cli(aside, state).splitlines()[0]
        assert text.startswith("engine: degraded: the last ") and "(last sync: error," in text, text
        assert scrape(engine)("deployally_sync_consecutive_failures") >= 1

        # It comes back: the next sync completes, the failures in a row are over.
        aside.rename(defs_repo.path)
        wait_until(lambda: engine_check(engine)["status"] == "ok", 60, "the engine ok again")
        assert scrape(engine)("deployally_sync_consecutive_failures") == 0

        # A broken definition: the sync completes but refuses the file, so it is partial.
        defs_repo.write(f"definitions/{name}.yaml",
                        f"name: {name}\ntemplate: tools/busybox/worker/stable\nparams: {{nope: 1}}\n")
        defs_repo.commit("Break web")
        wait_until(lambda: scrape(engine)("deployally_syncs_total", result="partial") >= 1, 60,
                   "a partial sync")
        metrics = scrape(engine)
        assert metrics("deployally_definitions", status="invalid") == 1
        assert metrics("deployally_deployments", status="success") == 1  # nothing else was applied
        assert docker_client.containers.get(name).status == "running"  # and nothing running changed
        ok = json.loads(status_cli(defs_repo.path, state, "--json"))["engine"]
        assert ok["status"] == "ok" and ok["last_sync_result"] == "partial", ok
    finally:
        if aside.exists() and not defs_repo.path.exists():
            aside.rename(defs_repo.path)
        assert engine.stop() == 0, engine.log()
    assert status_cli(defs_repo.path, state).splitlines()[0] == "engine: not running (`deployally serve` runs it)"
    assert json.loads(status_cli(defs_repo.path, state, "--json"))["engine"] is None
