"""Intake: what new commits mean, recorded — revisions and desired specs (source -> model -> render).

Reads only the definitions a change touches, numbers their revisions, stores
their rendered specs, and says why each changed. A file that does not validate
keeps its last good spec, so nothing running changes because of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from deployally.errors import ValidationError
from deployally.identity import content_hash, definition_id
from deployally.model import desired as desired_mod
from deployally.model.catalog import load_builtin
from deployally.model.definitions import pinned_secrets, public_params
from deployally.model.engine_config import EngineConfig
from deployally.notify.events import definition_event
from deployally.plan.diff import diff_specs
from deployally.source.git import GitRepo
from deployally.source.tree import CommitTree
from deployally.store import Store
from deployally.sync.backoff import Backoff
from deployally.sync.edits import ROLLBACK_TRAILER
from deployally.types import (
    ChangeSet,
    ContainerSpec,
    DefinitionRecord,
    DefinitionStatus,
    Reason,
    ReasonKind,
    Revision,
    SecretRef,
    SecretVersions,
)

META_ENGINE_CONFIG = "engine_config"  # what of engine.yaml the desired specs were rendered with


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Refresh:
    """What the intake found: changed definitions, why they changed, and refused files."""

    reasons: dict[str, Reason] = field(default_factory=dict)
    before: dict[str, ContainerSpec | None] = field(default_factory=dict)  # specs they replace
    errors: list[ValidationError] = field(default_factory=list)


class Intake:
    """Turns the commits since the last sync into revisions and desired specs in the store."""

    def __init__(
        self, repo: GitRepo, store: Store, backoff: Backoff, engine: EngineConfig | None = None
    ) -> None:
        self.repo = repo
        self.store = store
        self.backoff = backoff
        self.engine = engine or EngineConfig()  # what the operator allows; read at start
        self._mounts: dict[str, tuple[str, ...]] = {}  # definition path -> config files it mounts

    def __repr__(self) -> str:
        return f"Intake(repo={self.repo!r})"

    def refresh(self, head: str) -> Refresh:
        """Read what changed since the last sync; record revisions and the new desired specs."""
        refresh = Refresh()
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
            self._refresh_secrets(head, refresh)
            return refresh
        # Revisions: every first-parent commit since the last sync, head included, numbered
        # from git alone. `_mounts` follows config-file mounts from commit to commit.
        self._mounts = {r.path: r.depends_files for r in self.store.definitions()}
        commits = [head] if lost else self.repo.commits_between(previous, head)
        for commit in commits:
            # With the last synced state gone, compare head in full against the stored revisions.
            changes = ChangeSet() if lost else self.repo.changes(self.repo.first_parent(commit), commit)
            state = self._load(commit, None if lost else changes, for_revisions=True)
            self._record_revisions(commit, changes, state)
            self._mounts.update({d.definition.path: d.depends_files for d in state.ok.values()})
        # Desired specs: head only, rendered with the secrets as they are now.
        changes = (
            ChangeSet() if lost or previous == head else self.repo.changes(previous, head)
        )
        state = self._load(head, None if full else changes)
        self._record_desired(head, changes, state, refresh, full=full, engine_changed=engine_changed)
        self.store.set_meta("desired_commit", head)
        self.store.set_meta("builtin_catalog", fingerprint)
        self.store.set_meta(META_ENGINE_CONFIG, engine_fingerprint)
        self._refresh_secrets(head, refresh, done=state.files)
        return refresh

    def _load(
        self, commit: str, changes: ChangeSet | None, *, for_revisions: bool = False
    ) -> desired_mod.DesiredState:
        """Validate and render the definitions a change touches (all of them when None)."""
        tree = CommitTree(self.repo, commit)
        # Revision numbers follow git alone, never whether a secret happens to be set.
        versions = SecretVersions.unchecked() if for_revisions else self.store.available_secrets()
        # Revisions follow git alone; what deploys must name a server that is registered.
        servers = None if for_revisions else self.store.server_keys()
        if changes is None or _touches_tree_wide(changes):
            return desired_mod.load(
                tree, secret_versions=versions, engine=self.engine, servers=servers
            )
        paths = self._affected(changes)
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

    def _affected(self, changes: ChangeSet) -> set[str]:
        """Definition files a change reaches: themselves, or a config file they mount."""
        touched = changes.paths()
        paths = {p for p in touched if _is_definition(p)}
        paths |= {path for path, files in self._mounts.items() if touched.intersection(files)}
        return paths

    def _record_revisions(
        self, commit: str, changes: ChangeSet, state: desired_mod.DesiredState
    ) -> None:
        """A definition's revision N is the Nth commit that changed its desired state."""
        now = utcnow()
        hashes: dict[str, tuple[str, str]] = {
            name: (d.desired_hash, d.definition.path) for name, d in state.ok.items()
        }
        pins = {name: pinned_secrets(d.definition.params) for name, d in state.ok.items()}
        for path, name in state.invalid_names.items():
            if path in changes.paths():
                text = CommitTree(self.repo, commit).read_many([path]).get(path)
                text = text if isinstance(text, str) else ""  # a named file was read as text
                hashes.setdefault(name, (desired_mod.desired_hash(text, "", {}), path))
        for record in self._dropped_in(state, changes):
            hashes.setdefault(record.name, ("", ""))
        for name, (digest, path) in hashes.items():
            def_id = definition_id(name)
            latest = self.store.latest_revision(def_id)
            if latest is not None and latest.desired_hash == digest:
                continue
            if latest is None and digest == "":
                continue
            number = (latest.number if latest else 0) + 1
            self.store.add_revision(
                Revision(def_id, name, number, commit, digest, path, now, pins.get(name, ()))
            )

    def _record_desired(
        self,
        head: str,
        changes: ChangeSet,
        state: desired_mod.DesiredState,
        refresh: Refresh,
        *,
        full: bool,
        engine_changed: bool = False,
    ) -> None:
        """Store the new desired specs; invalid files keep their old spec, so nothing running changes."""
        now = utcnow()
        info = self.repo.commit_info(head)
        rollback = ROLLBACK_TRAILER in info.message
        touched = changes.paths()
        for name, d in state.ok.items():
            old = self.store.definition(name)
            latest = self.store.latest_revision(d.definition.id)
            respec = old is None or old.desired is None or old.desired != d.spec
            record = DefinitionRecord(
                id=d.definition.id,
                name=name,
                path=d.definition.path,
                template_id=d.template.id,
                server_id=d.definition.server,
                profile=d.definition.profile,
                status=DefinitionStatus.PENDING if respec or old is None else _settled(old),
                current_revision=latest.number if latest else 1,
                applied_revision=old.applied_revision if old else None,
                desired=d.spec,
                applied_hash=old.applied_hash if old else None,
                depends_files=d.depends_files,
                params=public_params(d.definition),
                last_error=None,
                operator_stopped=old.operator_stopped if old else False,
                created_at=old.created_at if old else now,
                updated_at=now,
            )
            if old is not None and replace(old, updated_at=now) == record:
                continue
            self.store.upsert_definition(record)
            if respec:
                before = old.desired if old else None
                refresh.before[name] = before
                refresh.reasons[name] = _reason(
                    head, info.summary, d, before, touched, rollback=rollback,
                    engine=self.engine if engine_changed else None,
                )
                self.backoff.forget(name)
            if old is None or d.definition.path in touched:
                self.store.enqueue_event(
                    "definition.created" if old is None else "definition.updated",
                    definition_event(record, head, self.store.server_id(record.server_id)),
                )
        for path, errors in state.invalid.items():
            refresh.errors.extend(errors)
            known = state.invalid_names.get(path)
            old = self.store.definition(known) if known else self._record_at_path(path)
            message = "; ".join(str(e) for e in errors)
            if old is not None:
                self.store.upsert_definition(
                    replace(old, status=DefinitionStatus.INVALID, last_error=message, updated_at=now)
                )
            elif known is not None:
                latest = self.store.latest_revision(definition_id(known))
                self.store.upsert_definition(
                    _invalid_record(known, path, message, latest.number if latest else 1, now)
                )
        refresh.errors.extend(state.errors)
        for record in self._gone(head, state, changes, full=full):
            self.backoff.forget(record.name)  # a removal never waits behind a failed update
            if record.desired is None and record.applied_hash is None:
                self.store.delete_definition(record.id)  # never deployed: nothing to remove
                continue
            # The record goes once its container is removed; until then plan sees it as absent.
            self.store.upsert_definition(replace(record, desired=None, updated_at=now))
            refresh.reasons[record.name] = Reason(
                ReasonKind.REMOVED, f"{record.name} is no longer defined in {head[:12]}", head
            )
            self.store.enqueue_event(
                "definition.deleted",
                definition_event(record, head, self.store.server_id(record.server_id)),
            )

    def _gone(
        self, head: str, state: desired_mod.DesiredState, changes: ChangeSet, *, full: bool
    ) -> list[DefinitionRecord]:
        """Definitions no file at head defines any more: their file was deleted, or its
        `name:` changed. Bad input never removes anything running: a definition whose own
        file was refused stays, and while any file at head cannot even be read for its name
        (it may be where a definition moved), nothing goes."""
        tree = CommitTree(self.repo, head)
        files = set(desired_mod.definition_paths(tree))  # one ls-tree, not a read of every file
        touched = {p for p in changes.paths() if _is_definition(p)}
        records = self.store.definitions()
        names_at = {d.definition.path: name for name, d in state.ok.items()}
        names_at.update(state.invalid_names)
        suspects = [
            r for r in records
            if r.path not in files or (r.path in touched and names_at.get(r.path, r.name) != r.name)
        ]
        if not suspects:
            return []
        # Whether a name moved to another file needs every file: read them all (only now,
        # when something may have gone, and without secrets: this is about names).
        whole = state if full else desired_mod.load(
            tree, secret_versions=SecretVersions.unchecked(), engine=self.engine
        )
        if whole.errors or any(p not in whole.invalid_names for p in whole.invalid):
            return []
        defined = set(whole.ok) | set(whole.invalid_names.values())
        return [
            r for r in suspects
            if r.name not in defined
            and r.path not in whole.invalid
            and (r.desired is not None or r.applied_hash is None)
        ]

    def _dropped_in(
        self, state: desired_mod.DesiredState, changes: ChangeSet
    ) -> list[DefinitionRecord]:
        """For numbering: definitions a commit's touched files no longer define."""
        touched = {p for p in changes.paths() if _is_definition(p)}
        defined = set(state.ok) | set(state.invalid_names.values())
        return [
            r for r in self.store.definitions()
            if r.path in touched and r.name not in defined and r.path not in state.invalid
        ]

    def _refresh_secrets(self, head: str, refresh: Refresh, done: frozenset[str] = frozenset()) -> None:
        """Re-render definitions whose secrets changed, and retry those that did not validate
        (a missing secret may have been set since); `done` were rendered in this sync already."""
        versions = self.store.available_secrets()
        records = self.store.definitions()
        stale = [
            r.path
            for r in records
            if r.path not in done
            and (r.status is DefinitionStatus.INVALID or _secrets_moved(r, versions))
        ]
        if stale:
            # An invalid one is read again each time: its server may have been registered since.
            state = desired_mod.load(
                CommitTree(self.repo, head), secret_versions=versions, only=stale, engine=self.engine,
                servers=self.store.server_keys(),
            )
            self._record_desired(head, ChangeSet(), state, refresh, full=False)
        # Versions no revision pins and no spec uses go; a rollback never needs them.
        in_use = {pin for r in self.store.definitions() if r.desired for pin in r.desired.secrets}
        self.store.drop_unused_secret_versions(keep=in_use)

    def _record_at_path(self, path: str) -> DefinitionRecord | None:
        for record in self.store.definitions():
            if record.path == path:
                return record
        return None


