"""What a repository may ask of the host: refusals of what only the engine's operator may allow.

Pure: settings, a definition and its template, and the operator's allowances (engine.yaml)
in; errors out, each naming the file, the field and the engine.yaml setting that would
allow it. Validate, the pre-receive hook and every sync run the same checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from deployally.errors import ValidationError
from deployally.model.engine_config import Allowances
from deployally.model.schema import FieldPath, LineIndex, field_name, line_of, load_yaml
from deployally.model.settings import Settings
from deployally.types import HOST_NETWORK, Definition, Template

# Where Docker's API socket lives; mounting it, or a directory holding it, hands over the host.
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")

_ONLY_OPERATOR = "only the engine's operator may allow it, in engine.yaml"


def settings_refusals(
    path: str, settings: Settings, allow: Allowances, text: str | None
) -> list[ValidationError]:
    """What deployally.yaml asks that the operator has not allowed (today: `network: host`)."""
    if settings.network != HOST_NETWORK or allow.host_network:
        return []
    return [
        _error(
            path,
            ("network",),
            "`host` puts every container in the host's network namespace (any port on every "
            "interface, the host's loopback services); "
            f"{_ONLY_OPERATOR}: `allow: {{host_network: true}}`",
            _lines(path, text),
        )
    ]


def definition_refusals(
    definition: Definition, template: Template, allow: Allowances, text: str | None
) -> list[ValidationError]:
    """What a definition (and the template it runs) asks that the operator has not allowed."""
    lines = _lines(definition.path, text)
    out = []
    for container_port, host_port in definition.publish:
        if not allow.allows_host_port(host_port):
            out.append(
                _error(
                    definition.path,
                    ("publish", str(container_port)),
                    f"host port {host_port} is below 1024; {_ONLY_OPERATOR}: "
                    f"`allow: {{ports_below_1024: [{host_port}]}}` (or true for all), "
                    "or publish on a port from 1024",
                    lines,
                )
            )
    out += _template_refusals(definition, template)
    return out


def _template_refusals(definition: Definition, template: Template) -> list[ValidationError]:
    """The template fields that would give the container power over the host (all reserved)."""
    spec = template.spec
    override = (spec.get("profile_overrides") or {}).get(definition.profile) or {}

    def merged(key: str) -> Any:
        return override[key] if key in override else spec.get(key)

    found: list[tuple[str, str, str]] = []  # field, what it asks, the setting that would allow it
    if merged("privileged"):
        found.append(("spec.privileged", "a privileged container (it has the whole host)",
                      "allow: {privileged: true}"))
    if merged("cap_add"):
        caps = ", ".join(str(c) for c in merged("cap_add"))
        found.append(("spec.cap_add", f"adding capabilities ({caps})", "allow: {capabilities: [...]}"))
    if merged("devices"):
        devices = ", ".join(str(d) for d in merged("devices"))
        found.append(("spec.devices", f"host devices ({devices})", "allow: {devices: [...]}"))
    for i, volume in enumerate(merged("volumes") or []):
        host_path = volume.get("host_path") if isinstance(volume, Mapping) else None
        if host_path is None:
            continue
        field = f"spec.volumes[{i}].host_path"
        if _holds_docker_socket(str(host_path)):
            what = (
                f"mounting {host_path}, which is or holds the Docker socket (it gives a "
                "container the whole host)"
            )
            found.append((field, what, "allow: {docker_socket: true}"))
        else:
            what = f"a bind mount of the host path {host_path}"
            found.append((field, what, "allow: {host_paths: [...]}"))
    return [
        ValidationError(
            definition.path,
            field,
            f"{what} is refused: only the engine's operator could allow it, with `{setting}` in "
            "engine.yaml, a setting this version of DeployAlly reserves and does not accept "
            f"yet (template {template.source})",
        )
        for field, what, setting in found
    ]


def _holds_docker_socket(host_path: str) -> bool:
    path = "/" + host_path.strip("/")
    return any(socket == path or socket.startswith(path.rstrip("/") + "/") for socket in DOCKER_SOCKETS)


def _lines(path: str, text: str | None) -> LineIndex:
    """Line numbers of a file's fields (it parsed before, so this cannot fail)."""
    if text is None:
        return {}
    try:
        return load_yaml(path, text)[1]
    except ValidationError:
        return {}


def _error(path: str, at: FieldPath, message: str, lines: LineIndex) -> ValidationError:
    return ValidationError(path, field_name(at), message, line=line_of(lines, at))
