"""plan: desired x live -> actions, as data tables; diff paths; apply order."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from deployally import secrets
from deployally.errors import ValidationError
from deployally.model.render import rendered_hash
from deployally.plan.actions import live_from_specs, plan
from deployally.plan.diff import diff_specs
from deployally.plan.order import order
from deployally.types import (
    Action,
    ActionKind,
    ConfigFile,
    ContainerSpec,
    FieldChange,
    Healthcheck,
    InstanceSettings,
    InstanceState,
    LiveInstance,
    PortBinding,
    Reason,
    ReasonKind,
)


def spec(name: str, **fields: Any) -> ContainerSpec:
    """A rendered spec with a real rendered_hash over its fields."""
    values: dict[str, Any] = {
        "name": name,
        "definition_id": f"def_{name}",
        "template_id": "tpl_x",
        "image": "redis:7",
    }
    values.update(fields)
    built = ContainerSpec(**values)
    return dataclasses.replace(built, rendered_hash=rendered_hash(built))


def live(s: ContainerSpec, state: str = "running", hash_: str | None = None) -> LiveInstance:
    return LiveInstance(
        ref="c" * 64,
        name=s.name,
        definition_id=s.definition_id,
        revision=1,
        rendered_hash=s.rendered_hash if hash_ is None else hash_,
        commit="abc",
        state=InstanceState(state),
        health=None,
        image=s.image,
    )


A1 = spec("a")
A2 = spec("a", image="redis:7.2")

# name: (desired, live, applied, held, expected kind, expected reason)
CASES: dict[str, tuple[Any, ...]] = {
    "new": ({"a": A1}, {}, {}, (), ActionKind.CREATE, ReasonKind.NEW),
    "deleted out of band": ({"a": A1}, {}, {"a": A1}, (), ActionKind.CREATE, ReasonKind.DRIFT),
    "unchanged": ({"a": A1}, {"a": live(A1)}, {"a": A1}, (), ActionKind.NOOP, None),
    "definition changed": (
        {"a": A2},
        {"a": live(A1)},
        {"a": A1},
        (),
        ActionKind.UPDATE,
        ReasonKind.DEFINITION,
    ),
    "changed behind our back": (
        {"a": A1},
        {"a": live(A1, hash_="sha256:other")},
        {"a": A1},
        (),
        ActionKind.UPDATE,
        ReasonKind.DRIFT,
    ),
    "stopped": (
        {"a": A1},
        {"a": live(A1, "exited")},
        {"a": A1},
        (),
        ActionKind.START,
        ReasonKind.DRIFT,
    ),
    "stopped by operator": (
        {"a": A1},
        {"a": live(A1, "exited")},
        {"a": A1},
        ("a",),
        ActionKind.NOOP,
        None,
    ),
    "removed": ({}, {"a": live(A1)}, {"a": A1}, (), ActionKind.REMOVE, ReasonKind.REMOVED),
}


@pytest.mark.parametrize("case", list(CASES))
def test_plan_cases(case: str) -> None:
    desired, live_, applied, held, kind, reason = CASES[case]
    (action,) = plan(desired, live_, applied, held=frozenset(held)).actions
    assert action.name == "a"
    assert action.kind is kind
    assert (action.reason.kind if action.reason else None) is reason


def settled(s: ContainerSpec, restart: str, memory: int | None = None) -> LiveInstance:
    """`live(s)` with its settings observed (an inspect)."""
    return dataclasses.replace(live(s), settings=InstanceSettings(restart, memory, None))


# name: (live instance, unconfirmed, held, expected kind, expected changed fields)
SETTINGS_CASES: dict[str, tuple[Any, ...]] = {
    "as its spec says": (settled(A1, "unless-stopped"), False, False, ActionKind.NOOP, ()),
    "left without its restart policy by a crash": (
        live(A1), True, False, ActionKind.START, ()),
    "restart policy changed outside": (
        settled(A1, "no"), False, False, ActionKind.START, ("restart",)),
    "memory limit changed outside": (
        settled(A1, "unless-stopped", 64 * 1024**2), False, False, ActionKind.UPDATE,
        ("resources.memory_bytes",)),
    "stopped by an operator, settings changed": (
        settled(A1, "no"), True, True, ActionKind.NOOP, ()),
}


@pytest.mark.parametrize("case", list(SETTINGS_CASES))
def test_settings_and_unconfirmed_instances(case: str) -> None:
    have, unconfirmed, held, kind, fields = SETTINGS_CASES[case]
    (action,) = plan({"a": A1}, {"a": have}, {"a": A1}, held={"a"} if held else frozenset(),
                     unconfirmed={"a"} if unconfirmed else frozenset()).actions
    assert action.kind is kind
    assert tuple(c.field for c in action.changes) == fields
    if kind is not ActionKind.NOOP:
        assert action.reason is not None and action.reason.kind is ReasonKind.DRIFT


def test_a_restart_policy_drift_says_what_and_what_the_spec_says() -> None:
    (action,) = plan({"a": A1}, {"a": settled(A1, "no")}, {"a": A1}).actions
    assert action.reason is not None
    assert action.reason.summary == "changed outside DeployAlly: restart is 'no', the spec says 'unless-stopped'"


def test_stopped_reason_says_status() -> None:
    (action,) = plan({"a": A1}, {"a": live(A1, "exited")}, {"a": A1}).actions
    assert action.reason == Reason(ReasonKind.DRIFT, "container is exited")


def test_update_carries_changes_and_live() -> None:
    (action,) = plan({"a": A2}, {"a": live(A1)}, {"a": A1}).actions
    assert action.changes == (FieldChange("image", "redis:7", "redis:7.2"),)
    assert action.desired == A2
    assert action.live is not None and action.live.rendered_hash == A1.rendered_hash


def test_given_reason_wins() -> None:
    given = Reason(ReasonKind.ROLLBACK, "rolled back to revision 3", commit="abc")
    (action,) = plan({"a": A2}, {"a": live(A1)}, {"a": A1}, reasons={"a": given}).actions
    assert action.reason == given


def test_actions_sorted_and_plan_deterministic() -> None:
    desired = {"c": spec("c"), "a": spec("a"), "b": spec("b")}
    lv = {"z": live(spec("z")), "b": live(spec("b"))}
    first = plan(desired, lv, {})
    assert [a.name for a in first.actions] == ["a", "b", "c", "z"]
    assert [a.kind for a in first.actions] == [
        ActionKind.CREATE,
        ActionKind.NOOP,
        ActionKind.CREATE,
        ActionKind.REMOVE,
    ]
    assert plan(dict(reversed(desired.items())), lv, {}) == first
    assert [a.name for a in first.changed()] == ["a", "c", "z"]


def test_live_from_specs_compares_two_revisions() -> None:
    base = {"a": A1, "b": spec("b")}
    head = {"a": A2, "c": spec("c")}
    kinds = {a.name: a.kind for a in plan(head, live_from_specs(base), base).actions}
    assert kinds == {"a": ActionKind.UPDATE, "b": ActionKind.REMOVE, "c": ActionKind.CREATE}
    assert plan(base, live_from_specs(base), base).changed() == ()


# ---------------------------------------------------------------- diff


def test_diff_paths() -> None:
    before = spec(
        "web",
        env=(("A", "1"), ("B", "2")),
        labels=(("team", "x"),),
        ports=(PortBinding(80),),
        memory_bytes=100,
        healthcheck=Healthcheck(("CMD", "true")),
    )
    after = spec(
        "web",
        image="nginx:1.27",
        env=(("A", "1"), ("B", "3"), ("C", "new")),
        labels=(("team", "x"),),
        ports=(PortBinding(80, host_port=8080),),
        memory_bytes=200,
        healthcheck=None,
    )
    changes = {c.field: (c.before, c.after) for c in diff_specs(before, after)}
    assert changes == {
        "image": ("redis:7", "nginx:1.27"),
        "env.B": ("2", "3"),
        "env.C": (None, "new"),
        "ports[0].host_port": (None, 8080),
        "resources.memory_bytes": (100, 200),
        "healthcheck.test": (["CMD", "true"], None),
        "healthcheck.interval_s": (10.0, None),
        "healthcheck.timeout_s": (5.0, None),
        "healthcheck.retries": (3, None),
        "healthcheck.start_period_s": (0.0, None),
    }
    assert [c.field for c in diff_specs(before, after)][:3] == ["image", "env.B", "env.C"]


def test_diff_of_equal_specs_is_empty() -> None:
    assert diff_specs(A1, A1) == ()


def test_diff_never_reports_rendered_hash() -> None:
    assert [c.field for c in diff_specs(A1, A2)] == ["image"]


def test_diff_summarises_files_without_contents() -> None:
    before = spec("web", files=(ConfigFile("/etc/nginx/nginx.conf", "a\nb\nsecret-ish\n"),))
    after = spec("web", files=(ConfigFile("/etc/nginx/nginx.conf", "a\nc\nsecret-ish\nd\n"),))
    (change,) = diff_specs(before, after)
    assert change.field == "files./etc/nginx/nginx.conf"
    assert change.before.startswith("3 lines, sha256:")
    assert change.after.startswith("4 lines, sha256:")
    assert change.after.endswith("(+2 -1 lines)")
    assert "secret-ish" not in f"{change.before}{change.after}"


def test_diff_file_mode() -> None:
    before = spec("web", files=(ConfigFile("/etc/a", "x"),))
    after = spec("web", files=(ConfigFile("/etc/a", "x", 0o600),))
    assert diff_specs(before, after) == (FieldChange("files./etc/a.mode", "0644", "0600"),)


def test_diff_shows_secret_placeholders_readably() -> None:
    before = spec("db", env=(("PW", secrets.placeholder("old")),), secrets=(("old", 1),))
    after = spec("db", env=(("PW", secrets.placeholder("new")),), secrets=(("new", 3),))
    changes = {c.field: (c.before, c.after) for c in diff_specs(before, after)}
    assert changes == {
        "env.PW": ("<secret:old>", "<secret:new>"),
        "secrets.new": (None, 3),
        "secrets.old": (1, None),
    }


def test_diff_secret_version() -> None:
    before = spec("db", secrets=(("pw", 1),))
    after = spec("db", secrets=(("pw", 2),))
    assert diff_specs(before, after) == (FieldChange("secrets.pw", 1, 2),)


def test_diff_from_nothing_lists_fields() -> None:
    fields = [c.field for c in diff_specs(None, A1)]
    assert fields[:4] == ["name", "definition_id", "template_id", "image"]


# ---------------------------------------------------------------- order


def create(name: str, *deps: str) -> Action:
    return Action(ActionKind.CREATE, name, spec(name, depends_on=deps), None)


def names(waves: list[list[Action]]) -> list[list[str]]:
    return [[a.name for a in wave] for wave in waves]


def test_order_waves_follow_depends_on() -> None:
    actions = [
        create("web", "api"),
        create("api", "db", "cache"),
        create("db"),
        create("cache"),
        create("worker", "db"),
    ]
    assert names(order(actions)) == [["cache", "db"], ["api", "worker"], ["web"]]


def test_order_of_a_long_chain_and_a_wide_fan_is_one_wave_a_step() -> None:
    """5,000 actions: a chain of 2,500, each after the one before, and 2,500 after its first."""
    chain = [create(f"c{i:04d}", *([f"c{i - 1:04d}"] if i else [])) for i in range(2500)]
    fan = [create(f"f{i:04d}", "c0000") for i in range(2500)]
    waves = names(order([*reversed(chain), *fan]))
    assert len(waves) == 2500
    assert waves[0] == ["c0000"]
    assert waves[1] == ["c0001", *(f"f{i:04d}" for i in range(2500))]
    assert all(wave == [f"c{i:04d}"] for i, wave in enumerate(waves[2:], start=2))


def test_order_ignores_dependencies_outside_the_plan() -> None:
    assert names(order([create("web", "db")])) == [["web"]]


def test_removes_go_first() -> None:
    removal = Action(ActionKind.REMOVE, "old", None, live(spec("old")))
    assert names(order([create("web", "db"), create("db"), removal])) == [
        ["db", "old"],
        ["web"],
    ]


def test_cycle_names_its_definitions() -> None:
    # "e" waits on the cycle but is not part of it; "d" is fine.
    actions = [create("e", "a"), create("a", "b"), create("b", "c"), create("c", "a"), create("d")]
    with pytest.raises(ValidationError) as caught:
        order(actions)
    assert caught.value.field == "depends_on"
    assert caught.value.message.split(";")[0] == "dependency cycle: a -> b -> c -> a"
    assert caught.value.path == "definitions/a.yaml"
