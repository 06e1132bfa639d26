"""Render: a definition plus its template becomes one concrete, frozen ContainerSpec.

Pure: no I/O. Every string leaf of the template spec goes through a sandboxed
Jinja environment; secrets appear only as placeholders, resolved at apply time.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import shlex
from collections.abc import Mapping
from secrets import token_hex
from typing import Any, NoReturn

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from deployally import identity, secrets
from deployally.errors import RenderError, ValidationError
from deployally.model.settings import bounded_duration, parse_duration, parse_memory
from deployally.types import (
    DEFAULT_MIN_READY_S,
    DEFAULT_NETWORK,
    ConfigFile,
    ContainerSpec,
    Definition,
    Healthcheck,
    PortBinding,
    SecretRef,
    SecretVersions,
    Template,
    VolumeMount,
)

# Template keys that describe the template itself and never reach Docker.
_META_KEYS = frozenset({"user_inputs", "profiles", "profile_overrides"})
# Spec fields no container carries: they gate a rollout, and are left out of its rendered hash.
_GATE_FIELDS = ("min_ready_s",)

# Where a secret placeholder may end up: an env value or a config file's content, which
# only `docker inspect` (anyone with the Docker socket, root on the host in effect) and the
# container itself see. Not the command or entrypoint: a process's arguments are in `ps` and
# /proc/*/cmdline for every user of the host, and in `docker ps`; nor labels, image, user...
_SECRET_FIELDS = re.compile(r"^spec\.env\.[^.]+$")
_SECRET_FILE_FIELDS = re.compile(r"^(spec\.)?files\[\d+\]\.(content|source)$")

# A marker the renderer put into the Jinja context: its token is random per render.
_MARKER = re.compile("\x00secret:([0-9a-f]{32})\x00")

# Bounds against a template that would exhaust memory ("{{ 'x' * 10**12 }}").
_MAX_STRING = 1_000_000
_MAX_EXPONENT = 64

_MAX_MODE = 0o777  # a config file's mode: permission bits only


class _Environment(ImmutableSandboxedEnvironment):
    """The sandbox, also refusing huge repetitions and powers."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > _MAX_EXPONENT:
            raise jinja2.exceptions.SecurityError(f"exponent {right} is too large")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                sized = isinstance(seq, (str, list, tuple)) and isinstance(times, int)
                if sized and len(seq) * times > _MAX_STRING:
                    raise jinja2.exceptions.SecurityError("repetition result is too large")
        return super().call_binop(context, operator, left, right)


# keep_trailing_newline so a config file renders byte-for-byte as written.
_ENV = _Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)


@functools.lru_cache(maxsize=8192)
def _compile(source: str) -> jinja2.Template:
    # A sync renders many definitions from few templates: compile each text once.
    return _ENV.from_string(source)


