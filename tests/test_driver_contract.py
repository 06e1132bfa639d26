"""The driver seam's promises, checked against the fake driver, the local (Docker) driver and the
agent driver alike.

The fake runs the orchestration tests, so it must behave as the real one does:
the same cases run against both, the local one on a real Docker engine. The agent driver
runs each case through its channel and the wire's JSON to an agent in a thread, which
carries the calls out as `deployally agent` does (agent/calls.py) on a fake or local driver.
"""

from __future__ import annotations

import dataclasses
import json
import secrets as pysecrets
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from deployally.agent.calls import carry_out
from deployally.codec import from_json, to_json
from deployally.drivers.agent.channel import BEGIN, LOG, RESULT, Call, Channel, Message
from deployally.drivers.agent.driver import AgentDriver
from deployally.drivers.base import Driver, DriverConfig, EventStream
from deployally.drivers.fake import FakeDriver, FakeHost
from deployally.errors import NotFound
from deployally.identity import definition_id
from deployally.model.render import rendered_hash
from deployally.store import Store
from deployally.types import (
    Action,
    ActionKind,
    ApplyResult,
    ContainerSpec,
    DeploymentStatus,
    InstanceEvent,
    InstanceEventKind,
    InstanceState,
)

COMMIT = "0123456789abcdef0123456789abcdef01234567"
WAIT_S = 30.0  # a bound on waiting for an event, never an expectation of speed


@dataclass
class Backend:
    """One driver kind under test: two engines (owners) on one server, and how to break a spec."""

    ours: Driver
    theirs: Driver
    spec: Callable[..., ContainerSpec]
    failing: Callable[[ContainerSpec], ContainerSpec]


def _hashed(spec: ContainerSpec) -> ContainerSpec:
    return dataclasses.replace(spec, rendered_hash=rendered_hash(spec))


def _fake_backend() -> Backend:
    host = FakeHost()
    prefix = "f" + pysecrets.token_hex(3)

    def spec(short: str, engine: str = "ours", **over: Any) -> ContainerSpec:
        name = f"{prefix}{short}"
        base = ContainerSpec(
            name=name, definition_id=definition_id(name), template_id="tpl_x", image="busybox:stable"
        )
        return _hashed(dataclasses.replace(base, **over))

    def failing(s: ContainerSpec) -> ContainerSpec:
        broken = _hashed(dataclasses.replace(s, command=("sh", "-c", "echo broken; exit 3")))
        host.fail_spec(broken, "exited with code 3")
        return broken

    return Backend(
        FakeDriver(host, owner=f"{prefix}-ours"),
        FakeDriver(host, owner=f"{prefix}-theirs"),
        spec,
        failing,
    )


def _local_backend(request: pytest.FixtureRequest, stores: list[Store]) -> Backend:
    from deployally.drivers.local.driver import LocalDriver

    client = request.getfixturevalue("docker_client")
    image = request.getfixturevalue("busybox_image")
    names: str = request.getfixturevalue("names")
    state: Path = request.getfixturevalue("state_dir")
    config = DriverConfig(health_timeout_s=30, min_ready_s=1.0)

    def spec(short: str, engine: str = "ours", **over: Any) -> ContainerSpec:
        name = f"{names}{short}"
        base = ContainerSpec(
            name=name,
            definition_id=definition_id(name),
            template_id="tpl_x",
            image=image,
            command=("sleep", "3600"),
            stop_signal="SIGKILL",  # busybox as PID 1 ignores SIGTERM
            # Each engine its own network: one engine never joins a network of another.
            network=f"{names}{engine}net",
        )
        return _hashed(dataclasses.replace(base, **over))

    def failing(s: ContainerSpec) -> ContainerSpec:
        return _hashed(dataclasses.replace(s, command=("sh", "-c", "echo broken; exit 3")))

    ours, theirs = Store(state / "ours"), Store(state / "theirs")
    stores += [ours, theirs]
    return Backend(
        LocalDriver(state / "ours", owner=names, client=client, config=config, claims=ours),
        LocalDriver(
            state / "theirs", owner=f"{names}-theirs", client=client, config=config, claims=theirs
        ),
        spec,
        failing,
    )


