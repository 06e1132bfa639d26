"""Waiting for a started container to be ready: healthy, or still running after its min_ready.

Docker says on its event stream when anything that decides a wait happens (`die`, `destroy`,
`health_status`); one subscription per Docker engine (`ContainerNews`) serves every wait, and
a wait reads the container's inspect document only to confirm: once when it begins, once per
piece of news, once at its end.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import docker

from deployally.drivers.base import Log
from deployally.drivers.local.events import DockerEvents
from deployally.types import InstanceEvent, InstanceEventKind

# While the event stream is cut (Docker restarting, a broken connection), look anyway this often.
FALLBACK_POLL_S = 2.0
# While it is up, this often: Docker drops events for a subscriber that falls behind (its thread
# starved on a loaded host), and a wait must not then sit until its timeout.
SAFETY_POLL_S = 5.0
# How long a wait's first look waits for the subscription, so news from then on is heard.
CONNECT_WAIT_S = 2.0
# The subscription outlives its last wait this long: a sync's next wave finds it open.
LINGER_S = 15.0
# How long a container whose process is gone may take Docker to report its exit code.
EXIT_NEWS_S = 2.0

# What can decide a wait. A `start` of a container being waited on follows a `die`, already news.
_NEWS = frozenset(
    {
        InstanceEventKind.STOPPED,
        InstanceEventKind.REMOVED,
        InstanceEventKind.HEALTHY,
        InstanceEventKind.UNHEALTHY,
    }
)


class NotReady(Exception):
    """A container did not come up; the message is the reason shown to the user."""


def wait_ready(
    inspect: Callable[[], dict[str, Any]],
    until_news: Callable[[float], None],
    *,
    has_healthcheck: bool,
    health_timeout_s: float,
    min_ready_s: float,
    log: Log,
    alive: Callable[[], bool | None] = lambda: None,
) -> None:
    """Return when the container is healthy (or, without a healthcheck, still running after
    min_ready_s, 0 included); else NotReady.

    `until_news(timeout)` blocks until something may have changed the container (or timeout);
    each inspect costs the Docker engine CPU that a busy host is short of. `alive()` asks
    whether the container's process still runs (None: cannot tell)."""
    began = time.monotonic()
    if has_healthcheck:
        log(f"waiting for health (timeout {health_timeout_s:g}s)")
        deadline = began + health_timeout_s
    else:
        log(f"waiting {min_ready_s:g}s (min_ready) to see it keeps running")
        deadline = began + min_ready_s
    while True:
        info = inspect()
        state = info["State"]
        raise_if_down(info)
        health = (state.get("Health") or {}).get("Status")
        if has_healthcheck and health == "healthy":
            log(f"healthy after {time.monotonic() - began:.1f}s")
            return
        if has_healthcheck and health == "unhealthy":
            checks = (state.get("Health") or {}).get("Log") or []
            output = checks[-1].get("Output", "").strip() if checks else ""
            raise NotReady("healthcheck reported unhealthy" + (f": {output}" if output else ""))
        left = deadline - time.monotonic()
        if left <= 0:
            if has_healthcheck:
                raise NotReady(f"not healthy after {health_timeout_s:g}s (health: {health})")
            confirm_running(inspect, until_news, alive)
            log(f"running after {time.monotonic() - began:.1f}s")
            return
        until_news(left)


def confirm_running(
    inspect: Callable[[], dict[str, Any]],
    until_news: Callable[[float], None],
    alive: Callable[[], bool | None],
) -> None:
    """NotReady unless the container's process still runs now. Docker marks a container
    exited only once it has handled the exit, which on a busy host comes well after the
    process died: an inspect alone passes a container that died at once (min_ready 0s) or
    just before the end of its min_ready. Asking for its processes asks the kernel."""
    if alive() is not False:
        return
    until_news(EXIT_NEWS_S)  # Docker's `die`, to say how it ended
    raise_if_down(inspect())
    raise NotReady("its process had exited when it was checked")


def raise_if_down(info: dict[str, Any]) -> None:
    """NotReady when the container has exited, or exited and was restarted by its policy."""
    state = info["State"]
    if not state.get("Running") or state.get("Restarting") or info.get("RestartCount"):
        raise NotReady(f"container exited with code {state.get('ExitCode')}")


