"""Secret values by name and version, encrypted at rest with a key kept apart from the store.

Every value set is a new version; `{secret: NAME}` uses the current one and
`{secret: NAME, version: N}` that one. A version stays while a revision pins it.
Values are Fernet tokens (store/secret_key.py) bound to their name and version,
so a copy of the database without its key reveals none of them.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import NamedTuple

from deployally.errors import Conflict, NotFound, SecretError, SecretKeyError
from deployally.secrets import check_name
from deployally.store.codec import _dt_req, _now, _ts
from deployally.store.db import Database, _returning
from deployally.store.secret_key import KEY_ENV, KeyFile, SecretKeys, default_key_file, new_key
from deployally.types import SecretVersions

log = logging.getLogger(__name__)

# A staged version whose API write never finished (the process died) goes after this long.
STAGED_FOR = timedelta(hours=1)


class SecretInfo(NamedTuple):
    """A secret as listed: name, current version and every version kept; never a value."""

    name: str
    version: int
    updated_at: datetime
    versions: tuple[int, ...]


@dataclass(frozen=True)
class KeyStatus:
    """Where a store's key is and what it encrypts, for `deployally secret key`."""

    source: str
    key_ids: tuple[str, ...]  # the first one encrypts
    values: int  # stored values: every version of every secret, and each webhook's secret
    made_now: bool = False


