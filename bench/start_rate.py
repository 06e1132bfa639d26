"""How fast this Docker engine creates and starts containers with no DeployAlly at all: the bound.

    python bench/start_rate.py --containers 100

The containers bench/sync_scale.py deploys (busybox:stable running one `sh -c` script, restart
unless-stopped, on a bridge network of the run's own), made by a bare docker-py loop: create
then start each, on `--threads` threads (4, as DeployAlly's default `parallel`), no health gate,
no record, no rollback. Prints the wall time, the starts per second and the load average.
Everything carries this run's prefix (`rate<pid>x<random>_`) and is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import secrets
import time
from concurrent.futures import ThreadPoolExecutor

import docker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--containers", type=int, default=100)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    api = docker.from_env().api
    prefix = f"rate{os.getpid()}x{secrets.token_hex(2)}_"
    network = f"{prefix}net"
    api.create_network(network, driver="bridge")
    made: list[str] = []

    def one(n: int) -> None:
        host_config = api.create_host_config(
            restart_policy={"Name": "unless-stopped"}, network_mode=network
        )
        cid = api.create_container(
            "busybox:stable", command=["sh", "-c", "echo one; exec sleep 2147483647"],
            name=f"{prefix}{n:04d}", host_config=host_config, stop_signal="SIGKILL",
        )["Id"]
        made.append(cid)
        api.start(cid)

    load = os.getloadavg()[0]
    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(one, range(args.containers)))
        elapsed = time.perf_counter() - started
        print(f"start_rate: {args.containers} containers created and started on {args.threads} "
              f"threads: {elapsed:.2f} s ({args.containers / elapsed:.1f}/s); load average "
              f"{load:.1f} -> {os.getloadavg()[0]:.1f}, cpu count {os.cpu_count()}")
    finally:
        with ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(lambda cid: api.remove_container(cid, force=True), made))
        api.remove_network(network)


if __name__ == "__main__":
    main()
