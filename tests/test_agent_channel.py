"""The agent channel's own logic, driven directly (the agent's polls as the API passes them on):
a call whose poll answer was lost is handed out again, a dropped call or one never taken ends
(the deployment waits), one session at a time, the poll's timeout racing a new call.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

import pytest

from conftest import wait_until
from deployally.drivers.agent.channel import (
    MAX_HEARTBEAT_S,
    OFFLINE_AFTER_BEATS,
    RESULT,
    UNTAKEN_GRACE_S,
    AnotherAgent,
    Channel,
    Message,
)
from deployally.errors import ServerLost

WAIT_S = 30.0  # a bound on waiting, never an expectation of speed
HEARTBEAT_S = 1.0


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Caller:
    """One `channel.call` on a thread of its own, its result or error kept."""

    def __init__(self, channel: Channel, op: str = "apply", timeout_s: float | None = None) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(channel, op, timeout_s), daemon=True)
        self.thread.start()

    def _run(self, channel: Channel, op: str, timeout_s: float | None) -> None:
        try:
            self.value = channel.call(op, {}, timeout_s=timeout_s)
        except BaseException as exc:  # noqa: BLE001 - kept for the test to look at
            self.error = exc

    def join(self) -> None:
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive(), "the call never ended"


def _taken(channel: Channel, session: str) -> list[str]:
    """The ids of the calls a poll of `session` is answered with, once one is queued."""
    channel.wait_for_calls().result(timeout=WAIT_S)
    return [c.id for c in channel.take(session)]


def test_a_call_whose_poll_answer_was_lost_is_handed_out_again_and_answered() -> None:
    channel = Channel("edge")
    channel.heard("session_a", HEARTBEAT_S)
    caller = Caller(channel)
    (first,) = _taken(channel, "session_a")
    # The answer never reached the agent: its next poll holds nothing, and gets the call again.
    channel.heard("session_a", HEARTBEAT_S, holds=[])
    assert _taken(channel, "session_a") == [first]
    channel.heard("session_a", HEARTBEAT_S, holds=[first])
    assert channel.take("session_a") == []  # held now: not handed out a third time
    assert channel.send(first, "session_a", Message(RESULT, {"ok": True, "value": 7}))
    caller.join()
    assert caller.error is None and caller.value == {"ok": True, "value": 7}


def test_a_call_the_agent_held_and_dropped_without_its_result_ends_lost() -> None:
    channel = Channel("edge")
    channel.heard("session_a", HEARTBEAT_S)
    caller = Caller(channel)
    (call_id,) = _taken(channel, "session_a")
    channel.heard("session_a", HEARTBEAT_S, holds=[call_id])
    channel.heard("session_a", HEARTBEAT_S, holds=[])  # its result never came, and it is gone
    caller.join()
    assert isinstance(caller.error, ServerLost)
    assert "dropped apply" in str(caller.error)


def test_a_call_never_taken_by_a_polling_agent_ends_lost_after_its_bound() -> None:
    clock = Clock()
    channel = Channel("edge", clock=clock)
    channel.heard("session_a", HEARTBEAT_S)
    caller = Caller(channel)
    _taken(channel, "session_a")
    # The agent keeps polling (online) but every answer holding the call is lost on the way.
    bound = HEARTBEAT_S * OFFLINE_AFTER_BEATS + UNTAKEN_GRACE_S
    for _ in range(int(bound / HEARTBEAT_S) + 2):
        clock.now += HEARTBEAT_S
        channel.heard("session_a", HEARTBEAT_S, holds=[])
    caller.join()
    assert isinstance(caller.error, ServerLost)
    assert "did not receive apply" in str(caller.error)


def test_a_second_session_is_refused_while_the_first_is_online_and_replaces_it_once_silent() -> None:
    clock = Clock()
    channel = Channel("edge", clock=clock)
    channel.heard("session_a", HEARTBEAT_S, peer="10.0.0.1")
    with pytest.raises(AnotherAgent) as refused:
        channel.heard("session_b", HEARTBEAT_S, peer="10.0.0.2")
    assert "another agent with this key is polling from 10.0.0.1 since" in str(refused.value)
    assert "rotate-key edge" in str(refused.value)
    assert channel.session == "session_a" and channel.online
    clock.now += HEARTBEAT_S * OFFLINE_AFTER_BEATS + 1  # session_a went silent: a restart takes over
    assert channel.heard("session_b", HEARTBEAT_S, peer="10.0.0.2")
    assert channel.session == "session_b"


def test_a_huge_heartbeat_counts_for_no_more_than_the_bound() -> None:
    clock = Clock()
    channel = Channel("edge", clock=clock)
    channel.heard("session_a", 3600.0)
    clock.now += MAX_HEARTBEAT_S * OFFLINE_AFTER_BEATS + 1
    assert not channel.online


class CancelledWhileLookedAt(Future[None]):
    """A poll's future that its timeout cancels just as a new call looks at it (the event loop
    and the driver's thread interleaving)."""

    def done(self) -> bool:
        answer = super().done()
        self.cancel()
        return answer


def test_a_poll_timing_out_as_a_call_is_queued_neither_breaks_the_call_nor_leaves_it_queued() -> None:
    channel = Channel("edge")
    channel.heard("session_a", HEARTBEAT_S)
    channel._waiters.append(CancelledWhileLookedAt())  # a long poll waiting
    caller = Caller(channel)
    wait_until(lambda: channel._calls, WAIT_S, "the call queued")
    (call_id,) = _taken(channel, "session_a")  # the next poll takes it
    assert channel.send(call_id, "session_a", Message(RESULT, {"ok": True}))
    caller.join()
    assert caller.error is None and caller.value == {"ok": True}


def test_waiting_for_the_agent_leaves_no_hook_behind() -> None:
    from deployally.drivers.agent.driver import AgentDriver

    driver = AgentDriver("edge", owner="eng_test")
    stream = driver.watch(lambda event: None)
    before = len(driver.channel._on_session)
    for _ in range(3):
        stream.wait_connected(0.01)
    assert len(driver.channel._on_session) == before
    stream.stop()
