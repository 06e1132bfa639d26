"""Commit-to-running latency of `git push` to a bare repository watched by a running `deployally serve`.

    python bench/push_latency.py --pushes 10

Each push changes one busybox worker definition (healthcheck every 1 s), so
every push is one update rollout. Per push, from the store's timestamps:

  git+hooks  git push started -> branch ref moved (transfer + pre-receive validation)
  engine     ref moved -> apply started (watcher, sync, git diff, render, plan, record)
  docker     apply started -> deployment recorded (create, start, health, remove old)
  total      git push started -> deployment recorded

and prints the median (and min/max) over the pushes. Not a test: figures vary by machine.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import docker

from deployally.drivers.local.images import ensure_busybox
from deployally.store import Store


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=Bench", "-c", "user.email=bench@localhost", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    ).stdout


def definition(name: str, n: int) -> str:
    return (f"name: {name}\ntemplate: tools/busybox/worker/stable\n"
            f"params:\n  message: push-{n}\n  script: sleep 2147483647\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=10, help="measured pushes (>= 10 for a median)")
    args = parser.parse_args()
    client = docker.from_env()
    ensure_busybox(client)
    prefix = "pl" + secrets.token_hex(3)
    name = f"{prefix}_web"
    root = Path(tempfile.mkdtemp(prefix="push-latency-"))
    bare, work, state = root / "deploy.git", root / "work", root / "state"
    cli = [sys.executable, "-m", "deployally"]
    subprocess.run([*cli, "init", "--bare", str(bare)], check=True, capture_output=True)
    git(root, "clone", "-q", str(bare), str(work))
    (work / "deployally.yaml").write_text(f"network: {prefix}net\nhealth_timeout: 30s\n")
    (work / "definitions").mkdir(exist_ok=True)
    serve = subprocess.Popen(
        [*cli, "serve", "--repo", str(bare), "--state-dir", str(state), "--port", "0",
         "--reconcile-interval", "600"],
        stdout=subprocess.DEVNULL, stderr=(root / "serve.log").open("w"),
    )
    owner = None
    rows: list[dict[str, float]] = []
    try:
        deadline = time.monotonic() + 60
        while not (state / "engine.json").exists():
            if time.monotonic() > deadline or serve.poll() is not None:
                raise SystemExit(f"serve did not start: see {root / 'serve.log'}")
            time.sleep(0.1)
        for n in range(args.pushes + 1):  # push 0 creates the container; it is not measured
            (work / "definitions" / f"{name}.yaml").write_text(definition(name, n))
            git(work, "add", "-A")
            git(work, "commit", "-q", "-m", f"push {n}")
            t0 = time.time()
            pushed = subprocess.run(["git", "push", "-q", "origin", "main"], cwd=work,
                                    capture_output=True, text=True, check=False)
            if f"revision {n + 1} deployed" not in pushed.stderr + pushed.stdout:
                raise SystemExit(f"push {n} did not deploy:\n{pushed.stdout}{pushed.stderr}")
            ref_moved = (bare / "refs" / "heads" / "main").stat().st_mtime
            with Store(state) as store:
                owner = store.get_meta("engine_id")
                record = store.definition(name)
                assert record is not None
                d = next(x for x in store.deployments(definition_id=record.id, limit=5)
                         if x.revision == n + 1)
            assert d.started_at and d.finished_at
            if n == 0:
                continue
            started, finished = d.started_at.timestamp(), d.finished_at.timestamp()
            rows.append({
                "git+hooks": ref_moved - t0,
                "engine": started - ref_moved,
                "docker": finished - started,
                "total": finished - t0,
            })
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(60)
        if owner:
            for c in client.containers.list(all=True, filters={"label": f"com.deployally.owner={owner}"}):
                c.remove(force=True)
        # Docker's name filters match substrings: only names that start with this run's prefix.
        for v in client.volumes.list(filters={"name": prefix}):
            if v.name.startswith(prefix):
                v.remove(force=True)
        for net in client.networks.list(names=[f"{prefix}net"]):
            if net.name == f"{prefix}net":
                net.remove()
    print(f"push_latency: {len(rows)} pushes to a bare repo watched by `deployally serve` "
          f"(one busybox worker update each; cpu count {os.cpu_count()})")
    print(f"{'':10} {'median':>8} {'min':>8} {'max':>8}")
    for key in ("git+hooks", "engine", "docker", "total"):
        values = [r[key] for r in rows]
        print(f"{key:10} {statistics.median(values):8.3f} {min(values):8.3f} {max(values):8.3f}  s")
    engine, docker_s = (statistics.median(r[k] for r in rows) for k in ("engine", "docker"))
    print(f"engine share of engine+docker: {engine / (engine + docker_s):.1%}")
    print(json.dumps({k: round(statistics.median(r[k] for r in rows), 4) for k in rows[0]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
