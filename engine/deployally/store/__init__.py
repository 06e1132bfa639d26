"""The SQLite store under the state directory: the only package that speaks SQL.

It keeps sync bookkeeping, definitions, revisions, deployments and their logs,
secrets, API tokens, servers, and webhooks with their delivery outbox. Each area's
SQL lives in its own module; `Store` composes them over one `Database`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from deployally.state_dir import DB_FILE
from deployally.store.access import (
    ENVIRONMENTS,
    SERVER_KEY_PREFIX,
    TOKEN_PREFIX,
    TOKEN_SCOPES,
    AccessStore,
    RetiredKey,
    ServerRecord,
    TokenRecord,
    check_server_kind,
    server_description_problem,
    server_name_problem,
)
from deployally.store.codec import _spec_from_json as _spec_from_json
from deployally.store.codec import _spec_to_json as _spec_to_json
from deployally.store.db import LOCAL_SERVER_ID, LOCAL_SERVER_NAME, SCHEMA_VERSION
from deployally.store.definitions import (
    META_LAST_APPLIED_COMMIT,
    META_LAST_ATTEMPTED_COMMIT,
    DefinitionStore,
)
from deployally.store.deployments import DeploymentStore
from deployally.store.resources import ResourceStore
from deployally.store.secrets import KeyStatus, SecretInfo
from deployally.store.webhooks import (
    DeliveryAttempt,
    DeliveryRecord,
    DeliveryStatus,
    WebhookRecord,
    WebhookStore,
)

__all__ = [
    "DB_FILE",
    "ENVIRONMENTS",
    "LOCAL_SERVER_ID",
    "LOCAL_SERVER_NAME",
    "META_LAST_APPLIED_COMMIT",
    "META_LAST_ATTEMPTED_COMMIT",
    "SCHEMA_VERSION",
    "SERVER_KEY_PREFIX",
    "TOKEN_PREFIX",
    "TOKEN_SCOPES",
    "DeliveryAttempt",
    "DeliveryRecord",
    "DeliveryStatus",
    "KeyStatus",
    "RetiredKey",
    "SecretInfo",
    "ServerRecord",
    "Store",
    "TokenRecord",
    "WebhookRecord",
    "check_server_kind",
    "server_description_problem",
    "server_name_problem",
]


class Store(
    DefinitionStore, DeploymentStore, AccessStore, WebhookStore, ResourceStore
):  # WebhookStore is a SecretStore
    """The state database at `state_dir/deployally.db`, shared by threads and processes."""

    def __init__(
        self, state_dir: Path, *, secret_key_file: Callable[[], Path | None] | None = None
    ) -> None:
        """`secret_key_file` says where the secrets' key is (engine.yaml), asked when one is needed;
        None: `$DEPLOYALLY_SECRET_KEY`, else the default key file (see store/secret_key.py)."""
        super().__init__(state_dir)
        self._init_secrets(secret_key_file)
