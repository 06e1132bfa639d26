"""Wall time of one commit that changes 20 definitions spread over local, one agent and one swarm.

    python bench/spread.py --runs 3

A running `deployally serve` on this host's Docker engine; a second engine (a stand-in
remote host, in a network namespace of its own) with a real `deployally agent` on it; a
third engine made a single-node swarm, registered as a `swarm` server. One commit defines
20 busybox workers (healthcheck every 1 s, a repository template): 7 on local, 7 on the agent, 6 on the swarm.
Then each run commits a change to all 20 (20 update rollouts). Per commit, from the store:
commit -> every deployment recorded, overall and per server. Prints the cold commit and
the median (min/max) of the update runs. Needs root (the second engines, like dockerd).
Not a test: figures vary by machine.
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
import docker.errors
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from deployally.drivers.local.images import ensure_busybox
from deployally.store import Store
from engines import DockerEngine, remove_prefixed_services

SPREAD = {"local": 7, "far": 7, "hive": 6}  # definitions per server
WAIT_S = 300.0


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=Bench", "-c", "user.email=bench@localhost", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    ).stdout


# The built-in worker with a healthcheck timeout a loaded machine meets (its 2 s is not,
# at a load average of 40): what is measured is the spread, not the template.
TEMPLATE = """\
name: Bench Worker
description: busybox sleeping, healthy while sh answers
version: stable
taxonomy: {kingdom: assets, family: tools, species: busybox, variant: bench, specimen: stable}
deprecated: false
spec:
  image: {repository: busybox, tag: stable}
  user_inputs:
    message: {type: string, default: hello}
  profiles: [minimal, development, production]
  env:
    MESSAGE: "{{ params.message }}"
  command: ["sh", "-c", "exec sleep 2147483647"]
  healthcheck: {test: ["CMD", "true"], interval: 1s, timeout: 10s, retries: 3}
  stop_signal: SIGKILL
