"""The SQLite store under the state directory: the only module that speaks SQL.

It keeps sync bookkeeping, definitions, revisions, deployments and their logs,
secrets, API tokens, servers, and webhooks with their delivery outbox.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import hmac
import json
import os
import secrets as pysecrets
import sqlite3
import threading
import types as pytypes
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, NamedTuple, Self, Union, get_args, get_origin, get_type_hints

from . import identity
from .errors import Conflict, NotFound, SecretError, ValidationError
from .types import (
    ActionKind,
    ContainerSpec,
    DefinitionRecord,
    DefinitionStatus,
    Deployment,
    DeploymentStatus,
    FieldChange,
    LogLine,
    Reason,
    ReasonKind,
    Revision,
    SecretRef,
)

DB_FILE: Final = "deployally.db"
LOCAL_SERVER_NAME: Final = "local"
LOCAL_SERVER_ID: Final = identity.stable_id("srv", LOCAL_SERVER_NAME)
TOKEN_PREFIX: Final = "da_"
SERVER_KEY_PREFIX: Final = "da_server_"
TOKEN_SCOPES: Final = ("read", "write", "admin")

META_LAST_APPLIED_COMMIT: Final = "last_applied_commit"
META_LAST_ATTEMPTED_COMMIT: Final = "last_attempted_commit"

_UNSET: Any = object()  # "leave this column as it is" in partial updates


# ---------------------------------------------------------------- store-only records


@dataclass(frozen=True)
class TokenRecord:
    """An API token as stored: never the token itself, only who it is and what it may do."""

    id: str
    name: str
    scope: str  # read | write | admin
    created_at: datetime


@dataclass(frozen=True)
class ServerRecord:
    id: str
    name: str
    environment: str
    description: str
    status: str  # active | inactive
    created_at: datetime
    last_seen_at: datetime | None = None


class SecretInfo(NamedTuple):
    """A secret as listed: name and version, never the value. A tuple, so callers may
    unpack `for name, version, updated_at in store.list_secrets()`."""

    name: str
    version: int
    updated_at: datetime


@dataclass(frozen=True)
class WebhookRecord:
    id: str
    url: str
    events: tuple[str, ...]
    secret: str = field(repr=False)  # signs the payloads; kept out of reprs and logs
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class DeliveryStatus(str, enum.Enum):
    PENDING = "pending"  # waiting for its next attempt
    DELIVERED = "delivered"  # a 2xx came back
    FAILED = "failed"  # retries exhausted


@dataclass(frozen=True)
class DeliveryRecord:
    """One event due to one webhook: what the notifier posts and how it has gone so far."""

    id: str  # dlv_
    webhook_id: str
    event_id: str  # evt_
    event: str
    data: Mapping[str, Any]
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    last_status_code: int | None = None
    last_error: str | None = None


@dataclass(frozen=True)
class DeliveryAttempt:
    delivery_id: str
    number: int  # 1, 2, ...
    at: datetime
    status_code: int | None
    duration_ms: float
    error: str | None


# ---------------------------------------------------------------- schema

# Each entry moves the schema from version i to i+1 (PRAGMA user_version). Append,
# never edit: a database in the field has already run the earlier ones.
_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        """CREATE TABLE definitions (
            id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, path TEXT NOT NULL,
            template_id TEXT NOT NULL, server_id TEXT NOT NULL, profile TEXT NOT NULL,
            status TEXT NOT NULL, current_revision INTEGER NOT NULL,
            applied_revision INTEGER, desired TEXT, applied_hash TEXT,
            depends_files TEXT NOT NULL, params TEXT NOT NULL, last_error TEXT,
            operator_stopped INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
        "CREATE INDEX definitions_server ON definitions (server_id, status)",
        # No foreign key to definitions: history outlives a deleted definition.
        """CREATE TABLE revisions (
            definition_id TEXT NOT NULL, number INTEGER NOT NULL, name TEXT NOT NULL,
            commit_sha TEXT NOT NULL, desired_hash TEXT NOT NULL, path TEXT NOT NULL,
            created_at TEXT NOT NULL, PRIMARY KEY (definition_id, number)) WITHOUT ROWID""",
        # seq keeps insertion order stable for deployments created in the same instant.
        """CREATE TABLE deployments (
            seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, definition_id TEXT NOT NULL,
            definition_name TEXT NOT NULL, server_id TEXT NOT NULL, revision INTEGER,
            commit_sha TEXT, action TEXT NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL,
            created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT)""",
        "CREATE INDEX deployments_definition ON deployments (definition_id, seq)",
        "CREATE INDEX deployments_status ON deployments (status)",
        """CREATE TABLE deployment_logs (
            deployment_id TEXT NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
            line INTEGER NOT NULL, at TEXT NOT NULL, message TEXT NOT NULL,
            PRIMARY KEY (deployment_id, line)) WITHOUT ROWID""",
        # value is NULL once deleted: the row stays so a re-set secret gets a higher
        # version, and a spec hashed over the old version is redeployed.
        """CREATE TABLE secrets (
            name TEXT PRIMARY KEY, value TEXT, version INTEGER NOT NULL,
            updated_at TEXT NOT NULL)""",
        """CREATE TABLE tokens (
            id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, scope TEXT NOT NULL,
            token_hash TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL)""",
        """CREATE TABLE servers (
            id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, environment TEXT NOT NULL,
            description TEXT NOT NULL, status TEXT NOT NULL, key_hash TEXT UNIQUE,
            created_at TEXT NOT NULL, last_seen_at TEXT)""",
        """CREATE TABLE webhooks (
            id TEXT PRIMARY KEY, url TEXT NOT NULL, events TEXT NOT NULL,
            secret TEXT NOT NULL, created_at TEXT NOT NULL)""",
        """CREATE TABLE events (
            id TEXT PRIMARY KEY, event TEXT NOT NULL, data TEXT NOT NULL,
            created_at TEXT NOT NULL)""",
        """CREATE TABLE deliveries (
            seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,
            event_id TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
            webhook_id TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
            status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT, last_status_code INTEGER, last_error TEXT,
            created_at TEXT NOT NULL)""",
        "CREATE INDEX deliveries_due ON deliveries (status, next_attempt_at)",
        "CREATE INDEX deliveries_webhook ON deliveries (webhook_id, seq)",
        """CREATE TABLE delivery_attempts (
            delivery_id TEXT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
            number INTEGER NOT NULL, at TEXT NOT NULL, status_code INTEGER,
            duration_ms REAL NOT NULL, error TEXT,
            PRIMARY KEY (delivery_id, number)) WITHOUT ROWID""",
    ),
)

