"""An in-memory driver with the local driver's semantics, so orchestration tests need no Docker.

A FakeHost is one pretend engine that several FakeDrivers (engines with their own
owner ids) may share, as engines share a Docker host. It keeps the same promises:
an update keeps the old instance until the new one is ready and puts it back when
it is not (rolled_back), a create that fails leaves nothing, a crash mid-update
leaves `<name>.old` for recover(), each engine sees and hears only its own
instances, and an unreachable host fails every call with a DriverError.
Behaviour is scripted on the host: `fail_spec` and `fail_where` make specs fail their health gate,
`missing_image` makes an image unpullable, `reachable = False` takes the host away, `hold`
keeps every rollout waiting until `release` (a slow server).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from deployally.drivers.base import (
    DEFAULT_CONFIG,
    Begin,
    Driver,
    DriverConfig,
    EventStream,
    Log,
    OnEvent,
    Resolve,
)
from deployally.errors import DeployAllyError, DriverError, NotBegun, NotFound
from deployally.types import (
    Action,
    ActionKind,
    ApplyResult,
    ContainerSpec,
    DeploymentStatus,
    InstanceEvent,
    InstanceEventKind,
    InstanceHealth,
    InstanceState,
    LiveInstance,
)

OLD_SUFFIX = ".old"


@dataclass(frozen=True)
class FakeInstance:
    """One instance on a FakeHost, as the host keeps it."""

    ref: str
    name: str  # as the host names it: `<definition>.old` mid-update
    owner: str
    spec: ContainerSpec
    revision: int | None
    commit: str
    state: InstanceState
    ready: bool  # passed its health gate (or would have: recover keeps only these)
    started_at: datetime | None


class FakeHost:
    """One pretend container engine: instances by name, shared by every driver on it."""

    def __init__(self) -> None:
        self.reachable = True
        self.instances: dict[str, FakeInstance] = {}
        self.history: list[tuple[str, str]] = []  # (what, name) of every change made
        self._failing: dict[str, str] = {}  # rendered hash -> why its health gate fails
        self._failing_where: list[tuple[Callable[[ContainerSpec], bool], str]] = []
        self._missing_images: set[str] = set()
        self._subscribers: list[tuple[str, OnEvent]] = []  # (owner, callback)
        self._ids = itertools.count(1)
        self.lock = threading.RLock()
        self._released = threading.Event()  # cleared by hold(): rollouts wait for release()
        self._released.set()
        self.holding = threading.Event()  # set once a rollout waits on hold()

    def __repr__(self) -> str:
        return f"FakeHost({sorted(self.instances)}, reachable={self.reachable})"

    # ------------------------------------------------------------ scripting a test

    def fail_spec(self, spec: ContainerSpec, reason: str = "exited with code 3") -> None:
        """Every new instance of `spec` fails its health gate with `reason`."""
        self._failing[spec.rendered_hash] = reason

    def fail_where(self, matches: Callable[[ContainerSpec], bool], reason: str = "exited with code 1") -> None:
        """Every new instance of a spec `matches` accepts fails its health gate with `reason`."""
        self._failing_where.append((matches, reason))

    def missing_image(self, image: str) -> None:
        """`image` cannot be pulled: a rollout of it fails before touching anything."""
        self._missing_images.add(image)

    def hold(self) -> None:
        """Make every rollout on this host, once begun, wait for release(): a slow server (an
        agent gating a long rollout); `holding` is set when one waits."""
        self._released.clear()

    def release(self) -> None:
        """Let held rollouts, and every later one, go on."""
        self._released.set()

    def wait_if_held(self) -> None:
        """Where a rollout waits while the host is held (outside the host's lock, so other
        drivers on it, and readers, go on)."""
        if not self._released.is_set():
            self.holding.set()
            self._released.wait()

    def stop_behind_our_back(self, name: str, exit_code: int = 137) -> None:
        """The instance stops outside DeployAlly (a crash, `docker stop`)."""
        with self.lock:
            inst = self.instances[name]
            self.instances[name] = replace(inst, state=InstanceState.EXITED, started_at=None)
        self.emit(inst, InstanceEventKind.STOPPED, exit_code)

    def remove_behind_our_back(self, name: str) -> None:
        """The instance is removed outside DeployAlly."""
        with self.lock:
            inst = self.instances.pop(name)
        self.emit(inst, InstanceEventKind.REMOVED)

    def crash_mid_update(self, name: str, new: ContainerSpec, *, ready: bool) -> None:
        """Leave what a crash during an update leaves: `<name>.old` and the new one under the name."""
        with self.lock:
            old = self.instances.pop(name)
            self.instances[name + OLD_SUFFIX] = replace(old, name=name + OLD_SUFFIX)
            self.instances[name] = replace(
                old, ref=self.new_ref(), spec=new, ready=ready, started_at=_now()
            )

    # ------------------------------------------------------------ for the drivers

    def check(self) -> None:
        if not self.reachable:
            raise DriverError("could not reach the fake host: it is switched off")

    def subscribe(self, owner: str, on_event: OnEvent) -> None:
        with self.lock:
            self._subscribers.append((owner, on_event))

    def unsubscribe(self, on_event: OnEvent) -> None:
        with self.lock:
            self._subscribers = [s for s in self._subscribers if s[1] is not on_event]

    def new_ref(self) -> str:
        """A fresh instance reference, as long as a container id."""
        return f"{next(self._ids):012x}" + "f" * 52

    def failure(self, spec: ContainerSpec) -> str | None:
        """Why a new instance of `spec` fails its health gate, or None when it passes."""
        for matches, reason in self._failing_where:
            if matches(spec):
                return reason
        return self._failing.get(spec.rendered_hash)

    def image_missing(self, image: str) -> bool:
        """Whether `image` cannot be pulled."""
        return image in self._missing_images

    def emit(self, inst: FakeInstance, kind: InstanceEventKind, exit_code: int | None = None) -> None:
        event = InstanceEvent(
            kind=kind,
            ref=inst.ref,
            name=inst.spec.name,
            definition_id=inst.spec.definition_id,
            exit_code=exit_code,
            at=_now(),
            revision=inst.revision,
            commit=inst.commit,
        )
        with self.lock:
            listeners = [cb for owner, cb in self._subscribers if owner == inst.owner]
        for callback in listeners:  # only the owning engine hears its instances
            callback(event)


class _FakeStream(EventStream):
    def __init__(self, host: FakeHost, on_event: OnEvent) -> None:
        self._host = host
        self._on_event = on_event
        self._running = True

    @property
    def running(self) -> bool:
        return self._running

    def wait_connected(self, timeout: float) -> bool:
        return self._running

    def stop(self, timeout: float = 5.0) -> None:
        self._host.unsubscribe(self._on_event)
        self._running = False


class FakeDriver(Driver):
    """The Driver interface over a FakeHost, for one engine (owner) and one server."""

    kind = "fake"

    def __init__(
        self,
        host: FakeHost | None = None,
        *,
        owner: str,
        server: str = "local",
        config: DriverConfig = DEFAULT_CONFIG,
    ) -> None:
        if not owner:
            raise ValueError("a FakeDriver needs the owning engine's id")
        self.host = host or FakeHost()
        self.owner = owner
        self.server = server
        self.config = config
        self._slots = threading.BoundedSemaphore(config.parallel)
        self.recovered = 0  # how many times recover() ran

    def __repr__(self) -> str:
        return f"FakeDriver(server={self.server!r}, owner={self.owner!r})"

    # ------------------------------------------------------------ observe

    def ping(self) -> None:
        """Check the host answers; DriverError when it is switched off."""
        self.host.check()

    def live(self) -> dict[str, LiveInstance]:
        """This engine's instances on the host, `<name>.old` left out, as a list call gives them."""
        self.host.check()
        with self.host.lock:
            return {
                i.name: _live(i)
                for i in self.host.instances.values()
                if i.owner == self.owner and not i.name.endswith(OLD_SUFFIX)
            }

    def configure(self, config: DriverConfig) -> None:
        """Keep the settings of the next sync (read back by tests)."""
        if config.parallel != self.config.parallel:
            self._slots = threading.BoundedSemaphore(config.parallel)
        self.config = config

    def watch(self, on_event: OnEvent) -> EventStream:
        """Hear this engine's instance events (delivered on the thread that caused them)."""
        self.host.subscribe(self.owner, on_event)
        return _FakeStream(self.host, on_event)

    # ------------------------------------------------------------ operator actions

    def start(self, name: str) -> None:
        """Start the named instance; NotFound if this engine has none by that name."""
        self._set_running(self._mine(name), True)

    def stop(self, name: str) -> None:
        """Stop the named instance; NotFound if this engine has none by that name."""
        self._set_running(self._mine(name), False)

    def restart(self, name: str) -> None:
        """Stop and start the named instance; NotFound if this engine has none by that name."""
        inst = self._mine(name)
        self._set_running(inst, False)
        self._set_running(self.host.instances[inst.name], True)

    # ------------------------------------------------------------ apply

    def apply(
        self,
        action: Action,
        *,
        revision: int | None,
        commit: str | None,
        resolve: Resolve,
        log: Log,
        begin: Begin | None = None,
    ) -> ApplyResult:
        """Carry out one action as the local driver would; failures are results, never raised."""
        if action.kind is ActionKind.NOOP:
            return ApplyResult(DeploymentStatus.SUCCESS, action.live.ref if action.live else None)

        def begun() -> None:
            if begin is not None and not begin():
                raise NotBegun(f"{action.kind.value} of {action.name} not begun: the engine is stopping")

        # As the local driver: `parallel` changes at once, each begun once its turn came.
        with self._slots:
            return self._apply(action, revision, commit, resolve, log, begun)

    def _apply(
        self, action: Action, revision: int | None, commit: str | None, resolve: Resolve,
        log: Log, begun: Callable[[], None],
    ) -> ApplyResult:
        try:
            self.host.check()
            if action.kind in (ActionKind.REMOVE, ActionKind.START) or (
                action.desired is not None and not self.host.image_missing(action.desired.image)
            ):
                begun()  # as the local driver: a pull that fails comes before the first change
            self.host.wait_if_held()
            with self.host.lock:
                self._recover_name(action.name, log)
                if action.kind is ActionKind.REMOVE:
                    return self._remove(action.name, log)
                if action.kind is ActionKind.START:
                    return self._start(action.name, log)
                if action.desired is None:
                    raise DriverError(f"{action.kind.value} of {action.name} has no desired spec")
                for value in (*(v for _, v in action.desired.env), *(action.desired.command or ())):
                    resolve(value)  # a missing secret fails here, as it does before Docker sees it
                return self._rollout(action.desired, revision, commit or "", log)
        except NotBegun:
            raise
        except DeployAllyError as exc:
            log(f"failed: {exc}")
            return ApplyResult(DeploymentStatus.FAILED, None, str(exc))

    def _rollout(
        self, spec: ContainerSpec, revision: int | None, commit: str, log: Log
    ) -> ApplyResult:
        host = self.host
        if host.image_missing(spec.image):
            raise DriverError(f"could not pull image {spec.image}: not found")
        old = host.instances.get(spec.name)
        if old is not None and old.owner != self.owner:
            raise DriverError(
                f"an instance named {spec.name!r} belongs to another DeployAlly engine "
                f"(owner {old.owner}); rename the definition"
            )
        if old is not None:
            host.instances[spec.name + OLD_SUFFIX] = replace(old, name=spec.name + OLD_SUFFIX)
            del host.instances[spec.name]
        new = FakeInstance(
            ref=host.new_ref(), name=spec.name, owner=self.owner, spec=spec, revision=revision,
            commit=commit, state=InstanceState.RUNNING, ready=False, started_at=_now(),
        )
        log(f"created instance {new.ref[:12]}")
        reason = host.failure(spec)
        if reason is not None:
            log(f"instance {spec.name} did not come up: {reason}")
            host.history.append(("failed", spec.name))
            if old is None:
                return ApplyResult(DeploymentStatus.FAILED, None, reason, unready=True)
            del host.instances[spec.name + OLD_SUFFIX]
            host.instances[spec.name] = old
            log(f"rolled back to instance {old.ref[:12]}")
            return ApplyResult(DeploymentStatus.ROLLED_BACK, old.ref, reason, unready=True)
        host.instances[spec.name] = replace(new, ready=True)
        host.history.append(("update" if old else "create", spec.name))
        host.emit(new, InstanceEventKind.STARTED)
        if old is not None:
            del host.instances[spec.name + OLD_SUFFIX]
            log(f"removed old instance {old.ref[:12]}")
        return ApplyResult(DeploymentStatus.SUCCESS, new.ref, "deployed")

    def _start(self, name: str, log: Log) -> ApplyResult:
        """Heal in place, as the local driver does: start it if needed, then its health gate."""
        inst = self._mine(name)
        if inst.state is not InstanceState.RUNNING:
            self._set_running(inst, True)
            log(f"started instance {inst.ref[:12]}")
        why = None if inst.ready else self.host.failure(inst.spec)
        if why is not None:
            log(f"instance {name} did not come up: {why}")
            return ApplyResult(DeploymentStatus.FAILED, inst.ref, why, unready=True)
        with self.host.lock:
            self.host.instances[name] = replace(self.host.instances[name], ready=True)
        return ApplyResult(DeploymentStatus.SUCCESS, inst.ref, "started")

    def _remove(self, name: str, log: Log) -> ApplyResult:
        inst = self.host.instances.get(name)
        if inst is None or inst.owner != self.owner:
            log(f"instance {name} is already gone")
            return ApplyResult(DeploymentStatus.SUCCESS, None, "already removed")
        del self.host.instances[name]
        self.host.history.append(("remove", name))
        log("removed instance")
        return ApplyResult(DeploymentStatus.SUCCESS, inst.ref, "removed")

    # ------------------------------------------------------------ crash recovery

    def recover(self, log: Log) -> None:
        """Finish or undo every update a crash interrupted (this engine's alone)."""
        self.host.check()
        self.recovered += 1
        with self.host.lock:
            leftovers = [
                i.name.removesuffix(OLD_SUFFIX)
                for i in list(self.host.instances.values())
                if i.owner == self.owner and i.name.endswith(OLD_SUFFIX)
            ]
            for name in leftovers:
                self._recover_name(name, log)

    def _recover_name(self, name: str, log: Log) -> None:
        host = self.host
        old = host.instances.get(name + OLD_SUFFIX)
        if old is None or old.owner != self.owner:
            return
        current = host.instances.get(name)
        if current is not None and current.ready and current.state is InstanceState.RUNNING:
            del host.instances[name + OLD_SUFFIX]
            log(f"recovered {name}: removed leftover {name}{OLD_SUFFIX}")
            return
        if current is not None:
            log(f"recovered {name}: removed unproven new instance {current.ref[:12]}")
        del host.instances[name + OLD_SUFFIX]
        host.instances[name] = replace(old, name=name, state=InstanceState.RUNNING)
        host.history.append(("recover", name))
        log(f"recovered {name}: restored the previous instance {old.ref[:12]}")

    # ------------------------------------------------------------ pieces

    def _mine(self, name: str) -> FakeInstance:
        self.host.check()
        inst = self.host.instances.get(name)
        if inst is None or inst.owner != self.owner:
            raise NotFound(f"no managed instance named {name!r} on server {self.server!r}")
        return inst

    def _set_running(self, inst: FakeInstance, running: bool) -> None:
        with self.host.lock:
            state = InstanceState.RUNNING if running else InstanceState.EXITED
            changed = replace(inst, state=state, started_at=_now() if running else None)
            self.host.instances[inst.name] = changed
            self.host.history.append(("start" if running else "stop", inst.name))
        self.host.emit(changed, InstanceEventKind.STARTED if running else InstanceEventKind.STOPPED)


def _live(inst: FakeInstance) -> LiveInstance:
    has_check = inst.spec.healthcheck is not None
    healthy = InstanceHealth.HEALTHY if inst.ready else InstanceHealth.STARTING
    return LiveInstance(
        ref=inst.ref,
        name=inst.spec.name,
        definition_id=inst.spec.definition_id,
        revision=inst.revision,
        rendered_hash=inst.spec.rendered_hash,
        commit=inst.commit,
        state=inst.state,
        health=healthy if has_check and inst.state is InstanceState.RUNNING else None,
        image=inst.spec.image,
        created_at=inst.started_at,
        started_at=inst.started_at,
    )


def _now() -> datetime:
    return datetime.now(UTC)
