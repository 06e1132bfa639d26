"""Wiring: the repository, state store, drivers and engine for one repo + state directory.

The CLI and `serve` both start here, so a one-shot `sync` and the long-running
engine are the same code with the same defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from deployally.drivers.base import Driver, DriverConfig
from deployally.drivers.registry import DriverFactory, DriverRegistry
from deployally.errors import DriverError
from deployally.model.engine_config import EngineConfig, load_engine_config
from deployally.source.git import GitRepo
from deployally.state_dir import STATE_DIR_NAME, default_state_dir, engine_state_dir
from deployally.store import ServerRecord, Store
from deployally.sync.apply import Progress
from deployally.sync.reconcile import Engine
from deployally.types import Network

__all__ = ["STATE_DIR_NAME", "Workspace", "default_state_dir", "engine_state_dir"]


@dataclass
class Workspace:
    """Everything one repository needs, opened on first use."""

    repo_path: Path
    state_dir: Path
    branch: str = "main"
    max_parallel: int | None = None  # None: the repository's settings decide
    health_timeout_s: float | None = None
    progress: Progress | None = None
    # Driver factories by server kind; None: the real ones (`local`: this host's Docker).
    driver_factories: Mapping[str, DriverFactory[ServerRecord]] | None = None

    @classmethod
    def open(
        cls, repo: str | Path, state_dir: str | Path | None = None, branch: str = "main", **kw: object
    ) -> Workspace:
        """A workspace for `repo`, with the state directory defaulting beside it."""
        repo_path = Path(repo).resolve()
        state = Path(state_dir).resolve() if state_dir else default_state_dir(repo_path)
        return cls(repo_path=repo_path, state_dir=state, branch=branch, **kw)  # type: ignore[arg-type]

    @cached_property
    def repo(self) -> GitRepo:
        repo = GitRepo(self.repo_path, self.branch)
        config = self.engine_config
        if config.verifies_commits:
            # The engine's own commits must be signed too, or they would never deploy.
            repo.writes_need_signature = True
            repo.signing_key = Path(config.signing_key) if config.signing_key else None
        return repo

    @cached_property
    def engine_config(self) -> EngineConfig:
        """What this engine's operator allows (engine.yaml); read once, raises when it is bad."""
        return load_engine_config(self.state_dir)

    @cached_property
    def store(self) -> Store:
        return Store(self.state_dir, secret_key_file=lambda: self.engine_config.secret_key_file)

    @cached_property
    def drivers(self) -> DriverRegistry[ServerRecord]:
        """One driver per server this engine applies to, chosen by the server's kind."""
        config = DriverConfig(
            health_timeout_s=self.health_timeout_s or DriverConfig.health_timeout_s,
            parallel=self.max_parallel or DriverConfig.parallel,
        )
        factories = self.driver_factories or {
            "local": self._local_driver, "agent": self._agent_driver, "swarm": self._swarm_driver
        }
        return DriverRegistry(self.store, factories, config)

    def driver_for(self, server: str) -> Driver | None:
        """The driver of a server (name or srv_ id), or None when this engine does not apply it."""
        return self.drivers.for_server(server)

    def host_networks(self) -> tuple[Network, ...]:
        """The address ranges of the container networks on the engine's host, which webhooks
        must not reach (notify/urls.py); a server that cannot say adds none."""
        out: list[Network] = []
        for _server, driver in self.drivers.applied_here():
            try:
                out.extend(driver.host_networks())
            except DriverError:
                # Docker down: its containers are unreachable too, and delivery checks again.
                continue
        return tuple(dict.fromkeys(out))

    def _local_driver(self, server: ServerRecord, config: DriverConfig) -> Driver:
        # Docker only when needed.
        from deployally.drivers.local.driver import LocalDriver
        from deployally.drivers.local.ownership import Adopted

        return LocalDriver(
            self.state_dir,
            server=server.name,
            owner=self.engine_id,
            claims=self.store,
            adopted=Adopted(
                volumes=self.engine_config.adopted_volumes,
                networks=self.engine_config.adopted_networks,
            ),
            config=config,
        )

    def _agent_driver(self, server: ServerRecord, config: DriverConfig) -> Driver:
        from deployally.drivers.agent.driver import AgentDriver

        return AgentDriver(server.name, owner=self.engine_id, config=config)

    def _swarm_driver(self, server: ServerRecord, config: DriverConfig) -> Driver:
        from deployally.drivers.local.ownership import Adopted
        from deployally.drivers.swarm.driver import SwarmDriver

        return SwarmDriver(
            server=server.name,
            docker_host=server.docker_host or "",  # the store refuses a swarm server without one
            owner=self.engine_id,
            tls_dir=self.engine_config.docker_tls.get(server.name),
            adopted=Adopted(
                volumes=self.engine_config.adopted_volumes,
                networks=self.engine_config.adopted_networks,
            ),
            config=config,
        )

    @cached_property
    def engine_id(self) -> str:
        """This state store's identity, made once: it labels the containers this engine owns."""
        return self.store.engine_id()

    @cached_property
    def engine(self) -> Engine:
        return Engine(
            self.repo,
            self.store,
            self.drivers,
            max_parallel=self.max_parallel,
            health_timeout_s=self.health_timeout_s,
            progress=self.progress,
            engine_config=self.engine_config,
        )

    def close(self) -> None:
        """Close what was opened: the engine, the drivers' Docker connections, the store."""
        if "engine" in self.__dict__:
            self.engine.close()
        if "drivers" in self.__dict__:
            self.drivers.close()
        if "store" in self.__dict__:
            self.store.close()
