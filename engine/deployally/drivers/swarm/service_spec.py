"""How a ContainerSpec looks to Docker Swarm, and back: a service's create/update arguments from a
spec; LiveInstance and task errors from Swarm's service and task documents.

Pure functions: no Docker calls; docker.types only builds the dicts docker-py sends. What maps
1:1 to a container (labels, healthcheck) is the local driver's container_config.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from docker.types import (
    ConfigReference,
    EndpointSpec,
    Healthcheck,
    Mount,
    NetworkAttachmentConfig,
    Resources,
    RestartPolicy,
    RollbackConfig,
    SecretReference,
    ServiceMode,
    TaskTemplate,
    UpdateConfig,
)
from docker.types import ContainerSpec as SwarmContainerSpec

from deployally import secrets
from deployally.drivers.base import Resolve
from deployally.drivers.local import container_config
from deployally.identity import content_hash
from deployally.types import (
    LABEL_COMMIT,
    LABEL_DEFINITION,
    LABEL_MANAGED,
    LABEL_NAME,
    LABEL_OWNER,
    LABEL_RENDERED_HASH,
    LABEL_REVISION,
    ConfigFile,
    ContainerSpec,
    InstanceHealth,
    InstanceState,
    LiveInstance,
)

_NANO = 1_000_000_000
# The replicas the definition declares, so an operator's start after a stop (scaled to 0)
# scales back to them; and whether an operator stopped it.
LABEL_REPLICAS = "com.deployally.replicas"
LABEL_STOPPED = "com.deployally.stopped"
# A Swarm config or secret's labels name the definition whose file it holds.
CONFIG_FILE_LABELS = (LABEL_MANAGED, LABEL_OWNER, LABEL_NAME)
# Labels that change at every revision: on the service only, never on its task template, so a
# new revision that changes nothing its tasks run (replicas alone) rolls no task.
_SERVICE_ONLY = (LABEL_REVISION, LABEL_COMMIT, LABEL_RENDERED_HASH)
# The least time Swarm watches a new task without a healthcheck for failure, whatever its
# min_ready: a worker reports a task running as soon as its container starts, and Swarm counts
# an exit against the update only within the monitor window, so a shorter one (0s) would let a
# task that dies at once complete the update.
MIN_MONITOR_S = 2.0


@dataclass(frozen=True)
class FileObject:
    """A config file as a Swarm config (plain) or secret (it holds a secret), named by its content."""

    kind: str  # "config" or "secret"
    name: str  # <definition>-<n>-<hash12>: a new content is a new object, so the update rolls
    file: ConfigFile


def file_objects(spec: ContainerSpec) -> tuple[FileObject, ...]:
    """The Swarm configs and secrets `spec`'s files become. A file with a secret placeholder is
    named by its template text and the secret versions it uses, never by the resolved value."""
    out = []
    for n, file in enumerate(spec.files):
        used = sorted(secrets.referenced(file.content))
        versions = [(name, v) for name, v in spec.secrets if name in used]
        digest = content_hash(
            {"path": file.mount_path, "mode": file.mode, "content": file.content, "versions": versions}
        ).split(":")[-1][:12]
        kind = "secret" if used else "config"
        out.append(FileObject(kind, f"{spec.name}-{n}-{digest}", file))
    return tuple(out)


def service_labels(
    spec: ContainerSpec, *, revision: int | None, commit: str | None, server: str, owner: str
) -> dict[str, str]:
    """DeployAlly's labels on the service (what the local driver puts on a container), plus
    the replicas it declares."""
    out = container_config.labels(spec, revision=revision, commit=commit, server=server, owner=owner)
    out[LABEL_REPLICAS] = str(spec.replicas)
    return out


def task_labels(service: Mapping[str, str]) -> dict[str, str]:
    """The labels each task's container carries: the service's, less those every revision changes."""
    return {
        k: v for k, v in service.items() if k not in _SERVICE_ONLY and k not in (LABEL_REPLICAS, LABEL_STOPPED)
    }


def monitor_s(spec: ContainerSpec, min_ready_s: float) -> float:
    """How long Swarm watches each updated task for failure: the healthcheck's whole window
    (start period, then every retry), or for a spec without one its min_ready (`min_ready_s`
    when it carries none), at least MIN_MONITOR_S."""
    hc = spec.healthcheck
    if hc is None:
        return max(spec.min_ready_s if spec.min_ready_s is not None else min_ready_s, MIN_MONITOR_S)
    return hc.start_period_s + hc.interval_s * hc.retries + hc.timeout_s


def start_first(spec: ContainerSpec) -> bool:
    """Whether a new task starts before its old one stops. Not with volumes: two processes must
    never write one data directory. Published ports do not forbid it: the routing mesh
    balances a port over every running task, old and new."""
    return not spec.volumes


def restart_policy(restart: str) -> RestartPolicy:
    """Swarm's restart condition for a compose-style policy ("on-failure:3", "no", "always")."""
    name, _, count = restart.partition(":")
    if name == "no":
        return RestartPolicy(condition="none")
    if name == "on-failure":
        return RestartPolicy(condition="on-failure", max_attempts=int(count) if count.isdigit() else 0)
    return RestartPolicy(condition="any")  # always, unless-stopped: Swarm knows one "keep it up"


