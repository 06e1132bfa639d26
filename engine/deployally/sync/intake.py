"""Intake, the sync's producer: new commits -> revisions and desired specs, recorded (source -> model -> render).

Reads only the definitions a change touches, numbers their revisions
(revisions.py), stores their rendered specs, removes what no file defines any
more (removals.py), and says why each changed. A file that does not validate
keeps its last good spec, so nothing running changes because of it. What it
recorded comes back as one frozen `Desired`; `desired_step` is the pure part,
which `deployally plan` runs on a tree without recording anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from deployally.errors import ValidationError
from deployally.identity import content_hash, definition_id
from deployally.model import desired as desired_mod
from deployally.model.catalog import load_builtin
from deployally.model.definitions import public_params
from deployally.model.engine_config import EngineConfig
from deployally.notify.events import definition_event
from deployally.plan.diff import diff_specs
from deployally.source.git import GitRepo
from deployally.source.tree import CommitTree
from deployally.store import Store
from deployally.sync import removals, revisions
from deployally.sync.edits import ROLLBACK_TRAILER
from deployally.types import (
    ChangeSet,
    ContainerSpec,
    DefinitionRecord,
    DefinitionStatus,
    Desired,
    Reason,
    ReasonKind,
    SecretRef,
    SecretVersions,
)

META_ENGINE_CONFIG = "engine_config"  # what of engine.yaml the desired specs were rendered with


def utcnow() -> datetime:
    return datetime.now(UTC)


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


class Intake:
    """Turns the commits since the last sync into revisions and desired specs in the store."""

    def __init__(self, repo: GitRepo, store: Store, engine: EngineConfig | None = None) -> None:
        self.repo = repo
        self.store = store
        self.engine = engine or EngineConfig()  # what the operator allows; read at start

    def __repr__(self) -> str:
        return f"Intake(repo={self.repo!r})"

    def refresh(self, head: str) -> Desired:
        """Read what changed since the last sync; record revisions and the new desired specs."""
        steps: list[DesiredStep] = []
        previous = self.store.get_meta("desired_commit")
        # A force-push and gc can drop the last synced commit: then read everything again.
        lost = previous is not None and not self.repo.has_commit(previous)
        # New built-in templates (an upgrade of DeployAlly) can change any definition.
        fingerprint = builtin_fingerprint()
        # So can the operator's engine.yaml (a publish address, an allowance).
        engine_fingerprint = self.engine.render_fingerprint()
        engine_changed = self.store.get_meta(META_ENGINE_CONFIG) != engine_fingerprint
        full = (
            previous is None
            or lost
            or engine_changed
            or self.store.get_meta("builtin_catalog") != fingerprint
        )
        if previous == head and not full:
            steps += self._refresh_secrets(head)
            return self._desired(head, steps)
        # Revisions: every first-parent commit since the last sync, head included, numbered
        # from git alone. `mounts` follows config-file mounts from commit to commit.
        mounts = {r.path: r.depends_files for r in self.store.definitions()}
        commits = [head] if lost else self.repo.commits_between(previous, head)
        for commit in commits:
            # With the last synced state gone, compare head in full against the stored revisions.
            changes = ChangeSet() if lost else self.repo.changes(self.repo.first_parent(commit), commit)
            state = self._load(commit, None if lost else changes, mounts, for_revisions=True)
            self._record_revisions(commit, changes, state)
            mounts.update({d.definition.path: d.depends_files for d in state.ok.values()})
        # Desired specs: head only, rendered with the secrets as they are now.
        changes = (
            ChangeSet() if lost or previous == head else self.repo.changes(previous, head)
        )
        state = self._load(head, None if full else changes, mounts)
        steps.append(
            self._record_desired(head, changes, state, full=full, engine_changed=engine_changed)
        )
        self.store.set_meta("desired_commit", head)
        self.store.set_meta("builtin_catalog", fingerprint)
        self.store.set_meta(META_ENGINE_CONFIG, engine_fingerprint)
        steps += self._refresh_secrets(head, done=state.files)
        return self._desired(head, steps)

    def _desired(self, head: str, steps: list[DesiredStep]) -> Desired:
        reasons: dict[str, Reason] = {}
        before: dict[str, ContainerSpec | None] = {}
        for step in steps:
            reasons.update(step.reasons)
            before.update({n: s for n, s in step.before.items() if n not in before})
        return Desired(
            commit=head,
            records={r.name: r for r in self.store.definitions()},
            reasons=reasons,
            before=before,
            errors=tuple(e for step in steps for e in step.errors),
            changed=frozenset(reasons),
        )

    def _load(
        self,
        commit: str,
        changes: ChangeSet | None,
        mounts: Mapping[str, tuple[str, ...]],
        *,
        for_revisions: bool = False,
    ) -> desired_mod.DesiredState:
        """Validate and render the definitions a change touches (all of them when None)."""
        tree = CommitTree(self.repo, commit)
        # Revision numbers follow git alone, never whether a secret happens to be set.
        versions = SecretVersions.unchecked() if for_revisions else self.store.available_secrets()
        # Revisions follow git alone; what deploys must name a server that is registered.
        servers = None if for_revisions else self.store.server_keys()
        if changes is None or touches_tree_wide(changes):
            return desired_mod.load(
                tree, secret_versions=versions, engine=self.engine, servers=servers
            )
        paths = affected(changes, mounts)
        state = desired_mod.load(
            tree, secret_versions=versions, only=paths, engine=self.engine, servers=servers
        )
        # A new file may take a name another file still holds: read both, so the
        # duplicate is refused instead of taking over the running container.
        holders = {
            r.path
            for name in state.ok
            if (r := self.store.definition(name)) and r.path and r.path not in paths
        }
        holders = set(tree.read_many(holders))
        if holders:
            state = desired_mod.load(
                tree, secret_versions=versions, only=paths | holders, engine=self.engine,
                servers=servers,
            )
        return state

    def _record_revisions(
        self, commit: str, changes: ChangeSet, state: desired_mod.DesiredState
    ) -> None:
        """Record the revisions one commit makes."""
        refused = [p for p in state.invalid_names if p in changes.paths()]
        for revision in revisions.new_revisions(
            commit,
            changes,
            state,
            invalid_texts=self._texts(commit, refused),
            records=self.store.definitions(),
            latest=self.store.latest_revision,
            now=utcnow(),
        ):
            self.store.add_revision(revision)

    def _texts(self, commit: str, paths: list[str]) -> dict[str, str]:
        """The texts of `paths` at `commit`; a file that is not text counts as empty."""
        found = CommitTree(self.repo, commit).read_many(paths) if paths else {}
        return {p: t if isinstance(t, str) else "" for p, t in found.items()}

    def _record_desired(
        self,
        head: str,
        changes: ChangeSet,
        state: desired_mod.DesiredState,
        *,
        full: bool,
        engine_changed: bool = False,
    ) -> DesiredStep:
        """Store the new desired specs and removals of `state` at head, with their events."""
        info = self.repo.commit_info(head)
        note = CommitNote(head, head[:12], info.summary, rollback=ROLLBACK_TRAILER in info.message)
        touched = changes.paths()
        records = self.store.definitions()
        maybe = removals.suspects(
            records,
            desired_mod.definition_paths(CommitTree(self.repo, head)),  # one ls-tree, no reads
            touched,
            removals.names_at(state),
        )
        gone = removals.gone(maybe, state if full else self._whole(head)) if maybe else []
        by_name = {r.name: r for r in records}
        step = desired_step(
            state,
            gone,
            old=by_name.get,
            at_path={r.path: r for r in records}.get,
            latest_number=self._latest_number,
            note=note,
            touched=touched,
            now=utcnow(),
            engine=self.engine if engine_changed else None,
        )
        for record in step.upserts:
            self.store.upsert_definition(record)
        for record in step.deleted:
            self.store.delete_definition(record.id)
        for event, record in step.events:
            self.store.enqueue_event(
                event, definition_event(record, head, self.store.server_id(record.server_id))
            )
        return step

    def _whole(self, head: str) -> desired_mod.DesiredState:
        # Whether a name moved to another file needs every file: read them all (only now,
        # when something may have gone, and without secrets: this is about names).
        return desired_mod.load(
            CommitTree(self.repo, head),
            secret_versions=SecretVersions.unchecked(),
            engine=self.engine,
        )

    def _latest_number(self, def_id: str) -> int | None:
        latest = self.store.latest_revision(def_id)
        return latest.number if latest else None

    def _refresh_secrets(self, head: str, done: frozenset[str] = frozenset()) -> list[DesiredStep]:
        """Re-render definitions whose secrets changed, and retry those that did not validate
        (a missing secret may have been set since); `done` were rendered in this sync already."""
        versions = self.store.available_secrets()
        stale = [
            r.path
            for r in self.store.definitions()
            if r.path not in done
            and (r.status is DefinitionStatus.INVALID or _secrets_moved(r, versions))
        ]
        steps = []
        if stale:
            # An invalid one is read again each time: its server may have been registered since.
            state = desired_mod.load(
                CommitTree(self.repo, head), secret_versions=versions, only=stale, engine=self.engine,
                servers=self.store.server_keys(),
            )
            steps.append(self._record_desired(head, ChangeSet(), state, full=False))
        # Versions no revision pins and no spec uses go; a rollback never needs them.
        in_use = {pin for r in self.store.definitions() if r.desired for pin in r.desired.secrets}
        self.store.drop_unused_secret_versions(keep=in_use)
        return steps


# ---------------------------------------------------------------- pure pieces


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
        respec = prev is None or prev.desired is None or prev.desired != d.spec
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


def builtin_fingerprint() -> str:
    """What the built-in catalog is now: its templates' spec hashes."""
    return content_hash(sorted(t.spec_hash for t in load_builtin().all()))


def affected(changes: ChangeSet, mounts: Mapping[str, tuple[str, ...]]) -> set[str]:
    """Definition files a change reaches: themselves, or a config file they mount."""
    touched = changes.paths()
    paths = {p for p in touched if revisions.is_definition(p)}
    paths |= {path for path, files in mounts.items() if touched.intersection(files)}
    return paths


def _secrets_moved(record: DefinitionRecord, versions: SecretVersions) -> bool:
    """Does a secret of this spec render differently now: an unpinned one has a new current
    version, or a pinned one is gone?"""
    if record.desired is None:
        return False
    refs = {v.name: v for v in record.params.values() if isinstance(v, SecretRef)}
    return any(
        versions.version_of(refs.get(name) or SecretRef(name)) != version
        for name, version in record.desired.secrets
    )


def touches_tree_wide(changes: ChangeSet) -> bool:
    """Settings and repo templates can change any definition: reload them all."""
    return any(
        p == desired_mod.SETTINGS_PATH or p.startswith(desired_mod.CATALOG_DIR)
        for p in changes.paths()
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
