"""What the health gate costs the Docker engine: inspect requests per health-gated rollout.

    python bench/readiness_cost.py --definitions 10 --healthy-after 3

Creates N busybox containers at once through the local driver, each with a healthcheck every
`--interval` seconds that passes `--healthy-after` seconds after it starts, and counts the
inspect requests the driver's client sends for each new container (a response hook on its
docker-py session; the event subscription has a client of its own). Prints the inspects per
rollout and the rollouts' wall time. Everything it creates carries a prefix of this run alone
and is removed at the end; `--network NAME` joins an existing network instead of creating one
(adopted, as engine.yaml `adopt` would: for a host whose address pools are all taken).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import secrets
import statistics
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker

from deployally.drivers.base import DriverConfig
from deployally.drivers.local.driver import LocalDriver
from deployally.drivers.local.images import ensure_busybox
from deployally.drivers.local.ownership import Adopted
from deployally.identity import content_hash, definition_id
from deployally.store import Store
from deployally.types import Action, ActionKind, ContainerSpec, DeploymentStatus, Healthcheck

PREFIX = f"benchrd{os.getpid()}x{secrets.token_hex(2)}x"
INSPECT = re.compile(r"/containers/([0-9a-f]{64})/json$")


def spec(name: str, image: str, network: str, interval_s: float, healthy_after_s: float) -> ContainerSpec:
    base = ContainerSpec(
        name=name, definition_id=definition_id(name), template_id="tpl_000000000000", image=image,
        command=("sh", "-c", f"sleep {healthy_after_s:g}; touch /tmp/ready; exec sleep 3600"),
        healthcheck=Healthcheck(test=("CMD-SHELL", "test -e /tmp/ready"), interval_s=interval_s,
                                timeout_s=2, retries=1000),
        stop_signal="SIGKILL", network=network,
    )
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(base)}
    fields.pop("rendered_hash")
    return dataclasses.replace(base, rendered_hash=content_hash(repr(sorted(fields.items()))))


def started(client: docker.DockerClient, name: str) -> float:
    """The container's State.StartedAt as epoch seconds."""
    text = client.api.inspect_container(name)["State"]["StartedAt"]  # 2024-01-01T00:00:00.123456789Z
    whole, _, frac = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp() + float(f"0.{frac or 0}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--definitions", type=int, default=10)
    parser.add_argument("--interval", type=float, default=0.5, help="healthcheck interval, s")
    parser.add_argument("--healthy-after", type=float, default=3.0, help="s after the start")
    parser.add_argument("--network", help="an existing network to join (default: one of its own)")
    args = parser.parse_args()
    client = docker.from_env()
    inspects: Counter[str] = Counter()

    def count(response: Any, *_: Any, **__: Any) -> None:
        if response.request.method == "GET" and (m := INSPECT.search(response.request.path_url.split("?")[0])):
            inspects[m.group(1)] += 1

    client.api.hooks["response"].append(count)
    image = ensure_busybox(client, pull=False)
    network = args.network or f"{PREFIX}net"
    specs = [spec(f"{PREFIX}{n:03d}", image, network, args.interval, args.healthy_after)
             for n in range(args.definitions)]
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp)) as store:
        driver = LocalDriver(Path(tmp), owner=f"eng_{PREFIX}", claims=store, client=client,
                             adopted=Adopted(networks=frozenset({args.network} if args.network else ())),
                             config=DriverConfig(health_timeout_s=120, parallel=args.definitions))
        try:
            began = time.monotonic()
            noticed: dict[str, float] = {}  # when each rollout's wait saw it healthy (epoch s)

            def rollout(s: ContainerSpec) -> Any:
                def log(line: str) -> None:
                    if line.startswith("healthy after"):
                        noticed[s.name] = time.time()

                return driver.apply(Action(kind=ActionKind.CREATE, name=s.name, desired=s, live=None),
                                    revision=1, commit=None, resolve=lambda text: text, log=log)

            with ThreadPoolExecutor(args.definitions) as pool:
                results = list(pool.map(rollout, specs))
            took = time.monotonic() - began
            ok = [r for r in results if r.status is DeploymentStatus.SUCCESS and r.ref]
            per = [inspects[r.ref] for r in ok if r.ref]
            print(f"{len(ok)} of {len(specs)} health-gated rollouts ready in {took:.1f} s "
                  f"(healthcheck every {args.interval:g} s, healthy {args.healthy_after:g} s after start)")
            if per:
                print(f"inspects per rollout: median {statistics.median(per):g}, max {max(per)}, "
                      f"total {sum(per)}; cpu count {os.cpu_count()}, load {os.getloadavg()[0]:.1f}")
            # From the container's start (Docker's StartedAt) to the wait seeing it healthy: it
            # turns healthy at its first check after --healthy-after, so this less that is the
            # check's own delay plus the wait's.
            late = [noticed[name] - started(client, name) - args.healthy_after for name in noticed]
            if late:
                print(f"healthy seen {statistics.median(late):.2f} s (median; max {max(late):.2f} s) "
                      f"after the file its check looks for appeared")
        finally:
            for c in client.api.containers(all=True, filters={"name": PREFIX}):
                client.api.remove_container(c["Id"], force=True)
            if not args.network:
                for net in client.networks.list(names=[network]):
                    net.remove()
            close = getattr(driver, "close", None)  # the event subscription, where there is one
            if close is not None:
                close()


if __name__ == "__main__":
    main()
