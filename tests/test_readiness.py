"""Waiting for a started container: the decisions on plain inspect documents, and the wait on a
real Docker engine, whose requests a proxy counts (readiness hears Docker's events, and inspects
only to confirm)."""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import pytest

from conftest import DockerProxy, wait_until
from deployally.drivers.base import DriverConfig
from deployally.drivers.local.container_config import check_interval_s
from deployally.drivers.local.driver import LocalDriver
from deployally.drivers.local.readiness import SAFETY_POLL_S, NotReady, raise_if_down, wait_ready
from deployally.store import Store
from deployally.types import ActionKind, ApplyResult, ContainerSpec, DeploymentStatus, Healthcheck
from test_driver_local import Recorder, apply, make_spec


def _wait(info: dict[str, Any], *, has_healthcheck: bool = True) -> list[str]:
    lines: list[str] = []
    wait_ready(
        lambda: info,
        lambda _timeout: None,
        has_healthcheck=has_healthcheck,
        health_timeout_s=60,
        min_ready_s=0,
        log=lines.append,
    )
    return lines


def test_returns_once_healthy() -> None:
    lines = _wait({"State": {"Running": True, "Health": {"Status": "healthy"}}})
    assert lines[-1].startswith("healthy after")


def test_unhealthy_fails_with_the_last_check_output() -> None:
    info = {
        "State": {
            "Running": True,
            "Health": {"Status": "unhealthy", "Log": [{"Output": "connection refused\n"}]},
        }
    }
    with pytest.raises(NotReady, match="unhealthy: connection refused"):
        _wait(info)


def test_without_healthcheck_running_after_settle_is_ready() -> None:
    lines = _wait({"State": {"Running": True}}, has_healthcheck=False)
    assert lines[-1].startswith("running after")


def test_a_container_docker_still_calls_running_whose_process_is_gone_is_not_ready() -> None:
    """Docker records an exit only once it has handled it; the kernel's process list is ahead."""
    inspect = lambda: {"State": {"Running": True}}
    with pytest.raises(NotReady, match="its process had exited when it was checked"):
        wait_ready(inspect, lambda _timeout: None, has_healthcheck=False, health_timeout_s=60,
                   min_ready_s=0, log=lambda _: None, alive=lambda: False)
    exited = iter([{"State": {"Running": True}}, {"State": {"Running": False, "ExitCode": 3}}])
    with pytest.raises(NotReady, match="exited with code 3"):  # Docker's `die` came meanwhile
        wait_ready(lambda: next(exited), lambda _timeout: None, has_healthcheck=False,
                   health_timeout_s=60, min_ready_s=0, log=lambda _: None, alive=lambda: False)
    lines: list[str] = []  # a host whose processes cannot be listed: Docker's word stands
    wait_ready(inspect, lambda _timeout: None, has_healthcheck=False, health_timeout_s=60,
               min_ready_s=0, log=lines.append, alive=lambda: None)
    assert lines == ["waiting 0s (min_ready) to see it keeps running", "running after 0.0s"]


def test_a_timeout_says_how_long_and_the_last_health() -> None:
    with pytest.raises(NotReady, match=r"not healthy after 0\.01s \(health: starting\)"):
        wait_ready(lambda: {"State": {"Running": True, "Health": {"Status": "starting"}}},
                   lambda _timeout: None, has_healthcheck=True, health_timeout_s=0.01,
                   min_ready_s=0, log=lambda _: None)


def test_an_exited_or_restarted_container_is_down() -> None:
    with pytest.raises(NotReady, match="exited with code 3"):
        raise_if_down({"State": {"Running": False, "ExitCode": 3}})
    with pytest.raises(NotReady):
        raise_if_down({"State": {"Running": True}, "RestartCount": 1})
    raise_if_down({"State": {"Running": True}, "RestartCount": 0})


