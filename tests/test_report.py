"""report: a small plan printed as text, Markdown and JSON (snapshots)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from deployally import secrets
from deployally.model.render import rendered_hash
from deployally.plan.actions import live_from_specs, plan
from deployally.plan.report import plan_json, plan_markdown, plan_text
from deployally.types import (
    Action,
    ActionKind,
    ConfigFile,
    ContainerSpec,
    FieldChange,
    InstanceState,
    Plan,
    PortBinding,
    Reason,
    ReasonKind,
)

PW = secrets.placeholder("pw")


def spec(name: str, **fields: Any) -> ContainerSpec:
    values: dict[str, Any] = {
        "name": name,
        "definition_id": f"def_{name}",
        "template_id": f"tpl_{name}",
        "image": "redis:7",
    }
    values.update(fields)
    built = ContainerSpec(**values)
    return dataclasses.replace(built, rendered_hash=rendered_hash(built))


BASE = {
    "web": spec(
        "web",
        image="nginx:1.27",
        env=(("FOO", "a"), ("PW", PW)),
        files=(ConfigFile("/etc/nginx/nginx.conf", "a\nb\n"),),
    ),
    "old_thing": spec("old_thing"),
    "x": spec("x"),
}
HEAD = {
    "web": spec(
        "web",
        image="nginx:1.27",
        env=(("FOO", "b"), ("PW", PW)),
        files=(ConfigFile("/etc/nginx/nginx.conf", "a\nb\nc\n"),),
    ),
    "redis_cache": spec("redis_cache", ports=(PortBinding(6379),), env=(("PW", PW),)),
    "x": spec("x"),
}
PLAN = plan(HEAD, live_from_specs(BASE), BASE)
NAMES = {"tpl_redis_cache": "cache/redis/standard/7"}

FILE_BEFORE = '"2 lines, sha256:911169ddaaf1"'
FILE_AFTER = '"3 lines, sha256:880553fca8fc (+1 -0 lines)"'


def test_text_snapshot() -> None:
    assert plan_text(PLAN, template_names=NAMES) == (
        "- remove  old_thing\n"
        "+ create  redis_cache (cache/redis/standard/7)\n"
        "~ update  web (2 changes)\n"
        '    env.FOO: "a" -> "b"\n'
        f"    files./etc/nginx/nginx.conf: {FILE_BEFORE} -> {FILE_AFTER}\n"
        "  unchanged  x\n"
        "Plan: 1 to create, 1 to update, 1 to remove, 1 unchanged.\n"
    )


def test_text_create_falls_back_to_image() -> None:
    assert "+ create  redis_cache (redis:7)\n" in plan_text(PLAN)


def test_text_shows_start_and_drift_reasons() -> None:
    running = spec("a")
    stopped = dataclasses.replace(live_from_specs({"a": running})["a"], state=InstanceState.EXITED)
    drifted = dataclasses.replace(stopped, state=InstanceState.RUNNING, rendered_hash="sha256:other")
    assert plan_text(plan({"a": running}, {"a": stopped}, {"a": running})) == (
        "> start   a (container is exited)\n"
        "Plan: 0 to create, 0 to update, 1 to start, 0 to remove, 0 unchanged.\n"
    )
    assert plan_text(plan({"a": running}, {"a": drifted}, {"a": running})).startswith(
        "~ update  a (container was changed outside DeployAlly)\n"
    )


def test_markdown_snapshot() -> None:
    assert plan_markdown(PLAN, template_names=NAMES) == "\n".join(
        [
            "### DeployAlly plan",
            "",
            "**Plan: 1 to create, 1 to update, 1 to remove, 1 unchanged.**",
            "",
            "| Definition | Action | Details |",
            "| --- | --- | --- |",
            "| `old_thing` | remove | definition was removed |",
            "| `redis_cache` | create | cache/redis/standard/7 |",
            "| `web` | update | 2 changes |",
            "",
            "#### `old_thing` (remove)",
            "",
            "```diff",
            "- container old_thing (redis:7)",
            "```",
            "",
            "#### `redis_cache` (create)",
            "",
            "```diff",
            '+ image: "redis:7"',
            '+ env.PW: "<secret:pw>"',
            "+ ports[0].container_port: 6379",
            '+ ports[0].protocol: "tcp"',
            '+ restart: "unless-stopped"',
            '+ network: "deployally"',
            '+ server: "local"',
            "+ prune_volumes: false",
            "+ replicas: 1",
            "```",
            "",
            "#### `web` (update)",
            "",
            "```diff",
            '- env.FOO: "a"',
            '+ env.FOO: "b"',
            f"- files./etc/nginx/nginx.conf: {FILE_BEFORE}",
            f"+ files./etc/nginx/nginx.conf: {FILE_AFTER}",
            "```",
            "",
        ]
    )


def test_markdown_without_changes() -> None:
    unchanged = plan(BASE, live_from_specs(BASE), BASE)
    text = plan_markdown(unchanged)
    assert "**Plan: 0 to create, 0 to update, 0 to remove, 3 unchanged.**" in text
    assert text.endswith("No changes.\n")


def test_markdown_fence_outlasts_backticks_in_values() -> None:
    change = FieldChange("command", ["sh", "-c", "echo ```"], ["sh"])
    action = Action(ActionKind.UPDATE, "web", HEAD["web"], None, changes=(change,))
    text = plan_markdown(Plan(actions=(action,)))
    assert "````diff\n" in text and text.endswith("\n````\n")


def test_markdown_escapes_table_cells() -> None:
    reason = Reason(ReasonKind.OPERATOR, "asked | by ops")
    action = Action(ActionKind.UPDATE, "web", HEAD["web"], None, reason=reason)
    assert "| `web` | update | asked \\| by ops |" in plan_markdown(Plan(actions=(action,)))


def test_json_snapshot() -> None:
    data = plan_json(PLAN)
    assert json.loads(json.dumps(data)) == data
    assert data["summary"] == {"create": 1, "update": 1, "start": 0, "remove": 1, "unchanged": 1}
    assert [(a["name"], a["kind"]) for a in data["actions"]] == [
        ("old_thing", "remove"),
        ("redis_cache", "create"),
        ("web", "update"),
        ("x", "unchanged"),
    ]
    web = data["actions"][2]
    assert web == {
        "name": "web",
        "kind": "update",
        "definition_id": "def_web",
        "template_id": "tpl_web",
        "image": "nginx:1.27",
        "server": "local",
        "depends_on": [],
        "rendered_hash": HEAD["web"].rendered_hash,
        "live_hash": BASE["web"].rendered_hash,
        "reason": {
            "kind": "definition",
            "summary": "changed env.FOO, files./etc/nginx/nginx.conf",
            "commit": None,
        },
        "changes": [
            {"field": "env.FOO", "before": "a", "after": "b"},
            {
                "field": "files./etc/nginx/nginx.conf",
                "before": json.loads(FILE_BEFORE),
                "after": json.loads(FILE_AFTER),
            },
        ],
    }
    assert data["actions"][0]["rendered_hash"] is None
    assert data["actions"][0]["live_hash"] == BASE["old_thing"].rendered_hash


def test_no_raw_secret_markers_or_file_contents_anywhere() -> None:
    raw = secrets.placeholder("pw")
    change = FieldChange("env.PW", raw, secrets.placeholder("pw2"))
    action = Action(ActionKind.UPDATE, "db", HEAD["web"], None, changes=(change,))
    one = Plan(actions=(action,))
    outputs = [plan_text(one), plan_markdown(one), json.dumps(plan_json(one))]
    outputs += [plan_text(PLAN), plan_markdown(PLAN), json.dumps(plan_json(PLAN))]
    for out in outputs:
        assert "\x00" not in out and "\\u0000" not in out
        assert "a\\nb\\nc" not in out and "a\nb\nc" not in out
    assert '    env.PW: "<secret:pw>" -> "<secret:pw2>"' in outputs[0]
