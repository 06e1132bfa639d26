"""The engine's status: ok, or degraded with the reason after a failed sync or fetch."""

from __future__ import annotations

from deployally.serve.loop import SyncLoop
from deployally.types import EngineStatus


def engine_status(
    sync_loop: SyncLoop,
    *,
    fetch_error: str | None,
    watching: bool,
    docker_events: bool,
    mirror: str | None,
) -> EngineStatus:
    """What `deployally serve` reports: syncs so far, the last one, and why degraded."""
    reasons = []
    if sync_loop.last_error:
        reasons.append(f"the last {sync_loop.failures} sync(s) failed: {sync_loop.last_error}")
    if fetch_error:
        reasons.append(f"fetching the remote failed: {fetch_error}")
    last = sync_loop.last_outcome
    for server, cause in (last.report.unreachable if last else {}).items():
        reasons.append(f"server {server} is unreachable: {cause}")
    return EngineStatus(
        syncs=sync_loop.syncs,
        syncing=sync_loop.running,
        failures=sync_loop.failures,
        last_sync_at=sync_loop.last_finished_at,
        last_sync_commit=last.report.commit if last else None,
        last_sync_result=sync_loop.last_result,
        last_sync_seconds=sync_loop.last_seconds,
        watching=watching,
        docker_events=docker_events,
        mirror=mirror,
        reasons=tuple(reasons),
    )
