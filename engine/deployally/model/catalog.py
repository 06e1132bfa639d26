"""Templates: parse and validate them (built-in and repo-local), derive ids and spec hashes, look them up."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import PurePosixPath
from types import MappingProxyType
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from deployally import identity
from deployally.data import CATALOG, walk
from deployally.errors import ValidationError, ValidationErrors
from deployally.model import patterns
from deployally.model.schema import (
    FieldPath,
    LineIndex,
    field_name,
    line_of,
    load_yaml,
    schema_errors,
    short_repr,
)
from deployally.model.settings import bounded_duration
from deployally.source.git import name_problem
from deployally.types import Taxonomy, Template, UserInput

# A built-in template's source is its path under the shipped catalog, spelt as in a repository.
BUILTIN_PREFIX = "catalog/"

INPUT_TYPES = ("string", "password", "integer", "number", "boolean", "enum", "port")

# ------------------------------------------------------------------ file and mount paths


def repo_path_problem(source: str) -> str | None:
    """Why `source` is not a safe repo-relative file path, or None when it is."""
    p = PurePosixPath(source)
    if not source or source.startswith("/") or "\\" in source or re.match(r"^[A-Za-z]:", source):
        return f"{source!r} must be a relative path inside the repository, e.g. config/nginx.conf"
    if ".." in p.parts:
        return f"{source!r} must not contain `..`; name a file inside the repository"
    return name_problem(source)


def mount_path_problem(mount: str) -> str | None:
    """Why `mount` is not an absolute container path without `..`, or None."""
    if not mount.startswith("/") or ".." in PurePosixPath(mount).parts or mount.rstrip("/") == "":
        return f"{mount!r} must be an absolute path inside the container without `..`, e.g. /etc/app.conf"
    return None


# ------------------------------------------------------------------ user inputs


def check_input_value(spec: UserInput, value: Any) -> str | None:
    """Why `value` does not fit the input (type, enum values, pattern, port range), or None."""
    kind = spec.type
    if kind in ("integer", "port") and (isinstance(value, bool) or not isinstance(value, int)):
        return f"{short_repr(value)} is not an integer"
    if kind == "port" and not 1 <= value <= 65535:
        return f"{value} is not a port; use 1..65535"
    if kind == "number" and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return f"{short_repr(value)} is not a number"
    if kind == "boolean" and not isinstance(value, bool):
        return f"{short_repr(value)} is not a boolean; write true or false"
    if kind == "string" and not isinstance(value, str):
        return f'{short_repr(value)} is not a string; quote it: "{value}"'
    if kind == "enum" and value not in spec.values:
        return f"{short_repr(value)} is not one of: {', '.join(str(v) for v in spec.values)}"
    if spec.pattern and isinstance(value, str):
        try:
            matched = patterns.fullmatch(spec.pattern, value)
        except patterns.PatternError as exc:
            return f"cannot be checked against the pattern {spec.pattern!r}: {exc}"
        if not matched:
            return f"{short_repr(value)} does not match the pattern {spec.pattern!r}"
    return None


def _user_inputs(raw: Mapping[str, Any]) -> tuple[UserInput, ...]:
    return tuple(
        UserInput(
            name=name,
            type=decl["type"],
            required=bool(decl.get("required", False)),
            default=decl.get("default"),
            values=tuple(decl.get("values", ())),
            pattern=decl.get("pattern"),
            description=decl.get("description", ""),
        )
        for name, decl in raw.items()
    )


# ------------------------------------------------------------------ templates

_JINJA = SandboxedEnvironment()
_PARAM_REF = re.compile(r"params\s*(?:\.\s*([A-Za-z_]\w*)|\[\s*['\"]([A-Za-z_]\w*)['\"]\s*\])")


def parse_template(path: str, text: str, *, builtin: bool) -> Template:
    """Parse and validate one template file; raise ValidationError (YAML) or ValidationErrors."""
    data, lines = load_yaml(path, text)
    errors = schema_errors("template.schema.json", path, data, lines)
    if errors:
        raise ValidationErrors(errors)
    spec = data["spec"]
    inputs = _user_inputs(spec.get("user_inputs", {}))
    errors = _spec_errors(path, spec, inputs, lines, builtin=builtin)
    if errors:
        raise ValidationErrors(errors)
    tax = Taxonomy(
        **{
            k: str(data["taxonomy"][k])
            for k in ("kingdom", "family", "species", "variant", "specimen")
        }
    )
    return Template(
        id=identity.template_id(tax.path),
        name=data["name"],
        description=data.get("description", ""),
        version=str(data["version"]),
        taxonomy=tax,
        deprecated=bool(data.get("deprecated", False)),
        spec=spec,
        spec_hash=identity.content_hash(spec),
        user_inputs=inputs,
        source=path,
        builtin=builtin,
    )


def _spec_errors(
    path: str,
    spec: Mapping[str, Any],
    inputs: tuple[UserInput, ...],
    lines: LineIndex,
    *,
    builtin: bool,
) -> list[ValidationError]:
    """Checks JSON Schema cannot express: cross-field rules, defaults, Jinja syntax and names."""
    found: list[tuple[FieldPath, str]] = []
    profiles = spec["profiles"]
    for profile in spec.get("profile_overrides", {}):
        if profile not in profiles:
            found.append(
                (
                    (("spec", "profile_overrides", profile)),
                    f"`{profile}` is not in spec.profiles; add it there or fix the name",
                )
            )
    for ui in inputs:
        at: FieldPath = ("spec", "user_inputs", ui.name)
        if ui.pattern is not None:
            try:
                patterns.compiled(ui.pattern)
            except patterns.PatternError as exc:
                found.append(
                    ((*at, "pattern"), f"{ui.pattern!r} is not a pattern RE2 accepts: {exc}")
                )
                continue
        if ui.type == "password" and ui.default is not None:
            found.append(
                (
                    (*at, "default"),
                    "a password input cannot have a default; definitions give {secret: NAME}",
                )
            )
        elif ui.type != "enum" and ui.values:
            found.append(
                ((*at, "values"), "only enum inputs take values; set type: enum or remove it")
            )
        elif ui.default is not None and (problem := check_input_value(ui, ui.default)):
            found.append(((*at, "default"), problem))
    bodies: list[tuple[FieldPath, Mapping[str, Any]]] = [(("spec",), spec)]
    bodies += [
        (("spec", "profile_overrides", p), o) for p, o in spec.get("profile_overrides", {}).items()
    ]
    declared = {ui.name for ui in inputs}
    for at, body in bodies:
        mounts: set[str] = set()
        for i, vol in enumerate(body.get("volumes", [])):
            if problem := mount_path_problem(vol["mount_path"]):
                found.append(((*at, "volumes", i, "mount_path"), problem))
            elif vol["mount_path"] in mounts:
                found.append(((*at, "volumes", i, "mount_path"), "is mounted twice; keep one"))
            mounts.add(vol["mount_path"])
        for i, file in enumerate(body.get("files", [])):
            if problem := mount_path_problem(file["path"]):
                found.append(((*at, "files", i, "path"), problem))
            if "source" in file and builtin:
                found.append(
                    (
                        (*at, "files", i, "source"),
                        "built-in templates carry their files inline; use content",
                    )
                )
            elif "source" in file and (problem := repo_path_problem(file["source"])):
                found.append(((*at, "files", i, "source"), problem))
        given = body.get("min_ready")
        if given is not None and not (isinstance(given, str) and "{{" in given):
            try:  # a Jinja one is checked where it is rendered, per definition
                bounded_duration(path, "min_ready", given)
            except ValidationError as exc:
                found.append(((*at, "min_ready"), exc.message))
        for key, value in body.items():
            if key in ("user_inputs", "profiles", "profile_overrides"):
                continue  # declarations, not rendered; overrides get their own pass
            for leaf_at, leaf in _string_leaves(value, (*at, key)):
                found.extend(_jinja_problems(leaf_at, leaf, declared))
    return [ValidationError(path, field_name(p), m, line=line_of(lines, p)) for p, m in found]


def _string_leaves(value: Any, at: FieldPath) -> Iterator[tuple[FieldPath, str]]:
    if isinstance(value, str):
        yield at, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _string_leaves(v, (*at, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _string_leaves(v, (*at, i))


def _jinja_problems(at: FieldPath, text: str, declared: set[str]) -> list[tuple[FieldPath, str]]:
    if "{" not in text:
        return []
    try:
        _JINJA.parse(text)
    except jinja2.TemplateSyntaxError as exc:
        return [(at, f"Jinja syntax error on line {exc.lineno} of the value: {exc.message}")]
    out = []
    for match in _PARAM_REF.finditer(text):
        name = match.group(1) or match.group(2)
        if name not in declared:
            out.append(
                (
                    at,
                    f"uses params.{name}, which spec.user_inputs does not declare; declare it or fix the name",
                )
            )
    return out


# ------------------------------------------------------------------ lookup


class Catalog:
    """An immutable set of templates, found by taxonomy path or tpl_ id."""

    def __init__(self, templates: Iterable[Template] = ()) -> None:
        by_path: dict[str, Template] = {}
        for tpl in templates:
            other = by_path.get(tpl.taxonomy.path)
            if other is not None:
                raise ValidationError(
                    tpl.source,
                    "taxonomy",
                    f"{tpl.taxonomy.path} is already the taxonomy of {other.source}; give one of them another variant or specimen",
                )
            by_path[tpl.taxonomy.path] = tpl
        self._by_path = MappingProxyType(dict(sorted(by_path.items())))
        self._by_id = MappingProxyType({t.id: t for t in by_path.values()})

    def __repr__(self) -> str:
        return f"<Catalog {len(self._by_path)} templates>"

    def __len__(self) -> int:
        return len(self._by_path)

    def resolve(self, ref: str) -> Template | None:
        """The template a definition's `template:` names: taxonomy path or tpl_ id."""
        return self._by_id.get(ref) if ref.startswith("tpl_") else self._by_path.get(ref.strip("/"))

    def by_id(self, template_id: str) -> Template | None:
        """The template with this tpl_ id."""
        return self._by_id.get(template_id)

    def all(self) -> tuple[Template, ...]:
        """Every template, sorted by taxonomy path."""
        return tuple(self._by_path.values())

    def paths(self) -> tuple[str, ...]:
        """Every taxonomy path, sorted (for "did you mean" hints)."""
        return tuple(self._by_path)

    @classmethod
    def merge(cls, builtin: Catalog, repo_templates: Iterable[Template]) -> Catalog:
        """Built-in plus repo templates; a repo template may not reuse a built-in path (no silent override)."""
        repo = sorted(repo_templates, key=lambda t: t.source)
        for tpl in repo:
            clash = builtin.resolve(tpl.taxonomy.path)
            if clash is not None:
                raise ValidationError(
                    tpl.source,
                    "taxonomy",
                    f"{tpl.taxonomy.path} is the built-in template {clash.source}; built-ins are never "
                    "overridden, so give this one another variant (e.g. variant: custom)",
                )
        return cls([*builtin.all(), *repo])


