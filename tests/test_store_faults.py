"""A state store that cannot be written — locked by another process, or its disk full — against
a running engine: /health, the API's writes and the push output say why, no instance event
is lost, and the engine carries on once the fault clears."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from conftest import DefinitionsRepo, PushRepo, ServeProcess, wait_until
from conftest import running_revision as revision
from deployally.store import Store
from test_webhooks_e2e import Receiver

pytestmark = pytest.mark.docker

# Longer than the store's busy timeout (5 s), so a writer gives up instead of waiting.
HELD_S = 7.0


class StoreFault:
    """One way for the state store to refuse writes, switched on and off by a test."""

    cause = ""

    def __init__(self, state: Path) -> None:
        self.state = state

    def apply(self) -> None:
        raise NotImplementedError

    def clear(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.clear()


class Locked(StoreFault):
    """Another process holds the write lock (as `sqlite3 deployally.db 'BEGIN IMMEDIATE'` would)."""

    cause = "locked by another process"

    def __init__(self, state: Path) -> None:
        super().__init__(state)
        self._conn: sqlite3.Connection | None = None

    def apply(self) -> None:
        self._conn = sqlite3.connect(self.state / "deployally.db", isolation_level=None)
        self._conn.execute("BEGIN IMMEDIATE")

    def clear(self) -> None:
        if self._conn is not None:
            self._conn.execute("ROLLBACK")
            self._conn.close()
            self._conn = None


class DiskFull(StoreFault):
    """The state directory on a small tmpfs of its own, filled up by a file."""

    cause = "the disk is full"

    def __init__(self, state: Path) -> None:
        super().__init__(state)
        state.mkdir(parents=True)
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(state)],
                                 capture_output=True, text=True, check=False)
        if mounted.returncode != 0:
            message = f"a full disk needs a tmpfs mount (root): {mounted.stderr.strip()}"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
        self.filler = state / "filler"

    def apply(self) -> None:
        # An empty write-ahead log first: otherwise a small write may fit in its old pages.
        with sqlite3.connect(self.state / "deployally.db", timeout=30) as conn:
            wait_until(lambda: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0,
                       30, "the write-ahead log to be checkpointed and emptied")
        # Unbuffered: a buffered file keeps what a write could not fit and raises again at close.
        with self.filler.open("wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
        # A last few bytes, so not even a page fits.
        try:
            with (self.state / "filler-tail").open("wb", buffering=0) as f:
                while True:
                    f.write(b"\0" * 512)
                    f.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc

    def clear(self) -> None:
        for path in (self.filler, self.state / "filler-tail"):
            path.unlink(missing_ok=True)

    def close(self) -> None:
        self.clear()
        subprocess.run(["umount", "-l", str(self.state)], check=False)


@pytest.fixture(params=["locked", "full"])
def fault(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFault]:
    """The state directory and a way to make its store refuse writes; undone at the end."""
    made: StoreFault = (Locked if request.param == "locked" else DiskFull)(tmp_path / "state")
    yield made
    made.close()


def health(engine: ServeProcess) -> dict[str, object]:
    return engine.request("GET", "/health").json()  # type: ignore[no-any-return]


def test_a_store_that_cannot_be_written_is_named_by_health_the_api_and_the_push(
    push_repo: PushRepo, fault: StoreFault, docker_client: docker.DockerClient
) -> None:
    name = push_repo.worker("web", message="one")
    push_repo.commit("Add web")
    engine = ServeProcess(push_repo.bare, fault.state)
    try:
        assert push_repo.push().returncode == 0
        wait_until(lambda: revision(docker_client, name) == "1", 60, "revision 1 running")
        with Store(fault.state) as store:
            record = store.definition(name)
        assert record is not None

        fault.apply()
        try:
            # A write that succeeded within the last second stands for the probe: poll.
            body = wait_until(lambda: (h := health(engine))["status"] == "degraded" and h, 30,
                              "health to say degraded")
            assert isinstance(body, dict)
            store_check = body["checks"]["store"]  # type: ignore[index]
            assert store_check["status"] == "unwritable" and fault.cause in store_check["reason"], body

            redeploy = engine.request("POST", "/deployments", json={"definition_id": record.id})
            assert redeploy.status_code == 503, redeploy.text
            assert fault.cause in redeploy.json()["error"]["message"]

            push_repo.worker("web", message="two")
            push_repo.commit("Change web while the store is unwritable")
            pushed = push_repo.push()
            assert pushed.returncode == 0, pushed.stdout  # the push itself is in git
            assert "the state store cannot be written" in pushed.stdout, pushed.stdout
            assert fault.cause in pushed.stdout and "unexpected" not in pushed.stdout, pushed.stdout
        finally:
            fault.clear()

        wait_until(lambda: health(engine)["status"] == "healthy", 60, "health back to healthy")
        wait_until(lambda: revision(docker_client, name) == "2", 120, "revision 2 once it clears")
    finally:
        assert engine.stop() == 0, engine.log()


def test_instance_events_wait_out_a_locked_store_and_are_all_sent(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    # The receiver is on loopback, where webhooks go only when the operator allows it.
    (state / "engine.yaml").write_text("webhooks:\n  allow: [loopback]\n")
    receiver = Receiver()
    with Store(state) as store:
        store.add_webhook(receiver.url, ["instance.stopped"], "events-secret")
    name = defs_repo.worker("web")
    defs_repo.commit("Add web")
    engine = ServeProcess(defs_repo.path, state, env={"DEPLOYALLY_WEBHOOK_BACKOFF": "0.2"})
    locked = Locked(state)
    try:
        wait_until(lambda: revision(docker_client, name) == "1", 60, "revision 1 running")
        killed = docker_client.containers.get(name)
        locked.apply()
        try:
            killed.kill()
            time.sleep(HELD_S)  # the engine's write of the event gives up meanwhile
        finally:
            locked.clear()

        def stopped() -> bool:
            return any(e["event"] == "instance.stopped" and e["data"]["instance_id"] == f"inst_{killed.id[:12]}"
                       for e in receiver.delivered())

        wait_until(stopped, 60, "instance.stopped of the container killed while the store was locked")
    finally:
        locked.clear()
        assert engine.stop() == 0, engine.log()
        receiver.close()
