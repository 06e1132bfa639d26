"""POST, GET and DELETE /webhooks over real HTTP: URL and event checks; the secret is never shown."""

from __future__ import annotations

import ipaddress

import docker
import pytest

from conftest import ApiServer
from deployally.workspace import Workspace


def test_create_as_in_the_document_list_and_delete(
    api: ApiServer, api_tokens: dict[str, str], api_ws: object
) -> None:
    r = api.request(
        "POST",
        "/webhooks",
        api_tokens["admin"],
        json={
            "url": "https://meu-site.com/webhook",
            "events": ["deployment.success", "deployment.failed", "instance.unhealthy"],
            "secret": "meu_webhook_secret",
        },
    )
    assert r.status_code == 201
    data = r.json()["data"]
    assert data["id"].startswith("whk_")
    assert data["events"] == ["deployment.success", "deployment.failed", "instance.unhealthy"]
    assert "meu_webhook_secret" not in r.text
    # The store keeps the secret: the notifier signs with it.
    assert api_ws.store.webhook(data["id"]).secret == "meu_webhook_secret"  # type: ignore[attr-defined]

    assert api.request("GET", "/webhooks", api_tokens["read"]).status_code == 403  # admin only
    listed = api.request("GET", "/webhooks", api_tokens["admin"])
    assert [w["id"] for w in listed.json()["data"]] == [data["id"]]
    assert "meu_webhook_secret" not in listed.text

    gone = api.request("DELETE", f"/webhooks/{data['id']}", api_tokens["admin"])
    assert gone.status_code == 200 and gone.json()["data"] == {"id": data["id"], "deleted": True}
    assert api.request("GET", "/webhooks", api_tokens["admin"]).json()["data"] == []
    again = api.request("DELETE", f"/webhooks/{data['id']}", api_tokens["admin"])
    assert again.status_code == 404


def test_bad_url_and_unknown_events_are_422_by_field(
    api: ApiServer, api_tokens: dict[str, str]
) -> None:
    r = api.request(
        "POST",
        "/webhooks",
        api_tokens["admin"],
        json={
            "url": "ftp://example.com/x",
            "events": ["deployment.success", "deploy.done"],
            "secret": "s",
        },
    )
    assert r.status_code == 422
    details = {d["field"]: d["message"] for d in r.json()["error"]["details"]}
    assert set(details) == {"url", "events[1]"}
    assert "http" in details["url"]
    assert "deployment.failed" in details["events[1]"]  # names the known events


def test_events_and_secret_are_required(api: ApiServer, api_tokens: dict[str, str]) -> None:
    r = api.request("POST", "/webhooks", api_tokens["admin"], json={"url": "http://x.test/h"})
    assert r.status_code == 422
    assert {d["field"] for d in r.json()["error"]["details"]} == {"events", "secret"}


def _webhook(api: ApiServer, token: str, url: str = "https://hooks.example.com/hook") -> str:
    r = api.request(
        "POST",
        "/webhooks",
        token,
        json={"url": url, "events": ["deployment.success"], "secret": "s3cret"},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["data"]["id"])


def test_url_must_be_http_or_https_and_named_in_the_error(
    api: ApiServer, api_tokens: dict[str, str]
) -> None:
    for url in ("file:///etc/passwd", "javascript:alert(1)", "example.com/hook", "http://"):
        r = api.request(
            "POST",
            "/webhooks",
            api_tokens["admin"],
            json={"url": url, "events": ["deployment.success"], "secret": "s"},
        )
        assert r.status_code == 422, url
        (detail,) = r.json()["error"]["details"]
        assert detail["field"] == "url"


def test_events_must_be_a_list_naming_the_known_events(
    api: ApiServer, api_tokens: dict[str, str]
) -> None:
    r = api.request(
        "POST",
        "/webhooks",
        api_tokens["admin"],
        json={"url": "http://x.test/h", "events": "deployment.success", "secret": "s"},
    )
    assert r.status_code == 422
    (detail,) = r.json()["error"]["details"]
    assert detail["field"] == "events"
    assert "instance.unhealthy" in detail["message"] and "definition.deleted" in detail["message"]


