"""Group commit: many threads' small writes to the store, made by one thread in one transaction.

A sync of a hundred definitions writes a thousand rows (each deployment's pending, running and
outcome, and its log lines); one transaction each would queue every rollout behind SQLite's
write lock, a Docker slot held meanwhile. Here a writer thread takes whatever is queued, makes
it in one transaction (`Database.batch`), and only then says each write is done: a caller
that waits for its write (a deployment's running record, before its container is created)
knows it is durable, as before, while the writes queued beside it cost no commit of their own.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from deployally.errors import StoreUnavailable
from deployally.store.db import Database

T = TypeVar("T")

MAX_BATCH = 500  # writes per transaction: a commit stays short enough for readers' snapshots
IDLE_S = 1.0  # the writer thread ends after this long with nothing to write


@dataclass
class _Write:
    run: Callable[[], Any]
    done: Future[Any] = field(default_factory=Future)
    # Kept while the store refuses writes (a log line): tried again with the next batch,
    # never failed; a caller that does not wait for it cannot be told.
    keep: bool = False


class BatchWriter:
    """Makes the writes handed to it in order, in batches of one transaction each, on its own thread."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._cond = threading.Condition()
        self._queue: deque[_Write] = deque()
        self._thread: threading.Thread | None = None
        # The last batch failed: its kept writes wait for one that is not (or any new write).
        self._kept_failing = False

    def __repr__(self) -> str:
        return f"BatchWriter({self._db!r}, queued={len(self._queue)})"

    def write(self, run: Callable[[], T]) -> T:
        """Make `run`'s writes and return its result once they are committed; its error
        (StoreUnavailable when the store refuses the batch) is raised here."""
        future: Future[T] = self._submit(_Write(run))
        return future.result()

    def keep(self, run: Callable[[], object]) -> None:
        """Make `run`'s writes with the next batch, without waiting; kept in memory while the
        store refuses writes, and made before any write handed over after it."""
        self._submit(_Write(run, keep=True))

    def _submit(self, item: _Write) -> Future[Any]:
        with self._cond:
            self._queue.append(item)
            self._kept_failing = False
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
                self._thread.start()
            self._cond.notify()
        return item.done

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._idle():
                    if not self._cond.wait(IDLE_S) and self._idle():
                        self._thread = None  # the next write starts another
                        return
                batch = [self._queue.popleft() for _ in range(min(MAX_BATCH, len(self._queue)))]
            self._commit(batch)

    def _idle(self) -> bool:
        """Nothing to write, or only kept writes the store refused just now (until a new one)."""
        if self._kept_failing and all(item.keep for item in self._queue):
            return True
        return not self._queue

    def _commit(self, batch: list[_Write]) -> None:
        """One transaction for the batch; each caller told only once it is committed."""
        outcomes: list[tuple[_Write, Any, BaseException | None]] = []
        try:
            with self._db.batch():
                for item in batch:
                    try:
                        outcomes.append((item, item.run(), None))
                    except StoreUnavailable:
                        raise
                    except Exception as exc:  # noqa: BLE001 - this write's own error: its caller's
                        outcomes.append((item, None, exc))
        except StoreUnavailable as exc:
            kept = [item for item in batch if item.keep]
            for item in batch:
                if not item.keep:
                    item.done.set_exception(exc)
            with self._cond:
                self._queue.extendleft(reversed(kept))
                self._kept_failing = bool(kept)
            return
        except Exception as exc:  # noqa: BLE001 - a bug, or the store closed: every caller hears it
            for item in batch:
                if not item.done.done():
                    item.done.set_exception(exc)
            return
        for item, result, error in outcomes:
            if error is not None:
                item.done.set_exception(error)
            else:
                item.done.set_result(result)
