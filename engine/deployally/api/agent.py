"""The agent's endpoints, each reached with its own server's key: its long poll (the heartbeat
that hands it its driver's calls), what it sends back for a call, and its instance events.

POST /api/v1/agent/poll           {session, heartbeat_s, agent_version, docker_version, holds}
                                  -> {server: {id, name}, owner, calls: [{id, op, args}]}
                                  (409 while another session of the key is online)
POST /api/v1/agent/calls/{id}     {session, kind: log|begin|result, payload} -> {begin}
POST /api/v1/agent/events         {session, events: [InstanceEvent, ...]}
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from aiohttp import web

from deployally.api.auth import AGENT, SERVER, access
from deployally.api.context import Context, context
from deployally.api.envelope import ApiError, BodyCheck, read_json, success
from deployally.codec import from_json
from deployally.drivers.agent.channel import (
    BEGIN,
    LOG,
    MAX_HEARTBEAT_S,
    RESULT,
    AnotherAgent,
    Message,
)
from deployally.drivers.agent.driver import AgentDriver
from deployally.store import ServerRecord
from deployally.types import InstanceEvent

routes = web.RouteTableDef()

MAX_POLL_S = 30.0  # the longest one poll is held open, whatever the agent's heartbeat
MIN_HEARTBEAT_S = 0.05
RECORD_EVERY_S = 5.0  # how often an online agent's last_seen_at is written to the store
BEGIN_ANSWER_S = 60.0  # how long the agent's begin waits for the engine's answer
MAX_EVENTS = 1000  # events one post may carry
MAX_HOLDS = 10_000  # call ids one poll may list as held


def agent_driver(ctx: Context, server: ServerRecord) -> AgentDriver:
    """The driver of the calling agent's server; 409 when that server is no agent server."""
    driver = ctx.ws.drivers.for_server(server.id)
    if not isinstance(driver, AgentDriver):
        raise ApiError(
            409, "conflict", f"server '{server.name}' is a {server.kind} server: it has no agent"
        )
    return driver


def _session(check: BodyCheck) -> str:
    session = check.string("session")
    check.raise_if_any()
    assert session is not None
    return session


@routes.post("/api/v1/agent/poll")
@access(AGENT)
async def agent_poll(request: web.Request) -> web.Response:
    """The agent's heartbeat and long poll: its driver's calls, as soon as there are any (or
    none after one heartbeat)."""
    server = request[SERVER]
    ctx = context(request)
    check = BodyCheck(
        await read_json(request),
        ("session", "heartbeat_s", "agent_version", "docker_version", "holds"),
    )
    raw_heartbeat = check.body.get("heartbeat_s")
    heartbeat = MIN_HEARTBEAT_S
    if isinstance(raw_heartbeat, bool) or not isinstance(raw_heartbeat, (int, float)) or not (
        math.isfinite(raw_heartbeat) and MIN_HEARTBEAT_S <= raw_heartbeat <= MAX_HEARTBEAT_S
    ):
        check.problem(
            "heartbeat_s", f"must be a number of seconds from {MIN_HEARTBEAT_S} to {MAX_HEARTBEAT_S:g}"
        )
    else:
        heartbeat = float(raw_heartbeat)
    holds = check.body.get("holds", [])
    if not isinstance(holds, list) or len(holds) > MAX_HOLDS or not all(isinstance(h, str) for h in holds):
        check.problem("holds", f"must be a list of at most {MAX_HOLDS} call ids")
    versions = [check.body.get(k) for k in ("agent_version", "docker_version")]
    for field, value in zip(("agent_version", "docker_version"), versions, strict=True):
        if value is not None and not isinstance(value, str):
            check.problem(field, "must be a string")
    session = _session(check)
    driver = agent_driver(ctx, server)
    channel = driver.channel
    try:
        new = channel.heard(session, heartbeat, holds=holds, peer=request.remote)
    except AnotherAgent as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    now = time.monotonic()
    if new or now - channel.recorded_at >= RECORD_EVERY_S:
        channel.recorded_at = now
        agent_version, docker_version = (v if isinstance(v, str) else None for v in versions)
        await ctx.run(
            ctx.ws.store.touch_server, server.id,
            agent_version=agent_version, docker_version=docker_version, new_session=new,
        )
    if new:
        ctx.live.invalidate()  # what the server runs is worth asking again
        await ctx.run(ctx.sync_soon, "server online")  # what waited for the server runs now
    calls = channel.take(session)
    if not calls and not new:
        waiter = channel.wait_for_calls()
        try:
            await asyncio.wait_for(asyncio.wrap_future(waiter), min(heartbeat, MAX_POLL_S))
        except TimeoutError:
            pass
        calls = channel.take(session)
    return success({
        "server": {"id": server.id, "name": server.name},
        "owner": ctx.ws.engine_id,
        "calls": [c.wire() for c in calls],
    })


@routes.post("/api/v1/agent/calls/{id}")
@access(AGENT)
async def agent_reply(request: web.Request) -> web.Response:
    """What the agent sends back for a call: log lines, a request to begin, its result.
    409 when the engine no longer waits for that call (the agent drops it)."""
    server = request[SERVER]
    ctx = context(request)
    check = BodyCheck(await read_json(request), ("session", "kind", "payload"))
    kind = check.string("kind", allowed=(LOG, BEGIN, RESULT))
    session = _session(check)
    payload: Any = check.body.get("payload")
    channel = agent_driver(ctx, server).channel
    call_id = request.match_info["id"]
    gone = ApiError(409, "conflict", f"call {call_id} is not waited for any more")
    if kind == LOG:
        lines = payload if isinstance(payload, list) else [payload]
        for line in lines:
            if not channel.send(call_id, session, Message(LOG, str(line))):
                raise gone
        return success({})
    if kind == RESULT:
        if not isinstance(payload, dict) or not channel.send(call_id, session, Message(RESULT, payload)):
            raise gone
        return success({})
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bool] = loop.create_future()

    def settle(go: bool) -> None:
        if not answer.done():
            answer.set_result(go)

    def answered(go: bool) -> None:  # on the driver's thread
        loop.call_soon_threadsafe(settle, go)

    if not channel.send(call_id, session, Message(BEGIN, answer=answered)):
        raise gone
    try:
        go = await asyncio.wait_for(answer, BEGIN_ANSWER_S)
    except TimeoutError:
        go = False
    return success({"begin": bool(go)})


@routes.post("/api/v1/agent/events")
@access(AGENT)
async def agent_events(request: web.Request) -> web.Response:
    """The agent's instance events (this engine's instances on its host): webhooks and self-heal."""
    server = request[SERVER]
    ctx = context(request)
    check = BodyCheck(await read_json(request), ("session", "events"))
    raw = check.body.get("events")
    if not isinstance(raw, list) or len(raw) > MAX_EVENTS:
        check.problem("events", f"must be a list of at most {MAX_EVENTS} instance events")
        raw = []
    _session(check)
    driver = agent_driver(ctx, server)
    try:
        events = [from_json(InstanceEvent, e) for e in raw]
    except (TypeError, ValueError, KeyError) as exc:
        raise ApiError(422, "validation_failed", f"events: not instance events ({exc})") from None
    await ctx.run(driver.deliver, events)
    return success({"delivered": len(events)})
