"""One agent server's calls: queued for its agent's next poll, answered by the agent's messages.

The agent connects out and long-polls (each poll is its heartbeat). A driver call is queued
here, handed to the agent's next poll, and answered by what the agent sends back for it: log
lines, a request to begin changing the server, then the result. A call fails at once while
the agent is offline, and with ServerLost once the agent that took it restarted (a new
session) or stopped polling: what it did is then unknown, and the next sync looks again.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from deployally.errors import DriverError, ServerLost
from deployally.identity import random_id

OFFLINE_AFTER_BEATS = 3  # heartbeats missed before the agent counts as offline
DEFAULT_HEARTBEAT_S = 10.0
_SLICE_S = 0.25  # how often a waiting call looks at the agent's liveness

# What an agent sends back for a call.
LOG = "log"
BEGIN = "begin"
RESULT = "result"
_LOST = "lost"  # the channel's own: the agent that took the call is gone


@dataclass
class Message:
    """One thing an agent sent for a call; a BEGIN comes with `answer` (True: go ahead)."""

    kind: str
    payload: Any = None
    answer: Callable[[bool], None] | None = None


@dataclass
class Call:
    """A driver call on its way to the agent and back."""

    op: str
    args: dict[str, Any]
    id: str = field(default_factory=lambda: random_id("call"))
    session: str | None = None  # the agent session it was handed to; None: not yet
    inbox: queue.Queue[Message] = field(default_factory=queue.Queue)

    def wire(self) -> dict[str, Any]:
        """The call as a poll answers it (secrets included: only ever to its server's key)."""
        return {"id": self.id, "op": self.op, "args": self.args}


class Channel:
    """The calls between one agent server's driver and its agent, and the agent's liveness."""

    def __init__(self, server: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.server = server
        self._clock = clock
        self._lock = threading.Lock()
        self._queued: deque[Call] = deque()
        self._calls: dict[str, Call] = {}  # queued or handed out, not yet answered
        self._waiters: list[Future[None]] = []  # polls waiting for a call
        self.session: str | None = None
        self.heartbeat_s = DEFAULT_HEARTBEAT_S
        self._last_poll: float | None = None
        self.last_seen: datetime | None = None
        self._on_session: list[Callable[[], None]] = []
        self.recorded_at = float("-inf")  # when the API last wrote the agent's last_seen_at

    def __repr__(self) -> str:
        return f"Channel({self.server!r}, session={self.session!r}, online={self.online})"

    # ------------------------------------------------------------ the agent's side (API)

    def heard(self, session: str, heartbeat_s: float) -> bool:
        """A poll from the agent's `session`; True when the session is new (the agent started).
        Calls an earlier session took are lost: that agent is gone."""
        with self._lock:
            new = session != self.session
            if new:
                for call in self._calls.values():
                    if call.session is not None:
                        call.inbox.put(Message(_LOST, f"server {self.server}'s agent restarted during {call.op}"))
                self.session = session
            self.heartbeat_s = heartbeat_s
            self._last_poll = self._clock()
            self.last_seen = datetime.now(UTC)
            hooks = list(self._on_session) if new else []
        for hook in hooks:
            hook()
        return new

    def take(self, session: str) -> list[Call]:
        """The queued calls, handed to `session` (none to a session that is not the current one)."""
        with self._lock:
            if session != self.session:
                return []
            calls = list(self._queued)
            self._queued.clear()
            for call in calls:
                call.session = session
            return calls

    def wait_for_calls(self) -> Future[None]:
        """A future done as soon as a call is queued (at once if one is)."""
        waiter: Future[None] = Future()
        with self._lock:
            self._waiters = [w for w in self._waiters if not w.done()]  # polls that timed out
            if self._queued:
                waiter.set_result(None)
            else:
                self._waiters.append(waiter)
        return waiter

    def send(self, call_id: str, session: str, message: Message) -> bool:
        """Pass the agent's `message` to the waiting call; False when no such call waits for
        that session (it ended, or another session took it)."""
        with self._lock:
            call = self._calls.get(call_id)
            if call is None or call.session != session:
                return False
            call.inbox.put(message)
            return True

    def on_session(self, hook: Callable[[], None]) -> None:
        """Call `hook` whenever an agent session begins (the agent came online)."""
        with self._lock:
            self._on_session.append(hook)

    # ------------------------------------------------------------ the engine's side (driver)

    @property
    def online(self) -> bool:
        """Whether the agent polled within its last few heartbeats."""
        with self._lock:
            return self._online()

    def _online(self) -> bool:
        if self._last_poll is None:
            return False
        return self._clock() - self._last_poll <= self.heartbeat_s * OFFLINE_AFTER_BEATS

    def offline_reason(self) -> str:
        """Why the agent counts as offline, in a person's words."""
        with self._lock:
            if self.last_seen is None:
                return (
                    f"server {self.server}'s agent has not connected to this engine"
                    " (run `deployally agent` on it with its key)"
                )
            missed = OFFLINE_AFTER_BEATS * self.heartbeat_s
            since = self.last_seen.strftime("%Y-%m-%dT%H:%M:%SZ")
            return (
                f"server {self.server}'s agent is offline: last heard at {since}, "
                f"no heartbeat for over {missed:g}s"
            )

    def call(
        self,
        op: str,
        args: dict[str, Any],
        *,
        log: Callable[[str], None] | None = None,
        begin: Callable[[], bool] | None = None,
        timeout_s: float | None = 60.0,
    ) -> Any:
        """Run `op` on the agent and return its result payload. DriverError while the agent is
        offline (or it does not answer in `timeout_s`); ServerLost when the agent that took
        the call went away. Log lines and begin requests are handled on this thread."""
        call = Call(op, args)
        with self._lock:
            if not self._online():
                online = False
            else:
                online = True
                self._calls[call.id] = call
                self._queued.append(call)
                waiters, self._waiters = self._waiters, []
        if not online:
            raise DriverError(self.offline_reason())
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        deadline = None if timeout_s is None else self._clock() + timeout_s
        try:
            while True:
                try:
                    message = call.inbox.get(timeout=_SLICE_S)
                except queue.Empty:
                    self._check(call, deadline)
                    continue
                if message.kind == RESULT:
                    return message.payload
                if message.kind == _LOST:
                    raise ServerLost(str(message.payload))
                if message.kind == LOG and log is not None:
                    log(str(message.payload))
                elif message.kind == BEGIN and message.answer is not None:
                    message.answer(begin() if begin is not None else True)
        finally:
            with self._lock:
                self._calls.pop(call.id, None)
                if call in self._queued:
                    self._queued.remove(call)

    def _check(self, call: Call, deadline: float | None) -> None:
        """Raise when the call can no longer be answered."""
        with self._lock:
            online, taken = self._online(), call.session is not None
        if not online:
            if taken:
                raise ServerLost(f"server {self.server}'s agent stopped answering during {call.op}")
            raise DriverError(self.offline_reason())
        if deadline is not None and self._clock() > deadline:
            what = f"server {self.server}'s agent did not answer {call.op} in time"
            raise ServerLost(what) if taken else DriverError(what)
