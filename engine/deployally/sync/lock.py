"""Cross-process sync exclusivity: one flock on `state_dir/sync.lock`.

A sync run by a git hook and a running `deployally serve` share a state
directory; the lock makes them take turns instead of applying at once.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = "sync.lock"


@contextmanager
def sync_lock(state_dir: Path) -> Iterator[None]:
    """Hold the state directory's sync lock for the block, waiting while another process has it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        # flock belongs to this open file description, so two engines in one process
        # exclude each other too, and the kernel drops it when a holder is killed.
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def is_locked(state_dir: Path) -> bool:
    """True while some process holds the sync lock (a probe; never waits)."""
    path = state_dir / LOCK_FILE
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
