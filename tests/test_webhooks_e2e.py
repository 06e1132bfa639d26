"""Webhooks end to end: `deployally serve` as a real process, real git, real Docker, and real
HTTP receivers on 127.0.0.1 that check every signature with the webhook's secret."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import docker
import pytest

from conftest import DefinitionsRepo, ServeProcess, wait_until
from deployally.notify.signature import verify
from deployally.store import Store

SECRET = "whsec-e2e-7d1f"
EVENT_WAIT_S = 90.0


class Receiver:
    """An HTTP receiver on 127.0.0.1: keeps every request, answers 500 `fail_first` times, or hangs."""

    def __init__(self, port: int = 0, *, fail_first: int = 0, hang: bool = False) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_first = fail_first
        self.hang = hang
        self.hanging = 0
        self.release = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._lock:
                    receiver.requests.append({"headers": dict(self.headers), "body": body})
                    failing = len(receiver.requests) <= receiver.fail_first
                    if receiver.hang:
                        receiver.hanging += 1
                if receiver.hang:
                    receiver.release.wait(120)
                    with receiver._lock:
                        receiver.hanging -= 1
                try:
                    self.send_response(500 if failing else 204)
                    self.end_headers()
                except OSError:
                    pass  # the sender gave up waiting; nobody reads this answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"Receiver({self.url}, requests={len(self.requests)})"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def delivered(self) -> list[dict[str, Any]]:
        """The JSON bodies of requests that were answered 2xx (not the failed tries), in order."""
        with self._lock:
            kept = self.requests[self.fail_first :] if not self.hang else []
        return [json.loads(r["body"]) for r in kept]

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Delivered bodies, optionally only those about definition `name`."""
        return [b for b in self.delivered() if name is None or b["data"].get("name") == name]


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    """Make receivers; every one is closed (and any hang released) at the end."""
    made: list[Receiver] = []

    def make(**kw: Any) -> Receiver:
        made.append(Receiver(**kw))
        return made[-1]

    yield make
    for r in made:
        r.close()


def _admin_token(state_dir: Path) -> str:
    with Store(state_dir) as store:
        return store.create_token("webhooks-e2e", "admin")


def _subscribe(engine: ServeProcess, token: str, url: str, events: list[str]) -> str:
    r = engine.request("POST", "/webhooks", token, json={"url": url, "events": events, "secret": SECRET})
    assert r.status_code == 201, r.text
    return str(r.json()["data"]["id"])


def _serve(repo: DefinitionsRepo, state_dir: Path, backoff: str = "0.3") -> ServeProcess:
    return ServeProcess(repo.path, state_dir, env={"DEPLOYALLY_WEBHOOK_BACKOFF": backoff})


def _wait_for(receiver: Receiver, what: str, check: Callable[[list[dict[str, Any]]], bool]) -> None:
    wait_until(lambda: check(receiver.delivered()), EVENT_WAIT_S, what)


def _kinds(bodies: list[dict[str, Any]]) -> list[str]:
    return [b["event"] for b in bodies]


@pytest.fixture
def engine_dir(tmp_path: Path) -> Path:
    """The state directory every `serve` of one test shares."""
    path = tmp_path / "state"
    path.mkdir()
    # The receivers are on loopback, where webhooks go only when the operator allows it.
    (path / "engine.yaml").write_text("webhooks:\n  allow: [loopback]\n")
    return path


# ---------------------------------------------------------------- signatures and the lifecycle

SECRET_TEMPLATE = """\
name: Busybox with a token
description: a busybox worker that is given an API token (a password input)
version: stable
taxonomy: {kingdom: assets, family: tools, species: busybox, variant: tokened, specimen: stable}
spec:
  image: {repository: busybox, tag: stable}
  user_inputs:
    script: {type: string, default: "sleep 2147483647"}
    api_token: {type: password, required: true}
  profiles: [development]
  env:
    API_TOKEN: "{{ params.api_token }}"
  command: ["sh", "-c", "{{ params.script }}"]
  stop_signal: SIGKILL
  stop_grace_period: 2s
"""


def _tokened(repo: DefinitionsRepo, short: str, script: str) -> str:
    name = repo.name(short)
    repo.write(
        f"definitions/{name}.yaml",
        f"name: {name}\ntemplate: tools/busybox/tokened/stable\n"
        f"params:\n  script: {json.dumps(script)}\n  api_token: {{secret: {repo.prefix}_token}}\n",
    )
    return name


