"""Servers of kind swarm on a real single-node swarm (a dockerd of its own): each definition a
service, its replicas Swarm's tasks, rolled and rolled back by Swarm itself.

Through the engine's real sync: definitions committed to git, a real state store, the local
driver on the host's engine beside the swarm driver on the test engine.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from conftest import ApiServer, DefinitionsRepo, full_spec, wait_until
from deployally.drivers.local.driver import LocalDriver
from deployally.drivers.swarm.driver import client_for
from deployally.errors import DriverError
from deployally.model.engine_config import load_engine_config
from deployally.types import (
    LABEL_REVISION,
    Action,
    ActionKind,
    DeploymentStatus,
    InstanceEventKind,
    WaitKind,
)
from deployally.workspace import Workspace

# A template whose `message` goes only into config files, never into the service's spec.
FILED_TEMPLATE = """name: Busybox Filed
description: busybox with a param meant for config files only
version: stable
taxonomy: {kingdom: assets, family: tools, species: busybox, variant: filed, specimen: stable}
deprecated: false
spec:
  image: {repository: busybox, tag: stable}
  user_inputs:
    message: {type: string, default: hello, description: For config files.}
  profiles: [minimal, development, production]
  command: ["sh", "-c", "sleep 2147483647"]
  stop_signal: SIGKILL
"""
SWARM = "edge"  # sorts before `local`: applied first, so a hang there would hold local up


@pytest.fixture
def ws(defs_repo: DefinitionsRepo, tmp_path: Path) -> Iterator[Workspace]:
    ws = Workspace.open(defs_repo.path, tmp_path / "state")
    yield ws
    ws.close()


def swarm_server(ws: Workspace, engine: Any, name: str = SWARM) -> None:
    """Register the test engine's manager as a swarm server."""
    ws.store.add_server(name, "production", kind="swarm", docker_host=engine.host)


def plain(repo: DefinitionsRepo, short: str, script: str, *, server: str = SWARM, extra: str = "") -> str:
    """definitions/<name>.yaml on the busybox-plain template (no volume, no healthcheck)."""
    name = repo.name(short)
    repo.write(
        f"definitions/{name}.yaml",
        f"name: {name}\ntemplate: tools/busybox/plain/stable\nserver: {server}\n"
        f"params:\n  script: {script!r}\n{extra}",
    )
    return name


def service(client: docker.DockerClient, name: str) -> dict[str, Any]:
    info: dict[str, Any] = client.api.inspect_service(name)
    return info


def running_tasks(client: docker.DockerClient, name: str) -> list[dict[str, Any]]:
    tasks = client.api.tasks(filters={"service": [name], "desired-state": "running"})
    return [t for t in tasks if t["Status"]["State"] == "running"]


def args_of(task_or_service: dict[str, Any]) -> list[str]:
    spec = task_or_service["Spec"]
    return list((spec.get("TaskTemplate") or spec)["ContainerSpec"]["Args"])


def logs_of(ws: Workspace, report: Any) -> dict[str, list[str]]:
    """Each deployment's log, by definition name: what an assertion about a sync shows."""
    return {
        d.definition_name: [line.message for line in ws.store.deployment(d.id).logs]
        for d in report.deployments
    }


def only_deployment(report: Any, name: str) -> Any:
    (found,) = [d for d in report.deployments if d.definition_name == name]
    return found