class SecretStore(Database):
    """Secrets by name and version: values for applying, versions for hashes, never values in lists."""

    def _init_secrets(self, key_file: Callable[[], Path | None] | None) -> None:
        """`key_file`: the engine configuration's `secret_key_file`, asked when a key is needed."""
        self._configured_key_file = key_file
        self._key_lock = threading.Lock()
        self._key_cache: tuple[object, SecretKeys] | None = None
        self._key_file: KeyFile | None = None
        self.new_key_file: Path | None = None  # set when this store made its key

    # ---------------------------------------------------------- the key

    def secret_key_file(self) -> KeyFile:
        """Where this store's key is: `secret_key_file` in engine.yaml, else the default path."""
        if self._key_file is None:  # neither the configuration nor the engine id changes
            configured = self._configured_key_file() if self._configured_key_file else None
            self._key_file = KeyFile(configured or default_key_file(self.engine_id()))
        return self._key_file

    def unlock_secrets(self, *, create: bool = True) -> KeyStatus:
        """Check the key opens every stored value and encrypt any still in plaintext (a store
        from before encryption); with `create`, make the key if the store has none yet.

        Raises SecretKeyError naming what to do when the key is missing or wrong.
        """
        made = self.new_key_file
        keys = self._keys(create=create)
        with self._read() as conn:
            values = int(conn.execute(
                "SELECT (SELECT count(*) FROM secret_versions) + (SELECT count(*) FROM webhooks)"
            ).fetchone()[0])
        location = self.secret_key_file()
        return KeyStatus(
            location.source,
            keys.ids if keys else (),
            values,
            made_now=self.new_key_file is not None and made is None,
        )

    def _keys(self, *, create: bool, conn: sqlite3.Connection | None = None) -> SecretKeys | None:
        """The store's keys, checked against what they must open; None when there are none
        yet and `create` is false. `conn`: the write transaction the caller holds."""
        location = self.secret_key_file()
        with self._key_lock:
            signature = (location.path, location.signature())
            if self._key_cache is not None and self._key_cache[0] == signature:
                return self._key_cache[1]
            used = self._key_ids_in_use(conn)
            keys = location.load()
            if keys is None:
                if used:
                    raise SecretKeyError(
                        f"the secrets in {self.path} are encrypted with key "
                        f"{', '.join(sorted(used))}, but the key file {location.path} does not "
                        "exist: restore it from your backup, or say where it is with "
                        f"`secret_key_file` in engine.yaml or ${KEY_ENV}. A new key would open "
                        "none of them, so none is made"
                    )
                if not create:
                    return None
                keys = location.create()
                self.new_key_file = location.path
                log.warning(
                    "made the secret key %s (mode 0600): back it up, apart from the state "
                    "directory; without it the secrets in %s cannot be read",
                    location.path, self.path,
                )
                signature = (location.path, location.signature())
            unknown = used - set(keys.ids)
            if unknown:
                raise SecretKeyError(
                    f"the key in {keys.source} (id {', '.join(keys.ids)}) is not the one the "
                    f"secrets in {self.path} were encrypted with (id {', '.join(sorted(unknown))}): "
                    "restore the right key from your backup"
                )
            self._key_cache = (signature, keys)
        # Outside the lock: sealing takes the database's write lock, which `conn`'s holder
        # (another thread) may hold while it waits for this lock.
        self._seal_plaintext(keys, conn)
        return keys

    def _key_ids_in_use(self, conn: sqlite3.Connection | None) -> set[str]:
        rows = (conn or self._conn()).execute(
            "SELECT DISTINCT key_id FROM secret_versions WHERE key_id != ''"
            f" UNION SELECT DISTINCT {_SEALED_KEY_ID} FROM webhooks WHERE {_IS_SEALED}"
        )
        return {str(r[0]) for r in rows}

    def _seal_plaintext(self, keys: SecretKeys, conn: sqlite3.Connection | None) -> None:
        """Encrypt the values a store from before encryption kept in plaintext."""
        if conn is not None:
            self._seal_rows(keys, conn)
            return
        if self._conn().execute(
            "SELECT 1 FROM secret_versions WHERE key_id = ''"
            f" UNION ALL SELECT 1 FROM webhooks WHERE NOT {_IS_SEALED} LIMIT 1"
        ).fetchone():
            with self._write() as own:
                self._seal_rows(keys, own)
            # Old pages (secure_delete zeroes them in the file) may linger in the WAL.
            self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @staticmethod
    def _seal_rows(keys: SecretKeys, conn: sqlite3.Connection) -> int:
        rows = conn.execute(
            "SELECT name, version, value FROM secret_versions WHERE key_id = ''"
        ).fetchall()
        for r in rows:
            token, used = keys.encrypt(_bound(r["name"], int(r["version"]), str(r["value"])))
            conn.execute(
                "UPDATE secret_versions SET value = ?, key_id = ? WHERE name = ? AND version = ?",
                (token, used, r["name"], r["version"]),
            )
        hooks = conn.execute(f"SELECT id, secret FROM webhooks WHERE NOT {_IS_SEALED}").fetchall()
        for r in hooks:
            conn.execute(
                "UPDATE webhooks SET secret = ? WHERE id = ?",
                (_sealed(keys, webhook_secret_owner(r["id"]), str(r["secret"])), r["id"]),
            )
        if rows or hooks:
            log.info("encrypted %d secret values kept in plaintext by an older version",
                     len(rows) + len(hooks))
        return len(rows) + len(hooks)

    def _seal_text(self, owner: str, text: str, conn: sqlite3.Connection) -> str:
        """`text` (a webhook's secret) encrypted for the row of `owner`, inside `conn`'s transaction."""
        keys = self._keys(create=True, conn=conn)
        assert keys is not None
        return _sealed(keys, owner, text)

    def _open_text(self, owner: str, stored: str) -> str:
        """The text `_seal_text` sealed for `owner` (a value from before encryption as it is)."""
        if not stored.startswith(_SEALED):
            return stored
        keys = self._keys(create=False)
        assert keys is not None  # a sealed value exists, so a key does (or _keys raised)
        return _unsealed(keys, owner, stored)

    def rotate_secret_key(self, *, drop_old: bool = False) -> KeyStatus:
        """Encrypt every value under a new key (first in the key file; the old ones stay after
        it), or with `drop_old` under the first key alone, then remove the others from the file.

        With $DEPLOYALLY_SECRET_KEY the operator puts the new key first there; this re-encrypts.
        """
        location = self.secret_key_file()
        keys = self._keys(create=True)
        assert keys is not None
        with self._write() as conn:  # the write lock: no value is written under an older key meanwhile
            if not location.from_env and not drop_old:
                keys = location.replace([new_key().encode("ascii"), *keys.keys])
            rows = conn.execute(
                "SELECT name, version, value, key_id FROM secret_versions WHERE key_id != ?",
                (keys.primary_id,),
            ).fetchall()
            for r in rows:
                what = f"secret {r['name']!r} version {r['version']}"
                keys.decrypt(str(r["value"]), str(r["key_id"]), what)  # names a missing key
                conn.execute(
                    "UPDATE secret_versions SET value = ?, key_id = ? WHERE name = ? AND version = ?",
                    (keys.reencrypt(str(r["value"])), keys.primary_id, r["name"], r["version"]),
                )
            for r in conn.execute(f"SELECT id, secret FROM webhooks WHERE {_IS_SEALED}").fetchall():
                owner = webhook_secret_owner(r["id"])
                conn.execute(
                    "UPDATE webhooks SET secret = ? WHERE id = ?",
                    (_sealed(keys, owner, _unsealed(keys, owner, str(r["secret"]))), r["id"]),
                )
        if drop_old and not location.from_env and len(keys.keys) > 1:
            with self._write() as conn:
                if self._key_ids_in_use(conn) <= {keys.primary_id}:
                    keys = location.replace([keys.keys[0]])
        with self._key_lock:
            self._key_cache = None
        return self.unlock_secrets(create=False)

    # ---------------------------------------------------------- values

    def set_secret(self, name: str, value: str) -> int:
        """Store a new value as the secret's next version, current from now on; returns it."""
        return self._add_version(name, value, staged=False)

    def stage_secret(self, name: str, value: str, *, owner: str) -> int:
        """Store a new version that only a pin uses until `publish_secret` (an API write's
        password, before its commit exists); returns the version.

        `owner` is the definition (def_ id) writing it: Conflict when the secret holds a value
        that definition's writes did not make (another definition's, or the operator's).
        """
        return self._add_version(name, value, staged=True, owner=owner)

    def publish_secret(self, name: str, version: int, commit: str) -> None:
        """The commit pinning a staged version exists: keep the version, and make it current
        unless a newer one is."""
        with self._write() as conn:
            conn.execute(
                "UPDATE secret_versions SET staged = 0, commit_sha = ? WHERE name = ? AND version = ?",
                (commit, name, version),
            )
            conn.execute(
                "UPDATE secrets SET current = ?, updated_at = ? WHERE name = ?"
                " AND (current IS NULL OR current < ?)",
                (version, _ts(_now()), name, version),
            )

    def discard_secret(self, name: str, version: int) -> None:
        """Forget a staged version whose commit was never made."""
        with self._write() as conn:
            conn.execute(
                "DELETE FROM secret_versions WHERE name = ? AND version = ? AND staged = 1",
                (name, version),
            )

    def _add_version(self, name: str, value: str, *, staged: bool, owner: str | None = None) -> int:
        check_name(name)
        if "\x00" in value:
            # No process environment or config file can hold a NUL; refuse it here, once.
            raise SecretError(f"secret {name!r}: the value contains a NUL byte")
        now = _ts(_now())
        with self._write() as conn:
            keys = self._keys(create=True, conn=conn)  # inside the lock: never a key rotated away
            assert keys is not None
            if owner is not None:
                self._claim(conn, name, owner)
            elif not staged:
                # `secret set` of a name holding no value (new, or removed): the operator's now,
                # whichever definition's API write made it before.
                conn.execute(
                    "UPDATE secrets SET owner = NULL WHERE name = ? AND NOT EXISTS"
                    " (SELECT 1 FROM secret_versions WHERE name = ?)",
                    (name, name),
                )
            # `version` counts every version ever made, so a number never means two values.
            row = _returning(
                conn,
                "INSERT INTO secrets (name, version, updated_at) VALUES (?, 1, ?)"
                " ON CONFLICT (name) DO UPDATE SET version = version + 1,"
                " updated_at = excluded.updated_at RETURNING version",
                (name, now),
            )
            assert row is not None  # an upsert always yields its row
            version = int(row[0])
            token, used = keys.encrypt(_bound(name, version, value))
            conn.execute(
                "INSERT INTO secret_versions (name, version, value, key_id, staged, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (name, version, token, used, int(staged), now),
            )
            if not staged:
                conn.execute("UPDATE secrets SET current = ? WHERE name = ?", (version, name))
        return version

    @staticmethod
    def _claim(conn: sqlite3.Connection, name: str, owner: str) -> None:
        """Make `owner` the secret's owner, inside the write transaction of its new version;
        Conflict when it holds a value (or a staged one) someone else made."""
        row = conn.execute("SELECT owner FROM secrets WHERE name = ?", (name,)).fetchone()
        held = conn.execute(
            "SELECT 1 FROM secret_versions WHERE name = ? LIMIT 1", (name,)
        ).fetchone()
        if row is not None and held is not None and row["owner"] != owner:
            whose = "the operator's" if row["owner"] is None else "another definition's"
            raise Conflict(
                f"the secret {name!r} exists already and is {whose}: an API write only writes "
                "the secrets it made itself"
            )
        conn.execute(
            "INSERT INTO secrets (name, version, updated_at, owner) VALUES (?, 0, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner",
            (name, _ts(_now()), owner),
        )

    def secret_value(self, name: str, version: int | None = None) -> str:
        """The value of a version of a secret (None: the current one); SecretError when it has none."""
        row = (
            self._conn()
            .execute(
                "SELECT v.version, v.value, v.key_id FROM secret_versions v JOIN secrets s"
                " ON s.name = v.name WHERE v.name = ? AND v.version = coalesce(?, s.current)",
                (name, version),
            )
            .fetchone()
        )
        if row is None:
            raise SecretError(self._missing(name, version))
        number = int(row["version"])
        if row["key_id"] == "":
            self._keys(create=True)  # a value from before encryption: sealed now
            return str(row["value"])
        keys = self._keys(create=False)
        assert keys is not None  # stored values exist, so a key does (or _keys raised)
        what = f"secret {name!r} version {number}"
        return _unbound(keys.decrypt(str(row["value"]), str(row["key_id"]), what), name, number)

    def _missing(self, name: str, version: int | None) -> str:
        if version is None:
            return f"secret '{name}' is not set: run `deployally secret set {name}`"
        kept = self._conn().execute(
            "SELECT version FROM secret_versions WHERE name = ? AND staged = 0 ORDER BY version",
            (name,),
        )
        numbers = ", ".join(str(r[0]) for r in kept)
        return f"secret '{name}' has no version {version} " + (
            f"(kept: {numbers})" if numbers else "(it is not set)"
        )

    # ---------------------------------------------------------- versions

    def secret_versions(self) -> dict[str, int]:
        """Current version of every set secret, by name (what unpinned references use)."""
        rows = self._conn().execute(
            "SELECT name, current FROM secrets WHERE current IS NOT NULL ORDER BY name"
        )
        return {r["name"]: int(r["current"]) for r in rows}

    def available_secrets(self) -> SecretVersions:
        """Every secret's current version and every version kept: what a render may use."""
        with self._read() as conn:
            current = {
                r["name"]: int(r["current"])
                for r in conn.execute("SELECT name, current FROM secrets WHERE current IS NOT NULL")
            }
            kept = frozenset(
                (r["name"], int(r["version"]))
                for r in conn.execute("SELECT name, version FROM secret_versions")
            )
        return SecretVersions(current=current, kept=kept)

    def list_secrets(self) -> list[SecretInfo]:
        """Name, current version, update time and kept versions of every set secret; never a value."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT name, current, updated_at FROM secrets WHERE current IS NOT NULL ORDER BY name"
            ).fetchall()
            kept: dict[str, list[int]] = {}
            for r in conn.execute(
                "SELECT name, version FROM secret_versions WHERE staged = 0 ORDER BY name, version"
            ):
                kept.setdefault(r["name"], []).append(int(r["version"]))
        return [
            SecretInfo(r["name"], int(r["current"]), _dt_req(r["updated_at"]),
                       tuple(kept.get(r["name"], ())))
            for r in rows
        ]

    def drop_unused_secret_versions(self, keep: Collection[tuple[str, int]] = ()) -> int:
        """Forget versions nothing needs: not current, not pinned by any revision nor in `keep`
        (specs in use), not staged, and whose pinning commit (if any) is recorded. Returns how many."""
        query = (
            "SELECT v.name, v.version FROM secret_versions v JOIN secrets s ON s.name = v.name"
            " WHERE (s.current IS NULL OR v.version != s.current)"
            " AND (v.staged = 0 OR v.created_at < ?)"
            " AND (v.commit_sha IS NULL OR v.commit_sha IN (SELECT commit_sha FROM revisions))"
            " AND NOT EXISTS (SELECT 1 FROM revision_secrets p"
            "   WHERE p.secret = v.name AND p.version = v.version)"
        )
        args = (_ts(_now() - STAGED_FOR),)

        def doomed(conn: sqlite3.Connection) -> list[tuple[str, int]]:
            rows = conn.execute(query, args).fetchall()
            return [(r["name"], int(r["version"])) for r in rows if (r["name"], int(r["version"])) not in keep]

        if not doomed(self._conn()):  # the usual case: no write lock taken
            return 0
        with self._write() as conn:
            gone = doomed(conn)  # again under the lock
            conn.executemany("DELETE FROM secret_versions WHERE name = ? AND version = ?", gone)
        return len(gone)

    def delete_secret(self, name: str) -> None:
        """Forget a secret: every version of its value. Setting it again continues its version count."""
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE secrets SET current = NULL, updated_at = ? WHERE name = ? AND current IS NOT NULL",
                (_ts(_now()), name),
            )
            if cur.rowcount == 0:
                check_name(name)
                raise NotFound(f"secret '{name}' is not set: `deployally secret list` shows them")
            conn.execute("DELETE FROM secret_versions WHERE name = ?", (name,))


# A webhook's secret as stored: "fernet:<key id>:<token>" (plain text before encryption).
_SEALED = "fernet:"
_IS_SEALED = "secret LIKE 'fernet:%'"
_SEALED_KEY_ID = "substr(secret, 8, 16)"


def webhook_secret_owner(webhook_id: str) -> str:
    """What a webhook's sealed secret is bound to, and how errors name it."""
    return f"the secret of webhook {webhook_id}"


def _sealed(keys: SecretKeys, owner: str, text: str) -> str:
    token, used = keys.encrypt(json.dumps({"owner": owner, "value": text}).encode("utf-8"))
    return f"{_SEALED}{used}:{token}"


def _unsealed(keys: SecretKeys, owner: str, stored: str) -> str:
    used, _, token = stored.removeprefix(_SEALED).partition(":")
    data = json.loads(keys.decrypt(token, used, owner))
    if data.get("owner") != owner:
        raise SecretKeyError(f"{owner} holds another's value: the state store was altered")
    return str(data["value"])


def _bound(name: str, version: int, value: str) -> bytes:
    """What is encrypted: the value with its name and version, so no token can stand in for another."""
    return json.dumps({"name": name, "version": version, "value": value}).encode("utf-8")


def _unbound(plaintext: bytes, name: str, version: int) -> str:
    data = json.loads(plaintext)
    if data.get("name") != name or data.get("version") != version:
        raise SecretKeyError(
            f"secret {name!r} version {version} holds another secret's value: the state store was altered"
        )
    return str(data["value"])
