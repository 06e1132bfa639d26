"""Tokens and scopes over real HTTP: 401 without a known token, 403 without the scope, each scope x each endpoint."""

from __future__ import annotations

import pytest

from conftest import ApiServer

RANK = {"read": 1, "write": 2, "admin": 3}
# (method, path, the least scope it needs); bodies are empty, so an allowed call
# answers 4xx for its body, never 401 or 403.
ENDPOINTS = [
    ("GET", "/templates", "read"),
    ("GET", "/templates/tpl_000000000000", "read"),
    ("GET", "/definitions", "read"),
    ("GET", "/definitions/def_000000000000", "read"),
    ("POST", "/definitions", "write"),
    ("PUT", "/definitions/def_000000000000", "write"),
    ("DELETE", "/definitions/def_000000000000", "write"),
    ("GET", "/instances", "read"),
    ("POST", "/instances/inst_000000000000/start", "write"),
    ("POST", "/instances/inst_000000000000/stop", "write"),
    ("POST", "/instances/inst_000000000000/restart", "write"),
    ("GET", "/servers", "read"),
    ("POST", "/servers", "admin"),
    ("DELETE", "/servers/srv_000000000000", "admin"),
    ("POST", "/servers/srv_000000000000/rotate-key", "admin"),
    ("GET", "/deployments", "read"),
    ("GET", "/deployments/deploy_000000000000", "read"),
    ("POST", "/deployments", "write"),
    ("GET", "/webhooks", "admin"),
    ("POST", "/webhooks", "admin"),
    ("DELETE", "/webhooks/whk_000000000000", "admin"),
]


@pytest.mark.parametrize(("method", "path", "needed"), ENDPOINTS)
def test_each_scope_against_each_endpoint(
    api: ApiServer, api_tokens: dict[str, str], method: str, path: str, needed: str
) -> None:
    for scope, token in api_tokens.items():
        r = api.request(method, path, token)
        body = r.json()
        if RANK[scope] < RANK[needed]:
            assert r.status_code == 403, (scope, r.text)
            assert body["error"]["code"] == "forbidden"
            assert needed in body["error"]["message"]
        else:
            assert r.status_code not in (401, 403, 500), (scope, r.text)


@pytest.mark.parametrize(("method", "path", "needed"), ENDPOINTS)
def test_no_token_or_an_unknown_one_is_401(
    api: ApiServer, method: str, path: str, needed: str
) -> None:
    for headers in ({}, {"Authorization": "Bearer da_unknown"}, {"Authorization": "Basic eDp5"}):
        r = api.request(method, path, headers=headers)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["error"]["code"] == "unauthorized"
        assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_revoked_token_no_longer_works(api: ApiServer, api_ws: object) -> None:
    store = api_ws.store  # type: ignore[attr-defined]
    token = store.create_token("short-lived", "read")
    assert api.request("GET", "/servers", token).status_code == 200
    store.revoke_token("short-lived")
    assert api.request("GET", "/servers", token).status_code == 401


def test_server_key_reaches_only_its_agent_endpoint(
    api: ApiServer, api_tokens: dict[str, str]
) -> None:
    made = api.request(
        "POST", "/servers", api_tokens["admin"], json={"name": "edge-1", "environment": "staging"}
    ).json()["data"]
    key = made["api_key"]
    assert key.startswith("da_server_")
    assert api.request("GET", "/definitions", key).status_code == 403
    assert api.request("GET", "/servers", key).status_code == 403
    agent = api.request("GET", "/agent/desired", key)
    assert agent.status_code == 200
    assert agent.json()["data"] == {"server_id": made["id"], "definitions": []}
    # An API token, even admin, is not a server key.
    assert api.request("GET", "/agent/desired", api_tokens["admin"]).status_code == 403
    assert api.request("GET", "/agent/desired", "da_server_unknown").status_code == 401
    # Only its agent's poll is a heartbeat (tests/test_agent.py): still pending.
    servers = api.request("GET", "/servers", api_tokens["read"]).json()["data"]
    assert {s["name"]: s["status"] for s in servers}["edge-1"] == "pending"


def test_health_openapi_and_metrics_need_no_token(api: ApiServer) -> None:
    assert api.request("GET", "/health").status_code == 200
    assert api.request("GET", "/openapi.json").status_code == 200
    assert api.request("GET", "/metrics").status_code == 200