class Watch:
    """News of one container being waited on: set by the subscription's thread, taken by the wait."""

    def __init__(self, news: ContainerNews) -> None:
        self._news = news
        self.pending = False  # something happened since the wait last looked

    def __call__(self, timeout: float) -> None:
        """Block until news of the container, the stream reconnecting, or `timeout` seconds; at
        most SAFETY_POLL_S, and FALLBACK_POLL_S while the stream is cut (the safety nets)."""
        cond = self._news.cond
        began = time.monotonic()
        end = began + timeout
        with cond:
            while not self.pending:
                now = time.monotonic()
                poll = SAFETY_POLL_S if self._news.connected else FALLBACK_POLL_S
                stop = min(end, began + poll)
                if now >= stop:
                    break
                cond.wait(stop - now)
            self.pending = False


class ContainerNews:
    """One Docker event subscription for an engine's containers, shared by every readiness wait.

    Started by the first wait and closed LINGER_S after the last. Each reconnect gives every
    wait news, so it inspects once: what happened while the stream was cut is never missed.
    """

    def __init__(self, client_factory: Callable[[], docker.DockerClient], *, owner: str) -> None:
        self._client_factory = client_factory
        self._owner = owner
        self.cond = threading.Condition()
        self.connected = False
        self._watches: dict[str, Watch] = {}
        self._stream: DockerEvents | None = None
        self._generation = 0  # callbacks of a closed stream are ignored
        self._subscribed = False  # the current stream has been connected once
        self._linger: threading.Timer | None = None

    def __repr__(self) -> str:
        return f"<ContainerNews watching={len(self._watches)} connected={self.connected}>"

    @contextlib.contextmanager
    def watch(self, container_id: str) -> Iterator[Watch]:
        """Hear the news of `container_id` for the block (the subscription open, or opening)."""
        watch = Watch(self)
        with self.cond:
            if self._linger is not None:
                self._linger.cancel()
                self._linger = None
            self._watches[container_id] = watch
            stream = self._stream
            if stream is None:
                self._generation += 1
                self._subscribed = False
                stream = self._stream = self._open(self._generation)
        stream.wait_connected(CONNECT_WAIT_S)
        try:
            yield watch
        finally:
            with self.cond:
                self._watches.pop(container_id, None)
                if not self._watches and self._stream is not None:
                    self._linger = threading.Timer(LINGER_S, self._close_if_idle, (self._generation,))
                    self._linger.daemon = True
                    self._linger.start()

    def close(self) -> None:
        """End the subscription now (a later wait opens a new one)."""
        self._close_if_idle(None)

    def _open(self, generation: int) -> DockerEvents:
        stream = DockerEvents(
            self._client_factory,
            lambda event: self._heard(generation, event),
            owner=self._owner,
            on_connection=lambda up: self._connection(generation, up),
        )
        stream.start()
        return stream

    def _close_if_idle(self, generation: int | None) -> None:
        with self.cond:
            if generation is not None and (self._watches or generation != self._generation):
                return  # a wait came in since, or a newer stream is open
            stream, self._stream = self._stream, None
            self._generation += 1
            self.connected = self._subscribed = False
            if self._linger is not None:
                self._linger.cancel()
                self._linger = None
        if stream is not None:
            stream.stop()  # outside the lock: its thread may be waiting for it

    def _heard(self, generation: int, event: InstanceEvent) -> None:
        if event.kind not in _NEWS:
            return
        with self.cond:
            watch = self._watches.get(event.ref) if generation == self._generation else None
            if watch is not None:
                watch.pending = True
                self.cond.notify_all()

    def _connection(self, generation: int, up: bool) -> None:
        with self.cond:
            if generation != self._generation:
                return
            if up and self._subscribed:
                # Resubscribed: events replay from the last one seen, but Docker keeps only
                # so many; one inspect each settles what happened meanwhile. (The first
                # subscribe replays from the stream's start, before any of these waits began.)
                for watch in self._watches.values():
                    watch.pending = True
            self._subscribed = self._subscribed or up
            self.connected = up
            self.cond.notify_all()  # a cut wait now looks every FALLBACK_POLL_S (events.py logs why)
