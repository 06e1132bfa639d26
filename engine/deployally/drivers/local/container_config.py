"""How a ContainerSpec looks to Docker, and back: create_container arguments from a spec;
LiveInstance, health, start time and stop grace from Docker's list and inspect documents.

Pure functions: no Docker calls; docker.types only builds the dicts docker-py sends.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from docker.types import EndpointConfig, HostConfig, Mount, NetworkingConfig

from deployally import secrets
from deployally.drivers.base import Resolve
from deployally.types import (
    HOST_NETWORK,
    LABEL_COMMIT,
    LABEL_DEFINITION,
    LABEL_MANAGED,
    LABEL_NAME,
    LABEL_OWNER,
    LABEL_PRUNE_VOLUMES,
    LABEL_RENDERED_HASH,
    LABEL_REVISION,
    LABEL_SERVER,
    ContainerSpec,
    InstanceHealth,
    InstanceSettings,
    InstanceState,
    LiveInstance,
)

_NANO = 1_000_000_000


def create_args(
    spec: ContainerSpec,
    *,
    revision: int | None,
    commit: str | None,
    server: str,
    owner: str,
    resolve: Resolve,
    file_mounts: list[Mount],
    api_version: str,
) -> dict[str, Any]:
    """Everything create_container needs; secrets are resolved here and only here."""
    host_network = spec.network == HOST_NETWORK
    mounts = [Mount(v.mount_path, v.name, type="volume") for v in spec.volumes]
    mounts += file_mounts
    host_config = HostConfig(
        version=api_version,
        port_bindings={
            f"{p.container_port}/{p.protocol}": (p.host_ip, p.host_port) if p.host_ip else p.host_port
            for p in spec.ports
            if p.host_port is not None and not host_network
        },
        mounts=mounts,
        restart_policy=restart_policy(spec.restart),
        mem_limit=spec.memory_bytes,
        nano_cpus=int(spec.cpus * _NANO) if spec.cpus else None,
        network_mode=spec.network,
    )
    # In the host's namespace there is nothing to publish and no network-scoped alias.
    networking = None if host_network else NetworkingConfig(
        # docker-py takes {network: EndpointConfig}; its stubs say otherwise.
        {spec.network: EndpointConfig(api_version, aliases=[spec.name])}  # type: ignore[arg-type]
    )
    return {
        "image": spec.image,
        "name": spec.name,
        "command": [resolve(c) for c in spec.command] if spec.command is not None else None,
        "entrypoint": (
            [resolve(c) for c in spec.entrypoint] if spec.entrypoint is not None else None
        ),
        "environment": [f"{k}={resolve(v)}" for k, v in spec.env],
        "labels": labels(spec, revision=revision, commit=commit, server=server, owner=owner),
        "user": spec.user,
        "working_dir": spec.working_dir,
        "ports": [] if host_network else [(p.container_port, p.protocol) for p in spec.ports],
        "host_config": host_config,
        "networking_config": networking,
        "healthcheck": healthcheck(spec, resolve),
        "stop_signal": spec.stop_signal,
        "stop_timeout": math.ceil(spec.stop_grace_s) if spec.stop_grace_s is not None else None,
    }


def labels(
    spec: ContainerSpec, *, revision: int | None, commit: str | None, server: str, owner: str
) -> dict[str, str]:
    """The spec's own labels (secrets shown as placeholders) plus DeployAlly's bookkeeping ones."""
    out = {k: secrets.display(v) for k, v in spec.labels}
    out.update(
        {
            LABEL_MANAGED: "true",
            LABEL_DEFINITION: spec.definition_id,
            LABEL_NAME: spec.name,
            LABEL_RENDERED_HASH: spec.rendered_hash,
            LABEL_COMMIT: commit or "",
            LABEL_SERVER: server,
            LABEL_OWNER: owner,
        }
    )
    if revision is not None:
        out[LABEL_REVISION] = str(revision)
    if spec.prune_volumes:
        out[LABEL_PRUNE_VOLUMES] = "true"
    return out


def restart_policy(restart: str) -> dict[str, Any]:
    """Docker's restart policy dict from compose-style text ("on-failure:3", "always"...)."""
    name, _, count = restart.partition(":")
    policy: dict[str, Any] = {"Name": "" if name == "no" else name}
    if count.isdigit():
        policy["MaximumRetryCount"] = int(count)
    return policy


