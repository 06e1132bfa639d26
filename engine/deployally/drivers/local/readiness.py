"""Waiting for a started container to be ready: healthy, or still running after a settle time.

Reads only Docker's inspect documents, through the `inspect` callable the driver passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from deployally.drivers.base import Log

POLL_S = 0.25  # once a health result can have landed
SETTLE_POLL_S = 0.5  # without a healthcheck, only an exit is news


class NotReady(Exception):
    """A container did not come up; the message is the reason shown to the user."""


def wait_ready(
    inspect: Callable[[], dict[str, Any]],
    *,
    has_healthcheck: bool,
    health_timeout_s: float,
    settle_s: float,
    log: Log,
    check_interval_s: float = 0.0,
) -> None:
    """Return when the container is healthy (or still running after settle_s); else NotReady.

    Docker runs a container's first health check one `check_interval_s` after it starts, so
    before then only an exit can be seen: one inspect at once, the next when the check can
    have landed. Each inspect costs the Docker engine CPU that a busy host is short of."""
    began = time.monotonic()
    if has_healthcheck:
        log(f"waiting for health (timeout {health_timeout_s:g}s)")
        deadline = began + health_timeout_s
        first_check = began + check_interval_s
    else:
        log(f"waiting {settle_s:g}s to see it keeps running")
        deadline = began + settle_s
        first_check = began
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
        if time.monotonic() >= deadline:
            if has_healthcheck:
                raise NotReady(f"not healthy after {health_timeout_s:g}s (health: {health})")
            log(f"running after {time.monotonic() - began:.1f}s")
            return
        time.sleep(_pause(time.monotonic(), first_check, deadline, has_healthcheck))


def _pause(now: float, first_check: float, deadline: float, has_healthcheck: bool) -> float:
    """How long to wait before the next inspect: until the first health check can have landed,
    then POLL_S (SETTLE_POLL_S without a healthcheck), never past the deadline."""
    step = POLL_S if has_healthcheck else SETTLE_POLL_S
    wait = max(step, first_check - now)
    return max(0.0, min(wait, deadline - now))


def raise_if_down(info: dict[str, Any]) -> None:
    """NotReady when the container has exited, or exited and was restarted by its policy."""
    state = info["State"]
    if not state.get("Running") or state.get("Restarting") or info.get("RestartCount"):
        raise NotReady(f"container exited with code {state.get('ExitCode')}")
