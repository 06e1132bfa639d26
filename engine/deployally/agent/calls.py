"""What the agent does for each call its engine sends: the same call on its local driver, the
answer in the one codec. The secrets a call brings are used for that call alone, in memory."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from deployally import secrets
from deployally.codec import from_json, to_json
from deployally.drivers.base import Begin, Driver, DriverConfig, Log
from deployally.errors import DeployAllyError, DriverError, NotBegun, NotFound, SecretError
from deployally.types import Action, LiveInstance


def carry_out(driver: Driver, op: str, args: Mapping[str, Any], *, log: Log, begin: Begin) -> dict[str, Any]:
    """Run one call on `driver`; `{"ok": true, "value": ...}` or `{"ok": false, "error":
    "NotFound" | "NotBegun" | "DriverError", "message": ...}`."""
    try:
        return {"ok": True, "value": _run(driver, op, args, log, begin)}
    except DeployAllyError as exc:
        return {"ok": False, "error": _error_name(exc), "message": str(exc)}


def _error_name(exc: DeployAllyError) -> str:
    for kind in (NotFound, NotBegun):
        if isinstance(exc, kind):
            return kind.__name__
    return DriverError.__name__


def _run(driver: Driver, op: str, args: Mapping[str, Any], log: Log, begin: Begin) -> Any:
    if op == "ping":
        driver.ping()
        return None
    if op == "live":
        return {name: to_json(inst) for name, inst in driver.live().items()}
    if op == "recover":
        driver.recover(log)
        return None
    if op in ("start", "stop", "restart"):
        getattr(driver, op)(str(args["name"]))
        return None
    if op == "started_at":
        at = driver.started_at(from_json(LiveInstance, args["instance"]))
        return at.isoformat() if at is not None else None
    if op == "settings":
        return to_json(driver.settings(from_json(LiveInstance, args["instance"])))
    if op == "apply":
        return to_json(_apply(driver, args, log, begin))
    raise DriverError(f"this agent does not know the call {op!r}: upgrade it to the engine's version")


def _apply(driver: Driver, args: Mapping[str, Any], log: Log, begin: Begin) -> Any:
    config = from_json(DriverConfig, args.get("config") or {})
    if getattr(driver, "config", None) != config:
        driver.configure(config)
    values: dict[str, str] = dict(args.get("secrets") or {})

    def lookup(name: str) -> str:
        if name not in values:
            raise SecretError(f"secret {name!r} was not sent with this deployment; sync again")
        return values[name]

    action: Action = from_json(Action, args["action"])
    return driver.apply(
        action,
        revision=args.get("revision"),
        commit=args.get("commit"),
        resolve=lambda text: secrets.resolve(text, lookup),
        log=log,
        begin=begin,
    )
