"""The per-server applier: intent x live -> plan -> actions in dependency waves -> typed outcomes.

It shares nothing with the engine but its arguments: the intent (what the server
should run), the driver (the server), a journal (where each deployment is
recorded as it happens) and the secrets it may resolve; it returns a
ServerOutcome. An agent's server is applied by this same code in the engine: only its
driver differs (drivers/agent/), carrying each action out on the agent's host.

Each action is one deployment: pending -> running -> success / failed /
rolled_back, or *waiting* while a dependency is not running and healthy. A
waiting deployment is no failure: it gets no backoff and no deployment.failed,
and the next sync carries it on (the same deployment) once the dependency is up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from typing import Protocol

from deployally import secrets
from deployally.drivers.base import Driver, DriverConfig
from deployally.errors import DeployAllyError, DriverError, NotBegun, ServerLost
from deployally.identity import random_id
from deployally.model.definitions import secret_names, unorderable
from deployally.plan.order import order
from deployally.plan.server import plan_server
from deployally.secrets import SecretSource
from deployally.types import (
    Action,
    ActionKind,
    DefinitionRecord,
    Deployment,
    DeploymentStatus,
    Plan,
    Reason,
    ReasonKind,
    ServerIntent,
    ServerOutcome,
    Waiting,
    WaitKind,
)

# The spec itself failed its health gate: another try of the same spec would take the healthy
# old instance down again for nothing.
UNREADY_NOTE = (
    "not retried by itself: a new commit of the definition, a new value of a secret it uses, "
    "or a redeploy (POST /deployments) tries again"
)
# Definitions in flight per concurrent create/start on the server. Most of them wait for
# readiness, idle on the driver's event subscription: enough must be in flight that Docker's
# start rate times the readiness wait never runs out of work (7.5 starts/s x a 2 s wait is 15,
# a healthcheck's first pass at 5 s, ~40, per 4 slots).
IN_FLIGHT_PER_SLOT = 16
REQUESTED = (ReasonKind.OPERATOR, ReasonKind.ROLLBACK)

Progress = Callable[[str], None]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Journal(Protocol):
    """Where an applier records its deployments as they happen (the engine's store)."""

    def opened(self, deployment: Deployment) -> None:
        """A new deployment, pending."""

    def log(self, deployment_id: str, message: str) -> None:
        """One line of a deployment's log, already masked."""

    def superseded(self, deployment: Deployment, revision: int | None) -> None:
        """A waiting deployment that `revision` replaces before it could run."""

    def waiting(self, deployment: Deployment, record: DefinitionRecord | None, *, first: bool) -> None:
        """The deployment waits for what its `waiting` says; `first` when it just began to."""

    def started(self, deployment: Deployment) -> None:
        """The deployment is running."""

    def finished(
        self,
        action: Action,
        record: DefinitionRecord | None,
        deployment: Deployment,
        message: str,
        *,
        unready: bool = False,
    ) -> None:
        """The deployment ended: success, failed or rolled_back, with the message saying why;
        `unready` when its new instance failed the health gate (not to be retried by itself)."""


class Applier:
    """Brings one server to its intent and reports each deployment through a journal."""

    def __init__(self, journal: Journal, secrets: SecretSource, *, progress: Progress) -> None:
        self.journal = journal
        self.secrets = secrets  # the store
        self.progress = progress
        # Set when the engine is asked to stop: deployments already under way finish, none
        # begins (one waiting for its turn waits for the next start instead).
        self.stopping = threading.Event()

    def __repr__(self) -> str:
        return f"Applier(journal={self.journal!r})"

    def apply(self, intent: ServerIntent, driver: Driver, config: DriverConfig) -> ServerOutcome:
        """Observe, plan, apply: the server's outcome, or the cause it could not be reached."""
        driver.configure(config)
        try:
            live = driver.recover_and_list(self.progress)  # a crash mid-update settled first
            # The list call does not say what restart policy or limits an instance runs with.
            live = {n: driver.settings(i) if n in intent.observe else i for n, i in live.items()}
        except DriverError as exc:
            return ServerOutcome(intent.server, intent.commit, unreachable=str(exc))
        the_plan = plan_server(intent, live)
        results = self._carry_out(the_plan, intent, driver, config.parallel)
        open_ids = {d.id for d in intent.open.values()}
        return ServerOutcome(
            server=intent.server,
            commit=intent.commit,
            deployments=tuple(d for d, moved in results if moved),
            unchanged=sum(1 for a in the_plan.actions if a.kind is ActionKind.NOOP),
            waiting=sum(1 for d, _ in results if d.status is DeploymentStatus.WAITING),
            carried=frozenset(d.id for d, _ in results if d.id in open_ids),
        )

    def _carry_out(
        self, the_plan: Plan, intent: ServerIntent, driver: Driver, parallel: int
    ) -> list[tuple[Deployment, bool]]:
        """The plan in dependency waves, in parallel within a wave; (deployment, moved) each."""
        done: list[tuple[Deployment, bool]] = []
        actions = list(the_plan.changed())
        # A dependency is ready when it runs its applied spec, or succeeds in this sync.
        failed = set(intent.not_ready) - {a.name for a in actions}
        stuck = unorderable({
            a.name: a.desired.depends_on if a.desired and a.kind is not ActionKind.REMOVE else ()
            for a in actions
        })
        for action in (a for a in actions if a.name in stuck):
            # A cycle blocks only its own members; everything else still goes out.
            cycle = f"a depends_on cycle among {', '.join(sorted(stuck))}"
            done.append(self._deploy(driver, action, intent, failed, cycle=cycle))
        failed |= stuck
        # Health waits are idle; the driver bounds the create/start calls themselves (its
        # `parallel` slots), so this pool bounds only how many definitions are under way.
        with ThreadPoolExecutor(max_workers=parallel * IN_FLIGHT_PER_SLOT) as pool:
            for wave in order(a for a in actions if a.name not in stuck):
                if self.stopping.is_set():
                    break  # what is left runs on the next start
                futures = [
                    pool.submit(self._deploy_unless_stopping, driver, action, intent, failed)
                    for action in wave
                ]
                for future in futures:
                    result = future.result()
                    if result is None:
                        continue
                    deployment, moved = result
                    done.append((deployment, moved))
                    if deployment.status is not DeploymentStatus.SUCCESS:
                        failed.add(deployment.definition_name)  # its dependents wait
        return done

    def _deploy_unless_stopping(
        self, driver: Driver, action: Action, intent: ServerIntent, failed: set[str]
    ) -> tuple[Deployment, bool] | None:
        """`_deploy`, unless the engine was asked to stop before this one's turn came (None)."""
        if self.stopping.is_set() and action.name not in intent.open:
            return None
        return self._deploy(driver, action, intent, failed)

    def _deploy(
        self,
        driver: Driver,
        action: Action,
        intent: ServerIntent,
        failed: set[str],
        *,
        cycle: str | None = None,
    ) -> tuple[Deployment, bool]:
        """One action as one deployment: pending -> running -> outcome, or waiting.
        Returns it, and whether it moved (False: still waiting, as before this sync)."""
        name = action.name
        record = intent.definitions.get(name)
        reason = action.reason or Reason(ReasonKind.DRIFT, "live state differs", intent.commit)
        revision = record.current_revision if record else None
        carried = intent.open.get(name)
        if carried is not None and carried.reason.kind not in REQUESTED and carried.revision != revision:
            self.journal.superseded(carried, revision)
            carried = None
        deployment = Deployment(
            id=carried.id if carried else random_id("deploy"),
            definition_id=record.id if record else (action.live.definition_id if action.live else ""),
            definition_name=name,
            server_id=driver.server,
            revision=revision,
            commit=intent.commit,
            action=action.kind,
            status=carried.status if carried else DeploymentStatus.PENDING,
            reason=reason,
            created_at=carried.created_at if carried else utcnow(),
            waiting=carried.waiting if carried else None,
        )
        if carried is None:
            self.journal.opened(deployment)
        masker = secrets.SecretMasker()
        # Only the secrets this definition references, each at the version its spec pins.
        versions = dict(action.desired.secrets) if action.desired else {}
        named = secret_names(record.params) if record else set()
        lookup = secrets.lookup_from(self.secrets, masker, versions=versions, named=named)
        for secret_name in versions:
            try:
                lookup(secret_name)
            except DeployAllyError:
                pass  # reported by resolve() below

        def log(message: str) -> None:
            self.journal.log(deployment.id, masker.mask(message))

        blocked = [d for d in (action.desired.depends_on if action.desired else ()) if d in failed]
        if blocked and cycle is None:
            summary = f"dependency {', '.join(blocked)} is not running and healthy"
            was = deployment.waiting
            if was is not None and was.summary == summary:
                return deployment, False  # still waiting for the same thing: nothing new
            deployment = replace(
                deployment,
                status=DeploymentStatus.WAITING,
                waiting=Waiting(WaitKind.DEPENDENCY, summary, tuple(blocked), was.since if was else utcnow()),
            )
            if was is None:
                log(f"{action.kind.value} {name}: {reason.summary}")
            log(f"waiting: {summary}")
            self.journal.waiting(deployment, record, first=was is None)
            return deployment, True

        pending = deployment
        log(f"{action.kind.value} {name}: {reason.summary}")
        for change in action.changes:
            log(f"  {change.field}: {_short(change.before)} -> {_short(change.after)}")

        def begin() -> bool:
            """The driver is about to change the server: running, deployment.started. Not
            when the engine is stopping: it then changes nothing (NotBegun)."""
            nonlocal deployment
            if deployment.status is DeploymentStatus.RUNNING:
                return True
            if self.stopping.is_set():
                return False
            deployment = replace(
                deployment, status=DeploymentStatus.RUNNING, started_at=utcnow(), waiting=None
            )
            self.journal.started(deployment)
            return True

        unready = False
        if cycle is not None:
            begin()
            status, message = DeploymentStatus.FAILED, f"not applied: {cycle}"
            log(message)
        else:
            try:
                result = driver.apply(
                    action,
                    revision=revision,
                    commit=intent.commit,
                    resolve=lambda text: secrets.resolve(text, lookup),
                    log=log,
                    begin=begin,
                )
                status, message, unready = result.status, result.message, result.unready
                if unready:
                    log(UNREADY_NOTE)
            except ServerLost as exc:
                # The server went away mid-call: what it did is unknown, so nothing is
                # recorded as done; the next sync looks at what runs there and carries this on.
                deployment = replace(deployment, status=DeploymentStatus.WAITING, waiting=Waiting(
                    WaitKind.SERVER, f"{exc}; the next sync looks at what runs there and carries it on",
                    (driver.server,), utcnow()))
                log(f"waiting: {deployment.waiting.summary if deployment.waiting else ''}")
                self.journal.waiting(deployment, record, first=True)
                return deployment, True
            except NotBegun:
                # Its turn came as the engine stopped: nothing changed; it waits for the next start.
                deployment = replace(pending, status=DeploymentStatus.WAITING, waiting=Waiting(
                    WaitKind.RESTART, "the engine stopped before it began; the next start carries it on",
                    (), utcnow()))
                log(f"waiting: {deployment.waiting.summary if deployment.waiting else ''}")
                self.journal.waiting(deployment, record, first=True)
                return deployment, True
            except DeployAllyError as exc:
                status, message = DeploymentStatus.FAILED, str(exc)
                log(f"error: {masker.mask(message)}")
        begin()  # a driver that failed before its first change (a pull): started all the same
        deployment = replace(deployment, status=status, finished_at=utcnow())
        self.journal.finished(action, record, deployment, masker.mask(message), unready=unready)
        return deployment, True


def _short(value: object, limit: int = 80) -> str:
    text = secrets.display(repr(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"
