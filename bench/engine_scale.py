"""The engine's own share of a sync at 50, 500 and 5,000 definitions, by phase, and its memory.

    python bench/engine_scale.py --definitions 50 500 5000

What is real: the git repository (one commit of N definition files on the busybox
template, then a commit changing one of them), the engine (`Workspace`, `Engine.sync`:
intake, render, plan, the applier, the SQLite store under a temporary state directory,
the journal, the webhook outbox). What is not: the server. It is the in-memory fake
driver (drivers/fake.py), whose list call returns its instances at once and whose
rollouts are instant, so the figures are the engine's time alone, never Docker's: 5,000
real containers do not fit this 2-core machine, and Docker's own share (a list call
of 5,000 containers, each create and start) is measured by bench/sync_scale.py and
bench/compare.py on a real engine.

Each size runs in a child process of its own (so its peak RSS is its own), in one
engine, as `deployally serve` would: (a) the cold sync of the first commit, (b) a no-op
sync (nothing changed: the periodic reconcile, the heal look), (c) a commit changing
one definition, (d) a no-op again. For each it prints the wall time and where it went
on the sync's thread: source (git processes), model (parse, validate, render), store
(SQLite reads and writes), plan (server intents), apply (waiting for the servers'
threads: their plan, the fake driver and the journal; shown beside it in thread-seconds),
other (the engine's own Python in between); then the store queries and the git processes
each made, the instances whose settings it looked at (an inspect each on Docker; that a
no-op asks Docker for one list call is tests/test_sync_scale.py's to show, on a real
engine), and the child's peak RSS (the fake server's instances and the bench's timers
included: an upper bound of the engine's own).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCENARIOS = ("cold", "no-op", "one changed", "no-op again")
PHASES = ("source", "model", "store", "plan", "apply", "other")


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", *args],
                   cwd=repo, check=True, capture_output=True)


def definition(name: str, message: str) -> str:
    return (f"name: {name}\ntemplate: tools/busybox/plain/stable\n"
            f"params: {{script: 'echo {message}; exec sleep 2147483647'}}\n")


def make_repo(repo: Path, count: int) -> list[str]:
    """A repository of `count` definitions in one commit; their names."""
    (repo / "definitions").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "deployally.yaml").write_text("network: benchnet\n")
    names = [f"bench{i:05d}" for i in range(count)]
    for name in names:
        (repo / "definitions" / f"{name}.yaml").write_text(definition(name, "one"))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", f"{count} definitions")
    return names


# ---------------------------------------------------------------- timing by phase


class Phases:
    """Exclusive time per phase and thread: a wrapped call's time goes to its phase, minus
    what nested wrapped calls took (each thread keeps its own stack)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spent: dict[tuple[str, bool], float] = defaultdict(float)  # (phase, on sync thread)
        self.local = threading.local()
        self.sync_thread: threading.Thread | None = None

    def reset(self) -> None:
        with self.lock:
            self.spent.clear()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        stack: list[list[float]] = self.local.__dict__.setdefault("stack", [])
        started = time.perf_counter()
        stack.append([0.0])  # time of nested phases
        try:
            yield
        finally:
            nested = stack.pop()[0]
            took = time.perf_counter() - started
            if stack:
                stack[-1][0] += took
            on_sync = threading.current_thread() is self.sync_thread
            with self.lock:
                self.spent[(name, on_sync)] += took - nested

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        inner = getattr(owner, attr)

        @functools.wraps(inner)
        def timed(*args: Any, **kw: Any) -> Any:
            with self.phase(name):
                return inner(*args, **kw)

        setattr(owner, attr, timed)


def instrument(phases: Phases, counts: Counter[str]) -> None:
    """Time the engine's steps by phase, and count git processes (wrapping, not replacing)."""
    import deployally.source.git as git_mod
    import deployally.sync.apply as apply_mod
    import deployally.sync.reconcile as reconcile_mod
    from deployally.model import desired
    from deployally.store import Store

    run = git_mod._run

    def counted(args: list[str], **kw: Any) -> Any:
        counts["git processes"] += 1
        return run(args, **kw)

    git_mod._run = counted  # type: ignore[assignment]
    phases.wrap(git_mod, "_run", "source")
    phases.wrap(desired, "load", "model")
    phases.wrap(reconcile_mod, "server_intent", "plan")
    phases.wrap(apply_mod, "plan_server", "plan")
    phases.wrap(reconcile_mod.Engine, "_apply_servers", "apply")
    for attr in dir(Store):
        if not attr.startswith("_") and callable(getattr(Store, attr)) and attr not in ("close",):
            phases.wrap(Store, attr, "store")


