"""Which driver serves each server: one per server, made on first use from its record's kind.

`local` is this host's Docker engine, `agent` a remote host's through its agent's
calls (drivers/agent/); a kind with no factory here is not applied by this engine,
so every caller asks the registry and never assumes `local`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Generic, Protocol, TypeVar

from deployally.drivers.base import DEFAULT_CONFIG, Driver, DriverConfig


class Server(Protocol):
    """What the registry reads of a server record."""

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def kind(self) -> str: ...


S = TypeVar("S", bound=Server)
DriverFactory = Callable[[S, DriverConfig], Driver]


class Servers(Protocol[S]):
    """Where server records come from (the store)."""

    def server(self, key: str) -> S | None:
        """A server by id or name."""
        ...

    def servers(self) -> list[S]:
        """Every server, by name."""
        ...


class DriverRegistry(Generic[S]):
    """The driver of each server this engine applies to, chosen by the server's kind."""

    def __init__(
        self,
        servers: Servers[S],
        factories: Mapping[str, DriverFactory[S]],
        config: DriverConfig = DEFAULT_CONFIG,
    ) -> None:
        self._servers = servers
        self._factories = dict(factories)
        self.config = config
        self._lock = threading.Lock()  # API threads and the sync thread ask at once
        self._drivers: dict[str, Driver] = {}  # by server id
        self._on_made: list[Callable[[S, Driver], None]] = []

    def __repr__(self) -> str:
        return f"DriverRegistry(kinds={sorted(self._factories)}, made={sorted(self._drivers)})"

    def for_server(self, key: str) -> Driver | None:
        """The driver of the server named or identified by `key`; None when it is unknown
        or of a kind this engine does not apply itself."""
        server = self._servers.server(key)
        return None if server is None else self._driver(server)

    def applied_here(self) -> list[tuple[S, Driver]]:
        """Every server this engine applies to, with its driver, by name."""
        out = []
        for server in self._servers.servers():
            driver = self._driver(server)
            if driver is not None:
                out.append((server, driver))
        return out

    def on_made(self, hook: Callable[[S, Driver], None]) -> None:
        """Call `hook` with each driver made from now on (a server registered while serving)."""
        with self._lock:
            self._on_made.append(hook)

    def close(self) -> None:
        """Close every driver made so far (their Docker connections and event threads)."""
        with self._lock:
            made = list(self._drivers.values())
        for driver in made:
            driver.close()

    def _driver(self, server: S) -> Driver | None:
        factory = self._factories.get(server.kind)
        if factory is None:
            return None
        with self._lock:
            made = server.id not in self._drivers
            if made:
                self._drivers[server.id] = factory(server, self.config)
            driver, hooks = self._drivers[server.id], list(self._on_made) if made else []
        for hook in hooks:
            hook(server, driver)
        return driver
