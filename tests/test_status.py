"""The engine's part of /health: a sync that runs far longer than it may is reported stuck."""

from __future__ import annotations

from typing import Any

from deployally.api.views import engine_status_from_view, engine_status_view
from deployally.serve.loop import SyncLoop
from deployally.serve.status import engine_status, stuck_after_s
from deployally.sync.activity import SyncActivity
from deployally.types import SyncSnapshot


def status(sync: SyncSnapshot | None) -> dict[str, Any]:
    """The engine's check in /api/v1/health for this running sync."""
    loop = SyncLoop(lambda: None)
    typed = engine_status(
        loop, fetch_error=None, watching=True, docker_events=True, mirror=None, sync=sync
    )
    view = engine_status_view(typed)
    assert engine_status_from_view(view).sync == typed.sync  # what a client reads back
    return view


def snapshot(running_s: float, changes: int = 1) -> SyncSnapshot:
    return SyncSnapshot(
        running_s=running_s,
        doing="applying 1 change(s) on server local",
        last="web: revision 3 deployed",
        changes=changes,
        health_timeout_s=30.0,
    )


def test_the_bound_grows_with_the_changes_and_the_health_timeout() -> None:
    # A minute to read and render, then per change twice the health timeout and a minute.
    assert stuck_after_s(snapshot(0, changes=0)) == 60
    assert stuck_after_s(snapshot(0, changes=3)) == 60 + 3 * (2 * 30 + 60)


def test_a_sync_within_its_bound_is_ok_and_says_what_it_does() -> None:
    body = status(snapshot(100.0))
    assert body["status"] == "ok" and "reason" not in body
    assert body["sync"] == {
        "running_s": 100.0,
        "doing": "applying 1 change(s) on server local",
        "last": "web: revision 3 deployed",
        "changes": 1,
        "health_timeout_s": 30.0,
        "stuck_after_s": 180.0,
    }


def test_a_sync_past_its_bound_is_degraded_naming_how_long_and_what_it_does() -> None:
    body = status(snapshot(400.0))
    assert body["status"] == "degraded"
    assert body["reason"] == (
        "a sync has run for 400 s, longer than the 180 s a sync of 1 change(s) may take; "
        "it is applying 1 change(s) on server local (last: web: revision 3 deployed)"
    )


def test_no_sync_running_reports_none() -> None:
    activity = SyncActivity()
    assert activity.snapshot() is None and "sync" not in status(None)
    activity.begin("waiting for the sync lock")
    activity.now("applying 2 change(s) on server local", changes=2, health_timeout_s=5.0)
    activity.note("a: revision 1 deployed")
    now = activity.snapshot()
    assert now is not None and (now.changes, now.health_timeout_s, now.last) == (
        2, 5.0, "a: revision 1 deployed"
    )
    activity.end()
    assert activity.snapshot() is None
