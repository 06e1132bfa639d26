"""Commit to running on an agent's host against the same definition on the engine's own Docker.

    python bench/agent.py --rounds 10

Starts a second Docker engine (tests/engines.py: a dockerd of its own in its own network
namespace) as the agent's host, a `deployally serve` on a fresh repository and a `deployally
agent` (default 10 s heartbeat: calls reach it through its long poll at once) pointed at it.
Each round commits a change to one busybox worker definition on `local`, then the same change
to its twin on the agent's server, and times commit -> its deployment recorded success (the
new container created, started and healthy). Prints the median (min/max) of each, the agent's
overhead (median of the per-round differences), and the agent's RSS idle and at its peak
while deploying. Not a test: figures vary by machine.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import docker
import docker.errors
import requests

from deployally.drivers.local.images import ensure_busybox
from deployally.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from engines import DockerEngine  # the tests' second engine, reused as is

TIMEOUT_S = 120.0


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=Bench", "-c", "user.email=bench@localhost", *args],
        cwd=cwd, check=True, capture_output=True, text=True,
    ).stdout


def definition(name: str, n: int, server: str | None = None) -> str:
    on = f"server: {server}\n" if server else ""
    return (f"name: {name}\ntemplate: tools/busybox/worker/stable\n{on}"
            f"params:\n  message: round-{n}\n  script: sleep 2147483647\n")


def rss_kb(pid: int) -> int:
    """The process's resident set size in KiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Peak:
    """The highest RSS of a process, sampled every 20 ms while running."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_kb(self.pid))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


class Api:
    def __init__(self, url: str, token: str) -> None:
        self.url, self.session = url + "/api/v1", requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def get(self, path: str) -> object:
        return self.session.get(self.url + path, timeout=30).json()["data"]


def wait(check: object, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except (requests.RequestException, KeyError, TypeError):
            pass
        time.sleep(0.02)
    raise SystemExit(f"timed out waiting for {what}")


def deployed(api: Api, name: str, revision: int) -> bool:
    rows = api.get(f"/deployments?definition_id={name}&per_page=5")
    return any(d["revision"] == revision and d["status"] == "success" for d in rows)  # type: ignore[union-attr]


def round_trip(work: Path, api: Api, name: str, n: int, server: str | None) -> float:
    """Seconds from a commit changing `name` to its deployment recorded success."""
    (work / "definitions" / f"{name}.yaml").write_text(definition(name, n, server))
    began = time.monotonic()
    git(work, "commit", "-qam", f"{name} round {n}")
    wait(lambda: deployed(api, name, n + 1), f"{name} revision {n + 1}")
    return time.monotonic() - began


def remove_prefixed(client: docker.DockerClient, prefix: str) -> None:
    for c in client.containers.list(all=True):
        if c.name.startswith(prefix):
            c.remove(force=True)
    for v in client.volumes.list():
        if v.name.startswith(prefix):
            v.remove(force=True)
    for net in client.networks.list(names=[prefix]):
        if net.name.startswith(prefix):
            net.remove()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="measured rounds (>= 10 for a median)")
    parser.add_argument("--heartbeat", type=float, default=10.0, help="the agent's heartbeat (s)")
    args = parser.parse_args()
    client = docker.from_env()
    image = ensure_busybox(client)
    prefix = "ag" + secrets.token_hex(3)
    root = Path(tempfile.mkdtemp(prefix="agent-bench-"))
    work, state = root / "work", root / "state"
    far = DockerEngine(storage_driver=client.info().get("Driver"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        far.start()
        far.load_image(client, image)
        git(root, "init", "-q", "-b", "main", str(work))
        (work / "definitions").mkdir()
        (work / "deployally.yaml").write_text(f"network: {prefix}net\nhealth_timeout: 60s\n")
        here, there, edge = f"{prefix}_here", f"{prefix}_there", f"{prefix}-edge"
        (work / "definitions" / f"{here}.yaml").write_text(definition(here, 0))
        (work / "definitions" / f"{there}.yaml").write_text(definition(there, 0, edge))
        git(work, "add", "-A")
        git(work, "commit", "-qm", "Start")
        with Store(state) as store:
            token = store.create_token("bench", "read")
            _, key = store.add_server(edge, "staging")
        cli = [sys.executable, "-m", "deployally"]
        log = (root / "serve.log").open("w")
        processes.append(subprocess.Popen(
            [*cli, "serve", "--repo", str(work), "--state-dir", str(state), "--port", "0"],
            stdout=log, stderr=subprocess.STDOUT,
        ))
        engine_file = state / "engine.json"
        wait(lambda: engine_file.exists(), "the engine to serve")
        url = json.loads(engine_file.read_text())["url"]
        api = Api(url, token)
        agent = subprocess.Popen(
            [*cli, "agent", "--url", url, "--docker-host", far.host, "--state-dir",
             str(root / "agent"), "--heartbeat", str(args.heartbeat)],
            stdout=(root / "agent.log").open("w"), stderr=subprocess.STDOUT,
            env={**os.environ, "DEPLOYALLY_AGENT_KEY": key},
        )
        processes.append(agent)
        wait(lambda: deployed(api, here, 1) and deployed(api, there, 1), "both first deployments")
        time.sleep(2.0)
        idle = rss_kb(agent.pid)
        local_s, agent_s, peaks = [], [], []
        for n in range(1, args.rounds + 1):
            local_s.append(round_trip(work, api, here, n, None))
            peak = Peak(agent.pid)
            agent_s.append(round_trip(work, api, there, n, edge))
            peaks.append(peak.stop())
        overhead = [a - b for a, b in zip(agent_s, local_s, strict=True)]

        def show(label: str, values: list[float]) -> None:
            print(f"{label:<28} median {statistics.median(values) * 1000:7.0f} ms"
                  f"   (min {min(values) * 1000:.0f}, max {max(values) * 1000:.0f})")

        print(f"{args.rounds} rounds, busybox worker (healthcheck every 1 s), agent heartbeat {args.heartbeat:g} s")
        show("commit -> running, local", local_s)
        show("commit -> running, agent", agent_s)
        show("agent overhead (per round)", overhead)
        print(f"{'agent overhead (medians)':<28} "
              f"{(statistics.median(agent_s) - statistics.median(local_s)) * 1000:7.0f} ms")
        print(f"{'agent RSS':<28} idle {idle / 1024:.1f} MiB, deploying (peak) {max(peaks) / 1024:.1f} MiB")
        return 0
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
        remove_prefixed(client, prefix)
        if far.running:
            remove_prefixed(far.client, prefix)
        far.close()


if __name__ == "__main__":
    sys.exit(main())
