"""sync/changes.py: the records a tree leads to, and why, as data (no git, no store, no Docker)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from conftest import DictTree, worker_file
from deployally.model import desired as desired_mod
from deployally.sync.changes import CommitNote, DesiredStep, desired_step
from deployally.types import DefinitionRecord, DefinitionStatus, ReasonKind, SecretVersions

NOW = datetime(2026, 2, 13, tzinfo=UTC)
WEB = "definitions/web.yaml"
NOTE = CommitNote("c" * 40, "cccccccccccc", "Change web")


def state_of(files: dict[str, str]) -> desired_mod.DesiredState:
    return desired_mod.load(DictTree(files), secret_versions=SecretVersions.unchecked())


def recorded(files: dict[str, str], **over: object) -> DefinitionRecord:
    """The record a first sync of `files` leaves for web, applied and running."""
    step = step_of({}, files, touched={WEB})
    (first,) = step.upserts
    applied = replace(
        first, status=DefinitionStatus.ACTIVE, applied_revision=1,
        applied_hash=first.desired.rendered_hash if first.desired else None,
    )
    return replace(applied, **over)  # type: ignore[arg-type]


def step_of(
    old: dict[str, DefinitionRecord],
    files: dict[str, str],
    *,
    touched: set[str],
    gone: list[DefinitionRecord] | None = None,
    note: CommitNote = NOTE,
) -> DesiredStep:
    return desired_step(
        state_of(files),
        gone or [],
        old=old.get,
        at_path={r.path: r for r in old.values()}.get,
        latest_number=lambda _: 3,
        note=note,
        touched=frozenset(touched),
        now=NOW,
    )


V1 = {WEB: worker_file("web", message="one")}
V2 = {WEB: worker_file("web", message="two")}
REFUSED = {WEB: "name: web\ntemplate: no/such/template/1\n"}


def summary(step: DesiredStep) -> tuple[object, ...]:
    """(name, status) upserted, reasons' kinds, events, names deleted."""
    return (
        sorted((r.name, r.status.value) for r in step.upserts),
        {n: r.kind for n, r in step.reasons.items()},
        [(e, r.name) for e, r in step.events],
        [r.name for r in step.deleted],
    )


# case: (old records, files at head, touched, gone, expected summary)
CASES: dict[str, tuple[object, ...]] = {
    "a new definition": (
        {}, V1, {WEB}, [],
        ([("web", "pending")], {"web": ReasonKind.NEW}, [("definition.created", "web")], []),
    ),
    "an unchanged one records nothing": ({"web": recorded(V1)}, V1, {WEB}, [], ([], {}, [], [])),
    "a changed one is pending, with the change as its reason": (
        {"web": recorded(V1)}, V2, {WEB}, [],
        ([("web", "pending")], {"web": ReasonKind.DEFINITION}, [("definition.updated", "web")], []),
    ),
    "a refused file keeps its last good spec": (
        {"web": recorded(V1)}, REFUSED, {WEB}, [], ([("web", "invalid")], {}, [], []),
    ),
    "a refused file never valid is listed as invalid": (
        {}, REFUSED, {WEB}, [], ([("web", "invalid")], {}, [], []),
    ),
    "a removed one waits for its instance to go": (
        {"web": recorded(V1)}, {}, {WEB}, [recorded(V1)],
        ([("web", "active")], {"web": ReasonKind.REMOVED}, [("definition.deleted", "web")], []),
    ),
    "one removed before it was ever deployed is dropped": (
        {}, {}, {WEB}, [recorded(V1, applied_hash=None, desired=None)], ([], {}, [], ["web"]),
    ),
    "a stopped one stays stopped when its spec is unchanged": (
        {"web": recorded(V1, operator_stopped=True, status=DefinitionStatus.ACTIVE)},
        V1, set(), [], ([("web", "stopped")], {}, [], []),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_desired_step_cases(case: str) -> None:
    old, files, touched, gone, expected = CASES[case]
    step = step_of(old, files, touched=touched, gone=gone)  # type: ignore[arg-type]
    assert summary(step) == expected


def test_a_change_carries_the_spec_it_replaces_and_the_field_diff() -> None:
    old = recorded(V1)
    step = step_of({"web": old}, V2, touched={WEB})
    assert step.before == {"web": old.desired}
    reason = step.reasons["web"]
    assert reason.commit == NOTE.sha and "changed in cccccccccccc (Change web)" in reason.summary
    assert [c.field for c in reason.changes] == ["env.MESSAGE"]
    (record,) = step.upserts
    assert record.applied_hash == old.applied_hash and record.current_revision == 3


def test_a_rollback_commit_is_the_reason() -> None:
    step = step_of({"web": recorded(V2)}, V1, touched={WEB}, note=replace(NOTE, rollback=True))
    assert step.reasons["web"].kind is ReasonKind.ROLLBACK


def test_a_refused_file_reports_its_errors_and_keeps_the_spec() -> None:
    old = recorded(V1)
    step = step_of({"web": old}, REFUSED, touched={WEB})
    (record,) = step.upserts
    assert record.desired == old.desired and record.last_error and "template" in record.last_error
    assert [e.path for e in step.errors] == [WEB]
