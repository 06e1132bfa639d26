"""sync/apply.py: the per-server applier against the fake driver, as data tables (no Docker, no store).

Each case gives the server's intent (desired), what runs there (observed) and the
deployments expected, pyinfra-style.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

from deployally.drivers.base import DriverConfig
from deployally.drivers.fake import FakeDriver, FakeHost, FakeInstance
from deployally.identity import definition_id
from deployally.model.render import rendered_hash
from deployally.sync.apply import Applier
from deployally.types import (
    Action,
    ActionKind,
    ContainerSpec,
    DefinitionRecord,
    DefinitionStatus,
    Deployment,
    DeploymentStatus,
    InstanceState,
    Reason,
    ReasonKind,
    ServerIntent,
    ServerOutcome,
)

NOW = datetime(2026, 2, 13, tzinfo=UTC)
OWNER = "eng_test"
CONFIG = DriverConfig(health_timeout_s=5, parallel=2)


def spec(name: str, v: int = 1, deps: tuple[str, ...] = ()) -> ContainerSpec:
    built = ContainerSpec(
        name=name, definition_id=definition_id(name), template_id="tpl_x",
        image=f"app:{v}", depends_on=deps,
    )
    return dataclasses.replace(built, rendered_hash=rendered_hash(built))


def rec(name: str, want: ContainerSpec | None, *, applied: ContainerSpec | None = None,
        **over: Any) -> DefinitionRecord:
    """A definition whose desired spec is `want`, having last applied `applied`."""
    base = DefinitionRecord(
        id=definition_id(name), name=name, path=f"definitions/{name}.yaml", template_id="tpl_x",
        server_id="local", profile="development",
        status=DefinitionStatus.ACTIVE if applied is not None and applied == want else DefinitionStatus.PENDING,
        current_revision=1, applied_revision=1 if applied else None, desired=want,
        applied_hash=applied.rendered_hash if applied else None, depends_files=(), params={},
        last_error=None, operator_stopped=False, created_at=NOW, updated_at=NOW,
    )
    return dataclasses.replace(base, **over)


def observe(host: FakeHost, running: dict[str, tuple[ContainerSpec, InstanceState]]) -> None:
    """Put instances on the host as if this engine had made them."""
    for name, (s, state) in running.items():
        host.instances[name] = FakeInstance(
            ref=host.new_ref(), name=name, owner=OWNER, spec=s, revision=1, commit="c0",
            state=state, ready=True, started_at=NOW,
        )


class ListJournal:
    """A journal that keeps what the applier reported, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []  # (what, deployment name, status)
        self.lines: dict[str, list[str]] = {}

    def opened(self, d: Deployment) -> None:
        self.calls.append(("opened", d.definition_name, d.status.value))

    def log(self, deployment_id: str, message: str) -> None:
        self.lines.setdefault(deployment_id, []).append(message)

    def superseded(self, d: Deployment, revision: int | None) -> None:
        self.calls.append(("superseded", d.definition_name, f"by {revision}"))

    def waiting(self, d: Deployment, record: DefinitionRecord | None, *, first: bool) -> None:
        self.calls.append(("waiting", d.definition_name, "first" if first else "again"))

    def started(self, d: Deployment) -> None:
        self.calls.append(("started", d.definition_name, d.status.value))

    def finished(
        self, action: Action, record: DefinitionRecord | None, d: Deployment, message: str,
        *, unready: bool = False,
    ) -> None:
        self.calls.append(("finished", d.definition_name, d.status.value))


class NoSecrets:
    def secret_value(self, name: str, version: int | None = None) -> str:
        raise AssertionError(f"no secret is read in these cases ({name})")


def run(intent: ServerIntent, host: FakeHost) -> tuple[ServerOutcome, ListJournal, FakeDriver]:
    journal = ListJournal()
    driver = FakeDriver(host, owner=OWNER)
    outcome = Applier(journal, NoSecrets(), progress=lambda _: None).apply(intent, driver, CONFIG)
    return outcome, journal, driver


