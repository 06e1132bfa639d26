"""`deployally serve`: one asyncio loop running the API, the engine, the watcher, webhooks and events.

Blocking work never runs on the loop. Syncs run in one worker thread, so they
never overlap; triggers that arrive during a sync coalesce into exactly one
follow-up sync. API handlers use a separate bounded pool, so the API answers
while a deploy runs. The sync lock (lock.py) keeps a hook-run sync in another
process out of the way too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
from aiohttp import web

from .api.app import create_app
from .api.sync import SYNC, SyncOutcome
from .api.webhooks import WAKE_SENDER
from .drivers.events import (
    INSTANCE_HEALTHY,
    INSTANCE_STARTED,
    INSTANCE_STOPPED,
    INSTANCE_UNHEALTHY,
    DockerEvents,
    InstanceEvent,
)
from .errors import DeployAllyError, NotFound, SourceError
from .identity import instance_id
from .logs import fields
from .notify import Schedule, Sender
from .source.git import GitRepo
from .source.watcher import RefWatcher
from .workspace import Workspace, default_state_dir

log = logging.getLogger("deployally.server")

ENGINE_FILE = "engine.json"
MIRROR_DIR = "mirror.git"
HOOK_TOKEN_NAME = "hook"
API_THREADS = 8
# Docker events for one container come in bursts (die, then destroy): wait a moment, sync once.
HEAL_DELAY_S = 0.5
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 60.0
REACHED_KEPT = 100

_SCP_LIKE = re.compile(r"^[\w.-]+@[\w.-]+:")
# Seconds between webhook retries, e.g. "0.2,0.2,0.2" (the last repeats): for tests and drills,
# so a retry is seen in seconds instead of the production schedule's minutes.
WEBHOOK_BACKOFF_ENV = "DEPLOYALLY_WEBHOOK_BACKOFF"


def is_remote(repo: str) -> bool:
    """True for a URL to mirror (https://, ssh://, file://, user@host:path); False for a local path."""
    return "://" in repo or bool(_SCP_LIKE.match(repo))


@dataclass(frozen=True)
class ServeConfig:
    """What `deployally serve` was asked to run."""

    repo: str  # a local working or bare repository, or a remote URL to mirror
    state_dir: Path | None = None
    branch: str = "main"
    host: str = "127.0.0.1"
    port: int = 8080
    reconcile_interval_s: float = 30.0
    webhook_secret: str | None = None
    health_timeout_s: float = 120.0
    max_parallel: int = 4

    def resolved_state_dir(self) -> Path:
        """The state directory: as given, or `.deployally/` beside a local repo (or in the cwd)."""
        if self.state_dir is not None:
            return Path(self.state_dir).resolve()
        if is_remote(self.repo):
            return default_state_dir(Path.cwd())
        return default_state_dir(Path(self.repo).resolve())


def webhook_schedule(text: str | None) -> Schedule | None:
    """The retry schedule DEPLOYALLY_WEBHOOK_BACKOFF asks for ("0.2,0.2,..."), or None for the default."""
    if not text or not text.strip():
        return None
    try:
        delays = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise DeployAllyError(
            f"{WEBHOOK_BACKOFF_ENV}={text!r}: use seconds separated by commas, e.g. 1,5,30"
        ) from None
    if any(d < 0 for d in delays):
        raise DeployAllyError(f"{WEBHOOK_BACKOFF_ENV}={text!r}: delays cannot be negative")
    return lambda attempt: delays[min(max(attempt, 1), len(delays)) - 1]


# ---------------------------------------------------------------- engine.json


def read_engine_file(state_dir: Path) -> dict[str, Any] | None:
    """The running engine's URL and hook token, or None when no engine runs on this state dir."""
    try:
        data = json.loads((state_dir / ENGINE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "url" in data and "token" in data else None


def _write_private(path: Path, text: str) -> None:
    """Write `text` readable by the owner only (it holds a token), replacing atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


# ---------------------------------------------------------------- the sync loop


class SyncLoop:
    """Runs syncs one at a time in one thread; triggers during a sync make exactly one more."""

    def __init__(self, run_sync: Any, *, on_recovered: Any = None) -> None:
        self._run_sync = run_sync  # () -> SyncOutcome, blocking
        self._on_recovered = on_recovered
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sync")
        self._wanted = asyncio.Event()
        self._why: list[str] = []
        self._waiters: list[asyncio.Future[SyncOutcome]] = []
        # The first sync that reached each commit: it holds that commit's deployments.
        self._reached: OrderedDict[str, SyncOutcome] = OrderedDict()
        self._retry: asyncio.TimerHandle | None = None
        self.running = False
        self.syncs = 0
        self.failures = 0  # in a row
        self.last_error: str | None = None
        self.last_outcome: SyncOutcome | None = None
        self.last_finished_at: datetime | None = None

    def __repr__(self) -> str:
        return f"SyncLoop(syncs={self.syncs}, running={self.running}, failures={self.failures})"

    def trigger(self, why: str) -> None:
        """Ask for a sync; call on the loop's thread."""
        self._why.append(why)
        self._wanted.set()

    async def sync_covering(self, commit: str | None, why: str) -> SyncOutcome:
        """Wait for a sync that starts after now; answer with the first sync that reached `commit`."""
        if commit is not None and commit in self._reached:
            return self._reached[commit]
        waiter: asyncio.Future[SyncOutcome] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self.trigger(why)
        outcome = await waiter
        return self._reached.get(commit, outcome) if commit else outcome

    async def run(self, stop: asyncio.Event) -> None:
        """Sync whenever asked, until `stop`; a sync in progress is always finished first."""
        loop = asyncio.get_running_loop()
        try:
            while not stop.is_set():
                wanted = asyncio.ensure_future(self._wanted.wait())
                stopping = asyncio.ensure_future(stop.wait())
                await asyncio.wait({wanted, stopping}, return_when=asyncio.FIRST_COMPLETED)
                wanted.cancel()
                stopping.cancel()
                if stop.is_set():
                    break
                self._wanted.clear()
                why, self._why = self._why, []
                waiters, self._waiters = self._waiters, []
                await self._sync_once(loop, why, waiters)
        finally:
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_exception(SourceError("the engine is stopping; push again later"))
            if self._retry is not None:
                self._retry.cancel()
            self._executor.shutdown(wait=True)

    async def _sync_once(
        self,
        loop: asyncio.AbstractEventLoop,
        why: list[str],
        waiters: list[asyncio.Future[SyncOutcome]],
    ) -> None:
        self.running = True
        started = time.monotonic()
        try:
            outcome: SyncOutcome = await loop.run_in_executor(self._executor, self._run_sync)
        except Exception as exc:  # any failure is reported and retried; the loop lives on
            self.failures += 1
            self.last_error = str(exc) or type(exc).__name__
            delay = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (self.failures - 1))
            log.warning(
                "sync failed; retrying in %.0fs",
                delay,
                extra=fields(error=self.last_error, why=",".join(sorted(set(why)))),
                exc_info=not isinstance(exc, DeployAllyError),
            )
            if self._retry is not None:
                self._retry.cancel()
            self._retry = loop.call_later(delay, self.trigger, "retry after a failed sync")
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        finally:
            self.running = False
            self.syncs += 1
        recovered = self.failures > 0
        self.failures = 0
        self.last_error = None
        self.last_outcome = outcome
        self.last_finished_at = datetime.now(UTC)
        commit = outcome.report.commit
        if commit is not None and commit not in self._reached:
            self._reached[commit] = outcome
            while len(self._reached) > REACHED_KEPT:
                self._reached.popitem(last=False)
        if outcome.next_retry_s is not None:
            # The engine backs failed definitions off; come back exactly when one is due.
            if self._retry is not None:
                self._retry.cancel()
            self._retry = loop.call_later(
                outcome.next_retry_s + 0.1, self.trigger, "retry a failed definition"
            )
        report = outcome.report
        new_errors = bool(report.errors) and commit is not None and self._reached.get(commit) is outcome
        if report.deployments or new_errors or recovered:
            log.info(
                "sync done",
                extra=fields(
                    commit=(commit or "")[:12],
                    deployments=len(report.deployments),
                    failed=sum(1 for d in report.deployments if d.status.value != "success"),
                    invalid=len(report.errors),
                    unchanged=report.unchanged,
                    seconds=round(time.monotonic() - started, 3),
                    why=",".join(sorted(set(why))),
                ),
            )
        if recovered:
            if self._on_recovered is not None:
                self._on_recovered()
            # Whatever failed may have hidden a commit from a waiter's sync; look again.
            self.trigger("recovered")
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(outcome)


# ---------------------------------------------------------------- the process


class EngineProcess:
    """The long-running engine for one repository: API, syncs, watcher, events and webhooks."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.state_dir = config.resolved_state_dir()
        self.branch = config.branch
        self.webhook_secret = config.webhook_secret
        self.remote_url = config.repo if is_remote(config.repo) else None
        self._lines: list[str] = []
        self._lines_lock = threading.Lock()
        self._fetch_error: str | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._heal: asyncio.TimerHandle | None = None
        self.url = ""
        self.ws: Workspace | None = None
        self.watcher: RefWatcher | None = None
        self.events: DockerEvents | None = None
        self._sender: Sender | None = None
        # Read before anything starts, so a bad value stops `serve` with one readable line.
        self._webhook_schedule = webhook_schedule(os.environ.get(WEBHOOK_BACKOFF_ENV))
        self.sync_loop = SyncLoop(self._sync_blocking, on_recovered=self._rewatch)

    def __repr__(self) -> str:
        return f"EngineProcess({self.config.repo!r}, state_dir={str(self.state_dir)!r})"

    # ------------------------------------------------------------ SyncService (api/sync.py)

    def trigger(self, why: str) -> None:
        """Ask for a sync soon (from the loop's thread)."""
        self.sync_loop.trigger(why)

    async def sync_covering(self, commit: str | None, why: str) -> SyncOutcome:
        """Wait for the sync that covers `commit` and answer with its outcome."""
        return await self.sync_loop.sync_covering(commit, why)

    def trigger_threadsafe(self, why: str = "API write") -> None:
        """Ask for a sync from any thread (API writes run in the executor)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.sync_loop.trigger, why)

    # ------------------------------------------------------------ health

    def status(self) -> dict[str, Any]:
        """The engine's part of /api/v1/health: degraded with the reason after a failed sync or fetch."""
        reasons = []
        if self.sync_loop.last_error:
            reasons.append(
                f"the last {self.sync_loop.failures} sync(s) failed: {self.sync_loop.last_error}"
            )
        if self._fetch_error:
            reasons.append(f"fetching the remote failed: {self._fetch_error}")
        last = self.sync_loop.last_outcome
        out: dict[str, Any] = {
            "status": "degraded" if reasons else "ok",
            "syncs": self.sync_loop.syncs,
            "syncing": self.sync_loop.running,
            "last_sync_at": self.sync_loop.last_finished_at.isoformat().replace("+00:00", "Z")
            if self.sync_loop.last_finished_at
            else None,
            "last_sync_commit": last.report.commit if last else None,
            "watching": self.watcher.running if self.watcher else False,
            "docker_events": self.events.running if self.events else False,
            "mirror": self.remote_url,
        }
        if reasons:
            out["reason"] = "; ".join(reasons)
        return out

    # ------------------------------------------------------------ running

    def open_workspace(self) -> Workspace:
        """The workspace to serve: a local repo as is, a remote mirrored into the state dir (blocking)."""
        repo_path: Path
        if self.remote_url is not None:
            repo_path = GitRepo.mirror(self.remote_url, self.state_dir / MIRROR_DIR, self.branch).path
        else:
            repo_path = Path(self.config.repo).resolve()
        ws = Workspace.open(
            repo_path,
            self.state_dir,
            self.branch,
            progress=self._progress,
            health_timeout_s=self.config.health_timeout_s,
            max_parallel=self.config.max_parallel,
        )
        _ = ws.repo  # raises a readable SourceError now for a path that is not a repository
        if self.remote_url is None and ws.state_dir != default_state_dir(ws.repo.path):
            # The post-receive hook runs with only the repository; this is how it finds the engine.
            ws.repo.set_config("deployally.stateDir", str(ws.state_dir))
        return ws

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT; the sync in progress finishes first. Returns the exit code."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stop = stop = asyncio.Event()
        api_pool = ThreadPoolExecutor(max_workers=API_THREADS, thread_name_prefix="api")
        loop.set_default_executor(api_pool)
        ws = self.ws = await loop.run_in_executor(None, self.open_workspace)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)

        app = create_app(ws, trigger_sync=self.trigger_threadsafe, status=self.status)
        app[SYNC] = self
        app[WAKE_SENDER] = self._wake_sender
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port)
        await site.start()
        port = runner.addresses[0][1]
        host = "127.0.0.1" if self.config.host in ("0.0.0.0", "::", "") else self.config.host
        self.url = f"http://{host}:{port}"
        token = await loop.run_in_executor(None, self._hook_token, ws)
        engine_file = self.state_dir / ENGINE_FILE
        _write_private(
            engine_file,
            json.dumps({"url": self.url, "token": token, "pid": os.getpid(),
                        "repo": str(ws.repo_path), "branch": self.branch}),
        )
        log.info(
            "serving",
            extra=fields(url=self.url, repo=self.config.repo, state_dir=str(self.state_dir),
                         branch=self.branch, engine_id=ws.engine_id),
        )

        sender = self._sender = Sender(ws.store, schedule=self._webhook_schedule)
        self._start_watching(ws)
        self.events = DockerEvents(docker.from_env, self._on_instance_event)
        self.events.start()
        tasks = [
            asyncio.create_task(self.sync_loop.run(stop), name="sync"),
            asyncio.create_task(sender.run(stop), name="webhooks"),
            asyncio.create_task(self._every_interval(stop), name="interval"),
        ]
        self.sync_loop.trigger("start")
        try:
            await stop.wait()
            log.info("stopping: finishing the sync in progress")
            if self.watcher is not None:
                self.watcher.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self.events.stop()
            engine_file.unlink(missing_ok=True)
            await loop.run_in_executor(None, _revoke_quietly, ws, HOOK_TOKEN_NAME)
            await runner.cleanup()
            ws.close()
            api_pool.shutdown(wait=False, cancel_futures=True)
        log.info("stopped")
        return 0

    # ------------------------------------------------------------ pieces

    def _hook_token(self, ws: Workspace) -> str:
        """A fresh write token for the post-receive hook; the one a killed engine left is replaced."""
        _revoke_quietly(ws, HOOK_TOKEN_NAME)
        return ws.store.create_token(HOOK_TOKEN_NAME, "write")

    def _sync_blocking(self) -> SyncOutcome:
        """One sync (in the sync thread): fetch a mirrored remote, then Engine.sync()."""
        assert self.ws is not None
        with self._lines_lock:
            self._lines = []
        if self.remote_url is not None:
            try:
                self.ws.repo.fetch()
                self._fetch_error = None
            except SourceError as exc:
                # Keep reconciling to the last fetched commit; health says why it is behind.
                self._fetch_error = str(exc)
                log.warning("fetch failed", extra=fields(error=str(exc)))
        report = self.ws.engine.sync()
        self._wake_sender()  # the sync's deployment and definition events go out now
        with self._lines_lock:
            lines = tuple(self._lines)
        return SyncOutcome(report, lines, self.ws.engine.next_retry_s())

    def _progress(self, line: str) -> None:
        """The engine's progress lines ("site: revision 3 deployed"): logged, and kept for the hook."""
        with self._lines_lock:
            self._lines.append(line)
        log.info(line)

    def _wake_sender(self) -> None:
        """Webhooks queued just now go out at once (safe from any thread)."""
        if self._sender is not None:
            self._sender.wake()

    def _start_watching(self, ws: Workspace) -> None:
        if self.remote_url is not None:
            return  # a mirror changes only when we fetch it
        self.watcher = RefWatcher(ws.repo.git_dir, lambda: self.trigger_threadsafe("ref changed"))
        try:
            self.watcher.start()
        except OSError as exc:
            log.warning("cannot watch the repository; relying on the interval", extra=fields(error=str(exc)))

    def _rewatch(self) -> None:
        """After a fault cleared: a repository moved away and back needs its watches anew."""
        if self.watcher is not None and not self._stopping:
            try:
                self.watcher.restart()
            except OSError as exc:
                log.warning("cannot watch the repository", extra=fields(error=str(exc)))

    @property
    def _stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    async def _every_interval(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.config.reconcile_interval_s)
            except TimeoutError:
                self.sync_loop.trigger("reconcile interval")

    def _on_instance_event(self, event: InstanceEvent) -> None:
        """Docker told us about a managed container (events thread): webhook it, heal if it went down."""
        ws = self.ws
        if ws is None or not event.name:
            return
        record = ws.store.definition(event.name)
        if record is None or record.id != event.definition_id:
            return  # another engine's container
        if event.event != INSTANCE_HEALTHY:
            applied = (
                ws.store.revision(record.id, record.applied_revision)
                if record.applied_revision is not None
                else None
            )
            ws.store.enqueue_event(
                event.event,
                {
                    "instance_id": instance_id(event.container_id),
                    "definition_id": record.id,
                    "name": event.name,
                    "server_id": record.server_id,
                    "revision": record.applied_revision,
                    "commit": applied.commit if applied is not None else None,
                    "status": _INSTANCE_STATUS[event.event],
                    "exit_code": event.exit_code,
                    "at": event.at.isoformat().replace("+00:00", "Z"),
                },
            )
            self._wake_sender()
        went_down = event.event in (INSTANCE_STOPPED, INSTANCE_UNHEALTHY)
        if went_down and not record.operator_stopped and self._loop is not None:
            self._loop.call_soon_threadsafe(self._heal_soon, event.event)

    def _heal_soon(self, why: str) -> None:
        if self._heal is None and self._loop is not None:
            self._heal = self._loop.call_later(HEAL_DELAY_S, self._heal_now, why)

    def _heal_now(self, why: str) -> None:
        self._heal = None
        self.sync_loop.trigger(why)

    def _on_signal(self, signum: int) -> None:
        if self._stopping:
            log.warning("second signal: exiting at once")
            os._exit(128 + signum)
        log.info("signal received", extra=fields(signal=signal.Signals(signum).name))
        assert self._stop is not None
        self._stop.set()


# What an instance event says the container now is, as `status` in its webhook payload.
_INSTANCE_STATUS = {
    INSTANCE_STARTED: "running",
    INSTANCE_STOPPED: "exited",
    INSTANCE_UNHEALTHY: "unhealthy",
}


def _revoke_quietly(ws: Workspace, name: str) -> None:
    try:
        ws.store.revoke_token(name)
    except NotFound:
        pass


def serve(config: ServeConfig) -> int:
    """Run the engine in the foreground until a signal; the exit code (0 after a clean stop)."""
    return asyncio.run(EngineProcess(config).run())