def service_args(
    spec: ContainerSpec,
    *,
    labels: dict[str, str],
    resolve: Resolve,
    files: Sequence[tuple[FileObject, str]],
    min_ready_s: float,
) -> dict[str, Any]:
    """Everything create_service (and update_service) needs; secrets are resolved here and only
    here. `files`: each config file's Swarm object with its id."""
    hc = container_config.healthcheck(spec, resolve)
    mounts = [
        Mount(v.mount_path, v.name, type="volume", labels=task_labels(labels)) for v in spec.volumes
    ]
    configs = [
        ConfigReference(oid, obj.name, filename=obj.file.mount_path, mode=obj.file.mode)
        for obj, oid in files
        if obj.kind == "config"
    ]
    secret_refs = [
        SecretReference(oid, obj.name, filename=obj.file.mount_path, mode=obj.file.mode)
        for obj, oid in files
        if obj.kind == "secret"
    ]
    container = SwarmContainerSpec(
        spec.image,
        # Swarm's Command is the entrypoint and Args the command, as in a compose file.
        command=[resolve(c) for c in spec.entrypoint] if spec.entrypoint is not None else None,
        args=[resolve(c) for c in spec.command] if spec.command is not None else None,
        env=[f"{k}={resolve(v)}" for k, v in spec.env],
        labels=task_labels(labels),
        user=spec.user,
        workdir=spec.working_dir,
        mounts=mounts,
        healthcheck=Healthcheck(**hc) if hc is not None else None,
        stop_signal=spec.stop_signal,
        stop_grace_period=int(spec.stop_grace_s * _NANO) if spec.stop_grace_s is not None else None,
        configs=configs or None,
        secrets=secret_refs or None,
    )
    task = TaskTemplate(
        container,
        resources=Resources(
            cpu_limit=int(spec.cpus * _NANO) if spec.cpus else None,
            mem_limit=spec.memory_bytes,
        ),
        restart_policy=restart_policy(spec.restart),
        networks=[NetworkAttachmentConfig(spec.network, aliases=[spec.name])],
    )
    order: Literal["start-first", "stop-first"] = "start-first" if start_first(spec) else "stop-first"
    monitor = math.ceil(monitor_s(spec, min_ready_s) * _NANO)
    published: Any = {  # docker-py takes {published: (target, protocol, mode)}; its stubs say str
        p.host_port: (p.container_port, p.protocol, "ingress") for p in spec.ports if p.host_port is not None
    }
    return {
        "task_template": task,
        "name": spec.name,
        "labels": labels,
        "mode": ServiceMode("replicated", replicas=spec.replicas),
        "update_config": UpdateConfig(
            parallelism=1, delay=0, failure_action="rollback", monitor=monitor,
            max_failure_ratio=0, order=order,
        ),
        "rollback_config": RollbackConfig(
            parallelism=1, delay=0, failure_action="pause", monitor=monitor,
            max_failure_ratio=0, order=order,
        ),
        # The routing mesh: every node answers on a published port, whichever runs a task.
        "endpoint_spec": EndpointSpec(mode="vip", ports=published) if published else None,
    }


# ---------------------------------------------------------------- read back from Swarm

# Swarm's task states in our words: the ones before "running" are on their way up.
_TASK_STATES = {
    "running": InstanceState.RUNNING,
    "new": InstanceState.CREATED,
    "pending": InstanceState.CREATED,
    "assigned": InstanceState.CREATED,
    "accepted": InstanceState.CREATED,
    "preparing": InstanceState.CREATED,
    "ready": InstanceState.CREATED,
    "starting": InstanceState.RESTARTING,
    "complete": InstanceState.EXITED,
    "shutdown": InstanceState.EXITED,
    "failed": InstanceState.EXITED,
    "rejected": InstanceState.EXITED,
    "orphaned": InstanceState.DEAD,
    "remove": InstanceState.EXITED,
}
_FAILED = ("failed", "rejected")
_ON_ITS_WAY = ("new", "pending", "assigned", "accepted", "preparing", "ready", "starting")


def stamp(text: str | None) -> datetime | None:
    """A Swarm timestamp ("2026-02-10T08:00:00.123456789Z") as a datetime; None when absent."""
    if not text:
        return None
    head, _, frac = text.rstrip("Z").partition(".")
    try:
        return datetime.fromisoformat(f"{head}.{(frac or '0')[:6]:0<6}+00:00")
    except ValueError:
        return None


def task_ref(task: Mapping[str, Any]) -> str:
    """A task's handle: its container's id once it has one (so events name it), else its own."""
    status = task.get("Status") or {}
    return str((status.get("ContainerStatus") or {}).get("ContainerID") or task["ID"])