def test_replicas_run_as_tasks_an_update_rolls_through_and_instances_show_their_node(
    defs_repo: DefinitionsRepo, ws: Workspace, swarm_engine: Any, docker_client: docker.DockerClient
) -> None:
    swarm_server(ws, swarm_engine)
    web = plain(defs_repo, "web", "echo v1; sleep 2147483647", extra="replicas: 2\n")
    defs_repo.commit("web on the swarm, two replicas")

    report = ws.engine.sync()
    assert only_deployment(report, web).status is DeploymentStatus.SUCCESS, report
    client = swarm_engine.client
    assert service(client, web)["Spec"]["Labels"][LABEL_REVISION] == "1"
    tasks = running_tasks(client, web)
    assert len(tasks) == 2 and all("v1" in " ".join(args_of(t)) for t in tasks)
    with pytest.raises(docker.errors.NotFound):  # the swarm's, never the engine's own host
        docker_client.api.inspect_container(web)

    # GET /instances: each task an instance, on its node.
    token = ws.store.create_token("reader", "read")
    api = ApiServer(ws)
    try:
        listed = api.request("GET", "/instances", token).json()["data"]
        servers = api.request("GET", "/servers", token).json()["data"]
    finally:
        api.close()
    node = client.info()["Name"]
    mine = [i for i in listed if i["container_name"] == web]
    assert len(mine) == 2, listed
    assert {i["node"] for i in mine} == {node} and {i["status"] for i in mine} == {"running"}
    (edge,) = [s for s in servers if s["name"] == SWARM]
    assert (edge["status"], edge["running_instances"]) == ("online", 2)
    assert {i["container_id"] for i in mine} == {t["Status"]["ContainerStatus"]["ContainerID"][:12] for t in tasks}

    plain(defs_repo, "web", "echo v2; sleep 2147483647", extra="replicas: 2\n")
    defs_repo.commit("web v2")
    report = ws.engine.sync()
    assert only_deployment(report, web).status is DeploymentStatus.SUCCESS, report
    assert service(client, web)["Spec"]["Labels"][LABEL_REVISION] == "2"
    tasks = running_tasks(client, web)
    assert len(tasks) == 2 and all("v2" in " ".join(args_of(t)) for t in tasks), tasks


def test_each_services_update_monitor_is_its_definitions_min_ready_at_least_2s(
    defs_repo: DefinitionsRepo, ws: Workspace, swarm_engine: Any
) -> None:
    """Swarm's monitor is what min_ready is on a swarm: how long a new task must keep running."""
    swarm_server(ws, swarm_engine)
    defs_repo.write("deployally.yaml", f"network: {defs_repo.prefix}net\nmin_ready: 3s\n")
    repo_wide = plain(defs_repo, "repo", "sleep 2147483647")
    own = plain(defs_repo, "own", "sleep 2147483647", extra="min_ready: 4s\n")
    none = plain(defs_repo, "none", "sleep 2147483647", extra="min_ready: 0s\n")
    defs_repo.commit("three monitors")

    report = ws.engine.sync()

    assert report.ok, logs_of(ws, report)
    client = swarm_engine.client
    monitors = {n: (service(client, n)["Spec"]["UpdateConfig"]["Monitor"],
                    service(client, n)["Spec"]["RollbackConfig"]["Monitor"])
                for n in (repo_wide, own, none)}
    assert monitors == {repo_wide: (3 * 10**9,) * 2, own: (4 * 10**9,) * 2, none: (2 * 10**9,) * 2}
    assert "waiting 4s to see them keep running" in " ".join(logs_of(ws, report)[own])


def test_a_failing_update_is_rolled_back_by_swarm_and_recorded_with_the_task_errors(
    defs_repo: DefinitionsRepo, ws: Workspace, swarm_engine: Any
) -> None:
    swarm_server(ws, swarm_engine)
    web = plain(defs_repo, "web", "echo good; sleep 2147483647", extra="replicas: 2\n")
    defs_repo.commit("web")
    report = ws.engine.sync()
    assert report.ok, logs_of(ws, report)
    client = swarm_engine.client

    plain(defs_repo, "web", "echo bad; exit 3", extra="replicas: 2\n")
    defs_repo.commit("web exits")
    report = ws.engine.sync()

    failed = only_deployment(report, web)
    assert failed.status is DeploymentStatus.ROLLED_BACK, report
    logs = "\n".join(line.message for line in ws.store.deployment(failed.id).logs)
    assert "rolled the update back" in logs and "exited with code 3" in logs, logs
    assert "good" in " ".join(args_of(service(client, web)))
    # Still serving the old spec (Swarm may have replaced a slot's task with a new one of it,
    # the one it replaces still running for a moment after the rollback is complete).
    wait_until(lambda: len(running_tasks(client, web)) == 2, 30, "two tasks serving")
    serving = running_tasks(client, web)
    assert all("good" in " ".join(args_of(t)) for t in serving), serving
    record = ws.store.definition(web)
    assert record is not None and record.applied_revision == 1


