"""Read a YAML file against one of schemas/*.json, with errors naming file, field and line.

The YAML-and-schema reading that templates, definitions and settings share, so
every file DeployAlly reads reports errors the same way: file, line, dotted field.
"""

from __future__ import annotations

import datetime
import difflib
import functools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import yaml
import yaml.composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

from deployally.data import SCHEMAS
from deployally.errors import ValidationError
from deployally.model import patterns

if TYPE_CHECKING:
    import jsonschema  # imported when a file is checked: the render worker never needs it

# Far above any real template or definition, far below what would exhaust memory.
MAX_FIELDS = 20_000
# The deepest built-in template nests 6 levels; every step that walks a file (the YAML
# composer, the schema validator, the renderer) recurses once or more per level, so a
# bound far below Python's recursion limit (1000 frames) keeps each of them safe.
MAX_DEPTH = 32
# The largest built-in template is 2 KB. Without libyaml the YAML parser is pure Python
# (about 15 µs a character on a 2-core machine), so a file at this bound still parses in seconds.
MAX_CHARS = 256_000

FieldPath = tuple[str | int, ...]
LineIndex = Mapping[FieldPath, int]


class _TooDeep(Exception):
    def __init__(self, line: int) -> None:
        self.line = line


class _DepthBound(yaml.composer.Composer):
    """The composer, refusing to descend past MAX_DEPTH (it recurses once per level)."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH + 1:  # + 1: the scalar at the bottom is a node too
                raise _TooDeep(self.peek_event().start_mark.line + 1)  # type: ignore[attr-defined]
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _BoundedLoader(_DepthBound, yaml.SafeLoader):
    """The safe loader in pure Python: the exact error messages (and where libyaml is missing)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)


if getattr(yaml, "__with_libyaml__", False):
    from yaml._yaml import CParser

    class _FastLoader(_DepthBound, CParser, SafeConstructor, Resolver):
        """libyaml's scanner and parser (several times faster) under the same bounded composer,
        constructor and resolver as the safe loader."""

        def __init__(self, text: str) -> None:
            CParser.__init__(self, text)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
            yaml.composer.Composer.__init__(self)

    _Loader: Callable[[str], Any] = _FastLoader
else:
    _Loader = _BoundedLoader


def load_yaml(path: str, text: str) -> tuple[dict[str, Any], LineIndex]:
    """Parse one YAML mapping into JSON-safe data plus the line of every field; raise ValidationError."""
    if len(text) > MAX_CHARS:
        raise ValidationError(
            path, "", f"{len(text):,} characters, more than the {MAX_CHARS:,} a file may hold; split it"
        )
    try:
        data, lines = _load(path, text, _Loader)
    except yaml.YAMLError:
        # libyaml words its errors differently: read the file again, in pure Python (only a
        # broken file pays), so the message and line are the same with or without libyaml.
        data, lines = _load(path, text, _BoundedLoader)
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise ValidationError(
            path, "", f"the file is {kind}; it must be a YAML mapping of fields", line=1
        )
    return _plain(data), lines


def _load(
    path: str, text: str, loader_class: Callable[[str], Any]
) -> tuple[Any, dict[FieldPath, int]]:
    """The document and the line of every field, read by `loader_class`; ValidationError for
    a file too deep or too wide, yaml.YAMLError (from libyaml) or ValidationError for bad syntax."""
    loader = loader_class(text)
    try:
        root = loader.get_single_node()
        lines: dict[FieldPath, int] = {}
        _index_lines(path, root, (), lines)
        # Built from the nodes already checked: aliases cannot deepen or widen it any more.
        data = loader.construct_document(root) if root is not None else None
    except _TooDeep as exc:
        raise ValidationError(path, "", _too_deep(), line=exc.line) from None
    except yaml.YAMLError as exc:
        if loader_class is not _BoundedLoader:
            raise
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ValidationError(
            path, "", f"invalid YAML: {problem}; fix the syntax", line=line
        ) from exc
    finally:
        loader.dispose()
    return data, lines


def lenient_value(text: str) -> Any:
    """The value of a YAML text within load_yaml's size and depth bounds, duplicate keys
    allowed; None when it cannot be read (to find a refused file's name)."""
    if len(text) > MAX_CHARS:
        return None
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except (_TooDeep, yaml.YAMLError):
        return None
    finally:
        loader.dispose()


def _too_deep() -> str:
    return f"nested more than {MAX_DEPTH} levels deep; flatten the file"