def render(
    definition: Definition,
    template: Template,
    *,
    repo_files: Mapping[str, str],
    secret_versions: SecretVersions | Mapping[str, int],
    network: str = DEFAULT_NETWORK,
    publish_address: str | None = None,
    min_ready_s: float = DEFAULT_MIN_READY_S,
) -> ContainerSpec:
    """Render `definition` with `template` into a ContainerSpec with its rendered_hash.

    Published ports listen on `publish_address` (engine.yaml's; None: every interface).
    `min_ready_s` is deployally.yaml's: the template's min_ready beats it, the definition's both.
    `secret_versions`: what the store holds (a plain mapping: the current versions).
    Raises RenderError naming the definition file and the dotted field at fault.
    """
    available = (
        secret_versions
        if isinstance(secret_versions, SecretVersions)
        else SecretVersions(current=secret_versions)
    )
    versions = _secret_versions(definition, available)
    renderer = _Renderer(definition, template)
    spec = renderer.tree(_spec_for_profile(template.spec, definition.profile), "spec")
    files = _config_files(renderer, definition, template, spec, repo_files)

    fields = _Fields(renderer)
    healthcheck = fields.healthcheck(spec.get("healthcheck"))
    resources = spec.get("resources") or {}
    grace = spec.get("stop_grace_period")
    used = renderer.used
    built = ContainerSpec(
        name=definition.name,
        definition_id=definition.id,
        template_id=template.id,
        image=fields.image(spec.get("image")),
        command=fields.argv(spec.get("command"), "spec.command"),
        entrypoint=fields.argv(spec.get("entrypoint"), "spec.entrypoint"),
        user=fields.optional_str(spec.get("user")),
        working_dir=fields.optional_str(spec.get("working_dir")),
        env=fields.pairs(spec.get("env"), "spec.env"),
        labels=fields.pairs(spec.get("labels"), "spec.labels"),
        ports=fields.ports(spec.get("ports"), definition.publish, publish_address),
        volumes=fields.volumes(spec.get("volumes"), definition.name),
        files=files,
        restart=str(spec.get("restart") or "unless-stopped"),
        memory_bytes=(
            fields.memory(resources["memory"], "spec.resources.memory")
            if resources.get("memory") is not None
            else None
        ),
        cpus=(
            fields.number(resources["cpus"], "spec.resources.cpus")
            if resources.get("cpus") is not None
            else None
        ),
        healthcheck=healthcheck,
        stop_signal=fields.optional_str(spec.get("stop_signal")),
        stop_grace_s=(
            fields.duration(grace, "spec.stop_grace_period") if grace is not None else None
        ),
        network=network,
        depends_on=tuple(definition.depends_on),
        secrets=tuple(sorted((name, versions[name]) for name in used)),
        server=definition.server,
        prune_volumes=definition.prune_volumes,
        replicas=definition.replicas,
        min_ready_s=(
            definition.min_ready_s
            if definition.min_ready_s is not None
            else fields.min_ready(spec.get("min_ready"), min_ready_s)
        ),
    )
    return dataclasses.replace(built, rendered_hash=rendered_hash(built))


def rendered_hash(spec: ContainerSpec) -> str:
    """The hash over everything that reaches Docker; covers secret versions, never values."""
    fields = dataclasses.asdict(dataclasses.replace(spec, rendered_hash=""))
    for name in _GATE_FIELDS:
        del fields[name]
    for port in fields["ports"]:
        # host_ip came after 0.5: a port that is not published hashes as before, so the
        # upgrade redeploys only containers whose published ports change address.
        if port["host_ip"] is None:
            del port["host_ip"]
    if fields["replicas"] == 1:
        del fields["replicas"]  # came after 0.5 too: one replica hashes as before
    return identity.content_hash(fields)


def volume_name(definition_name: str, mount_path: str, explicit: str | None = None) -> str:
    """`<definition>_<slug>`: slug of the explicit name, else of the mount path."""
    slug = re.sub(r"[^a-z0-9]+", "_", (explicit or mount_path).lower()).strip("_")
    return f"{definition_name}_{slug or 'data'}"


# ---------------------------------------------------------------- profile merge


def _spec_for_profile(spec: Mapping[str, Any], profile: str) -> dict[str, Any]:
    overrides = (spec.get("profile_overrides") or {}).get(profile) or {}
    base = {k: v for k, v in spec.items() if k not in _META_KEYS}
    return _merge(base, overrides)


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Dicts merge deeply; lists and scalars in `override` replace."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


# ---------------------------------------------------------------- Jinja


def _secret_versions(definition: Definition, available: SecretVersions) -> dict[str, int]:
    """The version each referenced secret renders with; a RenderError when one is missing."""
    out: dict[str, int] = {}
    where: dict[str, str] = {}
    for key, value in definition.params.items():
        if not isinstance(value, SecretRef):
            continue
        version = available.version_of(value)
        if version is None and value.version is not None:
            raise RenderError(
                definition.path,
                f"params.{key}.version",
                secrets.missing_version(definition.name, value.name, value.version, available.kept),
            )
        if version is None:
            raise RenderError(
                definition.path,
                f"params.{key}",
                f"secret {value.name!r} is not set; run: deployally secret set {value.name}",
            )
        if out.get(value.name, version) != version:
            # One placeholder per name: it cannot stand for two values.
            raise RenderError(
                definition.path,
                f"params.{key}",
                f"secret {value.name!r} is used at two versions (see params.{where[value.name]}); "
                "pin both references to the same one",
            )
        out[value.name] = version
        where[value.name] = key
    return out


