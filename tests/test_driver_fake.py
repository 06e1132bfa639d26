"""drivers/fake.py: what only the fake does (scripting a crash or an outage), without Docker."""

from __future__ import annotations

import dataclasses

import pytest

from deployally.drivers.base import DriverConfig
from deployally.drivers.fake import FakeDriver, FakeHost
from deployally.errors import DriverError
from deployally.model.render import rendered_hash
from deployally.types import Action, ActionKind, ContainerSpec, DeploymentStatus, InstanceEventKind


def spec(name: str, **over: object) -> ContainerSpec:
    base = ContainerSpec(name=name, definition_id=f"def_{name}", template_id="tpl_x", image="app:1")
    built = dataclasses.replace(base, **over)  # type: ignore[arg-type]
    return dataclasses.replace(built, rendered_hash=rendered_hash(built))


def apply(driver: FakeDriver, kind: ActionKind, s: ContainerSpec) -> DeploymentStatus:
    action = Action(kind, s.name, s, None)
    return driver.apply(action, revision=1, commit="c", resolve=lambda t: t, log=lambda _: None).status


@pytest.mark.parametrize("ready", [True, False])
def test_recover_keeps_the_new_instance_only_if_it_proved_ready(ready: bool) -> None:
    driver = FakeDriver(owner="eng_a")
    v1, v2 = spec("db"), spec("db", image="app:2")
    apply(driver, ActionKind.CREATE, v1)
    driver.host.crash_mid_update("db", v2, ready=ready)
    assert set(driver.host.instances) == {"db", "db.old"}

    lines: list[str] = []
    driver.recover(lines.append)

    assert set(driver.host.instances) == {"db"}
    assert driver.live()["db"].rendered_hash == (v2 if ready else v1).rendered_hash
    assert driver.live()["db"].running
    assert lines and lines[0].startswith("recovered db")


def test_an_unreachable_host_fails_every_call_and_a_deploy_reports_it() -> None:
    driver = FakeDriver(owner="eng_a")
    driver.host.reachable = False
    with pytest.raises(DriverError, match="switched off"):
        driver.live()
    with pytest.raises(DriverError):
        driver.ping()
    result = driver.apply(
        Action(ActionKind.CREATE, "x", spec("x"), None),
        revision=1, commit="c", resolve=lambda t: t, log=lambda _: None,
    )
    assert result.status is DeploymentStatus.FAILED and "switched off" in result.message


def test_a_missing_image_fails_before_touching_the_running_instance() -> None:
    driver = FakeDriver(owner="eng_a")
    apply(driver, ActionKind.CREATE, spec("web"))
    before = driver.live()["web"]
    driver.host.missing_image("app:9")
    assert apply(driver, ActionKind.UPDATE, spec("web", image="app:9")) is DeploymentStatus.FAILED
    assert driver.live()["web"] == before


def test_a_stop_behind_our_back_is_heard_by_its_owner_alone() -> None:
    host = FakeHost()
    ours, theirs = FakeDriver(host, owner="eng_a"), FakeDriver(host, owner="eng_b")
    heard_a: list[str] = []
    heard_b: list[str] = []
    ours.watch(lambda e: heard_a.append(f"{e.kind.value} {e.name}"))
    theirs.watch(lambda e: heard_b.append(f"{e.kind.value} {e.name}"))
    apply(ours, ActionKind.CREATE, spec("web"))
    host.stop_behind_our_back("web")
    assert heard_a == [f"{InstanceEventKind.STARTED.value} web", f"{InstanceEventKind.STOPPED.value} web"]
    assert heard_b == []


def test_configure_takes_a_typed_config() -> None:
    driver = FakeDriver(owner="eng_a")
    driver.configure(DriverConfig(health_timeout_s=5, parallel=2))
    assert driver.config == DriverConfig(health_timeout_s=5, parallel=2)
    with pytest.raises(ValueError, match="parallel"):
        DriverConfig(parallel=0)
