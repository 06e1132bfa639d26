"""Record and notify: what an applier reports, written to the store as it happens.

Each deployment's row (pending -> running -> success / failed / rolled_back, or
waiting), its log lines, its definition's status, a progress line and its
webhook events. The applier reports through the `Journal` interface; this is the
engine's own journal, over the store (an agent's server included: its driver reports here).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from deployally.identity import random_id
from deployally.notify.events import deployment_event
from deployally.store import Store
from deployally.store.writer import BatchWriter
from deployally.types import (
    Action,
    ActionKind,
    DefinitionRecord,
    DefinitionStatus,
    Deployment,
    DeploymentStatus,
    Reason,
    ReasonKind,
    ServerIntent,
    Waiting,
    WaitKind,
)

REQUESTED = (ReasonKind.OPERATOR, ReasonKind.ROLLBACK)

Progress = Callable[[str], None]


def utcnow() -> datetime:
    return datetime.now(UTC)


class StoreJournal:
    """Records deployments in the store and queues their webhook events."""

    def __init__(self, store: Store, *, progress: Progress) -> None:
        self.store = store
        self.progress = progress
        # Every deployment's rows and log lines go through one writer, many per transaction:
        # a hundred rollouts at once do not queue for SQLite's write lock one row at a time.
        self._writer = BatchWriter(store)

    def __repr__(self) -> str:
        return f"StoreJournal({self.store!r})"

    def _event(self, deployment: Deployment) -> dict[str, object]:
        return deployment_event(deployment, self.store.server_id(deployment.server_id))

    # ------------------------------------------------------------ what an applier reports

    def opened(self, deployment: Deployment) -> None:
        """A new deployment, pending."""
        self._writer.write(lambda: self.store.create_deployment(deployment))

    def log(self, deployment_id: str, message: str) -> None:
        """One line of a deployment's log (already masked), written with the next batch: kept
        in memory while the store refuses writes, and always before the deployment's outcome."""
        at = utcnow()
        self._writer.keep(lambda: self.store.append_log(deployment_id, message, at=at))

    def superseded(self, deployment: Deployment, revision: int | None) -> None:
        """A waiting deployment that a newer revision replaces before it could run."""
        now = utcnow()

        def write() -> None:
            self.store.append_log(deployment.id, f"superseded by revision {revision} before it could run")
            self.store.update_deployment(
                deployment.id, status=DeploymentStatus.FAILED, finished_at=now, waiting=None
            )

        self._writer.write(write)

    def waiting(self, deployment: Deployment, record: DefinitionRecord | None, *, first: bool) -> None:
        """The deployment waits (no backoff, no failure): its definition is still pending."""
        assert deployment.waiting is not None

        def write() -> None:
            self.store.update_deployment(
                deployment.id, status=DeploymentStatus.WAITING, waiting=deployment.waiting
            )
            if record is not None:
                self.store.set_definition_status(record.id, DefinitionStatus.PENDING, last_error=None)

        self._writer.write(write)
        if first:
            rev = f"revision {deployment.revision} " if deployment.revision else ""
            self.progress(f"{deployment.definition_name}: {rev}waiting: {deployment.waiting.summary}")

    def started(self, deployment: Deployment) -> None:
        """The deployment is running: deployment.started goes out. Returns once that is
        durable, so a crash after the driver's first change finds it open."""
        assert deployment.started_at is not None
        event = ("deployment.started", self._event(deployment))
        self._writer.write(lambda: self.store.update_deployment(
            deployment.id, status=DeploymentStatus.RUNNING, started_at=deployment.started_at,
            waiting=None, event=event,
        ))

    def finished(
        self,
        action: Action,
        record: DefinitionRecord | None,
        deployment: Deployment,
        message: str,
        *,
        unready: bool = False,
    ) -> None:
        """The outcome: the deployment's status, its definition's, a progress line, the webhook;
        `unready`: the spec failed its health gate, so it is held until something changes."""
        ok = deployment.status is DeploymentStatus.SUCCESS
        data = self._event(deployment)
        if not ok:
            data["error"] = message
            data["rolled_back"] = deployment.status is DeploymentStatus.ROLLED_BACK
        # After the deployment's log lines (the writer keeps their order), in one transaction.
        self._writer.write(lambda: self._record_outcome(action, record, deployment, data, message,
                                                        ok=ok, unready=unready))
        outcome = {
            DeploymentStatus.SUCCESS: "deployed" if action.kind is not ActionKind.REMOVE else "removed",
            DeploymentStatus.FAILED: "failed",
            DeploymentStatus.ROLLED_BACK: "failed, rolled back",
        }[deployment.status]
        rev = f"revision {deployment.revision} " if deployment.revision else ""
        line = f"{deployment.definition_name}: {rev}{outcome}"
        if not ok and message:
            line += f": {message}"
        self.progress(line)

    def _record_outcome(
        self,
        action: Action,
        record: DefinitionRecord | None,
        deployment: Deployment,
        data: dict[str, object],
        message: str,
        *,
        ok: bool,
        unready: bool,
    ) -> None:
        """The outcome's rows: the deployment with its webhook event, and its definition's status."""
        # The outcome and its webhook in one transaction: a crash leaves both or neither.
        self.store.update_deployment(
            deployment.id, status=deployment.status, finished_at=deployment.finished_at,
            event=("deployment.success" if ok else "deployment.failed", data),
        )
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
                    unready=None,
                )
            elif unready and action.kind in (ActionKind.CREATE, ActionKind.UPDATE) and action.desired:
                # Retrying this very spec would take the healthy old instance down again for
                # nothing (a heal in place, START, keeps its backoff: it takes nothing down).
                self.store.set_definition_status(
                    record.id, DefinitionStatus.FAILED, last_error=message,
                    unready=(action.desired.rendered_hash, record.current_revision),
                )
            else:
                self.store.set_definition_status(record.id, DefinitionStatus.FAILED, last_error=message)

    # ------------------------------------------------------------ what the engine records itself

    def unreachable(self, intent: ServerIntent, cause: str) -> tuple[Deployment, ...]:
        """The server cannot be reached: each change for it waits (since when, and why: no
        failure, no backoff) and runs once the server answers, as that same deployment.
        Returns the deployments that wait for it."""
        summary = f"server {intent.server} is unreachable: {cause}"
        waiting: list[Deployment] = []
        for name, record in intent.definitions.items():
            spec = record.desired
            if spec is None:
                continue
            if name not in intent.reasons and record.applied_hash == spec.rendered_hash:
                continue
            carried = intent.open.get(name)
            if carried is not None and carried.status is DeploymentStatus.WAITING:
                if carried.revision == record.current_revision or carried.reason.kind in REQUESTED:
                    if carried.waiting is None or carried.waiting.kind is not WaitKind.SERVER:
                        carried = self._wait_for_server(
                            carried, record, summary, intent.server, first=False
                        )
                    waiting.append(carried)
                    continue  # it waits already, and says for what
                self.superseded(carried, record.current_revision)
            elif carried is not None:
                continue  # a person's request: it runs once the server answers
            now = utcnow()
            reason = intent.reasons.get(name) or Reason(
                ReasonKind.DEFINITION,
                f"revision {record.current_revision} is not applied yet",
                intent.commit,
            )
            deployment = Deployment(
                id=random_id("deploy"), definition_id=record.id, definition_name=name,
                server_id=intent.server, revision=record.current_revision, commit=intent.commit,
                action=ActionKind.UPDATE if record.applied_hash else ActionKind.CREATE,
                status=DeploymentStatus.PENDING, reason=reason, created_at=now,
            )
            self.store.create_deployment(deployment)
            self.store.append_log(deployment.id, f"{deployment.action.value} {name}: {reason.summary}")
            waiting.append(
                self._wait_for_server(deployment, record, summary, intent.server, first=True)
            )
        return tuple(waiting)

    def _wait_for_server(
        self, deployment: Deployment, record: DefinitionRecord, summary: str, server: str,
        *, first: bool,
    ) -> Deployment:
        since = deployment.waiting.since if deployment.waiting is not None else utcnow()
        waiting = replace(
            deployment, status=DeploymentStatus.WAITING,
            waiting=Waiting(WaitKind.SERVER, summary, (server,), since),
        )
        self.store.append_log(deployment.id, f"waiting: {summary}; it runs once the server answers")
        self.waiting(waiting, record, first=first)
        return waiting
