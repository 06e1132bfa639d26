"""A real `deployally agent` process on a second Docker engine (a stand-in for a remote host),
polling a real `deployally serve` over HTTP: registered, online, deploying there and only there,
offline and waiting, back and running once, refused keys, and a kill mid-deployment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from conftest import DefinitionsRepo, ServeProcess, running_revision, wait_until
from deployally.store import Store
from test_tls import _key, _self_signed, _write_key

pytestmark = pytest.mark.docker

HEARTBEAT = "0.2"
WAIT_S = 90.0  # a bound on waiting, never an expectation of speed
KEY_REFUSED = 3

# A template of the test repository's own: ready once $DELAY seconds have passed, its failing
# checks not counted meanwhile (start_period), so an update's health wait lasts that long.
SLOW_TEMPLATE = """\
name: Busybox Slow
description: busybox that becomes healthy after a delay
version: stable
taxonomy: {kingdom: assets, family: tools, species: busybox, variant: slow, specimen: stable}
deprecated: false
spec:
  image: {repository: busybox, tag: stable}
  user_inputs:
    delay: {type: string, default: "0"}
  profiles: [minimal, development, production]
  env:
    DELAY: "{{ params.delay }}"
  command: ["sh", "-c", "sleep $DELAY; touch /tmp/ready; exec sleep 2147483647"]
  healthcheck:
    test: ["CMD", "test", "-f", "/tmp/ready"]
    interval: 1s
    timeout: 2s
    retries: 3
    start_period: 120s
  stop_signal: SIGKILL