def _wire(value: Any) -> Any:
    """`value` as the other side of the HTTP link reads it."""
    return json.loads(json.dumps(value))


class ThreadAgent:
    """An agent in a thread: polls `driver`'s own channel and carries each call out on the
    wrapped driver, over the wire's JSON; `agent_driver` is the engine's side."""

    def __init__(self, driver: Driver, owner: str, heartbeat_s: float = 0.2) -> None:
        self.driver = driver
        self.agent_driver = AgentDriver(driver.server, owner=owner, channel=Channel(driver.server))
        self.heartbeat_s = heartbeat_s
        self.session = "session_" + pysecrets.token_hex(4)
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(8)
        self._held: set[str] = set()  # as the real agent: received, result not yet sent
        self._lock = threading.Lock()
        self._events: EventStream = driver.watch(self._heard)
        assert self._events.wait_connected(WAIT_S)
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _heard(self, event: InstanceEvent) -> None:
        self.agent_driver.deliver([from_json(InstanceEvent, _wire(to_json(event)))])

    def _poll(self) -> None:
        channel = self.agent_driver.channel
        while not self._stop.is_set():
            with self._lock:
                held = set(self._held)
            channel.heard(self.session, self.heartbeat_s, holds=held)
            try:
                channel.wait_for_calls().result(timeout=self.heartbeat_s)
            except TimeoutError:
                pass
            for call in channel.take(self.session):
                with self._lock:
                    if call.id in held or call.id in self._held:
                        continue  # handed out again before a poll said it is held
                    self._held.add(call.id)
                self._pool.submit(self._carry_out, call)

    def _carry_out(self, call: Call) -> None:
        channel, wired = self.agent_driver.channel, _wire(call.wire())

        def begin() -> bool:
            answer: Future[bool] = Future()
            channel.send(call.id, self.session, Message(BEGIN, answer=answer.set_result))
            return answer.result(timeout=WAIT_S)

        result = carry_out(
            self.driver, wired["op"], wired["args"],
            log=lambda line: channel.send(call.id, self.session, Message(LOG, line)), begin=begin,
        )
        channel.send(call.id, self.session, Message(RESULT, _wire(result)))
        with self._lock:
            self._held.discard(call.id)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(WAIT_S)
        self._events.stop()
        self._pool.shutdown(wait=True)


def _through_agents(inner: Backend, agents: list[ThreadAgent]) -> Backend:
    ours, theirs = (
        ThreadAgent(d, owner=getattr(d, "owner", "")) for d in (inner.ours, inner.theirs)
    )
    agents += [ours, theirs]
    return Backend(ours.agent_driver, theirs.agent_driver, inner.spec, inner.failing)


@pytest.fixture(params=[
    "fake",
    pytest.param("local", marks=pytest.mark.docker),
    "agent-fake",
    pytest.param("agent-local", marks=pytest.mark.docker),
])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    stores: list[Store] = []
    agents: list[ThreadAgent] = []
    kind = str(request.param)
    inner = _fake_backend() if kind.endswith("fake") else _local_backend(request, stores)
    yield _through_agents(inner, agents) if kind.startswith("agent") else inner
    for agent in agents:
        agent.close()
    for store in stores:
        store.close()


def apply(driver: Driver, kind: ActionKind, spec: ContainerSpec, revision: int = 1) -> ApplyResult:
    action = Action(kind, spec.name, None if kind is ActionKind.REMOVE else spec, None)
    return driver.apply(action, revision=revision, commit=COMMIT, resolve=lambda t: t, log=lambda _: None)


