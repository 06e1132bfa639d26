"""Plans printed for people (text, Markdown for a pull-request comment) and machines (JSON).

Secrets show as <secret:NAME>; config files only as a summary (lines, digest).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from deployally import secrets
from deployally.plan.diff import diff_specs
from deployally.types import Action, ActionKind, FieldChange, Plan, ReasonKind

_MAX_VALUE = 120
_TEXT_MARK = {
    ActionKind.CREATE: "+ create  ",
    ActionKind.UPDATE: "~ update  ",
    ActionKind.START: "> start   ",
    ActionKind.REMOVE: "- remove  ",
    ActionKind.NOOP: "  unchanged  ",
}
# Fields that only restate who the definition is; noise in a "create" listing.
_IDENTITY_FIELDS = frozenset({"name", "definition_id", "template_id"})


def summary(plan: Plan) -> str:
    """`Plan: 1 to create, 1 to update, 0 to remove, 3 unchanged.`"""
    counts = _counts(plan)
    start = f", {counts['start']} to start" if counts["start"] else ""
    return (
        f"Plan: {counts['create']} to create, {counts['update']} to update{start}, "
        f"{counts['remove']} to remove, {counts['unchanged']} unchanged."
    )


def plan_text(plan: Plan, *, template_names: Mapping[str, str] | None = None) -> str:
    """One line per definition, indented field changes under updates, then the summary.

    `template_names` maps template ids to what to show (e.g. the taxonomy path);
    without it a create shows its image.
    """
    lines: list[str] = []
    for action in plan.actions:
        lines.append(f"{_TEXT_MARK[action.kind]}{action.name}{_detail(action, template_names)}")
        if action.kind is ActionKind.UPDATE:
            lines.extend(
                f"    {c.field}: {_value(c.before)} -> {_value(c.after)}" for c in action.changes
            )
    lines.append(summary(plan))
    return "\n".join(lines) + "\n"


def plan_markdown(plan: Plan, *, template_names: Mapping[str, str] | None = None) -> str:
    """A pull-request comment: heading, summary table, a fenced diff per changed definition."""
    parts = ["### DeployAlly plan", "", f"**{summary(plan)}**", ""]
    changed = plan.changed()
    if not changed:
        parts.append("No changes.")
        return "\n".join(parts) + "\n"
    parts += ["| Definition | Action | Details |", "| --- | --- | --- |"]
    for action in changed:
        details = _detail(action, template_names).strip().removeprefix("(").removesuffix(")")
        if action.kind is ActionKind.REMOVE and action.reason:
            details = action.reason.summary
        parts.append(f"| `{action.name}` | {action.kind.value} | {_cell(details)} |")
    for action in changed:
        body = _diff_lines(action)
        if not body:
            continue
        fence = "`" * max(3, _longest_backtick_run(body) + 1)
        parts += ["", f"#### `{action.name}` ({action.kind.value})", "", f"{fence}diff"]
        parts += [*body, fence]
    return "\n".join(parts) + "\n"


def plan_json(plan: Plan) -> dict[str, Any]:
    """The plan as JSON-safe data: a summary count and one entry per action."""
    return {
        "summary": _counts(plan),
        "actions": [_action_json(a) for a in plan.actions],
    }


# ---------------------------------------------------------------- pieces


def _counts(plan: Plan) -> dict[str, int]:
    counts = {"create": 0, "update": 0, "start": 0, "remove": 0, "unchanged": 0}
    for action in plan.actions:
        counts[action.kind.value] += 1
    return counts


def _detail(action: Action, template_names: Mapping[str, str] | None) -> str:
    if action.kind is ActionKind.CREATE and action.desired is not None:
        spec = action.desired
        return f" ({(template_names or {}).get(spec.template_id, spec.image)})"
    if action.kind is ActionKind.UPDATE:
        n = len(action.changes)
        parts = [f"{n} change{'s' if n != 1 else ''}"] if n else []
        if action.reason and (action.reason.kind is not ReasonKind.DEFINITION or not n):
            parts.append(action.reason.summary)
        return f" ({'; '.join(parts)})" if parts else ""
    if action.kind is ActionKind.START and action.reason:
        return f" ({action.reason.summary})"
    return ""


def _diff_lines(action: Action) -> list[str]:
    if action.kind is ActionKind.UPDATE:
        changes = action.changes
    elif action.kind is ActionKind.CREATE:
        changes = tuple(
            c
            for c in diff_specs(None, action.desired)
            if c.field not in _IDENTITY_FIELDS and c.after not in ([], "")
        )
    elif action.kind is ActionKind.REMOVE:
        image = f" ({action.live.image})" if action.live else ""
        return [f"- container {action.name}{image}"]
    else:
        return []
    return [line for c in changes for line in _change_lines(c)]


def _change_lines(change: FieldChange) -> list[str]:
    lines = []
    if change.before is not None:
        lines.append(f"- {change.field}: {_value(change.before)}")
    if change.after is not None:
        lines.append(f"+ {change.field}: {_value(change.after)}")
    return lines


def _value(value: Any) -> str:
    if value is None:
        return "(none)"
    text = json.dumps(_json_safe(value), ensure_ascii=False)
    return text if len(text) <= _MAX_VALUE else text[: _MAX_VALUE - 1] + "…"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _longest_backtick_run(lines: list[str]) -> int:
    return max((len(m) for line in lines for m in re.findall(r"`+", line)), default=0)


def _json_safe(value: Any) -> Any:
    if isinstance(value, str):
        return secrets.display(value)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return secrets.display(str(value))


def _action_json(action: Action) -> dict[str, Any]:
    spec = action.desired
    reason = action.reason
    return {
        "name": action.name,
        "kind": action.kind.value,
        "definition_id": spec.definition_id if spec else action.live and action.live.definition_id,
        "template_id": spec.template_id if spec else None,
        "image": spec.image if spec else action.live and action.live.image,
        "server": spec.server if spec else None,
        "depends_on": list(spec.depends_on) if spec else [],
        "rendered_hash": spec.rendered_hash if spec else None,
        "live_hash": action.live.rendered_hash if action.live else None,
        "reason": (
            {"kind": reason.kind.value, "summary": reason.summary, "commit": reason.commit}
            if reason
            else None
        ),
        "changes": [
            {"field": c.field, "before": _json_safe(c.before), "after": _json_safe(c.after)}
            for c in action.changes
        ],
    }
