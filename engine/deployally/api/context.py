"""What every route handler shares: the workspace, the engine hooks, caches, and a way off the loop."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web

from deployally.api.live import Answers, LiveCache
from deployally.api.metrics import Metrics
from deployally.model import catalog as catalog_mod
from deployally.model import desired
from deployally.source.tree import CommitTree
from deployally.store import ServerRecord
from deployally.sync.intake import Intake
from deployally.types import EngineStatus
from deployally.workspace import Workspace

T = TypeVar("T")

# Docker calls get threads of their own, so reads of the store and git never queue behind a
# busy engine; a handful is enough, since the live snapshot is shared by every request.
DOCKER_THREADS = 4


@dataclass
class Context:
    """One app's shared state; route handlers reach it with `context(request)`."""

    ws: Workspace
    trigger_sync: Callable[[str], None] | None = None  # called with why
    status: Callable[[], EngineStatus] | None = None
    live: LiveCache = field(default_factory=LiveCache)
    answers: Answers = field(default_factory=Answers)  # GET /instances pages, per snapshot
    metrics: Metrics = field(default_factory=Metrics)
    docker: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(DOCKER_THREADS, thread_name_prefix="api-docker")
    )
    _catalogs: dict[str | None, catalog_mod.Catalog] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Context({self.ws.repo_path})"

    async def run(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """Run blocking work (sqlite, git, Docker) in the default executor, off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, functools.partial(fn, *args, **kw))

    async def run_docker(self, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """Run a driver call on the API's Docker threads, apart from the store's and git's."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.docker, functools.partial(fn, *args, **kw))

    def close(self) -> None:
        """Let the Docker threads go (the app is shutting down)."""
        self.docker.shutdown(wait=False, cancel_futures=True)

    def catalog(self) -> catalog_mod.Catalog:
        """Built-in plus the repository's templates at the branch head, read once per head (blocking)."""
        head = self.ws.repo.head()
        if head not in self._catalogs:
            if head is None:
                found = catalog_mod.load_builtin()
            else:
                found, _errors = desired.load_catalog(CommitTree(self.ws.repo, head))
            self._catalogs = {head: found}  # only the newest head is worth keeping
        return self._catalogs[head]

    def revision_of(self, name: str, commit: str) -> int:
        """The revision `commit` gives definition `name`, as the engine will record it (blocking)."""
        return Intake(self.ws.repo, self.ws.store, self.ws.engine_config).revision_of(name, commit)

    def sync_soon(self, why: str = "API write") -> None:
        """Ask the engine to sync (blocking; run it in the executor); `why` labels the sync."""
        if self.trigger_sync is not None:
            self.trigger_sync(why)


class ServerIds:
    """Maps server names and ids both ways: definitions name a server either way, the API shows ids."""

    def __init__(self, servers: list[ServerRecord]) -> None:
        self._by_key = {s.name: s for s in servers} | {s.id: s for s in servers}

    def __repr__(self) -> str:
        return f"ServerIds({len(self._by_key) // 2})"

    def shown(self, key: str) -> str:
        """The srv_ id of a server written by name or id (as written when unknown)."""
        server = self._by_key.get(key)
        return server.id if server else key

    def keys(self, key: str) -> tuple[str, ...]:
        """Every way a definition may name the server `key` names (its name and id)."""
        server = self._by_key.get(key)
        return (server.name, server.id) if server else (key,)

    def get(self, key: str) -> ServerRecord | None:
        """The server with this name or id."""
        return self._by_key.get(key)

    def environment(self, key: str) -> str | None:
        """The environment of the server with this name or id (None when it is not registered)."""
        server = self._by_key.get(key)
        return server.environment if server else None

    def in_environment(self, environment: str) -> frozenset[str]:
        """Every name and id of the servers in `environment`."""
        return frozenset(k for k, s in self._by_key.items() if s.environment == environment)


CONTEXT = web.AppKey("deployally.context", Context)


def context(request: web.Request) -> Context:
    """The Context of the app serving `request`."""
    return request.app[CONTEXT]
