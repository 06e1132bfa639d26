"""API tokens and servers with their agent keys: who may talk to the engine.

Only a token's or key's sha256 is stored; the token itself is shown once, when made.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets as pysecrets
import sqlite3
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from deployally import identity
from deployally.errors import Conflict, NotFound, ValidationError
from deployally.store.codec import _dt, _dt_req, _now, _ts
from deployally.store.db import Database

TOKEN_PREFIX: Final = "da_"
SERVER_KEY_PREFIX: Final = "da_server_"
TOKEN_SCOPES: Final = ("read", "write", "admin")
# How the engine reaches a server: its own Docker engine, a remote agent, a Swarm manager.
SERVER_KINDS: Final = ("local", "agent", "swarm")
# The kinds one may register: `local` is the engine's own server, there from the start.
REGISTERED_KINDS: Final = ("agent", "swarm")
DOCKER_HOST_SCHEMES: Final = ("unix", "tcp", "ssh")
ENVIRONMENTS: Final = ("development", "staging", "production")
_SERVER_NAME: Final = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
SERVER_ID_PREFIX: Final = "srv_"
MAX_SERVER_DESCRIPTION: Final = 1000
# The forms docker_host takes, as every message about it says them.
DOCKER_HOST_FORMS: Final = "unix:///abs/path, tcp://HOST:PORT or ssh://USER@HOST[:PORT]"
# A DNS name or IPv4 address; an IPv6 address comes in brackets and is checked by ipaddress.
_HOSTNAME: Final = re.compile(
    r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$",
    re.IGNORECASE,
)
_SSH_USER: Final = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}\$?$", re.IGNORECASE)


def server_name_problem(name: str) -> str | None:
    """Why `name` cannot name a server, or None."""
    if not _SERVER_NAME.fullmatch(name):
        return (
            f"{name!r} is not a server name: use 1-63 of a-z 0-9 _ . - starting with a letter"
            " or digit"
        )
    if name.startswith(SERVER_ID_PREFIX):
        # Definitions and the API name a server by name or by id: one shaped like an id
        # could name another server.
        return (
            f"{name!r} looks like a server id ({SERVER_ID_PREFIX}...): choose a name that does"
            f" not start with {SERVER_ID_PREFIX}"
        )
    return None


def server_description_problem(description: str) -> str | None:
    """Why `description` cannot describe a server (it is one line for people), or None."""
    if len(description) > MAX_SERVER_DESCRIPTION:
        return (
            f"is {len(description)} characters long; at most {MAX_SERVER_DESCRIPTION}"
        )
    if not description.isprintable():
        return "must be one line of printable text: no newline, tab or control character"
    return None


def _hash_secret(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenRecord:
    """An API token as stored: never the token itself, only who it is and what it may do."""

    id: str
    name: str
    scope: str  # read | write | admin
    created_at: datetime


@dataclass(frozen=True)
class ServerRecord:
    """A registered server as the store keeps it; its agent key's hash never leaves the store."""

    id: str
    name: str
    environment: str
    description: str
    status: str  # active | inactive
    created_at: datetime
    last_seen_at: datetime | None = None
    kind: str = "agent"  # one of SERVER_KINDS: which driver applies its definitions
    applied_commit: str | None = None  # the commit whose every definition it last ran
    docker_host: str | None = None  # a swarm server's manager: unix://, tcp:// or ssh://
    agent_version: str | None = None  # what its agent reported of itself, once it has
    docker_version: str | None = None  # ... and of its Docker engine


@dataclass(frozen=True)
class RetiredKey:
    """An agent key that no longer verifies, and why: `rotated` (replaced by rotate-key) or
    `removed` (its server was removed)."""

    server_id: str
    server_name: str
    why: str
    retired_at: datetime


