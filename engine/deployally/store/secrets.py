"""Secret values, versioned so a changed secret redeploys what uses it."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from deployally.errors import NotFound, SecretError
from deployally.secrets import check_name
from deployally.store.codec import _dt_req, _now, _ts
from deployally.store.db import Database, _returning


class SecretInfo(NamedTuple):
    """A secret as listed: name and version, never the value. A tuple, so callers may
    unpack `for name, version, updated_at in store.list_secrets()`."""

    name: str
    version: int
    updated_at: datetime


class SecretStore(Database):
    """Secrets by name: values for rendering, versions for hashes, never values in lists."""

    def set_secret(self, name: str, value: str) -> int:
        """Store a secret's value; returns its new version (1 for a new name)."""
        check_name(name)
        if "\x00" in value:
            # No process environment or config file can hold a NUL; refuse it here, once.
            raise SecretError(f"secret {name!r}: the value contains a NUL byte")
        with self._write() as conn:
            row = _returning(
                conn,
                "INSERT INTO secrets (name, value, version, updated_at) VALUES (?, ?, 1, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = excluded.value,"
                " version = version + 1, updated_at = excluded.updated_at RETURNING version",
                (name, value, _ts(_now())),
            )
        assert row is not None  # an upsert always yields its row
        return int(row[0])

    def secret_value(self, name: str, version: int | None = None) -> str:
        """A secret's value at `version` (None: the current one); SecretError when there is none."""
        row = (
            self._conn()
            .execute("SELECT value, version FROM secrets WHERE name = ? AND value IS NOT NULL", (name,))
            .fetchone()
        )
        if row is None:
            raise SecretError(f"secret '{name}' is not set: run `deployally secret set {name}`")
        if version is not None and int(row["version"]) != version:
            raise SecretError(
                f"secret '{name}' has no version {version} (it is at version {row['version']})"
            )
        return str(row["value"])

    def secret_versions(self) -> dict[str, int]:
        """Current version of every set secret, by name (what rendered hashes cover)."""
        rows = self._conn().execute(
            "SELECT name, version FROM secrets WHERE value IS NOT NULL ORDER BY name"
        )
        return {r["name"]: int(r["version"]) for r in rows}

    def list_secrets(self) -> list[SecretInfo]:
        """Name, version and update time of every set secret; never a value."""
        rows = self._conn().execute(
            "SELECT name, version, updated_at FROM secrets WHERE value IS NOT NULL ORDER BY name"
        )
        return [SecretInfo(r["name"], int(r["version"]), _dt_req(r["updated_at"])) for r in rows]

    def delete_secret(self, name: str) -> None:
        """Forget a secret's value; setting it again later continues its version count."""
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE secrets SET value = NULL, updated_at = ?"
                " WHERE name = ? AND value IS NOT NULL",
                (_ts(_now()), name),
            )
            if cur.rowcount == 0:
                check_name(name)
                raise NotFound(f"secret '{name}' is not set: `deployally secret list` shows them")
