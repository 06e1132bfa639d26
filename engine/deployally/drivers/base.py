"""The seam every driver implements: observe one server, apply one action, stream its events.

Drivers speak DeployAlly's own words (LiveInstance, InstanceState, InstanceEvent,
ApplyResult): plan, sync, API and CLI never see the engine underneath (Docker,
an agent's host, a Swarm), so each kind is one class behind this interface.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from deployally.types import (
    DEFAULT_MIN_READY_S,
    Action,
    ApplyResult,
    ContainerSpec,
    InstanceEvent,
    LiveInstance,
    Network,
)

# A driver logs through this: one line appended to the deployment's log.
Log = Callable[[str], None]
# Replaces secret placeholders with values; called right before the engine sees a value.
Resolve = Callable[[str], str]
# Called right before a driver first changes the server for an action; False means the
# engine is stopping: the driver changes nothing and raises NotBegun.
Begin = Callable[[], bool]
# Receives this engine's instance events, on the driver's own thread.
OnEvent = Callable[[InstanceEvent], None]


@dataclass(frozen=True)
class DriverConfig:
    """How a driver carries out actions: the repository's settings, or the command line's."""

    health_timeout_s: float = 120.0  # how long a new instance may take to become healthy
    parallel: int = 4  # instances created or started at once on the server
    # How long an instance without a healthcheck must stay up, for a spec that does not say
    # (each rendered spec carries its own min_ready: definition, template or deployally.yaml).
    min_ready_s: float = DEFAULT_MIN_READY_S
    # Instances an update may have down at once (its old one stopped before the new is ready);
    # None: as many as `parallel`.
    max_unavailable: int | None = None

    def __post_init__(self) -> None:
        if self.parallel < 1:
            raise ValueError(f"parallel must be at least 1, not {self.parallel}")
        if self.max_unavailable is not None and self.max_unavailable < 1:
            raise ValueError(f"max_unavailable must be at least 1, not {self.max_unavailable}")

    @property
    def unavailable(self) -> int:
        """How many instances may be down at once during an update."""
        return self.max_unavailable or self.parallel

    def min_ready_of(self, spec: ContainerSpec | None) -> float:
        """How long an instance of `spec` without a healthcheck must stay up: its min_ready."""
        if spec is not None and spec.min_ready_s is not None:
            return spec.min_ready_s
        return self.min_ready_s


DEFAULT_CONFIG = DriverConfig()


class EventStream(abc.ABC):
    """A subscription to a server's instance events, followed on its own thread."""

    @property
    @abc.abstractmethod
    def running(self) -> bool:
        """True while the subscription is followed (reconnecting included)."""

    @abc.abstractmethod
    def wait_connected(self, timeout: float) -> bool:
        """Block until subscribed (or `timeout` seconds); True if it is."""

    @abc.abstractmethod
    def stop(self, timeout: float = 5.0) -> None:
        """End the subscription and its thread."""


class Driver(abc.ABC):
    """Carries out actions on one server and reports what runs there, for one engine (owner)."""

    kind: ClassVar[str]  # the server kind it serves: local, agent, swarm
    server: str  # the server's name
    # When a sync last finished changing what runs on the server (time.monotonic()): a live
    # snapshot taken before then is not shown as the server's state. 0.0: never.
    changed_at: float = 0.0

    @abc.abstractmethod
    def ping(self) -> None:
        """Check the server answers; raise DriverError naming the cause if not."""

    @abc.abstractmethod
    def live(self) -> dict[str, LiveInstance]:
        """This engine's instances on the server, keyed by definition name, from one list call."""

    def configure(self, config: DriverConfig) -> None:
        """Take the settings a sync runs with; a no-op for a driver that needs none."""

    def close(self) -> None:
        """Let go of the connections and threads the driver holds (a later call opens them
        again); a no-op for a driver that holds none."""

    def host_networks(self) -> tuple[Network, ...]:
        """The address ranges of the networks this server has on the engine's own host (where
        a webhook must not reach); () for a server elsewhere. Raises DriverError."""
        return ()

    def started_at(self, instance: LiveInstance) -> datetime | None:
        """When `instance` last started (a driver whose listing omits it asks once more)."""
        return instance.started_at

    def settings(self, instance: LiveInstance) -> LiveInstance:
        """`instance` with its settings observed (a driver whose listing omits them asks once more)."""
        return instance

    @abc.abstractmethod
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
        """Carry out one action; never raise for a failed deploy, report it in the result.
        `begin` is asked right before the first change (after any wait for a turn); when it
        answers False, nothing changes and NotBegun is raised."""

    @abc.abstractmethod
    def start(self, name: str) -> None:
        """Start the named instance (operator action); NotFound if there is none."""

    @abc.abstractmethod
    def stop(self, name: str) -> None:
        """Stop the named instance (operator action); NotFound if there is none."""

    @abc.abstractmethod
    def restart(self, name: str) -> None:
        """Restart the named instance (operator action); NotFound if there is none."""

    @abc.abstractmethod
    def watch(self, on_event: OnEvent) -> EventStream:
        """Follow this engine's instance events (never another engine's) until stopped."""

    @abc.abstractmethod
    def recover(self, log: Log) -> None:
        """Finish or undo an update a crash interrupted, so each name has one instance."""

    def recover_and_list(self, log: Log) -> dict[str, LiveInstance]:
        """`recover`, then `live`: what runs once a crash's leftovers are settled (a driver
        whose recovery lists the instances anyway answers from that one list call)."""
        self.recover(log)
        return self.live()
