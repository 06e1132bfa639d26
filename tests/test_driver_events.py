"""drivers/local/events.py: Docker's event stream for one engine's containers, against a real engine."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from conftest import DockerProxy
from deployally.drivers.local.driver import LocalDriver
from deployally.drivers.local.events import DockerEvents, instance_event
from deployally.store import Store
from deployally.types import (
    LABEL_COMMIT,
    LABEL_DEFINITION,
    LABEL_MANAGED,
    LABEL_NAME,
    LABEL_OWNER,
    LABEL_REVISION,
    LABEL_SERVER,
    InstanceEvent,
    InstanceEventKind,
)

INSTANCE_STARTED = InstanceEventKind.STARTED
INSTANCE_STOPPED = InstanceEventKind.STOPPED
INSTANCE_UNHEALTHY = InstanceEventKind.UNHEALTHY
INSTANCE_HEALTHY = InstanceEventKind.HEALTHY

WAIT_S = 30.0  # a bound, never an expectation of speed


# ------------------------------------------------------------------ pure mapping


def _raw(action: str, **attrs: str) -> dict[str, object]:
    return {
        "Type": "container",
        "Action": action,
        "Actor": {"ID": "c0ffee" * 10, "Attributes": {"name": "web", **attrs}},
        "time": 1700000000,
        "timeNano": 1700000000123456789,
    }


def test_die_becomes_stopped_with_exit_code_and_labels() -> None:
    ev = instance_event(
        _raw("die", exitCode="137", **{LABEL_DEFINITION: "def_abc", LABEL_NAME: "db"})
    )
    assert ev is not None
    assert (ev.kind, ev.exit_code, ev.definition_id, ev.name) == (
        INSTANCE_STOPPED,
        137,
        "def_abc",
        "db",
    )
    assert ev.ref == "c0ffee" * 10
    assert ev.at.year == 2023 and ev.at.tzinfo is not None


def test_an_event_says_the_revision_and_commit_its_container_runs() -> None:
    ev = instance_event(_raw("start", **{LABEL_REVISION: "7", LABEL_COMMIT: "ab" * 20}))
    assert ev is not None and (ev.revision, ev.commit) == (7, "ab" * 20)
    bare = instance_event(_raw("start"))
    assert bare is not None and (bare.revision, bare.commit) == (None, None)


def test_name_falls_back_to_container_name() -> None:
    ev = instance_event(_raw("start"))
    assert ev is not None and ev.kind == INSTANCE_STARTED and ev.name == "web"
    assert ev.exit_code is None and ev.definition_id is None


def test_health_actions_map_and_stop_kill_are_ignored() -> None:
    unhealthy = instance_event(_raw("health_status: unhealthy"))
    healthy = instance_event(_raw("health_status: healthy"))
    assert unhealthy is not None and unhealthy.kind == INSTANCE_UNHEALTHY
    assert healthy is not None and healthy.kind == INSTANCE_HEALTHY
    # `die` alone reports a stop, so one stop is one event
    for action in ("kill", "stop", "create", "exec_start: test -f /tmp/ok"):
        assert instance_event(_raw(action)) is None


def test_destroy_becomes_removed_so_a_removal_is_healed_even_after_the_heal_of_its_die() -> None:
    removed = instance_event(_raw("destroy"))
    assert removed is not None and removed.kind is InstanceEventKind.REMOVED


# ------------------------------------------------------------------ real engine


class Collector:
    """Thread-safe sink for events, with bounded waits."""

    def __init__(self) -> None:
        self.events: list[InstanceEvent] = []
        self._cond = threading.Condition()

    def __call__(self, event: InstanceEvent) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait_for(self, pred: Callable[[InstanceEvent], bool]) -> InstanceEvent:
        """The first event matching pred; fails the test after WAIT_S without one."""
        deadline = time.monotonic() + WAIT_S
        with self._cond:
            while True:
                for ev in self.events:
                    if pred(ev):
                        return ev
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"no matching event within {WAIT_S}s; got {self.events}")
                self._cond.wait(left)

    def of(self, container_id: str) -> list[InstanceEvent]:
        with self._cond:
            return [e for e in self.events if e.ref == container_id]


@pytest.fixture
def collector() -> Collector:
    return Collector()


@pytest.fixture
def events(
    docker_client: docker.DockerClient, collector: Collector, names: str
) -> Iterator[DockerEvents]:
    watcher = DockerEvents(docker.from_env, collector, owner=names)
    watcher.start()
    assert watcher.wait_connected(WAIT_S), "event stream never subscribed"
    yield watcher
    watcher.stop()


def _run(
    client: docker.DockerClient,
    image: str,
    name: str,
    *,
    managed: bool = True,
    owner: str | None = None,
    command: list[str] | None = None,
    healthcheck: dict[str, object] | None = None,
) -> str:
    """A container named `name`, managed and owned by the test's prefix unless told otherwise."""
    labels = {LABEL_DEFINITION: "def_test00000000", LABEL_OWNER: owner or name[:7], LABEL_SERVER: "local"}
    if managed:
        labels[LABEL_MANAGED] = "true"
    container = client.containers.run(
        image,
        command or ["sleep", "300"],
        name=name,
        labels=labels,
        detach=True,
        healthcheck=healthcheck,
        stop_signal="SIGKILL",  # busybox as PID 1 ignores SIGTERM
    )
    return str(container.id)