def test_a_definition_created_changed_broken_and_removed_is_told_signed_and_without_secrets(
    defs_repo: DefinitionsRepo, engine_dir: Path, receivers: Callable[..., Receiver]
) -> None:
    secret_value = "tok-" + os.urandom(8).hex()
    with Store(engine_dir) as store:
        store.set_secret(f"{defs_repo.prefix}_token", secret_value)
    defs_repo.write("catalog/tools/tokened.yaml", SECRET_TEMPLATE)
    defs_repo.write("deployally.yaml", f"network: {defs_repo.prefix}net\nhealth_timeout: 10s\n")
    defs_repo.commit("Template with a token")
    receiver = receivers()
    engine = _serve(defs_repo, engine_dir)
    try:
        token = _admin_token(engine_dir)
        _subscribe(engine, token, receiver.url, [
            "deployment.started", "deployment.success", "deployment.failed",
            "definition.created", "definition.updated", "definition.deleted",
        ])

        name = _tokened(defs_repo, "api", "sleep 2147483647")
        created = defs_repo.commit("Add api")
        _wait_for(receiver, "created + deployed", lambda b: "deployment.success" in _kinds(b))

        _tokened(defs_repo, "api", "sleep 2147483646")
        changed = defs_repo.commit("Change api")
        _wait_for(receiver, "updated + deployed",
                  lambda b: _kinds(b).count("deployment.success") == 2)

        _tokened(defs_repo, "api", "exit 3")  # the new container dies: rolled back
        broken = defs_repo.commit("Break api")
        _wait_for(receiver, "the failed deployment", lambda b: "deployment.failed" in _kinds(b))

        defs_repo.remove(f"definitions/{name}.yaml")
        removed = defs_repo.commit("Remove api")
        _wait_for(receiver, "the removal", lambda b: _kinds(b).count("deployment.success") == 3)
    finally:
        engine.stop()
        print(engine.log_path.read_text())  # shown when the test fails

    bodies = receiver.events(name)
    assert _kinds(bodies) == [
        "definition.created", "deployment.started", "deployment.success",
        "definition.updated", "deployment.started", "deployment.success",
        "definition.updated", "deployment.started", "deployment.failed",
        "definition.deleted", "deployment.started", "deployment.success",
    ]
    commits = [created] * 3 + [changed] * 3 + [broken] * 3 + [removed] * 3
    assert [b["data"]["commit"] for b in bodies] == commits
    assert [b["data"]["revision"] for b in bodies[:9]] == [1] * 3 + [2] * 3 + [3] * 3
    for body in bodies:
        assert body["data"]["definition_id"].startswith("def_")
        assert body["data"]["server_id"]
    failed = bodies[8]["data"]
    assert failed["status"] == "rolled_back" and failed["rolled_back"] is True
    assert failed["error"]
    assert [b["data"]["action"] for b in bodies if b["event"] == "deployment.success"] == [
        "create", "update", "remove"
    ]

    # Every request was signed with the secret over its exact bytes, and named itself.
    for request in receiver.requests:
        headers = request["headers"]
        assert verify(SECRET, request["body"], headers["X-DeployAlly-Signature"])
        assert not verify("another secret", request["body"], headers["X-DeployAlly-Signature"])
        body = json.loads(request["body"])
        assert headers["X-DeployAlly-Event"] == body["event"]
        assert headers["X-DeployAlly-Delivery"].startswith("dlv_")
        assert secret_value.encode() not in request["body"]


# ---------------------------------------------------------------- delivery

def test_a_receiver_failing_three_times_gets_the_event_once_with_the_attempts_recorded(
    defs_repo: DefinitionsRepo, engine_dir: Path, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers(fail_first=3)
    engine = _serve(defs_repo, engine_dir)
    try:
        token = _admin_token(engine_dir)
        hook = _subscribe(engine, token, receiver.url, ["deployment.success"])
        name = defs_repo.worker("w")
        defs_repo.commit("Add w")
        _wait_for(receiver, "the success after three failures", lambda b: len(b) >= 1)
        wait_until(
            lambda: engine.request("GET", f"/webhooks/{hook}/deliveries", token).json()["data"][0]
            ["status"] == "delivered",
            EVENT_WAIT_S, "the delivery marked delivered",
        )
        deliveries = engine.request("GET", f"/webhooks/{hook}/deliveries", token).json()
    finally:
        engine.stop()
        print(engine.log_path.read_text())  # shown when the test fails
    assert [b["data"]["name"] for b in receiver.delivered()] == [name]
    assert len(receiver.requests) == 4
    # One event, one delivery id, four tries of it.
    assert len({r["headers"]["X-DeployAlly-Delivery"] for r in receiver.requests}) == 1
    (delivery,) = deliveries["data"]
    assert delivery["event"] == "deployment.success" and delivery["status"] == "delivered"
    assert delivery["next_attempt_at"] is None
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 500, 204]
    assert all(a["error"] for a in delivery["attempts"][:3])
    assert delivery["attempts"][3]["error"] is None
    assert all(a["duration_ms"] >= 0 for a in delivery["attempts"])