@functools.cache
def load_builtin() -> Catalog:
    """The built-in catalog shipped in the package, read once; raises if any template there is invalid."""
    files = [(path, item) for path, item in walk(CATALOG) if path.endswith(".yaml")]
    if not files:
        raise ValidationError(
            "catalog/", "", "no built-in templates found; the installation is incomplete, reinstall deployally"
        )
    templates: list[Template] = []
    errors: list[ValidationError] = []
    for path, item in files:
        source = BUILTIN_PREFIX + path
        try:
            templates.append(parse_template(source, item.read_text(encoding="utf-8"), builtin=True))
        except ValidationErrors as exc:
            errors.extend(exc.errors)
        except ValidationError as exc:
            errors.append(exc)
    if errors:
        raise ValidationErrors(errors)
    return Catalog(templates)


def load_repo_templates(files: Mapping[str, str]) -> tuple[list[Template], list[ValidationError]]:
    """Parse a repo's catalog/**.yaml texts (keyed by repo path): the valid templates and every error."""
    templates: list[Template] = []
    errors: list[ValidationError] = []
    by_path: dict[str, str] = {}
    for source in sorted(files):
        try:
            tpl = parse_template(source, files[source], builtin=False)
        except ValidationErrors as exc:
            errors.extend(exc.errors)
            continue
        except ValidationError as exc:
            errors.append(exc)
            continue
        if tpl.taxonomy.path in by_path:
            errors.append(
                ValidationError(
                    source,
                    "taxonomy",
                    f"{tpl.taxonomy.path} is already the taxonomy of {by_path[tpl.taxonomy.path]}; give one of them another variant",
                    line=None,
                )
            )
            continue
        by_path[tpl.taxonomy.path] = source
        templates.append(tpl)
    return templates, errors
