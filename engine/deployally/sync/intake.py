"""Intake, the sync's producer: new commits -> revisions and desired specs, recorded (source -> model -> render).

Reads only the definitions a change touches, numbers their revisions
(revisions.py), works out their new records and why each changed (changes.py),
removes what no file defines any more (removals.py), and records it all. A file
that does not validate keeps its last good spec, so nothing running changes
because of it. What it recorded comes back as one frozen `Desired`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from deployally.errors import UnstorableValue, ValidationError
from deployally.identity import content_hash, definition_id
from deployally.model import desired as desired_mod
from deployally.model.catalog import load_builtin
from deployally.model.engine_config import EngineConfig
from deployally.notify.events import definition_event
from deployally.source.git import GitRepo
from deployally.source.tree import CommitTree
from deployally.store import Store
from deployally.sync import removals, revisions
from deployally.sync.changes import CommitNote, DesiredStep, desired_step
from deployally.sync.edits import ROLLBACK_TRAILER
from deployally.types import (
    ChangeSet,
    ContainerSpec,
    DefinitionRecord,
    DefinitionStatus,
    Desired,
    Reason,
    Revision,
    SecretRef,
    SecretVersions,
)

META_ENGINE_CONFIG = "engine_config"  # what of engine.yaml the desired specs were rendered with


def utcnow() -> datetime:
    return datetime.now(UTC)


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
            records = self._refresh_secrets(head, steps)
            return self._desired(head, steps, records)
        # Revisions: every first-parent commit since the last sync, head included, numbered
        # from git alone. `mounts` follows config-file mounts from commit to commit.
        mounts = {r.path: r.depends_files for r in self.store.definitions()}
        commits = [head] if lost else self.repo.commits_between(previous, head)
        made: dict[str, list[int]] = {}  # the revision numbers of each definition, in order
        unstored: list[ValidationError] = []
        for commit, changes, state in self._commit_states(commits, lost, mounts):
            recorded, errors = self._record_revisions(commit, changes, state)
            unstored += errors
            for revision in recorded:
                made.setdefault(revision.definition_id, []).append(revision.number)
        # Desired specs: head only, rendered with the secrets as they are now.
        changes = (
            ChangeSet() if lost or previous == head else self.repo.changes(previous, head)
        )
        state = self._load(head, None if full else changes, mounts)
        steps.append(
            self._record_desired(
                head, changes, state, full=full, engine_changed=engine_changed,
                since=None if lost else previous, made=made,
            )
        )
        steps.append(DesiredStep(errors=tuple(unstored)))
        self.store.set_meta("desired_commit", head)
        self.store.set_meta("builtin_catalog", fingerprint)
        self.store.set_meta(META_ENGINE_CONFIG, engine_fingerprint)
        records = self._refresh_secrets(head, steps, done=state.files)
        return self._desired(head, steps, records)

    def revision_of(self, name: str, commit: str) -> int:
        """The revision number `commit` gives definition `name` as `refresh` will record it
        (0: none): the commits since the last sync replayed with refresh's own steps, so one
        that changed only its template or a config file counts too."""
        previous = self.store.get_meta("desired_commit")
        lost = previous is not None and not self.repo.has_commit(previous)
        commits = [commit] if lost else self.repo.commits_between(previous, commit)
        pending = set(commits)
        numbered: dict[str, Revision | None] = {}

        def latest(def_id: str) -> Revision | None:
            if def_id not in numbered:
                # A sync under way may have recorded some of these commits already: they are
                # replayed here, so they are not counted twice.
                kept = [r for r in self.store.revisions(def_id) if r.commit not in pending]
                numbered[def_id] = kept[-1] if kept else None
            return numbered[def_id]

        mounts = {r.path: r.depends_files for r in self.store.definitions()}
        for at, changes, state in self._commit_states(commits, lost, mounts):
            for revision in self._revisions_in(at, changes, state, latest):
                numbered[revision.definition_id] = revision
        found = latest(definition_id(name))
        return found.number if found else 0

    def _commit_states(
        self, commits: list[str], lost: bool, mounts: dict[str, tuple[str, ...]]
    ) -> Iterator[tuple[str, ChangeSet, desired_mod.DesiredState]]:
        """Each commit with what it changed and what those files define, for numbering
        revisions; `mounts` follows config-file mounts from commit to commit."""
        for commit in commits:
            # With the last synced state gone, compare head in full against the stored revisions.
            changes = ChangeSet() if lost else self.repo.changes(self.repo.first_parent(commit), commit)
            state = self._load(commit, None if lost else changes, mounts, for_revisions=True)
            yield commit, changes, state
            mounts.update({d.definition.path: d.depends_files for d in state.ok.values()})

    def _desired(
        self, head: str, steps: list[DesiredStep], records: list[DefinitionRecord]
    ) -> Desired:
        """What the steps recorded, with every record as the store now holds it (`records`)."""
        reasons: dict[str, Reason] = {}
        before: dict[str, ContainerSpec | None] = {}
        for step in steps:
            reasons.update(step.reasons)
            before.update({n: s for n, s in step.before.items() if n not in before})
        return Desired(
            commit=head,
            records={r.name: r for r in records},
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
        replicated = None if for_revisions else self.store.server_keys(kind="swarm")
        if changes is None or touches_tree_wide(changes):
            return desired_mod.load(
                tree, secret_versions=versions, engine=self.engine, servers=servers,
                replicated=replicated,
            )
        paths = affected(changes, mounts)
        state = desired_mod.load(
            tree, secret_versions=versions, only=paths, engine=self.engine, servers=servers,
            replicated=replicated,
        )
        # A new file may take a name another file still holds: read both, so the
        # duplicate is refused instead of taking over the running container.
        by_name = {r.name: r for r in self.store.definitions()}  # one read, not one a name
        holders = {
            r.path
            for name in state.ok
            if (r := by_name.get(name)) and r.path and r.path not in paths
        }
        holders = set(tree.read_many(holders))
        if holders:
            state = desired_mod.load(
                tree, secret_versions=versions, only=paths | holders, engine=self.engine,
                servers=servers, replicated=replicated,
            )
        return state

    def _record_revisions(
        self, commit: str, changes: ChangeSet, state: desired_mod.DesiredState
    ) -> tuple[list[Revision], list[ValidationError]]:
        """Record the revisions one commit makes; return them, and an error for each that
        could not be stored whole."""
        records = self.store.definitions()
        known = self.store.latest_revisions(
            {d.definition.id for d in state.ok.values()}
            | {definition_id(n) for n in state.invalid_names.values()}
            | {r.id for r in revisions.dropped_in(records, state, changes)}
        )
        made = self._revisions_in(commit, changes, state, known.get, records=records)
        try:
            self.store.add_revisions(made)  # one transaction for the commit's revisions
            return made, []
        except UnstorableValue:
            pass  # nothing was written: each on its own, so the file that does not fit is told
        errors = []
        for revision in made:
            try:
                self.store.add_revision(revision)
            except UnstorableValue as exc:
                # A value no check caught must not stop every later sync at this commit: the
                # revision is kept without its pins (a pin the store cannot hold names no
                # version it holds), and the file is told.
                errors.append(ValidationError(
                    revision.path, "", f"{exc}; it is recorded without the secret versions it pins"
                ))
                self.store.add_revision(replace(revision, secrets=()))
        return list(made), errors

    def _revisions_in(
        self,
        commit: str,
        changes: ChangeSet,
        state: desired_mod.DesiredState,
        latest: revisions.Latest,
        records: list[DefinitionRecord] | None = None,
    ) -> list[Revision]:
        """The revisions one commit makes, after the `latest` of each definition; `records`
        are the store's, when the caller has read them."""
        refused = [p for p in state.invalid_names if p in changes.paths()]
        return revisions.new_revisions(
            commit,
            changes,
            state,
            invalid_texts=self._texts(commit, refused),
            records=self.store.definitions() if records is None else records,
            latest=latest,
            now=utcnow(),
        )

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
        since: str | None = None,
        made: Mapping[str, Sequence[int]] | None = None,
    ) -> DesiredStep:
        """Store the new desired specs and removals of `state` at head, with their events:
        one per definition for every commit after `since`, naming the revisions `made`."""
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
        latest = self.store.latest_revisions(
            {d.definition.id for d in state.ok.values()}
            | {definition_id(n) for n in state.invalid_names.values()}
        )
        step = desired_step(
            state,
            gone,
            old=by_name.get,
            at_path={r.path: r for r in records}.get,
            latest_number=lambda def_id: r.number if (r := latest.get(def_id)) else None,
            note=note,
            touched=touched,
            now=utcnow(),
            engine=self.engine if engine_changed else None,
        )
        self.store.upsert_definitions(step.upserts)  # one transaction, however many
        for record in step.deleted:
            self.store.delete_definition(record.id)
        server_ids = {s: self.store.server_id(s) for s in {r.server_id for _, r in step.events}}
        self.store.enqueue_events([
            (event, definition_event(
                record, head, server_ids[record.server_id], since=since,
                revisions=(made or {}).get(record.id, ()),
            ))
            for event, record in step.events
        ])
        return step

    def _whole(self, head: str) -> desired_mod.DesiredState:
        # Whether a name moved to another file needs every file: read them all (only now,
        # when something may have gone, and without secrets: this is about names).
        return desired_mod.load(
            CommitTree(self.repo, head),
            secret_versions=SecretVersions.unchecked(),
            engine=self.engine,
        )

    def _refresh_secrets(
        self, head: str, steps: list[DesiredStep], done: frozenset[str] = frozenset()
    ) -> list[DefinitionRecord]:
        """Re-render definitions whose secrets changed, and retry those that did not validate
        (a missing secret may have been set since); `done` were rendered in this sync already.
        Appends its step to `steps`; returns every record as the store then holds it."""
        versions = self.store.available_secrets()
        records = self.store.definitions()  # one read of every record, the slow part of a no-op
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
                servers=self.store.server_keys(), replicated=self.store.server_keys(kind="swarm"),
            )
            steps.append(self._record_desired(head, ChangeSet(), state, full=False))
            records = self.store.definitions()
        # Versions no revision pins and no spec uses go; a rollback never needs them.
        in_use = {pin for r in records if r.desired for pin in r.desired.secrets}
        self.store.drop_unused_secret_versions(keep=in_use)
        return records


# ---------------------------------------------------------------- pure pieces


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
