"""The agent keeps no state store: what its local driver claims is kept in memory."""

from __future__ import annotations

import threading


class MemoryClaims:
    """Claims on volumes and networks made before they carried an owner label, for this run.
    An agent's resources always carry their owner label, so nothing it needs is lost on a restart."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._claimed: set[tuple[str, str]] = set()

    def __repr__(self) -> str:
        return f"MemoryClaims({len(self._claimed)})"

    def claimed(self, kind: str, name: str) -> bool:
        """True when this run recorded the resource as the engine's own."""
        with self._lock:
            return (kind, name) in self._claimed

    def claim(self, kind: str, name: str, why: str) -> None:
        """Record the resource as the engine's own (for this run)."""
        with self._lock:
            self._claimed.add((kind, name))

    def release(self, kind: str, name: str) -> None:
        """Forget the claim."""
        with self._lock:
            self._claimed.discard((kind, name))
