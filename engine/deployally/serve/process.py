"""`deployally serve`: one asyncio loop running the API, the engine, the watcher, webhooks and events.

Blocking work never runs on the loop. Syncs run in one worker thread, so they
never overlap; triggers that arrive during a sync coalesce into exactly one
follow-up sync. API handlers use a separate bounded pool, so the API answers
while a deploy runs. The sync lock (lock.py) keeps a hook-run sync in another
process out of the way too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from deployally.api.app import create_app
from deployally.api.hooks import HOOK_SECRET
from deployally.api.metrics import Metrics
from deployally.api.runner import ApiRunner
from deployally.api.sync import SYNC, SyncOutcome
from deployally.api.webhooks import WAKE_SENDER
from deployally.drivers.base import Driver, EventStream
from deployally.errors import DeployAllyError, SourceError
from deployally.logs import fields
from deployally.notify.sender import Schedule, Sender
from deployally.serve.engine_file import (
    issue_hook_token,
    new_hook_secret,
    remove_engine_file,
    revoke_hook_token,
    write_engine_file,
    write_hook_curl_config,
)
from deployally.serve.instance_events import InstanceEventHandler
from deployally.serve.loop import SyncLoop
from deployally.serve.status import engine_status
from deployally.serve.tls import server_context
from deployally.source.git import GitRepo, redact_url
from deployally.source.watcher import RefWatcher
from deployally.store import ServerRecord
from deployally.types import EngineStatus
from deployally.workspace import Workspace, default_state_dir

log = logging.getLogger("deployally.server")

MIRROR_DIR = "mirror.git"
API_THREADS = 8
# Connections the kernel queues before the loop accepts them. At the usual 128, a burst of a few
# hundred dashboards connecting at once loses SYNs, and each lost one costs a 1 s retransmit;
# the kernel caps this at net.core.somaxconn.
LISTEN_BACKLOG = 1024
GIL_SWITCH_S = 0.0005

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
    reconcile_interval_s: float | None = None  # None: deployally.yaml's, default 30 s
    webhook_secret: str | None = None
    health_timeout_s: float | None = None  # None: deployally.yaml's
    max_parallel: int | None = None  # None: deployally.yaml's
    tls_cert: Path | None = None  # with tls_key: the API over HTTPS
    tls_key: Path | None = None

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
        self.url = ""
        self.ws: Workspace | None = None
        self.watcher: RefWatcher | None = None
        self.events: list[EventStream] = []  # one per server this engine applies to
        self._event_handlers: list[InstanceEventHandler] = []
        self._sender: Sender | None = None
        # Read before anything starts, so a bad value stops `serve` with one readable line.
        self._webhook_schedule = webhook_schedule(os.environ.get(WEBHOOK_BACKOFF_ENV))
        self._tls = (
            server_context(config.tls_cert, config.tls_key)
            if config.tls_cert is not None and config.tls_key is not None
            else None
        )
        self.metrics = Metrics()  # the API's /metrics; the sync loop counts its syncs into it
        self.sync_loop = SyncLoop(
            self._sync_blocking, on_recovered=self._rewatch, on_finished=self.metrics.observe_sync
        )

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

    def status(self) -> EngineStatus:
        """How the engine stands, for /api/v1/health and /metrics: degraded after a failed sync or fetch."""
        return engine_status(
            self.sync_loop,
            fetch_error=self._fetch_error,
            watching=self.watcher.running if self.watcher else False,
            docker_events=bool(self.events) and all(e.running for e in self.events),
            mirror=redact_url(self.remote_url) if self.remote_url else None,
            sync=self.ws.engine.activity.snapshot() if self.ws is not None else None,
        )

    # ------------------------------------------------------------ running

    def open_workspace(self) -> Workspace:
        """The workspace to serve: a local repo as is, a remote mirrored into the state dir (blocking)."""
        repo_path: Path
        if self.remote_url is not None:
            # The mirror's config holds the URL, credentials and all: private from the start.
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
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
        # A missing or wrong secret key stops `serve` here with what to do, before anything
        # deploys; on the first start the key is made and the log says to back it up.
        ws.store.unlock_secrets(create=True)
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

        app = create_app(
            ws, trigger_sync=self.trigger_threadsafe, status=self.status, metrics=self.metrics
        )
        app[SYNC] = self
        app[HOOK_SECRET] = hook_secret = new_hook_secret()
        app[WAKE_SENDER] = self._wake_sender
        runner = ApiRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(
            runner, self.config.host, self.config.port, backlog=LISTEN_BACKLOG, ssl_context=self._tls
        )
        await site.start()
        port = runner.addresses[0][1]
        host = "127.0.0.1" if self.config.host in ("0.0.0.0", "::", "") else self.config.host
        self.url = f"{'https' if self._tls else 'http'}://{host}:{port}"
        token = await loop.run_in_executor(None, issue_hook_token, ws)
        tls_cert = self.config.tls_cert.resolve() if self._tls and self.config.tls_cert else None
        write_engine_file(
            self.state_dir, url=self.url, token=token, repo=ws.repo_path, branch=self.branch,
            tls_cert=tls_cert,
        )
        write_hook_curl_config(self.state_dir, url=self.url, secret=hook_secret, tls_cert=tls_cert)
        log.info(
            "serving",
            extra=fields(url=self.url, repo=redact_url(self.config.repo), state_dir=str(self.state_dir),
                         branch=self.branch, engine_id=ws.engine_id),
        )

        sender = self._sender = Sender(
            ws.store, schedule=self._webhook_schedule, allow=ws.engine_config.webhook_allow,
            host_networks=ws.host_networks,
        )
        self._start_watching(ws)
        self.events = await loop.run_in_executor(None, self._watch_instances, ws, loop)
        tasks = [
            asyncio.create_task(self.sync_loop.run(stop), name="sync"),
            asyncio.create_task(sender.run(stop), name="webhooks"),
            asyncio.create_task(self._every_interval(stop), name="interval"),
        ]
        # Nobody watched while the engine was down: the first sync looks at every instance's
        # settings; Docker's events tell of later changes.
        ws.engine.observe_settings()
        self.sync_loop.trigger("start")
        try:
            await stop.wait()
            log.info("stopping: finishing the deployments under way")
            if self.watcher is not None:
                self.watcher.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            for stream in self.events:
                stream.stop()
            for handler in self._event_handlers:
                handler.close()
            remove_engine_file(self.state_dir)
            await loop.run_in_executor(None, revoke_hook_token, ws)
            await runner.cleanup()
            ws.close()
            api_pool.shutdown(wait=False, cancel_futures=True)
        log.info("stopped")
        return 0

    # ------------------------------------------------------------ pieces

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
                self._fetch_error = redact_url(str(exc))
                log.warning("fetch failed", extra=fields(error=str(exc)))
        report = self.ws.engine.sync()
        self._wake_sender()  # the sync's deployment and definition events go out now
        with self._lines_lock:
            lines = tuple(self._lines)
        return SyncOutcome(report, lines, self.ws.engine.next_retry_s())

    def _watch_instances(self, ws: Workspace, loop: asyncio.AbstractEventLoop) -> list[EventStream]:
        """Follow each server's instance events (this engine's own, by the driver's owner filter),
        a server registered later included."""
        streams: list[EventStream] = []
        watched: set[int] = set()
        lock = threading.Lock()

        def watch(server: ServerRecord, driver: Driver) -> None:
            with lock:
                if id(driver) in watched:
                    return
                watched.add(id(driver))
                on_event = InstanceEventHandler(
                    ws, server, loop, wake_sender=self._wake_sender,
                    trigger_sync=self.sync_loop.trigger,
                )
                self._event_handlers.append(on_event)
                streams.append(driver.watch(on_event))

        ws.drivers.on_made(watch)
        for server, driver in ws.drivers.applied_here():
            watch(server, driver)
        return streams

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
                settings = self.ws.engine.settings if self.ws is not None else None
                interval = self.config.reconcile_interval_s or (
                    settings.reconcile_interval if settings is not None else 30.0
                )
                await asyncio.wait_for(stop.wait(), interval)
            except TimeoutError:
                self.sync_loop.trigger("reconcile interval")

    def _on_signal(self, signum: int) -> None:
        if self._stopping:
            log.warning("second signal: exiting at once")
            os._exit(128 + signum)
        log.info("signal received", extra=fields(signal=signal.Signals(signum).name))
        assert self._stop is not None
        if self.ws is not None and "engine" in self.ws.__dict__:
            self.ws.engine.stop_soon()  # the deployments under way finish; the rest waits
        self._stop.set()


def serve(config: ServeConfig) -> int:
    """Run the engine in the foreground until a signal; the exit code (0 after a clean stop)."""
    # The API's loop gives up the GIL at every socket and SQLite call and must win it back from
    # the sync's threads; at Python's 5 ms switch interval a busy sync makes each of those a
    # wait of up to 5 ms, so 200 readers queue for seconds. 0.5 ms keeps the loop answering.
    sys.setswitchinterval(GIL_SWITCH_S)
    return asyncio.run(EngineProcess(config).run())