def test_a_new_service_whose_tasks_crash_fails_at_once_and_is_removed(
    defs_repo: DefinitionsRepo, ws: Workspace, swarm_engine: Any
) -> None:
    swarm_server(ws, swarm_engine)
    web = plain(defs_repo, "web", "exit 3", extra="replicas: 2\n")
    defs_repo.commit("web crashes at once")
    report = ws.engine.sync()

    failed = only_deployment(report, web)
    logs = "\n".join(line.message for line in ws.store.deployment(failed.id).logs)
    assert failed.status is DeploymentStatus.FAILED, logs
    # The first failed task ends it, not the health timeout.
    assert "a task of the new service failed" in logs and "exited with code 3" in logs, logs
    assert "within" not in logs, logs
    assert not swarm_engine.client.api.services(filters={"name": web})
    record = ws.store.definition(web)
    assert record is not None and record.applied_revision is None


def test_a_definition_named_like_the_start_of_another_services_id_gets_a_service_of_its_own(
    defs_repo: DefinitionsRepo, ws: Workspace, swarm_engine: Any, names: str, busybox_image: str
) -> None:
    from engines import remove_prefixed_services

    swarm_server(ws, swarm_engine)
    client = swarm_engine.client
    other = client.services.create(busybox_image, ["sleep", "2147483647"], name=f"{names}_other")
    before = service(client, other.id)["Version"]["Index"]
    short = other.id[:8]  # Docker's inspect resolves this id prefix to the other service
    defs_repo.write(
        f"definitions/{short}.yaml",
        f"name: {short}\ntemplate: tools/busybox/plain/stable\nserver: {SWARM}\n"
        "params:\n  script: 'sleep 2147483647'\n",
    )
    defs_repo.commit("a definition named like an id prefix")
    try:
        report = ws.engine.sync()
        assert only_deployment(report, short).status is DeploymentStatus.SUCCESS, logs_of(ws, report)
        mine = [s for s in client.api.services(filters={"name": short}) if s["Spec"]["Name"] == short]
        assert len(mine) == 1 and mine[0]["ID"] != other.id
        assert service(client, other.id)["Version"]["Index"] == before  # untouched
    finally:
        remove_prefixed_services(client, short)


def test_a_service_of_no_replicas_shows_no_running_instance_and_is_not_healed(
    defs_repo: DefinitionsRepo, ws: Workspace, swarm_engine: Any
) -> None:
    swarm_server(ws, swarm_engine)
    web = plain(defs_repo, "web", "sleep 2147483647", extra="replicas: 0\n")
    defs_repo.commit("web, no task")
    report = ws.engine.sync()
    assert only_deployment(report, web).status is DeploymentStatus.SUCCESS, logs_of(ws, report)
    assert service(swarm_engine.client, web)["Spec"]["Mode"]["Replicated"]["Replicas"] == 0

    token = ws.store.create_token("reader", "read")
    api = ApiServer(ws)
    try:
        listed = api.request("GET", "/instances", token).json()["data"]
        servers = api.request("GET", "/servers", token).json()["data"]
    finally:
        api.close()
    assert all(i["status"] != "running" for i in listed if i["container_name"] == web), listed
    (edge,) = [s for s in servers if s["name"] == SWARM]
    assert edge["running_instances"] == 0, edge
    assert not [d for d in ws.engine.sync().deployments if d.definition_name == web]  # no heal


def test_a_task_swarm_is_restarting_is_left_to_swarm_not_healed_by_a_deployment(
    defs_repo: DefinitionsRepo, ws: Workspace, swarm_engine: Any
) -> None:
    swarm_server(ws, swarm_engine)
    web = plain(defs_repo, "web", "sleep 2147483647")
    defs_repo.commit("web")
    assert ws.engine.sync().ok
    client = swarm_engine.client
    (task,) = running_tasks(client, web)
    client.api.kill(task["Status"]["ContainerStatus"]["ContainerID"])
    # Swarm replaces the task after its restart delay (5 s): meanwhile none runs.
    driver = ws.driver_for(SWARM)
    assert driver is not None
    wait_until(lambda: not driver.live()[web].running, 30, "the killed task seen down")

    report = ws.engine.sync()
    assert not [d for d in report.deployments if d.definition_name == web], logs_of(ws, report)
    wait_until(lambda: len(running_tasks(client, web)) == 1, 60, "Swarm's own replacement running")