def intent(*records: DefinitionRecord, **over: Any) -> ServerIntent:
    return ServerIntent(
        server="local", commit="c1", definitions={r.name: r for r in records}, **over
    )


W1, W2 = spec("web"), spec("web", 2)
DB, APP = spec("db"), spec("app", deps=("db",))
RUNNING, EXITED = InstanceState.RUNNING, InstanceState.EXITED


def request(name: str) -> Deployment:
    return Deployment(
        id="deploy_req000000001", definition_id=definition_id(name), definition_name=name,
        server_id="local", revision=1, commit="c0", action=ActionKind.UPDATE,
        status=DeploymentStatus.PENDING, reason=Reason(ReasonKind.OPERATOR, "redeploy asked"),
        created_at=NOW,
    )


# case: (intent, observed, specs whose health gate fails, expected {name: status}, expected live)
CASES: dict[str, tuple[ServerIntent, dict[str, Any], list[ContainerSpec], dict[str, str], dict[str, Any]]] = {
    "a new definition is created": (
        intent(rec("web", W1)), {}, [], {"web": "success"}, {"web": W1},
    ),
    "an unchanged one is left alone": (
        intent(rec("web", W1, applied=W1)), {"web": (W1, RUNNING)}, [], {}, {"web": W1},
    ),
    "a changed one is updated": (
        intent(rec("web", W2, applied=W1)), {"web": (W1, RUNNING)}, [], {"web": "success"}, {"web": W2},
    ),
    "a failing update is rolled back": (
        intent(rec("web", W2, applied=W1)), {"web": (W1, RUNNING)}, [W2],
        {"web": "rolled_back"}, {"web": W1},
    ),
    "a failing create leaves nothing": (
        intent(rec("web", W1)), {}, [W1], {"web": "failed"}, {},
    ),
    "a stopped instance is started": (
        intent(rec("web", W1, applied=W1)), {"web": (W1, EXITED)}, [], {"web": "success"}, {"web": W1},
    ),
    "one an operator stopped stays stopped": (
        intent(rec("web", W1, applied=W1, operator_stopped=True)), {"web": (W1, EXITED)}, [], {},
        {"web": W1},
    ),
    "a removed definition's instance goes": (
        intent(rec("web", None, applied=W1)), {"web": (W1, RUNNING)}, [], {"web": "success"}, {},
    ),
    "an instance defined on another server is not ours to remove": (
        intent(elsewhere=frozenset({"web"})), {"web": (W1, RUNNING)}, [], {}, {"web": W1},
    ),
    "a dependency failing in this sync makes its dependent wait": (
        intent(rec("db", DB), rec("app", APP)), {}, [DB], {"db": "failed", "app": "waiting"}, {},
    ),
    "a dependency not running from before makes its dependent wait": (
        intent(rec("app", APP), not_ready=frozenset({"db"})), {}, [], {"app": "waiting"}, {},
    ),
    "a dependency that comes up first lets its dependent go": (
        intent(rec("db", DB), rec("app", APP)), {}, [], {"db": "success", "app": "success"},
        {"db": DB, "app": APP},
    ),
    "a depends_on cycle fails its members only": (
        intent(rec("a", spec("a", deps=("b",))), rec("b", spec("b", deps=("a",))), rec("web", W1)),
        {}, [], {"a": "failed", "b": "failed", "web": "success"}, {"web": W1},
    ),
    "a failed definition in backoff is not retried yet": (
        intent(rec("web", W2, applied=W1), backing_off=frozenset({"web"})), {"web": (W1, RUNNING)},
        [], {}, {"web": W1},
    ),
    "an operator's redeploy replaces an unchanged instance": (
        intent(rec("web", W1, applied=W1), open={"web": request("web")}), {"web": (W1, RUNNING)},
        [], {"web": "success"}, {"web": W1},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_applier_cases(case: str) -> None:
    the_intent, observed, failing, expected, live = CASES[case]
    host = FakeHost()
    observe(host, observed)
    for s in failing:
        host.fail_spec(s)
    outcome, journal, driver = run(the_intent, host)
    assert {d.definition_name: d.status.value for d in outcome.deployments} == expected
    assert {n: i.rendered_hash for n, i in driver.live().items()} == {
        n: s.rendered_hash for n, s in live.items()
    }
    assert outcome.unreachable is None and driver.config == CONFIG
    # Waiting is no failure: it never finishes, and nothing else does for it.
    waited = {n for n, s in expected.items() if s == "waiting"}
    assert not [c for c in journal.calls if c[1] in waited and c[0] in ("started", "finished")]


def test_an_operator_request_is_carried_on_under_its_own_id() -> None:
    host = FakeHost()
    observe(host, {"web": (W1, RUNNING)})
    before = host.instances["web"].ref
    outcome, journal, _ = run(intent(rec("web", W1, applied=W1), open={"web": request("web")}), host)
    (done,) = outcome.deployments
    assert done.id == "deploy_req000000001" and done.reason.kind is ReasonKind.OPERATOR
    assert ("opened", "web", "pending") not in journal.calls  # the request's row is reused
    assert host.instances["web"].ref != before and outcome.carried == {done.id}


def test_a_waiting_deployment_runs_as_itself_once_its_dependency_is_up() -> None:
    host = FakeHost()
    first, journal, _ = run(intent(rec("app", APP), not_ready=frozenset({"db"})), host)
    (waiting,) = first.deployments
    assert waiting.status is DeploymentStatus.WAITING and waiting.waiting is not None
    assert waiting.waiting.on == ("db",) and "db" in waiting.waiting.summary
    assert journal.calls == [("opened", "app", "pending"), ("waiting", "app", "first")]

    # Next sync, db still down: nothing new is recorded, the deployment still waits.
    again, journal, _ = run(intent(rec("app", APP), not_ready=frozenset({"db"}), open={"app": waiting}), host)
    assert again.deployments == () and again.waiting == 1 and again.carried == {waiting.id}
    assert journal.calls == []

    # db is up: the same deployment runs, without a second row.
    ran, journal, driver = run(intent(rec("app", APP), open={"app": waiting}), host)
    (done,) = ran.deployments
    assert done.id == waiting.id and done.status is DeploymentStatus.SUCCESS and done.waiting is None
    assert journal.calls == [("started", "app", "running"), ("finished", "app", "success")]
    assert "app" in driver.live()


def test_a_waiting_deployment_a_new_revision_replaces_is_superseded() -> None:
    host = FakeHost()
    first, _, _ = run(intent(rec("app", APP), not_ready=frozenset({"db"})), host)
    (waiting,) = first.deployments
    newer = rec("app", spec("app", 2, deps=("db",)), current_revision=2)
    outcome, journal, _ = run(intent(newer, open={"app": waiting}), host)
    (done,) = outcome.deployments
    assert done.id != waiting.id and done.revision == 2 and done.status is DeploymentStatus.SUCCESS
    assert journal.calls[0] == ("superseded", "app", "by 2")


def test_an_unreachable_server_is_an_outcome_with_its_cause() -> None:
    host = FakeHost()
    host.reachable = False
    outcome, journal, _ = run(intent(rec("web", W1)), host)
    assert outcome.unreachable is not None and "switched off" in outcome.unreachable
    assert outcome.deployments == () and journal.calls == [] and not outcome.applied


def test_a_crash_left_over_is_recovered_before_the_plan() -> None:
    host = FakeHost()
    observe(host, {"web": (W1, RUNNING)})
    host.crash_mid_update("web", W2, ready=False)
    outcome, _, driver = run(intent(rec("web", W1, applied=W1)), host)
    assert outcome.deployments == () and outcome.applied  # W1 back; nothing left to do
    assert set(host.instances) == {"web"} and driver.live()["web"].rendered_hash == W1.rendered_hash