@pytest.mark.docker
def test_start_and_kill_behind_our_back(
    docker_client: docker.DockerClient,
    busybox_image: str,
    names: str,
    events: DockerEvents,
    collector: Collector,
) -> None:
    unmanaged = _run(docker_client, busybox_image, f"{names}_other", managed=False)
    cid = _run(docker_client, busybox_image, f"{names}_web")

    started = collector.wait_for(lambda e: e.ref == cid and e.kind == INSTANCE_STARTED)
    assert started.name == f"{names}_web"
    assert started.definition_id == "def_test00000000"
    # events arrive in order: the unmanaged container started first and was filtered out
    assert collector.of(unmanaged) == []

    docker_client.api.kill(cid)
    stopped = collector.wait_for(lambda e: e.ref == cid and e.kind == INSTANCE_STOPPED)
    assert stopped.exit_code == 137
    # `kill` came before `die` and must not have been reported as a second stop
    assert [e.kind for e in collector.of(cid)] == [INSTANCE_STARTED, INSTANCE_STOPPED]


@pytest.mark.docker
def test_another_engines_containers_are_never_heard(
    docker_client: docker.DockerClient,
    busybox_image: str,
    names: str,
    events: DockerEvents,
    collector: Collector,
) -> None:
    # Two engines on one host: the other one's container is managed too, with its own owner.
    theirs = _run(docker_client, busybox_image, f"{names}_theirs", owner=f"{names}-other")
    ours = _run(docker_client, busybox_image, f"{names}_ours")
    collector.wait_for(lambda e: e.ref == ours and e.kind == INSTANCE_STARTED)
    docker_client.api.kill(theirs)
    docker_client.api.kill(ours)
    collector.wait_for(lambda e: e.ref == ours and e.kind == INSTANCE_STOPPED)
    # Events come in order: theirs started and died before ours did, and neither was reported.
    assert collector.of(theirs) == []


@pytest.mark.docker
def test_the_local_driver_streams_its_own_instances(
    docker_client: docker.DockerClient,
    busybox_image: str,
    names: str,
    state_dir: Path,
    claims: Store,
    collector: Collector,
) -> None:
    driver = LocalDriver(state_dir, owner=names, client=docker_client, claims=claims)
    stream = driver.watch(collector)
    try:
        assert stream.wait_connected(WAIT_S)
        theirs = _run(docker_client, busybox_image, f"{names}_x", owner=f"{names}-other")
        ours = _run(docker_client, busybox_image, f"{names}_y")
        started = collector.wait_for(lambda e: e.ref == ours and e.kind == INSTANCE_STARTED)
        assert started.name == f"{names}_y"
        assert collector.of(theirs) == []
    finally:
        stream.stop(timeout=WAIT_S)
    assert not stream.running


