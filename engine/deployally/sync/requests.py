"""Deployments a sync carries on: people's requests (an API redeploy or rollback) and those left waiting.

`take` closes what a crash left open and returns the rest by definition name;
`settle` ends the ones no action carried out in this sync.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from datetime import UTC, datetime

from deployally.notify.events import deployment_event
from deployally.store import Store
from deployally.types import DefinitionRecord, Deployment, DeploymentStatus, ReasonKind

REQUESTED = (ReasonKind.OPERATOR, ReasonKind.ROLLBACK)
OPEN_KEPT = 1000  # more open deployments than this is a backlog no sync should load at once


def take(store: Store) -> dict[str, Deployment]:
    """Close deployments a crash left running or pending (the plan redoes their work); return
    people's requests and waiting deployments, newest per definition, to carry on."""
    for deployment in store.deployments(status=DeploymentStatus.RUNNING, limit=OPEN_KEPT):
        _close(store, deployment, "the engine stopped during this deployment")
    for deployment in store.deployments(status=DeploymentStatus.PENDING, limit=OPEN_KEPT):
        if deployment.reason.kind not in REQUESTED:
            _close(store, deployment, "the engine stopped before this deployment began")
    return pending(store)


def _close(store: Store, deployment: Deployment, why: str) -> None:
    """Fail a deployment a crash left open, saying so in its log and a deployment.failed, in
    one transaction; whatever it did not finish, this sync's plan redoes."""
    message = f"{why}; the next sync redoes what it did not finish"
    closed = replace(deployment, status=DeploymentStatus.FAILED, finished_at=datetime.now(UTC))
    data = deployment_event(closed, store.server_id(deployment.server_id))
    data.update(error=message, rolled_back=False)
    store.update_deployment(
        deployment.id, status=closed.status, finished_at=closed.finished_at, log=message,
        event=("deployment.failed", data),
    )


def pending(store: Store) -> dict[str, Deployment]:
    """People's requests and waiting deployments, newest per definition, as `take` returns
    them (read only: for a preview)."""
    carried: dict[str, Deployment] = {}
    for deployment in store.deployments(status=DeploymentStatus.PENDING, limit=OPEN_KEPT):
        if deployment.reason.kind in REQUESTED:
            carried.setdefault(deployment.definition_name, deployment)
    for deployment in store.deployments(status=DeploymentStatus.WAITING, limit=OPEN_KEPT):
        carried.setdefault(deployment.definition_name, deployment)
    return carried


def settle(
    store: Store,
    carried: Mapping[str, Deployment],
    done: Collection[str],
    records: Mapping[str, DefinitionRecord],
    applied: Collection[str],
    *,
    backing_off: Callable[[str], bool],
) -> None:
    """End what no action carried out (ids not in `done`): already in place, or impossible now.
    `applied` names the definitions of the servers this sync applied; others wait for theirs."""
    now = datetime.now(UTC)
    for name, deployment in carried.items():
        record = records.get(name)
        if deployment.id in done or (record is not None and name not in applied):
            continue
        if record is not None and record.operator_stopped:
            status, message = DeploymentStatus.FAILED, f"{name} is stopped by an operator; start it first"
        elif record is None or record.desired is None:
            status, message = DeploymentStatus.FAILED, f"{name} is no longer defined"
        elif backing_off(name):
            continue  # waiting for its backoff; the next sync carries it out
        else:
            status, message = DeploymentStatus.SUCCESS, "already in the requested state"
        store.append_log(deployment.id, message)
        store.update_deployment(deployment.id, status=status, finished_at=now, waiting=None)
