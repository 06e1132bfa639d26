"""The ref watcher on real repositories: commits, pushes and packed-refs are seen; lock files alone are not."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import wait_until
from deployally.source.watcher import RefWatcher


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=T", "-c", "user.email=t@example.com", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    ).stdout


class Calls:
    def __init__(self) -> None:
        self.count = 0
        self.event = threading.Event()

    def __call__(self) -> None:
        self.count += 1
        self.event.set()


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "commit", "-q", "--allow-empty", "-m", "first")
    return path


def watching(git_dir: Path) -> tuple[RefWatcher, Calls]:
    calls = Calls()
    watcher = RefWatcher(git_dir, calls)
    watcher.start()
    return watcher, calls


def test_a_commit_in_a_working_repo_is_seen(work: Path) -> None:
    watcher, calls = watching(work / ".git")
    try:
        git(work, "commit", "-q", "--allow-empty", "-m", "second")
        wait_until(lambda: calls.count, 10, "the watcher to call back after a commit")
    finally:
        watcher.stop()
    assert not watcher.running


def test_a_push_to_a_bare_repo_is_seen(work: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(work, "push", "-q", str(bare), "main")
    watcher, calls = watching(bare)
    try:
        git(work, "commit", "-q", "--allow-empty", "-m", "pushed")
        git(work, "push", "-q", str(bare), "main")
        wait_until(lambda: calls.count, 10, "the watcher to call back after a push")
    finally:
        watcher.stop()


def test_packed_refs_are_seen(work: Path) -> None:
    watcher, calls = watching(work / ".git")
    try:
        git(work, "pack-refs", "--all")
        wait_until(lambda: calls.count, 10, "the watcher to call back after pack-refs")
    finally:
        watcher.stop()
    assert (work / ".git" / "packed-refs").exists()


def test_a_lock_file_alone_is_not_a_change_and_a_burst_is_one_call(work: Path) -> None:
    watcher, calls = watching(work / ".git")
    try:
        (work / ".git" / "refs" / "heads" / "main.lock").write_text("")
        (work / ".git" / "index.lock").write_text("")
        time.sleep(0.5)  # long enough for a debounced call to have fired, were there one
        assert calls.count == 0
        (work / ".git" / "refs" / "heads" / "main.lock").unlink()
        (work / ".git" / "index.lock").unlink()
        watcher.debounce_s = 2.0  # a generous window, so the burst lands inside it
        for n in range(3):
            git(work, "commit", "-q", "--allow-empty", "-m", f"burst {n}")
        wait_until(lambda: calls.count, 15, "the debounced call after a burst")
        time.sleep(2.5)
        assert calls.count == 1
    finally:
        watcher.stop()


def test_restart_watches_a_repository_moved_away_and_back(work: Path, tmp_path: Path) -> None:
    watcher, calls = watching(work / ".git")
    try:
        aside = tmp_path / "aside"
        work.rename(aside)
        subprocess.run(["cp", "-a", str(aside), str(work)], check=True)
        watcher.restart()
        git(work, "commit", "-q", "--allow-empty", "-m", "after the move")
        wait_until(lambda: calls.count, 10, "the watcher to call back after a restart")
    finally:
        watcher.stop()
