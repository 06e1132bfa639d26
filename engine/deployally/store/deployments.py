"""Deployments and their log lines."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from deployally.errors import Conflict, NotFound
from deployally.store.codec import (
    _dt,
    _dt_req,
    _dumps,
    _enum_value,
    _now,
    _reason_from_json,
    _ts,
    _ts_or_none,
)
from deployally.store.db import Database, _filters, _returning
from deployally.store.webhooks import enqueue
from deployally.types import ActionKind, Deployment, DeploymentStatus, LogLine, Waiting, WaitKind

_UNSET: Any = object()  # "leave this column as it is" in partial updates


class DeploymentStore(Database):
    """Deployments, newest first, and the log lines each one writes."""

    def create_deployment(self, dep: Deployment) -> None:
        """Record a new deployment (and any logs it already carries)."""
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO deployments (id, definition_id, definition_name, server_id,"
                    " revision, commit_sha, action, status, reason, created_at, started_at,"
                    " finished_at, waiting) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                        _waiting_to_json(dep.waiting),
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
        waiting: Waiting | None = _UNSET,
        event: tuple[str, Mapping[str, Any]] | None = None,
        log: str | None = None,
    ) -> None:
        """Set a deployment's status; started_at/finished_at change only when given, and what
        it waits for only when `waiting` is given (None clears it). `event` (name, data) goes
        into the webhook outbox and `log` into its log in the same transaction, so a crash
        can never leave the one without the other."""
        sets = "status = ?, started_at = coalesce(?, started_at), finished_at = coalesce(?, finished_at)"
        args: list[Any] = [_enum_value(status), _ts_or_none(started_at), _ts_or_none(finished_at)]
        if waiting is not _UNSET:
            sets += ", waiting = ?"
            args.append(_waiting_to_json(waiting))
        with self._write() as conn:
            cur = conn.execute(f"UPDATE deployments SET {sets} WHERE id = ?", (*args, id))
            if cur.rowcount == 0:
                raise NotFound(f"deployment '{id}' does not exist")
            if log is not None:
                _append_log(conn, id, log, _now())
            if event is not None:
                enqueue(conn, *event)

    def append_log(self, deployment_id: str, message: str, at: datetime | None = None) -> int:
        """Add a log line (already masked by the caller); returns its line number from 1."""
        try:
            with self._write() as conn:
                return _append_log(conn, deployment_id, message, at or _now())
        except sqlite3.IntegrityError as exc:
            raise NotFound(f"deployment '{deployment_id}' does not exist") from exc

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

    def waiting_by_definition(self) -> dict[str, Deployment]:
        """The newest waiting deployment of each definition that has one, by definition id."""
        rows = self._conn().execute(
            "SELECT * FROM deployments WHERE status = ? ORDER BY created_at DESC, seq DESC",
            (DeploymentStatus.WAITING.value,),
        )
        out: dict[str, Deployment] = {}
        for row in rows:
            out.setdefault(row["definition_id"], _deployment_from_row(row, ()))
        return out

    def counts_by_status(self) -> dict[str, int]:
        """Deployments per status, every status present (0 when none), for /metrics."""
        counts = {s.value: 0 for s in DeploymentStatus}
        for row in self._conn().execute(
            "SELECT status, count(*) AS n FROM deployments GROUP BY status"
        ):
            counts[row["status"]] = int(row["n"])
        return counts


# ---------------------------------------------------------------- rows -> records


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
        waiting=_waiting_from_json(row["waiting"]),
    )


def _waiting_to_json(waiting: Waiting | None) -> str | None:
    if waiting is None:
        return None
    return json.dumps(
        {"kind": waiting.kind.value, "summary": waiting.summary, "on": list(waiting.on),
         "since": _ts(waiting.since)},
        sort_keys=True,
    )


def _waiting_from_json(text: str | None) -> Waiting | None:
    if text is None:
        return None
    raw = json.loads(text)
    return Waiting(WaitKind(raw["kind"]), raw["summary"], tuple(raw["on"]), _dt_req(raw["since"]))


def _append_log(conn: sqlite3.Connection, deployment_id: str, message: str, at: datetime) -> int:
    """Inside a write transaction: one more log line; its number from 1."""
    row = _returning(
        conn,
        "INSERT INTO deployment_logs (deployment_id, line, at, message)"
        " SELECT ?, coalesce(max(line), 0) + 1, ?, ? FROM deployment_logs"
        " WHERE deployment_id = ? RETURNING line",
        (deployment_id, _ts(at), message, deployment_id),
    )
    assert row is not None  # INSERT ... SELECT of an aggregate always yields one row
    return int(row[0])