SCHEMA_VERSION: Final = len(_MIGRATIONS)


# ---------------------------------------------------------------- values <-> SQL text


def _ts(value: datetime) -> str:
    """UTC ISO-8601 with a Z; fixed-width microseconds so text order is time order."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: the store takes timezone-aware UTC times")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ts_or_none(value: datetime | None) -> str | None:
    return None if value is None else _ts(value)


def _dt(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text).astimezone(UTC)


def _dt_req(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _now() -> datetime:
    return datetime.now(UTC)


def _enum_value(value: Any) -> Any:
    # str(SomeStrEnum.X) is "SomeStrEnum.X" on 3.11, so never rely on str().
    return value.value if isinstance(value, enum.Enum) else value


def _jsonable(value: Any) -> Any:
    """Plain JSON values from our frozen types: dataclasses, enums, tuples, SecretRef."""
    if isinstance(value, SecretRef):
        return {"secret": value.name}  # the same shape a definition file uses
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _dumps(value: Any) -> str:
    return identity.canonical_json(_jsonable(value))


def _params_from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("secret"), str):
            return SecretRef(value["secret"])
        return {k: _params_from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_params_from_json(v) for v in value]
    return value


@functools.cache
def _fields_of(tp: type) -> tuple[dict[str, Any], frozenset[str]]:
    """A dataclass's resolved field types and names; resolving them is slow, so once per type."""
    return get_type_hints(tp), frozenset(f.name for f in dataclasses.fields(tp))


def _from_jsonable(tp: Any, value: Any) -> Any:
    """Rebuild a value of type `tp` (as annotated in types.py) from its JSON form."""
    if value is None:
        return None
    origin = get_origin(tp)
    if origin in (Union, pytypes.UnionType):
        inner = [a for a in get_args(tp) if a is not type(None)]
        return _from_jsonable(inner[0], value) if len(inner) == 1 else value
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_jsonable(args[0], v) for v in value)
        return tuple(_from_jsonable(a, v) for a, v in zip(args, value, strict=True))
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints, known = _fields_of(tp)
        # Unknown keys come from a newer writer; ignoring them lets an older reader cope.
        return tp(**{k: _from_jsonable(hints[k], v) for k, v in value.items() if k in known})
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if tp is float and isinstance(value, int):
        return float(value)
    return value


def _spec_to_json(spec: ContainerSpec) -> str:
    """ContainerSpec as canonical JSON text."""
    return identity.canonical_json(dataclasses.asdict(spec))


def _spec_from_json(text: str) -> ContainerSpec:
    """The exact ContainerSpec `_spec_to_json` wrote, nested dataclasses and tuples rebuilt."""
    spec: ContainerSpec = _from_jsonable(ContainerSpec, json.loads(text))
    return spec


def _reason_from_json(text: str) -> Reason:
    raw = json.loads(text)
    return Reason(
        kind=ReasonKind(raw["kind"]),
        summary=raw["summary"],
        commit=raw.get("commit"),
        # before/after come back as JSON values (a tuple comes back a list).
        changes=tuple(
            FieldChange(c["field"], c["before"], c["after"]) for c in raw.get("changes", ())
        ),
    )


