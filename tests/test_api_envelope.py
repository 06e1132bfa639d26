"""The envelope and error statuses over real HTTP: 400, 404, 405, 422 and pagination edges."""

from __future__ import annotations

import pytest

from conftest import ApiServer
from deployally.api.envelope import ApiError, Page, parse_page


def test_parse_page_defaults_and_limits() -> None:
    assert parse_page({}) == Page(1, 20)
    assert parse_page({"page": "3", "per_page": "100"}) == Page(3, 100)
    assert Page(3, 10).offset == 20
    for bad in (
        {"page": "abc"},
        {"page": "0"},
        {"per_page": "0"},
        {"per_page": "1000"},
        {"per_page": "-1"},
        {"page": "1.5"},
        {"page": ""},
    ):
        with pytest.raises(ApiError) as caught:
            parse_page(bad)
        assert caught.value.status == 400
        assert caught.value.details[0]["field"] in bad


@pytest.mark.parametrize(
    "query", ["page=abc", "per_page=0", "per_page=1000", "page=0", "status=nonsense"]
)
def test_bad_query_values_are_400_naming_the_field(
    api: ApiServer, api_tokens: dict[str, str], query: str
) -> None:
    r = api.request("GET", f"/definitions?{query}", api_tokens["read"])
    assert r.status_code == 400
    body = r.json()
    assert body["success"] is False
    assert body["error"]["code"] == "bad_request"
    assert body["error"]["details"][0]["field"] == query.split("=")[0]


def test_page_past_the_end_is_an_empty_page(api: ApiServer, api_tokens: dict[str, str]) -> None:
    r = api.request("GET", "/servers?page=50&per_page=1", api_tokens["read"])
    assert r.status_code == 200
    assert r.json()["data"] == []
    assert r.json()["pagination"] == {"page": 50, "per_page": 1, "total": 1}


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"", b'"text"', b"\xff\xfe"])
def test_malformed_json_is_400(api: ApiServer, api_tokens: dict[str, str], body: bytes) -> None:
    r = api.request(
        "POST",
        "/webhooks",
        api_tokens["admin"],
        data=body,
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "bad_request"


def test_invalid_body_is_422_naming_each_field(api: ApiServer, api_tokens: dict[str, str]) -> None:
    r = api.request(
        "POST",
        "/servers",
        api_tokens["admin"],
        json={"name": "Bad Name!", "environment": "moon", "colour": "red"},
    )
    assert r.status_code == 422
    fields = {d["field"] for d in r.json()["error"]["details"]}
    assert fields == {"name", "environment", "colour"}


def test_unknown_route_is_404_and_wrong_method_is_405(
    api: ApiServer, api_tokens: dict[str, str]
) -> None:
    missing = api.request("GET", "/nothing-here", api_tokens["read"])
    assert missing.status_code == 404
    assert missing.json() == {
        "success": False,
        "error": {"code": "not_found", "message": "no such endpoint", "details": []},
    }
    wrong = api.request("PATCH", "/servers", api_tokens["admin"])
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"
    assert "POST" in wrong.headers["Allow"]


def test_errors_never_show_a_stack_trace(api: ApiServer, api_tokens: dict[str, str]) -> None:
    for method, path in [
        ("GET", "/definitions/%00"),
        ("PUT", "/definitions/../../etc"),
        ("POST", "/instances/x/stop"),
        ("GET", "/deployments/'"),
    ]:
        r = api.request(method, path, api_tokens["admin"], json={"profile": "x"})
        assert r.status_code < 500, (method, path, r.text)
        assert "Traceback" not in r.text


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", "invalid header token"),
        (b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", "invalid header value"),
        (b"GET /api/v1/\x00 HTTP/1.1\r\nHost: x\r\n\r\n", "invalid char in url"),
        (b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer da_s3cret\x01\r\n\r\n",
         "invalid header value"),
    ],
)
def test_a_request_aiohttp_cannot_parse_is_400_in_the_envelope_and_one_log_line(
    api: ApiServer, caplog: pytest.LogCaptureFixture, raw: bytes, says: str
) -> None:
    import json
    import logging
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(api.url)
    caplog.set_level(logging.DEBUG)
    with socket.create_connection((url.hostname, url.port), timeout=10) as conn:
        conn.sendall(raw)
        answer = b""
        while chunk := conn.recv(65536):  # the server closes the connection after it
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and b" 400 " in head.split(b"\r\n")[0]
    assert b"content-type: application/json" in head.lower()
    error = json.loads(body)
    assert error["success"] is False and error["error"]["code"] == "bad_request"
    assert says in error["error"]["message"]
    assert b"s3cret" not in body
    server_side = [r for r in caplog.records if r.name.startswith(("aiohttp.server", "deployally"))]
    assert [(r.levelname, r.exc_info) for r in server_side] == [("WARNING", None)]
    assert says in str(server_side[0].__dict__.get("fields"))
    assert "s3cret" not in caplog.text
