"""Plan: desired specs against live instances become one action per name. Pure: no I/O."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from deployally.plan.diff import diff_specs
from deployally.types import (
    Action,
    ActionKind,
    ContainerSpec,
    FieldChange,
    InstanceState,
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
    unconfirmed: Collection[str] = frozenset(),
) -> Plan:
    """Compare desired specs with live instances; one action per name, sorted by name.

    `applied` is what was last applied (tells drift from a new definition); `held`
    names instances an operator stopped, which are not restarted; `unconfirmed` names
    instances running their desired spec that no deployment was recorded as bringing up
    (a crash came first): they are proven ready and given their settings in place.
    """
    actions = [
        _action(name, desired.get(name), live.get(name), applied.get(name), name in held,
                reasons, name in unconfirmed)
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
    unconfirmed: bool = False,
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
    if held:
        return Action(ActionKind.NOOP, name, want, have)
    drift = _settings_drift(want, have)
    if drift and any(c.field != "restart" for c in drift):
        # Limits cannot all be set back in place (Docker cannot lift one): a new container.
        reason = Reason(ReasonKind.DRIFT, f"changed outside DeployAlly: {_drift_summary(drift)}", changes=drift)
        return Action(ActionKind.UPDATE, name, want, have, changes=drift, reason=reason)
    # A service of no replicas runs nothing, as declared; one whose tasks Swarm is bringing
    # up again is Swarm's to heal (a deployment would only wait for Swarm).
    if not have.running and want.replicas > 0 and not _restarted_by_swarm(have):
        reason = Reason(ReasonKind.DRIFT, f"container is {have.state.value}")
        return Action(ActionKind.START, name, want, have, changes=drift, reason=reason)
    if unconfirmed:
        reason = given or Reason(
            ReasonKind.DRIFT, "the engine stopped before it confirmed this container ready"
        )
        return Action(ActionKind.START, name, want, have, changes=drift, reason=reason)
    if drift:
        reason = Reason(ReasonKind.DRIFT, f"changed outside DeployAlly: {_drift_summary(drift)}", changes=drift)
        return Action(ActionKind.START, name, want, have, changes=drift, reason=reason)
    return Action(ActionKind.NOOP, name, want, have)


def _restarted_by_swarm(have: LiveInstance) -> bool:
    """Whether `have` is a service with a task Swarm is starting (none of the local driver's
    containers has tasks)."""
    return have.state is InstanceState.RESTARTING and bool(have.tasks)


def _settings_drift(want: ContainerSpec, have: LiveInstance) -> tuple[FieldChange, ...]:
    """The settings the live instance runs with that differ from its spec (when observed)."""
    seen = have.settings
    if seen is None:
        return ()
    pairs = (
        ("restart", restart_words(seen.restart), restart_words(want.restart)),
        ("resources.memory_bytes", seen.memory_bytes, want.memory_bytes),
        ("resources.cpus", seen.cpus, want.cpus),
    )
    return tuple(FieldChange(f, before, after) for f, before, after in pairs if before != after)


def restart_words(policy: str) -> str:
    """A restart policy as the spec writes it ("no", "always", "on-failure:3"...)."""
    return policy or "no"


def _drift_summary(drift: tuple[FieldChange, ...]) -> str:
    return "; ".join(f"{c.field} is {c.before!r}, the spec says {c.after!r}" for c in drift)


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
            ref="",
            name=spec.name,
            definition_id=spec.definition_id,
            revision=None,
            rendered_hash=spec.rendered_hash,
            commit="",
            state=InstanceState.RUNNING,
            health=None,
            image=spec.image,
        )
        for name, spec in specs.items()
    }