def count_queries(store: Any, counts: Counter[str]) -> None:
    """Count every statement the store's connections run (sqlite3's trace callback)."""
    opened = store._conn
    traced: set[int] = set()

    def conn() -> sqlite3.Connection:
        c: sqlite3.Connection = opened()
        if id(c) not in traced:
            traced.add(id(c))

            def seen(statement: str) -> None:
                # The statements the store sends, not those its triggers run (db.py's
                # definitions_generation).
                text = statement.lstrip().upper()
                if text.startswith(("SELECT", "INSERT", "UPDATE", "DELETE")) and not (
                    text.startswith("UPDATE") and "DEFINITIONS_GENERATION" in text
                ):
                    counts["store queries"] += 1

            c.set_trace_callback(seen)
        return c

    store._conn = conn


# ---------------------------------------------------------------- one size, in a child


def child(count: int, root: Path) -> dict[str, Any]:
    """Run the four syncs on a repository of `count` definitions; the figures as a dict."""
    from deployally.drivers.fake import FakeDriver, FakeHost
    from deployally.workspace import Workspace

    repo = root / "repo"
    names = make_repo(repo, count)
    phases, counts = Phases(), Counter[str]()
    instrument(phases, counts)
    host = FakeHost()

    def fake_local(server: Any, config: Any) -> FakeDriver:
        driver = FakeDriver(host, owner=ws.engine_id, server=server.name, config=config)
        looks = driver.settings

        def settings(instance: Any) -> Any:
            counts["instance settings looked at"] += 1  # one inspect each on Docker
            return looks(instance)

        driver.settings = settings  # type: ignore[method-assign]
        return driver

    ws = Workspace.open(repo, root / "state", driver_factories={"local": fake_local}, max_parallel=4)
    count_queries(ws.store, counts)
    phases.sync_thread = threading.current_thread()
    out: dict[str, Any] = {"definitions": count, "scenarios": {}}
    for scenario in SCENARIOS:
        if scenario == "one changed":
            (repo / "definitions" / f"{names[0]}.yaml").write_text(definition(names[0], "two"))
            git(repo, "commit", "-qam", "change one")
        phases.reset()
        counts.clear()
        started = time.perf_counter()
        report = ws.engine.sync()
        wall = time.perf_counter() - started
        expected = {"cold": count, "one changed": 1}.get(scenario, 0)
        done = [d for d in report.deployments if d.status.value == "success"]
        if len(done) != expected or len(report.deployments) != expected or report.errors:
            raise SystemExit(f"{scenario}: {len(report.deployments)} deployments, "
                             f"{len(done)} succeeded, errors {report.errors[:2]}; expected {expected}")
        if scenario == "one changed":
            assert report.deployments[0].definition_name == names[0]
        on_sync = {p: phases.spent.get((p, True), 0.0) for p in PHASES[:-1]}
        on_sync["other"] = max(0.0, wall - sum(on_sync.values()))
        threads = {p: t for (p, sync), t in phases.spent.items() if not sync and t > 0}
        out["scenarios"][scenario] = {
            "wall_s": wall, "phases": on_sync, "apply_threads": threads, "counts": dict(counts),
        }
    ws.close()
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


# ---------------------------------------------------------------- printing


def show(result: dict[str, Any]) -> None:
    print(f"\n{result['definitions']} definitions (peak RSS {result['peak_rss_mb']:.0f} MB)")
    for scenario, fig in result["scenarios"].items():
        parts = ", ".join(f"{p} {fig['phases'][p]:.3f}" for p in PHASES if fig["phases"][p] >= 0.0005)
        counts = fig["counts"]
        print(f"  {scenario:12} {fig['wall_s']:8.3f} s  = {parts}")
        if fig["apply_threads"]:
            inner = ", ".join(f"{p} {t:.3f}" for p, t in sorted(fig["apply_threads"].items()))
            print(f"  {'':12} {'':8}    servers' threads (thread-s): {inner}")
        print(f"  {'':12} {'':8}    {counts.get('store queries', 0)} store queries, "
              f"{counts.get('git processes', 0)} git processes, "
              f"{counts.get('instance settings looked at', 0)} instances' settings looked at")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--definitions", type=int, nargs="+", default=[50, 500, 5000])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(child(args.child, Path(tmp))))
        return
    print(f"engine_scale: sizes {args.definitions}, cpu count {os.cpu_count()}, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    for count in args.definitions:
        done = subprocess.run([sys.executable, __file__, "--child", str(count)],
                              check=False, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{count} definitions: {done.stderr.strip() or done.stdout.strip()}")
        show(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"\nload average at the end {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
