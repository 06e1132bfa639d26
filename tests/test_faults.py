"""Faults against a running engine: Docker stops answering, the repository goes, git locks, SIGKILL mid-sync."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import docker
import pytest

from conftest import DOCKER_SOCKET, DefinitionsRepo, DockerProxy, ServeProcess, wait_until
from conftest import running_revision as revision
from deployally.store import Store

pytestmark = pytest.mark.docker



def health(engine: ServeProcess) -> dict[str, object]:
    return engine.request("GET", "/health").json()  # type: ignore[no-any-return]


def test_docker_that_stops_answering_degrades_health_and_the_engine_catches_up(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    if not Path(DOCKER_SOCKET).exists():
        pytest.fail(f"{DOCKER_SOCKET} is needed to proxy the Docker engine")
    proxy = DockerProxy(tmp_path / "docker.sock")
    proxy.start()
    name = defs_repo.worker("web", message="one")
    defs_repo.commit("Add web")
    engine = ServeProcess(defs_repo.path, tmp_path / "state",
                          env={"DOCKER_HOST": f"unix://{proxy.path}"})
    try:
        wait_until(lambda: revision(docker_client, name) == "1", 60, "revision 1 running")
        proxy.stop()
        defs_repo.worker("web", message="two")
        defs_repo.commit("Change web while Docker is away")
        degraded = wait_until(lambda: (h := health(engine))["status"] == "degraded" and h, 60,
                              "health to turn degraded")
        assert isinstance(degraded, dict)
        assert "docker" in str(degraded["reason"]).lower(), degraded
        assert engine.request("GET", "/definitions").status_code == 200  # the API still serves
        # The change that could not be applied waits for the server, saying since when and why.
        waiting = wait_until(
            lambda: engine.request("GET", "/deployments?status=waiting").json()["data"], 60,
            "a waiting deployment for the change made while Docker was away",
        )
        assert isinstance(waiting, list) and waiting[0]["definition_name"] == name
        detail = engine.request("GET", f"/deployments/{waiting[0]['id']}").json()["data"]
        assert detail["waiting_for"]["kind"] == "server" and detail["waiting_for"]["since"], detail
        assert "docker" in detail["waiting_for"]["summary"].lower(), detail

        proxy.start()
        wait_until(lambda: revision(docker_client, name) == "2", 120, "revision 2 after Docker is back")
        # It ran once, as the deployment that waited.
        wait_until(
            lambda: engine.request("GET", f"/deployments/{waiting[0]['id']}").json()["data"]["status"]
            == "success", 60, "the waiting deployment to succeed",
        )
        wait_until(lambda: health(engine)["status"] == "healthy", 60, "health back to healthy")
    finally:
        assert engine.stop() == 0, engine.log()
        proxy.stop()


def test_a_repository_that_disappears_and_comes_back(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    name = defs_repo.worker("web", message="one")
    defs_repo.commit("Add web")
    engine = ServeProcess(defs_repo.path, tmp_path / "state", "--reconcile-interval", "1")
    aside = tmp_path / "aside"
    try:
        wait_until(lambda: revision(docker_client, name) == "1", 60, "revision 1 running")
        defs_repo.path.rename(aside)
        degraded = wait_until(lambda: (h := health(engine))["status"] == "degraded" and h, 60,
                              "health to report the missing repository")
        assert "repo" in str(degraded["reason"]), degraded  # type: ignore[index]
        assert docker_client.containers.get(name).status == "running"  # nothing running changed

        shutil.copytree(aside, defs_repo.path, symlinks=True)  # back, as a new directory
        defs_repo.worker("web", message="two")
        defs_repo.commit("Change web after the repository came back")
        wait_until(lambda: revision(docker_client, name) == "2", 120, "revision 2 after the repo is back")
    finally:
        assert engine.stop() == 0, engine.log()


def test_git_locks_do_not_stop_the_engine(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    name = defs_repo.worker("web", message="one")
    defs_repo.commit("Add web")
    engine = ServeProcess(defs_repo.path, tmp_path / "state", "--reconcile-interval", "1")
    locks = [defs_repo.path / ".git" / "index.lock", defs_repo.path / ".git" / "refs/heads/main.lock"]
    try:
        wait_until(lambda: revision(docker_client, name) == "1", 60, "revision 1 running")
        for lock in locks:
            lock.write_text("")
        syncs = health(engine)["checks"]["engine"]["syncs"]  # type: ignore[index]
        wait_until(lambda: health(engine)["checks"]["engine"]["syncs"] >= syncs + 2, 60,  # type: ignore[index]
                   "syncs to go on while git is locked")
        assert health(engine)["status"] == "healthy"
        for lock in locks:
            lock.unlink()
        defs_repo.worker("web", message="two")
        defs_repo.commit("Change web after the locks went")
        wait_until(lambda: revision(docker_client, name) == "2", 60, "revision 2 after the locks")
    finally:
        for lock in locks:
            lock.unlink(missing_ok=True)
        assert engine.stop() == 0, engine.log()


def test_sigkill_in_the_middle_of_a_sync_then_restart_converges_with_no_duplicate_or_orphan(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    engine = ServeProcess(defs_repo.path, state, "--parallel", "2")
    wanted = {defs_repo.worker(f"w{n:02d}", message=str(n)) for n in range(12)}
    defs_repo.commit("Add twelve workers")

    def started() -> bool:
        with Store(state) as store:
            return len(store.deployments(limit=100)) >= 3

    try:
        wait_until(started, 60, "the sync to be under way")
    finally:
        engine.stop(signal.SIGKILL)
    with Store(state) as store:
        owner = store.get_meta("engine_id")
        assert any(d.status.value in ("running", "pending") for d in store.deployments(limit=100)) or (
            len([d for d in store.deployments(limit=100) if d.status.value == "success"]) < 12
        ), "the kill came after the sync finished; nothing was interrupted"

    again = ServeProcess(defs_repo.path, state)
    try:
        def converged() -> bool:
            mine = docker_client.containers.list(
                all=True, filters={"label": f"com.deployally.owner={owner}"})
            with Store(state) as store:
                open_ = [d for d in store.deployments(limit=200)
                         if d.status.value in ("running", "pending")]
            return not open_ and sorted(c.name for c in mine) == sorted(wanted) and all(
                c.status == "running" for c in mine)

        # Converged: each name once, running, and no deployment left open by the kill.
        wait_until(converged, 180, "all twelve running, once each, no deployment left open")
        everything = docker_client.containers.list(all=True, filters={"name": defs_repo.prefix})
        assert sorted(c.name for c in everything) == sorted(wanted)  # no orphans under other names
    finally:
        assert again.stop() == 0, again.log()
    assert os.path.exists(state / "deployally.db")


def test_sigterm_finishes_the_deployments_under_way_and_the_next_start_does_the_rest(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    # One service down at a time: each worker's update holds its turn from stopping the old
    # container (they share its volume) until the new one is healthy, so when the first is
    # done the others have surely not all begun, however fast Docker creates containers.
    settings = (defs_repo.path / "deployally.yaml").read_text()
    defs_repo.write("deployally.yaml", settings + "max_unavailable: 1\n")
    wanted = {defs_repo.worker(f"w{n}", message="one") for n in range(8)}
    defs_repo.commit("Eight workers")
    engine = ServeProcess(defs_repo.path, state, "--parallel", "1")

    def finished() -> int:
        with Store(state) as store:
            return store.count_deployments(status="success")

    try:
        wait_until(lambda: finished() >= len(wanted), 180, "the eight workers deployed")
        for n in range(len(wanted)):
            defs_repo.worker(f"w{n}", message="two")
        defs_repo.commit("Eight workers updated")
        wait_until(lambda: finished() >= len(wanted) + 1, 120, "the first update to finish")
    finally:
        assert engine.stop(signal.SIGTERM) == 0, engine.log()
    with Store(state) as store:
        owner = store.get_meta("engine_id")
        assert store.deployments(status="running") == []  # what began, finished
        updated = store.count_deployments(status="success") - len(wanted)
        waiting = [d.id for d in store.deployments(status="waiting")]
    assert 1 <= updated < len(wanted)  # it did not sit out the whole sync
    mine = docker_client.containers.list(all=True, filters={"label": f"com.deployally.owner={owner}"})
    assert sorted(c.name for c in mine) == sorted(wanted)  # one each, no .old left
    revisions = sorted(c.labels.get("com.deployally.revision") for c in mine)
    assert revisions == ["1"] * (len(wanted) - updated) + ["2"] * updated

    again = ServeProcess(defs_repo.path, state)
    try:
        def converged() -> bool:
            running = docker_client.containers.list(filters={"label": f"com.deployally.owner={owner}"})
            with Store(state) as store:
                settled = not any(store.deployments(status=s) for s in ("pending", "running", "waiting"))
            at_two = all(c.labels.get("com.deployally.revision") == "2" for c in running)
            return settled and at_two and sorted(c.name for c in running) == sorted(wanted)

        wait_until(converged, 180, "the rest updated by the next start")
        with Store(state) as store:
            carried = [store.deployment(i, with_logs=False) for i in waiting]
            assert store.count_deployments() == 2 * len(wanted)  # one each a revision, none twice
        # What waited for the next start was carried on by it, as the same deployment.
        assert all(d is not None and d.status.value == "success" for d in carried), [
            (d.definition_name, d.status.value) for d in carried if d is not None]
    finally:
        assert again.stop() == 0, again.log()
