"""Values <-> SQL text: timestamps, enums, and canonical JSON of our frozen types.

The JSON shapes are the one codec's (deployally.codec); these add the text and
rebuild Reason and params with SecretRef.
"""

from __future__ import annotations

import enum
import json
from datetime import UTC, datetime
from typing import Any

from deployally import identity
from deployally.codec import spec_from_json, spec_to_json, to_json
from deployally.types import ContainerSpec, FieldChange, Reason, ReasonKind, SecretRef


def _ts(value: datetime) -> str:
    """UTC ISO-8601 with a Z; fixed-width microseconds so text order is time order."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: the store takes timezone-aware UTC times")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ts_or_none(value: datetime | None) -> str | None:
    return None if value is None else _ts(value)


def _dt(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text).astimezone(UTC)


def _dt_req(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _now() -> datetime:
    return datetime.now(UTC)


def _enum_value(value: Any) -> Any:
    # str(SomeStrEnum.X) is "SomeStrEnum.X" on 3.11, so never rely on str().
    return value.value if isinstance(value, enum.Enum) else value


def _dumps(value: Any) -> str:
    return identity.canonical_json(to_json(value))


def _params_from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if isinstance(value.get("secret"), str) and set(value) <= {"secret", "version"}:
            return SecretRef(value["secret"], value.get("version"))
        return {k: _params_from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_params_from_json(v) for v in value]
    return value


def _spec_to_json(spec: ContainerSpec) -> str:
    """ContainerSpec as canonical JSON text, in the one codec's shape."""
    return identity.canonical_json(spec_to_json(spec))


def _spec_from_json(text: str) -> ContainerSpec:
    """The exact ContainerSpec `_spec_to_json` wrote."""
    return spec_from_json(json.loads(text))


def _reason_from_json(text: str) -> Reason:
    raw = json.loads(text)
    return Reason(
        kind=ReasonKind(raw["kind"]),
        summary=raw["summary"],
        commit=raw.get("commit"),
        # before/after come back as JSON values (a tuple comes back a list).
        changes=tuple(
            FieldChange(c["field"], c["before"], c["after"]) for c in raw.get("changes", ())
        ),
    )
