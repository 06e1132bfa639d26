"""The one orchestrator: source -> model -> render -> plan -> apply -> record -> notify.

`Engine.sync()` is the whole story of a sync on one screen; the methods below it
are its steps. Syncs never overlap on one repository (a lock), so events that
arrive together or twice produce each deployment exactly once.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from . import desired as desired_mod
from . import secrets
from .catalog import load_builtin
from .definitions import public_params
from .drivers.base import Driver
from .edits import ROLLBACK_TRAILER
from .errors import DeployAllyError, DriverError, ValidationError
from .identity import content_hash, definition_id, random_id
from .lock import sync_lock
from .plan import diff_specs, order, plan
from .source.git import GitRepo
from .source.tree import CommitTree
from .store import Store
from .types import (
    Action,
    ActionKind,
    ChangeSet,
    ContainerSpec,
    DefinitionRecord,
    DefinitionStatus,
    Deployment,
    DeploymentStatus,
    Plan,
    Reason,
    ReasonKind,
    Revision,
)

IN_FLIGHT_PER_SLOT = 4  # definitions in flight per concurrent Docker call
RETRY_BASE_S = 10.0
RETRY_MAX_S = 600.0

Progress = Callable[[str], None]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class SyncReport:
    """What one sync did: the commit it reached, its deployments and the files it refused."""

    commit: str | None
    deployments: tuple[Deployment, ...] = ()
    errors: tuple[ValidationError, ...] = ()
    unchanged: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors and all(
            d.status is DeploymentStatus.SUCCESS for d in self.deployments
        )


@dataclass
class _Refresh:
    """What the model step found: changed definitions and why they changed."""

    reasons: dict[str, Reason] = field(default_factory=dict)
    before: dict[str, ContainerSpec | None] = field(default_factory=dict)  # specs they replace
    errors: list[ValidationError] = field(default_factory=list)


class Engine:
    """Keeps one repository's definitions running on their servers."""

    def __init__(
        self,
        repo: GitRepo,
        store: Store,
        driver_for: Callable[[str], Driver | None],
        *,
        max_parallel: int = 4,
        progress: Progress | None = None,
    ) -> None:
        self.repo = repo
        self.store = store
        self.driver_for = driver_for
        self.max_parallel = max_parallel
        self.progress = progress or (lambda line: None)
        self._lock = threading.Lock()
        self._retry_at: dict[str, tuple[float, int]] = {}  # name -> (monotonic due, attempts)
        self._requested: dict[str, Deployment] = {}  # pending deployments asked for by people
        self._reported_down: dict[str, str] = {}  # name -> rendered hash failed for "unreachable"

    def __repr__(self) -> str:
        return f"Engine(repo={self.repo!r})"

    # ------------------------------------------------------------ the sync

    def sync(self) -> SyncReport:
        """Bring live state to the head of the tracked branch, once, in order."""
        with self._lock, sync_lock(self.store.state_dir):
            self._requested = self._close_interrupted()  # operator requests from the API stay
            head = self.repo.head()
            if head is None:
                return SyncReport(commit=None)
            self.store.set_last_attempted_commit(head)
            refresh = self._refresh(head)  # source + model + render, recorded
            records = {r.name: r for r in self.store.definitions()}
            deployments: list[Deployment] = []
            unchanged = 0
            for server, driver in self._drivers(records):
                try:
                    driver.recover(self.progress)
                    the_plan = self._plan(server, driver, records, refresh)  # plan
                except DriverError as exc:
                    self._record_unreachable(server, driver, records, refresh, head, exc)
                    raise
                unchanged += sum(1 for a in the_plan.actions if a.kind is ActionKind.NOOP)
                deployments += self._apply(driver, the_plan, records, head)  # apply+record+notify
            self._settle_requests(records)
            if all(d.status is DeploymentStatus.SUCCESS for d in deployments):
                self.store.set_last_applied_commit(head)
            return SyncReport(head, tuple(deployments), tuple(refresh.errors), unchanged)

    # ------------------------------------------------------------ source + model

    def _refresh(self, head: str) -> _Refresh:
        """Read what changed since the last sync; record revisions and the new desired specs."""
        previous = self.store.get_meta("desired_commit")
        refresh = _Refresh()
        # New built-in templates (an upgrade of DeployAlly) can change any definition.
        fingerprint = builtin_fingerprint()
        full = previous is None or self.store.get_meta("builtin_catalog") != fingerprint
        if previous == head and not full:
            self._refresh_secrets(head, refresh)
            return refresh
        commits = self.repo.commits_between(previous, head) if previous != head else []
        for commit in commits:
            changes = self.repo.changes(self.repo.first_parent(commit), commit)
            if commit != head:
                self._record_revisions(
                    commit, changes, self._load(commit, changes, for_revisions=True)
                )
        changes = self.repo.changes(previous, head) if previous != head else ChangeSet()
        state = self._load(head, None if full else changes)
        self._record_revisions(head, changes, state)
        self._record_desired(head, changes, state, refresh, full=full)
        self.store.set_meta("desired_commit", head)
        self.store.set_meta("builtin_catalog", fingerprint)
        self._refresh_secrets(head, refresh, done=state.files)
        return refresh

    def _load(
        self, commit: str, changes: ChangeSet | None, *, for_revisions: bool = False
    ) -> desired_mod.DesiredState:
        """Validate and render the definitions a change touches (all of them when None)."""
        tree = CommitTree(self.repo, commit)
        # Revision numbers follow git alone, never whether a secret happens to be set.
        versions: Mapping[str, int] = (
            desired_mod.AnySecretVersion() if for_revisions else self.store.secret_versions()
        )
        if changes is None or _touches_tree_wide(changes):
            return desired_mod.load(tree, secret_versions=versions)
        return desired_mod.load(tree, secret_versions=versions, only=self._affected(changes))

    def _affected(self, changes: ChangeSet) -> set[str]:
        """Definition files a change reaches: themselves, or a config file they mount."""
        touched = changes.paths()
        paths = {p for p in touched if _is_definition(p)}
        for record in self.store.definitions():
            if touched.intersection(record.depends_files):
                paths.add(record.path)
        return paths

    def _record_revisions(
        self, commit: str, changes: ChangeSet, state: desired_mod.DesiredState
    ) -> None:
        """A definition's revision N is the Nth commit that changed its desired state."""
        now = utcnow()
        hashes: dict[str, tuple[str, str]] = {
            name: (d.desired_hash, d.definition.path) for name, d in state.ok.items()
        }
        for path, name in state.invalid_names.items():
            if path in changes.paths():
                text = CommitTree(self.repo, commit).read_many([path]).get(path, "")
                hashes.setdefault(name, (desired_mod.desired_hash(text, "", {}), path))
        for path in _removed_definition_paths(changes):
            record = self._record_at_path(path)
            if record and record.name not in hashes and not self._still_defined(state, record):
                hashes[record.name] = ("", "")
        for name, (digest, path) in hashes.items():
            def_id = definition_id(name)
            latest = self.store.latest_revision(def_id)
            if latest is not None and latest.desired_hash == digest:
                continue
            if latest is None and digest == "":
                continue
            number = (latest.number if latest else 0) + 1
            self.store.add_revision(Revision(def_id, name, number, commit, digest, path, now))

    def _record_desired(
        self,
        head: str,
        changes: ChangeSet,
        state: desired_mod.DesiredState,
        refresh: _Refresh,
        *,
        full: bool,
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
                    head, info.summary, d, before, touched, rollback=rollback
                )
                self._retry_at.pop(name, None)
            if old is None or d.definition.path in touched:
                self.store.enqueue_event(
                    "definition.created" if old is None else "definition.updated",
                    _definition_event(record, head),
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
        # A definition goes only when its file is gone and no other file now holds its name;
        # a file that stopped validating keeps its container.
        defined = set(state.ok) | set(state.invalid_names.values())
        if full:
            candidates = self.store.definitions()
        else:
            candidates = [r for p in _removed_definition_paths(changes) if (r := self._record_at_path(p))]
        gone = [
            r for r in candidates
            if r.path not in state.files and r.name not in defined and r.desired is not None
        ]
        for record in gone:
            # The record goes once its container is removed; until then plan sees it as absent.
            self.store.upsert_definition(replace(record, desired=None, updated_at=now))
            refresh.reasons[record.name] = Reason(
                ReasonKind.REMOVED, f"{record.path} was deleted in {head[:12]}", head
            )
            self.store.enqueue_event("definition.deleted", _definition_event(record, head))

    def _refresh_secrets(self, head: str, refresh: _Refresh, done: frozenset[str] = frozenset()) -> None:
        """Re-render definitions whose secrets changed, and retry those that did not validate
        (a missing secret may have been set since); `done` were rendered in this sync already."""
        versions = self.store.secret_versions()
        stale = [
            r.path
            for r in self.store.definitions()
            if r.path not in done
            and (
                r.status is DefinitionStatus.INVALID
                or (r.desired is not None and any(versions.get(n, 0) != v for n, v in r.desired.secrets))
            )
        ]
        if stale:
            state = desired_mod.load(CommitTree(self.repo, head), secret_versions=versions, only=stale)
            self._record_desired(head, ChangeSet(), state, refresh, full=False)

    # ------------------------------------------------------------ plan

    def _drivers(self, records: Mapping[str, DefinitionRecord]) -> list[tuple[str, Driver]]:
        """The servers this host applies to: those with a driver here."""
        servers = sorted({r.server_id for r in records.values()} | {"local"})
        out = []
        for server in servers:
            driver = self.driver_for(server)
            if driver is not None:
                out.append((server, driver))
        return out

    def _plan(
        self,
        server: str,
        driver: Driver,
        records: Mapping[str, DefinitionRecord],
        refresh: _Refresh,
    ) -> Plan:
        """Desired specs of this server against its live containers."""
        mine = {n: r for n, r in records.items() if r.server_id == server}
        desired = {n: r.desired for n, r in mine.items() if r.desired is not None}
        live = driver.live()
        # A container whose definition moved to another server belongs to that one now.
        live = {n: c for n, c in live.items() if n not in records or n in mine}
        applied = {n: s for n, s in refresh.before.items() if s is not None}
        for name, record in mine.items():
            if record.desired is not None and name not in applied:
                applied[name] = record.desired
        reasons = dict(refresh.reasons)
        for name, record in mine.items():
            spec = record.desired
            if spec and name not in reasons and record.applied_hash != spec.rendered_hash:
                reasons[name] = Reason(
                    ReasonKind.DEFINITION,
                    f"revision {record.current_revision} is not applied yet (retry)",
                    self.store.get_meta("desired_commit"),
                )
        held = {n for n, r in mine.items() if r.operator_stopped}
        the_plan = plan(desired, live, applied, held=held, reasons=reasons)
        actions = []
        for action in the_plan.actions:
            request = self._requested.get(action.name)
            if action.kind is ActionKind.NOOP and request and request.reason.kind is ReasonKind.OPERATOR:
                # A redeploy asked for by an operator replaces the container even if unchanged.
                action = replace(action, kind=ActionKind.UPDATE, reason=request.reason)
            if self._due(action) or request is not None:
                actions.append(action)
        return Plan(tuple(actions))

    def next_retry_s(self) -> float | None:
        """Seconds until the earliest failed definition may be retried; None when none failed."""
        if not self._retry_at:
            return None
        return max(0.0, min(due for due, _ in self._retry_at.values()) - time.monotonic())

    def _due(self, action: Action) -> bool:
        """Failed definitions retry with exponential backoff, not in a hot loop."""
        if action.kind is ActionKind.NOOP:
            return True
        due = self._retry_at.get(action.name)
        return due is None or time.monotonic() >= due[0]

    # ------------------------------------------------------------ apply, record, notify

    def _apply(
        self, driver: Driver, the_plan: Plan, records: Mapping[str, DefinitionRecord], head: str
    ) -> list[Deployment]:
        """Carry out a plan in dependency waves, in parallel within a wave."""
        done: list[Deployment] = []
        failed: set[str] = set()
        # Health waits are idle; the driver bounds the Docker calls themselves.
        with ThreadPoolExecutor(max_workers=self.max_parallel * IN_FLIGHT_PER_SLOT) as pool:
            for wave in order(the_plan.changed()):
                futures = [
                    pool.submit(self._deploy, driver, action, records.get(action.name), head, failed)
                    for action in wave
                ]
                for future in futures:
                    deployment = future.result()
                    done.append(deployment)
                    if deployment.status is not DeploymentStatus.SUCCESS:
                        failed.add(deployment.definition_name)
        return done

    def _deploy(
        self,
        driver: Driver,
        action: Action,
        record: DefinitionRecord | None,
        head: str,
        failed: set[str],
    ) -> Deployment:
        """One action as one recorded deployment: pending -> running -> outcome, with events."""
        name = action.name
        reason = action.reason or Reason(ReasonKind.DRIFT, "live state differs", head)
        revision = record.current_revision if record else None
        request = self._requested.pop(name, None)
        deployment = Deployment(
            id=request.id if request else random_id("deploy"),
            definition_id=record.id if record else (action.live.definition_id if action.live else ""),
            definition_name=name,
            server_id=driver.server,
            revision=revision,
            commit=head,
            action=action.kind,
            status=DeploymentStatus.PENDING,
            reason=reason,
            created_at=utcnow(),
        )
        if request is None:
            self.store.create_deployment(deployment)
        masker = secrets.SecretMasker()
        for secret_name, _ in action.desired.secrets if action.desired else ():
            try:
                masker.add(self.store.secret_value(secret_name))
            except DeployAllyError:
                pass  # reported by resolve() below

        def log(message: str) -> None:
            self.store.append_log(deployment.id, masker.mask(message))

        started = utcnow()
        self.store.update_deployment(deployment.id, status=DeploymentStatus.RUNNING, started_at=started)
        self.store.enqueue_event("deployment.started", _deployment_event(deployment))
        log(f"{action.kind.value} {name}: {reason.summary}")
        for change in action.changes:
            log(f"  {change.field}: {_short(change.before)} -> {_short(change.after)}")
        blocked = [d for d in (action.desired.depends_on if action.desired else ()) if d in failed]
        if blocked:
            status, message = DeploymentStatus.FAILED, f"not applied: dependency {', '.join(blocked)} failed"
            log(message)
        else:
            try:
                result = driver.apply(
                    action,
                    revision=revision,
                    commit=head,
                    resolve=lambda text: secrets.resolve(text, self.store.secret_value),
                    log=log,
                )
                status, message = result.status, result.message
            except DeployAllyError as exc:
                status, message = DeploymentStatus.FAILED, str(exc)
                log(f"error: {masker.mask(message)}")
        finished = utcnow()
        self.store.update_deployment(deployment.id, status=status, finished_at=finished)
        deployment = replace(deployment, status=status, started_at=started, finished_at=finished)
        self._record_outcome(action, record, deployment, masker.mask(message))
        return deployment

    def _record_outcome(
        self, action: Action, record: DefinitionRecord | None, deployment: Deployment, message: str
    ) -> None:
        """Definition status, retry schedule, the progress line and the webhook event."""
        name = action.name
        ok = deployment.status is DeploymentStatus.SUCCESS
        if ok:
            self._retry_at.pop(name, None)
        else:
            attempts = self._retry_at.get(name, (0.0, 0))[1] + 1
            delay = min(RETRY_MAX_S, RETRY_BASE_S * 2 ** (attempts - 1)) * random.uniform(0.8, 1.2)
            self._retry_at[name] = (time.monotonic() + delay, attempts)
        if action.kind is ActionKind.REMOVE:
            if ok and record is not None and record.desired is None:
                self.store.delete_definition(record.id)
        elif record is not None:
            if ok:
                assert action.desired is not None
                self.store.set_definition_status(
                    record.id,
                    DefinitionStatus.ACTIVE,
                    last_error=None,
                    applied_revision=deployment.revision,
                    applied_hash=action.desired.rendered_hash,
                )
            else:
                self.store.set_definition_status(record.id, DefinitionStatus.FAILED, last_error=message)
        outcome = {
            DeploymentStatus.SUCCESS: "deployed" if action.kind is not ActionKind.REMOVE else "removed",
            DeploymentStatus.FAILED: "failed",
            DeploymentStatus.ROLLED_BACK: "failed, rolled back",
        }[deployment.status]
        rev = f"revision {deployment.revision} " if deployment.revision else ""
        line = f"{name}: {rev}{outcome}"
        if not ok and message:
            line += f": {message}"
        self.progress(line)
        event = "deployment.success" if ok else "deployment.failed"
        data = _deployment_event(deployment)
        if not ok:
            data["error"] = message
            data["rolled_back"] = deployment.status is DeploymentStatus.ROLLED_BACK
        self.store.enqueue_event(event, data)

    # ------------------------------------------------------------ small lookups

    def _record_unreachable(
        self,
        server: str,
        driver: Driver,
        records: Mapping[str, DefinitionRecord],
        refresh: _Refresh,
        head: str,
        exc: DriverError,
    ) -> None:
        """The engine cannot be reached: each change waiting to deploy fails once, with the cause."""
        for name, record in records.items():
            spec = record.desired
            if record.server_id != server or spec is None:
                continue
            waiting = name in refresh.reasons or record.applied_hash != spec.rendered_hash
            if not waiting or self._reported_down.get(name) == spec.rendered_hash:
                continue
            self._reported_down[name] = spec.rendered_hash
            now = utcnow()
            reason = refresh.reasons.get(name) or Reason(
                ReasonKind.DEFINITION, f"revision {record.current_revision} is not applied yet", head
            )
            deployment = Deployment(
                id=random_id("deploy"), definition_id=record.id, definition_name=name,
                server_id=driver.server, revision=record.current_revision, commit=head,
                action=ActionKind.UPDATE if record.applied_hash else ActionKind.CREATE,
                status=DeploymentStatus.FAILED, reason=reason, created_at=now,
                started_at=now, finished_at=now,
            )
            self.store.create_deployment(deployment)
            self.store.append_log(deployment.id, f"not applied: {exc}; retrying until it answers")
            self.store.set_definition_status(record.id, DefinitionStatus.FAILED, last_error=str(exc))
            data = _deployment_event(deployment)
            data.update(error=str(exc), rolled_back=False)
            self.store.enqueue_event("deployment.failed", data)
            self.progress(f"{name}: revision {record.current_revision} failed: {exc}")

    def _close_interrupted(self) -> dict[str, Deployment]:
        """Close deployments a crash left open (the plan redoes their work); keep people's requests."""
        for deployment in self.store.deployments(status=DeploymentStatus.RUNNING, limit=1000):
            self.store.append_log(deployment.id, "the engine stopped during this deployment")
            self.store.update_deployment(
                deployment.id, status=DeploymentStatus.FAILED, finished_at=utcnow()
            )
        requested: dict[str, Deployment] = {}
        for deployment in self.store.deployments(status=DeploymentStatus.PENDING, limit=1000):
            if deployment.reason.kind in (ReasonKind.OPERATOR, ReasonKind.ROLLBACK):
                requested.setdefault(deployment.definition_name, deployment)
            else:
                self.store.update_deployment(
                    deployment.id, status=DeploymentStatus.FAILED, finished_at=utcnow()
                )
        return requested

    def _settle_requests(self, records: Mapping[str, DefinitionRecord]) -> None:
        """Requests no action carried out: already in place, or impossible right now."""
        for name, request in self._requested.items():
            record = records.get(name)
            if record is not None and record.operator_stopped:
                status, message = DeploymentStatus.FAILED, f"{name} is stopped by an operator; start it first"
            elif record is None or record.desired is None:
                status, message = DeploymentStatus.FAILED, f"{name} is no longer defined"
            elif name in self._retry_at:
                continue  # waiting for its backoff; the next sync carries it out
            else:
                status, message = DeploymentStatus.SUCCESS, "already in the requested state"
            self.store.append_log(request.id, message)
            self.store.update_deployment(request.id, status=status, finished_at=utcnow())
        self._requested = {}

    def _record_at_path(self, path: str) -> DefinitionRecord | None:
        for record in self.store.definitions():
            if record.path == path:
                return record
        return None

    @staticmethod
    def _still_defined(state: desired_mod.DesiredState, record: DefinitionRecord) -> bool:
        """A renamed file that keeps its `name` is the same definition, not a removal."""
        return record.name in state.ok or record.name in state.invalid_names.values()


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


def _removed_definition_paths(changes: ChangeSet) -> list[str]:
    return [p for p in changes.deleted if _is_definition(p)] + [
        old for old, _ in changes.renamed if _is_definition(old)
    ]


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
) -> Reason:
    """Name the change that caused a deployment: file, template, config file or rollback."""
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


def _short(value: object, limit: int = 80) -> str:
    text = secrets.display(repr(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _definition_event(record: DefinitionRecord, commit: str) -> dict[str, object]:
    return {
        "definition_id": record.id,
        "name": record.name,
        "revision": record.current_revision,
        "commit": commit,
        "server_id": record.server_id,
        "template_id": record.template_id,
        "status": record.status.value,
    }


def _deployment_event(d: Deployment) -> dict[str, object]:
    return {
        "deployment_id": d.id,
        "definition_id": d.definition_id,
        "name": d.definition_name,
        "revision": d.revision,
        "commit": d.commit,
        "server_id": d.server_id,
        "action": d.action.value,
        "status": d.status.value,
        "reason": {"kind": d.reason.kind.value, "summary": d.reason.summary},
    }
