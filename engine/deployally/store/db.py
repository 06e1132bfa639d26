"""The database file: connections per thread, transactions, and the schema's migrations."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Final, Self

from deployally import identity
from deployally.errors import StoreUnavailable
from deployally.state_dir import DB_FILE
from deployally.store.codec import _enum_value, _now, _ts

LOCAL_SERVER_NAME: Final = "local"
LOCAL_SERVER_ID: Final = identity.stable_id("srv", LOCAL_SERVER_NAME)
BUSY_TIMEOUT_MS: Final = 5000  # how long a writer waits for another's write lock
PROBE_TIMEOUT_MS: Final = 1000  # ... and a health probe, which must answer quickly
PROBE_EVERY_S: Final = 1.0
# Below this much room the store is as good as full: SQLite may still fit a small write into
# its write-ahead log's old pages, but a sync's log lines and records soon will not.
MIN_FREE_BYTES: Final = 1024 * 1024

# What each SQLite error that means "cannot be written now" tells the person reading it.
_FAULTS: Final = {
    "SQLITE_BUSY": "it is locked by another process (waited {timeout:g} s)",
    "SQLITE_LOCKED": "it is locked by another process (waited {timeout:g} s)",
    "SQLITE_FULL": "the disk is full",
    "SQLITE_IOERR": "the disk could not be written (I/O error)",
    "SQLITE_READONLY": "it is read-only",
    "SQLITE_CANTOPEN": "its files cannot be opened",
}


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
    # Which driver serves a server; servers registered so far run agents.
    (
        "ALTER TABLE servers ADD COLUMN kind TEXT NOT NULL DEFAULT 'agent'",
        f"UPDATE servers SET kind = 'local' WHERE id = '{LOCAL_SERVER_ID}'",
    ),
    (
        # Secrets keep every version a revision may pin, encrypted (store/secrets.py).
        # secrets.version counts the versions ever made; current is the one {secret: NAME}
        # uses (NULL once removed); secrets.value is no longer used.
        "ALTER TABLE secrets ADD COLUMN current INTEGER",
        "UPDATE secrets SET current = version WHERE value IS NOT NULL",
        """CREATE TABLE secret_versions (
            name TEXT NOT NULL, version INTEGER NOT NULL, value TEXT NOT NULL,
            key_id TEXT NOT NULL, staged INTEGER NOT NULL DEFAULT 0, commit_sha TEXT,
            created_at TEXT NOT NULL, PRIMARY KEY (name, version)) WITHOUT ROWID""",
        # key_id '' marks a value still in plaintext: encrypted when the key is first opened.
        (
            "INSERT INTO secret_versions (name, version, value, key_id, created_at)"
            " SELECT name, version, value, '', updated_at FROM secrets WHERE value IS NOT NULL"
        ),
        "UPDATE secrets SET value = NULL",
        # The secret versions each revision pins, so they are kept while it may be rolled back to.
        """CREATE TABLE revision_secrets (
            definition_id TEXT NOT NULL, number INTEGER NOT NULL, secret TEXT NOT NULL,
            version INTEGER NOT NULL, PRIMARY KEY (definition_id, number, secret)) WITHOUT ROWID""",
        "CREATE INDEX revision_secrets_pin ON revision_secrets (secret, version)",
    ),
    (
        # The sender reads each webhook's pending deliveries in order, however long its
        # history of delivered ones.
        (
            "CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries (webhook_id, seq)"
            " WHERE status = 'pending'"
        ),
    ),
    # What a waiting deployment waits for (JSON), and the commit each server last applied.
    (
        "ALTER TABLE deployments ADD COLUMN waiting TEXT",
        "ALTER TABLE servers ADD COLUMN applied_commit TEXT",
    ),
    # Volumes and networks this engine made before they carried its owner label.
    (
        """CREATE TABLE claims (
            kind TEXT NOT NULL, name TEXT NOT NULL, why TEXT NOT NULL,
            claimed_at TEXT NOT NULL, PRIMARY KEY (kind, name)) WITHOUT ROWID""",
    ),
    # The definition (def_ id) whose API password write made a secret: only a write through
    # it may write the secret again. NULL: the operator's (`deployally secret set`).
    (
        "ALTER TABLE secrets ADD COLUMN owner TEXT",
        # Secrets an API write made so far: a version published with a commit, pinned by a
        # revision of the definition whose name the secret's name starts with (<name>_<param>).
        (
            "UPDATE secrets SET owner = (SELECT r.definition_id FROM secret_versions v"
            " JOIN revision_secrets p ON p.secret = v.name AND p.version = v.version"
            " JOIN revisions r ON r.definition_id = p.definition_id AND r.number = p.number"
            " WHERE v.name = secrets.name AND v.commit_sha IS NOT NULL"
            " AND substr(secrets.name, 1, length(r.name) + 1) = r.name || '_' LIMIT 1)"
        ),
    ),
    # The spec (rendered hash, revision) whose new instance failed its health gate: not
    # retried by itself until the definition, or a secret it uses, changes.
    (
        "ALTER TABLE definitions ADD COLUMN unready_hash TEXT",
        "ALTER TABLE definitions ADD COLUMN unready_revision INTEGER",
    ),
    # How the engine reaches a swarm server's manager, and what an agent reports of its host.
    (
        "ALTER TABLE servers ADD COLUMN docker_host TEXT",
        "ALTER TABLE servers ADD COLUMN agent_version TEXT",
        "ALTER TABLE servers ADD COLUMN docker_version TEXT",
    ),
    # The hashes of agent keys that no longer verify, so a refused key is told why: replaced
    # by rotate-key or its server removed (never the key itself).
    (
        """CREATE TABLE retired_server_keys (
            key_hash TEXT PRIMARY KEY, server_id TEXT NOT NULL, server_name TEXT NOT NULL,
            why TEXT NOT NULL, retired_at TEXT NOT NULL) WITHOUT ROWID""",
    ),
    # Which definitions changed since a reader last read them all (store/definitions.py): a
    # generation counted up by every insert and update of a definition, whoever writes it,
    # and kept in the row it wrote; deletions counted apart.
    (
        """CREATE TABLE definitions_generation (
            id INTEGER PRIMARY KEY CHECK (id = 0), changed INTEGER NOT NULL,
            deleted INTEGER NOT NULL)""",
        "INSERT INTO definitions_generation (id, changed, deleted) VALUES (0, 0, 0)",
        "ALTER TABLE definitions ADD COLUMN changed INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX definitions_changed ON definitions (changed)",
        """CREATE TRIGGER definitions_inserted AFTER INSERT ON definitions BEGIN
            UPDATE definitions_generation SET changed = changed + 1;
            UPDATE definitions SET changed = (SELECT changed FROM definitions_generation)
                WHERE id = NEW.id;
        END""",
        # Its own update of `changed` leaves the row's other columns as they were: not counted.
        """CREATE TRIGGER definitions_updated AFTER UPDATE ON definitions
            WHEN NEW.changed = OLD.changed BEGIN
            UPDATE definitions_generation SET changed = changed + 1;
            UPDATE definitions SET changed = (SELECT changed FROM definitions_generation)
                WHERE id = NEW.id;
        END""",
        """CREATE TRIGGER definitions_deleted AFTER DELETE ON definitions BEGIN
            UPDATE definitions_generation SET deleted = deleted + 1;
        END""",
    ),
)

SCHEMA_VERSION: Final = len(_MIGRATIONS)


class Database:
    """The connections, transactions and schema under a Store; each area's SQL builds on them."""

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
        # so there is one concurrency story, not two. All are kept to close them, by the
        # thread that opened each: a thread that has ended (a sync's pool threads come and
        # go) has its connection closed when a new one opens, so no file handle leaks.
        self._local = threading.local()
        self._connections: dict[threading.Thread, sqlite3.Connection] = {}
        self._lock = threading.Lock()
        self._closed = False
        # Why the last write failed, until a write succeeds again: what /health reports.
        self.write_fault: str | None = None
        self._written_at = float("-inf")  # monotonic time of the last successful write
        self._probe_lock = threading.Lock()
        self._migrate()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    def close(self) -> None:
        """Close every connection this Store opened, in any thread."""
        with self._lock:
            self._closed = True
            for conn in self._connections.values():
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
            for thread in [t for t in self._connections if not t.is_alive()]:
                self._connections.pop(thread).close()
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._connections[threading.current_thread()] = conn
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA foreign_keys = ON")
        # Deleted and overwritten bytes are zeroed, so no old secret lingers in free pages.
        conn.execute("PRAGMA secure_delete = ON")
        # NORMAL under WAL survives a process crash; only a power cut can lose the
        # last commits, and it saves an fsync per log line.
        conn.execute("PRAGMA synchronous = NORMAL")
        self._local.conn = conn
        return conn

    @contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction for every write of this thread in the block, each write a savepoint
        of it (a failed one undoes itself alone): many small writes, one commit. Nothing in
        it is durable before the block ends; StoreUnavailable if the commit fails."""
        with self._write():
            self._local.batch = True
            try:
                yield
            finally:
                self._local.batch = False

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction. IMMEDIATE takes the write lock up front, so the
        busy_timeout applies; a deferred read-then-write would fail at once instead.
        A store that cannot be written raises StoreUnavailable saying why."""
        conn = self._conn()
        if getattr(self._local, "batch", False):
            with self._savepoint(conn):
                yield conn
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (busy, disk full) may leave the transaction open.
                if conn.in_transaction:
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            fault = self._fault(exc, conn)
            if fault is None:
                raise
            self.write_fault = fault
            raise StoreUnavailable(f"the state store cannot be written: {fault} ({self.path})") from exc
        self.write_fault = None
        self._written_at = time.monotonic()

    @contextmanager
    def _savepoint(self, conn: sqlite3.Connection) -> Iterator[None]:
        """One write inside a batch's transaction; a store fault ends the whole batch
        (StoreUnavailable), any other error undoes this write alone."""
        conn.execute("SAVEPOINT one_write")
        try:
            try:
                yield
            except BaseException:
                with suppress(sqlite3.Error):  # a fault may have rolled the transaction back
                    conn.execute("ROLLBACK TO one_write")
                    conn.execute("RELEASE one_write")
                raise
            conn.execute("RELEASE one_write")
        except sqlite3.OperationalError as exc:
            fault = self._fault(exc, conn)
            if fault is None:
                raise
            self.write_fault = fault
            raise StoreUnavailable(f"the state store cannot be written: {fault} ({self.path})") from exc

    def _fault(self, exc: sqlite3.OperationalError, conn: sqlite3.Connection) -> str | None:
        """What a failed write means for a person, or None for an error of ours (bad SQL)."""
        name = getattr(exc, "sqlite_errorname", "")
        for prefix, text in _FAULTS.items():
            if name == prefix or name.startswith(prefix + "_"):
                timeout = conn.execute("PRAGMA busy_timeout").fetchone()[0] / 1000
                return text.format(timeout=timeout)
        return None

    def probe_write(self) -> None:
        """Check the store takes writes (StoreUnavailable if not), waiting at most a second for
        the lock: one bookkeeping row, or only the lock when a write succeeded just now; and
        that its disk has room."""
        with self._probe_lock:  # a flood of /health probes takes turns
            recent = self.write_fault is None and time.monotonic() - self._written_at < PROBE_EVERY_S
            conn = self._conn()
            conn.execute(f"PRAGMA busy_timeout = {PROBE_TIMEOUT_MS}")
            try:
                with self._write() as w:
                    if not recent:  # a full disk shows only when something is written
                        w.execute(
                            "INSERT INTO meta (key, value) VALUES ('store_probe', ?)"
                            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                            (_ts(_now()),),
                        )
            finally:
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            disk = os.statvfs(self.state_dir)
            free = disk.f_bavail * disk.f_frsize
            if free < MIN_FREE_BYTES:
                self.write_fault = f"the disk is full ({free // 1024} KiB free)"
                raise StoreUnavailable(
                    f"the state store cannot be written: {self.write_fault} ({self.path})"
                )

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
        # Opening a current store writes nothing, so a reader (`validate` in a pre-receive
        # hook) works while another process holds the write lock.
        conn = self._conn()
        current = conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION and (
            conn.execute("SELECT 1 FROM servers WHERE id = ?", (LOCAL_SERVER_ID,)).fetchone()
        )
        if current:
            return
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
                "INSERT INTO servers (id, name, environment, description, status, created_at,"
                " kind) VALUES (?, ?, 'production', 'this host', 'active', ?, 'local')"
                " ON CONFLICT (id) DO NOTHING",
                (LOCAL_SERVER_ID, LOCAL_SERVER_NAME, now),
            )

    def engine_id(self) -> str:
        """This store's identity, made once: it labels the containers the engine owns and
        names the store's secret key file."""
        conn = self._conn()
        row = conn.execute("SELECT value FROM meta WHERE key = 'engine_id'").fetchone()
        if row is None:
            insert = "INSERT INTO meta (key, value) VALUES ('engine_id', ?) ON CONFLICT DO NOTHING"
            if conn.in_transaction:  # a caller's write transaction (a first secret, say)
                conn.execute(insert, (identity.random_id("eng"),))
            else:
                with self._write() as w:
                    w.execute(insert, (identity.random_id("eng"),))
            row = conn.execute("SELECT value FROM meta WHERE key = 'engine_id'").fetchone()
        return str(row["value"])

    def schema_version(self) -> int:
        """The schema version of the database file (PRAGMA user_version)."""
        with self._read() as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])


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
