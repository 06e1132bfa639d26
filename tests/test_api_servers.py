"""GET and POST /servers over real HTTP: the api_key is shown once and stored only as a hash."""

from __future__ import annotations

import sqlite3

from conftest import ApiServer


def test_register_as_in_the_document_then_list(
    api: ApiServer, api_tokens: dict[str, str], api_ws: object
) -> None:
    r = api.request(
        "POST",
        "/servers",
        api_tokens["admin"],
        json={
            "name": "servidor-producao-01",
            "environment": "production",
            "description": "Servidor principal de produção",
        },
    )
    assert r.status_code == 201
    data = r.json()["data"]
    assert set(data) >= {"id", "name", "api_key", "status", "created_at"}
    assert data["id"].startswith("srv_") and data["status"] == "pending"
    assert data["api_key"].startswith("da_server_")

    listed = api.request("GET", "/servers", api_tokens["read"]).json()
    assert listed["pagination"]["total"] == 2  # local is always there
    by_name = {s["name"]: s for s in listed["data"]}
    assert by_name["servidor-producao-01"]["description"] == "Servidor principal de produção"
    assert by_name["local"]["status"] == "active"
    assert data["api_key"] not in listed.__repr__()
    # Only a hash is stored: the key itself is nowhere in the database.
    db = sqlite3.connect(api_ws.store.path)  # type: ignore[attr-defined]
    try:
        dump = "\n".join(db.iterdump())
    finally:
        db.close()
    assert data["api_key"] not in dump


def test_a_taken_name_is_409(api: ApiServer, api_tokens: dict[str, str]) -> None:
    body = {"name": "edge", "environment": "staging"}
    assert api.request("POST", "/servers", api_tokens["admin"], json=body).status_code == 201
    again = api.request("POST", "/servers", api_tokens["admin"], json=body)
    assert again.status_code == 409
    assert "edge" in again.json()["error"]["message"]


def test_environment_must_be_one_of_three(api: ApiServer, api_tokens: dict[str, str]) -> None:
    r = api.request(
        "POST", "/servers", api_tokens["admin"], json={"name": "x1", "environment": "prod"}
    )
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == "environment"