def test_a_receiver_down_across_an_engine_restart_still_gets_every_event(
    defs_repo: DefinitionsRepo, engine_dir: Path, receivers: Callable[..., Receiver]
) -> None:
    with socket.socket() as probe:  # a port nothing listens on yet
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/hook"
    # Retries every few seconds: the engine tries (and fails) before the restart, and
    # has tries left after it.
    backoff = "1,2,4,8"
    engine = _serve(defs_repo, engine_dir, backoff)
    try:
        token = _admin_token(engine_dir)
        hook = _subscribe(engine, token, url, ["deployment.success", "definition.created"])
        name = defs_repo.worker("w")
        defs_repo.commit("Add w")
        wait_until(
            lambda: any(d["attempts"] for d in engine.request(
                "GET", f"/webhooks/{hook}/deliveries", token).json()["data"]),
            EVENT_WAIT_S, "a failed first attempt while the receiver is down",
        )
    finally:
        assert engine.stop() == 0
        print(engine.log_path.read_text())  # shown when the test fails
    engine = _serve(defs_repo, engine_dir, backoff)
    try:
        receiver = receivers(port=port)
        _wait_for(receiver, "both events after the restart", lambda b: len(b) >= 2)
        deliveries = engine.request("GET", f"/webhooks/{hook}/deliveries", token).json()["data"]
    finally:
        engine.stop()
        print(engine.log_path.read_text())  # shown when the test fails
    assert sorted(_kinds(receiver.events(name))) == ["definition.created", "deployment.success"]
    assert {d["status"] for d in deliveries} == {"delivered"}
    assert all(d["attempts"][0]["status_code"] is None for d in deliveries if len(d["attempts"]) > 1)


def test_a_hanging_receiver_does_not_hold_up_a_deployment(
    defs_repo: DefinitionsRepo, engine_dir: Path, receivers: Callable[..., Receiver]
) -> None:
    receiver = receivers(hang=True)
    engine = _serve(defs_repo, engine_dir)
    try:
        token = _admin_token(engine_dir)
        _subscribe(engine, token, receiver.url, ["deployment.started", "deployment.success"])
        first = defs_repo.worker("first")
        defs_repo.commit("Add first")
        wait_until(lambda: receiver.hanging, EVENT_WAIT_S, "the receiver to hang on an event")
        second = defs_repo.worker("second")
        defs_repo.commit("Add second")

        def deployed(name: str) -> bool:
            found = engine.request("GET", "/deployments?per_page=100", token).json()["data"]
            return any(d["definition_name"] == name and d["status"] == "success" for d in found)

        wait_until(lambda: deployed(first) and deployed(second), EVENT_WAIT_S,
                   "both deployments to succeed")
        # Both deployments are done, and the receiver is still stuck on what it was sent.
        assert receiver.hanging >= 1
    finally:
        engine.stop()
        print(engine.log_path.read_text())  # shown when the test fails


# ---------------------------------------------------------------- instance events from Docker