# ---------------------------------------------------------------- pure pieces


def builtin_fingerprint() -> str:
    """What the built-in catalog is now: its templates' spec hashes."""
    return content_hash(sorted(t.spec_hash for t in load_builtin().all()))


def _is_definition(path: str) -> bool:
    return path.startswith(desired_mod.DEFINITIONS_DIR) and path.endswith((".yaml", ".yml"))


def _touches_tree_wide(changes: ChangeSet) -> bool:
    """Settings and repo templates can change any definition: reload them all."""
    return any(
        p == desired_mod.SETTINGS_PATH or p.startswith(desired_mod.CATALOG_DIR)
        for p in changes.paths()
    )


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


def _settled(old: DefinitionRecord) -> DefinitionStatus:
    """The status a definition returns to when its spec did not change."""
    if old.operator_stopped:
        return DefinitionStatus.STOPPED
    if old.desired is not None and old.applied_hash == old.desired.rendered_hash:
        return DefinitionStatus.ACTIVE
    return DefinitionStatus.PENDING


def _reason(
    head: str,
    summary: str,
    d: desired_mod.DesiredDefinition,
    before: ContainerSpec | None,
    touched: frozenset[str],
    *,
    rollback: bool,
    engine: EngineConfig | None = None,
) -> Reason:
    """Name the change that caused a deployment: file, template, config file, rollback, or
    the engine's configuration (`engine`, when it changed since the last sync)."""
    changes = diff_specs(before, d.spec)
    short = head[:12]
    if before is None:
        return Reason(ReasonKind.NEW, f"{d.definition.path} added in {short} ({summary})", head, changes)
    if rollback:
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
