"""The one orchestrator: source -> model -> render -> plan -> apply -> record -> notify.

`Engine.sync()` is the whole story of a sync on one screen: the intake turns new
commits into revisions and desired specs, each server's plan compares them with
its live containers, and the deployer carries the plan out and records it.
Syncs never overlap on one repository (a thread lock and a file lock), so
events that arrive together or twice produce each deployment exactly once.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace

from deployally.drivers.base import Driver, DriverConfig
from deployally.drivers.registry import DriverRegistry
from deployally.errors import DriverError, ValidationError
from deployally.model import desired as desired_mod
from deployally.model.engine_config import EngineConfig
from deployally.model.settings import parse_settings
from deployally.plan.actions import plan
from deployally.source.git import GitRepo
from deployally.source.tree import CommitTree
from deployally.store import ServerRecord, Store
from deployally.sync.apply import Deployer, Progress
from deployally.sync.backoff import Backoff
from deployally.sync.intake import Intake, Refresh
from deployally.sync.lock import sync_lock
from deployally.types import (
    Action,
    ActionKind,
    DefinitionRecord,
    Deployment,
    DeploymentStatus,
    Plan,
    Reason,
    ReasonKind,
)


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


class Engine:
    """Keeps one repository's definitions running on their servers."""

    def __init__(
        self,
        repo: GitRepo,
        store: Store,
        drivers: DriverRegistry[ServerRecord],
        *,
        max_parallel: int | None = None,
        health_timeout_s: float | None = None,
        progress: Progress | None = None,
        engine_config: EngineConfig | None = None,
    ) -> None:
        self.repo = repo
        self.engine_config = engine_config or EngineConfig()
        # Command-line overrides; None takes the repository's deployally.yaml.
        self.max_parallel = max_parallel
        self.health_timeout_s = health_timeout_s
        self.settings = parse_settings(desired_mod.SETTINGS_PATH, None)
        self.store = store
        self.drivers = drivers
        self.backoff = Backoff()
        self.intake = Intake(repo, store, self.backoff, self.engine_config)
        self.deployer = Deployer(
            store, self.backoff, progress=progress or (lambda line: None)
        )
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Engine(repo={self.repo!r})"

    def sync(self) -> SyncReport:
        """Bring live state to the head of the tracked branch, once, in order."""
        with self._lock, sync_lock(self.store.state_dir):
            self.deployer.take_requests()  # close what a crash left open; keep people's requests
            head = self.repo.head()  # source
            if head is None:
                return SyncReport(commit=None)
            self.store.set_last_attempted_commit(head)
            self.store.unlock_secrets(create=False)  # a key gone or replaced stops the sync, saying so
            self.settings = desired_mod.load_settings(CommitTree(self.repo, head))[0]
            refresh = self.intake.refresh(head)  # model + render, recorded
            records = {r.name: r for r in self.store.definitions()}
            deployments: list[Deployment] = []
            unchanged = 0
            for server, driver in self.drivers.applied_here():
                self._configure(driver)
                try:
                    driver.recover(self.deployer.progress)
                    the_plan = self._plan(server, driver, records, refresh)  # plan
                except DriverError as exc:
                    self.deployer.record_unreachable(server.name, driver, records, refresh, head, exc)
                    raise
                unchanged += sum(1 for a in the_plan.actions if a.kind is ActionKind.NOOP)
                deployments += self.deployer.apply(driver, the_plan, records, head)  # apply+record+notify
            self.deployer.settle_requests(records)
            if all(d.status is DeploymentStatus.SUCCESS for d in deployments):
                self.store.set_last_applied_commit(head)
            return SyncReport(head, tuple(deployments), tuple(refresh.errors), unchanged)

    def next_retry_s(self) -> float | None:
        """Seconds until the earliest failed definition may be retried; None when none failed."""
        return self.backoff.next_retry_s()

    def _configure(self, driver: Driver) -> None:
        """Parallelism and health timeout: the command line's, else the repository's settings."""
        parallel = self.max_parallel or self.settings.max_parallel
        self.deployer.max_parallel = parallel
        driver.configure(
            DriverConfig(
                health_timeout_s=self.health_timeout_s or self.settings.health_timeout,
                parallel=parallel,
            )
        )

    def _plan(
        self,
        server: ServerRecord,
        driver: Driver,
        records: Mapping[str, DefinitionRecord],
        refresh: Refresh,
    ) -> Plan:
        """Desired specs of this server against its live containers."""
        keys = (server.name, server.id)  # a definition names its server either way
        mine = {n: r for n, r in records.items() if r.server_id in keys}
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
            request = self.deployer.requested.get(action.name)
            if action.kind is ActionKind.NOOP and request and request.reason.kind is ReasonKind.OPERATOR:
                # A redeploy asked for by an operator replaces the container even if unchanged.
                action = replace(action, kind=ActionKind.UPDATE, reason=request.reason)
            if self._due(action) or request is not None:
                actions.append(action)
        return Plan(tuple(actions))

    def _due(self, action: Action) -> bool:
        """Failed definitions retry with exponential backoff, not in a hot loop."""
        return action.kind is ActionKind.NOOP or self.backoff.due(action.name)
