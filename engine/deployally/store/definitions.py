"""What a sync records: its bookkeeping (meta), definitions and their revisions."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from deployally.errors import Conflict, NotFound, UnstorableValue
from deployally.store.codec import (
    _dt_req,
    _dumps,
    _enum_value,
    _now,
    _params_from_json,
    _spec_from_json,
    _spec_to_json,
    _ts,
)
from deployally.store.db import Database, _filters
from deployally.types import DefinitionRecord, DefinitionStatus, RefusedCommit, Revision

META_LAST_APPLIED_COMMIT: Final = "last_applied_commit"
META_LAST_ATTEMPTED_COMMIT: Final = "last_attempted_commit"
META_REFUSED_COMMITS: Final = "refused_commits"

# A revision with the secret versions it pins, as a JSON list of [name, version].
_REVISIONS = (
    "SELECT r.*, (SELECT json_group_array(json_array(p.secret, p.version))"
    " FROM revision_secrets p WHERE p.definition_id = r.definition_id AND p.number = r.number)"
    " AS pins FROM revisions r"
)

_UNSET: Any = object()  # "leave this column as it is" in partial updates
_IN_CHUNK: Final = 500  # ids in one `IN (...)`, well below SQLite's limit of parameters


@dataclass
class _AllDefinitions:
    """Every definition's record as of one generation of the definitions table (db.py's
    definitions_generation): a sync reads them all, and only those changed since are read
    and decoded again (decoding a spec costs far more than the query). Records are frozen
    values, shared by every reader."""

    changed: int = -1  # no generation read yet: every row is newer
    deleted: int = -1
    by_id: dict[str, DefinitionRecord] = field(default_factory=dict)
    by_name: list[DefinitionRecord] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class DefinitionStore(Database):
    """Sync bookkeeping, definitions and revisions."""

    _all: _AllDefinitions | None = None

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

    def refused_commits(self) -> tuple[RefusedCommit, ...]:
        """The commits the last sync would not deploy (newest first), and why."""
        raw = json.loads(self.get_meta(META_REFUSED_COMMITS) or "[]")
        return tuple(RefusedCommit(r["sha"], r["summary"], r["reason"]) for r in raw)

    def set_refused_commits(self, refused: tuple[RefusedCommit, ...]) -> None:
        """Record the commits a sync would not deploy; () once the branch head deploys."""
        self.set_meta(
            META_REFUSED_COMMITS,
            json.dumps([{"sha": r.sha, "summary": r.summary, "reason": r.reason} for r in refused]),
        )

    # ---------------------------------------------------------- definitions

    def upsert_definition(self, rec: DefinitionRecord) -> None:
        """Insert or replace a definition's record; the first created_at is kept."""
        self.upsert_definitions([rec])

    def upsert_definitions(self, records: Sequence[DefinitionRecord]) -> None:
        """`upsert_definition` for each record, in one transaction; Conflict (nothing written)
        naming a record whose name another id holds."""
        try:
            with self._write() as conn:
                conn.executemany(_UPSERT_DEFINITION, [_definition_row(rec) for rec in records])
        except sqlite3.IntegrityError as exc:
            taken = "SELECT 1 FROM definitions WHERE name = ? AND id != ?"
            conn = self._conn()
            clash = next(
                (r for r in records if conn.execute(taken, (r.name, r.id)).fetchone()), records[0]
            )
            raise Conflict(
                f"definition name '{clash.name}' is already used by another id: "
                f"rename {clash.path} or remove the other definition"
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
        if not where and limit is None and offset == 0:
            return self._all_definitions()
        rows = (
            self._conn()
            .execute(
                f"SELECT * FROM definitions{where} ORDER BY name LIMIT ? OFFSET ?",
                (*args, -1 if limit is None else limit, offset),
            )
            .fetchall()
        )
        return [_definition_from_row(r) for r in rows]

    def _all_definitions(self) -> list[DefinitionRecord]:
        """Every definition by name: the rows written since the last such read, read and
        decoded, the others as they were (one query when nothing changed)."""
        if self._all is None:
            self._all = _AllDefinitions()
        known = self._all
        with known.lock, self._read() as conn:  # one snapshot: generation and rows agree
            changed, deleted = conn.execute(
                "SELECT changed, deleted FROM definitions_generation"
            ).fetchone()
            if (changed, deleted) == (known.changed, known.deleted):
                return list(known.by_name)
            by_id = known.by_id
            if deleted != known.deleted:
                present = {row[0] for row in conn.execute("SELECT id FROM definitions")}
                by_id = {i: r for i, r in by_id.items() if i in present}
            rows = conn.execute(
                "SELECT * FROM definitions WHERE changed > ?", (known.changed,)
            ).fetchall()
            by_id = {**by_id, **{row["id"]: _definition_from_row(row) for row in rows}}
            known.by_id = by_id
            known.by_name = sorted(by_id.values(), key=lambda r: r.name)
            known.changed, known.deleted = changed, deleted
            return list(known.by_name)

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
        unready: tuple[str, int] | None = _UNSET,
    ) -> None:
        """Set status and last_error (None clears it); applied_* and `unready` (the rendered
        hash and revision that failed its health gate; None clears it) only when given."""
        sets = ["status = ?", "last_error = ?", "updated_at = ?"]
        args: list[Any] = [_enum_value(status), last_error, _ts(_now())]
        if applied_revision is not _UNSET:
            sets.append("applied_revision = ?")
            args.append(applied_revision)
        if applied_hash is not _UNSET:
            sets.append("applied_hash = ?")
            args.append(applied_hash)
        if unready is not _UNSET:
            sets += ["unready_hash = ?", "unready_revision = ?"]
            args += list(unready) if unready is not None else [None, None]
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
        """Record a revision; adding the same (definition, number) again does nothing.
        UnstorableValue when a value of it (a pinned version) does not fit the store."""
        self.add_revisions([rev])

    def add_revisions(self, revisions: Sequence[Revision]) -> None:
        """`add_revision` for each, in one transaction: UnstorableValue (nothing written)
        naming the first revision a value of which does not fit the store."""
        try:
            with self._write() as conn:
                for rev in revisions:
                    self._add_revision(conn, rev)
        except (OverflowError, UnicodeEncodeError) as exc:  # nothing was written: rolled back
            rev = next((r for r in revisions if not _storable(r)), revisions[0])
            raise UnstorableValue(
                f"revision {rev.number} of {rev.name} (commit {rev.commit[:12]}) cannot be "
                f"stored: {exc}"
            ) from exc

    def _add_revision(self, conn: sqlite3.Connection, rev: Revision) -> None:
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
        conn.executemany(
            "INSERT INTO revision_secrets (definition_id, number, secret, version)"
            " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [(rev.definition_id, rev.number, name, version) for name, version in rev.secrets],
        )

    def revisions(self, definition_id: str) -> list[Revision]:
        """Every revision of a definition, oldest first."""
        rows = (
            self._conn()
            .execute(
                _REVISIONS + " WHERE definition_id = ? ORDER BY number",
                (definition_id,),
            )
            .fetchall()
        )
        return [_revision_from_row(r) for r in rows]

    def latest_revisions(self, definition_ids: Collection[str]) -> dict[str, Revision]:
        """The newest revision of each of these definitions that has one, by def_ id: one
        query for a few hundred, not one each."""
        ids = list(dict.fromkeys(definition_ids))
        out: dict[str, Revision] = {}
        for start in range(0, len(ids), _IN_CHUNK):
            chunk = ids[start : start + _IN_CHUNK]
            rows = self._conn().execute(
                _REVISIONS + f" WHERE r.definition_id IN ({', '.join('?' * len(chunk))})"
                " AND r.number = (SELECT max(m.number) FROM revisions m"
                " WHERE m.definition_id = r.definition_id)",
                chunk,
            )
            out.update((row["definition_id"], _revision_from_row(row)) for row in rows)
        return out

    def latest_revision(self, definition_id: str) -> Revision | None:
        """The newest revision of a definition, or None."""
        row = (
            self._conn()
            .execute(
                _REVISIONS + " WHERE definition_id = ? ORDER BY number DESC LIMIT 1",
                (definition_id,),
            )
            .fetchone()
        )
        return None if row is None else _revision_from_row(row)

    def revision(self, definition_id: str, number: int) -> Revision | None:
        """Revision `number` of a definition, or None."""
        if not -(2**63) <= number < 2**63:  # beyond SQLite's INTEGER: no such revision
            return None
        row = (
            self._conn()
            .execute(
                _REVISIONS + " WHERE definition_id = ? AND number = ?",
                (definition_id, number),
            )
            .fetchone()
        )
        return None if row is None else _revision_from_row(row)


