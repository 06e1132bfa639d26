"""Rendering under a budget of time and memory, in a reusable worker process.

A repository template is code: nested loops run 10^10 steps, and `{% set b = a ~ a %}`
doubles a string with no Jinja hook in the way. Python cannot interrupt a C-level string
operation from another thread, so `render` runs in a child process that limits its own
address space and CPU time, and the caller waits on it with a deadline; a render that
blows either is killed and becomes a RenderError naming the definition and the template.
The worker is reused: starting one costs about as much as a hundred renders.

Only what a repository wrote runs there. A built-in template is our own code, and a
definition's params reach Jinja as values, never as template source: such a render,
with no config files from the repository, is bounded by the files' own size limits and
runs in-process, so `validate` and the hooks start no worker for it.
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
import resource
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import IO, Any, BinaryIO

from deployally.errors import DeployAllyError, RenderError, ValidationError, ValidationErrors
from deployally.model.render import render
from deployally.types import (
    DEFAULT_MIN_READY_S,
    DEFAULT_NETWORK,
    ContainerSpec,
    Definition,
    SecretVersions,
    Template,
)

# A render takes about a millisecond of CPU; two seconds is a thousand times that, room
# for large config files, and a bound on how long one template can hold up a sync, a
# validate or a pre-receive hook. CPU time, counted by the kernel in the worker, so a busy
# machine (which stretches wall time, not CPU time) never fails an honest render.
RENDER_CPU_S = 2
# The wall-clock bound behind it, for a worker that gets no CPU at all.
RENDER_WALL_S = 30.0
# The worker starts at about 45 MiB of address space and a render needs a few more; this
# leaves room for large config files and stops a string doubling at about 100 MiB.
RENDER_MEMORY_BYTES = 256 << 20
# A rendered spec travels back to the engine and into the store and Docker: far above any
# real one (config files included), far below what would strain the engine.
MAX_RESULT_BYTES = 16 << 20
# Inputs that blew the budget once are refused at once after that, so a definition the
# engine retries every sync does not cost the whole budget each time.
_BLOWN_KEPT = 256

_HEADER = struct.Struct("!I")


class RenderWorkerError(DeployAllyError):
    """The render worker could not be started: a fault of this host, not of a template."""


# How long a new worker may take to import the renderer (seconds on a loaded machine).
_START_S = 60.0
_READY = b"R"


class _Worker:
    """One child process rendering requests one at a time."""

    def __init__(self) -> None:
        engine_dir = str(Path(__file__).resolve().parents[2])
        path = os.environ.get("PYTHONPATH")
        env = {**os.environ, "PYTHONPATH": engine_dir + (os.pathsep + path if path else "")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "deployally.model.render_budget"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self._ready = False

    def wait_ready(self) -> None:
        """Wait for the worker's imports (it starts while the caller parses files)."""
        if self._ready:
            return
        # Starting is not rendering: the budget begins once the worker says it is ready.
        assert self.proc.stdout is not None
        if _read(self.proc.stdout, len(_READY), time.monotonic() + _START_S) != _READY:
            self.stop()
            raise RenderWorkerError(
                f"the render worker ({sys.executable} -m deployally.model.render_budget) "
                f"did not start within {_START_S:g} s"
            )
        self._ready = True

    def alive(self) -> bool:
        return self.proc.poll() is None

    def ask(self, frame: bytes, deadline: float) -> bytes | None:
        """The reply to one request, or None when the deadline passed or the worker died."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        try:
            self.proc.stdin.write(_HEADER.pack(len(frame)) + frame)
            self.proc.stdin.flush()
        except OSError:  # it died: its own CPU limit, or the kernel's memory killer
            return None
        header = _read(self.proc.stdout, _HEADER.size, deadline)
        if header is None:
            return None
        (size,) = _HEADER.unpack(header)
        return _read(self.proc.stdout, size, deadline)

    def stop(self) -> int:
        """End the worker; its exit status (negative: the signal that ended it)."""
        if self.proc.poll() is None:
            self.proc.kill()
        status = self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
        return status


def _read(stream: IO[bytes], size: int, deadline: float) -> bytes | None:
    """Exactly `size` bytes from the worker, or None at the deadline or its end."""
    data = b""
    fd = stream.fileno()
    # poll, not select: select() refuses a descriptor above 1023, which a busy engine has.
    readable = select.poll()
    readable.register(fd, select.POLLIN)
    while len(data) < size:
        left = deadline - time.monotonic()
        if left <= 0 or not readable.poll(left * 1000):
            return None
        chunk = os.read(fd, size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def needs_budget(definition: Definition, template: Template) -> bool:
    """Does this render run template source a repository wrote (a repository template or a
    definition's own config files)? Only those need the worker's limits."""
    return not template.builtin or bool(definition.files)


class RenderBudget:
    """Renders in the worker, one request at a time; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._worker: _Worker | None = None
        self._blown: OrderedDict[bytes, str] = OrderedDict()

    def __repr__(self) -> str:
        return f"RenderBudget({RENDER_CPU_S} s of CPU, {RENDER_MEMORY_BYTES >> 20} MiB)"

    def render(
        self,
        definition: Definition,
        template: Template,
        *,
        repo_files: Mapping[str, str],
        secret_versions: SecretVersions | Mapping[str, int],
        network: str = DEFAULT_NETWORK,
        publish_address: str | None = None,
        min_ready_s: float = DEFAULT_MIN_READY_S,
    ) -> ContainerSpec:
        """`render` with the same arguments and errors, bounded in time and memory."""
        if not needs_budget(definition, template):
            return render(
                definition,
                template,
                repo_files=repo_files,
                secret_versions=secret_versions,
                network=network,
                publish_address=publish_address,
                min_ready_s=min_ready_s,
            )
        versions = (  # plain dicts travel to the worker whatever mapping the caller holds
            replace(secret_versions, current=dict(secret_versions.current))
            if isinstance(secret_versions, SecretVersions)
            else dict(secret_versions)
        )
        frame = pickle.dumps(
            (definition, template, dict(repo_files), versions, network, publish_address, min_ready_s),
            protocol=pickle.HIGHEST_PROTOCOL,
        )
        key = hashlib.sha256(frame).digest()
        with self._lock:
            blown = self._blown.get(key)
            if blown is None:
                reply, blown, remember = self._ask(frame)
                if reply is not None:
                    kind, value = pickle.loads(reply)
                    if kind != "budget":
                        return _result(kind, value)
                    blown, remember = value, True
                if remember:  # the render's own doing, the same on every try
                    self._blown[key] = blown
                    while len(self._blown) > _BLOWN_KEPT:
                        self._blown.popitem(last=False)
        raise _over_budget(definition, template, blown)

    def close(self) -> None:
        """Stop the worker (a new one starts on the next render)."""
        with self._lock:
            if self._worker is not None:
                self._worker.stop()
                self._worker = None

    def prestart(self) -> None:
        """Start the worker now, without waiting: its start overlaps the caller's parsing."""
        with self._lock:
            if self._worker is None or not self._worker.alive():
                self._worker = _Worker()

    def _ask(self, frame: bytes) -> tuple[bytes | None, str, bool]:
        """The worker's reply; or None, why there is none, and whether the render caused it."""
        if self._worker is None or not self._worker.alive():
            self._worker = _Worker()
        worker = self._worker
        try:
            worker.wait_ready()
        except RenderWorkerError:
            self._worker = None
            raise
        deadline = time.monotonic() + RENDER_WALL_S
        reply = worker.ask(frame, deadline)
        if reply is not None:
            return reply, "", False
        # Over its CPU limit (the kernel's SIGXCPU), over the wall-clock bound (a machine too
        # busy to run it, which says nothing about the template), or gone: start afresh.
        self._worker = None
        late = time.monotonic() >= deadline
        status = worker.stop()
        if status == -signal.SIGXCPU:
            return None, f"took more than its budget of {RENDER_CPU_S} s of CPU time", True
        if late:
            return None, f"did not finish within {RENDER_WALL_S:g} s", False
        return None, f"stopped the render worker (exit status {status}); try again", False


def _result(kind: str, value: Any) -> ContainerSpec:
    """The spec the worker rendered, or the errors it raised, raised here."""
    if kind == "spec":
        assert isinstance(value, ContainerSpec)
        return value
    errors = [RenderError(*args) for args in value]
    raise errors[0] if len(errors) == 1 else ValidationErrors(list(errors))


def _over_budget(definition: Definition, template: Template, why: str) -> RenderError:
    return RenderError(
        definition.path,
        "",
        f"rendering it with the template {template.source} {why}; "
        "a loop, a filter or a string in the template does too much work",
    )


# ---------------------------------------------------------------- the worker's side


def _limit_memory() -> None:
    try:
        resource.setrlimit(resource.RLIMIT_AS, (RENDER_MEMORY_BYTES, RENDER_MEMORY_BYTES))
    except (ValueError, OSError):  # a platform without RLIMIT_AS: the deadline still holds
        pass


def _limit_cpu(seconds: int) -> None:
    """Have the kernel end this process (SIGXCPU) after about `seconds` more CPU time."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    # The limit is in whole seconds of the process's total: round the time spent up.
    soft = math.ceil(used.ru_utime + used.ru_stime) + seconds
    hard = resource.getrlimit(resource.RLIMIT_CPU)[1]
    if hard == resource.RLIM_INFINITY or soft <= hard:
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _answer(request: bytes) -> bytes:
    definition, template, repo_files, secret_versions, network, publish_address, min_ready_s = (
        pickle.loads(request)
    )
    try:
        spec = render(
            definition,
            template,
            repo_files=repo_files,
            secret_versions=secret_versions,
            network=network,
            publish_address=publish_address,
            min_ready_s=min_ready_s,
        )
        reply = pickle.dumps(("spec", spec), protocol=pickle.HIGHEST_PROTOCOL)
    except ValidationErrors as exc:
        reply = pickle.dumps(("errors", [_args(e) for e in exc.errors]))
    except ValidationError as exc:
        reply = pickle.dumps(("errors", [_args(exc)]))
    if len(reply) > MAX_RESULT_BYTES:
        why = f"made a spec of {len(reply) >> 20} MiB, above the {MAX_RESULT_BYTES >> 20} MiB bound"
        reply = pickle.dumps(("budget", why))
    return reply


def _args(error: ValidationError) -> tuple[str, str, str, int | None]:
    return (error.path, error.field, error.message, error.line)


def serve_renders(requests: BinaryIO, replies: BinaryIO) -> None:
    """The worker's loop: one framed request in, one framed reply out, until end of input."""
    # Ctrl-C and a service manager's SIGTERM reach the whole process group; the engine
    # finishes its sync first, so the worker lives until the engine closes its input.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _limit_memory()
    replies.write(_READY)
    replies.flush()
    while True:
        header = requests.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return  # the engine is gone
        request = requests.read(_HEADER.unpack(header)[0])
        _limit_cpu(RENDER_CPU_S)
        try:
            reply = _answer(request)
        except MemoryError:
            why = f"needed more than its budget of {RENDER_MEMORY_BYTES >> 20} MiB of memory"
            reply = pickle.dumps(("budget", why))
        replies.write(_HEADER.pack(len(reply)) + reply)
        replies.flush()


_shared: RenderBudget | None = None
_shared_lock = threading.Lock()


def shared() -> RenderBudget:
    """The process's render budget: one worker, started on first use, reused by every caller."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = RenderBudget()
        return _shared


if __name__ == "__main__":
    try:
        serve_renders(sys.stdin.buffer, sys.stdout.buffer)
    except BrokenPipeError:
        # The engine (a push hook's `validate`, say) ended before it read a reply: nothing to
        # say, and nothing to flush at exit, which would print a traceback to the pusher.
        os._exit(0)