class _Renderer:
    """Renders strings for one definition and records where secrets landed.

    A secret reference enters the Jinja context as a marker carrying a random token
    known only to this render; a rendered string may hold such markers unchanged and
    no other NUL byte. Only then do the markers become placeholders, so no param,
    template text or config file can spell one, nor name a secret the definition
    does not reference.
    """

    def __init__(self, definition: Definition, template: Template) -> None:
        self.definition = definition
        self.template = template
        self._tokens: dict[str, str] = {}  # per-render token -> secret name
        self.context = {
            "params": self._context_value(definition.params),
            "profile": definition.profile,
            "definition": {"name": definition.name, "id": definition.id},
            "server": {"name": definition.server},
        }
        self.used: set[str] = set()  # the secrets whose placeholders landed in the spec

    def _context_value(self, value: Any) -> Any:
        if isinstance(value, SecretRef):
            token = next((t for t, n in self._tokens.items() if n == value.name), None)
            if token is None:
                token = token_hex(16)
                self._tokens[token] = value.name
            return f"\x00secret:{token}\x00"
        if isinstance(value, Mapping):
            return {k: self._context_value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._context_value(v) for v in value]
        return value

    def fail(self, field: str, message: str) -> NoReturn:
        where = f" (template {self.template.source})" if field.startswith("spec.") else ""
        for token, name in self._tokens.items():
            message = message.replace(token, name)
        raise RenderError(self.definition.path, field, secrets.display(message) + where)

    def text(self, source: str, field: str) -> str:
        """Render one string; a secret placeholder is checked against where it may go."""
        if "{" not in source:  # no Jinja syntax: skip the compile and the render
            out = source
        else:
            try:
                out = _compile(source).render(self.context)
            except jinja2.TemplateSyntaxError as exc:
                self.fail(field, f"template syntax error: {exc.message} (line {exc.lineno})")
            except jinja2.exceptions.SecurityError as exc:
                self.fail(field, f"refused by the template sandbox: {exc}")
            except jinja2.UndefinedError as exc:
                self.fail(field, f"{exc.message}; check the name or give it a default")
            except MemoryError:
                raise  # over the render budget (render_budget.py): not the template's own error
            except Exception as exc:  # noqa: BLE001 - a user's template must never crash a sync
                self.fail(field, f"could not render: {type(exc).__name__}: {exc}")
        if "\x00" in out or (self._tokens and any(t in out for t in self._tokens)):
            out = self._place_secrets(out, field)
        return out

    def _place_secrets(self, out: str, field: str) -> str:
        """`out` with this render's markers as placeholders; any other NUL is refused."""
        names: set[str] = set()

        def placed(match: re.Match[str]) -> str:
            name = self._tokens.get(match.group(1))
            if name is None:
                return match.group(0)  # not ours: refused just below
            names.add(name)
            return "\x01"  # a stand-in until the leftovers are checked

        leftover = _MARKER.sub(placed, out)
        if "\x00" in leftover or any(t in leftover for t in self._tokens):
            self.fail(
                field,
                "holds a NUL byte that is not a secret inserted as is: a secret was transformed "
                "by a filter (insert it unchanged), or spelled out instead of given in params "
                "as {secret: NAME}",
            )
        if not (_SECRET_FIELDS.match(field) or _SECRET_FILE_FIELDS.match(field)):
            seen = (
                "a process's arguments are in `ps` on the host for every user, and in "
                "`docker ps`: put the secret in an env value and read it there "
                '(sh -c \'... "$PASSWORD"\')'
                if re.match(r"^spec\.(command|entrypoint)\b", field)
                else "this field is visible to anyone who can run docker ps"
            )
            self.fail(field, f"secrets may only be used in env values and files content; {seen}")
        self.used |= names
        return _MARKER.sub(lambda m: secrets.placeholder(self._tokens[m.group(1)]), out)

    def tree(self, value: Any, field: str) -> Any:
        """Render every string leaf of a JSON-like value; keys are never rendered, so a NUL in one is refused."""
        if isinstance(value, str):
            return self.text(value, field)
        if isinstance(value, Mapping):
            for k in value:
                if "\x00" in str(k):
                    self.fail(field, f"the key {secrets.display(str(k))!r} holds a NUL byte")
            return {k: self.tree(v, f"{field}.{k}") for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.tree(v, f"{field}[{i}]") for i, v in enumerate(value)]
        return value