def test_removing_the_definition_removes_the_service_and_keeps_its_volume(
    defs_repo: DefinitionsRepo, ws: Workspace, swarm_engine: Any
) -> None:
    swarm_server(ws, swarm_engine)
    db = defs_repo.worker("db", _extra=f"server: {SWARM}\n")
    defs_repo.commit("db on the swarm")
    report = ws.engine.sync()
    assert only_deployment(report, db).status is DeploymentStatus.SUCCESS, report
    client = swarm_engine.client
    (mount,) = service(client, db)["Spec"]["TaskTemplate"]["ContainerSpec"]["Mounts"]
    assert mount["Type"] == "volume" and client.api.inspect_volume(mount["Source"])

    defs_repo.remove(f"definitions/{db}.yaml")
    defs_repo.commit("db goes")
    report = ws.engine.sync()
    assert only_deployment(report, db).status is DeploymentStatus.SUCCESS, report
    with pytest.raises(docker.errors.NotFound):
        client.api.inspect_service(db)
    assert client.api.inspect_volume(mount["Source"])["Name"] == mount["Source"]


def test_replicas_other_than_one_are_refused_on_a_local_server(
    defs_repo: DefinitionsRepo, ws: Workspace, docker_client: docker.DockerClient
) -> None:
    web = plain(defs_repo, "web", "sleep 2147483647", server="local", extra="replicas: 2\n")
    defs_repo.commit("two of web on local")
    report = ws.engine.sync()

    (error,) = report.errors
    assert (error.path, error.field) == (f"definitions/{web}.yaml", "replicas"), error
    assert "replicas: 2 needs a swarm server" in error.message
    assert not report.deployments
    assert not docker_client.api.containers(all=True, filters={"name": web})


def test_replicas_with_volumes_on_a_swarm_are_an_error_of_the_file_not_a_failed_deployment(
    defs_repo: DefinitionsRepo, ws: Workspace, swarm_engine: Any
) -> None:
    swarm_server(ws, swarm_engine)
    db = defs_repo.worker("db", _extra=f"server: {SWARM}\nreplicas: 2\n")
    defs_repo.commit("two of db, one volume")
    report = ws.engine.sync()

    (error,) = report.errors
    assert (error.path, error.field) == (f"definitions/{db}.yaml", "replicas"), error
    assert "with named volumes" in error.message
    assert not report.deployments
    assert not swarm_engine.client.api.services(filters={"name": db})
    record = ws.store.definition(db)
    assert record is not None and record.status.value == "invalid", record


def test_the_local_driver_refuses_replicas_without_touching_anything(
    names: str, state_dir: Path, claims: Any, docker_client: docker.DockerClient
) -> None:
    # What an agent's host (the local driver there) does with a spec its engine let through.
    spec = dataclasses.replace(full_spec(), name=f"{names}_web", image="busybox:stable", replicas=2)
    driver = LocalDriver(state_dir, owner="eng_test", claims=claims)
    lines: list[str] = []
    result = driver.apply(
        Action(ActionKind.CREATE, spec.name, spec, None), revision=1, commit=None,
        resolve=lambda text: text, log=lines.append,
    )
    assert result.status is DeploymentStatus.FAILED and result.unready
    assert "replicas: 2 needs a swarm server" in result.message and lines
    assert not docker_client.api.containers(all=True, filters={"name": spec.name})


def test_one_unreachable_swarm_server_never_delays_local(
    defs_repo: DefinitionsRepo, ws: Workspace, make_engine: Any, docker_client: docker.DockerClient
) -> None:
    engine = make_engine(swarm=True)
    swarm_server(ws, engine)
    far = plain(defs_repo, "far", "echo one; sleep 2147483647")
    near = plain(defs_repo, "near", "echo one; sleep 2147483647", server="local")
    defs_repo.commit("one on each")
    report = ws.engine.sync()
    assert report.ok, logs_of(ws, report)

    engine.stop()
    plain(defs_repo, "far", "echo two; sleep 2147483647")
    plain(defs_repo, "near", "echo two; sleep 2147483647", server="local")
    defs_repo.commit("both change")
    report = ws.engine.sync()

    assert SWARM in report.unreachable, report
    assert only_deployment(report, near).status is DeploymentStatus.SUCCESS
    assert "two" in docker_client.api.inspect_container(near)["Config"]["Cmd"][-1]
    local_record = ws.store.definition(near)
    assert local_record is not None and local_record.applied_revision == 2
    far_record = ws.store.definition(far)
    assert far_record is not None and far_record.applied_revision == 1
    waits = ws.store.waiting_by_definition()[far_record.id]
    assert waits.status is DeploymentStatus.WAITING and waits.waiting is not None
    assert waits.waiting.kind is WaitKind.SERVER and SWARM in waits.waiting.summary

    engine.start()  # back: the next sync carries the change out there, as that deployment
    report = ws.engine.sync()
    assert not report.unreachable, report
    assert only_deployment(report, far).id == waits.id
    assert only_deployment(report, far).status is DeploymentStatus.SUCCESS
    far_record = ws.store.definition(far)
    assert far_record is not None and far_record.applied_revision == 2
    assert "two" in " ".join(args_of(service(engine.client, far)))


