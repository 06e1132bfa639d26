"""Waiting for a started container, driven by plain inspect documents."""

from __future__ import annotations

import time
from typing import Any

import pytest

from deployally.drivers.local.container_config import check_interval_s
from deployally.drivers.local.readiness import NotReady, raise_if_down, wait_ready


def _wait(info: dict[str, Any], *, has_healthcheck: bool = True) -> list[str]:
    lines: list[str] = []
    wait_ready(
        lambda: info,
        has_healthcheck=has_healthcheck,
        health_timeout_s=60,
        settle_s=0,
        log=lines.append,
    )
    return lines


def test_returns_once_healthy() -> None:
    lines = _wait({"State": {"Running": True, "Health": {"Status": "healthy"}}})
    assert lines[-1].startswith("healthy after")


def test_unhealthy_fails_with_the_last_check_output() -> None:
    info = {
        "State": {
            "Running": True,
            "Health": {"Status": "unhealthy", "Log": [{"Output": "connection refused\n"}]},
        }
    }
    with pytest.raises(NotReady, match="unhealthy: connection refused"):
        _wait(info)


def test_without_healthcheck_running_after_settle_is_ready() -> None:
    lines = _wait({"State": {"Running": True}}, has_healthcheck=False)
    assert lines[-1].startswith("running after")


def test_an_exited_or_restarted_container_is_down() -> None:
    with pytest.raises(NotReady, match="exited with code 3"):
        raise_if_down({"State": {"Running": False, "ExitCode": 3}})
    with pytest.raises(NotReady):
        raise_if_down({"State": {"Running": True}, "RestartCount": 1})
    raise_if_down({"State": {"Running": True}, "RestartCount": 0})


def test_health_is_not_asked_for_before_the_first_check_can_have_run() -> None:
    """Docker runs the first check one interval after the start: until then one inspect (for
    an exit at once) is all the wait costs the Docker engine."""
    began = time.monotonic()
    calls: list[float] = []

    def inspect() -> dict[str, Any]:
        calls.append(time.monotonic() - began)
        status = "healthy" if calls[-1] >= 0.6 else "starting"
        return {"State": {"Running": True, "Health": {"Status": status}}}

    wait_ready(inspect, has_healthcheck=True, health_timeout_s=30, settle_s=0, log=lambda _: None,
               check_interval_s=0.6)
    assert len(calls) == 2 and calls[1] >= 0.6, calls


def test_without_a_healthcheck_the_settle_wait_looks_twice_a_second() -> None:
    calls: list[int] = []

    def inspect() -> dict[str, Any]:
        calls.append(1)
        return {"State": {"Running": True}}

    wait_ready(inspect, has_healthcheck=False, health_timeout_s=30, settle_s=1.0,
               log=lambda _: None)
    assert len(calls) <= 3, len(calls)


def test_a_healthcheck_interval_is_read_back_from_docker() -> None:
    second = 1_000_000_000
    assert check_interval_s({"Config": {"Healthcheck": {"Test": ["CMD", "true"],
                                                        "Interval": 2 * second}}}) == 2.0
    assert check_interval_s({"Config": {"Healthcheck": {"Test": ["CMD", "true"]}}}) == 30.0
    assert check_interval_s({"Config": {"Healthcheck": {"Test": ["NONE"]}}}) is None
    assert check_interval_s({"Config": {}}) is None
