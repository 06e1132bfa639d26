"""The engine's status: ok, or degraded with the reason after a failed sync or fetch, or
while a sync runs far longer than it may."""

from __future__ import annotations

from dataclasses import replace

from deployally.serve.loop import SyncLoop
from deployally.types import EngineStatus, SyncSnapshot

# When /health calls a running sync stuck. Reading and rendering are bounded (each render by
# its CPU budget) and get a minute. Each change the sync applies may wait the health
# timeout for its new container and once more for the old one put back, plus a minute for
# pulls, stops and Docker calls (each of those times out at 60 s). Changes are counted one
# after another, the worst case of a depends_on chain, so an honest sync is never stuck.
READ_AND_RENDER_S = 60.0
PER_CHANGE_S = 60.0


def stuck_after_s(sync: SyncSnapshot) -> float:
    """How long this sync may run before /health reports it stuck."""
    return READ_AND_RENDER_S + sync.changes * (2 * sync.health_timeout_s + PER_CHANGE_S)


def engine_status(
    sync_loop: SyncLoop,
    *,
    fetch_error: str | None,
    watching: bool,
    docker_events: bool,
    mirror: str | None,
    sync: SyncSnapshot | None = None,
) -> EngineStatus:
    """What `deployally serve` reports: syncs so far, the last one, the running one, and why
    degraded."""
    reasons = []
    if sync is not None:
        sync = replace(sync, stuck_after_s=stuck_after_s(sync))
        if sync.running_s > sync.stuck_after_s:
            latest = f" (last: {sync.last})" if sync.last else ""
            reasons.append(
                f"a sync has run for {sync.running_s:.0f} s, longer than the "
                f"{sync.stuck_after_s:.0f} s a sync of {sync.changes} change(s) may take; "
                f"it is {sync.doing}{latest}"
            )
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
        sync=sync,
    )
