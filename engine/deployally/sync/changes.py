"""What a tree changes in the definitions' records, and why: desired_step. Pure.

The intake runs it on what a commit touched and records the result; `deployally
plan` runs it on a whole tree and records nothing, so both see the same records,
statuses and reasons.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from deployally.errors import ValidationError
from deployally.identity import definition_id
from deployally.model import desired as desired_mod
from deployally.model.definitions import public_params
from deployally.model.engine_config import EngineConfig
from deployally.plan.diff import diff_specs
from deployally.types import (
    ContainerSpec,
    DefinitionRecord,
    DefinitionStatus,
    Reason,
    ReasonKind,
)


@dataclass(frozen=True)
class CommitNote:
    """What a reason says of where a change comes from: a commit, or a tree being previewed."""

    sha: str | None
    label: str  # a short sha, or a directory
    summary: str
    rollback: bool = False


@dataclass(frozen=True)
class DesiredStep:
    """What one tree changes in the definitions' records; `desired_step` makes it, pure."""

    upserts: tuple[DefinitionRecord, ...] = ()
    deleted: tuple[DefinitionRecord, ...] = ()  # gone before they were ever deployed
    reasons: Mapping[str, Reason] = field(default_factory=dict)
    before: Mapping[str, ContainerSpec | None] = field(default_factory=dict)
    events: tuple[tuple[str, DefinitionRecord], ...] = ()  # definition.* webhooks, in order
    errors: tuple[ValidationError, ...] = ()


def desired_step(
    state: desired_mod.DesiredState,
    gone: list[DefinitionRecord],
    *,
    old: Callable[[str], DefinitionRecord | None],
    at_path: Callable[[str], DefinitionRecord | None],
    latest_number: Callable[[str], int | None],
    note: CommitNote,
    touched: frozenset[str],
    now: datetime,
    engine: EngineConfig | None = None,
) -> DesiredStep:
    """The records `state` leads to: new specs, refused files keeping their old spec, removals.

    `old` finds a definition's record by name and `at_path` by file; `latest_number`
    is a definition's newest revision number; `gone` comes from removals.gone; `engine`
    is the engine's configuration when it changed since the last sync (a reason too).
    """
    upserts: list[DefinitionRecord] = []
    deleted: list[DefinitionRecord] = []
    reasons: dict[str, Reason] = {}
    before: dict[str, ContainerSpec | None] = {}
    events: list[tuple[str, DefinitionRecord]] = []
    errors: list[ValidationError] = []
    for name, d in state.ok.items():
        prev = old(name)
        # A new min_ready alone is no new spec: it gates the next rollout, restarts nothing.
        respec = (
            prev is None or prev.desired is None
            or prev.desired.rendered_hash != d.spec.rendered_hash
        )
        record = DefinitionRecord(
            id=d.definition.id,
            name=name,
            path=d.definition.path,
            template_id=d.template.id,
            server_id=d.definition.server,
            profile=d.definition.profile,
            status=DefinitionStatus.PENDING if respec or prev is None else _settled(prev),
            current_revision=latest_number(d.definition.id) or 1,
            applied_revision=prev.applied_revision if prev else None,
            desired=d.spec,
            applied_hash=prev.applied_hash if prev else None,
            depends_files=d.depends_files,
            params=public_params(d.definition),
            last_error=None,
            operator_stopped=prev.operator_stopped if prev else False,
            created_at=prev.created_at if prev else now,
            updated_at=now,
            # Kept as it is: whether it still holds is decided by the spec and the revision.
            unready_hash=prev.unready_hash if prev else None,
            unready_revision=prev.unready_revision if prev else None,
        )
        if prev is not None and replace(prev, updated_at=now) == record:
            continue
        upserts.append(record)
        if respec:
            before[name] = prev.desired if prev else None
            reasons[name] = _reason(note, d, before[name], touched, engine)
        if prev is None or d.definition.path in touched:
            events.append(("definition.created" if prev is None else "definition.updated", record))
    for path, path_errors in state.invalid.items():
        errors.extend(path_errors)
        known = state.invalid_names.get(path)
        prev = old(known) if known else at_path(path)
        message = "; ".join(str(e) for e in path_errors)
        if prev is not None:
            upserts.append(
                replace(prev, status=DefinitionStatus.INVALID, last_error=message, updated_at=now)
            )
        elif known is not None:
            number = latest_number(definition_id(known)) or 1
            upserts.append(_invalid_record(known, path, message, number, now))
    errors.extend(state.errors)
    for record in gone:
        if record.desired is None and record.applied_hash is None:
            deleted.append(record)  # never deployed: nothing to remove
            continue
        # The record goes once its instance is removed; until then plan sees it as absent.
        upserts.append(replace(record, desired=None, updated_at=now))
        reasons[record.name] = Reason(
            ReasonKind.REMOVED, f"{record.name} is no longer defined in {note.label}", note.sha
        )
        events.append(("definition.deleted", record))
    return DesiredStep(
        tuple(upserts), tuple(deleted), reasons, before, tuple(events), tuple(errors)
    )


