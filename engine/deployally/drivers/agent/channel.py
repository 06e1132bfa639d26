"""One agent server's calls: queued for its agent's next poll, answered by the agent's messages.

The agent connects out and long-polls (each poll is its heartbeat). A driver call is queued
here, handed to the agent's next poll, and answered by what the agent sends back for it: log
lines, a request to begin changing the server, then the result. Each poll lists the calls the
agent holds (received, result not yet delivered): a call handed out but not listed is handed
out again (its answer was lost on the way; the agent runs a call id once), and a call listed
once and then no longer, without its result, is lost. A call fails at once while the agent is
offline, and with ServerLost once the agent that took it restarted (a new session), stopped
polling, dropped it, or let its bound pass: what it did is then unknown, the deployment waits
and the next sync looks again.

One session at a time: a poll from another session is refused while the current one is
online (two agents with one key), and replaces it once it has been silent for the offline bound.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from deployally.errors import DriverError, ServerLost
from deployally.identity import random_id

OFFLINE_AFTER_BEATS = 3  # heartbeats missed before the agent counts as offline
DEFAULT_HEARTBEAT_S = 10.0
MAX_HEARTBEAT_S = 60.0  # a dead agent counts online for three of these at most
# How long a call handed out may go untaken (no poll lists it) beyond the offline bound:
# room for an agent's poll whose answer was lost to time out (its heartbeat + 15 s) and poll again.
UNTAKEN_GRACE_S = 30.0
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
    handed_at: float | None = None  # when it was first handed to that session
    taken: bool = False  # a poll of that session listed it: the agent holds it
    answered: bool = False  # its result arrived
    inbox: queue.Queue[Message] = field(default_factory=queue.Queue)

    def wire(self) -> dict[str, Any]:
        """The call as a poll answers it (secrets included: only ever to its server's key)."""
        return {"id": self.id, "op": self.op, "args": self.args}


class AnotherAgent(DriverError):
    """A poll from a second agent with the same key while the first is online."""


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
        self.session_from: str | None = None  # the current session's address
        self.session_since: datetime | None = None
        self.heartbeat_s = DEFAULT_HEARTBEAT_S
        self._last_poll: float | None = None
        self.last_seen: datetime | None = None
        self._on_session: list[Callable[[], None]] = []
        self.recorded_at = float("-inf")  # when the API last wrote the agent's last_seen_at

    def __repr__(self) -> str:
        return f"Channel({self.server!r}, session={self.session!r}, online={self.online})"

    # ------------------------------------------------------------ the agent's side (API)

    def heard(
        self, session: str, heartbeat_s: float, *, holds: Collection[str] = (), peer: str | None = None
    ) -> bool:
        """A poll from the agent's `session`, holding the calls `holds`; True when the session is
        new (the agent started). AnotherAgent while a different session is online. Calls an
        earlier session took are lost (that agent is gone), and so are calls this session held
        before and holds no more without having answered them."""
        with self._lock:
            new = session != self.session
            if new and self.session is not None and self._online():
                since = self.session_since.strftime("%Y-%m-%dT%H:%M:%SZ") if self.session_since else "?"
                raise AnotherAgent(
                    f"another agent with this key is polling from {self.session_from or 'an unknown address'}"
                    f" since {since}; stop it or rotate the key (`deployally server rotate-key"
                    f" {self.server}`)"
                )
            held = set(holds)
            for call in self._calls.values():
                if call.session is None or call.answered:
                    continue
                if new:
                    call.answered = True  # nothing more comes for it
                    call.inbox.put(Message(_LOST, f"server {self.server}'s agent restarted during {call.op}"))
                elif call.session != session:
                    continue
                elif call.id in held:
                    call.taken = True
                elif call.taken:
                    call.answered = True  # nothing more comes for it
                    call.inbox.put(Message(
                        _LOST, f"server {self.server}'s agent dropped {call.op} without its result reaching"
                        " the engine"))
            if new:
                self.session = session
                self.session_from = peer
                self.session_since = datetime.now(UTC)
            self.heartbeat_s = min(heartbeat_s, MAX_HEARTBEAT_S)
            self._last_poll = self._clock()
            self.last_seen = datetime.now(UTC)
            hooks = list(self._on_session) if new else []
        for hook in hooks:
            hook()
        return new

    def take(self, session: str) -> list[Call]:
        """The queued calls, handed to `session`, and those it was handed that no poll of it has
        listed yet (their answer may have been lost); none to a session that is not the current one."""
        with self._lock:
            if session != self.session:
                return []
            again = [
                c for c in self._calls.values()
                if c.session == session and not c.taken and not c.answered
            ]
            calls = list(self._queued)
            self._queued.clear()
            now = self._clock()
            for call in calls:
                call.session, call.handed_at = session, now
            return again + calls

    def wait_for_calls(self) -> Future[None]:
        """A future done as soon as a call is queued (at once if one is)."""
        waiter: Future[None] = Future()
        with self._lock:
            self._waiters = [w for w in self._waiters if not w.done()]  # polls that timed out
            if self._queued or any(
                c.session == self.session and not c.taken and not c.answered for c in self._calls.values()
            ):
                waiter.set_result(None)
            else:
                self._waiters.append(waiter)
        return waiter

    def send(self, call_id: str, session: str, message: Message) -> bool:
        """Pass the agent's `message` to the waiting call; False when no such call waits for
        that session (it ended, or another session took it)."""
        with self._lock:
            call = self._calls.get(call_id)
            if call is None or call.session != session or call.answered:
                return False
            if message.kind == RESULT:
                call.answered = True
            call.inbox.put(message)
            return True

    def on_session(self, hook: Callable[[], None]) -> None:
        """Call `hook` whenever an agent session begins (the agent came online)."""
        with self._lock:
            self._on_session.append(hook)

    def off_session(self, hook: Callable[[], None]) -> None:
        """Stop calling `hook` (added by on_session)."""
        with self._lock:
            if hook in self._on_session:
                self._on_session.remove(hook)

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
        deadline = None if timeout_s is None else self._clock() + timeout_s
        try:
            for waiter in waiters:
                # The poll's timeout may cancel its future meanwhile (on the event loop):
                # that poll is over, and the next one takes the call.
                with contextlib.suppress(InvalidStateError):
                    waiter.set_result(None)
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
            untaken_s = self.heartbeat_s * OFFLINE_AFTER_BEATS + UNTAKEN_GRACE_S
            lost_on_the_way = (
                taken and not call.taken and call.handed_at is not None
                and self._clock() - call.handed_at > untaken_s
            )
        if not online:
            if taken:
                raise ServerLost(f"server {self.server}'s agent stopped answering during {call.op}")
            raise DriverError(self.offline_reason())
        if lost_on_the_way:
            raise ServerLost(
                f"server {self.server}'s agent polls but did not receive {call.op} in {untaken_s:g}s"
                " (a proxy between it and the engine dropping answers?)"
            )
        if deadline is not None and self._clock() > deadline:
            what = f"server {self.server}'s agent did not answer {call.op} in time"
            raise ServerLost(what) if taken else DriverError(what)
