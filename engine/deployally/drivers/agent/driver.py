"""The agent driver: each Driver call becomes a call on its server's channel, carried out by the
agent on its own host with the local driver (health gate, rollback, volumes kept, owner labels,
crash recovery are that code), and answered in the one codec.

Secrets: the engine resolves the placeholders of the spec being applied (the applier's
`resolve`) and sends the values in that call alone, which only that server's key receives.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

from deployally import secrets
from deployally.codec import from_json, spec_to_json, to_json
from deployally.drivers.agent.channel import Channel
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
    DeploymentStatus,
    InstanceEvent,
    LiveInstance,
)

# The longest one apply may take on the agent's host (pulls and health waits included); past
# it the deployment waits for the server, and the next sync looks at what runs there.
APPLY_BOUND_S = 3600.0

# How an agent names the error a call raised on its host, and what the engine raises for it.
ERRORS: dict[str, type[DeployAllyError]] = {
    "NotFound": NotFound,
    "NotBegun": NotBegun,
    "DriverError": DriverError,
}


class AgentDriver(Driver):
    """Runs definitions on a remote host through the `deployally agent` polling this engine."""

    kind = "agent"

    def __init__(
        self, server: str, *, owner: str, config: DriverConfig = DEFAULT_CONFIG,
        channel: Channel | None = None,
    ) -> None:
        self.server = server
        self.owner = owner  # the agent labels this engine's containers with it
        self.config = config
        self.channel = channel or Channel(server)
        self._lock = threading.Lock()
        self._streams: list[AgentEvents] = []

    def __repr__(self) -> str:
        return f"AgentDriver(server={self.server!r}, online={self.channel.online})"

    def _call(self, op: str, args: dict[str, Any] | None = None, **kw: Any) -> Any:
        reply = self.channel.call(op, args or {}, **kw)
        if reply.get("ok"):
            return reply.get("value")
        error = ERRORS.get(str(reply.get("error")), DriverError)
        raise error(str(reply.get("message") or f"{op} failed on server {self.server}"))

    # ------------------------------------------------------------ observe

    def ping(self) -> None:
        """Check the agent is online and its Docker engine answers; DriverError naming the cause."""
        self._call("ping")

    def live(self) -> dict[str, LiveInstance]:
        """This engine's instances on the agent's host, from one list call there."""
        raw = self._call("live") or {}
        return {name: from_json(LiveInstance, value) for name, value in raw.items()}

    def configure(self, config: DriverConfig) -> None:
        """Take the sync's settings; each apply sends them to the agent."""
        self.config = config

    def started_at(self, instance: LiveInstance) -> datetime | None:
        """When the instance last started, asked of the agent when the listing omits it."""
        if instance.started_at is not None:
            return instance.started_at
        value = self._call("started_at", {"instance": to_json(instance)})
        return datetime.fromisoformat(value) if isinstance(value, str) else None

    def settings(self, instance: LiveInstance) -> LiveInstance:
        """`instance` with its settings, as the agent observes them."""
        if instance.settings is not None:
            return instance
        observed: LiveInstance = from_json(
            LiveInstance, self._call("settings", {"instance": to_json(instance)})
        )
        return observed

    # ------------------------------------------------------------ act

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
        """Carry out one action on the agent's host; its log lines arrive as it runs. ServerLost
        when the agent went away meanwhile, dropped the call or overran APPLY_BOUND_S (what it
        did is then unknown)."""
        if action.kind is ActionKind.NOOP:
            return ApplyResult(DeploymentStatus.SUCCESS, action.live.ref if action.live else None)
        try:
            values = _secret_values(action, resolve)
        except DeployAllyError as exc:
            log(f"failed: {exc}")
            return ApplyResult(DeploymentStatus.FAILED, None, str(exc))
        args = {
            "action": to_json(action),
            "revision": revision,
            "commit": commit,
            "config": to_json(self.config),
            "secrets": values,
        }
        value = self._call("apply", args, log=log, begin=begin, timeout_s=APPLY_BOUND_S)
        result: ApplyResult = from_json(ApplyResult, value)
        return result

    def start(self, name: str) -> None:
        """Start the named instance on the agent's host; NotFound if there is none."""
        self._call("start", {"name": name})

    def stop(self, name: str) -> None:
        """Stop the named instance on the agent's host; NotFound if there is none."""
        self._call("stop", {"name": name})

    def restart(self, name: str) -> None:
        """Restart the named instance on the agent's host; NotFound if there is none."""
        self._call("restart", {"name": name})

    def recover(self, log: Log) -> None:
        """Have the agent finish or undo an update a crash (its own) interrupted."""
        self._call("recover", log=log, timeout_s=300.0)

    # ------------------------------------------------------------ events

    def watch(self, on_event: OnEvent) -> EventStream:
        """The instance events the agent posts, passed to `on_event` as they arrive."""
        stream = AgentEvents(self, on_event)
        with self._lock:
            self._streams.append(stream)
        return stream

    def deliver(self, events: list[InstanceEvent]) -> None:
        """Events the agent posted (its Docker engine's, for this engine's instances)."""
        with self._lock:
            streams = [s for s in self._streams if s.running]
        for event in events:
            for stream in streams:
                stream.on_event(event)

    def _unwatch(self, stream: AgentEvents) -> None:
        with self._lock:
            if stream in self._streams:
                self._streams.remove(stream)


class AgentEvents(EventStream):
    """A subscription to the events an agent posts; running until stopped."""

    def __init__(self, driver: AgentDriver, on_event: OnEvent) -> None:
        self._driver = driver
        self.on_event = on_event
        self._stopped = threading.Event()

    def __repr__(self) -> str:
        return f"AgentEvents(server={self._driver.server!r}, running={self.running})"

    @property
    def running(self) -> bool:
        """True until stopped (an offline agent posts again once it is back)."""
        return not self._stopped.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """Block until the agent is online (or `timeout` seconds); True if it is."""
        ready, channel = threading.Event(), self._driver.channel
        channel.on_session(ready.set)
        try:
            return channel.online or ready.wait(timeout)
        finally:
            channel.off_session(ready.set)

    def stop(self, timeout: float = 5.0) -> None:
        """End the subscription."""
        self._stopped.set()
        self._driver._unwatch(self)


def _secret_values(action: Action, resolve: Resolve) -> dict[str, str]:
    """The values of the secrets the action's spec holds placeholders for (create and update:
    the only actions that write a spec's values), by name."""
    if action.desired is None or action.kind not in (ActionKind.CREATE, ActionKind.UPDATE):
        return {}
    names: set[str] = set()
    _strings(spec_to_json(action.desired), names)
    return {name: resolve(secrets.placeholder(name)) for name in sorted(names)}


def _strings(value: Any, names: set[str]) -> None:
    """Add the secret names referenced anywhere in `value`'s strings to `names`."""
    if isinstance(value, str):
        names |= secrets.referenced(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _strings(key, names)
            _strings(item, names)
    elif isinstance(value, list):
        for item in value:
            _strings(item, names)
