"""GET /templates and /templates/{id} over real HTTP: filters, pagination, the document's fields."""

from __future__ import annotations

from conftest import ApiServer
from deployally.model.catalog import load_builtin


def test_list_has_every_builtin_template_with_the_documented_fields(
    api: ApiServer, api_tokens: dict[str, str]
) -> None:
    r = api.request("GET", "/templates", api_tokens["read"])
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is True
    assert body["pagination"] == {"page": 1, "per_page": 20, "total": len(load_builtin())}
    first = body["data"][0]
    assert set(first) >= {
        "id",
        "name",
        "version",
        "taxonomy",
        "spec_hash",
        "deprecated",
        "created_at",
    }
    assert set(first["taxonomy"]) == {"kingdom", "family", "species", "variant", "specimen"}
    assert first["spec_hash"].startswith("sha256:")


def test_family_filter_as_in_the_document(api: ApiServer, api_tokens: dict[str, str]) -> None:
    r = api.request("GET", "/templates?family=database", api_tokens["read"])
    data = r.json()["data"]
    assert data and all(t["taxonomy"]["family"] == "database" for t in data)
    assert r.json()["pagination"]["total"] == len(data)
    species = api.request("GET", "/templates?family=database&species=mysql", api_tokens["read"])
    assert [t["taxonomy"]["species"] for t in species.json()["data"]] == ["mysql"]
    none = api.request("GET", "/templates?kingdom=nothing", api_tokens["read"]).json()
    assert none["data"] == [] and none["pagination"]["total"] == 0


def test_get_one_has_description_spec_and_spec_hash(
    api: ApiServer, api_tokens: dict[str, str]
) -> None:
    mysql = load_builtin().resolve("database/mysql/standard/8.4")
    assert mysql is not None
    r = api.request("GET", f"/templates/{mysql.id}", api_tokens["read"])
    assert r.status_code == 200
    data = r.json()["data"]
    assert data["id"] == mysql.id
    assert data["description"] == "Banco de dados relacional MySQL"
    assert data["spec"]["user_inputs"]["root_password"]["type"] == "password"
    assert data["spec_hash"] == mysql.spec_hash


def test_unknown_template_is_404_envelope(api: ApiServer, api_tokens: dict[str, str]) -> None:
    r = api.request("GET", "/templates/tpl_000000000000", api_tokens["read"])
    assert r.status_code == 404
    assert r.json()["success"] is False
    assert r.json()["error"]["code"] == "not_found"


def test_pages_split_the_list_without_overlap(api: ApiServer, api_tokens: dict[str, str]) -> None:
    total = len(load_builtin())
    seen = []
    for page in range(1, total + 1):
        r = api.request("GET", f"/templates?page={page}&per_page=1", api_tokens["read"]).json()
        assert r["pagination"] == {"page": page, "per_page": 1, "total": total}
        seen += [t["id"] for t in r["data"]]
    assert len(seen) == len(set(seen)) == total
    past = api.request("GET", f"/templates?page={total + 1}&per_page=1", api_tokens["read"])
    assert past.status_code == 200 and past.json()["data"] == []
