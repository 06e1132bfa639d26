"""`deployally serve` as a real process: lifecycle, push webhooks, the watcher, self-heal, status and logs."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import selectors
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import docker
import pytest

from conftest import DefinitionsRepo, ServeProcess, wait_until
from conftest import running_revision as revision
from deployally.store import Store

pytestmark = pytest.mark.docker

SECRET = "s3cret-for-push-webhooks"




def active(state: Path, name: str) -> bool:
    """The definition's last deployment finished and succeeded."""
    with Store(state) as store:
        record = store.definition(name)
    return record is not None and record.status.value == "active"


def test_serve_writes_engine_json_answers_health_and_stops_cleanly_on_sigterm(
    defs_repo: DefinitionsRepo, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    engine = ServeProcess(defs_repo.path, state)
    try:
        mode = stat.S_IMODE((state / "engine.json").stat().st_mode)
        assert mode == 0o600
        health = engine.request("GET", "/health").json()
        assert health["status"] == "healthy", health
        assert health["checks"]["engine"]["watching"] is True
        assert engine.request("GET", "/definitions").status_code == 200
    finally:
        code = engine.stop(signal.SIGTERM)
    assert code == 0, engine.log()
    assert not (state / "engine.json").exists()
    with Store(state) as store:
        assert "hook" not in [t.name for t in store.list_tokens()]  # its token went with it


def test_a_burst_of_connections_is_queued_by_the_kernel_not_dropped(
    defs_repo: DefinitionsRepo, tmp_path: Path
) -> None:
    """300 dashboards connecting while the engine is busy (here: stopped with SIGSTOP) wait in
    its listen queue. At the usual backlog of 128 the kernel drops the SYNs of the rest, and
    each of those clients waits a second for its retransmit."""
    burst = 300
    engine = ServeProcess(defs_repo.path, tmp_path / "state")
    address = urlsplit(engine.url)
    sockets: list[socket.socket] = []
    waiting = selectors.DefaultSelector()
    try:
        os.kill(engine.proc.pid, signal.SIGSTOP)
        try:
            for _ in range(burst):
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex((address.hostname, address.port))
                sockets.append(sock)
                waiting.register(sock, selectors.EVENT_WRITE)
            # A queued connection is writable at once; one whose SYN was dropped is not for 1 s.
            connected = 0
            deadline = time.monotonic() + 0.5
            while connected < burst and time.monotonic() < deadline:
                for key, _ in waiting.select(0.05):
                    waiting.unregister(key.fileobj)
                    connected += 1
        finally:
            os.kill(engine.proc.pid, signal.SIGCONT)
        assert connected == burst
        assert engine.request("GET", "/health").status_code == 200
    finally:
        waiting.close()
        for sock in sockets:
            sock.close()
        engine.stop()


def test_a_commit_in_a_watched_working_repo_deploys_and_a_removed_container_comes_back(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    engine = ServeProcess(defs_repo.path, tmp_path / "state", "--reconcile-interval", "600")
    try:
        name = defs_repo.worker("web", message="one")
        defs_repo.commit("Add web")  # no push and no hook: the watcher sees the ref move
        wait_until(lambda: active(tmp_path / "state", name), 60, "revision 1 deployed")
        old = docker_client.containers.get(name).id

        docker_client.containers.get(name).remove(force=True)  # behind the engine's back

        wait_until(lambda: revision(docker_client, name) == "1", 60, "the container restored")
        assert docker_client.containers.get(name).id != old
    finally:
        assert engine.stop() == 0, engine.log()


def test_an_instance_stopped_by_an_operator_stays_stopped(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    name = defs_repo.worker("web")
    defs_repo.commit("Add web")
    engine = ServeProcess(defs_repo.path, tmp_path / "state", "--reconcile-interval", "1")
    try:
        wait_until(lambda: active(tmp_path / "state", name), 60, "revision 1 deployed")
        listed = engine.request("GET", "/instances").json()["data"]
        instance = next(i for i in listed if i["container_name"] == name)
        assert engine.request("POST", f"/instances/{instance['id']}/stop").status_code == 200
        syncs = engine.request("GET", "/health").json()["checks"]["engine"]["syncs"]
        wait_until(
            lambda: engine.request("GET", "/health").json()["checks"]["engine"]["syncs"] >= syncs + 3,
            60, "three more reconcile syncs",
        )
        assert docker_client.containers.get(name).status != "running"
    finally:
        assert engine.stop() == 0, engine.log()


def github_headers(body: bytes, secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": f"sha256={digest}", "X-GitHub-Event": "push",
            "Content-Type": "application/json", "Authorization": ""}


def test_a_mirrored_remote_deploys_on_signed_push_webhooks_and_refuses_bad_ones(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(defs_repo.path), str(remote)], check=True)
    engine = ServeProcess(f"file://{remote}", tmp_path / "state", "--reconcile-interval", "600",
                          env={"DEPLOYALLY_PUSH_SECRET": SECRET})
    try:
        assert (tmp_path / "state" / "mirror.git" / "HEAD").exists()
        name = defs_repo.worker("web")
        head = defs_repo.commit("Add web")
        defs_repo.git("push", "-q", str(remote), "main")
        body = json.dumps({"ref": "refs/heads/main", "after": head}).encode()

        wrong = engine.request("POST", "/sync", data=body, headers=github_headers(body, "nope"))
        assert wrong.status_code == 401
        assert wrong.json()["success"] is False and wrong.json()["error"]["code"] == "unauthorized"
        bad_gitlab = engine.request("POST", "/sync", data=body,
                                    headers={"X-Gitlab-Token": "nope", "Authorization": ""})
        assert bad_gitlab.status_code == 401
        assert revision(docker_client, name) is None  # refused pushes fetched nothing

        other = json.dumps({"ref": "refs/heads/feature", "after": head}).encode()
        ignored = engine.request("POST", "/sync", data=other, headers=github_headers(other))
        assert ignored.status_code == 200 and ignored.json()["data"]["queued"] is False

        good = engine.request("POST", "/sync", data=body, headers=github_headers(body))
        assert good.status_code == 202, good.text
        wait_until(lambda: revision(docker_client, name) == "1", 60, "revision 1 from GitHub")

        defs_repo.worker("web", message="two")
        head = defs_repo.commit("Change web")
        defs_repo.git("push", "-q", str(remote), "main")
        gitlab = engine.request(
            "POST", "/sync", data=json.dumps({"ref": "refs/heads/main", "checkout_sha": head}),
            headers={"X-Gitlab-Token": SECRET, "Authorization": ""},
        )
        assert gitlab.status_code == 202
        wait_until(lambda: revision(docker_client, name) == "2", 60, "revision 2 from GitLab")

        no_auth = engine.request("POST", "/sync", headers={"Authorization": ""})
        assert no_auth.status_code == 401
        with Store(tmp_path / "state") as store:
            reader = store.create_token("reader", "read")
        assert engine.request("POST", "/sync", token=reader).status_code == 403
        waited = engine.request("POST", "/sync", json={"commit": head, "wait": True})
        assert waited.status_code == 200
        assert waited.json()["data"]["commit"] == head
        for garbage in ("garbage", head[:12], head + "0", 42):
            refused = engine.request("POST", "/sync", json={"commit": garbage, "wait": True})
            assert refused.status_code == 422, refused.text
            [detail] = refused.json()["error"]["details"]
            assert detail["field"] == "commit" and "not a commit id" in detail["message"]
        pushed = json.dumps({"ref": "refs/heads/main", "after": "not-a-sha"}).encode()
        refused = engine.request("POST", "/sync", data=pushed, headers=github_headers(pushed))
        assert refused.status_code == 422 and refused.json()["error"]["details"][0]["field"] == "after"
    finally:
        assert engine.stop() == 0, engine.log()


def test_status_and_logs_from_the_cli(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    name = defs_repo.worker("web")
    defs_repo.commit("Add web")
    state = tmp_path / "state"
    engine = ServeProcess(defs_repo.path, state)
    try:
        wait_until(lambda: revision(docker_client, name) == "1", 60, "revision 1 running")
    finally:
        assert engine.stop() == 0
    cli = [sys.executable, "-m", "deployally"]
    where = ["--repo", str(defs_repo.path), "--state-dir", str(state)]
    out = subprocess.run([*cli, "status", *where, "--json"], capture_output=True, text=True,
                         check=True, env=os.environ).stdout
    row = next(r for r in json.loads(out)["definitions"] if r["name"] == name)
    assert row["status"] == "active" and row["instance"] == "running"
    assert row["health"] == "healthy" and row["revision"] == 1 and row["uptime"]
    table = subprocess.run([*cli, "status", *where], capture_output=True, text=True, check=True)
    assert name in table.stdout and "UPTIME" in table.stdout
    logs = subprocess.run([*cli, "logs", name, "-f", *where], capture_output=True, text=True,
                          check=True, timeout=60)
    assert f"create {name}" in logs.stdout
    assert "success" in logs.stderr
