"""The one orchestrator: source -> model -> render -> plan -> apply -> record -> notify.

`Engine.sync()` is the whole story of a sync on one screen: the producer (the
intake) turns new commits into revisions and desired specs, and each server's
applier compares them with what runs there, carries the plan out and reports
its outcome. The steps return values and share no mutable state; an agent's server
differs only in its driver, which carries each action out on the agent's host. Each
server's outcome is its own, and the servers are applied at once, a thread each: one
that is slow or cannot be reached delays no other (it is recorded with its cause, the
others applied and settled as each is done).
Syncs never overlap on one repository (a thread lock and a file lock), so events
that arrive together or twice produce each deployment exactly once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace

from deployally.drivers.base import Driver, DriverConfig
from deployally.drivers.registry import DriverRegistry
from deployally.errors import ValidationError
from deployally.model import desired as desired_mod
from deployally.model.engine_config import EngineConfig
from deployally.model.settings import Settings, parse_settings
from deployally.plan.server import server_intent
from deployally.source.git import GitRepo
from deployally.source.signatures import Verifier
from deployally.source.tree import CommitTree
from deployally.store import ServerRecord, Store
from deployally.sync import requests
from deployally.sync.activity import SyncActivity
from deployally.sync.apply import Applier, Progress
from deployally.sync.backoff import Backoff
from deployally.sync.intake import Intake
from deployally.sync.lock import sync_lock
from deployally.sync.record import StoreJournal
from deployally.types import (
    Deployment,
    DeploymentStatus,
    RefusedCommit,
    ServerIntent,
    ServerOutcome,
)

FAILED = (DeploymentStatus.FAILED, DeploymentStatus.ROLLED_BACK)
REFUSED_KEPT = 20  # refused commits recorded for `status` and the API, newest first
# Servers applied at once, one thread each: a slow one (an agent gating a long rollout, a
# manager that times out) delays no other. Past this many, the rest queue for a thread.
MAX_SERVER_WORKERS = 16


@dataclass(frozen=True)
class SyncReport:
    """What one sync did: the commit it reached, each server's outcome and the files it refused."""

    commit: str | None
    servers: tuple[ServerOutcome, ...] = ()
    errors: tuple[ValidationError, ...] = ()
    refused: tuple[RefusedCommit, ...] = ()  # newer commits not deployed (unsigned), newest first

    @property
    def deployments(self) -> tuple[Deployment, ...]:
        return tuple(d for s in self.servers for d in s.deployments)

    @property
    def unchanged(self) -> int:
        return sum(s.unchanged for s in self.servers)

    @property
    def unreachable(self) -> dict[str, str]:
        """Server name -> why it could not be reached."""
        return {s.server: s.unreachable for s in self.servers if s.unreachable is not None}

    def summary(self) -> str:
        """`2 deployed, 1 failed, 3 unchanged, 0 invalid` (and how many wait, when some do)."""
        statuses = [d.status for d in self.deployments]
        deployed = statuses.count(DeploymentStatus.SUCCESS)
        waiting = statuses.count(DeploymentStatus.WAITING)
        failed = len(statuses) - deployed - waiting
        return summary(deployed, failed, waiting, self.unchanged, len(self.errors))

    @property
    def ok(self) -> bool:
        """No refused file or commit, no failed deployment, no unreachable server (waiting is
        no failure)."""
        return not self.errors and not self.refused and not self.unreachable and not any(
            d.status in FAILED for d in self.deployments
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
        # Built now, so a bad key or a missing gpg stops the engine at start, not at a push.
        self.verifier = (
            Verifier(self.engine_config.trusted_keys, config_path=self.engine_config.path)
            if self.engine_config.verifies_commits
            else None
        )
        self.store = store
        self.drivers = drivers
        # Command-line overrides; None takes the repository's deployally.yaml.
        self.max_parallel = max_parallel
        self.health_timeout_s = health_timeout_s
        self.settings = parse_settings(desired_mod.SETTINGS_PATH, None)
        self.intake = Intake(repo, store, self.engine_config)  # the producer
        self.activity = SyncActivity()  # what the running sync does, for /health
        told = progress or (lambda line: None)

        def noted(line: str) -> None:
            self.activity.note(line)
            told(line)

        self.progress: Progress = noted
        self.journal = StoreJournal(store, progress=noted)
        self.applier = Applier(self.journal, store, progress=noted)
        self.retries = Backoff()  # failed definitions, by name
        # Servers that did not answer, by name: tried again soon (1 s doubling to a minute).
        self.unreachable = Backoff(base_s=1.0, max_s=60.0)
        self._lock = threading.Lock()
        self._observe_lock = threading.Lock()
        self._observe: set[str] = set()  # instances whose settings the next sync looks at
        self._observe_all = False

    def __repr__(self) -> str:
        return f"Engine(repo={self.repo!r})"

    def sync(self) -> SyncReport:
        """Bring every server to the head of the tracked branch, once, the servers at once."""
        self.activity.begin("waiting for the sync lock (another sync runs)")
        try:
            with self._lock, sync_lock(self.store.state_dir):
                return self._sync()
        finally:
            self.activity.end()

    def _sync(self) -> SyncReport:
        branch_head = self.repo.head()  # source
        if branch_head is None:
            return SyncReport(commit=None)
        head, refused = self._deployable(branch_head)  # only what trusted keys signed
        if head is None:
            return SyncReport(commit=None, refused=refused)
        self.store.set_last_attempted_commit(head)
        self.store.unlock_secrets(create=False)  # a key gone or replaced stops the sync, saying so
        self.settings = desired_mod.load_settings(CommitTree(self.repo, head))[0]
        self.activity.now(
            f"reading and rendering the definitions {head[:12]} changed",
            health_timeout_s=self._config().health_timeout_s,
        )
        desired = self.intake.refresh(head)  # model + render, recorded
        for name in desired.changed:
            self.retries.forget(name)  # a changed definition is tried at once
        carried = requests.take(self.store)  # people's redeploys and rollbacks; what waits
        observe = self._observing()
        plans = [
            (server, driver, server_intent(
                server.name, (server.name, server.id), desired,
                open_deployments=carried, backing_off=self.retries.not_due(), observe=observe,
            ))
            for server, driver in self.drivers.applied_here()
        ]
        plans = [(s, d, i) for s, d, i in plans if not _nothing_to_do(s, i)]
        outcomes = self._apply_servers(plans)
        applied: set[str] = set()  # definitions of the servers reached
        for (_server, _driver, intent), outcome in zip(plans, outcomes, strict=True):
            if outcome.unreachable is None:
                applied |= set(intent.definitions)
        if self.applier.stopping.is_set():
            # Asked to stop: what did not begin is carried on by the next start, untouched.
            return SyncReport(head, tuple(outcomes), desired.errors)
        done = {i for o in outcomes for i in o.carried}
        requests.settle(self.store, carried, done, desired.records, applied,
                        backing_off=self.retries.waiting)
        if outcomes and all(o.applied for o in outcomes):
            self.store.set_last_applied_commit(head)
        return SyncReport(head, tuple(outcomes), desired.errors, refused)

    def _apply_servers(
        self, plans: list[tuple[ServerRecord, Driver, ServerIntent]]
    ) -> list[ServerOutcome]:
        """Apply every server at once, one thread each (at most MAX_SERVER_WORKERS), so a slow
        or unreachable one delays no other; each is settled as soon as it is done. The
        outcomes come back in the registry's order, whatever order they finished in."""
        config = self._config()
        changes = {
            server.name: len(set(intent.reasons) | set(intent.open)) for server, _d, intent in plans
        }
        under_way = [server.name for server, _d, _i in plans]
        self.activity.now(
            f"applying {sum(changes.values())} change(s) on {_servers(under_way)}",
            changes=sum(changes.values()),
        )
        outcomes: dict[int, ServerOutcome] = {}
        workers = max(1, min(MAX_SERVER_WORKERS, len(plans)))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="server") as pool:
            futures = {
                pool.submit(self.applier.apply, intent, driver, config): i  # plan+apply+record+notify
                for i, (_server, driver, intent) in enumerate(plans)
            }
            for future in as_completed(futures):
                i = futures[future]
                server, driver, intent = plans[i]
                # An error of the store, say, ends the sync once the other servers are done
                # (their deployments are recorded as they go); the next sync settles them.
                outcome = future.result()
                # Settled here, on the sync's own thread, as each server is done: its retries,
                # its applied commit and what readers see do not wait for a slower server.
                if outcome.deployments:
                    driver.changed_at = time.monotonic()  # what readers saw before is out of date
                outcome = self._settle(server, intent, outcome)
                if outcome.unreachable is None:
                    self._observed(intent.observe)
                outcomes[i] = outcome
                under_way.remove(server.name)
                if under_way:
                    left = sum(changes[name] for name in under_way)
                    self.activity.now(f"applying {left} change(s) on {_servers(under_way)}")
        return [outcomes[i] for i in range(len(plans))]

    def close(self) -> None:
        """Drop what the engine keeps outside the store (the trusted keyring)."""
        if self.verifier is not None:
            self.verifier.close()

    def _deployable(self, branch_head: str) -> tuple[str | None, tuple[RefusedCommit, ...]]:
        """The commit to deploy: the branch head, or with trusted keys the newest commit since
        the last one deployed that a trusted key signed (its signature vouches for its whole
        tree), else the last one deployed. The newer commits are refused and recorded."""
        if self.verifier is None:
            return branch_head, ()
        deployed = self.store.get_meta("desired_commit")
        if deployed is not None and not self.repo.has_commit(deployed):
            deployed = None  # gone after a force-push and gc: look at the branch as it is
        commits = self.repo.commits_between(deployed, branch_head)  # oldest first
        verdicts = self.verifier.check(self.repo, commits)
        signed = [c for c in commits if verdicts[c].trusted]
        target = signed[-1] if signed else deployed
        newer = commits[commits.index(target) + 1 :] if target in commits else commits
        refused = tuple(
            RefusedCommit(c, verdicts[c].summary, verdicts[c].reason)
            for c in reversed(newer[-REFUSED_KEPT:])
        )
        if refused != self.store.refused_commits():  # said once, not at every reconcile
            self.store.set_refused_commits(refused)
            for commit in refused:
                self.progress(f"{commit.sha[:12]}: not deployed: {commit.reason}")
        return target, refused

    def stop_soon(self) -> None:
        """Finish the deployments under way and begin no other (safe from any thread, e.g. a
        signal handler); the next start carries on with the rest."""
        self.applier.stopping.set()

    def observe_settings(self, names: Collection[str] | None = None) -> None:
        """Have the next sync look at these instances' settings (None: every instance), and put
        back what their specs say; safe from any thread."""
        with self._observe_lock:
            if names is None:
                self._observe_all = True
            else:
                self._observe.update(names)

    def _observing(self) -> Collection[str] | None:
        with self._observe_lock:
            return None if self._observe_all else frozenset(self._observe)

    def _observed(self, names: Collection[str]) -> None:
        """These were looked at (on a server that answered)."""
        with self._observe_lock:
            self._observe.difference_update(names)
            self._observe_all = False

    def next_retry_s(self) -> float | None:
        """Seconds until the earliest failed definition or unreachable server is tried again."""
        due = [s for s in (self.retries.next_retry_s(), self.unreachable.next_retry_s()) if s is not None]
        return min(due, default=None)

    def _config(self) -> DriverConfig:
        """Parallelism and health timeout: the command line's, else the repository's settings."""
        return driver_config(self.settings, self.max_parallel, self.health_timeout_s)

    def _settle(
        self, server: ServerRecord, intent: ServerIntent, outcome: ServerOutcome
    ) -> ServerOutcome:
        """Retry schedules from one server's outcome; the applied commit; for an unreachable
        server, its changes recorded as waiting and counted in the outcome."""
        if outcome.unreachable is not None:
            waiting = self.journal.unreachable(intent, outcome.unreachable)
            self.unreachable.failed(server.name)
            return replace(outcome, deployments=outcome.deployments + waiting)
        self.unreachable.forget(server.name)
        for d in outcome.deployments:
            if d.status is DeploymentStatus.SUCCESS:
                self.retries.forget(d.definition_name)
            elif d.status in FAILED:
                self.retries.failed(d.definition_name)  # waiting is no failure: no backoff
        if outcome.applied and outcome.commit is not None:
            self.store.set_server_applied_commit(server.id, outcome.commit)
        return outcome


