"""How long pending webhook deliveries take to drain when one receiver flaps.

    python bench/webhook_drain.py --deliveries 77

Two receivers on 127.0.0.1 subscribe to the same event: a *flapping* one that
answers every other request with an instant 503 (one bad backend of two behind a
round-robin proxy), and a healthy one. N events are queued in a fresh state
store, then the webhook sender runs as `deployally serve` runs it, with its real
retry schedule. Prints how long each receiver took to get all N events, how many
attempts that took, and whether each receiver saw its events in order.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

from aiohttp import web

from deployally.notify.sender import Sender
from deployally.notify.urls import LOOPBACK
from deployally.store import Store

EVENT = "deployment.success"


class Receiver:
    """A loopback receiver that records the order events arrive in; fails every `flap`th request."""

    def __init__(self, flap: int) -> None:
        self.flap = flap
        self.requests = 0
        self.got: list[int] = []
        self.done_at: float | None = None
        self.started = 0.0  # when the sender started
        self.expected = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        body = await request.read()
        if self.flap and self.requests % self.flap == 0:
            return web.Response(status=503)
        n = json.loads(body)["data"]["n"]
        if n not in self.got:
            self.got.append(n)
        if len(self.got) == self.expected and self.done_at is None:
            self.done_at = time.monotonic()
        return web.Response(status=204)


async def serve(receiver: Receiver) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/hook"


async def measure(deliveries: int, flap: int, limit_s: float) -> None:
    flapping, healthy = Receiver(flap), Receiver(0)
    with tempfile.TemporaryDirectory() as tmp:
        # The store's secret key goes with the rest of this run, not into ~/.config.
        os.environ["XDG_CONFIG_HOME"] = str(Path(tmp) / "config")
        os.environ.pop("DEPLOYALLY_SECRET_KEY", None)
        await _drain(Path(tmp), flapping, healthy, deliveries, limit_s)

    print(f"{deliveries} deliveries to each of 2 receivers; the flapping one fails every request"
          f" number {flap}, {2 * flap}, ...")
    for name, receiver in (("healthy", healthy), ("flapping", flapping)):
        took = (
            f"{receiver.done_at - receiver.started:.2f} s"
            if receiver.done_at is not None
            else f"not drained after {limit_s:g} s ({len(receiver.got)} of {deliveries})"
        )
        in_order = receiver.got == sorted(receiver.got)
        print(
            f"  {name:9s} all events in {took}; {receiver.requests} requests;"
            f" in order: {'yes' if in_order else 'no'}"
        )


async def _drain(
    tmp: Path, flapping: Receiver, healthy: Receiver, deliveries: int, limit_s: float
) -> None:
    runners = []
    with Store(tmp / "state") as store:
        for receiver in (flapping, healthy):
            receiver.expected = deliveries
            runner, url = await serve(receiver)
            runners.append(runner)
            store.add_webhook(url, [EVENT], "bench-secret")
        for n in range(deliveries):
            store.enqueue_event(EVENT, {"n": n})
        # The receivers are on loopback: allowed, as engine.yaml's `webhooks: {allow: [loopback]}`.
        sender = Sender(store, allow={LOOPBACK})
        stop = asyncio.Event()
        started = flapping.started = healthy.started = time.monotonic()
        task = asyncio.create_task(sender.run(stop))
        deadline = started + limit_s
        while time.monotonic() < deadline and (flapping.done_at is None or healthy.done_at is None):
            await asyncio.sleep(0.05)
        stop.set()
        sender.wake()
        await task
        for runner in runners:
            await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=77)
    parser.add_argument("--flap", type=int, default=2, help="the flapping receiver fails every Nth request")
    parser.add_argument("--limit", type=float, default=900.0, help="give up after this many seconds")
    args = parser.parse_args()
    asyncio.run(measure(args.deliveries, args.flap, args.limit))


if __name__ == "__main__":
    main()