def _hash_secret(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- the store


class Store:
    """The state database at `state_dir/deployally.db`, shared by threads and processes."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / DB_FILE
        if not self.state_dir.exists():
            self.state_dir.mkdir(parents=True, mode=0o700)
            self.state_dir.chmod(0o700)  # mkdir's mode is filtered by the umask
        # Create the file ourselves so it never exists, even briefly, readable by
        # others: it holds secrets and key hashes. SQLite gives -wal/-shm the same mode.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        self.path.chmod(0o600)
        # One connection per thread: under WAL, readers (API handlers, the CLI) never
        # wait for a writer, and writers in this process queue on SQLite's own lock
        # (BEGIN IMMEDIATE + busy_timeout) exactly as writers in other processes do,
        # so there is one concurrency story, not two. All are kept to close them.
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._migrate()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    def close(self) -> None:
        """Close every connection this Store opened, in any thread."""
        with self._lock:
            self._closed = True
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------- connections

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and not self._closed:
            return conn
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self!r} is closed")
            # isolation_level=None: we issue BEGIN ourselves; check_same_thread=False
            # only so close() can close it from another thread.
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._connections.append(conn)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA foreign_keys = ON")
        # NORMAL under WAL survives a process crash; only a power cut can lose the
        # last commits, and it saves an fsync per log line.
        conn.execute("PRAGMA synchronous = NORMAL")
        self._local.conn = conn
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction. IMMEDIATE takes the write lock up front, so the
        busy_timeout applies; a deferred read-then-write would fail at once instead."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: several SELECTs see one snapshot."""
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self._write() as conn:
            # Read the version under the write lock, so two processes opening a new
            # database at once do not both run the same migration.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for number in range(version, SCHEMA_VERSION):
                for statement in _MIGRATIONS[number]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number + 1}")
            now = _ts(_now())
            conn.execute(
                "INSERT INTO servers (id, name, environment, description, status, created_at)"
                " VALUES (?, ?, 'production', 'this host', 'active', ?)"
                " ON CONFLICT (id) DO NOTHING",
                (LOCAL_SERVER_ID, LOCAL_SERVER_NAME, now),
            )

    def schema_version(self) -> int:
        """The schema version of the database file (PRAGMA user_version)."""
        with self._read() as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])

    # ---------------------------------------------------------- sync bookkeeping

    def get_meta(self, key: str) -> str | None:
        """A bookkeeping value, or None when never set."""
        row = self._conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row["value"])

    def set_meta(self, key: str, value: str) -> None:
        """Set a bookkeeping value."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def last_applied_commit(self) -> str | None:
        """The commit whose sync finished applying."""
        return self.get_meta(META_LAST_APPLIED_COMMIT)

    def set_last_applied_commit(self, sha: str) -> None:
        """Record that the sync of `sha` finished applying."""
        self.set_meta(META_LAST_APPLIED_COMMIT, sha)

    def last_attempted_commit(self) -> str | None:
        """The commit a sync last started on, whether or not it finished."""
        return self.get_meta(META_LAST_ATTEMPTED_COMMIT)

    def set_last_attempted_commit(self, sha: str) -> None:
        """Record that a sync of `sha` started."""
        self.set_meta(META_LAST_ATTEMPTED_COMMIT, sha)

    # ---------------------------------------------------------- definitions

    def upsert_definition(self, rec: DefinitionRecord) -> None:
        """Insert or replace a definition's record; the first created_at is kept."""
        row = (
            rec.id,
            rec.name,
            rec.path,
            rec.template_id,
            rec.server_id,
            rec.profile,
            _enum_value(rec.status),
            rec.current_revision,
            rec.applied_revision,
            None if rec.desired is None else _spec_to_json(rec.desired),
            rec.applied_hash,
            _dumps(rec.depends_files),
            _dumps(rec.params),
            rec.last_error,
            int(rec.operator_stopped),
            _ts(rec.created_at),
            _ts(rec.updated_at),
        )
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO definitions (id, name, path, template_id, server_id, profile,"
                    " status, current_revision, applied_revision, desired, applied_hash,"
                    " depends_files, params, last_error, operator_stopped, created_at,"
                    " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (id) DO UPDATE SET name = excluded.name,"
                    " path = excluded.path, template_id = excluded.template_id,"
                    " server_id = excluded.server_id, profile = excluded.profile,"
                    " status = excluded.status, current_revision = excluded.current_revision,"
                    " applied_revision = excluded.applied_revision, desired = excluded.desired,"
                    " applied_hash = excluded.applied_hash,"
                    " depends_files = excluded.depends_files, params = excluded.params,"
                    " last_error = excluded.last_error,"
                    " operator_stopped = excluded.operator_stopped,"
                    " updated_at = excluded.updated_at",
                    row,
                )
        except sqlite3.IntegrityError as exc:
            raise Conflict(
                f"definition name '{rec.name}' is already used by another id: "
                f"rename {rec.path} or remove the other definition"
            ) from exc

    def definition(self, key: str) -> DefinitionRecord | None:
        """A definition by id (def_...) or name, or None."""
        row = (
            self._conn()
            .execute("SELECT * FROM definitions WHERE id = ? OR name = ?", (key, key))
            .fetchone()
        )
        return None if row is None else _definition_from_row(row)

    def definitions(
        self,
        *,
        server_id: str | None = None,
        status: DefinitionStatus | str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[DefinitionRecord]:
        """Definitions by name, optionally of one server and/or one status."""
        where, args = _filters(server_id=server_id, status=status)
        rows = (
            self._conn()
            .execute(
                f"SELECT * FROM definitions{where} ORDER BY name LIMIT ? OFFSET ?",
                (*args, -1 if limit is None else limit, offset),
            )
            .fetchall()
        )
        return [_definition_from_row(r) for r in rows]

    def count_definitions(
        self, server_id: str | None = None, status: DefinitionStatus | str | None = None
    ) -> int:
        """How many definitions `definitions` would list without a limit."""
        where, args = _filters(server_id=server_id, status=status)
        row = self._conn().execute(f"SELECT count(*) FROM definitions{where}", args).fetchone()
        return int(row[0])

    def delete_definition(self, id: str) -> None:
        """Forget a definition; its revisions and deployments stay as history."""
        with self._write() as conn:
            conn.execute("DELETE FROM definitions WHERE id = ?", (id,))

    def set_definition_status(
        self,
        id: str,
        status: DefinitionStatus | str,
        *,
        last_error: str | None = None,
        applied_revision: int | None = _UNSET,
        applied_hash: str | None = _UNSET,
    ) -> None:
        """Set status and last_error (None clears it); applied_* change only when given."""
        sets = ["status = ?", "last_error = ?", "updated_at = ?"]
        args: list[Any] = [_enum_value(status), last_error, _ts(_now())]
        if applied_revision is not _UNSET:
            sets.append("applied_revision = ?")
            args.append(applied_revision)
        if applied_hash is not _UNSET:
            sets.append("applied_hash = ?")
            args.append(applied_hash)
        self._update_definition(id, sets, args)

    def set_operator_stopped(self, id: str, stopped: bool) -> None:
        """Record an operator's stop (True) or start (False), so self-heal respects it."""
        self._update_definition(
            id, ["operator_stopped = ?", "updated_at = ?"], [int(stopped), _ts(_now())]
        )

    def _update_definition(self, id: str, sets: list[str], args: list[Any]) -> None:
        with self._write() as conn:
            cur = conn.execute(
                f"UPDATE definitions SET {', '.join(sets)} WHERE id = ?", (*args, id)
            )
            if cur.rowcount == 0:
                raise NotFound(f"definition '{id}' is not in the store: run a sync first")

    # ---------------------------------------------------------- revisions

    def add_revision(self, rev: Revision) -> None:
        """Record a revision; adding the same (definition, number) again does nothing."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO revisions (definition_id, number, name, commit_sha, desired_hash,"
                " path, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (definition_id, number) DO NOTHING",
                (
                    rev.definition_id,
                    rev.number,
                    rev.name,
                    rev.commit,
                    rev.desired_hash,
                    rev.path,
                    _ts(rev.created_at),
                ),
            )

    def revisions(self, definition_id: str) -> list[Revision]:
        """Every revision of a definition, oldest first."""
        rows = (
            self._conn()
            .execute(
                "SELECT * FROM revisions WHERE definition_id = ? ORDER BY number",
                (definition_id,),
            )
            .fetchall()
        )
        return [_revision_from_row(r) for r in rows]

    def latest_revision(self, definition_id: str) -> Revision | None:
        """The newest revision of a definition, or None."""
        row = (
            self._conn()
            .execute(
                "SELECT * FROM revisions WHERE definition_id = ? ORDER BY number DESC LIMIT 1",
                (definition_id,),
            )
            .fetchone()
        )
        return None if row is None else _revision_from_row(row)

    def revision(self, definition_id: str, number: int) -> Revision | None:
        """Revision `number` of a definition, or None."""
        row = (
            self._conn()
            .execute(
                "SELECT * FROM revisions WHERE definition_id = ? AND number = ?",
                (definition_id, number),
            )
            .fetchone()
        )
        return None if row is None else _revision_from_row(row)

    # ---------------------------------------------------------- deployments

    def create_deployment(self, dep: Deployment) -> None:
        """Record a new deployment (and any logs it already carries)."""
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO deployments (id, definition_id, definition_name, server_id,"
                    " revision, commit_sha, action, status, reason, created_at, started_at,"
                    " finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        dep.id,
                        dep.definition_id,
                        dep.definition_name,
                        dep.server_id,
                        dep.revision,
                        dep.commit,
                        _enum_value(dep.action),
                        _enum_value(dep.status),
                        _dumps(dep.reason),
                        _ts(dep.created_at),
                        _ts_or_none(dep.started_at),
                        _ts_or_none(dep.finished_at),
                    ),
                )
                conn.executemany(
                    "INSERT INTO deployment_logs (deployment_id, line, at, message)"
                    " VALUES (?, ?, ?, ?)",
                    [(dep.id, n, _ts(log.at), log.message) for n, log in enumerate(dep.logs, 1)],
                )
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"deployment '{dep.id}' already exists: use a fresh id") from exc

    def update_deployment(
        self,
        id: str,
        *,
        status: DeploymentStatus | str,
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
    ) -> None:
        """Set a deployment's status; started_at/finished_at change only when given."""
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE deployments SET status = ?, started_at = coalesce(?, started_at),"
                " finished_at = coalesce(?, finished_at) WHERE id = ?",
                (_enum_value(status), _ts_or_none(started_at), _ts_or_none(finished_at), id),
            )
            if cur.rowcount == 0:
                raise NotFound(f"deployment '{id}' does not exist")

    def append_log(self, deployment_id: str, message: str, at: datetime | None = None) -> int:
        """Add a log line (already masked by the caller); returns its line number from 1."""
        try:
            with self._write() as conn:
                row = _returning(
                    conn,
                    "INSERT INTO deployment_logs (deployment_id, line, at, message)"
                    " SELECT ?, coalesce(max(line), 0) + 1, ?, ? FROM deployment_logs"
                    " WHERE deployment_id = ? RETURNING line",
                    (deployment_id, _ts(at or _now()), message, deployment_id),
                )
        except sqlite3.IntegrityError as exc:
            raise NotFound(f"deployment '{deployment_id}' does not exist") from exc
        assert row is not None  # INSERT ... SELECT of an aggregate always yields one row
        return int(row[0])

    def deployment(self, id: str, with_logs: bool = True) -> Deployment | None:
        """A deployment by id, with its logs unless with_logs=False."""
        with self._read() as conn:
            row = conn.execute("SELECT * FROM deployments WHERE id = ?", (id,)).fetchone()
            if row is None:
                return None
            logs: tuple[LogLine, ...] = ()
            if with_logs:
                logs = tuple(
                    LogLine(_dt_req(r["at"]), r["message"])
                    for r in conn.execute(
                        "SELECT at, message FROM deployment_logs WHERE deployment_id = ?"
                        " ORDER BY line",
                        (id,),
                    )
                )
        return _deployment_from_row(row, logs)

    def deployments(
        self,
        *,
        definition_id: str | None = None,
        server_id: str | None = None,
        status: DeploymentStatus | str | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> list[Deployment]:
        """Deployments newest first, without logs."""
        where, args = _filters(definition_id=definition_id, server_id=server_id, status=status)
        rows = (
            self._conn()
            .execute(
                f"SELECT * FROM deployments{where} ORDER BY created_at DESC, seq DESC"
                " LIMIT ? OFFSET ?",
                (*args, limit, offset),
            )
            .fetchall()
        )
        return [_deployment_from_row(r, ()) for r in rows]

    def count_deployments(
        self,
        *,
        definition_id: str | None = None,
        server_id: str | None = None,
        status: DeploymentStatus | str | None = None,
    ) -> int:
        """How many deployments `deployments` would list without a limit."""
        where, args = _filters(definition_id=definition_id, server_id=server_id, status=status)
        row = self._conn().execute(f"SELECT count(*) FROM deployments{where}", args).fetchone()
        return int(row[0])

    def logs_since(self, deployment_id: str, after_line: int) -> list[tuple[int, LogLine]]:
        """Log lines numbered above `after_line`, in order: what `logs -f` polls for."""
        rows = (
            self._conn()
            .execute(
                "SELECT line, at, message FROM deployment_logs"
                " WHERE deployment_id = ? AND line > ? ORDER BY line",
                (deployment_id, after_line),
            )
            .fetchall()
        )
        return [(int(r["line"]), LogLine(_dt_req(r["at"]), r["message"])) for r in rows]

    def counts_by_status(self) -> dict[str, int]:
        """Deployments per status, every status present (0 when none), for /metrics."""
        counts = {s.value: 0 for s in DeploymentStatus}
        for row in self._conn().execute(
            "SELECT status, count(*) AS n FROM deployments GROUP BY status"
        ):
            counts[row["status"]] = int(row["n"])
        return counts

    # ---------------------------------------------------------- secrets

    def set_secret(self, name: str, value: str) -> int:
        """Store a secret's value; returns its new version (1 for a new name)."""
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

    def secret_value(self, name: str) -> str:
        """A secret's current value; raises SecretError when it is not set."""
        row = (
            self._conn()
            .execute("SELECT value FROM secrets WHERE name = ? AND value IS NOT NULL", (name,))
            .fetchone()
        )
        if row is None:
            raise SecretError(f"secret '{name}' is not set: run `deployally secret set {name}`")
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
                raise NotFound(f"secret '{name}' is not set: `deployally secret list` shows them")

    # ---------------------------------------------------------- API tokens

    def create_token(self, name: str, scope: str) -> str:
        """Make an API token; returns it this once (only its sha256 is stored)."""
        if scope not in TOKEN_SCOPES:
            raise ValidationError(
                "token", "scope", f"'{scope}' is not a scope: use one of {', '.join(TOKEN_SCOPES)}"
            )
        token = TOKEN_PREFIX + pysecrets.token_urlsafe(24)  # 24 bytes -> 32 characters
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO tokens (id, name, scope, token_hash, created_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (identity.random_id("tok"), name, scope, _hash_secret(token), _ts(_now())),
                )
        except sqlite3.IntegrityError as exc:
            raise Conflict(
                f"token '{name}' already exists: revoke it first or choose another name"
            ) from exc
        return token

    def verify_token(self, token: str) -> TokenRecord | None:
        """The token's record when `token` is a live API token, else None."""
        if not token.startswith(TOKEN_PREFIX) or token.startswith(SERVER_KEY_PREFIX):
            return None
        digest = _hash_secret(token)
        row = (
            self._conn().execute("SELECT * FROM tokens WHERE token_hash = ?", (digest,)).fetchone()
        )
        # The lookup is by hash, so timing reveals nothing of the token; the
        # constant-time compare is a second, cheap guard.
        if row is None or not hmac.compare_digest(row["token_hash"], digest):
            return None
        return _token_from_row(row)

    def list_tokens(self) -> list[TokenRecord]:
        """Every live token's record, by name; never the token."""
        rows = self._conn().execute("SELECT * FROM tokens ORDER BY name")
        return [_token_from_row(r) for r in rows]

    def revoke_token(self, name_or_id: str) -> None:
        """Delete a token by name or id, so it no longer verifies."""
        with self._write() as conn:
            cur = conn.execute(
                "DELETE FROM tokens WHERE name = ? OR id = ?", (name_or_id, name_or_id)
            )
            if cur.rowcount == 0:
                raise NotFound(
                    f"token '{name_or_id}' does not exist: `deployally token list` shows them"
                )

    # ---------------------------------------------------------- servers

    def add_server(
        self, name: str, environment: str, description: str = ""
    ) -> tuple[ServerRecord, str]:
        """Register a server; returns its record and its agent key, shown this once."""
        key = SERVER_KEY_PREFIX + pysecrets.token_urlsafe(24)
        record = ServerRecord(
            id=identity.random_id("srv"),
            name=name,
            environment=environment,
            description=description,
            status="active",
            created_at=_now(),
        )
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO servers (id, name, environment, description, status, key_hash,"
                    " created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.id,
                        name,
                        environment,
                        description,
                        record.status,
                        _hash_secret(key),
                        _ts(record.created_at),
                    ),
                )
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"server '{name}' already exists: choose another name") from exc
        return record, key

    def servers(self) -> list[ServerRecord]:
        """Every server, by name; "local" is always there."""
        rows = self._conn().execute("SELECT * FROM servers ORDER BY name")
        return [_server_from_row(r) for r in rows]

    def server(self, key: str) -> ServerRecord | None:
        """A server by id (srv_...) or name, or None."""
        row = (
            self._conn()
            .execute("SELECT * FROM servers WHERE id = ? OR name = ?", (key, key))
            .fetchone()
        )
        return None if row is None else _server_from_row(row)

    def verify_server_key(self, key: str) -> ServerRecord | None:
        """The server whose agent key `key` is, else None."""
        if not key.startswith(SERVER_KEY_PREFIX):
            return None
        digest = _hash_secret(key)
        row = self._conn().execute("SELECT * FROM servers WHERE key_hash = ?", (digest,)).fetchone()
        if row is None or not hmac.compare_digest(row["key_hash"], digest):
            return None
        return _server_from_row(row)

    def touch_server(self, id: str) -> None:
        """Note that a server's agent was heard from just now."""
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE servers SET last_seen_at = ? WHERE id = ?", (_ts(_now()), id)
            )
            if cur.rowcount == 0:
                raise NotFound(f"server '{id}' does not exist")

    # ---------------------------------------------------------- webhooks and outbox

    def add_webhook(self, url: str, events: Sequence[str], secret: str) -> WebhookRecord:
        """Subscribe `url` to `events`; `secret` signs each payload sent to it."""
        record = WebhookRecord(
            id=identity.random_id("whk"),
            url=url,
            events=tuple(dict.fromkeys(events)),  # duplicates dropped, order kept
            secret=secret,
            created_at=_now(),
        )
        with self._write() as conn:
            conn.execute(
                "INSERT INTO webhooks (id, url, events, secret, created_at) VALUES (?, ?, ?, ?, ?)",
                (record.id, url, _dumps(record.events), secret, _ts(record.created_at)),
            )
        return record

    def webhooks(self) -> list[WebhookRecord]:
        """Every webhook, oldest first."""
        rows = self._conn().execute("SELECT * FROM webhooks ORDER BY created_at, id")
        return [_webhook_from_row(r) for r in rows]

    def webhook(self, id: str) -> WebhookRecord | None:
        """A webhook by id, or None."""
        row = self._conn().execute("SELECT * FROM webhooks WHERE id = ?", (id,)).fetchone()
        return None if row is None else _webhook_from_row(row)

    def delete_webhook(self, id: str) -> None:
        """Remove a webhook and its pending and past deliveries."""
        with self._write() as conn:
            if conn.execute("DELETE FROM webhooks WHERE id = ?", (id,)).rowcount == 0:
                raise NotFound(f"webhook '{id}' does not exist")

    def enqueue_event(self, event: str, data: Mapping[str, Any]) -> str:
        """Store an event and one pending delivery per webhook subscribed to it, atomically."""
        event_id = identity.random_id("evt")
        now = _ts(_now())
        with self._write() as conn:
            conn.execute(
                "INSERT INTO events (id, event, data, created_at) VALUES (?, ?, ?, ?)",
                (event_id, event, _dumps(data), now),
            )
            # Filtered here, inside the write lock, so a webhook added concurrently is
            # either wholly in this fan-out or wholly after it.
            for row in conn.execute("SELECT id, events FROM webhooks ORDER BY created_at, id"):
                if event in json.loads(row["events"]):
                    conn.execute(
                        "INSERT INTO deliveries (id, event_id, webhook_id, status,"
                        " next_attempt_at, created_at) VALUES (?, ?, ?, 'pending', ?, ?)",
                        (identity.random_id("dlv"), event_id, row["id"], now, now),
                    )
        return event_id

    def enqueue_for(self, webhook_id: str, event: str, data: Mapping[str, Any]) -> str:
        """Store an event for one webhook only (a test ping), whatever it subscribed to; the delivery id."""
        event_id = identity.random_id("evt")
        delivery_id = identity.random_id("dlv")
        now = _ts(_now())
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM webhooks WHERE id = ?", (webhook_id,)).fetchone() is None:
                raise NotFound(f"webhook '{webhook_id}' does not exist")
            conn.execute(
                "INSERT INTO events (id, event, data, created_at) VALUES (?, ?, ?, ?)",
                (event_id, event, _dumps(data), now),
            )
            conn.execute(
                "INSERT INTO deliveries (id, event_id, webhook_id, status,"
                " next_attempt_at, created_at) VALUES (?, ?, ?, 'pending', ?, ?)",
                (delivery_id, event_id, webhook_id, now, now),
            )
        return delivery_id

    def count_deliveries(self, webhook_id: str) -> int:
        """How many deliveries a webhook has, in any status."""
        row = self._conn().execute(
            "SELECT COUNT(*) FROM deliveries WHERE webhook_id = ?", (webhook_id,)
        ).fetchone()
        return int(row[0])

    def due_deliveries(self, now: datetime, limit: int = 100) -> list[DeliveryRecord]:
        """Pending deliveries whose next attempt is due by `now`, most overdue first."""
        rows = (
            self._conn()
            .execute(
                f"{_DELIVERY_SELECT} WHERE d.status = 'pending' AND d.next_attempt_at <= ?"
                " ORDER BY d.next_attempt_at, d.seq LIMIT ?",
                (_ts(now), limit),
            )
            .fetchall()
        )
        return [_delivery_from_row(r) for r in rows]

    def delivery(self, id: str) -> DeliveryRecord | None:
        """A delivery by id, or None."""
        row = self._conn().execute(f"{_DELIVERY_SELECT} WHERE d.id = ?", (id,)).fetchone()
        return None if row is None else _delivery_from_row(row)

    def record_attempt(
        self,
        delivery_id: str,
        *,
        status_code: int | None,
        duration_ms: float,
        error: str | None,
        next_attempt_at: datetime | None,
        final_status: DeliveryStatus | str | None = None,
    ) -> None:
        """Keep one try's outcome; the delivery ends with final_status, else retries at
        next_attempt_at."""
        status = _enum_value(final_status) if final_status is not None else "pending"
        if status == "pending" and next_attempt_at is None:
            raise ValueError("a delivery left pending needs a next_attempt_at")
        next_at = None if status != "pending" else _ts_or_none(next_attempt_at)
        with self._write() as conn:
            row = _returning(
                conn,
                "UPDATE deliveries SET attempts = attempts + 1, status = ?,"
                " next_attempt_at = ?, last_status_code = ?, last_error = ?"
                " WHERE id = ? RETURNING attempts",
                (DeliveryStatus(status).value, next_at, status_code, error, delivery_id),
            )
            if row is None:
                raise NotFound(f"delivery '{delivery_id}' does not exist")
            conn.execute(
                "INSERT INTO delivery_attempts (delivery_id, number, at, status_code,"
                " duration_ms, error) VALUES (?, ?, ?, ?, ?, ?)",
                (delivery_id, int(row[0]), _ts(_now()), status_code, duration_ms, error),
            )

    def deliveries(self, webhook_id: str, limit: int = 20, offset: int = 0) -> list[DeliveryRecord]:
        """A webhook's deliveries, newest first."""
        rows = (
            self._conn()
            .execute(
                f"{_DELIVERY_SELECT} WHERE d.webhook_id = ? ORDER BY d.seq DESC LIMIT ? OFFSET ?",
                (webhook_id, limit, offset),
            )
            .fetchall()
        )
        return [_delivery_from_row(r) for r in rows]

    def delivery_attempts(self, delivery_id: str) -> list[DeliveryAttempt]:
        """Every try of one delivery, first first."""
        rows = self._conn().execute(
            "SELECT * FROM delivery_attempts WHERE delivery_id = ? ORDER BY number",
            (delivery_id,),
        )
        return [
            DeliveryAttempt(
                delivery_id=r["delivery_id"],
                number=int(r["number"]),
                at=_dt_req(r["at"]),
                status_code=r["status_code"],
                duration_ms=float(r["duration_ms"]),
                error=r["error"],
            )
            for r in rows
        ]