def _nothing_to_do(server: ServerRecord, intent: ServerIntent) -> bool:
    """A registered server that no definition has named and nothing was ever applied to runs
    nothing of ours: it is not asked, so an agent not started yet holds up no sync. (`local`
    is always asked: an engine from before servers recorded their applied commit may have
    instances there.)"""
    return (
        server.kind != "local" and server.applied_commit is None
        and not intent.definitions and not intent.open
    )


def _servers(names: list[str]) -> str:
    """`server local`, or `servers edge, local`: what a sync applies to, for /health."""
    return f"server {names[0]}" if len(names) == 1 else f"servers {', '.join(names)}"


def summary(deployed: int, failed: int, waiting: int, unchanged: int, invalid: int) -> str:
    """The one-line count of a sync, as `sync`, the push hook and the API's callers print it."""
    waits = f"{waiting} waiting, " if waiting else ""
    return f"{deployed} deployed, {failed} failed, {waits}{unchanged} unchanged, {invalid} invalid"


def driver_config(
    settings: Settings, max_parallel: int | None, health_timeout_s: float | None
) -> DriverConfig:
    """A sync's driver settings: the command line's overrides, else the repository's."""
    return DriverConfig(
        health_timeout_s=health_timeout_s or settings.health_timeout,
        parallel=max_parallel or settings.max_parallel,
        max_unavailable=settings.max_unavailable,
        min_ready_s=settings.min_ready,  # for a spec recorded before specs carried their own
    )