class Heard:
    """Instance events a driver reported, with bounded waits."""

    def __init__(self) -> None:
        self.events: list[InstanceEvent] = []
        self._cond = threading.Condition()

    def __call__(self, event: InstanceEvent) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def wait_for(self, name: str, kind: InstanceEventKind) -> InstanceEvent:
        deadline = time.monotonic() + WAIT_S
        with self._cond:
            while True:
                for ev in self.events:
                    if ev.name == name and ev.kind is kind:
                        return ev
                if time.monotonic() > deadline:
                    pytest.fail(f"no {kind.value} for {name} within {WAIT_S}s: {self.events}")
                self._cond.wait(0.5)

    def names(self) -> set[str]:
        with self._cond:
            return {e.name for e in self.events}


# ---------------------------------------------------------------- the cases


def test_a_created_instance_is_live_in_our_own_words(backend: Backend) -> None:
    spec = backend.spec("web")
    result = apply(backend.ours, ActionKind.CREATE, spec, revision=3)
    assert result.status is DeploymentStatus.SUCCESS, result.message
    inst = backend.ours.live()[spec.name]
    assert inst.ref == result.ref
    assert inst.state is InstanceState.RUNNING and inst.running
    assert (inst.rendered_hash, inst.revision, inst.commit) == (spec.rendered_hash, 3, COMMIT)
    assert inst.definition_id == spec.definition_id and inst.health is None


def test_a_failing_update_rolls_back_and_a_failing_create_leaves_nothing(backend: Backend) -> None:
    good = backend.spec("svc")
    first = apply(backend.ours, ActionKind.CREATE, good)
    result = apply(backend.ours, ActionKind.UPDATE, backend.failing(good), revision=2)
    assert result.status is DeploymentStatus.ROLLED_BACK and result.ref == first.ref
    back = backend.ours.live()[good.name]
    assert (back.ref, back.rendered_hash, back.running) == (first.ref, good.rendered_hash, True)

    never = backend.failing(backend.spec("never"))
    assert apply(backend.ours, ActionKind.CREATE, never).status is DeploymentStatus.FAILED
    assert never.name not in backend.ours.live()


def test_remove_and_operator_actions(backend: Backend) -> None:
    spec = backend.spec("op")
    apply(backend.ours, ActionKind.CREATE, spec)
    backend.ours.stop(spec.name)
    assert backend.ours.live()[spec.name].state is InstanceState.EXITED
    backend.ours.start(spec.name)
    assert backend.ours.live()[spec.name].running
    backend.ours.restart(spec.name)
    assert backend.ours.live()[spec.name].running
    with pytest.raises(NotFound):
        backend.ours.stop(spec.name + "nope")
    assert apply(backend.ours, ActionKind.REMOVE, spec).status is DeploymentStatus.SUCCESS
    assert spec.name not in backend.ours.live()


def test_another_engines_instances_are_neither_seen_touched_nor_heard(backend: Backend) -> None:
    heard = Heard()
    stream = backend.ours.watch(heard)
    try:
        assert stream.wait_connected(WAIT_S)
        theirs = backend.spec("theirs", engine="theirs")
        assert apply(backend.theirs, ActionKind.CREATE, theirs).status is DeploymentStatus.SUCCESS
        backend.theirs.stop(theirs.name)
        ours = backend.spec("ours")
        apply(backend.ours, ActionKind.CREATE, ours)
        backend.ours.stop(ours.name)
        heard.wait_for(ours.name, InstanceEventKind.STOPPED)
        # Events come in order: theirs happened first and none of them reached us.
        assert heard.names() == {ours.name}
        assert set(backend.ours.live()) == {ours.name}
        with pytest.raises(NotFound):
            backend.ours.start(theirs.name)
        backend.ours.recover(lambda _: None)
        assert backend.theirs.live()[theirs.name].state is InstanceState.EXITED
    finally:
        stream.stop()
    assert not stream.running