def healthcheck(spec: ContainerSpec, resolve: Resolve) -> dict[str, Any] | None:
    """Docker's healthcheck config: durations in nanoseconds, test prefixed with CMD if bare."""
    hc = spec.healthcheck
    if hc is None:
        return None
    test = [resolve(t) for t in hc.test]
    if test and test[0] not in ("CMD", "CMD-SHELL", "NONE"):
        test = ["CMD-SHELL", test[0]] if len(test) == 1 else ["CMD", *test]
    return {
        "test": test,
        "interval": int(hc.interval_s * _NANO),
        "timeout": int(hc.timeout_s * _NANO),
        "retries": hc.retries,
        "start_period": int(hc.start_period_s * _NANO),
    }


# ---------------------------------------------------------------- read back from Docker


# Docker's container states in our words; "removing" is on its way to gone.
_STATES = {
    "running": InstanceState.RUNNING,
    "created": InstanceState.CREATED,
    "restarting": InstanceState.RESTARTING,
    "paused": InstanceState.PAUSED,
    "exited": InstanceState.EXITED,
    "removing": InstanceState.EXITED,
    "dead": InstanceState.DEAD,
}


def state_from_docker(state: str) -> InstanceState:
    """A container's State (`docker ps`'s) as an InstanceState; an unknown one counts as exited."""
    return _STATES.get(state, InstanceState.EXITED)


def health_from_status(status: str) -> InstanceHealth | None:
    """Health as `docker ps` shows it in its Status text; None when there is no healthcheck."""
    if "(unhealthy)" in status:
        return InstanceHealth.UNHEALTHY
    if "(healthy)" in status:
        return InstanceHealth.HEALTHY
    if "(health: starting)" in status:
        return InstanceHealth.STARTING
    return None


DOCKER_DEFAULT_INTERVAL_S = 30.0  # what Docker uses when a healthcheck leaves Interval at 0


def check_interval_s(info: dict[str, Any]) -> float | None:
    """The interval of the container's healthcheck in seconds; None when it has none."""
    check = info.get("Config", {}).get("Healthcheck")
    if not check or check.get("Test") in (None, [], ["NONE"]):
        return None
    interval = check.get("Interval") or 0
    return interval / _NANO if interval else DOCKER_DEFAULT_INTERVAL_S


def stop_timeout(info: dict[str, Any]) -> int | None:
    """The container's own grace period, so a stop honours what the spec asked."""
    value = info.get("Config", {}).get("StopTimeout")
    return int(value) if value is not None else None


def label_revision(labels: Mapping[str, str]) -> int | None:
    """The revision a container's labels say it runs; None when they name none."""
    revision = labels.get(LABEL_REVISION, "")
    return int(revision) if revision.isascii() and revision.isdigit() else None


def live_instance(row: dict[str, Any]) -> LiveInstance | None:
    """One row of Docker's container list as a LiveInstance; None for a `<name>.old`."""
    labels: dict[str, str] = row.get("Labels") or {}
    cname = (row.get("Names") or ["/"])[0].lstrip("/")
    name = labels.get(LABEL_NAME, cname)
    if cname != name:  # a `<name>.old` mid-rollout, or renamed by hand
        return None
    created = row.get("Created")
    return LiveInstance(
        ref=row["Id"],
        name=name,
        definition_id=labels.get(LABEL_DEFINITION, ""),
        revision=label_revision(labels),
        rendered_hash=labels.get(LABEL_RENDERED_HASH, ""),
        commit=labels.get(LABEL_COMMIT, ""),
        state=state_from_docker(str(row.get("State", ""))),
        health=health_from_status(row.get("Status", "")),
        image=row.get("Image", ""),
        created_at=datetime.fromtimestamp(created, UTC) if created else None,
    )


def instance_settings(info: dict[str, Any]) -> InstanceSettings:
    """The restart policy and limits an inspect document says the container runs with."""
    host = info.get("HostConfig") or {}
    policy = host.get("RestartPolicy") or {}
    restart = policy.get("Name") or "no"
    if restart == "on-failure" and policy.get("MaximumRetryCount"):
        restart += f":{policy['MaximumRetryCount']}"
    nano = host.get("NanoCpus") or 0
    return InstanceSettings(
        restart=restart,
        memory_bytes=host.get("Memory") or None,
        cpus=nano / _NANO if nano else None,
    )


def started_at(info: dict[str, Any]) -> datetime | None:
    """State.StartedAt of an inspect document; None when the container is not running."""
    state = info.get("State") or {}
    if not state.get("Running"):
        return None
    # Docker gives nanoseconds ("2026-02-10T08:00:00.123456789Z"); Python takes microseconds.
    stamp = str(state.get("StartedAt", ""))
    head, _, frac = stamp.rstrip("Z").partition(".")
    try:
        return datetime.fromisoformat(f"{head}.{(frac or '0')[:6]:0<6}+00:00")
    except ValueError:
        return None
