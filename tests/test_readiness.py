"""Waiting for a started container, driven by plain inspect documents."""

from __future__ import annotations

from typing import Any

import pytest

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
