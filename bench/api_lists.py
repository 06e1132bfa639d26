"""How fast the API's list endpoints answer with thousands of definitions.

    python bench/api_lists.py --definitions 5000 --requests 200

Fills a fresh state store with N definition records (no containers are made:
the live snapshot is one Docker list call, cached), serves the API on
127.0.0.1, and times GET /definitions, /deployments and /instances pages with
a real HTTP client. Prints the median and 95th percentile per route.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from aiohttp import web

from deployally.api.app import create_app
from deployally.api.runner import ApiRunner
from deployally.identity import definition_id, random_id
from deployally.types import (
    ActionKind,
    ContainerSpec,
    DefinitionRecord,
    DefinitionStatus,
    Deployment,
    DeploymentStatus,
    Reason,
    ReasonKind,
)
from deployally.workspace import Workspace


def fill(ws: Workspace, count: int) -> None:
    now = datetime.now(UTC)
    for i in range(count):
        name = f"bench{i:05d}"
        spec = ContainerSpec(name=name, definition_id=definition_id(name), template_id="tpl_x",
                             image="busybox:stable", env=(("MESSAGE", str(i)),),
                             rendered_hash=f"sha256:{i:064x}")
        ws.store.upsert_definition(DefinitionRecord(
            id=spec.definition_id, name=name, path=f"definitions/{name}.yaml", template_id="tpl_x",
            server_id="local", profile="development", status=DefinitionStatus.ACTIVE,
            current_revision=1, applied_revision=1, desired=spec, applied_hash=spec.rendered_hash,
            depends_files=(), params={"message": str(i)}, last_error=None, operator_stopped=False,
            created_at=now, updated_at=now))
        ws.store.create_deployment(Deployment(
            id=random_id("deploy"), definition_id=spec.definition_id, definition_name=name,
            server_id="local", revision=1, commit="0" * 40, action=ActionKind.CREATE,
            status=DeploymentStatus.SUCCESS, reason=Reason(ReasonKind.NEW, "bench"),
            created_at=now, started_at=now, finished_at=now))


async def measure(ws: Workspace, token: str, requests: int) -> None:
    runner = ApiRunner(create_app(ws))  # as `serve` runs it
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", headers=headers) as http:
            for route in ("/api/v1/definitions?per_page=100&page=7",
                          "/api/v1/deployments?per_page=100",
                          "/api/v1/definitions?status=active&per_page=20",
                          "/api/v1/instances"):
                times = []
                for _ in range(requests):
                    started = time.perf_counter()
                    async with http.get(route) as response:
                        await response.read()
                        assert response.status == 200, response.status
                    times.append((time.perf_counter() - started) * 1000)
                times.sort()
                p95 = times[int(len(times) * 0.95) - 1]
                print(f"{route:48s} median {statistics.median(times):6.1f} ms   p95 {p95:6.1f} ms")
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--definitions", type=int, default=5000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
        ws = Workspace.open(repo, Path(tmp) / "state")
        fill(ws, args.definitions)
        token = ws.store.create_token("bench", "read")
        print(f"{args.definitions} definitions, {args.requests} requests per route:")
        asyncio.run(measure(ws, token, args.requests))
        ws.close()


if __name__ == "__main__":
    main()
