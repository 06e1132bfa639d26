"""The API document's example requests (seed/api-endpoints.txt), replayed as written with a real token.

Each response must carry every field the document's example shows, with the
same JSON types. Placeholders the document makes up (tpl_abc123, def_xyz789,
srv_123, inst_abc, deploy_abc123) are replaced with real ids.
"""

from __future__ import annotations

from typing import Any

from conftest import ApiServer, commit_busybox
from deployally.model.catalog import load_builtin
from deployally.workspace import Workspace

TEMPLATE = {
    "id": "tpl_abc123",
    "name": "MySQL Database Server",
    "version": "8.4",
    "taxonomy": {
        "kingdom": "assets",
        "family": "database",
        "species": "mysql",
        "variant": "standard",
        "specimen": "8.4",
    },
    "spec_hash": "sha256:abc123...",
    "deprecated": False,
    "created_at": "2026-01-15T10:00:00Z",
}
TEMPLATE_DETAIL = {
    **{k: v for k, v in TEMPLATE.items() if k not in ("deprecated", "created_at")},
    "description": "Banco de dados relacional MySQL",
    "spec": {"image": {"repository": "mysql", "tag": "8.4"}, "profiles": []},
}
DEFINITION = {
    "id": "def_xyz789",
    "name": "mysql_meu_banco",
    "template_id": "tpl_abc123",
    "server_id": "srv_123",
    "status": "active",
    "current_revision": 2,
    "container_name": "mysql_meu_banco",
    "created_at": "2026-01-20T14:00:00Z",
    "updated_at": "2026-01-25T09:00:00Z",
}
WRITTEN = {
    "id": "def_new123",
    "name": "mysql_producao",
    "status": "pending",
    "current_revision": 1,
    "created_at": "2026-02-13T10:00:00Z",
}
INSTANCE = {
    "id": "inst_abc",
    "definition_id": "def_xyz789",
    "container_id": "abc123def456",
    "container_name": "mysql_meu_banco",
    "status": "running",
    "health": "healthy",
    "started_at": "2026-02-10T08:00:00Z",
    "uptime_seconds": 259200,
}
SERVER = {
    "id": "srv_new123",
    "name": "servidor-producao-01",
    "api_key": "da_server_xxx",
    "status": "pending",
    "created_at": "2026-02-13T10:00:00Z",
}
DEPLOYMENT = {
    "id": "deploy_abc123",
    "definition_id": "def_xyz789",
    "server_id": "srv_123",
    "status": "pending",
    "created_at": "2026-02-13T10:00:00Z",
}
HEALTH = {"status": "healthy", "version": "0.5.1", "timestamp": "2026-02-13T12:00:00Z"}
NULLABLE = {"health", "started_at"}  # null when there is no healthcheck / never started


def assert_shape(example: Any, actual: Any, at: str = "data") -> None:
    """`actual` has every field of `example`, with the same JSON type (recursively)."""
    if isinstance(example, dict):
        assert isinstance(actual, dict), at
        for key, value in example.items():
            assert key in actual, f"{at}.{key} is missing"
            if actual[key] is None and key in NULLABLE:
                continue
            assert_shape(value, actual[key], f"{at}.{key}")
    elif isinstance(example, list):
        assert isinstance(actual, list), at
        for item in actual[:1]:
            if example:
                assert_shape(example[0], item, f"{at}[0]")
    elif isinstance(example, bool):
        assert isinstance(actual, bool), at
    elif isinstance(example, int):
        assert isinstance(actual, int) and not isinstance(actual, bool), at
    else:
        assert isinstance(actual, type(example)), at


def envelope(r: Any, example: Any, *, paginated: bool = False) -> Any:
    body = r.json()
    assert body["success"] is True, body
    if paginated:
        assert set(body["pagination"]) == {"page", "per_page", "total"}
    assert_shape(example, body["data"])
    return body["data"]


def test_the_documents_examples(
    api: ApiServer, api_tokens: dict[str, str], api_docker_ws: Workspace, names: str
) -> None:
    da = api_tokens["admin"]
    mysql = load_builtin().resolve("database/mysql/standard/8.4")
    assert mysql is not None

    r = api.request("GET", "/templates?family=database", da)
    assert envelope(r, [TEMPLATE], paginated=True)
    assert r.json()["pagination"]["per_page"] == 20
    envelope(api.request("GET", f"/templates/{mysql.id}", da), TEMPLATE_DETAIL)

    server = envelope(
        api.request(
            "POST",
            "/servers",
            da,
            json={
                "name": "servidor-producao-01",
                "environment": "production",
                "description": "Servidor principal de produção",
            },
        ),
        SERVER,
    )
    listed = envelope(
        api.request("GET", "/servers", da),
        [{k: v for k, v in SERVER.items() if k != "api_key"}],
        paginated=True,
    )
    assert all("api_key" not in s for s in listed)  # shown once, at registration only

    created = envelope(
        api.request(
            "POST",
            "/definitions",
            da,
            json={
                "template_id": mysql.id,
                "server_id": server["id"],
                "name": "mysql_producao",
                "params": {
                    "root_password": "senha_root_segura",
                    "database_name": "app_db",
                    "user_name": "app_user",
                    "user_password": "senha_user_segura",
                },
                "profile": "production",
            },
        ),
        WRITTEN,
    )
    updated = envelope(
        api.request(
            "PUT",
            f"/definitions/{created['id']}",
            da,
            json={
                "profile": "production",
                "params": {"user_password": "nova_senha_segura"},
            },
        ),
        {k: v for k, v in WRITTEN.items() if k != "created_at"},
    )
    assert updated["id"] == created["id"]
    deleted = api.request("DELETE", f"/definitions/{created['id']}", da)
    assert deleted.status_code == 200 and deleted.json()["data"]["id"] == created["id"]

    commit_busybox(api_docker_ws, f"{names}-meu")
    assert api_docker_ws.engine.sync().ok
    [definition] = envelope(api.request("GET", "/definitions", da), [DEFINITION], paginated=True)
    instances = envelope(api.request("GET", "/instances", da), [INSTANCE], paginated=True)
    inst = next(i for i in instances if i["container_name"] == f"{names}-meu")
    assert inst["started_at"] is not None or inst["uptime_seconds"] == 0
    for action in ("restart", "stop", "start"):
        r = api.request("POST", f"/instances/{inst['id']}/{action}", da)
        assert r.status_code == 200, (action, r.text)

    envelope(
        api.request("GET", "/deployments", da), [DEPLOYMENT | {"status": "success"}], paginated=True
    )
    deployment = envelope(
        api.request("POST", "/deployments", da, json={"definition_id": definition["id"]}),
        DEPLOYMENT,
    )
    detail = envelope(api.request("GET", f"/deployments/{deployment['id']}", da), DEPLOYMENT)
    assert isinstance(detail["logs"], list)

    health = api.request("GET", "/health").json()
    assert_shape(HEALTH, health, "health")

    envelope(
        api.request(
            "POST",
            "/webhooks",
            da,
            json={
                "url": "https://meu-site.com/webhook",
                "events": ["deployment.success", "deployment.failed", "instance.unhealthy"],
                "secret": "meu_webhook_secret",
            },
        ),
        {"id": "whk_x", "url": "https://meu-site.com/webhook", "events": ["deployment.success"]},
    )
