"""The agent's loop: long-poll the engine (the poll is the heartbeat; the host opens no port),
carry out each call it hands over on this host's local driver, send back log lines and the
result, and post the local driver's instance events.

Each run is a session of its own: a call an earlier run took is lost to the engine, which
waits for the server and looks again at what runs here (after `recover`), so nothing runs twice.
Each poll lists the calls this run holds (received, result not yet delivered): the engine hands
out again a call whose answer was lost on the way, and this run carries out each call id once.
A result is posted until the engine has it, or says it no longer waits, or the run ends.
The secrets a call brings stay in this process's memory; the agent logs no call's arguments.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from deployally import __version__
from deployally.agent.calls import carry_out
from deployally.agent.link import CallGone, EngineLink, EngineUnreachable, KeyRefused, SetupMistake
from deployally.codec import to_json
from deployally.drivers.base import Driver, EventStream
from deployally.identity import random_id
from deployally.logs import fields
from deployally.types import InstanceEvent

log = logging.getLogger("deployally.agent")

HEARTBEAT_S = 10.0
EXIT_KEY_REFUSED = 3  # the engine refused the key: restarting will not help
EXIT_SETUP = 4  # the engine refused the agent's requests (a wrong --url path): fix the setup
WORKERS = 32  # calls carried out at once (health waits are idle; the driver bounds Docker calls)
POLL_GRACE_S = 15.0  # how much longer than the engine holds a poll the agent waits for its answer
RETRY_MAX_S = 10.0  # the longest wait between tries of an engine that does not answer
EVENTS_KEPT = 10_000  # events kept while the engine does not answer; older ones are dropped
EVENT_BATCH = 500
DONE_KEPT = 1000  # ids of calls carried out, so a call handed out again is not run twice
RESULT_TRIES_STOPPING = 3  # tries left for a result once the agent is asked to stop

# Makes the local driver for the server the engine names and the owner id it labels with.
MakeDriver = Callable[[str, str], Driver]


class Agent:
    """One agent session: polls, carries out calls, reports events, until stopped."""

    def __init__(
        self,
        link: EngineLink,
        make_driver: MakeDriver,
        *,
        heartbeat_s: float = HEARTBEAT_S,
        docker_version: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.link = link
        self.heartbeat_s = heartbeat_s
        self.session = random_id("session")
        self._make_driver = make_driver
        self._docker_version = docker_version
        self._driver: Driver | None = None
        self._made_for: tuple[str, str] | None = None  # (server, owner)
        self._stream: EventStream | None = None
        self._events: queue.Queue[InstanceEvent] = queue.Queue(EVENTS_KEPT)
        self._stopping = threading.Event()
        self._refused = threading.Event()  # the key or the requests were refused: nothing more is sent
        self._exit = 0
        self._calls_lock = threading.Lock()
        self._holds: set[str] = set()  # received, result not yet delivered
        self._done: OrderedDict[str, None] = OrderedDict()
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="agent-call")

    def __repr__(self) -> str:
        return f"Agent({self.link!r}, session={self.session})"

    def stop(self) -> None:
        """Stop polling (safe from a signal handler); calls under way finish first."""
        self._stopping.set()

    def run(self) -> int:
        """Poll until stopped: 0, EXIT_KEY_REFUSED when the engine refuses the key, EXIT_SETUP
        when it refuses the agent's requests otherwise (a wrong --url)."""
        sender = threading.Thread(target=self._send_events, name="agent-events", daemon=True)
        sender.start()
        delay, version, connected = 0.5, self._docker_version(), False
        try:
            while not self._stopping.is_set():
                try:
                    answer = self.link.post(
                        "/agent/poll",
                        {"session": self.session, "heartbeat_s": self.heartbeat_s,
                         "agent_version": __version__, "docker_version": version,
                         "holds": self._held()},
                        timeout=self.heartbeat_s + POLL_GRACE_S,
                    )
                except KeyRefused as exc:
                    return self._give_up(str(exc), EXIT_KEY_REFUSED)
                except SetupMistake as exc:
                    return self._give_up(str(exc), EXIT_SETUP)
                except CallGone as exc:  # another agent polls with this key
                    log.error("%s; trying again in %gs", exc, RETRY_MAX_S)
                    connected = False
                    self._stopping.wait(RETRY_MAX_S)
                    continue
                except EngineUnreachable as exc:
                    if connected:
                        log.warning("lost the engine", extra=fields(error=str(exc)))
                    else:
                        log.warning("cannot reach the engine", extra=fields(error=str(exc), retry_s=delay))
                    connected = False
                    self._stopping.wait(delay)
                    delay = min(delay * 2, RETRY_MAX_S)
                    continue
                delay = 0.5
                server = answer.get("server") or {}
                if not connected:
                    connected = True
                    log.info("connected", extra=fields(
                        engine=self.link.url, server=server.get("name"), session=self.session))
                driver = self._driver_for(str(server.get("name")), str(answer.get("owner")))
                if version is None:
                    version = self._docker_version()
                for call in answer.get("calls") or []:
                    if self._receive(str(call.get("id"))):
                        self._pool.submit(self._carry_out, driver, call)
        finally:
            self._pool.shutdown(wait=True, cancel_futures=self._refused.is_set())
            if self._stream is not None:
                self._stream.stop()
        return self._exit

    # ------------------------------------------------------------ pieces

    def _give_up(self, why: str, code: int) -> int:
        """Stop at once: nothing this agent sends will be taken."""
        self._exit = code
        self._refused.set()
        self._stopping.set()
        log.error("%s; stopping (exit %d)", why, code)
        return code

    def _held(self) -> list[str]:
        with self._calls_lock:
            return sorted(self._holds)

    def _receive(self, call_id: str) -> bool:
        """True the first time a call id arrives (the engine hands a call out again when it
        has not heard that this agent holds it)."""
        with self._calls_lock:
            if call_id in self._holds or call_id in self._done:
                return False
            self._holds.add(call_id)
            return True

    def _finished(self, call_id: str) -> None:
        with self._calls_lock:
            self._holds.discard(call_id)
            self._done[call_id] = None
            while len(self._done) > DONE_KEPT:
                self._done.popitem(last=False)

    def _driver_for(self, server: str, owner: str) -> Driver:
        """The local driver for this server and owner (made again should the engine's change)."""
        if self._driver is None or self._made_for != (server, owner):
            if self._stream is not None:
                self._stream.stop()
            self._driver = self._make_driver(server, owner)
            self._made_for = (server, owner)
            self._stream = self._driver.watch(self._heard)
        return self._driver

    def _carry_out(self, driver: Driver, call: dict[str, Any]) -> None:
        """One call: carried out on the local driver, its lines and result sent back."""
        call_id, op = str(call.get("id")), str(call.get("op"))
        args = call.get("args") or {}
        name = (args.get("action") or {}).get("name") or args.get("name")

        def line(text: str) -> None:
            self._reply(call_id, "log", text, tries=1)

        def begin() -> bool:
            answer = self._reply(call_id, "begin", None, tries=3)
            return bool(answer and answer.get("begin"))

        try:
            try:
                result = carry_out(driver, op, args, log=line, begin=begin)
            except Exception:  # a bug must not end the agent: the engine hears of it
                log.exception("call failed", extra=fields(op=op))
                result = {"ok": False, "error": "DriverError", "message": f"the agent failed at {op}"}
            if result.get("ok"):
                if op == "apply":
                    outcome = (result.get("value") or {}).get("status")
                    log.info("call", extra=fields(op=op, definition=name, outcome=outcome))
            else:
                log.warning("call failed", extra=fields(
                    op=op, definition=name, error=result.get("error"), reason=result.get("message")))
            self._reply(call_id, "result", result, tries=None)
        finally:
            self._finished(call_id)

    def _reply(self, call_id: str, kind: str, payload: Any, *, tries: int | None) -> dict[str, Any] | None:
        """Send one message for a call (tries None: until the engine has it, or the run ends);
        None when the engine no longer waits for it or it could not be sent."""
        body = {"session": self.session, "kind": kind, "payload": payload}
        attempt, left_stopping = 0, RESULT_TRIES_STOPPING
        while not self._refused.is_set():
            try:
                return self.link.post(f"/agent/calls/{call_id}", body, timeout=90.0)
            except CallGone:
                return None
            except KeyRefused as exc:
                self._give_up(str(exc), EXIT_KEY_REFUSED)
                return None
            except (EngineUnreachable, SetupMistake) as exc:
                attempt += 1
                if self._stopping.is_set():
                    left_stopping -= 1
                out = (tries is not None and attempt >= tries) or left_stopping <= 0
                if out:
                    log.warning("could not answer the engine", extra=fields(kind=kind, error=str(exc)))
                    return None
                delay = min(0.2 * 2 ** min(attempt, 10), RETRY_MAX_S)
                if self._stopping.is_set():
                    time.sleep(delay)  # the last tries of a stopping agent still wait between them
                else:
                    self._stopping.wait(delay)
        return None

    def _heard(self, event: InstanceEvent) -> None:
        """An instance event of the local driver's (its own thread): posted soon."""
        try:
            self._events.put_nowait(event)
        except queue.Full:
            log.warning("dropping an instance event: the engine has not taken them for long")

    def _send_events(self) -> None:
        """Post the instance events in order, batched, trying again while the engine is away."""
        batch: list[InstanceEvent] = []
        while True:
            if not batch:
                batch.append(self._events.get())
            while len(batch) < EVENT_BATCH:
                try:
                    batch.append(self._events.get_nowait())
                except queue.Empty:
                    break
            try:
                self.link.post(
                    "/agent/events",
                    {"session": self.session, "events": [to_json(e) for e in batch]},
                    timeout=30.0,
                )
                batch = []
            except (EngineUnreachable, KeyRefused, CallGone):
                self._stopping.wait(1.0)
