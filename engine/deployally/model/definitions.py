"""Definitions: parse and validate definitions/<name>.yaml, check params against the template, write them back."""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

import yaml

from deployally import identity
from deployally import secrets as secrets_mod
from deployally.errors import ValidationError, ValidationErrors
from deployally.model.catalog import (
    Catalog,
    check_input_value,
    mount_path_problem,
    repo_path_problem,
)
from deployally.model.schema import (
    FieldPath,
    LineIndex,
    field_name,
    line_of,
    load_yaml,
    schema_errors,
    short_repr,
)
from deployally.model.settings import Settings, bounded_duration
from deployally.types import (
    HOST_NETWORK,
    MAX_NUMBER,
    ContainerSpec,
    Definition,
    SecretRef,
    Template,
)

# Also the container name, so Docker's rules hold before Docker sees it: [a-zA-Z0-9] then
# [a-zA-Z0-9_.-], at least 2 characters. Lowercase and at most 63 (a DNS label: containers
# reach each other by name), and no "../x" or "a/b" path tricks.
NAME_RE = r"^[a-z0-9][a-z0-9_.-]{1,62}$"
_NAME = re.compile(NAME_RE)
NAME_RULE = "2-63 characters of a-z 0-9 _ . -, starting with a letter or digit (Docker needs at least 2)"
# An update renames the running container `<name>.old` until its replacement is ready.
OLD_SUFFIX = ".old"


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a definition (and its container), or None."""
    if not _NAME.fullmatch(name):
        return f"{name!r} is not a valid name: use {NAME_RULE}"
    if name.endswith(OLD_SUFFIX):
        return (
            f"{name!r} ends in {OLD_SUFFIX}, the name an update gives the old container of "
            f"{name.removesuffix(OLD_SUFFIX)!r}; choose another name"
        )
    return None

# The order a definition file is written in, so commits made by the API diff cleanly.
FIELD_ORDER = (
    "name",
    "template",
    "server",
    "profile",
    "params",
    "depends_on",
    "publish",
    "replicas",
    "prune_volumes",
    "min_ready",
    "files",
)


def parse_definition(
    path: str, text: str, catalog: Catalog, *, defaults: Settings | None = None
) -> Definition:
    """Parse and validate one definition file against its template; raise ValidationError (YAML) or ValidationErrors."""
    settings = defaults or Settings()
    data, lines = load_yaml(path, text)
    errors = schema_errors("definition.schema.json", path, data, lines)
    # Fields the schema rejected are not checked further: their shape is unknown.
    bad = {re.split(r"[.\[]", e.field)[0] for e in errors}
    bad_params = {e.field.split(".")[1] for e in errors if e.field.startswith("params.")}
    bad -= {"params"} if bad_params else set()
    problems: list[tuple[FieldPath, str]] = []

    name = data.get("name") if "name" not in bad else None
    if isinstance(name, str) and (problem := name_problem(name)):
        problems.append((("name",), problem))
    server = data.get("server", settings.default_server)
    profile = data.get("profile", settings.default_profile)
    template = _resolve_template(data, catalog, problems) if "template" not in bad else None
    if template is not None and "profile" not in bad and profile not in template.spec["profiles"]:
        choices = ", ".join(template.spec["profiles"])
        problems.append(
            (
                ("profile",),
                f"`{profile}` is not a profile of {template.taxonomy.path}; use one of: {choices}",
            )
        )

    params: dict[str, Any] = {}
    if template is not None and "params" not in bad:
        given = {k: v for k, v in (data.get("params") or {}).items() if k not in bad_params}
        params = _check_params(given, template, problems, skip=bad_params)

    depends_on = tuple(data.get("depends_on", ())) if "depends_on" not in bad else ()
    for i, dep in enumerate(depends_on):
        if not _NAME.fullmatch(dep):
            problems.append((("depends_on", i), f"{dep!r} is not a definition name"))
        elif dep == name:
            problems.append((("depends_on", i), "a definition cannot depend on itself; remove it"))

    publish: tuple[tuple[int, int], ...] = ()
    if "publish" not in bad:
        publish = tuple(sorted((int(c), int(h)) for c, h in (data.get("publish") or {}).items()))
        hosts: dict[int, int] = {}
        for container_port, host_port in publish:
            if container_port < 1 or container_port > 65535:
                problems.append(
                    (
                        ("publish", str(container_port)),
                        f"{container_port} is not a port; use 1..65535",
                    )
                )
            if host_port in hosts:
                problems.append(
                    (
                        (("publish", str(container_port))),
                        f"host port {host_port} is already published for {hosts[host_port]}; pick another",
                    )
                )
            hosts[host_port] = container_port

    files = tuple(data.get("files", ())) if "files" not in bad else ()
    for i, file in enumerate(files):
        if problem := mount_path_problem(file["path"]):
            problems.append((("files", i, "path"), problem))
        if "source" in file and (problem := repo_path_problem(file["source"])):
            problems.append((("files", i, "source"), problem))

    min_ready: float | None = None
    if "min_ready" in data and "min_ready" not in bad:
        try:
            min_ready = bounded_duration(path, "min_ready", data["min_ready"])
        except ValidationError as exc:
            problems.append((("min_ready",), exc.message))

    errors += _located(path, problems, lines)
    if errors:
        raise ValidationErrors(errors)
    assert template is not None and isinstance(name, str)  # both checked above
    return Definition(
        id=identity.definition_id(name),
        name=name,
        path=path,
        template=data["template"],
        template_id=template.id,
        server=server,
        profile=profile,
        params=params,
        depends_on=depends_on,
        publish=publish,
        replicas=int(data.get("replicas", 1)) if "replicas" not in bad else 1,
        prune_volumes=bool(data.get("prune_volumes", False)),
        files=files,
        min_ready_s=min_ready,
    )


def _located(
    path: str, problems: list[tuple[FieldPath, str]], lines: LineIndex
) -> list[ValidationError]:
    return [ValidationError(path, field_name(p), m, line=line_of(lines, p)) for p, m in problems]


def _resolve_template(
    data: Mapping[str, Any], catalog: Catalog, problems: list[tuple[FieldPath, str]]
) -> Template | None:
    ref = data["template"]
    template = catalog.resolve(ref)
    if template is None:
        close = difflib.get_close_matches(ref, catalog.paths(), n=1)
        hint = f"did you mean `{close[0]}`? " if close else ""
        problems.append(
            (
                ("template",),
                f"no template `{ref}`; {hint}run `deployally templates list` to see them",
            )
        )
    return template


def _check_params(
    given: Mapping[str, Any],
    template: Template,
    problems: list[tuple[FieldPath, str]],
    *,
    skip: set[str],
) -> dict[str, Any]:
    """Params with defaults applied and secrets as SecretRef; every problem appended to `problems`."""
    declared = {ui.name: ui for ui in template.user_inputs if ui.name not in skip}
    for key in given:
        if key not in declared:
            close = difflib.get_close_matches(key, list(declared), n=1)
            hint = (
                f"did you mean `{close[0]}`?"
                if close
                else f"{template.taxonomy.path} takes: {', '.join(declared) or 'none'}"
            )
            problems.append((("params", key), f"unknown param; {hint}"))
    out: dict[str, Any] = {}
    for name, ui in declared.items():
        at: FieldPath = ("params", name)
        value = given.get(name)
        if isinstance(value, dict):  # the schema allows no other mapping than {secret: NAME}
            version = value.get("version")
            if version is not None and (
                isinstance(version, bool) or not isinstance(version, int)
                or not 1 <= version <= MAX_NUMBER
            ):
                # The schema says so too; this is what keeps it out of the store's INTEGERs.
                why = (f"{short_repr(version)} is not a version: "
                       f"use a number from 1 to {MAX_NUMBER} (2^63-1)")
                problems.append((("params", name, "version"), why))
                continue
            out[name] = SecretRef(value["secret"], version)
        elif value is None:
            if ui.required and ui.default is None:
                how = f"{{secret: {name}}}" if ui.type == "password" else "a value"
                problems.append(
                    (
                        at,
                        f"is required by {template.taxonomy.path}; add `{name}: {how}` under params",
                    )
                )
            # Optional inputs are always present, so templates can test them under StrictUndefined.
            out[name] = ui.default
        elif ui.type == "password":
            secret = _secret_name(template, name)
            fix = f"write `{name}: {{secret: {secret}}}` and run `deployally secret set {secret}`"
            problems.append((at, f"a password is never written in git; {fix}"))
        elif isinstance(value, str) and "\x00" in value:
            # Nothing a container takes holds a NUL; refusing it here names the param.
            problems.append((at, "holds a NUL byte; remove it (a secret is given as {secret: NAME})"))
        elif problem := check_input_value(ui, value):
            problems.append((at, problem))
        else:
            out[name] = value
    return out


def _secret_name(template: Template, param: str) -> str:
    # mysql + root_password -> mysql_root: short, and what the docs show.
    stem = param.removesuffix("_password").removesuffix("password").strip("_")
    return f"{template.taxonomy.species}_{stem}" if stem else template.taxonomy.species


def check_unique(defs: Iterable[Definition]) -> list[ValidationError]:
    """An error for every file whose name another file uses too: none of them wins, so a new
    file can never take over the container an existing one runs."""
    holders: dict[str, list[str]] = {}
    for d in defs:
        holders.setdefault(d.name, []).append(d.path)
    errors = []
    for name, paths in sorted(holders.items()):
        for path in sorted(paths) if len(paths) > 1 else ():
            others = ", ".join(p for p in sorted(paths) if p != path)
            errors.append(
                ValidationError(
                    path, "name", f"`{name}` is also the name in {others}; names are unique, rename one of them"
                )
            )
    return errors


def check_servers(defs: Iterable[Definition], known: Collection[str]) -> list[ValidationError]:
    """An error for every definition whose server is not one of `known` (names and srv_ ids)."""
    names = ", ".join(sorted(k for k in known if not k.startswith("srv_"))) or "none"
    return [
        ValidationError(
            d.path,
            "server",
            f"no server `{d.server}`; register it (POST /api/v1/servers) or use one of: {names}",
        )
        for d in sorted(defs, key=lambda d: d.path)
        if d.server not in known
    ]


def check_replicas(defs: Iterable[Definition], replicated: Collection[str]) -> list[ValidationError]:
    """An error for every definition asking for replicas other than 1 on a server that runs one
    container per definition: any server but those in `replicated` (swarm names and srv_ ids)."""
    return [
        ValidationError(
            d.path,
            "replicas",
            f"server `{d.server}` runs exactly one container per definition, so replicas: "
            f"{d.replicas} needs a swarm server; set replicas: 1 or name a swarm server",
        )
        for d in sorted(defs, key=lambda d: d.path)
        if d.replicas != 1 and d.server not in replicated
    ]


def swarm_refusals(
    path: str, spec: ContainerSpec, params: Mapping[str, Any] | None = None
) -> list[ValidationError]:
    """What a swarm server cannot run of a definition's rendered spec, as errors of its file
    (`params`: the definition's, to name the param a refused secret comes from)."""
    out = []
    # A service's spec (env, command, healthcheck) is readable by whoever may inspect services
    # and kept in its PreviousSpec: a secret there would outlive its rotation in plain text.
    exposed = [f"env {k}" for k, v in spec.env if secrets_mod.referenced(v)]
    runs = (spec.entrypoint or ()) + (spec.command or ()) + (spec.healthcheck.test if spec.healthcheck else ())
    exposed += ["the command"] if any(secrets_mod.referenced(c) for c in runs) else []
    if exposed:
        used = sorted({n for k, v in spec.env for n in secrets_mod.referenced(v)}
                      | {n for c in runs for n in secrets_mod.referenced(c)})
        fields = [k for k, v in sorted((params or {}).items()) if isinstance(v, SecretRef) and v.name in used]
        out.append(ValidationError(
            path, f"params.{fields[0]}" if fields else "params",
            f"secret {', '.join(used)} would be in plain text in the Swarm service's spec "
            f"({', '.join(exposed)}), kept there after a rotation; on a swarm server put a "
            "secret only in a config file (files:), which becomes a Swarm secret",
        ))
    if spec.network == HOST_NETWORK:
        out.append(ValidationError(
            path, "server",
            "network: host (deployally.yaml) is not for a swarm service: its tasks join an "
            "overlay network; name another server or another network",
        ))
    if spec.replicas > 1 and spec.volumes:
        out.append(ValidationError(
            path, "replicas",
            f"replicas: {spec.replicas} with named volumes "
            f"({', '.join(v.name for v in spec.volumes)}): the tasks would share one data "
            "directory on a node, or each have its own on different nodes; set replicas: 1 "
            "for a definition with volumes",
        ))
    return out


def unorderable(needs: Mapping[str, Collection[str]]) -> set[str]:
    """Names that can never be applied because they sit on, or wait behind, a depends_on cycle.

    `needs` maps each name to the names it waits for; names outside `needs` count as ready.
    """
    waiting = {name: {d for d in deps if d in needs and d != name} for name, deps in needs.items()}
    done: set[str] = set()
    while True:
        ready = {n for n, deps in waiting.items() if n not in done and deps <= done}
        if not ready:
            return set(waiting) - done
        done |= ready


def check_dependencies(defs: Iterable[Definition]) -> list[ValidationError]:
    """An error for every definition on or behind a depends_on cycle among `defs`."""
    by_name = {d.name: d for d in defs}
    stuck = unorderable({n: d.depends_on for n, d in by_name.items()})
    return [
        ValidationError(
            by_name[n].path,
            "depends_on",
            f"`{n}` is in or waits on a dependency cycle among {', '.join(sorted(stuck))}; "
            "remove one of those depends_on entries",
        )
        for n in sorted(stuck)
    ]


def referenced_files(definition: Definition, template: Template) -> tuple[str, ...]:
    """Repo paths of the `files[].source` a render of this definition reads (template, its profile, definition)."""
    override = template.spec.get("profile_overrides", {}).get(definition.profile, {})
    files = [*template.spec.get("files", ()), *override.get("files", ()), *definition.files]
    return tuple(sorted({f["source"] for f in files if "source" in f}))


def public_params(definition: Definition) -> dict[str, Any]:
    """Params as JSON-safe values, a secret shown as {"secret": NAME} (never a value)."""
    return {k: _public(v) for k, v in definition.params.items()}


def secret_names(params: Mapping[str, Any]) -> set[str]:
    """The secrets a definition's params reference (as SecretRef, or as stored {"secret": NAME})."""
    names = set()
    for value in params.values():
        if isinstance(value, SecretRef):
            names.add(value.name)
        elif isinstance(value, Mapping) and isinstance(value.get("secret"), str):
            names.add(value["secret"])
    return names


def pinned_secrets(params: Mapping[str, Any]) -> tuple[tuple[str, int], ...]:
    """The (secret, version) pairs a definition's params pin, sorted."""
    return tuple(sorted({
        (v.name, v.version) for v in params.values()
        if isinstance(v, SecretRef) and v.version is not None
    }))


def _public(value: Any) -> Any:
    return secret_ref_fields(value) if isinstance(value, SecretRef) else value


def secret_ref_fields(ref: SecretRef) -> dict[str, Any]:
    """A reference as a definition file writes it: {secret: NAME} or {secret: NAME, version: N}."""
    return {"secret": ref.name} if ref.version is None else {"secret": ref.name, "version": ref.version}


def definition_fields(definition: Definition) -> dict[str, Any]:
    """The fields of a definition as its file would hold them (unset optional params left out)."""
    fields: dict[str, Any] = {
        "name": definition.name,
        "template": definition.template,
        "server": definition.server,
        "profile": definition.profile,
        "params": {k: v for k, v in definition.params.items() if v is not None},
    }
    if definition.depends_on:
        fields["depends_on"] = list(definition.depends_on)
    if definition.publish:
        fields["publish"] = dict(definition.publish)
    if definition.replicas != 1:
        fields["replicas"] = definition.replicas
    if definition.prune_volumes:
        fields["prune_volumes"] = True
    if definition.min_ready_s is not None:
        seconds = definition.min_ready_s
        fields["min_ready"] = f"{seconds:.0f}s" if seconds.is_integer() else f"{seconds * 1000:.0f}ms"
    if definition.files:
        fields["files"] = [dict(f) for f in definition.files]
    return fields


def to_yaml(definition: Definition) -> str:
    """A definition file text for `definition`."""
    return dump_definition(definition_fields(definition))


class _Flow(list[Any]):
    """A list written inline: depends_on: [a, b]."""


class _FlowMap(dict[Any, Any]):
    """A mapping written inline: {secret: mysql_root}, publish: {3306: 13306}."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    _Flow, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True)
)
_Dumper.add_representer(
    _FlowMap, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v, flow_style=True)
)
_Dumper.add_representer(
    SecretRef,
    lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", secret_ref_fields(v), flow_style=True),
)


def dump_definition(fields: Mapping[str, Any]) -> str:
    """Definition file text with a stable key order (name, template, server, profile, params, ...)."""
    ordered: dict[str, Any] = {k: fields[k] for k in FIELD_ORDER if k in fields}
    ordered |= {k: fields[k] for k in sorted(fields) if k not in ordered}
    if isinstance(ordered.get("params"), Mapping):
        ordered["params"] = {
            k: _FlowMap(v) if isinstance(v, Mapping) else v
            for k, v in sorted(ordered["params"].items())
        }
    if isinstance(ordered.get("depends_on"), (list, tuple)):
        ordered["depends_on"] = _Flow(ordered["depends_on"])
    if isinstance(ordered.get("publish"), Mapping):
        ordered["publish"] = _FlowMap(
            {
                int(k): int(v)
                for k, v in sorted(ordered["publish"].items(), key=lambda kv: int(kv[0]))
            }
        )
    text: str = yaml.dump(
        ordered,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=100,
    )
    return text
