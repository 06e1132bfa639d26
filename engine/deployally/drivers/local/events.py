"""Docker's event stream in: this engine's containers starting, dying and turning unhealthy.

One daemon thread holds one `/events` subscription, filtered to the containers
this engine owns, and turns Docker's actions into `InstanceEvent`s; docker-py
objects never leave this module.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import docker
from docker.types.daemon import CancellableStream

from deployally.drivers.base import EventStream, OnEvent
from deployally.drivers.local.container_config import label_revision
from deployally.types import (
    LABEL_COMMIT,
    LABEL_DEFINITION,
    LABEL_MANAGED,
    LABEL_NAME,
    LABEL_OWNER,
    LABEL_SERVER,
    InstanceEvent,
    InstanceEventKind,
)

log = logging.getLogger(__name__)

# Only `die` is sent for every way a container ends (stop, kill, crash, OOM), so
# `stop` and `kill` are ignored: mapping them too would report one stop two or three times.
# `destroy` matters for healing: a heal that ran between a forced removal's `die` and its
# `destroy` saw the container still there, and nothing else would look again.
_ACTIONS: Mapping[str, InstanceEventKind] = {
    "start": InstanceEventKind.STARTED,
    "die": InstanceEventKind.STOPPED,
    "destroy": InstanceEventKind.REMOVED,
    "health_status: unhealthy": InstanceEventKind.UNHEALTHY,
    "health_status: healthy": InstanceEventKind.HEALTHY,
    "update": InstanceEventKind.CHANGED,  # `docker update`: a restart policy or a limit
}

RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 10.0


def event_filters(owner: str, server: str | None = None) -> dict[str, object]:
    """The `/events` filter for one engine's containers (managed, carrying its owner label, and
    its server's when given: two servers' drivers may share one Docker engine) and the actions
    we map: Docker then never sends the three exec events of every health check."""
    labels = [f"{LABEL_MANAGED}=true", f"{LABEL_OWNER}={owner}"]
    if server is not None:
        labels.append(f"{LABEL_SERVER}={server}")
    return {
        "type": "container",
        "label": labels,
        # `health_status` matches `health_status: healthy` and `: unhealthy` (Docker 1.13 on).
        "event": sorted({action.split(":")[0] for action in _ACTIONS}),
    }


def instance_event(raw: Mapping[str, Any]) -> InstanceEvent | None:
    """Map one decoded Docker event to an InstanceEvent, or None for actions we ignore."""
    if raw.get("Type", "container") != "container":
        return None
    kind = _ACTIONS.get(str(raw.get("Action") or raw.get("status") or ""))
    if kind is None:
        return None
    actor = raw.get("Actor") or {}
    attrs: Mapping[str, str] = actor.get("Attributes") or {}
    exit_code: int | None = None
    if kind is InstanceEventKind.STOPPED and attrs.get("exitCode", "").lstrip("-").isdigit():
        exit_code = int(attrs["exitCode"])
    nanos = raw.get("timeNano")
    at = (
        datetime.fromtimestamp(int(nanos) / 1e9, tz=UTC)
        if nanos
        else datetime.fromtimestamp(float(raw.get("time") or time.time()), tz=UTC)
    )
    return InstanceEvent(
        kind=kind,
        ref=str(actor.get("ID") or raw.get("id") or ""),
        name=attrs.get(LABEL_NAME) or attrs.get("name", ""),
        definition_id=attrs.get(LABEL_DEFINITION),
        exit_code=exit_code,
        at=at,
        # Docker events carry the container's labels: what this instance runs.
        revision=label_revision(attrs),
        commit=attrs.get(LABEL_COMMIT) or None,
    )


class DockerEvents(EventStream):
    """Follows Docker's event stream for one owner's containers on a daemon thread.

    On connection loss (engine restart) it reconnects with backoff and replays
    what it missed with `since`, so a short outage loses no event. `on_connection`
    hears each subscribe (True) and each loss (False), on the same thread.
    """

    def __init__(
        self,
        client_factory: Callable[[], docker.DockerClient],
        on_event: OnEvent,
        *,
        owner: str,
        server: str | None = None,
        on_connection: Callable[[bool], None] | None = None,
    ) -> None:
        if not owner:
            # Without an owner every engine on the host would hear, heal and notify
            # every other engine's containers.
            raise ValueError("an event stream needs the owning engine's id")
        self._client_factory = client_factory
        self._on_event = on_event
        self._on_connection = on_connection
        self._filters = event_filters(owner, server)
        self._stopping = threading.Event()
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self._stream: CancellableStream[dict[str, Any]] | None = None
        self._client: docker.DockerClient | None = None
        self._thread: threading.Thread | None = None
        self._last_nanos = 0  # newest event seen, so a reconnect replays from there

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<DockerEvents {state} connected={self._connected.is_set()}>"

    @property
    def running(self) -> bool:
        """True while the thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Subscribe on a daemon thread; events from this moment on are reported."""
        if self.running:
            return
        self._stopping.clear()
        # Replay from now: an event between start() and the subscription is not lost.
        self._last_nanos = time.time_ns()
        self._thread = threading.Thread(target=self._run, name="docker-events", daemon=True)
        self._thread.start()

    def wait_connected(self, timeout: float) -> bool:
        """Block until the stream is subscribed (or timeout); True if it is."""
        return self._connected.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread promptly: closing the stream unblocks its pending read."""
        self._stopping.set()
        self._close_stream()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # ------------------------------------------------------------ the thread

    def _run(self) -> None:
        delay = RECONNECT_FIRST_S
        while not self._stopping.is_set():
            try:
                self._subscribe()
                delay = RECONNECT_FIRST_S
                self._follow()
            # The stream fails with errors from docker-py, requests and urllib3
            # alike; whatever it is, the loop must live on and reconnect.
            except Exception as exc:  # noqa: BLE001
                if not self._stopping.is_set():
                    log.warning("docker events: %s; reconnecting in %.1fs", exc, delay)
            finally:
                if self._connected.is_set():
                    self._connected.clear()
                    self._tell_connection(False)
                self._close_stream()
            if self._stopping.wait(delay):
                break
            delay = min(delay * 2, RECONNECT_MAX_S)

    def _subscribe(self) -> None:
        client = self._client_factory()
        # Whole seconds: the replayed overlap is dropped by timeNano in _follow.
        since = self._last_nanos // 1_000_000_000
        try:
            stream = client.events(decode=True, filters=self._filters, since=since)
        except BaseException:
            client.close()  # each reconnect makes a client: a failed one must not keep its sockets
            raise
        with self._lock:
            self._client, self._stream = client, stream
        if self._stopping.is_set():  # stop() ran before the stream existed to be closed
            raise InterruptedError("stopping")
        self._connected.set()
        self._tell_connection(True)

    def _tell_connection(self, up: bool) -> None:
        if self._on_connection is None:
            return
        try:
            self._on_connection(up)
        except Exception:  # a faulty callback must not end the stream
            log.exception("docker events: on_connection failed")

    def _follow(self) -> None:
        stream = self._stream
        if stream is None:  # stop() closed it between subscribe and here
            return
        for raw in stream:
            nanos = int(raw.get("timeNano") or 0)
            if nanos and nanos <= self._last_nanos:
                continue  # already reported before a reconnect
            self._last_nanos = max(self._last_nanos, nanos)
            event = instance_event(raw)
            if event is None:
                continue
            try:
                self._on_event(event)
            except Exception:  # a faulty callback must not end the stream
                log.exception("docker events: on_event failed for %s", event)

    def _close_stream(self) -> None:
        with self._lock:
            stream, client = self._stream, self._client
            self._stream = self._client = None
        if stream is not None:
            # A stream the engine already broke is as good as closed.
            with contextlib.suppress(Exception):
                stream.close()
        if client is not None:
            client.close()