# ---------------------------------------------------------------- fields


def _config_files(
    renderer: _Renderer,
    definition: Definition,
    template: Template,
    spec: Mapping[str, Any],
    repo_files: Mapping[str, str],
) -> tuple[ConfigFile, ...]:
    by_path: dict[str, ConfigFile] = {}
    entries = [(entry, f"spec.files[{i}]") for i, entry in enumerate(spec.get("files") or [])]
    # Definition files are rendered here (the spec's were rendered with the tree).
    for i, raw in enumerate(definition.files):
        field = f"files[{i}]"
        rendered = {
            k: renderer.text(v, f"{field}.{k}") if isinstance(v, str) and k != "source" else v
            for k, v in raw.items()
        }
        entries.append((rendered, field))
    for entry, field in entries:
        mount_path = entry.get("path")
        if not isinstance(mount_path, str) or not mount_path.startswith("/"):
            renderer.fail(f"{field}.path", "give an absolute path, e.g. /etc/app.conf")
        if entry.get("source") is not None:
            source = str(entry["source"])
            if "\x00" in source or source not in repo_files:
                renderer.fail(
                    f"{field}.source",
                    f"file {source!r} is not in the repository; add it or fix the path",
                )
            content = renderer.text(repo_files[source], f"{field}.source")
        else:
            content = str(entry.get("content") or "")
        mode = _mode(entry.get("mode", 0o644), renderer, f"{field}.mode")
        by_path[mount_path] = ConfigFile(mount_path=mount_path, content=content, mode=mode)
    return tuple(by_path[p] for p in sorted(by_path))


def _mode(value: Any, renderer: _Renderer, field: str) -> int:
    # YAML reads 0644 as the int 420 but "0644" as text: accept both.
    if isinstance(value, int) and not isinstance(value, bool):
        mode = value
    else:
        try:
            mode = int(str(value), 8)
        except ValueError:
            renderer.fail(field, f'{value!r} is not a file mode; write it like "0644"')
    # The file is written on the host, owned by root: a setuid, setgid or sticky bit there
    # is a privilege the repository must not be able to hand out.
    if not 0 <= mode <= _MAX_MODE:
        renderer.fail(
            field,
            f"{oct(mode).replace('0o', '0')} is not plain permission bits: setuid, setgid and "
            'sticky bits are refused; write a mode such as 0644 or "0640" (at most 0777)',
        )
    return mode


