"""Apply, record, notify: a plan carried out as recorded deployments, in dependency waves.

Each action is one deployment (pending -> running -> success / failed /
rolled_back) with its reason and log lines, its definition's status, a
progress line and its webhook events.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime

from deployally import secrets
from deployally.drivers.base import Driver
from deployally.errors import DeployAllyError, DriverError
from deployally.identity import random_id
from deployally.model.definitions import secret_names, unorderable
from deployally.notify.events import deployment_event
from deployally.plan.order import order
from deployally.store import Store
from deployally.sync.backoff import Backoff
from deployally.sync.intake import Refresh
from deployally.types import (
    Action,
    ActionKind,
    DefinitionRecord,
    DefinitionStatus,
    Deployment,
    DeploymentStatus,
    Plan,
    Reason,
    ReasonKind,
)

IN_FLIGHT_PER_SLOT = 4  # definitions in flight per concurrent Docker call

Progress = Callable[[str], None]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Deployer:
    """Carries out plans on a driver and records every action as a deployment."""

    def __init__(
        self, store: Store, backoff: Backoff, *, progress: Progress, max_parallel: int = 4
    ) -> None:
        self.store = store
        self.backoff = backoff
        self.max_parallel = max_parallel
        self.progress = progress
        self.requested: dict[str, Deployment] = {}  # pending deployments asked for by people
        self._reported_down: dict[str, str] = {}  # name -> rendered hash failed for "unreachable"

    def __repr__(self) -> str:
        return f"Deployer(max_parallel={self.max_parallel})"

    def _event_data(self, deployment: Deployment) -> dict[str, object]:
        return deployment_event(deployment, self.store.server_id(deployment.server_id))

    def apply(
        self, driver: Driver, the_plan: Plan, records: Mapping[str, DefinitionRecord], head: str
    ) -> list[Deployment]:
        """Carry out a plan in dependency waves, in parallel within a wave."""
        done: list[Deployment] = []
        actions = list(the_plan.changed())
        # A dependency is ready when it runs its applied spec, or succeeds in this sync.
        failed = {n for n, r in records.items() if not _running(r)} - {a.name for a in actions}
        stuck = unorderable({
            a.name: a.desired.depends_on if a.desired and a.kind is not ActionKind.REMOVE else ()
            for a in actions
        })
        for action in (a for a in actions if a.name in stuck):
            # A cycle blocks only its own members; everything else still goes out.
            done.append(self._deploy(driver, action, records.get(action.name), head, failed,
                                     blocked_by=f"a depends_on cycle among {', '.join(sorted(stuck))}"))
        failed |= stuck
        # Health waits are idle; the driver bounds the Docker calls themselves.
        with ThreadPoolExecutor(max_workers=self.max_parallel * IN_FLIGHT_PER_SLOT) as pool:
            for wave in order(a for a in actions if a.name not in stuck):
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
        *,
        blocked_by: str | None = None,
    ) -> Deployment:
        """One action as one recorded deployment: pending -> running -> outcome, with events."""
        name = action.name
        reason = action.reason or Reason(ReasonKind.DRIFT, "live state differs", head)
        revision = record.current_revision if record else None
        request = self.requested.pop(name, None)
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
        # Only the secrets this definition references, each at the version its spec pins.
        versions = dict(action.desired.secrets) if action.desired else {}
        named = secret_names(record.params) if record else set()
        lookup = secrets.lookup_from(self.store, masker, versions=versions, named=named)
        for secret_name in versions:
            try:
                lookup(secret_name)
            except DeployAllyError:
                pass  # reported by resolve() below

        def log(message: str) -> None:
            self.store.append_log(deployment.id, masker.mask(message))

        started = utcnow()
        self.store.update_deployment(deployment.id, status=DeploymentStatus.RUNNING, started_at=started)
        running = replace(deployment, status=DeploymentStatus.RUNNING, started_at=started)
        self.store.enqueue_event("deployment.started", self._event_data(running))
        log(f"{action.kind.value} {name}: {reason.summary}")
        for change in action.changes:
            log(f"  {change.field}: {_short(change.before)} -> {_short(change.after)}")
        blocked = [d for d in (action.desired.depends_on if action.desired else ()) if d in failed]
        if blocked_by or blocked:
            reason_text = blocked_by or f"dependency {', '.join(blocked)} is not running and healthy"
            status, message = DeploymentStatus.FAILED, f"not applied: {reason_text}"
            log(message)
        else:
            try:
                result = driver.apply(
                    action,
                    revision=revision,
                    commit=head,
                    resolve=lambda text: secrets.resolve(text, lookup),
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
            self.backoff.forget(name)
        else:
            self.backoff.failed(name)
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
        data = self._event_data(deployment)
        if not ok:
            data["error"] = message
            data["rolled_back"] = deployment.status is DeploymentStatus.ROLLED_BACK
        self.store.enqueue_event(event, data)

    def record_unreachable(
        self,
        server: str,
        driver: Driver,
        records: Mapping[str, DefinitionRecord],
        refresh: Refresh,
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
            data = self._event_data(deployment)
            data.update(error=str(exc), rolled_back=False)
            self.store.enqueue_event("deployment.failed", data)
            self.progress(f"{name}: revision {record.current_revision} failed: {exc}")

    def take_requests(self) -> None:
        """Close deployments a crash left open (the plan redoes their work); keep people's
        requests (an API redeploy or rollback) in `requested` for this sync to carry out."""
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
        self.requested = requested

    def settle_requests(self, records: Mapping[str, DefinitionRecord]) -> None:
        """Requests no action carried out: already in place, or impossible right now."""
        for name, request in self.requested.items():
            record = records.get(name)
            if record is not None and record.operator_stopped:
                status, message = DeploymentStatus.FAILED, f"{name} is stopped by an operator; start it first"
            elif record is None or record.desired is None:
                status, message = DeploymentStatus.FAILED, f"{name} is no longer defined"
            elif self.backoff.waiting(name):
                continue  # waiting for its backoff; the next sync carries it out
            else:
                status, message = DeploymentStatus.SUCCESS, "already in the requested state"
            self.store.append_log(request.id, message)
            self.store.update_deployment(request.id, status=status, finished_at=utcnow())
        self.requested = {}


def _running(record: DefinitionRecord) -> bool:
    """Does this definition run a spec it applied (a file gone invalid keeps the old one)?"""
    if record.status is DefinitionStatus.INVALID:
        return record.applied_hash is not None
    return record.desired is not None and record.status is DefinitionStatus.ACTIVE


def _short(value: object, limit: int = 80) -> str:
    text = secrets.display(repr(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"
