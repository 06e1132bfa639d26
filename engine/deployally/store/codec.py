"""Values <-> SQL text: timestamps, enums, and JSON for our frozen types.

JSON in the store is canonical JSON of plain values; these rebuild the frozen types
(ContainerSpec, Reason, params with SecretRef) from it.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import types as pytypes
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Union, get_args, get_origin, get_type_hints

from deployally import identity
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


def _jsonable(value: Any) -> Any:
    """Plain JSON values from our frozen types: dataclasses, enums, tuples, SecretRef."""
    if isinstance(value, SecretRef):
        return {"secret": value.name}  # the same shape a definition file uses
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _dumps(value: Any) -> str:
    return identity.canonical_json(_jsonable(value))


def _params_from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("secret"), str):
            return SecretRef(value["secret"])
        return {k: _params_from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_params_from_json(v) for v in value]
    return value


@functools.cache
def _fields_of(tp: type) -> tuple[dict[str, Any], frozenset[str]]:
    """A dataclass's resolved field types and names; resolving them is slow, so once per type."""
    return get_type_hints(tp), frozenset(f.name for f in dataclasses.fields(tp))


def _from_jsonable(tp: Any, value: Any) -> Any:
    """Rebuild a value of type `tp` (as annotated in types.py) from its JSON form."""
    if value is None:
        return None
    origin = get_origin(tp)
    if origin in (Union, pytypes.UnionType):
        inner = [a for a in get_args(tp) if a is not type(None)]
        return _from_jsonable(inner[0], value) if len(inner) == 1 else value
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_jsonable(args[0], v) for v in value)
        return tuple(_from_jsonable(a, v) for a, v in zip(args, value, strict=True))
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints, known = _fields_of(tp)
        # Unknown keys come from a newer writer; ignoring them lets an older reader cope.
        return tp(**{k: _from_jsonable(hints[k], v) for k, v in value.items() if k in known})
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if tp is float and isinstance(value, int):
        return float(value)
    return value


def _spec_to_json(spec: ContainerSpec) -> str:
    """ContainerSpec as canonical JSON text."""
    return identity.canonical_json(dataclasses.asdict(spec))


def _spec_from_json(text: str) -> ContainerSpec:
    """The exact ContainerSpec `_spec_to_json` wrote, nested dataclasses and tuples rebuilt."""
    spec: ContainerSpec = _from_jsonable(ContainerSpec, json.loads(text))
    return spec


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