# ---------------------------------------------------------------- reaching a manager


def test_a_tcp_manager_needs_tls_files_named_in_engine_yaml(tmp_path: Path) -> None:
    with pytest.raises(DriverError, match="docker_tls"):
        client_for("tcp://manager.example:2376", None)
    with pytest.raises(DriverError, match="ca.pem, cert.pem, key.pem"):
        client_for("tcp://manager.example:2376", tmp_path)
    (tmp_path / "engine.yaml").write_text("docker_tls: {edge: tls/edge}\n")
    assert load_engine_config(tmp_path).docker_tls == {"edge": tmp_path / "tls" / "edge"}


def test_a_config_file_with_a_secret_is_a_swarm_secret_named_by_content_and_its_value_shown_nowhere(
    defs_repo: DefinitionsRepo, ws: Workspace, swarm_engine: Any
) -> None:
    swarm_server(ws, swarm_engine)
    ws.store.set_secret("token", "first-VALUE-1")
    name = defs_repo.name("app")
    defs_repo.write("catalog/filed.yaml", FILED_TEMPLATE)
    defs_repo.write(
        f"definitions/{name}.yaml",
        f"name: {name}\ntemplate: tools/busybox/filed/stable\nserver: {SWARM}\n"
        "params:\n  message: {secret: token}\n"
        "files:\n  - {path: /etc/app/token.conf, content: 'token={{ params.message }}'}\n"
        "  - {path: /etc/app/plain.conf, content: plain}\n",
    )
    defs_repo.commit("app with a secret file")
    report = ws.engine.sync()
    assert report.ok, logs_of(ws, report)
    client = swarm_engine.client

    container = service(client, name)["Spec"]["TaskTemplate"]["ContainerSpec"]
    (secret,) = container["Secrets"]
    (config,) = container["Configs"]
    assert secret["File"]["Name"] == "/etc/app/token.conf" and secret["SecretName"].startswith(name)
    assert config["File"]["Name"] == "/etc/app/plain.conf"
    (task,) = running_tasks(client, name)
    cid = task["Status"]["ContainerStatus"]["ContainerID"]
    shown = client.containers.get(cid).exec_run(["cat", "/etc/app/token.conf"]).output.decode()
    assert shown == "token=first-VALUE-1"
    everywhere = repr(service(client, name)["Spec"]["Labels"]) + repr(
        [s.attrs for s in client.secrets.list()]
    ) + repr(logs_of(ws, report))
    assert "first-VALUE-1" not in everywhere

    ws.store.set_secret("token", "second-VALUE-2")  # a new version: a new secret, tasks roll
    report = ws.engine.sync()
    assert only_deployment(report, name).status is DeploymentStatus.SUCCESS, logs_of(ws, report)
    (again,) = service(client, name)["Spec"]["TaskTemplate"]["ContainerSpec"]["Secrets"]
    assert again["SecretName"] != secret["SecretName"]
    assert secret["SecretName"] not in {s.name for s in client.secrets.list()}  # the old one went
    (task,) = running_tasks(client, name)
    cid = task["Status"]["ContainerStatus"]["ContainerID"]
    assert client.containers.get(cid).exec_run(["cat", "/etc/app/token.conf"]).output == b"token=second-VALUE-2"