"""


class AgentProcess:
    """`deployally agent` in a subprocess, its output in a file."""

    def __init__(self, url: str, engine_host: str, state_dir: Path, *, key_file: Path | None = None,
                 key_env: str | None = None, ca_file: Path | None = None) -> None:
        self.log_path = state_dir.parent / f"agent-{os.urandom(3).hex()}.log"
        state_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "deployally", "agent", "--url", url, "--docker-host", engine_host,
            "--state-dir", str(state_dir), "--heartbeat", HEARTBEAT,
        ]
        env = {k: v for k, v in os.environ.items() if k != "DEPLOYALLY_AGENT_KEY"}
        if key_file is not None:
            command += ["--key-file", str(key_file)]
        if key_env is not None:
            env["DEPLOYALLY_AGENT_KEY"] = key_env
        if ca_file is not None:
            command += ["--ca-file", str(ca_file)]
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def wait(self, timeout: float = WAIT_S) -> int:
        return self.proc.wait(timeout)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self._log.closed:
            return self.proc.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(WAIT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def engine(defs_repo: DefinitionsRepo, tmp_path: Path) -> Iterator[ServeProcess]:
    served = ServeProcess(defs_repo.path, tmp_path / "state")
    yield served
    assert served.stop() == 0, served.log()


@pytest.fixture
def admin(engine: ServeProcess) -> str:
    with Store(engine.state_dir) as store:
        return store.create_token("admin-bot", "admin")


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.stop(signal.SIGKILL)


def register(engine: ServeProcess, admin: str, name: str, tmp_path: Path) -> tuple[dict[str, object], Path]:
    """POST /servers; its key written to a file only its owner reads."""
    made = engine.request("POST", "/servers", admin, json={"name": name, "environment": "staging"})
    assert made.status_code == 201, made.text
    data = made.json()["data"]
    key_file = tmp_path / f"{name}.key"
    key_file.write_text(data.pop("api_key") + "\n")
    key_file.chmod(0o600)
    return data, key_file


def server(engine: ServeProcess, name: str) -> dict[str, object]:
    found = {s["name"]: s for s in engine.request("GET", "/servers").json()["data"]}
    return found[name]  # type: ignore[no-any-return]


def deployments(engine: ServeProcess, definition: str) -> list[dict[str, object]]:
    answer = engine.request("GET", f"/deployments?definition_id={definition}&per_page=100")
    return answer.json()["data"]  # type: ignore[no-any-return]


def containers(client: docker.DockerClient, prefix: str) -> list[str]:
    """Names of the containers named with `prefix`, from one list call (no inspect per
    container, which a container removed meanwhile would fail)."""
    rows = client.api.containers(all=True, filters={"name": prefix})
    return sorted(n.lstrip("/") for r in rows for n in r["Names"] if n.lstrip("/").startswith(prefix))


def test_an_agent_deploys_on_its_host_goes_offline_waits_and_comes_back_to_run_once(
    engine: ServeProcess, admin: str, defs_repo: DefinitionsRepo, second_engine: object,
    docker_client: docker.DockerClient, names: str, tmp_path: Path, agents: list[AgentProcess],
) -> None:
    far = second_engine.client  # type: ignore[attr-defined]
    edge = f"{names}-edge"
    registered, key_file = register(engine, admin, edge, tmp_path)
    assert registered["status"] == "pending"
    assert "api_key" not in server(engine, edge)  # shown once, never again
    agents.append(AgentProcess(engine.url, second_engine.host, tmp_path / "agent",  # type: ignore[attr-defined]
                               key_file=key_file))
    shown = wait_until(lambda: (s := server(engine, edge))["status"] == "online" and s, WAIT_S,
                       f"{edge} online")
    assert shown["docker_version"] == far.version()["Version"] and shown["agent_version"]  # type: ignore[index]

    app = defs_repo.worker("app", message="one", _extra=f"server: {edge}\n")
    defs_repo.commit("Define app on the edge server")
    wait_until(lambda: [d["status"] for d in deployments(engine, app)] == ["success"], WAIT_S,
               "revision 1 deployed")
    assert running_revision(far, app) == "1"
    assert containers(docker_client, app) == []  # not on the engine's own Docker
    listed = wait_until(
        lambda: [i for i in engine.request("GET", "/instances").json()["data"]
                 if i["container_name"] == app],
        WAIT_S, "its instance in GET /instances",
    )
    (instance,) = listed  # type: ignore[misc]
    assert instance["server_id"] == registered["id"] and instance["environment"] == "staging"

    agents[0].stop(signal.SIGKILL)
    wait_until(lambda: server(engine, edge)["status"] == "offline", WAIT_S, f"{edge} offline")
    defs_repo.worker("app", message="two", _extra=f"server: {edge}\n")
    defs_repo.commit("Change app while its server is offline")
    waiting = wait_until(
        lambda: [d for d in deployments(engine, app) if d["status"] == "waiting"], WAIT_S,
        "a waiting deployment for revision 2",
    )
    (held,) = waiting  # type: ignore[misc]
    assert held["revision"] == 2 and held["waiting_for"]["kind"] == "server"
    assert held["waiting_for"]["since"] and "offline" in held["waiting_for"]["summary"]
    assert running_revision(far, app) == "1"

    agents.append(AgentProcess(engine.url, second_engine.host, tmp_path / "agent",  # type: ignore[attr-defined]
                               key_env=key_file.read_text().strip()))
    wait_until(lambda: running_revision(far, app) == "2", WAIT_S, "revision 2 once the agent is back")
    wait_until(
        lambda: [d["status"] for d in deployments(engine, app) if d["revision"] == 2] == ["success"],
        WAIT_S, "the waiting deployment, and it alone, to succeed",
    )
    (ran,) = [d for d in deployments(engine, app) if d["revision"] == 2]
    assert ran["id"] == held["id"]
    assert containers(far, app) == [app]
    assert "da_server_" not in agents[1].log()

    # Stopped behind the engine's back on the agent's host: healed there, as on local.
    def started() -> str:
        return str(far.api.inspect_container(app)["State"]["StartedAt"])

    before = started()
    far.containers.get(app).stop(timeout=1)
    wait_until(lambda: running_revision(far, app) == "2" and started() != before, WAIT_S,
               "the container started again")


def test_a_wrong_or_rotated_key_is_refused_and_the_agent_exits_saying_so(
    engine: ServeProcess, admin: str, second_engine: object, names: str, tmp_path: Path,
    agents: list[AgentProcess],
) -> None:
    wrong = tmp_path / "wrong.key"
    wrong.write_text("da_server_" + "0" * 40)
    wrong.chmod(0o600)  # a key file others can read is refused before the engine is asked
    agents.append(AgentProcess(engine.url, second_engine.host, tmp_path / "a1", key_file=wrong))  # type: ignore[attr-defined]
    assert agents[-1].wait() == KEY_REFUSED
    assert "refused this server key" in agents[-1].log() and "not known" in agents[-1].log()

    registered, key_file = register(engine, admin, f"{names}-edge", tmp_path)
    agents.append(AgentProcess(engine.url, second_engine.host, tmp_path / "a2", key_file=key_file))  # type: ignore[attr-defined]
    wait_until(lambda: server(engine, f"{names}-edge")["status"] == "online", WAIT_S, "online")
    rotated = engine.request("POST", f"/servers/{registered['id']}/rotate-key", admin)
    assert rotated.status_code == 200 and rotated.json()["data"]["api_key"] != key_file.read_text().strip()
    assert agents[-1].wait() == KEY_REFUSED
    log = agents[-1].log()
    assert "refused this server key" in log and "rotate-key" in log, log


def test_an_agent_killed_during_a_health_wait_and_restarted_leaves_one_container_at_the_head(
    engine: ServeProcess, admin: str, defs_repo: DefinitionsRepo, second_engine: object,
    names: str, tmp_path: Path, agents: list[AgentProcess],
) -> None:
    far = second_engine.client  # type: ignore[attr-defined]
    edge = f"{names}-edge"
    _, key_file = register(engine, admin, edge, tmp_path)
    defs_repo.write("catalog/tools/slow.yaml", SLOW_TEMPLATE)
    app = defs_repo.name("slow")
    def text(delay: str) -> str:
        return f"name: {app}\ntemplate: tools/busybox/slow/stable\nserver: {edge}\nparams: {{delay: '{delay}'}}\n"

    defs_repo.write(f"definitions/{app}.yaml", text("0"))
    defs_repo.commit("A slow starter on the edge server")
    agents.append(AgentProcess(engine.url, second_engine.host, tmp_path / "agent", key_file=key_file))  # type: ignore[attr-defined]
    wait_until(lambda: [d["status"] for d in deployments(engine, app)] == ["success"], WAIT_S,
               "revision 1 deployed")

    defs_repo.write(f"definitions/{app}.yaml", text("8"))
    defs_repo.commit("Revision 2 takes 8 s to become healthy")

    def in_health_wait() -> bool:
        for d in deployments(engine, app):
            if d["revision"] == 2:
                logs = engine.request("GET", f"/deployments/{d['id']}").json()["data"]["logs"]
                return any("waiting for health" in line["message"] for line in logs)
        return False

    wait_until(in_health_wait, WAIT_S, "revision 2 in its health wait")
    agents[0].stop(signal.SIGKILL)
    assert len(containers(far, app)) == 2  # the new one starting, the old one aside
    agents.append(AgentProcess(engine.url, second_engine.host, tmp_path / "agent", key_file=key_file))  # type: ignore[attr-defined]

    wait_until(lambda: running_revision(far, app) == "2" and containers(far, app) == [app], WAIT_S,
               "one container, revision 2")
    wait_until(
        lambda: [d["status"] for d in deployments(engine, app) if d["revision"] == 2] == ["success"],
        WAIT_S, "revision 2's one deployment to succeed",
    )


def test_an_agent_reaches_an_https_engine_it_checks_with_its_ca_file(
    defs_repo: DefinitionsRepo, second_engine: object, names: str, tmp_path: Path,
    agents: list[AgentProcess],
) -> None:
    key = _key()
    cert = _self_signed(key, tmp_path / "engine.crt")
    engine = ServeProcess(defs_repo.path, tmp_path / "state", "--tls-cert", str(cert),
                          "--tls-key", str(_write_key(key, tmp_path / "engine.key")))
    try:
        assert engine.url.startswith("https://")
        with Store(engine.state_dir) as store:
            _, server_key = store.add_server(f"{names}-edge", "staging")
        key_file = tmp_path / "edge.key"
        key_file.write_text(server_key)
        key_file.chmod(0o600)
        refused = AgentProcess(engine.url, second_engine.host, tmp_path / "a1", key_file=key_file)  # type: ignore[attr-defined]
        agents.append(refused)
        wait_until(lambda: "certificate verify failed" in refused.log(), WAIT_S, "a refused certificate")
        assert "--ca-file" in refused.log()
        refused.stop()
        checked = AgentProcess(engine.url, second_engine.host, tmp_path / "a2", key_file=key_file,  # type: ignore[attr-defined]
                               ca_file=cert)
        agents.append(checked)

        def heard() -> bool:
            with Store(engine.state_dir) as store:
                found = store.server(f"{names}-edge")
                return found is not None and found.agent_version is not None

        wait_until(heard, WAIT_S, "the agent heard over HTTPS")
        assert checked.proc.poll() is None and "certificate verify failed" not in checked.log()
    finally:
        assert engine.stop() == 0, engine.log()