def test_instance_unhealthy_and_stopped_come_from_dockers_own_events(
    defs_repo: DefinitionsRepo, engine_dir: Path, receivers: Callable[..., Receiver],
    docker_client: docker.DockerClient,
) -> None:
    receiver = receivers()
    engine = _serve(defs_repo, engine_dir)
    try:
        token = _admin_token(engine_dir)
        _subscribe(engine, token, receiver.url, ["instance.unhealthy", "instance.stopped"])
        name = defs_repo.worker(
            "w", script="touch /data/ok; sleep 2147483647", health="test -f /data/ok"
        )
        defs_repo.commit("Add w")
        wait_until(lambda: (c := _container(docker_client, name)) is not None
                   and c.attrs["State"].get("Health", {}).get("Status") == "healthy",
                   EVENT_WAIT_S, f"{name} to be healthy")

        _container(docker_client, name).exec_run(["rm", "-f", "/data/ok"])
        _wait_for(receiver, "instance.unhealthy",
                  lambda b: "instance.unhealthy" in _kinds(receiver.events(name)))

        wait_until(lambda: (c := _container(docker_client, name)) is not None
                   and c.status == "running", EVENT_WAIT_S, f"{name} running again")
        _container(docker_client, name).stop(timeout=1)
        _wait_for(receiver, "instance.stopped",
                  lambda b: "instance.stopped" in _kinds(receiver.events(name)))
    finally:
        engine.stop()
        print(engine.log_path.read_text())  # shown when the test fails
    unhealthy = next(b for b in receiver.events(name) if b["event"] == "instance.unhealthy")
    assert unhealthy["data"]["status"] == "unhealthy"
    assert unhealthy["data"]["instance_id"].startswith("inst_")
    assert unhealthy["data"]["revision"] == 1 and unhealthy["data"]["commit"]
    stopped = next(b for b in receiver.events(name) if b["event"] == "instance.stopped")
    assert stopped["data"]["status"] == "exited"


def _container(client: docker.DockerClient, name: str) -> Any:
    try:
        return client.containers.get(name)
    except docker.errors.NotFound:
        return None


# ---------------------------------------------------------------- test ping and the verify CLI

def test_post_test_delivers_a_signed_ping_that_the_verify_command_accepts(
    defs_repo: DefinitionsRepo, engine_dir: Path, receivers: Callable[..., Receiver],
    tmp_path: Path,
) -> None:
    receiver = receivers()
    engine = _serve(defs_repo, engine_dir)
    try:
        token = _admin_token(engine_dir)
        hook = _subscribe(engine, token, receiver.url, ["deployment.failed"])
        r = engine.request("POST", f"/webhooks/{hook}/test", token)
        assert r.status_code == 202, r.text
        _wait_for(receiver, "the ping", lambda b: _kinds(b) == ["ping"])
        wait_until(
            lambda: engine.request("GET", f"/webhooks/{hook}/deliveries", token).json()["data"][0]
            ["status"] == "delivered",
            EVENT_WAIT_S, "the ping marked delivered",
        )
    finally:
        engine.stop()
        print(engine.log_path.read_text())  # shown when the test fails
    (request,) = receiver.requests
    assert request["headers"]["X-DeployAlly-Event"] == "ping"
    assert request["headers"]["X-DeployAlly-Delivery"] == r.json()["data"]["delivery_id"]
    assert json.loads(request["body"])["data"]["webhook_id"] == hook
    signature = request["headers"]["X-DeployAlly-Signature"]

    def verify_cli(body: bytes, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
        done = subprocess.run(
            [sys.executable, "-m", "deployally", "webhook", "verify", "--signature", signature,
             *args],
            check=False, input=body, capture_output=True, env={**os.environ, **(env or {})},
        )
        return done.returncode, done.stdout.decode().strip()

    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    assert verify_cli(request["body"], "--secret", SECRET) == (0, "valid")
    assert verify_cli(request["body"], "--secret-file", str(secret_file)) == (0, "valid")
    assert verify_cli(request["body"], env={"DEPLOYALLY_WEBHOOK_SECRET": SECRET}) == (0, "valid")
    assert verify_cli(request["body"] + b" ", "--secret", SECRET)[0] == 1
    assert verify_cli(request["body"], "--secret", "wrong") == (
        1, "invalid: the signature does not match"
    )
    # The Standard Webhooks signature covers the id and the time of the attempt too.
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert headers["webhook-id"] == request["headers"]["X-DeployAlly-Delivery"]
    signature = headers["webhook-signature"]
    standard = ["--id", headers["webhook-id"], "--timestamp", headers["webhook-timestamp"]]
    assert verify_cli(request["body"], *standard, "--secret", SECRET) == (0, "valid")
    code, said = verify_cli(request["body"] + b" ", *standard, "--secret", SECRET)
    assert code == 1 and "no v1 signature matches" in said
    later = str(int(headers["webhook-timestamp"]) + 1)
    code, said = verify_cli(request["body"], "--id", headers["webhook-id"], "--timestamp", later,
                            "--secret", SECRET)
    assert code == 1 and "no v1 signature matches" in said