def check_server_kind(kind: str, docker_host: str | None) -> None:
    """Refuse a kind one may not register, and a docker_host the kind does not take
    (ValidationError naming `kind` or `docker_host`)."""
    if kind == "local":
        raise ValidationError(
            "server", "kind",
            "'local' is the engine's own server, there from the start; register 'agent' or 'swarm'",
        )
    if kind not in REGISTERED_KINDS:
        raise ValidationError(
            "server", "kind", f"'{kind}' is not a server kind: use one of {', '.join(REGISTERED_KINDS)}"
        )
    if kind == "agent":
        if docker_host is not None:
            raise ValidationError(
                "server", "docker_host",
                "an agent server runs its own Docker engine; a Docker address is for swarm servers only",
            )
        return
    if docker_host is None:
        raise ValidationError(
            "server", "docker_host",
            f"a swarm server needs the address of its manager: {DOCKER_HOST_FORMS}",
        )
    _check_docker_host(docker_host)


def docker_host_problem(docker_host: str) -> str | None:
    """Why `docker_host` is not one of DOCKER_HOST_FORMS, or None. The value is never echoed:
    it may hold a password."""
    if docker_host != docker_host.strip():
        return f"has leading or trailing spaces; give only the address: {DOCKER_HOST_FORMS}"
    if not docker_host.isprintable() or any(c.isspace() for c in docker_host):
        return f"holds a space or control character; give only the address: {DOCKER_HOST_FORMS}"
    scheme, sep, rest = docker_host.partition("://")
    if not sep:
        return f"is not an address: use {DOCKER_HOST_FORMS}"
    if scheme != scheme.lower() and scheme.lower() in DOCKER_HOST_SCHEMES:
        return f"write the scheme in lower case ({scheme.lower()}://): {DOCKER_HOST_FORMS}"
    if scheme not in DOCKER_HOST_SCHEMES:
        return f"{scheme}:// is not a Docker address: use {DOCKER_HOST_FORMS}"
    if scheme == "unix":
        if not rest.startswith("/") or rest == "/":
            return "unix:// needs the socket's absolute path: unix:///abs/path, e.g. unix:///var/run/docker.sock"
        if "?" in rest or "#" in rest:
            return "unix:// takes only the socket's path, no query or fragment: unix:///abs/path"
        return None
    form = "tcp://HOST:PORT" if scheme == "tcp" else "ssh://USER@HOST[:PORT]"
    if any(c in rest for c in "/?#"):
        return f"{scheme}:// takes no path, query or fragment: {form}"
    user, at, hostport = rest.rpartition("@")
    if scheme == "tcp" and at:
        return "tcp:// takes no user (its TLS files say who the engine is): tcp://HOST:PORT"
    if ":" in user:
        # It is shown by GET /servers: a password there would be a secret in API output.
        return f"holds a password; use an SSH key or TLS files instead: {form}"
    if scheme == "ssh" and not user:
        return "ssh:// needs a user: ssh://USER@HOST[:PORT]"
    if user and not _SSH_USER.fullmatch(user):
        return f"the user is not a user name (a-z 0-9 _ . -, starting with a letter or _): {form}"
    host, port = _host_and_port(hostport)
    if not host:
        return f"{scheme}:// needs a host: {form}"
    if not _host_ok(host):
        return f"the host is not a DNS name or an IP address ([...] for IPv6): {form}"
    if port is None:
        return "tcp:// needs a port (2376 with TLS): tcp://HOST:PORT" if scheme == "tcp" else None
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        return f"the port must be a number from 1 to 65535: {form}"
    return None


def _host_and_port(hostport: str) -> tuple[str, str | None]:
    """HOST and PORT of `HOST[:PORT]`, an IPv6 HOST in brackets (kept); PORT None when absent."""
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            return hostport, None
        host, after = hostport[: close + 1], hostport[close + 1 :]
        if not after:
            return host, None
        if not after.startswith(":"):
            return hostport, None  # fails the host check
        return host, after[1:]
    host, colon, port = hostport.partition(":")
    return host, port if colon else None


def _host_ok(host: str) -> bool:
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    return _HOSTNAME.fullmatch(host) is not None