def test_deliveries_show_each_attempt_newest_delivery_first(
    api: ApiServer, api_tokens: dict[str, str], api_ws: object
) -> None:
    from datetime import UTC, datetime, timedelta

    from deployally.store import DeliveryStatus

    store = api_ws.store  # type: ignore[attr-defined]
    hook = _webhook(api, api_tokens["admin"])
    store.enqueue_event("deployment.success", {"name": "first"})
    store.enqueue_event("deployment.success", {"name": "second"})
    first, second = sorted(store.deliveries(hook), key=lambda d: d.data["name"])
    retry_at = datetime.now(UTC) + timedelta(minutes=5)
    store.record_attempt(
        first.id, status_code=500, duration_ms=12.5, error="receiver answered HTTP 500",
        next_attempt_at=retry_at,
    )
    store.record_attempt(
        first.id, status_code=None, duration_ms=5000.0, error="no answer within 5s",
        next_attempt_at=retry_at,
    )
    store.record_attempt(
        second.id, status_code=204, duration_ms=3.0, error=None, next_attempt_at=None,
        final_status=DeliveryStatus.DELIVERED,
    )

    r = api.request("GET", f"/webhooks/{hook}/deliveries", api_tokens["admin"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["pagination"] == {"page": 1, "per_page": 20, "total": 2}
    newest, oldest = body["data"]
    assert newest["id"] == second.id and newest["status"] == "delivered"
    assert newest["next_attempt_at"] is None
    assert [(a["status_code"], a["error"]) for a in newest["attempts"]] == [(204, None)]
    assert oldest["event"] == "deployment.success" and oldest["status"] == "pending"
    assert oldest["next_attempt_at"] == retry_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [(a["number"], a["status_code"], a["duration_ms"], a["error"])
            for a in oldest["attempts"]] == [
        (1, 500, 12.5, "receiver answered HTTP 500"),
        (2, None, 5000.0, "no answer within 5s"),
    ]

    paged = api.request("GET", f"/webhooks/{hook}/deliveries?per_page=1&page=2", api_tokens["admin"])
    assert [d["id"] for d in paged.json()["data"]] == [first.id]
    assert paged.json()["pagination"] == {"page": 2, "per_page": 1, "total": 2}


def test_deliveries_and_test_are_admin_only_and_404_for_an_unknown_webhook(
    api: ApiServer, api_tokens: dict[str, str]
) -> None:
    hook = _webhook(api, api_tokens["admin"])
    for method, path in (("GET", "deliveries"), ("POST", "test")):
        assert api.request(method, f"/webhooks/{hook}/{path}", api_tokens["write"]).status_code == 403
        assert api.request(method, f"/webhooks/{hook}/{path}").status_code == 401
        missing = api.request(method, f"/webhooks/whk_000000000000/{path}", api_tokens["admin"])
        assert missing.status_code == 404
        assert "GET /api/v1/webhooks" in missing.json()["error"]["message"]


def test_test_queues_a_ping_for_that_webhook_only(
    api: ApiServer, api_tokens: dict[str, str], api_ws: object
) -> None:
    store = api_ws.store  # type: ignore[attr-defined]
    hook = _webhook(api, api_tokens["admin"])
    other = _webhook(api, api_tokens["admin"], "https://other.test/hook")
    r = api.request("POST", f"/webhooks/{hook}/test", api_tokens["admin"])
    assert r.status_code == 202, r.text
    data = r.json()["data"]
    assert data["delivery_id"].startswith("dlv_") and data["event"] == "ping"
    # A ping goes to the webhook asked about, though it subscribed only to deployment.success.
    (queued,) = store.deliveries(hook)
    assert queued.id == data["delivery_id"] and queued.event == "ping"
    assert queued.data["webhook_id"] == hook
    assert store.deliveries(other) == []
    listed = api.request("GET", f"/webhooks/{hook}/deliveries", api_tokens["admin"]).json()["data"]
    assert [(d["id"], d["event"], d["status"], d["attempts"]) for d in listed] == [
        (data["delivery_id"], "ping", "pending", [])
    ]



@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://127.0.0.1:8080/api/v1/sync", "loopback"),
        ("http://localhost:9000/hook", "loopback"),
        ("http://[::1]:9000/hook", "loopback"),
        ("http://169.254.169.254/latest/meta-data/iam/", "link-local"),
        ("http://[fe80::1]/hook", "link-local"),
        ("http://[fe80::1%25eth0]/hook", "link-local"),
    ],
)
def test_a_url_to_this_machine_is_422_unless_engine_yaml_allows_it(
    api_ws: Workspace, api_tokens: dict[str, str], url: str, says: str
) -> None:
    body = {"url": url, "events": ["deployment.success"], "secret": "s3cret"}
    server = ApiServer(api_ws)
    try:
        r = server.request("POST", "/webhooks", api_tokens["admin"], json=body)
    finally:
        server.close()
    assert r.status_code == 422, r.text
    [detail] = r.json()["error"]["details"]
    assert detail["field"] == "url" and says in detail["message"]
    assert "engine.yaml" in detail["message"]
    assert api_ws.store.webhooks() == []

    (api_ws.state_dir / "engine.yaml").write_text(
        "webhooks:\n  allow: [loopback, link_local]\n"
    )
    allowed = Workspace.open(api_ws.repo_path, api_ws.state_dir)  # engine.yaml is read at start
    server = ApiServer(allowed)
    try:
        assert server.request("POST", "/webhooks", api_tokens["admin"], json=body).status_code == 201
    finally:
        server.close()
        allowed.close()


