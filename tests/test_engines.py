"""The second Docker engine the agent and Swarm tests stand on: its own, and gone when stopped."""

from __future__ import annotations

import subprocess
from pathlib import Path

import docker
import docker.errors
import pytest


def test_a_second_engine_runs_containers_apart_from_the_host(
    second_engine: object, docker_client: docker.DockerClient, names: str, busybox_image: str
) -> None:
    client = second_engine.client  # type: ignore[attr-defined]
    container = client.containers.run(
        busybox_image, ["sleep", "600"], name=f"{names}-far", detach=True, network_mode="bridge",
    )
    container.reload()
    assert container.status == "running"
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(f"{names}-far")  # not on the host's engine
    # Its bridge lives in the engine's own network namespace: the host has no second docker0.
    host_links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    assert host_links.stdout.count(": docker0:") <= 1


def test_a_stopped_engine_answers_no_more_and_starts_again(make_engine: object, names: str) -> None:
    engine = make_engine()  # type: ignore[operator]
    engine.client.volumes.create(f"{names}-data")
    engine.stop()
    with pytest.raises(docker.errors.DockerException):
        docker.DockerClient(base_url=engine.host, timeout=5).ping()
    left = [line for line in Path("/proc/mounts").read_text().splitlines() if f" {engine.dir}/" in line]
    assert left == []  # nothing of it stays mounted
    engine.start()
    assert engine.client.volumes.get(f"{names}-data").name == f"{names}-data"  # data root kept


def test_a_swarm_engine_runs_a_replicated_service(swarm_engine: object, names: str, busybox_image: str) -> None:
    from conftest import wait_until

    client = swarm_engine.client  # type: ignore[attr-defined]
    service = client.services.create(
        busybox_image, ["sleep", "600"], name=f"{names}-svc",
        mode=docker.types.ServiceMode("replicated", replicas=2),
    )

    def running() -> bool:
        return sum(t["Status"]["State"] == "running" for t in service.tasks()) == 2

    wait_until(running, 60, "two running tasks")