def _check_docker_host(docker_host: str) -> None:
    if problem := docker_host_problem(docker_host):
        raise ValidationError("server", "docker_host", problem)


class AccessStore(Database):
    """API tokens and registered servers."""

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
        self,
        name: str,
        environment: str,
        description: str = "",
        kind: str = "agent",
        docker_host: str | None = None,
    ) -> tuple[ServerRecord, str | None]:
        """Register a server; returns its record and, for an agent, its key, shown this once
        (a swarm server has no agent, so no key)."""
        if problem := server_name_problem(name):
            raise ValidationError("server", "name", problem)
        if problem := server_description_problem(description):
            raise ValidationError("server", "description", problem)
        check_server_kind(kind, docker_host)
        key = SERVER_KEY_PREFIX + pysecrets.token_urlsafe(24) if kind == "agent" else None
        record = ServerRecord(
            id=identity.random_id("srv"),
            name=name,
            environment=environment,
            description=description,
            status="active",
            created_at=_now(),
            kind=kind,
            docker_host=docker_host,
        )
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO servers (id, name, environment, description, status, key_hash,"
                    " created_at, kind, docker_host) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.id,
                        name,
                        environment,
                        description,
                        record.status,
                        _hash_secret(key) if key is not None else None,
                        _ts(record.created_at),
                        kind,
                        docker_host,
                    ),
                )
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"server '{name}' already exists: choose another name") from exc
        return record, key

    def remove_server(self, key: str, named_at_head: Collection[str] = ()) -> ServerRecord:
        """Remove a registered server (by name or id), its key with it; Conflict for `local`
        and for a server that definitions name (naming them): those synced, and
        `named_at_head`, the ones at the branch head that name it and are not synced yet."""
        with self._write() as conn:
            record, key_hash = _registered(conn, key)
            if record.kind == "local":
                raise Conflict("server 'local' is this engine's own Docker engine; it cannot be removed")
            synced = {
                r["name"]
                for r in conn.execute(
                    "SELECT name FROM definitions WHERE server_id IN (?, ?)",
                    (record.name, record.id),
                )
            }
            named = sorted(synced | set(named_at_head))
            if named:
                raise Conflict(
                    f"server '{record.name}' is named by {len(named)} definition(s): "
                    f"{', '.join(named)}; move or remove them first"
                )
            now = _ts(_now())
            # Its keys, the current and the replaced, are told from now on that it was removed.
            conn.execute(
                "UPDATE retired_server_keys SET why = 'removed', retired_at = ? WHERE server_id = ?",
                (now, record.id),
            )
            if key_hash is not None:
                _retire_key(conn, key_hash, record, "removed", now)
            conn.execute("DELETE FROM servers WHERE id = ?", (record.id,))
        return record

    def rotate_server_key(self, key: str) -> tuple[ServerRecord, str]:
        """A new agent key for a server (by name or id), shown this once; the old one is
        refused from now on, told it was replaced."""
        new = SERVER_KEY_PREFIX + pysecrets.token_urlsafe(24)
        with self._write() as conn:
            record, old_hash = _registered(conn, key)
            if record.kind != "agent":
                raise Conflict(
                    f"server '{record.name}' is a {record.kind} server: it has no agent, so no key"
                )
            conn.execute(
                "UPDATE servers SET key_hash = ? WHERE id = ?", (_hash_secret(new), record.id)
            )
            if old_hash is not None:
                _retire_key(conn, old_hash, record, "rotated", _ts(_now()))
        return record, new

    def retired_server_key(self, key: str) -> RetiredKey | None:
        """Why an agent key no longer verifies (replaced by rotate-key, or its server removed),
        or None for a key this store never handed out."""
        if not key.startswith(SERVER_KEY_PREFIX):
            return None
        row = self._conn().execute(
            "SELECT * FROM retired_server_keys WHERE key_hash = ?", (_hash_secret(key),)
        ).fetchone()
        if row is None:
            return None
        return RetiredKey(
            server_id=row["server_id"], server_name=row["server_name"], why=row["why"],
            retired_at=_dt_req(row["retired_at"]),
        )

    def definitions_per_server(self) -> dict[str, int]:
        """How many definitions name each server, by the name or id they name it with."""
        rows = self._conn().execute(
            "SELECT server_id, COUNT(*) AS n FROM definitions GROUP BY server_id"
        )
        return {r["server_id"]: int(r["n"]) for r in rows}

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

    def server_id(self, key: str) -> str:
        """The srv_ id of a server named or identified by `key`; `key` itself when unknown."""
        found = self.server(key)
        return found.id if found is not None else key

    def server_keys(self, kind: str | None = None) -> frozenset[str]:
        """Every way a definition may name a registered server (of `kind`, when given): its
        name and its srv_ id."""
        return frozenset(
            key for s in self.servers() if kind is None or s.kind == kind for key in (s.name, s.id)
        )

    def verify_server_key(self, key: str) -> ServerRecord | None:
        """The server whose agent key `key` is, else None."""
        if not key.startswith(SERVER_KEY_PREFIX):
            return None
        digest = _hash_secret(key)
        row = self._conn().execute("SELECT * FROM servers WHERE key_hash = ?", (digest,)).fetchone()
        if row is None or not hmac.compare_digest(row["key_hash"], digest):
            return None
        return _server_from_row(row)

    def set_server_applied_commit(self, id: str, sha: str) -> None:
        """Record that server `id` runs every definition of commit `sha`."""
        with self._write() as conn:
            cur = conn.execute("UPDATE servers SET applied_commit = ? WHERE id = ?", (sha, id))
            if cur.rowcount == 0:
                raise NotFound(f"server '{id}' does not exist")

    def touch_server(
        self, id: str, *, agent_version: str | None = None, docker_version: str | None = None,
        new_session: bool = False,
    ) -> None:
        """Note that a server's agent was heard from just now, and the versions it reported
        of itself and its Docker engine (None keeps what this session reported before; a new
        session's None clears it: that agent does not know its Docker engine's yet)."""
        keep = "?" if new_session else "COALESCE(?, {})"
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE servers SET last_seen_at = ?,"
                f" agent_version = {keep.format('agent_version')},"
                f" docker_version = {keep.format('docker_version')} WHERE id = ?",
                (_ts(_now()), agent_version, docker_version, id),
            )
            if cur.rowcount == 0:
                raise NotFound(f"server '{id}' does not exist")


