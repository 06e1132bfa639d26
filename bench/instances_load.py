"""`GET /api/v1/instances` latency with many concurrent readers while an update runs.

    python bench/instances_load.py --readers 200

Starts `deployally serve` on 127.0.0.1 over a fresh repository of N busybox workers,
deploys them, then commits a change to all of them and, while that update runs, lets
`--readers` clients each send `--requests` GETs of /api/v1/instances back to back
(every request has a 30 s timeout). Prints the latency percentiles and the failures.
Everything it creates carries a prefix of this run alone (`benchld<pid>x<random>x`) and is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import docker
import docker.errors
import requests
from prometheus_client.parser import text_string_to_metric_families

from deployally.store import Store

# A prefix of this run alone (its pid and a random part): runs side by side, or another
# tool's "benchld" containers, are never counted or removed by this one.
PREFIX = f"benchld{os.getpid()}x{secrets.token_hex(2)}x"
NETWORK = f"{PREFIX}net"


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", *args],
                   cwd=repo, check=True, capture_output=True)


def write_all(repo: Path, names: list[str], message: str) -> None:
    for name in names:
        (repo / "definitions" / f"{name}.yaml").write_text(
            f"name: {name}\ntemplate: tools/busybox/worker/stable\n"
            f"params: {{message: {message}, script: 'exec sleep 2147483647'}}\n"
        )
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", f"all {message}")


def wait_for(check: object, timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()  # type: ignore[operator]
        except (OSError, ValueError, KeyError):
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def listen_overflows() -> int:
    """The kernel's count of connections dropped because a listen queue was full (each one
    costs its client a 1 s SYN retransmit); -1 where /proc/net/netstat does not say."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return -1
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            row = dict(zip(names.split()[1:], values.split()[1:], strict=True))
            return int(row.get("ListenOverflows", -1))
    return -1


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def server_side(url: str) -> tuple[int, float, float]:
    """The engine's own time for GET /instances, from /metrics: count, mean, and the upper
    bound of the bucket that holds the 99th percentile (what the client's queue does not add)."""
    base = url.split("/api/v1")[0]
    text = requests.get(f"{base}/metrics", timeout=30).text
    buckets: dict[float, float] = {}
    count = total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != "deployally_http_request_duration_seconds":
            continue
        for sample in family.samples:
            if "instances" not in sample.labels.get("route", "") or sample.labels.get("status") != "200":
                continue
            if sample.name.endswith("_bucket"):
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
            elif sample.name.endswith("_count"):
                count += sample.value
            elif sample.name.endswith("_sum"):
                total += sample.value
    p99 = next((le for le, n in sorted(buckets.items()) if n >= 0.99 * count), float("inf"))
    return int(count), (total / count if count else 0.0), p99


async def load(url: str, token: str, readers: int, requests: int) -> tuple[list[float], list[str]]:
    latencies: list[float] = []
    failures: list[str] = []
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=readers)
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(timeout=timeout, connector=connector, headers=headers) as s:

        async def reader() -> None:
            for _ in range(requests):
                began = time.perf_counter()
                try:
                    async with s.get(f"{url}/api/v1/instances?per_page=100") as response:
                        await response.read()
                        if response.status != 200:
                            failures.append(f"HTTP {response.status}")
                            continue
                except (aiohttp.ClientError, TimeoutError) as exc:
                    failures.append(type(exc).__name__)
                    continue
                latencies.append(time.perf_counter() - began)

        await asyncio.gather(*(reader() for _ in range(readers)))
    return latencies, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--definitions", type=int, default=30)
    parser.add_argument("--readers", type=int, default=200)
    parser.add_argument("--requests", type=int, default=5, help="per reader")
    parser.add_argument("--idle", action="store_true", help="load an idle engine instead (no update)")
    args = parser.parse_args()
    client = docker.from_env()
    names = [f"{PREFIX}{i:03d}" for i in range(args.definitions)]
    with tempfile.TemporaryDirectory() as tmp:
        repo, state = Path(tmp) / "repo", Path(tmp) / "state"
        (repo / "definitions").mkdir(parents=True)
        git(repo, "init", "-q", "-b", "main")
        (repo / "deployally.yaml").write_text(f"network: {NETWORK}\n")
        write_all(repo, names, "one")
        with Store(state) as store:
            token = store.create_token("bench", "read")
        log = (Path(tmp) / "serve.log").open("w")
        serve = subprocess.Popen(
            [sys.executable, "-m", "deployally", "serve", "--repo", str(repo), "--state-dir",
             str(state), "--port", "0"], stdout=log, stderr=subprocess.STDOUT, env=os.environ)
        try:
            info = wait_for(lambda: json.loads((state / "engine.json").read_text()), 60, "serve")
            url = str(info["url"])  # type: ignore[index]

            def deployed(message: str) -> bool:
                rows = client.api.containers(filters={"name": PREFIX, "status": "running"})
                return sum(1 for r in rows if r["Labels"].get("com.deployally.revision")
                           == message) == len(names)

            wait_for(lambda: deployed("1"), 300, "the first deployment")
            # One reader first, as a dashboard would have been: the engine's first snapshot.
            asyncio.run(load(url, token, 1, 1))
            if not args.idle:
                write_all(repo, names, "two")
                time.sleep(1.0)  # the watcher sees the commit; the update is under way
            overflows = listen_overflows()
            began, cpu_began = time.monotonic(), time.process_time()
            latencies, failures = asyncio.run(load(url, token, args.readers, args.requests))
            took, readers_cpu = time.monotonic() - began, time.process_time() - cpu_began
            updating = not args.idle and not deployed("2")
            print(f"{len(latencies) + len(failures)} GET /instances from {args.readers} readers "
                  f"in {took:.1f} s ({'idle' if args.idle else 'the update still running at the end' if updating else 'the update finished first'})")
            if latencies:
                print(f"p50 {percentile(latencies, 50) * 1000:.0f} ms, "
                      f"p95 {percentile(latencies, 95) * 1000:.0f} ms, "
                      f"p99 {percentile(latencies, 99) * 1000:.0f} ms, "
                      f"max {max(latencies) * 1000:.0f} ms")
            print(f"the readers' own CPU time: {readers_cpu:.1f} s; connections the kernel "
                  f"dropped before the engine accepted them: {listen_overflows() - overflows}")
            print(f"failed: {len(failures)}" + (f" ({', '.join(sorted(set(failures)))})" if failures else ""))
            served, mean, p99 = server_side(url)
            print(f"the engine's own time for its {served} answers of GET /instances: "
                  f"mean {mean * 1000:.1f} ms, p99 at most {p99 * 1000:.0f} ms "
                  "(the rest is waiting for a core: the update's Docker work, the readers and the "
                  "engine share the machine's)")
        finally:
            serve.terminate()
            serve.wait(120)
            log.close()
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
