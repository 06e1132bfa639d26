"""This engine's instance events, while serving: a webhook for each, and a heal when one went down.

Each server's driver streams only this engine's own instances (its owner filter),
so engines sharing a host never notify or heal each other's.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from deployally.errors import StoreUnavailable
from deployally.identity import instance_id
from deployally.store import ServerRecord
from deployally.types import InstanceEvent, InstanceEventKind
from deployally.workspace import Workspace

log = logging.getLogger(__name__)

# Docker events for one container come in bursts (die, then destroy): wait a moment, sync once.
HEAL_DELAY_S = 0.5
# While the store refuses writes (locked, disk full), events wait in memory, tried again this often.
RETRY_S = 1.0
# ... up to this many; a store down for days with a crash-looping container cannot eat the memory.
PENDING_MAX = 10_000

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
        # Webhook events not yet in the store's outbox, oldest first; one thread writes them,
        # so the driver's event stream is never held up by a busy store.
        self._pending: deque[tuple[str, dict[str, Any]]] = deque()
        self._changed = threading.Condition()
        self._closing = False
        self._writer = threading.Thread(target=self._write_pending, name="instance-events", daemon=True)
        self._writer.start()

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
        if event.kind is InstanceEventKind.CHANGED:
            # Its restart policy or limits changed (ours set after a rollout, or someone's):
            # the next sync looks, and puts back what the spec says.
            ws.engine.observe_settings([event.name])
            self._loop.call_soon_threadsafe(self._heal_soon, event.kind.value)
            return
        if event.kind in _INSTANCE_STATUS:
            # The revision this instance runs, from its own labels: during an update the new
            # one starts before the definition's applied revision moves to it.
            self._queue(
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
        went_down = event.kind in (InstanceEventKind.STOPPED, InstanceEventKind.UNHEALTHY, InstanceEventKind.REMOVED)
        if went_down and not record.operator_stopped:
            self._loop.call_soon_threadsafe(self._heal_soon, event.kind.value)

    def close(self) -> None:
        """Write what is still waiting (one try each), then end the writer thread."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        self._writer.join(timeout=10)

    def _queue(self, event: str, data: dict[str, Any]) -> None:
        with self._changed:
            if len(self._pending) >= PENDING_MAX:
                dropped, _ = self._pending.popleft()
                log.error("instance events: the store has refused writes for %d events; "
                          "dropping the oldest (%s)", PENDING_MAX, dropped)
            self._pending.append((event, data))
            self._changed.notify()

    def _write_pending(self) -> None:
        """The writer thread: each event into the outbox in order, waiting out a busy store."""
        refused = False
        while True:
            with self._changed:
                while not self._pending and not self._closing:
                    self._changed.wait()
                if not self._pending:
                    return
                event, data = self._pending[0]
            try:
                self.ws.store.enqueue_event(event, data)
            except StoreUnavailable as exc:
                if not refused:
                    log.warning("instance events: waiting for the store: %s", exc)
                refused = True
                with self._changed:
                    if self._closing:
                        return
                    self._changed.wait(RETRY_S)
                continue
            if refused:
                log.info("instance events: the store takes writes again")
            refused = False
            with self._changed:
                self._pending.popleft()
            self._wake_sender()

    def _heal_soon(self, why: str) -> None:
        if self._heal is None:
            self._heal = self._loop.call_later(HEAL_DELAY_S, self._heal_now, why)

    def _heal_now(self, why: str) -> None:
        self._heal = None
        self._trigger_sync(why)