# ---------------------------------------------------------------- rows -> records


def _token_from_row(row: sqlite3.Row) -> TokenRecord:
    return TokenRecord(
        id=row["id"], name=row["name"], scope=row["scope"], created_at=_dt_req(row["created_at"])
    )


def _registered(conn: sqlite3.Connection, key: str) -> tuple[ServerRecord, str | None]:
    """The server `key` (a name or an id) names and its key's hash; NotFound saying where
    servers are listed."""
    row = conn.execute("SELECT * FROM servers WHERE id = ? OR name = ?", (key, key)).fetchone()
    if row is None:
        raise NotFound(
            f"server '{key}' does not exist: `deployally server list` (or GET /api/v1/servers)"
            " lists them"
        )
    return _server_from_row(row), row["key_hash"]


def _retire_key(
    conn: sqlite3.Connection, key_hash: str, record: ServerRecord, why: str, at: str
) -> None:
    conn.execute(
        "INSERT INTO retired_server_keys (key_hash, server_id, server_name, why, retired_at)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (key_hash) DO UPDATE SET why = excluded.why,"
        " retired_at = excluded.retired_at",
        (key_hash, record.id, record.name, why, at),
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
        kind=row["kind"],
        applied_commit=row["applied_commit"],
        docker_host=row["docker_host"],
        agent_version=row["agent_version"],
        docker_version=row["docker_version"],
    )
