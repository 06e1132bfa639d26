"""Watch a repository's branch refs with watchdog, so a commit or push is seen at once.

Git moves a branch by writing `refs/heads/<name>.lock` and renaming it over the
ref (or by rewriting `packed-refs` after `git pack-refs`/`gc`); either way one
or more filesystem events fire. Bursts are debounced into one call.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger(__name__)

DEBOUNCE_S = 0.1


def _is_ref_path(git_dir: Path, raw: str | bytes) -> bool:
    """True for a branch ref or packed-refs; lock files are only the first half of a move."""
    path = Path(raw.decode() if isinstance(raw, bytes) else raw)
    if path.name.endswith(".lock"):
        return False
    if path == git_dir / "packed-refs":
        return True
    return path.is_relative_to(git_dir / "refs" / "heads")


class _RefEvents(FileSystemEventHandler):
    def __init__(self, watcher: RefWatcher) -> None:
        self._watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type in ("opened", "closed_no_write"):
            return  # reads change nothing; a directory event repeats its files' events
        paths = [event.src_path] + ([event.dest_path] if getattr(event, "dest_path", "") else [])
        if any(_is_ref_path(self._watcher.git_dir, p) for p in paths):
            self._watcher.poke()


class RefWatcher:
    """Calls `on_change()` (from a timer thread) shortly after a branch ref of `git_dir` moves."""

    def __init__(
        self, git_dir: Path, on_change: Callable[[], None], *, debounce_s: float = DEBOUNCE_S
    ) -> None:
        self.git_dir = Path(git_dir).resolve()
        self.on_change = on_change
        self.debounce_s = debounce_s
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RefWatcher({str(self.git_dir)!r}, running={self.running})"

    @property
    def running(self) -> bool:
        """True while the observer thread is alive."""
        return self._observer is not None and self._observer.is_alive()

    def start(self) -> None:
        """Start watching `refs/heads/` (recursively) and the git dir itself (for packed-refs)."""
        if self.running:
            return
        heads = self.git_dir / "refs" / "heads"
        heads.mkdir(parents=True, exist_ok=True)
        observer = Observer()
        handler = _RefEvents(self)
        observer.schedule(handler, str(heads), recursive=True)
        observer.schedule(handler, str(self.git_dir), recursive=False)
        observer.daemon = True
        observer.start()
        self._observer = observer
        log.debug("watching %s", heads)

    def stop(self) -> None:
        """Stop the observer and drop a pending call."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            if observer.is_alive():
                observer.join(5)

    def restart(self) -> None:
        """Watch again from scratch: after the repository was moved away and back, old watches are dead."""
        self.stop()
        self.start()

    def poke(self) -> None:
        """A ref moved: call `on_change` once the burst is over (each poke restarts the wait)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self.debounce_s, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            self._timer = None
        try:
            self.on_change()
        except Exception:  # a faulty callback must not kill the timer thread silently
            log.exception("ref watcher: on_change failed")
