"""POST, GET and DELETE /webhooks over real HTTP: URL and event checks; the secret is never shown."""

from __future__ import annotations

from conftest import ApiServer


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

    listed = api.request("GET", "/webhooks", api_tokens["read"])
    assert [w["id"] for w in listed.json()["data"]] == [data["id"]]
    assert "meu_webhook_secret" not in listed.text

    gone = api.request("DELETE", f"/webhooks/{data['id']}", api_tokens["admin"])
    assert gone.status_code == 200 and gone.json()["data"] == {"id": data["id"], "deleted": True}
    assert api.request("GET", "/webhooks", api_tokens["read"]).json()["data"] == []
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