def test_a_healthcheck_interval_is_read_back_from_docker() -> None:
    second = 1_000_000_000
    assert check_interval_s({"Config": {"Healthcheck": {"Test": ["CMD", "true"],
                                                        "Interval": 2 * second}}}) == 2.0
    assert check_interval_s({"Config": {"Healthcheck": {"Test": ["CMD", "true"]}}}) == 30.0
    assert check_interval_s({"Config": {"Healthcheck": {"Test": ["NONE"]}}}) is None
    assert check_interval_s({"Config": {}}) is None


# ---------------------------------------------------------------- on a real engine, counted


@pytest.fixture
def proxy(docker_client: docker.DockerClient) -> Iterator[DockerProxy]:
    """Every request the driver sends Docker goes through this proxy, which counts them."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        pytest.fail(f"these tests proxy a unix socket; DOCKER_HOST is {host}")
    # a short directory: a unix socket path must fit in 108 bytes, pytest's tmp_path may not
    short = tempfile.TemporaryDirectory(prefix="da-", dir="/tmp")
    proxied = DockerProxy(Path(short.name) / "docker.sock", host.removeprefix("unix://"))
    proxied.start()
    yield proxied
    proxied.stop()
    short.cleanup()


@pytest.fixture
def driver(proxy: DockerProxy, busybox_image: str, state_dir: Path, names: str,
           claims: Store) -> Iterator[LocalDriver]:
    driver = LocalDriver(
        state_dir, docker_host=f"unix://{proxy.path}", owner=names, claims=claims,
        config=DriverConfig(health_timeout_s=120, min_ready_s=1.0),
    )
    yield driver
    driver.close()


def inspects(proxy: DockerProxy, container_id: str) -> list[str]:
    """The inspect requests for one container (by its id or the start of it) that reached Docker."""
    return [line for line in proxy.requests
            if re.match(rf"GET /v[\d.]+/containers/{container_id}[0-9a-f]*/json", line)]


def budget(looks: int, began: float) -> int:
    """`looks` inspects, and one more for each SAFETY_POLL_S the rollout took (the safety net's,
    for events Docker may drop on a loaded host)."""
    return looks + int((time.monotonic() - began) // SAFETY_POLL_S)


def created_id(log: Recorder) -> str:
    """The short id of the container a rollout created, from its deployment log."""
    return next(line.split()[-1] for line in log.lines if line.startswith("created container"))


def in_background(driver: LocalDriver, spec: ContainerSpec, log: Recorder) -> Callable[[float], ApplyResult]:
    """Start a create rollout on a daemon thread; the callable returns its result, failing the
    test when the rollout is still waiting after that many seconds."""
    outcome: list[ApplyResult | BaseException] = []

    def run() -> None:
        try:
            outcome.append(apply(driver, ActionKind.CREATE, spec, log=log))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def result(timeout: float) -> ApplyResult:
        thread.join(timeout)
        assert outcome, f"the rollout was still waiting after {timeout:g}s:\n{log.text}"
        if isinstance(outcome[0], BaseException):
            raise outcome[0]
        return outcome[0]

    return result


def check(test: str, interval_s: float = 0.2, retries: int = 3) -> Healthcheck:
    # A generous timeout: on a loaded host a check can take seconds to even start.
    return Healthcheck(test=("CMD-SHELL", test), interval_s=interval_s, timeout_s=30, retries=retries)


def test_a_health_wait_costs_two_inspects_however_long_and_one_subscription_for_all(
    driver: LocalDriver, proxy: DockerProxy, busybox_image: str, names: str
) -> None:
    """Three rollouts at once, healthy after about 3 s of checks every 0.2 s: polling asked Docker
    a dozen times each; now each is one look at the start and one to confirm the news (and one
    per SAFETY_POLL_S, should a loaded host stretch the wait)."""
    specs = [
        make_spec(names, busybox_image, name=f"{names}w{n}", volumes=(), files=(),
                  healthcheck=check("test -e /tmp/ready", retries=100),
                  command=("sh", "-c", "sleep 3; touch /tmp/ready; exec sleep 3600"))
        for n in range(3)
    ]
    logs = [Recorder() for _ in specs]
    began = time.monotonic()
    with ThreadPoolExecutor(len(specs)) as pool:
        results = list(pool.map(lambda s, log: apply(driver, ActionKind.CREATE, s, log=log),
                                specs, logs))

    allowed = budget(2, began)
    for result, log in zip(results, logs, strict=True):
        assert result.status is DeploymentStatus.SUCCESS, log.text
        assert "healthy after" in log.text
        assert result.ref is not None
        assert len(inspects(proxy, result.ref)) <= allowed, inspects(proxy, result.ref)
    assert proxy.sent(r"^GET /v[\d.]+/events") == 1, "one event subscription for every wait"


@pytest.mark.parametrize("healthcheck", [True, False], ids=["health-gated", "settle"])
def test_a_container_that_dies_during_the_wait_fails_it_at_once_with_its_exit_code(
    driver: LocalDriver, proxy: DockerProxy, busybox_image: str, names: str, healthcheck: bool
) -> None:
    """Its first health check would run in 10 minutes, and the settle time is 10 minutes: the
    exit is reported when Docker says it happened, not when a poll or the timeout comes round."""
    driver.configure(DriverConfig(health_timeout_s=600, min_ready_s=600))
    spec = make_spec(
        names, busybox_image, volumes=(), files=(),
        healthcheck=check("true", interval_s=600) if healthcheck else None,
        command=("sh", "-c", "sleep 0.5; echo lost the database; exit 7"),
    )
    log = Recorder()
    began = time.monotonic()
    # A tenth of the timeout: a wait that missed the exit runs into the timeout.
    result = in_background(driver, spec, log)(60)

    assert result.status is DeploymentStatus.FAILED
    assert result.message == "container exited with code 7"
    assert "lost the database" in log.text  # the container's own last lines
    # One look at the start, one at the news, one docker-py makes to read the container's logs.
    assert len(inspects(proxy, created_id(log))) <= budget(3, began), "\n".join(proxy.requests)
    assert spec.name not in driver.live(), "the failed container is removed"


def test_an_unhealthy_container_is_reported_with_its_checks_output(
    driver: LocalDriver, proxy: DockerProxy, busybox_image: str, names: str
) -> None:
    spec = make_spec(names, busybox_image, volumes=(), files=(),
                     healthcheck=check("echo db not reachable; exit 1", retries=2))
    log = Recorder()
    began = time.monotonic()

    result = apply(driver, ActionKind.CREATE, spec, log=log)

    assert result.status is DeploymentStatus.FAILED
    assert result.message == "healthcheck reported unhealthy: db not reachable"
    assert "did not come up: healthcheck reported unhealthy: db not reachable" in log.text
    # One look at the start, one at the news, one docker-py makes to read the container's logs.
    assert len(inspects(proxy, created_id(log))) <= budget(3, began), "\n".join(proxy.requests)


def test_readiness_survives_the_event_stream_cut_while_the_container_turns_healthy(
    driver: LocalDriver, proxy: DockerProxy, docker_client: docker.DockerClient,
    busybox_image: str, names: str
) -> None:
    """The stream breaks mid-wait and Docker is held until the container is healthy: the news
    missed meanwhile comes from one look on reconnect."""
    spec = make_spec(names, busybox_image, volumes=(), files=(),
                     healthcheck=check("test -e /tmp/ready", retries=1000))
    log = Recorder()
    began = time.monotonic()
    rollout = in_background(driver, spec, log)
    wait_until(lambda: "waiting for health (timeout 120s)" in log.lines, 60, "the health wait")
    proxy.hold()  # the resubscribe (and any look) waits until the container is healthy
    try:
        assert proxy.cut_events() == 1, "one event stream open through the proxy"
        docker_client.containers.get(spec.name).exec_run(["touch", "/tmp/ready"])
        wait_until(lambda: docker_client.api.inspect_container(spec.name)["State"]["Health"]["Status"]
                   == "healthy", 60, "Docker to find it healthy")
    finally:
        proxy.release()
    result = rollout(60)

    assert result.status is DeploymentStatus.SUCCESS, log.text
    assert "healthy after" in log.text
    wait_until(lambda: proxy.sent(r"^GET /v[\d.]+/events") == 2, 30, "the stream to be subscribed again")
    assert result.ref is not None
    # the start, the reconnect, the look of a cut stream, and the one that confirms
    assert len(inspects(proxy, result.ref)) <= budget(4, began), inspects(proxy, result.ref)


# ---------------------------------------------------------------- min_ready on a real engine


def serving(names: str, image: str, **over: Any) -> ContainerSpec:
    """A busybox spec without a healthcheck, volume or file: min_ready alone gates it."""
    values: dict[str, Any] = {"volumes": (), "files": (), "healthcheck": None,
                              "command": ("sh", "-c", "exec sleep 3600")}
    return make_spec(names, image, **(values | over))


def tops(proxy: DockerProxy, container_id: str) -> list[str]:
    """The requests for one container's process list that reached Docker."""
    return [line for line in proxy.requests
            if re.match(rf"GET /v[\d.]+/containers/{container_id}[0-9a-f]*/top", line)]


