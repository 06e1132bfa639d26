"""The field-level difference of two specs, for people: dotted paths, secrets and files summarised.

Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import re
from typing import Any

from deployally import secrets
from deployally.codec import spec_to_json
from deployally.types import ContainerSpec, FieldChange, Healthcheck

_FIELD_ORDER = [f.name for f in dataclasses.fields(ContainerSpec)]
_HEALTHCHECK_FIELDS = [f.name for f in dataclasses.fields(Healthcheck)]
_RENAMED = {"memory_bytes": "resources.memory_bytes", "cpus": "resources.cpus"}
_SECTION_RANK = {_RENAMED.get(name, name): i for i, name in enumerate(_FIELD_ORDER)}


def diff_specs(
    before: ContainerSpec | None, after: ContainerSpec | None
) -> tuple[FieldChange, ...]:
    """Field-level changes with dotted paths (`env.FOO`, `ports[0].host_port`), for people.

    Config files are summarised (lines, digest), never shown whole; secrets as <secret:NAME>.
    """
    old = _flatten(before)
    new = _flatten(after)
    if before is not None and after is not None:
        _summarise_file_diffs(before, after, new)
    keys = sorted(set(old) | set(new), key=_path_key)
    return tuple(
        FieldChange(key, old.get(key), new.get(key)) for key in keys if old.get(key) != new.get(key)
    )


def _path_key(path: str) -> tuple[int, list[Any]]:
    section = re.split(r"[.\[]", path, maxsplit=1)[0]
    if path.startswith("resources."):
        section = path
    natural = [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path)]
    return _SECTION_RANK.get(section, len(_SECTION_RANK)), natural


def _flatten(spec: ContainerSpec | None) -> dict[str, Any]:
    """The spec's codec form as dotted paths: `env.K`, `ports[0].host_port`, `files.<path>`."""
    if spec is None:
        return {}
    out: dict[str, Any] = {}
    for name, value in spec_to_json(spec).items():
        if name == "rendered_hash":
            continue
        if name in ("env", "labels"):
            out.update({f"{name}.{k}": _shown(v) for k, v in value})
        elif name == "secrets":
            out.update({f"secrets.{k}": v for k, v in value})
        elif name == "files":
            for f in value:
                out[f"files.{f['mount_path']}"] = _file_summary(f["content"])
                out[f"files.{f['mount_path']}.mode"] = f"{f['mode']:04o}"
        elif name in ("ports", "volumes"):
            for i, item in enumerate(value):
                for key, v in item.items():
                    out[f"{name}[{i}].{key}"] = v
        elif name == "healthcheck":
            for hc_field in _HEALTHCHECK_FIELDS:
                out[f"healthcheck.{hc_field}"] = _shown(value[hc_field] if value else None)
        else:
            out[_RENAMED.get(name, name)] = _shown(value)
    return out


def _shown(value: Any) -> Any:
    if isinstance(value, str):
        return secrets.display(value)
    if isinstance(value, list):
        return [_shown(v) for v in value]
    return value


def _file_summary(content: str) -> str:
    digest = hashlib.sha256(content.encode("utf-8")).hexdigest()[:12]
    lines = len(content.splitlines())
    return f"{lines} line{'s' if lines != 1 else ''}, sha256:{digest}"


def _summarise_file_diffs(before: ContainerSpec, after: ContainerSpec, new: dict[str, Any]) -> None:
    # Add "+added -removed lines" to a changed file's summary: enough to review, no contents.
    old_by_path = {f.mount_path: f.content for f in before.files}
    for f in after.files:
        old = old_by_path.get(f.mount_path)
        if old is None or old == f.content:
            continue
        added = removed = 0
        for line in difflib.ndiff(old.splitlines(), f.content.splitlines()):
            added += line.startswith("+ ")
            removed += line.startswith("- ")
        new[f"files.{f.mount_path}"] += f" (+{added} -{removed} lines)"
