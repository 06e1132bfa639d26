"""One server's plan: its intent (desired specs, reasons, requests, retries) against its live state.

The one planning function: the sync's applier and `deployally plan` both call
`plan_server` with an intent built by `server_intent`, so a preview is what a
sync does. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace

from deployally.plan.actions import plan
from deployally.types import (
    Action,
    ActionKind,
    DefinitionRecord,
    DefinitionStatus,
    Deployment,
    Desired,
    LiveInstance,
    Plan,
    Reason,
    ReasonKind,
    ServerIntent,
)


def server_intent(
    server: str,
    keys: Collection[str],
    desired: Desired,
    *,
    open_deployments: Mapping[str, Deployment],
    backing_off: Collection[str] = frozenset(),
    observe: Collection[str] | None = frozenset(),
) -> ServerIntent:
    """What `server` (named by any of `keys`: its name and srv_ id) should run after `desired`;
    `observe` names the instances whose settings to look at (None: all of them)."""
    mine = {n: r for n, r in desired.records.items() if r.server_id in keys}
    return ServerIntent(
        server=server,
        commit=desired.commit,
        definitions=mine,
        elsewhere=frozenset(desired.records) - frozenset(mine),
        before={n: s for n, s in desired.before.items() if n in mine},
        reasons={n: r for n, r in desired.reasons.items() if n in mine},
        open={n: d for n, d in open_deployments.items() if n in mine},
        backing_off=frozenset(n for n in backing_off if n in mine),
        not_ready=frozenset(n for n, r in desired.records.items() if not runs_applied_spec(r)),
        observe=frozenset(mine) if observe is None else frozenset(n for n in observe if n in mine),
    )


def plan_server(intent: ServerIntent, live: Mapping[str, LiveInstance]) -> Plan:
    """The actions that bring `live` to the intent, those in backoff left out; sorted by name."""
    mine = intent.definitions
    desired = {n: r.desired for n, r in mine.items() if r.desired is not None}
    # An instance whose definition moved to another server belongs to that one now.
    live = {n: c for n, c in live.items() if n not in intent.elsewhere}
    applied = {n: s for n, s in intent.before.items() if s is not None}
    for name, record in mine.items():
        if record.desired is not None and name not in applied:
            applied[name] = record.desired
    reasons = dict(intent.reasons)
    for name, record in mine.items():
        spec = record.desired
        if spec and name not in reasons and record.applied_hash != spec.rendered_hash:
            reasons[name] = Reason(
                ReasonKind.DEFINITION,
                f"revision {record.current_revision} is not applied yet (retry)",
                intent.commit,
            )
    held = {n for n, r in mine.items() if r.operator_stopped}
    # Running the desired spec, yet no deployment recorded bringing it up: a crash came
    # between the two (it may not be ready, nor have its restart policy yet).
    unconfirmed = {
        n for n, inst in live.items()
        if (r := mine.get(n)) is not None and r.desired is not None
        and inst.rendered_hash == r.desired.rendered_hash != r.applied_hash
    }
    actions: list[Action] = []
    the_plan = plan(desired, live, applied, held=held, reasons=reasons, unconfirmed=unconfirmed)
    for action in the_plan.actions:
        asked = _asked(intent.open.get(action.name))
        healing = action.kind is ActionKind.START and action.name in unconfirmed
        if (action.kind is ActionKind.NOOP or healing) and asked and asked.kind is ReasonKind.OPERATOR:
            # A redeploy asked for by an operator replaces the instance even if unchanged.
            action = replace(action, kind=ActionKind.UPDATE, reason=asked)
        # Failed definitions retry with exponential backoff, not in a hot loop; one whose
        # very spec failed its health gate not at all, until something changes or a person asks.
        held_unready = (
            action.name in mine and mine[action.name].held_unready
            and action.kind in (ActionKind.CREATE, ActionKind.UPDATE)
        )
        if held_unready and not asked:
            continue
        if action.kind is ActionKind.NOOP or action.name not in intent.backing_off or asked:
            actions.append(action)
    return Plan(tuple(actions))


def _asked(carried: Deployment | None) -> Reason | None:
    """The reason of a redeploy or rollback a person asked for, if `carried` is one."""
    if carried is not None and carried.reason.kind in (ReasonKind.OPERATOR, ReasonKind.ROLLBACK):
        return carried.reason
    return None


def runs_applied_spec(record: DefinitionRecord) -> bool:
    """Does this definition run a spec it applied (a file gone invalid keeps the old one)?"""
    if record.status is DefinitionStatus.INVALID:
        return record.applied_hash is not None
    return record.desired is not None and record.status is DefinitionStatus.ACTIVE