class _Fields:
    """Converts rendered spec values to ContainerSpec fields, failing with the field name."""

    def __init__(self, renderer: _Renderer) -> None:
        self.renderer = renderer

    def image(self, value: Any) -> str:
        if isinstance(value, str) and value:
            return value
        if isinstance(value, Mapping) and value.get("repository"):
            return f"{value['repository']}:{value.get('tag') or 'latest'}"
        self.renderer.fail("spec.image", "give {repository: NAME, tag: TAG}")

    @staticmethod
    def optional_str(value: Any) -> str | None:
        return None if value is None else str(value)

    def argv(self, value: Any, field: str) -> tuple[str, ...] | None:
        if value is None:
            return None
        if isinstance(value, str):
            try:
                return tuple(shlex.split(value))
            except ValueError as exc:
                self.renderer.fail(field, f"cannot split into arguments: {exc}")
        if isinstance(value, list):
            return tuple(_scalar_text(v) for v in value)
        self.renderer.fail(field, "give a list of arguments or one command line")

    def pairs(self, value: Any, field: str) -> tuple[tuple[str, str], ...]:
        if value is None:
            return ()
        if not isinstance(value, Mapping):
            self.renderer.fail(field, "give a mapping of NAME: value")
        return tuple(sorted((str(k), _scalar_text(v)) for k, v in value.items()))

    def integer(self, value: Any, field: str) -> int:
        try:
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError(value)
            return int(float(value))
        except (TypeError, ValueError):
            self.renderer.fail(field, f"{value!r} is not a whole number")

    def number(self, value: Any, field: str) -> float:
        if not isinstance(value, bool):
            try:
                return float(value)
            except (TypeError, ValueError):
                pass
        self.renderer.fail(field, f"{value!r} is not a number")

    def duration(self, value: Any, field: str) -> float:
        # A rendered "{{ n }}" arrives as text: a bare number there still means seconds.
        if isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)?", value.strip()):
            return float(value)
        try:
            return parse_duration(value)
        except ValidationError:
            self.renderer.fail(
                field, f"{value!r} is not a duration; write it like 10s, 1m30s, 500ms"
            )

    def min_ready(self, value: Any, default: float) -> float:
        if value is None:
            return default
        seconds = self.duration(value, "spec.min_ready")
        try:
            return bounded_duration(self.renderer.definition.path, "min_ready", seconds)
        except ValidationError as exc:
            self.renderer.fail("spec.min_ready", exc.message)

    def memory(self, value: Any, field: str) -> int:
        try:
            return parse_memory(value)
        except ValidationError:
            self.renderer.fail(field, f"{value!r} is not a memory size; write it like 512m or 2g")

    def ports(
        self, value: Any, publish: tuple[tuple[int, int], ...], address: str | None
    ) -> tuple[PortBinding, ...]:
        host_for = dict(publish)
        out: list[PortBinding] = []
        for i, entry in enumerate(value or []):
            field = f"spec.ports[{i}]"
            raw = entry.get("container_port") if isinstance(entry, Mapping) else entry
            port = self.integer(raw, f"{field}.container_port")
            if not 0 < port < 65536:
                self.renderer.fail(f"{field}.container_port", f"{port} is not a port (1-65535)")
            protocol = str(entry.get("protocol", "tcp")) if isinstance(entry, Mapping) else "tcp"
            host = host_for.pop(port, None)
            out.append(PortBinding(port, protocol, host, address if host is not None else None))
        # A publish for a port the template does not list is still what the user asked for.
        out.extend(
            PortBinding(port, "tcp", host, address) for port, host in sorted(host_for.items())
        )
        return tuple(out)

    def volumes(self, value: Any, definition_name: str) -> tuple[VolumeMount, ...]:
        out: list[VolumeMount] = []
        for i, entry in enumerate(value or []):
            mount_path = entry.get("mount_path") if isinstance(entry, Mapping) else entry
            if not isinstance(mount_path, str) or not mount_path.startswith("/"):
                self.renderer.fail(f"spec.volumes[{i}].mount_path", "give an absolute path")
            explicit = entry.get("name") if isinstance(entry, Mapping) else None
            out.append(VolumeMount(volume_name(definition_name, mount_path, explicit), mount_path))
        return tuple(out)

    def healthcheck(self, value: Any) -> Healthcheck | None:
        if value is None:
            return None
        if not isinstance(value, Mapping) or value.get("test") is None:
            self.renderer.fail("spec.healthcheck.test", "give a test, e.g. [CMD, pg_isready]")
        test = value["test"]
        argv = (
            ("CMD-SHELL", test) if isinstance(test, str) else tuple(_scalar_text(t) for t in test)
        )
        defaults = Healthcheck(test=argv)
        return Healthcheck(
            test=argv,
            interval_s=self._duration_or(value, "interval", defaults.interval_s),
            timeout_s=self._duration_or(value, "timeout", defaults.timeout_s),
            retries=(
                self.integer(value["retries"], "spec.healthcheck.retries")
                if value.get("retries") is not None
                else defaults.retries
            ),
            start_period_s=self._duration_or(value, "start_period", defaults.start_period_s),
        )

    def _duration_or(self, value: Mapping[str, Any], key: str, default: float) -> float:
        raw = value.get(key)
        return default if raw is None else self.duration(raw, f"spec.healthcheck.{key}")


def _scalar_text(value: Any) -> str:
    # Docker and shells spell booleans in lower case; YAML gives Python's True.
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)