# ---------------------------------------------------------------- rows -> records

_DELIVERY_SELECT: Final = (
    "SELECT d.*, e.event AS event, e.data AS data FROM deliveries d"
    " JOIN events e ON e.id = d.event_id"
)


def _returning(conn: sqlite3.Connection, sql: str, args: Sequence[Any]) -> sqlite3.Row | None:
    """The first row of a statement with RETURNING, read to the end so it is finished
    before the COMMIT that follows."""
    rows = conn.execute(sql, args).fetchall()
    return rows[0] if rows else None


def _filters(**columns: Any) -> tuple[str, tuple[Any, ...]]:
    """A WHERE clause for the columns given a value (None means any)."""
    given = {k: _enum_value(v) for k, v in columns.items() if v is not None}
    if not given:
        return "", ()
    return " WHERE " + " AND ".join(f"{k} = ?" for k in given), tuple(given.values())


def _definition_from_row(row: sqlite3.Row) -> DefinitionRecord:
    return DefinitionRecord(
        id=row["id"],
        name=row["name"],
        path=row["path"],
        template_id=row["template_id"],
        server_id=row["server_id"],
        profile=row["profile"],
        status=DefinitionStatus(row["status"]),
        current_revision=int(row["current_revision"]),
        applied_revision=row["applied_revision"],
        desired=None if row["desired"] is None else _spec_from_json(row["desired"]),
        applied_hash=row["applied_hash"],
        depends_files=tuple(json.loads(row["depends_files"])),
        params=_params_from_json(json.loads(row["params"])),
        last_error=row["last_error"],
        operator_stopped=bool(row["operator_stopped"]),
        created_at=_dt_req(row["created_at"]),
        updated_at=_dt_req(row["updated_at"]),
    )


