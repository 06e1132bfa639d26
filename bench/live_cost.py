"""What observing live state costs: Docker's one filtered list call, against one inspect per container.

    python bench/live_cost.py --containers 100

The list call carries names, labels, state and health, but not the restart policy or the
memory and CPU limits: only an inspect says those. This starts N busybox containers
(prefix `benchlc`, no network), times the label-filtered list and the inspects (one at a
time, and 4 at a time), median of 11 rounds each, and removes the containers.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import docker

PREFIX = "benchlc"
LABEL = "com.deployally.bench=live-cost"


def median_ms(fn: Callable[[], object], rounds: int = 11) -> float:
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--containers", type=int, default=100)
    args = parser.parse_args()
    client = docker.from_env()
    api = client.api
    ids: list[str] = []
    try:
        for i in range(args.containers):
            cid = api.create_container(
                "busybox:stable", ["sleep", "2147483647"], name=f"{PREFIX}{i:03d}",
                labels={"com.deployally.bench": "live-cost"},
                host_config=api.create_host_config(network_mode="none"),
            )["Id"]
            api.start(cid)
            ids.append(cid)

        def listed() -> list[dict[str, object]]:
            rows: list[dict[str, object]] = api.containers(all=True, filters={"label": [LABEL]})
            return rows

        pool = ThreadPoolExecutor(4)
        listing = median_ms(listed)
        one_by_one = median_ms(lambda: [api.inspect_container(i) for i in ids])
        four = median_ms(lambda: list(pool.map(api.inspect_container, ids)))
        print(f"{len(ids)} containers, median of 11:")
        print(f"  one filtered list call:        {listing:7.1f} ms")
        print(f"  one inspect each, in turn:     {one_by_one:7.1f} ms")
        print(f"  one inspect each, 4 at a time: {four:7.1f} ms")
    finally:
        for cid in ids:
            api.remove_container(cid, force=True)


if __name__ == "__main__":
    main()