def _settled(old: DefinitionRecord) -> DefinitionStatus:
    """The status a definition returns to when its spec did not change."""
    if old.operator_stopped:
        return DefinitionStatus.STOPPED
    if old.desired is not None and old.applied_hash == old.desired.rendered_hash:
        return DefinitionStatus.ACTIVE
    return DefinitionStatus.PENDING


def _reason(
    note: CommitNote,
    d: desired_mod.DesiredDefinition,
    before: ContainerSpec | None,
    touched: frozenset[str],
    engine: EngineConfig | None = None,
) -> Reason:
    """Name the change that caused a deployment: file, template, config file, rollback, or
    the engine's configuration (`engine`, when it changed since the last sync)."""
    changes = diff_specs(before, d.spec)
    head, short, summary = note.sha, note.label, note.summary
    if before is None:
        return Reason(ReasonKind.NEW, f"{d.definition.path} added in {short} ({summary})", head, changes)
    if note.rollback:
        return Reason(ReasonKind.ROLLBACK, f"rolled back in {short} ({summary})", head, changes)
    if d.definition.path in touched:
        return Reason(ReasonKind.DEFINITION, f"{d.definition.path} changed in {short} ({summary})", head, changes)
    files = sorted(touched.intersection(d.depends_files))
    if files:
        return Reason(ReasonKind.CONFIG_FILE, f"{', '.join(files)} changed in {short} ({summary})", head, changes)
    if changes and all(c.field.startswith("secrets.") for c in changes):
        names = ", ".join(c.field.removeprefix("secrets.") for c in changes)
        return Reason(ReasonKind.SECRET, f"secret {names} has a new version", head, changes)
    if desired_mod.SETTINGS_PATH in touched:
        return Reason(ReasonKind.DEFINITION, f"{desired_mod.SETTINGS_PATH} changed in {short} ({summary})", head, changes)
    if engine is not None and changes and all(c.field.endswith(".host_ip") for c in changes):
        where = engine.path or "the engine's default configuration"
        return Reason(
            ReasonKind.ENGINE_CONFIG,
            f"published ports now listen on {engine.publish_address} (publish_address of {where})",
            head,
            changes,
        )
    return Reason(
        ReasonKind.TEMPLATE,
        f"template {d.template.taxonomy.path} is now {d.template.spec_hash[:19]}",
        head,
        changes,
    )


def _invalid_record(
    name: str, path: str, message: str, revision: int, now: datetime
) -> DefinitionRecord:
    """A definition that has never validated: listed, with its error, and nothing deployed."""
    return DefinitionRecord(
        id=definition_id(name),
        name=name,
        path=path,
        template_id="",
        server_id="local",
        profile="",
        status=DefinitionStatus.INVALID,
        current_revision=revision,
        applied_revision=None,
        desired=None,
        applied_hash=None,
        depends_files=(),
        params={},
        last_error=message,
        operator_stopped=False,
        created_at=now,
        updated_at=now,
    )
