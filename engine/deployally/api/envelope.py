"""The API's response envelopes, its error type, and the parsing of pages, queries and bodies.

Every success is `{"success": true, "data": ...}` (lists add `pagination`);
every error is `{"success": false, "error": {"code", "message", "details"}}`.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

DEFAULT_PER_PAGE = 20
MAX_PER_PAGE = 100  # above it a request is refused (400), never silently clamped
# No body of this API nests deeper than a few levels; far deeper JSON is an attack on the parser
# (100,000 levels exhaust Python's recursion), refused before anything walks it.
MAX_JSON_DEPTH = 32
# Integers go into SQLite, whose INTEGER is 64-bit: a larger one is refused, never overflows.
MAX_INTEGER = 2**63 - 1

Details = list[dict[str, Any]]


class ApiError(Exception):
    """An error answered as the error envelope with this HTTP status."""

    def __init__(self, status: int, code: str, message: str, details: Details | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.code!r}, {self.message!r})"


def bad_request(message: str, field: str | None = None) -> ApiError:
    """400: malformed JSON or a bad query value."""
    details = [{"field": field, "message": message}] if field else []
    return ApiError(400, "bad_request", message, details)


def not_found(message: str) -> ApiError:
    """404 with a message naming what is missing."""
    return ApiError(404, "not_found", message)


def invalid(details: Details) -> ApiError:
    """422: the body failed validation; `details` name each field and what is wrong."""
    fields = ", ".join(str(d.get("field") or "body") for d in details)
    return ApiError(422, "validation_failed", f"the request body is invalid: {fields}", details)


def success(data: Any, status: int = 200) -> web.Response:
    """`{"success": true, "data": data}`."""
    return web.json_response({"success": True, "data": data}, status=status)


def failure(err: ApiError) -> web.Response:
    """The error envelope for `err`."""
    body = {
        "success": False,
        "error": {"code": err.code, "message": err.message, "details": err.details},
    }
    return web.json_response(body, status=err.status)


# ---------------------------------------------------------------- pagination


@dataclass(frozen=True)
class Page:
    """Which slice of a list a request asked for; pages count from 1."""

    page: int = 1
    per_page: int = DEFAULT_PER_PAGE

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page

    def slice(self, items: list[Any]) -> list[Any]:
        """This page of an in-memory list."""
        return items[self.offset : self.offset + self.per_page]


def parse_page(query: Mapping[str, str]) -> Page:
    """`page` (>= 1, default 1) and `per_page` (1..100, default 20); 400 for anything else."""
    page = _positive_int(query, "page", 1)
    per_page = _positive_int(query, "per_page", DEFAULT_PER_PAGE)
    if per_page > MAX_PER_PAGE:
        raise bad_request(
            f"per_page: {per_page} is above {MAX_PER_PAGE}; ask for at most {MAX_PER_PAGE}",
            "per_page",
        )
    return Page(page, per_page)


def _positive_int(query: Mapping[str, str], name: str, default: int) -> int:
    raw = query_value(query, name)
    if raw is None:
        return default
    # isdigit() alone admits "²" and "①" (int() refuses them) and other scripts' digits.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9 or int(raw) < 1:
        raise bad_request(
            f"{name}: {raw!r} is not a whole number from 1; e.g. {name}={default}", name
        )
    return int(raw)


def listing(data: list[Any], page: Page, total: int) -> web.Response:
    """A list response: data plus `pagination` {page, per_page, total}."""
    return web.json_response(listing_body(data, page, total))


def listing_body(data: list[Any], page: Page, total: int) -> dict[str, Any]:
    """The body of a list response, for answers built once and sent many times."""
    return {
        "success": True,
        "data": data,
        "pagination": {"page": page.page, "per_page": page.per_page, "total": total},
    }


def json_body(body: bytes) -> web.Response:
    """A 200 answer whose JSON is already encoded."""
    return web.Response(body=body, content_type="application/json", charset="utf-8")


def query_value(query: Mapping[str, str], name: str) -> str | None:
    """The one value of query parameter `name` (None when absent); 400 naming it when it is
    given more than once, rather than silently using one of them."""
    getall = getattr(query, "getall", None)
    values = getall(name, []) if getall is not None else [query[name]] if name in query else []
    if len(values) > 1:
        raise bad_request(f"{name}: given {len(values)} times; give it once", name)
    return str(values[0]) if values else None


def choice(query: Mapping[str, str], name: str, allowed: Collection[str]) -> str | None:
    """An optional query value that must be one of `allowed`; 400 otherwise."""
    value = query_value(query, name)
    if value is not None and value not in allowed:
        raise bad_request(f"{name}: {value!r} is not one of {', '.join(sorted(allowed))}", name)
    return value


# ---------------------------------------------------------------- bodies


async def read_json(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; 400 when it is missing, malformed or not an object."""
    return json_object(await request.read())


