"""The shared live snapshot: one list call for many readers, and none of them waits behind a slow one.

A stand-in driver answers `live()` from a list and blocks a call until the test lets it go;
what is under test is the cache's own logic, not Docker (test_api_instances covers that).
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from deployally.api.live import MAX_ANSWERS, Answers, LiveCache
from deployally.errors import DriverError
from deployally.types import InstanceState, LiveInstance

STARTED = datetime(2026, 1, 1, tzinfo=UTC)


def instance(name: str, ref: str) -> LiveInstance:
    return LiveInstance(ref, name, f"def_{name}", 1, "sha256:x", "c0ffee", InstanceState.RUNNING,
                        None, "busybox")


class SlowDriver:
    """live() returns `instances`; while `gate` is clear, each call waits for it."""

    server = "local"
    changed_at = 0.0

    def __init__(self) -> None:
        self.instances = {"a": instance("a", "a" * 64)}
        self.gate = threading.Event()
        self.gate.set()
        self.lists = 0
        self.inspects = 0
        self.error: DriverError | None = None

    def live(self) -> dict[str, LiveInstance]:
        self.lists += 1
        self.gate.wait(10)
        if self.error is not None:
            raise self.error
        return dict(self.instances)

    def started_at(self, inst: LiveInstance) -> datetime | None:
        self.inspects += 1
        return STARTED


async def run(fn: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def test_many_readers_share_one_list_call_and_start_times_are_asked_once() -> None:
    driver, cache = SlowDriver(), LiveCache()

    async def main() -> list[dict[str, LiveInstance]]:
        return await asyncio.gather(*(cache.snapshot(driver, run) for _ in range(50)))

    snapshots = asyncio.run(main())
    assert driver.lists == 1 and driver.inspects == 1
    assert all(s["a"].started_at == STARTED for s in snapshots)


def test_readers_get_the_last_snapshot_while_a_refresh_waits_on_docker() -> None:
    driver, cache = SlowDriver(), LiveCache()

    async def main() -> None:
        first = await cache.snapshot(driver, run)
        driver.instances["b"] = instance("b", "b" * 64)
        driver.gate.clear()
        cache.invalidate()
        refreshing = asyncio.ensure_future(cache.snapshot(driver, run))
        await asyncio.sleep(0)  # it starts the refresh, whose list call now waits
        during = await asyncio.gather(*(cache.snapshot(driver, run) for _ in range(20)))
        assert not refreshing.done()
        assert all(s == first for s in during)  # answered while the call was held
        driver.gate.set()
        assert set(await refreshing) == {"a", "b"}
        assert driver.lists == 2

    asyncio.run(main())


def test_an_old_snapshot_is_answered_at_once_while_its_refresh_runs_behind_it() -> None:
    driver, cache = SlowDriver(), LiveCache(ttl_s=0)

    async def main() -> None:
        first = await cache.snapshot(driver, run)
        driver.instances["b"] = instance("b", "b" * 64)
        driver.gate.clear()  # Docker is slow now
        await asyncio.sleep(0.01)  # the snapshot is older than the TTL
        reader = asyncio.ensure_future(cache.snapshot(driver, run))
        for _ in range(5):
            await asyncio.sleep(0)
        assert reader.done() and reader.result() == first  # no reader waited on the list call
        for _ in range(100):  # yet the refresh is under way, on its executor thread
            if driver.lists == 2:
                break
            await asyncio.sleep(0.01)
        assert driver.lists == 2
        driver.gate.set()
        await asyncio.sleep(0.2)
        assert set(await cache.snapshot(driver, run)) == {"a", "b"}

    asyncio.run(main())


def test_after_a_sync_changed_the_server_readers_see_what_it_did() -> None:
    """A sync that deployed marks its driver changed: the snapshot from before it, young as
    it is, is not answered again."""
    driver, cache = SlowDriver(), LiveCache(ttl_s=3600)

    async def main() -> None:
        assert set(await cache.snapshot(driver, run)) == {"a"}
        driver.instances["b"] = instance("b", "b" * 64)
        assert set(await cache.snapshot(driver, run)) == {"a"}  # within the TTL, no sync
        driver.changed_at = time.monotonic()  # what Engine.sync does once it deployed
        assert set(await cache.snapshot(driver, run)) == {"a", "b"}
        assert driver.lists == 2

    asyncio.run(main())


def test_fresh_waits_for_a_list_that_began_after_it() -> None:
    driver, cache = SlowDriver(), LiveCache()

    async def main() -> None:
        await cache.snapshot(driver, run)
        driver.instances.pop("a")  # e.g. an operator action changed it
        assert await cache.fresh(driver, run) == {}

    asyncio.run(main())


def test_an_unreachable_docker_is_an_error_for_every_reader_until_it_answers() -> None:
    driver, cache = SlowDriver(), LiveCache(ttl_s=0)
    driver.error = DriverError("could not list containers: Docker engine unreachable")

    async def main() -> None:
        with pytest.raises(DriverError, match="unreachable"):
            await cache.snapshot(driver, run)
        driver.error = None
        assert set(await cache.snapshot(driver, run)) == {"a"}

    asyncio.run(main())


def test_an_answer_is_built_once_per_snapshot_page_and_second() -> None:
    built: list[str] = []

    def build(text: str) -> Any:
        return lambda: built.append(text) or text.encode()

    answers = Answers()
    first, second = {"a": instance("a", "a" * 64)}, {"a": instance("a", "b" * 64)}
    assert answers.get([first], 100, "page 1", build("one")) == b"one"
    assert answers.get([first], 100, "page 1", build("again")) == b"one"  # 200 readers: one build
    assert answers.get([first], 100, "page 2", build("two")) == b"two"  # another page
    assert answers.get([dict(first)], 100, "page 1", build("equal")) == b"equal"  # a new snapshot
    assert answers.get([second], 100, "page 1", build("changed")) == b"changed"
    assert answers.get([second], 101, "page 1", build("later")) == b"later"  # uptimes moved on
    assert built == ["one", "two", "equal", "changed", "later"]


def test_answers_kept_are_bounded_whatever_pages_are_asked_for() -> None:
    answers = Answers()
    snapshot = {"a": instance("a", "a" * 64)}
    for page in range(10 * MAX_ANSWERS):
        answers.get([snapshot], 100, page, lambda page=page: str(page).encode())
    assert len(answers._bodies) <= MAX_ANSWERS
