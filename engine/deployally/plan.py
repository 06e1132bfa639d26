"""Plan: desired specs against live instances become ordered actions. Pure: no I/O."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import re
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from . import secrets
from .errors import ValidationError
from .types import (
    Action,
    ActionKind,
    ContainerSpec,
    FieldChange,
    LiveInstance,
    Plan,
    Reason,
    ReasonKind,
)


def plan(
    desired: Mapping[str, ContainerSpec],
    live: Mapping[str, LiveInstance],
    applied: Mapping[str, ContainerSpec],
    *,
    held: Collection[str] = frozenset(),
    reasons: Mapping[str, Reason] | None = None,
) -> Plan:
    """Compare desired specs with live instances; one action per name, sorted by name.

    `applied` is what was last applied (tells drift from a new definition); `held`
    names instances an operator stopped, which are not restarted.
    """
    actions = [
        _action(name, desired.get(name), live.get(name), applied.get(name), name in held, reasons)
        for name in sorted(set(desired) | set(live))
    ]
    return Plan(actions=tuple(actions))


def _action(
    name: str,
    want: ContainerSpec | None,
    have: LiveInstance | None,
    before: ContainerSpec | None,
    held: bool,
    reasons: Mapping[str, Reason] | None,
) -> Action:
    given = reasons.get(name) if reasons else None
    if want is None:
        reason = given or Reason(ReasonKind.REMOVED, "definition was removed")
        return Action(ActionKind.REMOVE, name, None, have, reason=reason)
    if have is None:
        if given is not None:
            reason = given
        elif before is None:
            reason = Reason(ReasonKind.NEW, "first deployment")
        else:
            reason = Reason(ReasonKind.DRIFT, "container is missing")
        return Action(ActionKind.CREATE, name, want, None, reason=reason)
    if have.rendered_hash != want.rendered_hash:
        changes = diff_specs(before, want)
        if given is not None:
            reason = given
        elif before is not None and before.rendered_hash == want.rendered_hash:
            reason = Reason(ReasonKind.DRIFT, "container was changed outside DeployAlly")
        else:
            reason = Reason(ReasonKind.DEFINITION, _changes_summary(changes), changes=changes)
        return Action(ActionKind.UPDATE, name, want, have, changes=changes, reason=reason)
    if have.status != "running" and not held:
        reason = Reason(ReasonKind.DRIFT, f"container is {have.status}")
        return Action(ActionKind.START, name, want, have, reason=reason)
    return Action(ActionKind.NOOP, name, want, have)


def _changes_summary(changes: tuple[FieldChange, ...]) -> str:
    if not changes:
        return "spec changed"
    fields = ", ".join(c.field for c in changes[:3])
    more = f" and {len(changes) - 3} more" if len(changes) > 3 else ""
    return f"changed {fields}{more}"


def live_from_specs(specs: Mapping[str, ContainerSpec]) -> dict[str, LiveInstance]:
    """Pretend `specs` run as they are, to plan one revision against another."""
    return {
        name: LiveInstance(
            container_id="",
            name=spec.name,
            definition_id=spec.definition_id,
            revision=None,
            rendered_hash=spec.rendered_hash,
            commit="",
            status="running",
            health=None,
            image=spec.image,
        )
        for name, spec in specs.items()
    }


# ---------------------------------------------------------------- diff

_FIELD_ORDER = [f.name for f in dataclasses.fields(ContainerSpec)]
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
    if spec is None:
        return {}
    out: dict[str, Any] = {}
    for name in _FIELD_ORDER:
        value = getattr(spec, name)
        if name == "rendered_hash":
            continue
        if name in ("env", "labels"):
            out.update({f"{name}.{k}": _shown(v) for k, v in value})
        elif name == "secrets":
            out.update({f"secrets.{k}": v for k, v in value})
        elif name == "files":
            for f in value:
                out[f"files.{f.mount_path}"] = _file_summary(f.content)
                out[f"files.{f.mount_path}.mode"] = f"{f.mode:04o}"
        elif name in ("ports", "volumes"):
            for i, item in enumerate(value):
                for key, v in dataclasses.asdict(item).items():
                    out[f"{name}[{i}].{key}"] = v
        elif name == "healthcheck":
            for hc_field in ("test", "interval_s", "timeout_s", "retries", "start_period_s"):
                v = getattr(value, hc_field) if value is not None else None
                out[f"healthcheck.{hc_field}"] = _shown(v)
        else:
            out[_RENAMED.get(name, name)] = _shown(value)
    return out


def _shown(value: Any) -> Any:
    if isinstance(value, str):
        return secrets.display(value)
    if isinstance(value, tuple):
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


# ---------------------------------------------------------------- order


def order(actions: Iterable[Action]) -> list[list[Action]]:
    """Waves to apply in turn: each definition after those it depends on in the same plan.

    Removes go in the first wave. A dependency cycle raises ValidationError naming it.
    """
    by_name = {a.name: a for a in actions}
    needs = {
        name: {d for d in a.desired.depends_on if d in by_name and d != name}
        if a.desired is not None and a.kind is not ActionKind.REMOVE
        else set()
        for name, a in by_name.items()
    }
    waves: list[list[Action]] = []
    done: set[str] = set()
    while len(done) < len(by_name):
        ready = sorted(n for n in by_name if n not in done and needs[n] <= done)
        if not ready:
            raise _cycle_error({n: needs[n] - done for n in by_name if n not in done})
        waves.append([by_name[n] for n in ready])
        done.update(ready)
    return waves


def _cycle_error(needs: Mapping[str, set[str]]) -> ValidationError:
    # Every remaining node waits on another remaining one: walk until a name repeats.
    start = min(needs)
    path = [start]
    while True:
        step = min(needs[path[-1]])
        if step in path:
            cycle = [*path[path.index(step) :], step]
            break
        path.append(step)
    return ValidationError(
        f"definitions/{cycle[0]}.yaml",
        "depends_on",
        f"dependency cycle: {' -> '.join(cycle)}; remove one of these depends_on entries",
    )