# ---------------------------------------------------------------- rows -> records

_UPSERT_DEFINITION: Final = (
    "INSERT INTO definitions (id, name, path, template_id, server_id, profile,"
    " status, current_revision, applied_revision, desired, applied_hash,"
    " depends_files, params, last_error, operator_stopped, created_at,"
    " updated_at, unready_hash, unready_revision)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET name = excluded.name,"
    " path = excluded.path, template_id = excluded.template_id,"
    " server_id = excluded.server_id, profile = excluded.profile,"
    " status = excluded.status, current_revision = excluded.current_revision,"
    " applied_revision = excluded.applied_revision, desired = excluded.desired,"
    " applied_hash = excluded.applied_hash,"
    " depends_files = excluded.depends_files, params = excluded.params,"
    " last_error = excluded.last_error,"
    " operator_stopped = excluded.operator_stopped,"
    " updated_at = excluded.updated_at, unready_hash = excluded.unready_hash,"
    " unready_revision = excluded.unready_revision"
)


def _definition_row(rec: DefinitionRecord) -> tuple[Any, ...]:
    return (
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
        rec.unready_hash,
        rec.unready_revision,
    )


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
        unready_hash=row["unready_hash"],
        unready_revision=row["unready_revision"],
    )


def _storable(rev: Revision) -> bool:
    """Whether SQLite can hold every value of `rev` (an INTEGER, text that is UTF-8)."""
    texts = [rev.definition_id, rev.name, rev.commit, rev.desired_hash, rev.path]
    texts += [name for name, _ in rev.secrets]
    try:
        "".join(texts).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return all(-(2**63) <= n < 2**63 for n in (rev.number, *(v for _, v in rev.secrets)))


def _revision_from_row(row: sqlite3.Row) -> Revision:
    return Revision(
        definition_id=row["definition_id"],
        name=row["name"],
        number=int(row["number"]),
        commit=row["commit_sha"],
        desired_hash=row["desired_hash"],
        path=row["path"],
        created_at=_dt_req(row["created_at"]),
        secrets=tuple(sorted((str(n), int(v)) for n, v in json.loads(row["pins"]))),
    )