def test_a_whsec_secret_that_is_not_a_key_is_422(api: ApiServer, api_tokens: dict[str, str]) -> None:
    r = api.request("POST", "/webhooks", api_tokens["admin"], json={
        "url": "https://hooks.example.com/x", "events": ["deployment.failed"],
        "secret": "whsec_tooshort",
    })
    assert r.status_code == 422
    [detail] = r.json()["error"]["details"]
    assert detail["field"] == "secret" and "bytes" in detail["message"]


@pytest.mark.docker
def test_an_address_on_a_docker_network_of_the_host_is_422_unless_engine_host_is_allowed(
    docker_client: docker.DockerClient, names: str, api_ws: Workspace, api_tokens: dict[str, str]
) -> None:
    network = docker_client.networks.create(f"{names}hooknet", driver="bridge")
    network.reload()
    subnet = ipaddress.ip_network(network.attrs["IPAM"]["Config"][0]["Subnet"])
    inside = str(subnet.network_address + 7)  # no container needed: the range is the host's
    body = {"url": f"http://{inside}:8080/admin", "events": ["deployment.failed"], "secret": "s3cret"}
    server = ApiServer(api_ws)
    try:
        r = server.request("POST", "/webhooks", api_tokens["admin"], json=body)
    finally:
        server.close()
    assert r.status_code == 422, r.text
    [detail] = r.json()["error"]["details"]
    assert detail["field"] == "url" and inside in detail["message"]
    assert "container network" in detail["message"] and "engine_host" in detail["message"]
    assert api_ws.store.webhooks() == []

    (api_ws.state_dir / "engine.yaml").write_text("webhooks:\n  allow: [engine_host]\n")
    allowed = Workspace.open(api_ws.repo_path, api_ws.state_dir)  # engine.yaml is read at start
    server = ApiServer(allowed)
    try:
        assert server.request("POST", "/webhooks", api_tokens["admin"], json=body).status_code == 201
    finally:
        server.close()
        allowed.close()
