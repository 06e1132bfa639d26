"""How long a sync takes with many definitions: cold, no-op, and one changed.

    python bench/sync_scale.py --definitions 100 [--min-ready 0s]

Deploys N busybox definitions to the local Docker engine from a fresh git
repository, then times a no-op sync and a sync after one definition changed,
and prints the figures (the same three docker-compose is measured by in
DESIGN.md). Needs the `busybox:stable` image (the test suite or `deployally
demo` makes it). Everything it creates carries a prefix of its own run
(`bench<pid>x<random>_`), so runs side by side never touch each other's, and
exactly what it created (this run's engine's containers, its network) is removed
at the end.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import tempfile
import time
from pathlib import Path

import docker

from deployally.store import Store
from deployally.workspace import Workspace


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", *args],
                   cwd=repo, check=True, capture_output=True)


def definition(name: str, message: str) -> str:
    return (f"name: {name}\ntemplate: tools/busybox/plain/stable\n"
            f"params: {{script: 'echo {message}; exec sleep 2147483647'}}\n")


def timed_sync(repo: Path, state: Path, parallel: int) -> tuple[float, int]:
    ws = Workspace.open(repo, state, max_parallel=parallel)
    started = time.perf_counter()
    report = ws.engine.sync()
    elapsed = time.perf_counter() - started
    ws.close()
    failed = [d for d in report.deployments if d.status.value != "success"]
    if failed:
        raise SystemExit(f"{len(failed)} deployments failed, e.g. {failed[0]}")
    return elapsed, len(report.deployments)


def load() -> str:
    """The load average as a figure is printed: the machine may be shared."""
    one, five, _ = os.getloadavg()
    return f" (load average {one:.1f}, {five:.1f})"


def run_prefix() -> str:
    """A prefix no other run has: this process's id and a random part."""
    return f"bench{os.getpid()}x{secrets.token_hex(2)}_"


def remove_run(client: docker.DockerClient, state: Path, prefix: str, network: str) -> None:
    """Remove what this run created: its engine's containers (by owner label), the volumes
    and the network named with its prefix; nothing of another run or of anyone else."""
    owner = None
    if state.exists():
        with Store(state) as store:
            owner = store.get_meta("engine_id")
    if owner:
        owned = {"label": f"com.deployally.owner={owner}"}
        for c in client.containers.list(all=True, filters=owned):
            if c.name.startswith(prefix):
                c.remove(force=True)
    # Docker's name filters match substrings: keep only names that start with the prefix.
    for v in client.volumes.list(filters={"name": prefix}):
        if v.name.startswith(prefix):
            v.remove(force=True)
    for net in client.networks.list(names=[network]):
        if net.name == network:
            net.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--definitions", type=int, default=100)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--min-ready", help="deployally.yaml's min_ready (e.g. 0s); default: its own")
    args = parser.parse_args()
    client = docker.from_env()
    with tempfile.TemporaryDirectory() as tmp:
        repo, state = Path(tmp) / "repo", Path(tmp) / "state"
        (repo / "definitions").mkdir(parents=True)
        git(repo, "init", "-q", "-b", "main")
        prefix = run_prefix()
        network = f"{prefix}net"
        min_ready = f"min_ready: {args.min_ready}\n" if args.min_ready else ""
        (repo / "deployally.yaml").write_text(f"network: {network}\n{min_ready}")
        names = [f"{prefix}{i:04d}" for i in range(args.definitions)]
        print(f"sync_scale: prefix {prefix}, {args.definitions} definitions, "
              f"parallel {args.parallel}, min_ready {args.min_ready or 'the default'}, "
              f"cpu count {os.cpu_count()}")
        for name in names:
            (repo / "definitions" / f"{name}.yaml").write_text(definition(name, "one"))
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "many definitions")
        try:
            cold, n = timed_sync(repo, state, args.parallel)
            print(f"cold sync, {n} definitions created: {cold:.2f} s{load()}")
            noop, n = timed_sync(repo, state, args.parallel)
            print(f"no-op sync ({n} deployments):          {noop:.2f} s{load()}")
            (repo / "definitions" / f"{names[0]}.yaml").write_text(definition(names[0], "two"))
            git(repo, "commit", "-qam", "change one")
            one, n = timed_sync(repo, state, args.parallel)
            print(f"one definition changed ({n} deployment): {one:.2f} s{load()}")
        finally:
            remove_run(client, state, prefix, network)


if __name__ == "__main__":
    main()