def task_instance(
    service: LiveInstance, task: Mapping[str, Any], nodes: Mapping[str, str], healthchecked: bool
) -> LiveInstance:
    """One task of a service as an instance of its own, on its node."""
    status = task.get("Status") or {}
    state = _TASK_STATES.get(str(status.get("State", "")), InstanceState.EXITED)
    running = state is InstanceState.RUNNING
    health = None
    if healthchecked:
        # Swarm holds a task in "starting" until its healthcheck passes.
        health = InstanceHealth.HEALTHY if running else InstanceHealth.STARTING
    node = str(task.get("NodeID") or "")
    return LiveInstance(
        ref=task_ref(task),
        name=service.name,
        definition_id=service.definition_id,
        revision=service.revision,
        rendered_hash=service.rendered_hash,
        commit=service.commit,
        state=state,
        health=health,
        image=service.image,
        created_at=stamp(task.get("CreatedAt")),
        started_at=stamp(status.get("Timestamp")) if running else None,
        node=nodes.get(node, node) or None,
    )


def live_service(
    info: Mapping[str, Any], tasks: Sequence[Mapping[str, Any]], nodes: Mapping[str, str]
) -> LiveInstance | None:
    """A service and the tasks Swarm wants running as one instance keyed by the definition's
    name; None for a service without DeployAlly's name label."""
    spec = info.get("Spec") or {}
    labels: dict[str, str] = spec.get("Labels") or {}
    name = labels.get(LABEL_NAME)
    if not name:
        return None
    template = spec.get("TaskTemplate") or {}
    container = template.get("ContainerSpec") or {}
    check = (container.get("Healthcheck") or {}).get("Test")
    healthchecked = bool(check) and check != ["NONE"]
    wanted = int(((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas", 1))
    current = [t for t in tasks if (t.get("DesiredState") or "") == "running"]
    running = [t for t in current if (t.get("Status") or {}).get("State") == "running"]
    # A task Swarm is bringing up (a restart waits out its delay desired "ready"): Swarm is
    # converging the service itself.
    coming = [
        t for t in tasks
        if (t.get("DesiredState") or "") in ("running", "ready")
        and (t.get("Status") or {}).get("State") in _ON_ITS_WAY
    ]
    current += [t for t in coming if t not in current]
    stopped = labels.get(LABEL_STOPPED) == "true"
    # No task running is no instance running, 0 declared replicas too (the plan heals those
    # only when they declare some); restarting while Swarm brings one up, which the plan
    # leaves to Swarm.
    if stopped or (not running and not coming):
        state = InstanceState.EXITED
    elif not running:
        state = InstanceState.RESTARTING
    else:
        state = InstanceState.RUNNING
    health = None
    if healthchecked and state is InstanceState.RUNNING:
        health = InstanceHealth.HEALTHY if len(running) >= wanted else InstanceHealth.STARTING
    base = LiveInstance(
        ref=str(info["ID"]),
        name=name,
        definition_id=labels.get(LABEL_DEFINITION, ""),
        revision=container_config.label_revision(labels),
        rendered_hash=labels.get(LABEL_RENDERED_HASH, ""),
        commit=labels.get(LABEL_COMMIT, ""),
        state=state,
        health=health,
        image=str(container.get("Image", "")).split("@")[0],
        created_at=stamp(info.get("CreatedAt")),
        started_at=min(
            (s for t in running if (s := stamp((t.get("Status") or {}).get("Timestamp")))),
            default=None,
        ),
    )
    instances = tuple(
        task_instance(base, t, nodes, healthchecked)
        for t in sorted(current, key=lambda t: (t.get("Slot") or 0, t.get("CreatedAt") or ""))
    )
    return replace(base, tasks=instances)


def task_failed(task: Mapping[str, Any], since: str = "") -> bool:
    """Whether a task failed, was rejected or exited non-zero, created at or after the Swarm
    timestamp `since` (the manager's own clock)."""
    status = task.get("Status") or {}
    state = str(status.get("State", ""))
    exit_code = (status.get("ContainerStatus") or {}).get("ExitCode")
    if state not in _FAILED and not (state in ("shutdown", "complete") and exit_code):
        return False
    after, created = stamp(since), stamp(task.get("CreatedAt"))
    return after is None or created is None or created >= after


def task_errors(tasks: Sequence[Mapping[str, Any]], nodes: Mapping[str, str], since: str = "") -> list[str]:
    """A line for each task that failed (since the manager's timestamp `since`), newest first:
    its node, its container's exit code, and Swarm's state and error."""
    out = []
    for task in sorted(tasks, key=lambda t: str(t.get("CreatedAt") or ""), reverse=True):
        if not task_failed(task, since):
            continue
        status = task.get("Status") or {}
        state = str(status.get("State", ""))
        exit_code = (status.get("ContainerStatus") or {}).get("ExitCode")
        node = str(task.get("NodeID") or "")
        err = status.get("Err") or status.get("Message") or state
        what = f"exited with code {exit_code} ({state}: {err})" if exit_code else f"{state}: {err}"
        out.append(f"task {str(task['ID'])[:12]} on {nodes.get(node, node) or '?'} {what}")
    return out


def file_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """The labels of a definition's Swarm config or secret: whose, and for which definition."""
    return {k: labels[k] for k in CONFIG_FILE_LABELS if k in labels}

