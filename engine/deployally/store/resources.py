"""Docker volumes and networks this engine claims as its own though Docker shows no owner label.

Docker cannot relabel a volume or a network, so the ones this engine made before they
carried `com.deployally.owner` are recorded here once they are identified (DESIGN.md,
"Docker conventions"); everything made since carries the label itself.
"""

from __future__ import annotations

from deployally.store.codec import _now, _ts
from deployally.store.db import Database

KINDS = ("volume", "network")


class ResourceStore(Database):
    """Claims: (kind, name) -> why this engine holds the resource to be its own."""

    def claimed(self, kind: str, name: str) -> bool:
        """True when this engine recorded the volume or network as its own."""
        row = self._conn().execute(
            "SELECT 1 FROM claims WHERE kind = ? AND name = ?", (kind, name)
        ).fetchone()
        return row is not None

    def claim(self, kind: str, name: str, why: str) -> None:
        """Record a volume or network as this engine's own, with the evidence."""
        if kind not in KINDS:
            raise ValueError(f"a claim is on a volume or a network, not {kind!r}")
        with self._write() as conn:
            conn.execute(
                "INSERT INTO claims (kind, name, why, claimed_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (kind, name) DO NOTHING",
                (kind, name, why, _ts(_now())),
            )

    def release(self, kind: str, name: str) -> None:
        """Forget a claim (the volume or network is gone)."""
        with self._write() as conn:
            conn.execute("DELETE FROM claims WHERE kind = ? AND name = ?", (kind, name))
