"""schemathesis against schemas/openapi.yaml and the running API: no 5xx, every response matching its schema.

Bounded (a few examples per operation), so the whole run stays well under a minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import ApiServer
from deployally.api.meta import OPENAPI_PATH
from deployally.source.git import GitRepo
from deployally.workspace import Workspace

schema = schemathesis.openapi.from_path(OPENAPI_PATH)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServer, str]]:
    """One API for every generated case, and an admin token (it reaches every endpoint)."""
    root: Path = tmp_path_factory.mktemp("schemathesis")
    repo = GitRepo.init(root / "repo", bare=False, branch="main")
    repo.write(
        {"deployally.yaml": "reconcile_interval: 30s\n"},
        message="Start",
        author_name="Test",
        author_email="test@example.com",
        expected_head=None,
    )
    ws = Workspace.open(root / "repo", root / "state")
    token = ws.store.create_token("fuzz", "admin")
    # An engine in the process, as under `deployally serve`: POST /sync has one to ask.
    server = ApiServer(ws, trigger_sync=lambda why: None)
    yield server, token
    server.close()
    ws.close()


@schema.parametrize()
@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_operation_answers_by_its_schema(
    case: schemathesis.Case, served: tuple[ApiServer, str]
) -> None:
    server, token = served
    base = server.url if case.path == "/metrics" else server.url + "/api/v1"
    case.call_and_validate(
        base_url=base, headers={"Authorization": f"Bearer {token}"}, checks=CHECKS
    )