def _index_lines(
    path: str, node: yaml.Node | None, at: FieldPath, out: dict[FieldPath, int]
) -> None:
    # An alias reuses a node without nesting in the text, so depth is checked here too,
    # on the document as it will be built (a recursive alias is infinitely deep).
    if len(at) > MAX_DEPTH:
        raise ValidationError(path, field_name(at[:MAX_DEPTH]), _too_deep(),
                              line=node.start_mark.line + 1 if node is not None else None)
    # PyYAML keeps the last of two equal keys without a word; a silently ignored
    # value is exactly the kind of typo users need to hear about.
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            here = (*at, key)
            if key in seen:
                raise ValidationError(
                    path,
                    field_name(here),
                    "appears twice; keep one",
                    line=key_node.start_mark.line + 1,
                )
            seen.add(key)
            out[here] = key_node.start_mark.line + 1
            _check_size(path, out, key_node)
            _index_lines(path, value_node, here, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[(*at, i)] = item.start_mark.line + 1
            _check_size(path, out, item)
            _index_lines(path, item, (*at, i), out)


def _check_size(path: str, out: dict[FieldPath, int], node: yaml.Node) -> None:
    # Aliases can expand a few lines into billions of fields ("billion laughs").
    if len(out) > MAX_FIELDS:
        raise ValidationError(
            path,
            "",
            f"more than {MAX_FIELDS} fields (or aliases expanding to them); "
            "split the file or drop the aliases",
            line=node.start_mark.line + 1,
        )


def _plain(value: Any) -> Any:
    """JSON-safe copy: string keys, dates as ISO text (YAML turns 2024-01-01 into a date)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    return value


def field_name(parts: Iterable[str | int]) -> str:
    """Dotted field path a user can find: spec.ports[0].container_port."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def line_of(lines: LineIndex, parts: Iterable[str | int]) -> int | None:
    """Line of the field, or of its nearest parent that has one."""
    at = tuple(parts)
    while at:
        if at in lines:
            return lines[at]
        at = at[:-1]
    return None


def _pattern(
    validator: jsonschema.protocols.Validator, pattern: str, instance: Any, schema: Any
) -> Iterator[jsonschema.ValidationError]:
    """JSON Schema's `pattern`, matched by RE2: our schemas' patterns meet repository text,
    and `\\{\\{.*\\}\\}` alone would backtrack quadratically over a long string."""
    import jsonschema

    if validator.is_type(instance, "string") and not patterns.search(pattern, instance):
        yield jsonschema.ValidationError(f"{short_repr(instance)} does not match {pattern!r}")


@functools.cache
def _draft() -> type[jsonschema.protocols.Validator]:
    import jsonschema

    draft: type[jsonschema.protocols.Validator] = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
        jsonschema.Draft202012Validator, {"pattern": _pattern}
    )
    return draft


@functools.cache
def _validator(schema_file: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMAS / schema_file).read_text(encoding="utf-8"))
    validator: jsonschema.protocols.Validator = _draft()(schema)
    return validator


def schema_errors(
    schema_file: str, path: str, data: Any, lines: LineIndex
) -> list[ValidationError]:
    """Every violation of schemas/<schema_file>, each naming its dotted field and line."""
    out: list[ValidationError] = []
    seen: set[tuple[str, str]] = set()
    for err in sorted(
        _validator(schema_file).iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path]
    ):
        at: FieldPath = tuple(err.absolute_path)
        for parts, message in _explain(err, at):
            key = (field_name(parts), message)
            if key not in seen:
                seen.add(key)
                out.append(
                    ValidationError(path, field_name(parts), message, line=line_of(lines, parts))
                )
    return out


def _explain(err: jsonschema.ValidationError, at: FieldPath) -> list[tuple[FieldPath, str]]:
    schema = err.schema if isinstance(err.schema, dict) else {}
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = sorted(schema.get("properties", {}))
        out = []
        for extra in sorted(k for k in err.instance if k not in allowed):
            close = difflib.get_close_matches(extra, allowed, n=1)
            fix = f"did you mean `{close[0]}`?" if close else f"allowed here: {', '.join(allowed)}"
            out.append(((*at, extra), f"unknown field; {fix}"))
        return out or [(at, err.message)]
    if err.validator == "required":
        missing = re.match(r"'([^']+)'", err.message)
        return [((*at, missing.group(1)) if missing else at, "is required; add it")]
    if err.validator == "propertyNames":
        return [(at, f"{short_repr(err.instance)} is not an allowed key here")]
    hint = schema.get("x-hint")
    if at and at[0] == "params" and isinstance(err.instance, dict) and "secret" in err.instance:
        # A secret reference: say which part of it is wrong.
        for sub in err.context or ():
            if sub.validator != "type":
                return _explain(sub, tuple(sub.absolute_path))
    if at and at[0] == "params":
        # A param may be a password written in the wrong shape: never repeat the value.
        return [(at, f"is not valid: {hint}" if hint else "is not a valid value here")]
    if hint:
        return [(at, f"{short_repr(err.instance)} is not valid: {hint}")]
    return [(at, err.message)]


def short_repr(value: Any) -> str:
    """repr of a value for an error message, cut to 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
