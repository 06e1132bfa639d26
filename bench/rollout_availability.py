"""How many services are down at once while many definitions with volumes are updated.

    python bench/rollout_availability.py --definitions 30

Deploys N busybox workers (each with a /data volume and a healthcheck, so an update
stops the old container before the new one starts) from a fresh git repository, then
changes all of them in one commit and samples Docker every 0.1 s during that sync: a
service is up while its container, or its `<name>.old`, is running. Prints the most
services down at once and when. Everything it creates carries a prefix of this run alone (`benchav<pid>x<random>x`) and
is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import docker
import docker.errors

from deployally.workspace import Workspace

# A prefix of this run alone (its pid and a random part): runs side by side, or another
# tool's "benchav" containers, are never counted or removed by this one.
PREFIX = f"benchav{os.getpid()}x{secrets.token_hex(2)}x"
NETWORK = f"{PREFIX}net"


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", *args],
                   cwd=repo, check=True, capture_output=True)


def definition(name: str, message: str) -> str:
    return (f"name: {name}\ntemplate: tools/busybox/worker/stable\n"
            f"params: {{message: {message}, script: 'exec sleep 2147483647'}}\n")


def write_all(repo: Path, names: list[str], message: str) -> None:
    for name in names:
        (repo / "definitions" / f"{name}.yaml").write_text(definition(name, message))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", f"all {message}")


def services_up(client: docker.DockerClient, names: set[str]) -> int:
    rows = client.api.containers(filters={"name": PREFIX, "status": "running"})
    return len({row["Names"][0].lstrip("/").removesuffix(".old") for row in rows} & names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--definitions", type=int, default=30)
    args = parser.parse_args()
    client = docker.from_env()
    names = [f"{PREFIX}{i:03d}" for i in range(args.definitions)]
    with tempfile.TemporaryDirectory() as tmp:
        repo, state = Path(tmp) / "repo", Path(tmp) / "state"
        (repo / "definitions").mkdir(parents=True)
        git(repo, "init", "-q", "-b", "main")
        (repo / "deployally.yaml").write_text(f"network: {NETWORK}\n")
        try:
            write_all(repo, names, "one")
            ws = Workspace.open(repo, state)
            ws.engine.sync()
            write_all(repo, names, "two")
            samples: list[tuple[float, int]] = []
            started = time.monotonic()
            sync = threading.Thread(target=ws.engine.sync)
            sync.start()
            while sync.is_alive():
                samples.append((time.monotonic() - started, services_up(client, set(names))))
                time.sleep(0.1)
            took = time.monotonic() - started
            ws.close()
            at, fewest = min(samples, key=lambda s: s[1])
            print(f"update of {len(names)} definitions with volumes: {took:.1f} s, "
                  f"{len(samples)} samples")
            print(f"most services down at once: {len(names) - fewest} of {len(names)} "
                  f"(at {at:.1f} s)")
        finally:
            for c in client.api.containers(all=True, filters={"name": PREFIX}):
                client.api.remove_container(c["Id"], force=True)
            for v in client.volumes.list(filters={"name": PREFIX}):
                v.remove(force=True)
            for net in client.networks.list(names=[NETWORK]):
                try:
                    net.remove()
                except docker.errors.APIError as exc:  # Docker 20.10 can keep a stale endpoint
                    print(f"could not remove network {NETWORK}: {exc.explanation}")


if __name__ == "__main__":
    main()