def test_min_ready_0s_counts_a_running_container_done_after_one_look_and_its_process_list(
    driver: LocalDriver, proxy: DockerProxy, busybox_image: str, names: str
) -> None:
    log = Recorder()

    result = apply(driver, ActionKind.CREATE, serving(names, busybox_image, min_ready_s=0.0), log=log)

    assert result.status is DeploymentStatus.SUCCESS, log.text
    assert "waiting 0s (min_ready) to see it keeps running" in log.lines
    assert result.ref is not None
    assert len(inspects(proxy, result.ref)) == 1, inspects(proxy, result.ref)  # no wait for news
    assert len(tops(proxy, result.ref)) == 1


@pytest.mark.parametrize("min_ready_s", [0.0, None], ids=["0s", "the default"])
def test_an_update_whose_container_exits_at_once_is_rolled_back(
    driver: LocalDriver, docker_client: docker.DockerClient, busybox_image: str, names: str,
    min_ready_s: float | None,
) -> None:
    driver.configure(DriverConfig(health_timeout_s=120))  # the default min_ready, 5 s
    first = apply(driver, ActionKind.CREATE, serving(names, busybox_image, min_ready_s=0.0))
    assert first.status is DeploymentStatus.SUCCESS
    log = Recorder()

    broken = serving(names, busybox_image, min_ready_s=min_ready_s,
                     command=("sh", "-c", "echo no config file; exit 3"))
    result = apply(driver, ActionKind.UPDATE, broken, revision=2, log=log)

    assert result.status is DeploymentStatus.ROLLED_BACK, log.text
    assert f"waiting {5 if min_ready_s is None else 0}s (min_ready)" in log.text
    assert result.ref == first.ref
    info = docker_client.api.inspect_container(broken.name)
    assert info["Id"] == first.ref and info["State"]["Running"]
    assert "no config file" in log.text  # the failing container's own last lines
    assert len([c for c in docker_client.api.containers(all=True) if names in c["Names"][0]]) == 1


@pytest.mark.parametrize(("min_ready_s", "status"), [(3.0, DeploymentStatus.FAILED),
                                                    (0.0, DeploymentStatus.SUCCESS)])
def test_a_container_that_dies_after_a_second_fails_a_3s_min_ready_and_passes_0s(
    driver: LocalDriver, busybox_image: str, names: str, min_ready_s: float,
    status: DeploymentStatus,
) -> None:
    """min_ready is the time it must keep running: 0s takes it as soon as it is seen up."""
    spec = serving(names, busybox_image, min_ready_s=min_ready_s,
                   command=("sh", "-c", "sleep 1; echo gave up on the database; exit 4"))
    log = Recorder()

    result = apply(driver, ActionKind.CREATE, spec, log=log)

    assert result.status is status, log.text
    if status is DeploymentStatus.FAILED:
        assert result.message == "container exited with code 4"
        assert "gave up on the database" in log.text
