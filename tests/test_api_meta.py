"""The OpenAPI contract against the app's routes, /openapi.json, and /metrics in Prometheus text."""

from __future__ import annotations

import platform

import yaml

from conftest import ApiServer, Scrape
from deployally import __version__
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
    scrape = Scrape(r.text)
    assert scrape("deployally_http_requests_total", method="GET", route="/api/v1/servers", status="200") == 2
    assert scrape("deployally_http_requests_total", method="GET", route="/api/v1/templates/{id}",
                  status="404") == 1
    latency = "deployally_http_request_duration_seconds"
    assert scrape.types[latency] == "histogram"
    assert scrape(f"{latency}_count", route="/api/v1/servers", status="200") == 2
    assert scrape(f"{latency}_bucket", route="/api/v1/servers", status="200", le="+Inf") == 2
    assert scrape.labelled("deployally_deployments", "status") == {
        "pending": 0, "running": 0, "success": 0, "failed": 0, "rolled_back": 0, "waiting": 0}
    assert scrape("deployally_definitions", status="active") == 0
    assert scrape.labelled("deployally_webhook_deliveries", "status") == {
        "pending": 0, "delivered": 0, "failed": 0}
    # Without an engine behind the API no sync ever ran, and every result reads 0.
    assert scrape.labelled("deployally_syncs_total", "result") == {"success": 0, "partial": 0, "error": 0}
    assert scrape("deployally_sync_duration_seconds_count") == 0
    assert scrape("deployally_build_info", version=__version__, python=platform.python_version()) == 1
    assert scrape("process_resident_memory_bytes") > 0
    assert scrape("process_open_fds") > 0


def test_two_apps_in_one_process_keep_their_own_numbers(
    api: ApiServer, api_ws: object, api_tokens: dict[str, str]
) -> None:
    other = ApiServer(api_ws)
    try:
        for _ in range(3):
            api.request("GET", "/servers", api_tokens["read"])
        other.request("GET", "/servers", api_tokens["read"])
        mine, theirs = Scrape(api.request("GET", "/metrics").text), Scrape(other.request("GET", "/metrics").text)
    finally:
        other.close()
    servers = {"method": "GET", "route": "/api/v1/servers", "status": "200"}
    assert (mine("deployally_http_requests_total", **servers),
            theirs("deployally_http_requests_total", **servers)) == (3, 1)
    for scrape in (mine, theirs):  # each registry carries its own build and process metrics
        assert scrape("deployally_build_info", version=__version__, python=platform.python_version()) == 1
        assert scrape("process_start_time_seconds") > 0


def test_metrics_speak_openmetrics_to_a_scraper_that_asks(api: ApiServer) -> None:
    r = api.request("GET", "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert r.headers["Content-Type"].startswith("application/openmetrics-text")
    assert r.text.endswith("# EOF\n")
    assert "deployally_syncs_total" in r.text
