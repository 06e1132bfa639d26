"""Hostile input on every route answers 4xx in the error envelope, never 500, over real HTTP:
unicode digits in pages, JSON nested 100,000 deep, non-UTF-8 headers, huge integers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from conftest import ApiServer
from deployally.api.envelope import MAX_JSON_DEPTH
from deployally.identity import definition_id
from deployally.workspace import Workspace

BODY_METHODS = ("POST", "PUT", "PATCH")
DEEP_ARRAY = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"a":' * 100_000 + b"1" + b"}" * 100_000


def _assert_error(r: requests.Response, status: int | None = None) -> dict[str, Any]:
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    if status is not None:
        assert r.status_code == status, r.text[:300]
    body = r.json()
    assert body["success"] is False and body["error"]["code"] and body["error"]["message"]
    return body


def _body_routes(api: ApiServer) -> list[tuple[str, str]]:
    """Every (method, path) of the app that takes a body, path parameters filled in."""
    found = []
    for resource in api.app.router.resources():
        path = resource.canonical
        for route in resource:
            if route.method in BODY_METHODS:
                filled = path
                while "{" in filled:
                    start = filled.index("{")
                    filled = filled[:start] + "x0" + filled[filled.index("}", start) + 1 :]
                found.append((route.method, filled))
    return found


@pytest.mark.parametrize("raw", ["²", "①", "٣", "1²", "１", "0x1", " 1", "1e3"])
@pytest.mark.parametrize("name", ["page", "per_page"])
def test_non_ascii_and_odd_digits_in_pages_are_400_naming_the_parameter(
    api: ApiServer, api_tokens: dict[str, str], name: str, raw: str
) -> None:
    for path in ("/definitions", "/deployments", "/templates", "/servers", "/instances"):
        r = api.request("GET", path, api_tokens["read"], params={name: raw})
        body = _assert_error(r, 400)
        assert body["error"]["details"][0]["field"] == name


def test_every_body_route_refuses_json_nested_100000_deep(
    api: ApiServer, api_tokens: dict[str, str]
) -> None:
    routes = _body_routes(api)
    # The routes of the contract that read a body are among those walked.
    assert {("POST", "/api/v1/definitions"), ("PUT", "/api/v1/definitions/x0"),
            ("POST", "/api/v1/deployments"), ("POST", "/api/v1/webhooks"),
            ("POST", "/api/v1/servers"), ("POST", "/api/v1/sync")} <= set(routes)
    for method, path in routes:
        for body in (DEEP_ARRAY, DEEP_OBJECT):
            r = api.session.request(
                method, api.url + path, data=body, timeout=60,
                headers={"Authorization": f"Bearer {api_tokens['admin']}",
                         "Content-Type": "application/json"},
            )
            # A route that reads no body answers for its path (404 for x0), never 500.
            _assert_error(r)


def test_json_just_past_the_depth_limit_is_400_and_at_it_is_read(
    api: ApiServer, api_tokens: dict[str, str]
) -> None:
    def nested(depth: int) -> bytes:
        # {"name": ..., "description": [[...]]}: the object is level 1
        inner = "[" * (depth - 1) + "]" * (depth - 1)
        return f'{{"name": "ab", "environment": "staging", "description": {inner}}}'.encode()

    too_deep = api.request("POST", "/servers", api_tokens["admin"], data=nested(MAX_JSON_DEPTH + 1))
    assert "deeper than" in _assert_error(too_deep, 400)["error"]["message"]
    # At the limit the body is read: the answer is about the field, not the nesting.
    at_limit = api.request("POST", "/servers", api_tokens["admin"], data=nested(MAX_JSON_DEPTH))
    assert _assert_error(at_limit, 422)["error"]["details"][0]["field"] == "description"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/servers", {"name": "ab", "environment": "staging", "description": "\ud800"}),
        ("/webhooks", {"url": "http://example.com/h", "events": ["deployment.failed"],
                       "secret": "x\udfff"}),
        ("/deployments", {"definition_id": "\ud800"}),
        ("/definitions", {"template_id": "tools/busybox/plain/stable", "server_id": "local",
                          "name": "ab", "params": {"script": "\ud83d"}}),
    ],
)
def test_a_lone_surrogate_in_a_json_string_is_400(
    api: ApiServer, api_tokens: dict[str, str], path: str, body: dict[str, Any]
) -> None:
    # json.dumps writes the lone surrogate as the escape \ud800, which JSON parsers accept.
    r = api.request("POST", path, api_tokens["admin"], data=json.dumps(body),
                    headers={"Content-Type": "application/json"})
    assert "surrogate" in _assert_error(r, 400)["error"]["message"]


@pytest.mark.parametrize(
    "value",
    [b"Bearer da_\xff\xfe", b"Bearer da_server_\xff", b"Bearer \xff", b"\xffearer da_x",
     b"bearer da_\xc3\x28"],
)
def test_a_non_utf8_authorization_header_is_401(api: ApiServer, value: bytes) -> None:
    for method, path in (("GET", "/definitions"), ("POST", "/webhooks"), ("POST", "/sync")):
        r = api.request(method, path, headers={"Authorization": value})
        _assert_error(r, 401)


def test_non_utf8_push_signature_headers_are_401(api_ws: Workspace) -> None:
    from deployally.api.sync import SYNC

    class Service:
        webhook_secret = "push-secret"
        branch = "main"

        def trigger(self, why: str) -> None:
            raise AssertionError("an unsigned push must not sync")

    server = ApiServer(api_ws, app_values={SYNC: Service()})
    try:
        for header in ({"X-Gitlab-Token": b"\xff\xfe"},
                       {"X-Hub-Signature-256": b"sha256=\xff" + b"0" * 63}):
            _assert_error(server.request("POST", "/sync", data=b"{}", headers=header), 401)
    finally:
        server.close()


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "Bearer", "bEaReR"])
def test_the_bearer_scheme_is_case_insensitive(
    api: ApiServer, api_tokens: dict[str, str], scheme: str
) -> None:
    r = api.request("GET", "/definitions", headers={"Authorization": f"{scheme} {api_tokens['read']}"})
    assert r.status_code == 200, r.text


def _a_definition(ws: Workspace) -> str:
    """A definition record in the store (as a sync leaves it), without Docker."""
    from deployally.types import DefinitionRecord, DefinitionStatus

    now = datetime.now(UTC)
    record = DefinitionRecord(
        id=definition_id("ab"), name="ab", path="definitions/ab.yaml", template_id="tpl_x",
        server_id="local", profile="development", status=DefinitionStatus.ACTIVE,
        current_revision=1, applied_revision=1, desired=None, applied_hash=None,
        depends_files=(), params={}, last_error=None, operator_stopped=False,
        created_at=now, updated_at=now,
    )
    ws.store.upsert_definition(record)
    return record.id


@pytest.mark.parametrize("revision", [10**30, 2**63, -(10**30), 0])
def test_a_revision_out_of_range_is_422_naming_revision(
    api: ApiServer, api_ws: Workspace, api_tokens: dict[str, str], revision: int
) -> None:
    def_id = _a_definition(api_ws)
    r = api.request("POST", "/deployments", api_tokens["write"],
                    json={"definition_id": def_id, "revision": revision})
    body = _assert_error(r, 422)
    assert body["error"]["details"][0]["field"] == "revision"


def test_a_revision_in_range_that_does_not_exist_is_404(
    api: ApiServer, api_ws: Workspace, api_tokens: dict[str, str]
) -> None:
    def_id = _a_definition(api_ws)
    r = api.request("POST", "/deployments", api_tokens["write"],
                    json={"definition_id": def_id, "revision": 2**63 - 1})
    assert "no revision" in _assert_error(r, 404)["error"]["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"commit": "garbage", "wait": True}, "commit"),
        ({"commit": "abc123"}, "commit"),  # a short id never names one commit for good
        ({"commit": "g" * 40}, "commit"),
        ({"commit": ["a" * 40]}, "commit"),
        ({"commit": "a" * 41}, "commit"),
    ],
)
def test_sync_with_a_commit_that_is_not_a_commit_id_is_422_naming_the_field(
    api: ApiServer, api_tokens: dict[str, str], body: dict[str, Any], field: str
) -> None:
    r = api.request("POST", "/sync", api_tokens["write"], json=body)
    assert r.status_code == 422, r.text
    [detail] = r.json()["error"]["details"]
    assert detail["field"] == field and "not a commit id" in detail["message"]
