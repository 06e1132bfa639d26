"""Waiting for a started container to be ready: healthy, or still running after a settle time.

Reads only Docker's inspect documents, through the `inspect` callable the driver passes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from deployally.drivers.base import Log

POLL_S = 0.25


class NotReady(Exception):
    """A container did not come up; the message is the reason shown to the user."""


def wait_ready(
    inspect: Callable[[], dict[str, Any]],
    *,
    has_healthcheck: bool,
    health_timeout_s: float,
    settle_s: float,
    log: Log,
) -> None:
    """Return when the container is healthy (or still running after settle_s); else NotReady."""
    began = time.monotonic()
    if has_healthcheck:
        log(f"waiting for health (timeout {health_timeout_s:g}s)")
        deadline = began + health_timeout_s
    else:
        log(f"waiting {settle_s:g}s to see it keeps running")
        deadline = began + settle_s
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
        time.sleep(POLL_S)


def raise_if_down(info: dict[str, Any]) -> None:
    """NotReady when the container has exited, or exited and was restarted by its policy."""
    state = info["State"]
    if not state.get("Running") or state.get("Restarting") or info.get("RestartCount"):
        raise NotReady(f"container exited with code {state.get('ExitCode')}")
