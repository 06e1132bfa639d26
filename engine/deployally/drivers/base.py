"""The narrow interface every driver implements: observe live state, apply one action."""

from __future__ import annotations

import abc
from collections.abc import Callable
from datetime import datetime

from deployally.types import Action, ApplyResult, LiveInstance

# A driver logs through this: one line appended to the deployment's log.
Log = Callable[[str], None]
# Replaces secret placeholders with values; called right before Docker sees a value.
Resolve = Callable[[str], str]


class Driver(abc.ABC):
    """Carries out actions on one server and reports what runs there."""

    server: str

    @abc.abstractmethod
    def ping(self) -> None:
        """Check the engine answers; raise DriverError naming the cause if not."""

    @abc.abstractmethod
    def live(self) -> dict[str, LiveInstance]:
        """Every managed instance on this server, keyed by definition name, from one list call."""

    def configure(self, *, health_timeout_s: float, docker_slots: int) -> None:
        """Take the repository's settings (deployally.yaml) before a sync; a no-op by default."""

    @abc.abstractmethod
    def started_at(self, container_id: str) -> datetime | None:
        """When the container last started (the list call does not say); None if not running."""

    @abc.abstractmethod
    def apply(
        self,
        action: Action,
        *,
        revision: int | None,
        commit: str | None,
        resolve: Resolve,
        log: Log,
    ) -> ApplyResult:
        """Carry out one action; never raise for a failed deploy, report it in the result."""

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
    def recover(self, log: Log) -> None:
        """Finish or undo an update a crash interrupted, so each name has one instance."""