def json_object(raw: bytes, *, required: bool = True) -> dict[str, Any]:
    """Raw body bytes as a JSON object (an empty body is {} unless required); else 400."""
    if not raw.strip():
        if required:
            raise bad_request("the request needs a JSON object body")
        return {}
    try:
        body = json.loads(raw)
    except RecursionError:
        raise bad_request(_too_deep()) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise bad_request(f"the body must be a JSON object, not {type(body).__name__}")
    if problem := _json_problem(body):
        raise bad_request(problem)
    return body


def _json_problem(body: Any) -> str | None:
    """Why a parsed body cannot go further (too deep, a lone surrogate in a string), or None.

    Iterative, so the check itself cannot run out of stack.
    """
    stack: list[tuple[Any, int]] = [(body, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            items: list[Any] = [*value.keys(), *value.values()]
        elif isinstance(value, list):
            items = value
        else:
            if isinstance(value, str) and not _is_unicode_text(value):
                return (
                    "the body holds a string with a lone UTF-16 surrogate (e.g. \\ud800), "
                    "which is not text; send valid Unicode"
                )
            continue
        if depth > MAX_JSON_DEPTH:
            return _too_deep()
        stack.extend((item, depth + 1) for item in items)
    return None


def _is_unicode_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _too_deep() -> str:
    return f"the body nests deeper than {MAX_JSON_DEPTH} levels; no request needs that"


class BodyCheck:
    """Collects every problem of a body, so one 422 names all the fields at once."""

    def __init__(self, body: Mapping[str, Any], known: Collection[str]) -> None:
        self.body = body
        self.details: Details = [
            {"field": k, "message": f"unknown field; fields are: {', '.join(sorted(known))}"}
            for k in body
            if k not in known
        ]

    def __repr__(self) -> str:
        return f"BodyCheck({len(self.details)} problems)"

    def problem(self, field: str, message: str) -> None:
        """Note one problem with one field."""
        self.details.append({"field": field, "message": message})

    def string(
        self, field: str, *, required: bool = True, allowed: Collection[str] | None = None
    ) -> str | None:
        """A non-empty string field (None when optional and absent)."""
        value = self.body.get(field)
        if value is None:
            if required:
                self.problem(field, "is required")
            return None
        if not isinstance(value, str) or not value.strip():
            self.problem(field, "must be a non-empty string")
            return None
        if allowed is not None and value not in allowed:
            self.problem(field, f"{value!r} is not one of {', '.join(allowed)}")
            return None
        return value

    def mapping(self, field: str, *, required: bool = True) -> dict[str, Any] | None:
        """A JSON object field."""
        value = self.body.get(field)
        if value is None:
            if required:
                self.problem(field, "is required")
            return None
        if not isinstance(value, dict):
            self.problem(field, "must be an object of name: value")
            return None
        return value

    def integer(
        self, field: str, *, required: bool = False, minimum: int = 1, maximum: int = MAX_INTEGER
    ) -> int | None:
        """A whole number field from `minimum` to `maximum`."""
        value = self.body.get(field)
        if value is None:
            if required:
                self.problem(field, "is required")
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.problem(field, f"must be a whole number from {minimum}")
            return None
        if value > maximum:
            self.problem(field, f"{value} is too large; at most {maximum}")
            return None
        return value

    def raise_if_any(self) -> None:
        """422 when any problem was noted."""
        if self.details:
            raise invalid(self.details)