def test_a_secret_in_the_environment_is_refused_on_a_swarm_naming_the_param(
    defs_repo: DefinitionsRepo, ws: Workspace, swarm_engine: Any
) -> None:
    swarm_server(ws, swarm_engine)
    ws.store.set_secret("token", "env-VALUE-3")
    name = defs_repo.name("app")
    defs_repo.write(
        f"definitions/{name}.yaml",
        f"name: {name}\ntemplate: tools/busybox/worker/stable\nserver: {SWARM}\n"
        "params:\n  message: {secret: token}\n",
    )
    defs_repo.commit("a secret in MESSAGE")
    report = ws.engine.sync()

    (error,) = report.errors
    assert (error.path, error.field) == (f"definitions/{name}.yaml", "params.message"), error
    assert "env MESSAGE" in error.message and "config file" in error.message
    assert not report.deployments
    assert not swarm_engine.client.api.services(filters={"name": name})


def test_watch_reports_the_tasks_of_this_engines_services(
    defs_repo: DefinitionsRepo, ws: Workspace, swarm_engine: Any
) -> None:
    swarm_server(ws, swarm_engine)
    driver = ws.driver_for(SWARM)
    assert driver is not None
    seen: list[Any] = []
    stream = driver.watch(seen.append)
    try:
        assert stream.wait_connected(10)
        web = plain(defs_repo, "web", "sleep 2147483647", extra="replicas: 2\n")
        defs_repo.commit("web")
        assert ws.engine.sync().ok
        wait_until(
            lambda: len({e.ref for e in seen if e.name == web and e.kind is InstanceEventKind.STARTED}) == 2,
            30, "two started events",
        )
    finally:
        stream.stop()
    tasks = {t["Status"]["ContainerStatus"]["ContainerID"] for t in running_tasks(swarm_engine.client, web)}
    assert {e.ref for e in seen if e.kind is InstanceEventKind.STARTED} == tasks


def test_stopping_an_instance_scales_its_service_to_none_and_starting_brings_back_its_replicas(
    defs_repo: DefinitionsRepo, ws: Workspace, swarm_engine: Any
) -> None:
    swarm_server(ws, swarm_engine)
    web = plain(defs_repo, "web", "sleep 2147483647", extra="replicas: 2\n")
    defs_repo.commit("web")
    report = ws.engine.sync()
    assert report.ok, logs_of(ws, report)
    client = swarm_engine.client
    token = ws.store.create_token("operator", "write")
    api = ApiServer(ws)
    try:
        (first, _) = [i for i in api.request("GET", "/instances", token).json()["data"]
                      if i["container_name"] == web]
        stopped = api.request("POST", f"/instances/{first['id']}/stop", token)
        assert stopped.status_code == 200, stopped.text
        assert service(client, web)["Spec"]["Mode"]["Replicated"]["Replicas"] == 0
        wait_until(lambda: not running_tasks(client, web), 30, "no task running")
        assert ws.engine.sync().ok  # self-heal leaves an operator's stop alone
        assert service(client, web)["Spec"]["Mode"]["Replicated"]["Replicas"] == 0

        (down,) = [i for i in api.request("GET", "/instances", token).json()["data"]
                   if i["container_name"] == web]
        started = api.request("POST", f"/instances/{down['id']}/start", token)
        assert started.status_code == 200, started.text
    finally:
        api.close()
    assert service(client, web)["Spec"]["Mode"]["Replicated"]["Replicas"] == 2
    wait_until(lambda: len(running_tasks(client, web)) == 2, 30, "two tasks running again")


def test_validate_with_a_store_refuses_replicas_off_a_swarm_and_takes_them_on_one(
    defs_repo: DefinitionsRepo,
) -> None:
    ws = Workspace.open(defs_repo.path)  # the store `validate` finds beside the repository
    try:
        ws.store.add_server(SWARM, "production", kind="swarm", docker_host="unix:///nowhere.sock")
    finally:
        ws.close()
    on_local = plain(defs_repo, "here", "sleep 1", server="local", extra="replicas: 3\n")
    plain(defs_repo, "there", "sleep 1", extra="replicas: 3\n")
    defs_repo.commit("three of each")

    done = subprocess.run(
        [sys.executable, "-m", "deployally", "validate", "--repo", str(defs_repo.path), "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    [error] = json.loads(done.stdout)["errors"]
    assert (error["file"], error["field"]) == (f"definitions/{on_local}.yaml", "replicas"), error
    assert "needs a swarm server" in error["message"]