def _revision_from_row(row: sqlite3.Row) -> Revision:
    return Revision(
        definition_id=row["definition_id"],
        name=row["name"],
        number=int(row["number"]),
        commit=row["commit_sha"],
        desired_hash=row["desired_hash"],
        path=row["path"],
        created_at=_dt_req(row["created_at"]),
    )


def _deployment_from_row(row: sqlite3.Row, logs: tuple[LogLine, ...]) -> Deployment:
    return Deployment(
        id=row["id"],
        definition_id=row["definition_id"],
        definition_name=row["definition_name"],
        server_id=row["server_id"],
        revision=row["revision"],
        commit=row["commit_sha"],
        action=ActionKind(row["action"]),
        status=DeploymentStatus(row["status"]),
        reason=_reason_from_json(row["reason"]),
        created_at=_dt_req(row["created_at"]),
        started_at=_dt(row["started_at"]),
        finished_at=_dt(row["finished_at"]),
        logs=logs,
    )


def _token_from_row(row: sqlite3.Row) -> TokenRecord:
    return TokenRecord(
        id=row["id"], name=row["name"], scope=row["scope"], created_at=_dt_req(row["created_at"])
    )


def _server_from_row(row: sqlite3.Row) -> ServerRecord:
    return ServerRecord(
        id=row["id"],
        name=row["name"],
        environment=row["environment"],
        description=row["description"],
        status=row["status"],
        created_at=_dt_req(row["created_at"]),
        last_seen_at=_dt(row["last_seen_at"]),
    )


def _webhook_from_row(row: sqlite3.Row) -> WebhookRecord:
    return WebhookRecord(
        id=row["id"],
        url=row["url"],
        events=tuple(json.loads(row["events"])),
        secret=row["secret"],
        created_at=_dt_req(row["created_at"]),
    )


def _delivery_from_row(row: sqlite3.Row) -> DeliveryRecord:
    return DeliveryRecord(
        id=row["id"],
        webhook_id=row["webhook_id"],
        event_id=row["event_id"],
        event=row["event"],
        data=json.loads(row["data"]),
        status=DeliveryStatus(row["status"]),
        attempts=int(row["attempts"]),
        next_attempt_at=_dt(row["next_attempt_at"]),
        created_at=_dt_req(row["created_at"]),
        last_status_code=row["last_status_code"],
        last_error=row["last_error"],
    )
