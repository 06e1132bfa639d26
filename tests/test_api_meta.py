"""The OpenAPI contract against the app's routes, /openapi.json, and /metrics in Prometheus text."""

from __future__ import annotations

import re

import yaml

from conftest import ApiServer
from deployally.api.meta import OPENAPI_PATH


def _document() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load(OPENAPI_PATH.read_text())  # type: ignore[no-any-return]


def test_every_route_is_in_the_document_and_the_other_way_round(api: ApiServer) -> None:
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in api.app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = set()
    for path, item in _document()["paths"].items():
        full = path if path == "/metrics" else "/api/v1" + path
        for method in ("get", "post", "put", "delete", "patch"):
            if method in item:
                documented.add((method, full))
    assert served == documented


def test_openapi_json_is_the_yaml_document(api: ApiServer) -> None:
    r = api.request("GET", "/openapi.json")
    assert r.status_code == 200
    assert r.json() == _document()
    assert r.json()["openapi"].startswith("3.1")


def test_metrics_count_requests_by_route_and_status(
    api: ApiServer, api_tokens: dict[str, str]
) -> None:
    api.request("GET", "/servers", api_tokens["read"])
    api.request("GET", "/servers", api_tokens["read"])
    api.request("GET", "/templates/tpl_000000000000", api_tokens["read"])
    r = api.request("GET", "/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    text = r.text
    assert (
        'deployally_http_requests_total{method="GET",route="/api/v1/servers",status="200"} 2'
        in text
    )
    assert 'route="/api/v1/templates/{id}",status="404"} 1' in text
    assert re.search(
        r'deployally_http_request_duration_seconds_count\{route="/api/v1/servers",status="200"\} 2',
        text,
    )
    assert (
        'deployally_http_request_duration_seconds_bucket{route="/api/v1/servers",status="200",le="+Inf"} 2'
        in text
    )
    assert 'deployally_deployments{status="success"} 0' in text
    assert 'deployally_definitions{status="active"} 0' in text
    # Every non-comment line is `name{labels} number`.
    for line in text.splitlines():
        if not line.startswith("#"):
            assert re.fullmatch(r'[a-z_]+(\{([a-z]+="[^"]*",?)*\})? [0-9.e+-]+', line), line


def test_sync_duration_comes_from_the_engine_status(api_ws: object) -> None:
    server = ApiServer(api_ws, status=lambda: {"last_sync_duration_seconds": 1.5})
    try:
        text = server.request("GET", "/metrics").text
    finally:
        server.close()
    assert "deployally_sync_duration_seconds 1.5" in text
