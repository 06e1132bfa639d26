"""This engine's instance events, while serving: a webhook for each, and a heal when one went down.

Each server's driver streams only this engine's own instances (its owner filter),
so engines sharing a host never notify or heal each other's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from deployally.identity import instance_id
from deployally.store import ServerRecord
from deployally.types import InstanceEvent, InstanceEventKind
from deployally.workspace import Workspace

# Docker events for one container come in bursts (die, then destroy): wait a moment, sync once.
HEAL_DELAY_S = 0.5

# What an instance event says the container now is, as `status` in its webhook payload.
_INSTANCE_STATUS = {
    InstanceEventKind.STARTED: "running",
    InstanceEventKind.STOPPED: "exited",
    InstanceEventKind.UNHEALTHY: "unhealthy",
}


class InstanceEventHandler:
    """Queues a webhook for each event of one server's instances; heals the ones that went down."""

    def __init__(
        self,
        ws: Workspace,
        server: ServerRecord,
        loop: asyncio.AbstractEventLoop,
        *,
        wake_sender: Callable[[], None],
        trigger_sync: Callable[[str], None],
    ) -> None:
        self.ws = ws
        self.server = server
        self._loop = loop
        self._wake_sender = wake_sender
        self._trigger_sync = trigger_sync  # called on the loop's thread
        self._heal: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"InstanceEventHandler(server={self.server.name!r})"

    def __call__(self, event: InstanceEvent) -> None:
        """The driver reported one of our instances (its events thread): webhook it, heal if it went down."""
        ws = self.ws
        if not event.name:
            return
        record = ws.store.definition(event.name)
        if record is None or record.id != event.definition_id:
            return  # an instance whose definition is gone
        if record.server_id not in (self.server.name, self.server.id):
            return  # the definition moved to another server; this one is about to go
        if event.kind in _INSTANCE_STATUS:
            # The revision this instance runs, from its own labels: during an update the new
            # one starts before the definition's applied revision moves to it.
            ws.store.enqueue_event(
                event.kind.value,
                {
                    "instance_id": instance_id(event.ref),
                    "definition_id": record.id,
                    "name": event.name,
                    "server_id": ws.store.server_id(record.server_id),
                    "server": record.server_id,
                    "revision": event.revision,
                    "commit": event.commit,
                    "status": _INSTANCE_STATUS[event.kind],
                    "exit_code": event.exit_code,
                    "at": event.at.isoformat().replace("+00:00", "Z"),
                },
            )
            self._wake_sender()
        went_down = event.kind in (InstanceEventKind.STOPPED, InstanceEventKind.UNHEALTHY, InstanceEventKind.REMOVED)
        if went_down and not record.operator_stopped:
            self._loop.call_soon_threadsafe(self._heal_soon, event.kind.value)

    def _heal_soon(self, why: str) -> None:
        if self._heal is None:
            self._heal = self._loop.call_later(HEAL_DELAY_S, self._heal_now, why)

    def _heal_now(self, why: str) -> None:
        self._heal = None
        self._trigger_sync(why)
