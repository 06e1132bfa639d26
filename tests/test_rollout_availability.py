"""How many services an update takes down at once: never more than `max_unavailable`.

Definitions with volumes stop their old container before the new one starts; Docker's own
event stream says, in its order, when each service went down (its old container died) and
came back (its new one turned healthy), so the count needs no clock.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import docker
import pytest

from conftest import DefinitionsRepo
from deployally.types import LABEL_NAME
from deployally.workspace import Workspace

pytestmark = pytest.mark.docker


def most_down_at_once(events: list[dict[str, Any]], names: set[str]) -> int:
    """The most services down together: from an old container's `die` to its successor's `healthy`."""
    down: set[str] = set()
    most = 0
    for event in sorted(events, key=lambda e: int(e["timeNano"])):
        name = event["Actor"]["Attributes"].get(LABEL_NAME)
        if name not in names:
            continue
        if event["Action"] == "die":
            down.add(name)
        elif event["Action"] == "health_status: healthy":
            down.discard(name)
        most = max(most, len(down))
    return most


def test_an_update_of_many_definitions_with_volumes_keeps_at_most_max_unavailable_down(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient
) -> None:
    defs_repo.write("deployally.yaml", f"network: {defs_repo.prefix}net\nhealth_timeout: 30s\n"
                                       "max_parallel: 4\nmax_unavailable: 1\n")
    names = {defs_repo.worker(f"w{n}", message="one") for n in range(4)}
    defs_repo.commit("Four workers with volumes")
    ws = Workspace.open(defs_repo.path)
    try:
        assert ws.engine.sync().ok
        for name in names:
            defs_repo.worker(name.removeprefix(f"{defs_repo.prefix}_"), message="two")
        defs_repo.commit("Change all four")
        # Followed live: Docker keeps only its last 256 events for a later query.
        stream = docker_client.events(decode=True, filters={
            "type": "container", "event": ["die", "health_status"], "label": LABEL_NAME})
        events: list[dict[str, Any]] = []
        follower = threading.Thread(target=lambda: events.extend(stream), daemon=True)
        follower.start()
        report = ws.engine.sync()
        time.sleep(1)  # the last health event reaches the stream (it is not what is asserted)
        stream.close()
        follower.join(10)
    finally:
        ws.close()
    assert report.ok and len(report.deployments) == 4, report
    assert sum(1 for e in events if e["Action"] == "die"
               and e["Actor"]["Attributes"].get(LABEL_NAME) in names) == 4  # each old one stopped
    assert most_down_at_once(events, names) == 1


def test_a_revision_that_fails_its_health_gate_takes_the_healthy_service_down_once(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient
) -> None:
    name = defs_repo.worker("db", message="one")
    defs_repo.commit("A worker with a volume")
    ws = Workspace.open(defs_repo.path, health_timeout_s=5)
    try:
        assert ws.engine.sync().ok
        defs_repo.worker("db", message="two", health="false")
        defs_repo.commit("A revision that never turns healthy")
        [rolled_back] = ws.engine.sync().deployments
        assert rolled_back.status.value == "rolled_back"
        old = docker_client.api.inspect_container(name)
        for _ in range(2):
            ws.engine.retries.forget(name)  # its backoff is due
            assert ws.engine.sync().deployments == ()
    finally:
        ws.close()
    now = docker_client.api.inspect_container(name)
    assert now["Id"] == old["Id"] and now["State"]["Running"]
    assert now["State"]["StartedAt"] == old["State"]["StartedAt"]  # never stopped again