@pytest.mark.docker
def test_failing_healthcheck_reports_unhealthy(
    docker_client: docker.DockerClient,
    busybox_image: str,
    names: str,
    events: DockerEvents,
    collector: Collector,
) -> None:
    second = 1_000_000_000
    cid = _run(
        docker_client,
        busybox_image,
        f"{names}_hc",
        command=["sh", "-c", "touch /tmp/ok; exec sleep 300"],
        healthcheck={
            "test": ["CMD", "test", "-f", "/tmp/ok"],
            "interval": second,
            "timeout": second,
            "retries": 1,
        },
    )
    collector.wait_for(lambda e: e.ref == cid and e.kind == INSTANCE_HEALTHY)
    docker_client.containers.get(cid).exec_run(["rm", "/tmp/ok"])
    ev = collector.wait_for(lambda e: e.ref == cid and e.kind == INSTANCE_UNHEALTHY)
    assert ev.name == f"{names}_hc"


@pytest.mark.docker
def test_stop_ends_the_thread(
    docker_client: docker.DockerClient, collector: Collector, names: str
) -> None:
    watcher = DockerEvents(docker.from_env, collector, owner=names)
    watcher.start()
    assert watcher.wait_connected(WAIT_S)
    watcher.stop(timeout=WAIT_S)
    assert not watcher.running


@pytest.mark.docker
def test_engine_unreachable_at_first_then_reachable(
    docker_client: docker.DockerClient, busybox_image: str, names: str, collector: Collector
) -> None:
    attempts: list[int] = []

    def flaky() -> docker.DockerClient:
        attempts.append(1)
        if len(attempts) <= 2:
            raise docker.errors.DockerException("engine restarting")
        return docker.from_env()

    watcher = DockerEvents(flaky, collector, owner=names)
    watcher.start()
    try:
        assert watcher.wait_connected(WAIT_S)
        cid = _run(docker_client, busybox_image, f"{names}_late")
        collector.wait_for(lambda e: e.ref == cid and e.kind == INSTANCE_STARTED)
        assert len(attempts) == 3
    finally:
        watcher.stop()


@pytest.mark.docker
def test_connection_loss_reconnects_and_replays_what_was_missed(
    docker_client: docker.DockerClient,
    busybox_image: str,
    names: str,
    collector: Collector,
) -> None:
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        pytest.fail(f"this test proxies a unix socket; DOCKER_HOST is {host}")
    # a short directory: a unix socket path must fit in 108 bytes, pytest's tmp_path may not
    short = tempfile.TemporaryDirectory(prefix="da-", dir="/tmp")
    proxy = DockerProxy(Path(short.name) / "docker.sock", host.removeprefix("unix://"))
    proxy.start()
    watcher = DockerEvents(
        lambda: docker.DockerClient(base_url=f"unix://{proxy.path}"), collector, owner=names
    )
    watcher.start()
    try:
        assert watcher.wait_connected(WAIT_S)
        before = _run(docker_client, busybox_image, f"{names}_a")
        collector.wait_for(lambda e: e.ref == before and e.kind == INSTANCE_STARTED)

        proxy.stop()
        deadline = time.monotonic() + WAIT_S
        while watcher.wait_connected(0) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not watcher.wait_connected(0), "the watcher never noticed the cut"
        during = _run(docker_client, busybox_image, f"{names}_b")  # while we are cut off
        proxy.start()

        # replayed from where the stream broke, reported once
        collector.wait_for(lambda e: e.ref == during and e.kind == INSTANCE_STARTED)
        assert watcher.running
        after = _run(docker_client, busybox_image, f"{names}_c")
        collector.wait_for(lambda e: e.ref == after and e.kind == INSTANCE_STARTED)
        assert [e.kind for e in collector.of(before)] == [INSTANCE_STARTED]
        assert [e.kind for e in collector.of(during)] == [INSTANCE_STARTED]
    finally:
        watcher.stop()
        proxy.stop()
        short.cleanup()
