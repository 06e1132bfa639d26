"""Webhooks and their delivery outbox: events, deliveries and each delivery's attempts."""

from __future__ import annotations

import enum
import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from deployally import identity
from deployally.errors import NotFound
from deployally.store.codec import _dt, _dt_req, _dumps, _enum_value, _now, _ts, _ts_or_none
from deployally.store.db import _returning
from deployally.store.secrets import SecretStore, webhook_secret_owner


def enqueue(conn: sqlite3.Connection, event: str, data: Mapping[str, Any]) -> str:
    """Inside a write transaction: the event and one pending delivery per subscribed webhook.
    Filtered under the write lock, so a webhook added concurrently is either wholly in this
    fan-out or wholly after it. Returns the event's id."""
    event_id = identity.random_id("evt")
    now = _ts(_now())
    conn.execute(
        "INSERT INTO events (id, event, data, created_at) VALUES (?, ?, ?, ?)",
        (event_id, event, _dumps(data), now),
    )
    for row in conn.execute("SELECT id, events FROM webhooks ORDER BY created_at, id"):
        if event in json.loads(row["events"]):
            conn.execute(
                "INSERT INTO deliveries (id, event_id, webhook_id, status,"
                " next_attempt_at, created_at) VALUES (?, ?, ?, 'pending', ?, ?)",
                (identity.random_id("dlv"), event_id, row["id"], now, now),
            )
    return event_id


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


class WebhookStore(SecretStore):
    """Webhooks, and the outbox the notifier drains: one delivery per event per webhook.

    A webhook's secret is encrypted at rest with the secrets' key (store/secrets.py).
    """

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
            sealed = self._seal_text(webhook_secret_owner(record.id), secret, conn)
            conn.execute(
                "INSERT INTO webhooks (id, url, events, secret, created_at) VALUES (?, ?, ?, ?, ?)",
                (record.id, url, _dumps(record.events), sealed, _ts(record.created_at)),
            )
        return record

    def webhooks(self) -> list[WebhookRecord]:
        """Every webhook, oldest first."""
        rows = self._conn().execute("SELECT * FROM webhooks ORDER BY created_at, id")
        return [self._webhook_from_row(r) for r in rows]

    def webhook(self, id: str) -> WebhookRecord | None:
        """A webhook by id, or None."""
        row = self._conn().execute("SELECT * FROM webhooks WHERE id = ?", (id,)).fetchone()
        return None if row is None else self._webhook_from_row(row)

    def _webhook_from_row(self, row: sqlite3.Row) -> WebhookRecord:
        return WebhookRecord(
            id=row["id"],
            url=row["url"],
            events=tuple(json.loads(row["events"])),
            secret=self._open_text(webhook_secret_owner(row["id"]), row["secret"]),
            created_at=_dt_req(row["created_at"]),
        )

    def delete_webhook(self, id: str) -> None:
        """Remove a webhook and its pending and past deliveries."""
        with self._write() as conn:
            if conn.execute("DELETE FROM webhooks WHERE id = ?", (id,)).rowcount == 0:
                raise NotFound(f"webhook '{id}' does not exist")

    def enqueue_event(self, event: str, data: Mapping[str, Any]) -> str:
        """Store an event and one pending delivery per webhook subscribed to it, atomically."""
        with self._write() as conn:
            return enqueue(conn, event, data)

    def enqueue_events(self, events: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
        """`enqueue_event` for each of `events`, in order, in one transaction (a commit of 5,000
        definitions is 5,000 events); their ids."""
        if not events:
            return []
        with self._write() as conn:
            return [enqueue(conn, event, data) for event, data in events]

    def enqueue_for(self, webhook_id: str, event: str, data: Mapping[str, Any]) -> str:
        """Store an event for one webhook only (a test ping), whatever it subscribed to; the delivery id."""
        event_id = identity.random_id("evt")
        delivery_id = identity.random_id("dlv")
        now = _ts(_now())
        with self._write() as conn:
            if (
                conn.execute("SELECT 1 FROM webhooks WHERE id = ?", (webhook_id,)).fetchone()
                is None
            ):
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
        row = (
            self._conn()
            .execute("SELECT COUNT(*) FROM deliveries WHERE webhook_id = ?", (webhook_id,))
            .fetchone()
        )
        return int(row[0])

    def deliveries_by_status(self) -> dict[str, int]:
        """Deliveries per status, every status present (0 when none): pending is the outbox backlog."""
        counts = {s.value: 0 for s in DeliveryStatus}
        for row in self._conn().execute("SELECT status, count(*) AS n FROM deliveries GROUP BY status"):
            counts[row["status"]] = int(row["n"])
        return counts

    def pending_webhooks(self) -> list[str]:
        """The ids of webhooks with a delivery still pending, oldest webhook first."""
        rows = self._conn().execute(
            "SELECT w.id FROM webhooks w WHERE EXISTS (SELECT 1 FROM deliveries d"
            " WHERE d.webhook_id = w.id AND d.status = 'pending') ORDER BY w.created_at, w.id"
        )
        return [str(r[0]) for r in rows]

    def pending_deliveries(self, webhook_id: str, limit: int = 100) -> list[DeliveryRecord]:
        """A webhook's pending deliveries in the order their events happened, oldest first."""
        rows = (
            self._conn()
            .execute(
                f"{_DELIVERY_SELECT} WHERE d.webhook_id = ? AND d.status = 'pending'"
                " ORDER BY d.seq LIMIT ?",
                (webhook_id, limit),
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