"""


def definition(name: str, server: str, n: int) -> str:
    return (f"name: {name}\ntemplate: tools/busybox/bench/stable\nserver: {server}\n"
            f"params:\n  message: run-{n}\n")


class Bench:
    """The engine, its servers and the repository one run of the bench uses."""

    def __init__(self, root: Path, prefix: str) -> None:
        self.root, self.prefix = root, prefix
        self.client = docker.from_env()
        self.image = ensure_busybox(self.client)
        driver = self.client.info().get("Driver")
        self.far, self.hive = DockerEngine(driver), DockerEngine(driver)
        self.serve: subprocess.Popen[bytes] | None = None
        self.agent: subprocess.Popen[bytes] | None = None
        self.http = requests.Session()
        self.url = ""
        self.work = root / "work"
        self.state = root / "state"
        self.names = {
            server: [f"{prefix}_{server}{i}" for i in range(count)] for server, count in SPREAD.items()
        }

    def start(self) -> None:
        for engine in (self.far, self.hive):
            engine.start()
            engine.load_image(self.client, self.image)
        self.hive.swarm_init()
        self.work.mkdir()
        git(self.work, "init", "-q", "-b", "main")
        (self.work / "deployally.yaml").write_text(f"network: {self.prefix}net\nhealth_timeout: 60s\n")
        (self.work / "definitions").mkdir()
        (self.work / "catalog" / "tools").mkdir(parents=True)
        (self.work / "catalog" / "tools" / "bench.yaml").write_text(TEMPLATE)
        (self.work / "definitions" / ".keep").write_text("")
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "-m", "empty")
        cli = [sys.executable, "-m", "deployally"]
        self.serve = subprocess.Popen(
            [*cli, "serve", "--repo", str(self.work), "--state-dir", str(self.state), "--port", "0",
             "--reconcile-interval", "600"],
            stdout=subprocess.DEVNULL, stderr=(self.root / "serve.log").open("w"),
        )
        deadline = time.monotonic() + 60
        while not (self.state / "engine.json").exists():
            if time.monotonic() > deadline or self.serve.poll() is not None:
                raise SystemExit(f"serve did not start: see {self.root / 'serve.log'}")
            time.sleep(0.1)
        self.url = json.loads((self.state / "engine.json").read_text())["url"]
        with Store(self.state) as store:
            self.http.headers["Authorization"] = f"Bearer {store.create_token('bench', 'admin')}"
        far = self.post("/servers", {"name": "far", "environment": "staging", "kind": "agent"})
        self.post("/servers", {"name": "hive", "environment": "production", "kind": "swarm",
                               "docker_host": self.hive.host})
        key_file = self.root / "far.key"
        key_file.write_text(far["api_key"])
        key_file.chmod(0o600)
        self.agent = subprocess.Popen(
            [*cli, "agent", "--url", self.url, "--key-file", str(key_file), "--docker-host",
             self.far.host, "--state-dir", str(self.root / "agent"), "--heartbeat", "1"],
            stdout=subprocess.DEVNULL, stderr=(self.root / "agent.log").open("w"),
        )
        self.wait(lambda: self.server("far")["status"] == "online", "the agent online")

    def post(self, path: str, body: dict[str, object]) -> dict[str, object]:
        answer = self.http.post(f"{self.url}/api/v1{path}", json=body, timeout=60)
        if answer.status_code >= 300:
            raise SystemExit(f"POST {path}: {answer.status_code} {answer.text}")
        return answer.json()["data"]  # type: ignore[no-any-return]

    def server(self, name: str) -> dict[str, object]:
        found = self.http.get(f"{self.url}/api/v1/servers", timeout=60).json()["data"]
        return next(s for s in found if s["name"] == name)  # type: ignore[no-any-return]

    def wait(self, check: object, what: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while not check():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for {what}; see {self.root}")
            time.sleep(0.1)

    def commit(self, n: int) -> dict[str, float]:
        """Commit revision n of every definition; seconds to each server's last deployment."""
        for server, names in self.names.items():
            for name in names:
                (self.work / "definitions" / f"{name}.yaml").write_text(definition(name, server, n))
        git(self.work, "add", "-A")
        began = time.time()
        git(self.work, "commit", "-q", "-m", f"run {n}")
        finished: dict[str, float] = {}

        def all_recorded() -> bool:
            with Store(self.state) as store:
                for server, names in self.names.items():
                    ends = []
                    for name in names:
                        record = store.definition(name)
                        if record is None:
                            return False
                        done = [d for d in store.deployments(definition_id=record.id, limit=3)
                                if d.revision == n + 1 and d.finished_at is not None]
                        if not done:
                            return False
                        if done[0].status.value != "success":
                            raise SystemExit(f"{name}: {done[0].status.value}; see {self.root}")
                        ends.append(done[0].finished_at.timestamp())  # type: ignore[union-attr]
                    finished[server] = max(ends) - began
            return True

        self.wait(all_recorded, f"commit {n} deployed")
        finished["all"] = max(finished.values())
        return finished

    def close(self) -> None:
        for process in (self.agent, self.serve):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    process.kill()
        for c in self.client.containers.list(all=True, filters={"name": self.prefix}):
            if c.name.startswith(self.prefix):
                c.remove(force=True)
        for v in self.client.volumes.list(filters={"name": self.prefix}):
            if v.name.startswith(self.prefix):
                v.remove(force=True)
        for net in self.client.networks.list(names=[f"{self.prefix}net"]):
            try:
                net.remove()
            except docker.errors.APIError as exc:  # Docker 20.10 can keep a stale endpoint
                print(f"network {net.name} left behind: {exc.explanation}", file=sys.stderr)
        if self.hive.running:
            remove_prefixed_services(self.hive.client, self.prefix)
        self.far.close()
        self.hive.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="update commits measured after the cold one")
    args = parser.parse_args()
    bench = Bench(Path(tempfile.mkdtemp(prefix="spread-")), "sp" + secrets.token_hex(3))
    try:
        bench.start()
        cold = bench.commit(0)
        updates = [bench.commit(n) for n in range(1, args.runs + 1)]
    finally:
        bench.close()
    print(f"spread: one commit changing {sum(SPREAD.values())} definitions "
          f"({', '.join(f'{n} on {s}' for s, n in SPREAD.items())}); cpu count {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'':8} {'cold':>7} {'update median':>14} {'min':>7} {'max':>7}")
    for key in ("all", *SPREAD):
        values = [u[key] for u in updates]
        print(f"{key:8} {cold[key]:7.2f} {statistics.median(values):14.2f} "
              f"{min(values):7.2f} {max(values):7.2f}  s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
