"""The engine's part of /api/v1/health: ok, or degraded with the reason after a failed sync or fetch."""

from __future__ import annotations

from typing import Any

from deployally.serve.loop import SyncLoop


def engine_status(
    sync_loop: SyncLoop,
    *,
    fetch_error: str | None,
    watching: bool,
    docker_events: bool,
    mirror: str | None,
) -> dict[str, Any]:
    """What `deployally serve` reports under `checks.engine`: syncs so far, the last one, and why degraded."""
    reasons = []
    if sync_loop.last_error:
        reasons.append(f"the last {sync_loop.failures} sync(s) failed: {sync_loop.last_error}")
    if fetch_error:
        reasons.append(f"fetching the remote failed: {fetch_error}")
    last = sync_loop.last_outcome
    out: dict[str, Any] = {
        "status": "degraded" if reasons else "ok",
        "syncs": sync_loop.syncs,
        "syncing": sync_loop.running,
        "last_sync_at": sync_loop.last_finished_at.isoformat().replace("+00:00", "Z")
        if sync_loop.last_finished_at
        else None,
        "last_sync_commit": last.report.commit if last else None,
        "watching": watching,
        "docker_events": docker_events,
        "mirror": mirror,
    }
    if reasons:
        out["reason"] = "; ".join(reasons)
    return out
