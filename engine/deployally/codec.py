"""Our frozen values <-> plain JSON values; ContainerSpec's one shape for the store, the API and an agent.

`to_json` turns dataclasses, enums, tuples, datetimes and SecretRef into JSON-safe values;
`from_json` rebuilds a value of an annotated type from them. A ContainerSpec
written by `spec_to_json` comes back equal from `spec_from_json`, and a key a
newer writer added is ignored, so an older reader copes.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types as pytypes
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Union, get_args, get_origin, get_type_hints

from deployally.types import ContainerSpec, SecretRef


def to_json(value: Any) -> Any:
    """Plain JSON values from our frozen types: dataclasses, enums, tuples, datetimes, SecretRef."""
    if isinstance(value, SecretRef):  # the same shape a definition file uses
        if value.version is None:
            return {"secret": value.name}
        return {"secret": value.name, "version": value.version}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


@functools.cache
def _fields_of(tp: type) -> tuple[dict[str, Any], frozenset[str]]:
    """A dataclass's resolved field types and names; resolving them is slow, so once per type."""
    return get_type_hints(tp), frozenset(f.name for f in dataclasses.fields(tp))


def from_json(tp: Any, value: Any) -> Any:
    """Rebuild a value of type `tp` (as annotated in types.py) from its JSON form."""
    if value is None:
        return None
    origin = get_origin(tp)
    if origin in (Union, pytypes.UnionType):
        inner = [a for a in get_args(tp) if a is not type(None)]
        return from_json(inner[0], value) if len(inner) == 1 else value
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_json(args[0], v) for v in value)
        return tuple(from_json(a, v) for a, v in zip(args, value, strict=True))
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints, known = _fields_of(tp)
        # Unknown keys come from a newer writer; ignoring them lets an older reader cope.
        return tp(**{k: from_json(hints[k], v) for k, v in value.items() if k in known})
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if tp is datetime and isinstance(value, str):
        return datetime.fromisoformat(value)
    if tp is float and isinstance(value, int):
        return float(value)
    return value


def spec_to_json(spec: ContainerSpec) -> dict[str, Any]:
    """A ContainerSpec as JSON values: every field, in declaration order, secrets as placeholders."""
    out: dict[str, Any] = to_json(spec)
    return out


def spec_from_json(value: Mapping[str, Any]) -> ContainerSpec:
    """The exact ContainerSpec `spec_to_json` gave, nested values and tuples rebuilt."""
    spec: ContainerSpec = from_json(ContainerSpec, value)
    return spec
