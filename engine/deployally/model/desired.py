"""The desired state of one repository tree: settings, catalog, definitions, rendered specs.

This is the model and render steps composed: validate and plan call it on a
whole tree; the engine calls it on just the definitions a commit changed.
Pure apart from reading the given tree.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from deployally.errors import ValidationError, ValidationErrors
from deployally.identity import content_hash
from deployally.model import catalog as catalog_mod
from deployally.model import definitions as definitions_mod
from deployally.model import render_budget
from deployally.model.engine_config import Allowances, EngineConfig
from deployally.model.host_policy import definition_refusals, settings_refusals
from deployally.model.schema import lenient_value
from deployally.model.settings import Settings, parse_settings
from deployally.source.tree import Tree
from deployally.types import ContainerSpec, Definition, SecretVersions, Template, Unreadable

SETTINGS_PATH = "deployally.yaml"
DEFINITIONS_DIR = "definitions/"
CATALOG_DIR = "catalog/"


@dataclass(frozen=True)
class DesiredDefinition:
    """One definition that validated and rendered, with what its revision hash covers."""

    definition: Definition
    template: Template
    spec: ContainerSpec
    depends_files: tuple[str, ...]
    desired_hash: str  # file text + template spec_hash + config file texts


@dataclass(frozen=True)
class DesiredState:
    settings: Settings
    catalog: catalog_mod.Catalog
    ok: Mapping[str, DesiredDefinition]  # by definition name
    invalid: Mapping[str, tuple[ValidationError, ...]]  # by file path
    invalid_names: Mapping[str, str]  # file path -> name, where the name could be read
    errors: tuple[ValidationError, ...] = field(default=())  # settings/catalog-wide errors
    files: frozenset[str] = frozenset()  # the definition files that exist among those loaded

    def all_errors(self) -> list[ValidationError]:
        """Every error, tree-wide ones first, then per file in path order."""
        out = list(self.errors)
        for path in sorted(self.invalid):
            out.extend(self.invalid[path])
        return out

    def specs(self) -> dict[str, ContainerSpec]:
        return {name: d.spec for name, d in self.ok.items()}


def definition_paths(tree: Tree) -> list[str]:
    """Paths of the definition files in a tree."""
    return [p for p in tree.list(DEFINITIONS_DIR) if p.endswith((".yaml", ".yml"))]


def servers_named(tree: Tree) -> dict[str, str]:
    """Each definition in `tree` (by name, else its file's stem) and the server it names, the
    settings' default when it names none; read leniently, so a file that does not validate
    yet counts too."""
    default = load_settings(tree)[0].default_server
    out: dict[str, str] = {}
    for path, text in _split(tree.read_many(definition_paths(tree)))[0].items():
        data = lenient_value(text)
        if not isinstance(data, dict):
            continue
        server = data.get("server", default)
        name = _name_of(text) or path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        if isinstance(server, str):
            out[name] = server
    return out


def load_settings(
    tree: Tree, allow: Allowances | None = None
) -> tuple[Settings, list[ValidationError]]:
    """The repository settings, or defaults with the error when the file is broken; with
    `allow`, also an error for what they ask that the engine's operator has not allowed."""
    text = tree.read_many([SETTINGS_PATH]).get(SETTINGS_PATH)
    if isinstance(text, Unreadable):
        return parse_settings(SETTINGS_PATH, None), [unreadable_error(text)]
    try:
        settings = parse_settings(SETTINGS_PATH, text)
    except ValidationErrors as exc:
        return parse_settings(SETTINGS_PATH, None), list(exc.errors)
    except ValidationError as exc:
        return parse_settings(SETTINGS_PATH, None), [exc]
    refused = [] if allow is None else settings_refusals(SETTINGS_PATH, settings, allow, text)
    return settings, refused


def load_catalog(tree: Tree) -> tuple[catalog_mod.Catalog, list[ValidationError]]:
    """Built-in templates plus the repository's own `catalog/`."""
    builtin = catalog_mod.load_builtin()
    paths = [p for p in tree.list(CATALOG_DIR) if p.endswith((".yaml", ".yml"))]
    if not paths:
        return builtin, []
    texts, unreadable = _split(tree.read_many(paths))
    templates, errors = catalog_mod.load_repo_templates(texts)
    errors = [unreadable_error(u) for u in unreadable.values()] + errors
    try:
        return catalog_mod.Catalog.merge(builtin, templates), list(errors)
    except ValidationErrors as exc:
        return builtin, list(errors) + list(exc.errors)
    except ValidationError as exc:
        return builtin, list(errors) + [exc]


def load(
    tree: Tree,
    *,
    secret_versions: SecretVersions | Mapping[str, int],
    only: Collection[str] | None = None,
    engine: EngineConfig | None = None,
    servers: Collection[str] | None = None,
    replicated: Collection[str] | None = None,
) -> DesiredState:
    """Validate and render the definitions of `tree` (all, or only the paths in `only`),
    within what the engine's operator allows (`engine`; None: the defaults, which allow least);
    with `servers` (names and srv_ ids), a definition on any other server is an error; with
    `replicated` too (the swarm servers' names and ids), replicas other than 1 on any other."""
    engine = engine or EngineConfig()
    settings, errors = load_settings(tree, engine.allow)
    catalog, catalog_errors = load_catalog(tree)
    errors += catalog_errors
    if any(not t.builtin for t in catalog.all()):
        render_budget.shared().prestart()  # the worker starts while the files are parsed
    paths = definition_paths(tree) if only is None else sorted(only)
    texts, unreadable = _split(tree.read_many(paths))

    parsed: dict[str, Definition] = {}
    # A file that cannot be read has no name either: it holds back removals until fixed.
    invalid: dict[str, list[ValidationError]] = {
        p: [unreadable_error(u)] for p, u in unreadable.items()
    }
    invalid_names: dict[str, str] = {}
    for path in paths:
        if path not in texts:
            continue  # deleted: the caller knows
        try:
            parsed[path] = definitions_mod.parse_definition(
                path, texts[path], catalog, defaults=settings
            )
        except ValidationErrors as exc:
            invalid[path] = list(exc.errors)
        except ValidationError as exc:
            invalid[path] = [exc]
        if path in invalid:
            name = _name_of(texts[path])
            if name:
                invalid_names[path] = name

    tree_wide = list(definitions_mod.check_unique(parsed.values()))
    # Cycles among the files read (all of them, for validate); the deployer catches the rest.
    tree_wide += definitions_mod.check_dependencies(parsed.values())
    if servers is not None:
        tree_wide += definitions_mod.check_servers(parsed.values(), servers)
        if replicated is not None:
            known = [d for d in parsed.values() if d.server in servers]
            tree_wide += definitions_mod.check_replicas(known, replicated)
    if errors and parsed:
        # Broken settings or templates would render every definition wrongly (another
        # network, default profile): keep each one's last good spec until they are fixed.
        broken = ", ".join(sorted({e.path for e in errors}))
        tree_wide += [
            ValidationError(p, "", f"not applied while {broken} does not validate")
            for p in sorted(parsed)
        ]
    for err in tree_wide:
        invalid.setdefault(err.path, []).append(err)
        if err.path in parsed:
            invalid_names[err.path] = parsed.pop(err.path).name

    templates: dict[str, Template] = {}
    for path, definition in parsed.items():
        template = catalog.resolve(definition.template_id) or catalog.resolve(definition.template)
        assert template is not None  # parse_definition resolved it
        templates[path] = template
    # The config files every definition mounts, read at once: one read of the tree, not one
    # for each definition (5,000 mounting a file were 5,000 git processes).
    mounted = tree.read_many(sorted({
        f for path, d in parsed.items() for f in definitions_mod.referenced_files(d, templates[path])
    }))

    ok: dict[str, DesiredDefinition] = {}
    for path, definition in parsed.items():
        template = templates[path]
        refused = definition_refusals(definition, template, engine.allow, texts[path])
        if refused:
            invalid[path] = refused
            invalid_names[path] = definition.name
            continue
        needs = definitions_mod.referenced_files(definition, template)
        files, unmountable = _split({f: mounted[f] for f in needs if f in mounted})
        if unmountable:
            invalid[path] = [
                ValidationError(path, "files", f"{u.shown} cannot be mounted: {u.problem}")
                for u in unmountable.values()
            ]
            invalid_names[path] = definition.name
            continue
        try:
            spec = render_budget.shared().render(
                definition,
                template,
                repo_files=files,
                secret_versions=secret_versions,
                network=settings.network,
                publish_address=engine.publish_address,
                min_ready_s=settings.min_ready,
            )
        except ValidationErrors as exc:
            invalid[path] = list(exc.errors)
            invalid_names[path] = definition.name
            continue
        except ValidationError as exc:
            invalid[path] = [exc]
            invalid_names[path] = definition.name
            continue
        swarm_refused = (
            definitions_mod.swarm_refusals(path, spec, definition.params)
            if replicated is not None and definition.server in replicated else []
        )
        if swarm_refused:
            invalid[path] = swarm_refused
            invalid_names[path] = definition.name
            continue
        ok[definition.name] = DesiredDefinition(
            definition=definition,
            template=template,
            spec=spec,
            depends_files=tuple(needs),
            desired_hash=desired_hash(texts[path], template.spec_hash, files),
        )
    return DesiredState(
        settings=settings,
        catalog=catalog,
        ok=ok,
        invalid={p: tuple(e) for p, e in invalid.items()},
        invalid_names=invalid_names,
        errors=tuple(errors),
        files=frozenset(texts) | frozenset(unreadable),
    )


def desired_hash(file_text: str, template_spec_hash: str, files: Mapping[str, str]) -> str:
    """What a revision covers: the file, its template's spec_hash and its config files."""
    return content_hash({"file": file_text, "template": template_spec_hash, "files": dict(files)})


def unreadable_error(file: Unreadable) -> ValidationError:
    """The error for a file that cannot be read, naming it as one printable line."""
    return ValidationError(file.shown, "", file.problem)


def _split(
    read: Mapping[str, str | Unreadable],
) -> tuple[dict[str, str], dict[str, Unreadable]]:
    """Texts, and the files that could not be read as text."""
    texts = {p: t for p, t in read.items() if isinstance(t, str)}
    return texts, {p: u for p, u in read.items() if isinstance(u, Unreadable)}


def _name_of(text: str) -> str | None:
    """Best-effort `name:` of a file that did not validate, to keep its container untouched."""
    data = lenient_value(text)
    name = data.get("name") if isinstance(data, dict) else None
    return name if isinstance(name, str) and re.match(definitions_mod.NAME_RE, name) is not None else None
