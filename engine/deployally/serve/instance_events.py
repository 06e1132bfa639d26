"""Docker's events for our containers, while serving: a webhook for each, and a heal when one went down."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from deployally.drivers.local.events import (
    INSTANCE_HEALTHY,
    INSTANCE_STARTED,
    INSTANCE_STOPPED,
    INSTANCE_UNHEALTHY,
    InstanceEvent,
)
from deployally.identity import instance_id
from deployally.workspace import Workspace

# Docker events for one container come in bursts (die, then destroy): wait a moment, sync once.
HEAL_DELAY_S = 0.5

# What an instance event says the container now is, as `status` in its webhook payload.
_INSTANCE_STATUS = {
    INSTANCE_STARTED: "running",
    INSTANCE_STOPPED: "exited",
    INSTANCE_UNHEALTHY: "unhealthy",
}


class InstanceEventHandler:
    """Queues a webhook for each instance event of this engine's containers; heals the ones that went down."""

    def __init__(
        self,
        ws: Workspace,
        loop: asyncio.AbstractEventLoop,
        *,
        wake_sender: Callable[[], None],
        trigger_sync: Callable[[str], None],
    ) -> None:
        self.ws = ws
        self._loop = loop
        self._wake_sender = wake_sender
        self._trigger_sync = trigger_sync  # called on the loop's thread
        self._heal: asyncio.TimerHandle | None = None

    def __repr__(self) -> str:
        return f"InstanceEventHandler(state_dir={str(self.ws.state_dir)!r})"

    def __call__(self, event: InstanceEvent) -> None:
        """Docker told us about a managed container (events thread): webhook it, heal if it went down."""
        ws = self.ws
        if not event.name:
            return
        record = ws.store.definition(event.name)
        if record is None or record.id != event.definition_id:
            return  # another engine's container
        if event.event != INSTANCE_HEALTHY:
            applied = (
                ws.store.revision(record.id, record.applied_revision)
                if record.applied_revision is not None
                else None
            )
            ws.store.enqueue_event(
                event.event,
                {
                    "instance_id": instance_id(event.container_id),
                    "definition_id": record.id,
                    "name": event.name,
                    "server_id": ws.store.server_id(record.server_id),
                    "server": record.server_id,
                    "revision": record.applied_revision,
                    "commit": applied.commit if applied is not None else None,
                    "status": _INSTANCE_STATUS[event.event],
                    "exit_code": event.exit_code,
                    "at": event.at.isoformat().replace("+00:00", "Z"),
                },
            )
            self._wake_sender()
        went_down = event.event in (INSTANCE_STOPPED, INSTANCE_UNHEALTHY)
        if went_down and not record.operator_stopped:
            self._loop.call_soon_threadsafe(self._heal_soon, event.event)

    def _heal_soon(self, why: str) -> None:
        if self._heal is None:
            self._heal = self._loop.call_later(HEAL_DELAY_S, self._heal_now, why)

    def _heal_now(self, why: str) -> None:
        self._heal = None
        self._trigger_sync(why)
