"""The swarm driver: each definition is a Docker Swarm service on a manager this engine reaches.

The engine only declares (create_service/update_service with Swarm's own rolling update:
one task at a time, rolled back by Swarm when a new task fails) and watches the update
converge; Swarm places the tasks on its nodes, keeps them running and rolls back. An
instance's ref is its service id; its tasks are instances of their own (LiveInstance.tasks),
each with the node it runs on. docker-py objects never leave this package.
"""

from __future__ import annotations

import contextlib
import importlib.util
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.tls

from deployally.drivers.base import (
    DEFAULT_CONFIG,
    Begin,
    Driver,
    DriverConfig,
    EventStream,
    Log,
    OnEvent,
    Resolve,
)
from deployally.drivers.local import ownership
from deployally.drivers.local.calls import docker_call as _docker
from deployally.drivers.local.events import DockerEvents
from deployally.drivers.local.ownership import NETWORK, VOLUME, Adopted
from deployally.drivers.swarm import service_spec
from deployally.drivers.swarm.service_spec import LABEL_REPLICAS, LABEL_STOPPED, FileObject
from deployally.errors import DeployAllyError, DriverError, NotBegun, NotFound
from deployally.model.definitions import swarm_refusals
from deployally.types import (
    LABEL_MANAGED,
    LABEL_NAME,
    LABEL_OWNER,
    LABEL_RENDERED_HASH,
    Action,
    ActionKind,
    ApplyResult,
    ContainerSpec,
    DeploymentStatus,
    LiveInstance,
)

POLL_S = 0.5  # how often a deployment looks at its service's update and tasks
GONE_S = 30.0  # how long a removal waits for the service's containers to go, so its files can
# A manager that does not answer a call in this time is unreachable (docker-py waits 60 s);
# the event stream is not bound by it.
CALL_TIMEOUT_S = 20
TLS_FILES = ("ca.pem", "cert.pem", "key.pem")  # a Docker TLS directory, as DOCKER_CERT_PATH holds


def client_for(docker_host: str, tls_dir: Path | None) -> docker.DockerClient:
    """A client of the manager at `docker_host`: unix:// as it is, tcp:// only with TLS (the
    directory of ca.pem, cert.pem and key.pem engine.yaml names), ssh:// through the ssh
    command (the engine user's keys and ~/.ssh/config)."""
    if not docker_host:
        raise DriverError("the server has no docker_host: register it with the manager's address")
    if docker_host.startswith("ssh://"):
        if importlib.util.find_spec("paramiko") is None:
            raise DriverError(
                f"{docker_host} is reached over SSH, which needs paramiko: pip install 'deployally[ssh]'"
            )
        return docker.DockerClient(base_url=docker_host, use_ssh_client=True, timeout=CALL_TIMEOUT_S)
    if docker_host.startswith("tcp://"):
        if tls_dir is None:
            raise DriverError(
                f"{docker_host} is reached over TCP, which needs TLS: name a directory holding "
                "ca.pem, cert.pem and key.pem in engine.yaml, `docker_tls: {SERVER: DIR}`"
            )
        missing = [f for f in TLS_FILES if not (tls_dir / f).is_file()]
        if missing:
            raise DriverError(f"{tls_dir} lacks {', '.join(missing)} (engine.yaml docker_tls)")
        tls = docker.tls.TLSConfig(
            client_cert=(str(tls_dir / "cert.pem"), str(tls_dir / "key.pem")),
            ca_cert=str(tls_dir / "ca.pem"),
            verify=True,
        )
        return docker.DockerClient(
            base_url=docker_host.replace("tcp://", "https://", 1), tls=tls, timeout=CALL_TIMEOUT_S
        )
    return docker.DockerClient(base_url=docker_host, timeout=CALL_TIMEOUT_S)


class SwarmDriver(Driver):
    """Runs definitions as services of the Docker Swarm whose manager is at `docker_host`."""

    kind = "swarm"

    def __init__(
        self,
        *,
        server: str,
        docker_host: str,
        owner: str,
        tls_dir: Path | None = None,
        adopted: Adopted | None = None,
        config: DriverConfig = DEFAULT_CONFIG,
    ) -> None:
        if not owner:
            raise ValueError("a SwarmDriver needs the owning engine's id")
        self.server = server
        self.owner = owner
        self.docker_host = docker_host
        self.tls_dir = tls_dir
        self.adopted = adopted or Adopted()
        self.config = config
        self._client_value: docker.DockerClient | None = None
        self._lock = threading.Lock()
        self._name_locks: dict[str, threading.Lock] = {}
        self._nodes: dict[str, str] = {}  # node id -> hostname, asked again for an unknown id

    def __repr__(self) -> str:
        return f"SwarmDriver(server={self.server!r}, docker_host={self.docker_host!r})"

    def _new_client(self) -> docker.DockerClient:
        with _docker(f"connect to the Swarm manager at {self.docker_host}"):
            return client_for(self.docker_host, self.tls_dir)

    @property
    def _api(self) -> Any:  # docker.APIClient, whose swarm calls its stubs leave untyped
        # Made lazily: the driver exists (and the API serves) while the manager is down. Made
        # outside the lock, so close() never waits for a manager that does not answer.
        with self._lock:
            client = self._client_value
        if client is None:
            made = self._new_client()
            with self._lock:
                if self._client_value is None:
                    self._client_value = made
                client = self._client_value
            if client is not made:  # another thread made one meanwhile
                made.close()
        return client.api

    def _name_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._name_locks.setdefault(name, threading.Lock())

    @property
    def _owned(self) -> dict[str, list[str]]:
        return {"label": [f"{LABEL_MANAGED}=true", f"{LABEL_OWNER}={self.owner}"]}

    # ------------------------------------------------------------ observe

    def ping(self) -> None:
        """Check the manager answers and is a manager; raise DriverError naming the cause if not."""
        with _docker(f"ask {self.docker_host} about its swarm"):
            info = self._api.info()
        if not (info.get("Swarm") or {}).get("ControlAvailable"):
            raise DriverError(
                f"{self.docker_host} is not a Swarm manager (`docker swarm init` makes one, or "
                "point docker_host at a manager)"
            )

    def live(self) -> dict[str, LiveInstance]:
        """This engine's services by definition name, each with its tasks: three list calls."""
        with _docker("list services"):
            services = self._api.services(filters=self._owned)
        if not services:
            return {}
        with _docker("list tasks"):
            tasks = self._api.tasks(filters={"service": [s["ID"] for s in services]})
        by_service: dict[str, list[dict[str, Any]]] = {}
        for task in tasks:
            by_service.setdefault(str(task.get("ServiceID")), []).append(task)
        nodes = self._node_names({str(t.get("NodeID") or "") for t in tasks} - {""})
        out: dict[str, LiveInstance] = {}
        for info in services:
            instance = service_spec.live_service(info, by_service.get(info["ID"], []), nodes)
            if instance is not None:
                out[instance.name] = instance
        return out

    def _manager_now(self) -> str:
        """Now on the manager's clock (its SystemTime), which stamps the tasks' CreatedAt."""
        with _docker(f"ask {self.docker_host} the time"):
            return str(self._api.info().get("SystemTime") or "")

    def _node_names(self, ids: set[str]) -> dict[str, str]:
        """Node id -> hostname; one list call when a node is new."""
        if ids - set(self._nodes):
            with _docker("list nodes"):
                rows = self._api.nodes()
            self._nodes = {
                str(n["ID"]): str((n.get("Description") or {}).get("Hostname") or n["ID"]) for n in rows
            }
        return self._nodes

    def configure(self, config: DriverConfig) -> None:
        """The health timeout (and min_ready for specs without one) the next sync waits with."""
        self.config = config

    def close(self) -> None:
        """Close the client to the manager (its pooled connections); a later call opens another."""
        with self._lock:
            client, self._client_value = self._client_value, None
        if client is not None:
            client.close()

    def watch(self, on_event: OnEvent) -> EventStream:
        """Follow the manager's container events of this engine's tasks (those on the manager's
        own node: Swarm sends no task events, and another node's containers are that node's)."""
        stream = DockerEvents(self._new_client, on_event, owner=self.owner)
        stream.start()
        return stream

    def recover(self, log: Log) -> None:
        """Nothing to finish: an update is Swarm's own, carried on (or rolled back) by the
        managers whatever happens to this engine, and the next sync compares what runs."""

    # ------------------------------------------------------------ operator actions

    def start(self, name: str) -> None:
        """Scale the service back to its declared replicas (operator action)."""
        with self._name_lock(name):
            self._respec(name, _scaled(None))

    def stop(self, name: str) -> None:
        """Scale the service to no task (operator action); its volumes and spec stay."""
        with self._name_lock(name):
            self._respec(name, _scaled(0))

    def restart(self, name: str) -> None:
        """Replace every task, one at a time as an update does (operator action)."""
        with self._name_lock(name):
            self._respec(name, _forced)

    def _managed(self, name: str) -> dict[str, Any] | None:
        """The service named `name`, if there is one; DriverError when it is not this engine's.
        Found by its exact name: Docker resolves inspect_service's argument as an id, a name,
        then an id prefix, so a definition named like the start of another service's id would
        get that service; the name filter matches substrings, hence the exact comparison."""
        with _docker(f"look up service {name}"):
            found = [
                s for s in self._api.services(filters={"name": name})
                if (s.get("Spec") or {}).get("Name") == name
            ]
        if not found:
            return None
        info: dict[str, Any] = found[0]
        labels = (info.get("Spec") or {}).get("Labels") or {}
        if labels.get(LABEL_MANAGED) != "true":
            raise DriverError(
                f"a service named {name!r} exists and is not managed by DeployAlly; rename or "
                "remove it, then sync again"
            )
        if labels.get(LABEL_OWNER) != self.owner:
            raise DriverError(
                f"a service named {name!r} belongs to another DeployAlly engine "
                f"(owner {labels.get(LABEL_OWNER) or 'unknown'}); rename the definition"
            )
        return info

    def _respec(self, name: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Send the service's current spec with `change` made to it; NotFound if there is none."""
        info = self._managed(name)
        if info is None:
            raise NotFound(f"no service named {name!r} on server {self.server!r}")
        spec = info["Spec"]
        change(spec)
        with _docker(f"update service {name}"):
            self._api.update_service(
                info["ID"], info["Version"]["Index"],
                task_template=spec.get("TaskTemplate"), name=spec["Name"], labels=spec.get("Labels"),
                mode=spec.get("Mode"), update_config=spec.get("UpdateConfig"),
                rollback_config=spec.get("RollbackConfig"), endpoint_spec=spec.get("EndpointSpec"),
            )
        return info

    # ------------------------------------------------------------ apply

    def apply(
        self,
        action: Action,
        *,
        revision: int | None,
        commit: str | None,
        resolve: Resolve,
        log: Log,
        begin: Begin | None = None,
    ) -> ApplyResult:
        """Declare one action's service and wait for Swarm to converge; a failed deploy is
        reported in the result, never raised (NotBegun when the engine is stopping)."""

        def begun() -> None:
            if begin is not None and not begin():
                raise NotBegun(f"{action.kind.value} of {action.name} not begun: the engine is stopping")

        if action.kind is ActionKind.NOOP:
            return ApplyResult(DeploymentStatus.SUCCESS, action.live.ref if action.live else None)
        with self._name_lock(action.name):
            try:
                if action.kind is ActionKind.REMOVE:
                    begun()
                    return self._remove(action.name, log)
                if action.desired is None:
                    raise DriverError(f"{action.kind.value} of {action.name} has no desired spec")
                if action.kind is ActionKind.START:
                    begun()
                    return self._heal(action.desired, log)
                return self._declare(action.desired, revision, commit, resolve, log, begun)
            except NotBegun:
                raise
            except DeployAllyError as exc:
                log(f"failed: {exc}")
                return ApplyResult(DeploymentStatus.FAILED, None, str(exc))

    def _refusal(self, spec: ContainerSpec) -> str | None:
        """Why this spec cannot be a service, before anything is touched (the engine's
        validation refuses it first; this is for a spec that reached the driver anyway)."""
        refused = swarm_refusals("", spec)
        return "; ".join(e.message for e in refused) if refused else None

    def _declare(
        self,
        spec: ContainerSpec,
        revision: int | None,
        commit: str | None,
        resolve: Resolve,
        log: Log,
        begun: Callable[[], None],
    ) -> ApplyResult:
        """Create or update the service and wait for Swarm's rolling update to end."""
        refused = self._refusal(spec)
        if refused is not None:
            log(f"not applied: {refused}")
            return ApplyResult(DeploymentStatus.FAILED, None, refused, unready=True)
        old = self._managed(spec.name)
        self._ensure_network(spec.network, log)
        self._check_volumes(spec)
        begun()
        labels = service_spec.service_labels(
            spec, revision=revision, commit=commit, server=self.server, owner=self.owner
        )
        files = [(obj, self._ensure_file(obj, labels, resolve, log)) for obj in service_spec.file_objects(spec)]
        args = service_spec.service_args(
            spec, labels=labels, resolve=resolve, files=files, min_ready_s=self.config.min_ready_s
        )
        if any(p.host_port is not None for p in spec.ports):
            log("published ports go through Swarm's routing mesh: every node answers on them, "
                "on each of its addresses")
        started = self._manager_now()
        if old is None:
            with _docker(f"create service {spec.name}"):
                service_id = str(self._api.create_service(**args)["ID"])
            log(f"created service {service_id[:12]} with {spec.replicas} replica(s)")
            result = self._converge(service_id, spec, None, started, log, fresh=True)
            if result.status is DeploymentStatus.SUCCESS:
                return result
            # Nothing ran before it: the failed service goes, with what it mounted.
            with _docker(f"remove service {spec.name}"):
                self._api.remove_service(service_id)
            log(f"removed failed service {service_id[:12]}")
            self._wait_gone(spec.name)
            self._drop_files(spec.name, keep=set(), log=log)
            return replace(result, ref=None)
        update = (old.get("UpdateStatus") or {}).get("StartedAt")
        with _docker(f"update service {spec.name}"):
            self._api.update_service(old["ID"], old["Version"]["Index"], **args)
        log(f"updating service {old['ID'][:12]}: {spec.replicas} replica(s), one task at a time, "
            f"{'new task first' if service_spec.start_first(spec) else 'old task stopped first'}")
        result = self._converge(old["ID"], spec, update, started, log)
        current = self._managed(spec.name)
        self._drop_files(spec.name, keep=_file_names(current), log=log)
        return result

    def _heal(self, spec: ContainerSpec, log: Log) -> ApplyResult:
        """A service whose tasks are down: scaled back to its replicas, and waited for."""
        info = self._managed(spec.name)
        if info is None:
            raise DriverError(f"service {spec.name} is gone")
        since = self._manager_now()
        labels = (info.get("Spec") or {}).get("Labels") or {}
        if labels.get(LABEL_STOPPED) == "true":
            self._respec(spec.name, _scaled(None))
            log(f"scaled service {spec.name} back to {spec.replicas} replica(s)")
        else:
            # The plan heals only a service Swarm is not bringing up (its restart policy gave
            # up): new tasks, as a restart does.
            self._respec(spec.name, _forced)
            log(f"service {spec.name} has no running task and Swarm starts none; replacing its tasks")
            info = self._managed(spec.name) or info
        return self._converge(info["ID"], spec, (info.get("UpdateStatus") or {}).get("StartedAt"),
                              since, log, fresh=True)

    def _remove(self, name: str, log: Log) -> ApplyResult:
        """Remove the service and its configs and secrets; its volumes stay on their nodes."""
        info = self._managed(name)
        if info is None:
            log(f"service {name} is already gone")
            self._drop_files(name, keep=set(), log=log)
            return ApplyResult(DeploymentStatus.SUCCESS, None, "already removed")
        mounts = ((info["Spec"].get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Mounts") or []
        with _docker(f"remove service {name}"):
            self._api.remove_service(info["ID"])
        log(f"removed service {info['ID'][:12]}")
        self._wait_gone(name)
        self._drop_files(name, keep=set(), log=log)
        volumes = [m["Source"] for m in mounts if m.get("Type") == "volume" and m.get("Source")]
        if volumes:
            log(f"kept volume(s) {', '.join(volumes)} on the nodes that ran its tasks")
        return ApplyResult(DeploymentStatus.SUCCESS, info["ID"], "removed")

    # ------------------------------------------------------------ waiting for Swarm

    def _converge(
        self, service_id: str, spec: ContainerSpec, update_before: str | None, since: str, log: Log,
        *, fresh: bool = False,
    ) -> ApplyResult:
        """Follow the service until Swarm's update ends, or every task runs the new spec:
        SUCCESS; Swarm rolled it back: ROLLED_BACK with the tasks' errors; no progress within
        the health timeout and monitor window: FAILED. `fresh` (a created or healed service,
        which no Swarm update watches): every task must then stay up for the monitor window (its
        min_ready; or be healthy, with a healthcheck), and a failed task of it fails at once."""
        monitor = service_spec.monitor_s(spec, self.config.min_ready_s)
        # The bound of one step (a create starts every task at once; an update rolls one task at a
        # time, so its deadline moves each time one more task runs the new spec).
        step = self.config.health_timeout_s + monitor
        settle = 0.0 if spec.healthcheck is not None else monitor
        deadline = time.monotonic() + step
        said = ""
        progress = -1
        steady: float | None = None
        while True:
            with _docker(f"inspect service {spec.name}"):
                info = self._api.inspect_service(service_id)
            with _docker(f"list the tasks of {spec.name}"):
                tasks = self._api.tasks(filters={"service": [service_id]})
            status = info.get("UpdateStatus") or {}
            state = str(status.get("State", "")) if status.get("StartedAt") != update_before else ""
            if state and state != said:
                log(f"swarm update {state.replace('_', ' ')}" + (f": {status['Message']}" if status.get("Message") else ""))
                said = state
            ours = (info["Spec"].get("Labels") or {}).get(LABEL_RENDERED_HASH) == spec.rendered_hash
            if state == "rollback_paused":
                # failure_action pause of the rollback: Swarm's own rollback failed halfway.
                return self._failed(DeploymentStatus.FAILED, service_id, tasks, since,
                                    "Swarm's rollback of the update failed and is paused, the service "
                                    "stuck between the old and the new spec: "
                                    + (status.get("Message") or "a task of the old spec failed"), log)
            if state == "rollback_completed" or (not ours and not state.startswith("rollback")):
                return self._failed(DeploymentStatus.ROLLED_BACK, service_id, tasks, since,
                                    "Swarm rolled the update back: " + (status.get("Message") or "a new task failed"), log)
            if state == "paused":
                return self._failed(DeploymentStatus.FAILED, service_id, tasks, since,
                                    "Swarm paused the update: " + (status.get("Message") or "a new task failed"), log)
            if fresh and not state:
                crashed = _failed_tasks(info, tasks, since)
                if crashed:
                    return self._failed(DeploymentStatus.FAILED, service_id, crashed, since,
                                        "a task of the new service failed", log)
            if state in ("", "completed") and _converged(info, tasks):
                if not fresh or state == "completed":
                    log(f"{spec.replicas} task(s) running the new spec")
                    return ApplyResult(DeploymentStatus.SUCCESS, service_id, "deployed")
                if steady is None:
                    steady = time.monotonic()
                    if settle:
                        log(f"{spec.replicas} task(s) running; waiting {settle:g}s to see them keep running")
                if time.monotonic() - steady >= settle:
                    log(f"{spec.replicas} task(s) running the new spec"
                        + (", healthy" if spec.healthcheck is not None else f" for {settle:g}s"))
                    return ApplyResult(DeploymentStatus.SUCCESS, service_id, "deployed")
            else:
                steady = None
            running = _running_current(info, tasks)
            if running > progress:
                progress = running
                deadline = time.monotonic() + step
            if time.monotonic() > deadline:
                return self._failed(DeploymentStatus.FAILED, service_id, tasks, since,
                                    f"no task of the new spec came up within {step:g}s", log)
            time.sleep(POLL_S)

    def _failed(
        self, status: DeploymentStatus, service_id: str, tasks: list[dict[str, Any]],
        since: str, message: str, log: Log,
    ) -> ApplyResult:
        """The result of an update that did not take, with each failed task's error logged."""
        nodes = self._node_names({str(t.get("NodeID") or "") for t in tasks} - {""})
        errors = service_spec.task_errors(tasks, nodes, since)
        log(message)
        for line in errors[:10]:
            log(f"  {line}")
        if errors:
            message += f" ({errors[0]})"
        return ApplyResult(status, service_id, message, unready=True)

    def _wait_gone(self, name: str) -> None:
        """Until the removed service's containers on the manager's node are gone, so its configs,
        secrets and volumes are free (another node's go on their own, at most GONE_S later)."""
        filters = {"label": [f"{LABEL_OWNER}={self.owner}", f"{LABEL_NAME}={name}"]}
        deadline = time.monotonic() + GONE_S
        while time.monotonic() < deadline:
            with _docker(f"list the containers of {name}"):
                if not self._api.containers(all=True, filters=filters):
                    return
            time.sleep(POLL_S)

    # ------------------------------------------------------------ what a service uses

    def _ensure_network(self, name: str, log: Log) -> None:
        """The overlay network the service's tasks join: this engine's own (made with its
        label), or one engine.yaml adopts; DriverError for anyone else's."""
        with self._name_lock(f"network:{name}"), _docker(f"look up network {name}"):
            found = [n for n in self._api.networks(names=[name]) if n.get("Name") == name]
            if not found:
                self._api.create_network(
                    name, driver="overlay", attachable=True,
                    labels={LABEL_MANAGED: "true", LABEL_OWNER: self.owner},
                )
                log(f"created overlay network {name}")
                return
        labels = found[0].get("Labels") or {}
        standing = ownership.standing(NETWORK, name, labels, owner=self.owner, claimed=False, adopted=self.adopted)
        if standing not in (ownership.Standing.OURS, ownership.Standing.ADOPTED):
            raise DriverError(ownership.refusal(NETWORK, name, labels))
        if found[0].get("Scope") != "swarm":
            raise DriverError(f"network {name} is not a swarm-scoped (overlay) network; a service cannot join it")

    def _check_volumes(self, spec: ContainerSpec) -> None:
        """A volume on the manager's node that is not this engine's stops the deployment; the
        other nodes make theirs, labelled, when a task first mounts it."""
        for volume in spec.volumes:
            try:
                with _docker(f"inspect volume {volume.name}"):
                    info = self._api.inspect_volume(volume.name)
            except DriverError as exc:
                if isinstance(exc.__cause__, docker.errors.NotFound):
                    continue
                raise
            labels = info.get("Labels") or {}
            standing = ownership.standing(VOLUME, volume.name, labels, owner=self.owner, claimed=False, adopted=self.adopted)
            if standing not in (ownership.Standing.OURS, ownership.Standing.ADOPTED):
                raise DriverError(ownership.refusal(VOLUME, volume.name, labels))

    def _ensure_file(self, obj: FileObject, labels: Mapping[str, str], resolve: Resolve, log: Log) -> str:
        """The id of the Swarm config or secret holding `obj`'s file, made when new."""
        listed = self._api.secrets if obj.kind == "secret" else self._api.configs
        with _docker(f"look up {obj.kind} {obj.name}"):
            for row in listed(filters={"name": obj.name}):
                if (row.get("Spec") or {}).get("Name") == obj.name:
                    return str(row["ID"])
        data = resolve(obj.file.content).encode("utf-8")
        made = self._api.create_secret if obj.kind == "secret" else self._api.create_config
        with _docker(f"create {obj.kind} {obj.name}"):
            oid = made(obj.name, data, labels=service_spec.file_labels(labels))["ID"]
        log(f"created swarm {obj.kind} {obj.name} for {obj.file.mount_path}")
        return str(oid)

    def _drop_files(self, name: str, *, keep: set[str], log: Log) -> None:
        """Remove the definition's configs and secrets but `keep`; one still in use stays."""
        filters = {"label": [f"{LABEL_OWNER}={self.owner}", f"{LABEL_NAME}={name}"]}
        for kind, listed, remove in (
            ("config", self._api.configs, self._api.remove_config),
            ("secret", self._api.secrets, self._api.remove_secret),
        ):
            with _docker(f"list {kind}s"):
                rows = listed(filters=filters)
            for row in rows:
                oname = (row.get("Spec") or {}).get("Name")
                if oname in keep:
                    continue
                # In use by a task still shutting down: the next deployment of the name tries again.
                with contextlib.suppress(DriverError), _docker(f"remove {kind} {oname}"):
                    remove(row["ID"])
                    log(f"removed swarm {kind} {oname}")


def _scaled(replicas: int | None) -> Callable[[dict[str, Any]], None]:
    """A spec change: to `replicas` tasks (an operator's stop), or None: back to the declared ones."""

    def change(spec: dict[str, Any]) -> None:
        labels = spec.setdefault("Labels", {})
        declared = labels.get(LABEL_REPLICAS, "1")
        count = replicas if replicas is not None else int(declared) if declared.isdigit() else 1
        spec["Mode"] = {"Replicated": {"Replicas": count}}
        if replicas == 0:
            labels[LABEL_STOPPED] = "true"
        else:
            labels.pop(LABEL_STOPPED, None)

    return change


def _forced(spec: dict[str, Any]) -> None:
    """A spec change that changes nothing but makes Swarm replace every task."""
    task = spec.setdefault("TaskTemplate", {})
    task["ForceUpdate"] = int(task.get("ForceUpdate") or 0) + 1


def _converged(info: Mapping[str, Any], tasks: list[dict[str, Any]]) -> bool:
    """Every task Swarm wants running runs the service's current task spec, as many as it declares."""
    spec = info.get("Spec") or {}
    want = int(((spec.get("Mode") or {}).get("Replicated") or {}).get("Replicas", 1))
    current = [t for t in tasks if t.get("DesiredState") == "running"]
    return _running_current(info, tasks) == want and len(current) == want


def _of_current_spec(info: Mapping[str, Any], task: Mapping[str, Any]) -> bool:
    """Whether `task` runs the service's current task template."""
    template = _comparable((info.get("Spec") or {}).get("TaskTemplate") or {})
    return _comparable(task.get("Spec") or {}) == template


def _running_current(info: Mapping[str, Any], tasks: list[dict[str, Any]]) -> int:
    """How many tasks Swarm wants running run, on the service's current task spec."""
    return sum(
        1 for t in tasks
        if t.get("DesiredState") == "running" and (t.get("Status") or {}).get("State") == "running"
        and _of_current_spec(info, t)
    )


def _failed_tasks(info: Mapping[str, Any], tasks: list[dict[str, Any]], since: str) -> list[dict[str, Any]]:
    """The tasks of the current spec that failed, were rejected or exited non-zero since `since`."""
    return [
        t for t in tasks
        if _of_current_spec(info, t) and service_spec.task_failed(t, since)
    ]


def _comparable(task_spec: Mapping[str, Any]) -> dict[str, Any]:
    # Swarm copies the service's task template into each task, less its Runtime field.
    return {k: v for k, v in task_spec.items() if k != "Runtime"}


def _file_names(info: Mapping[str, Any] | None) -> set[str]:
    """The configs and secrets a service's spec mounts."""
    container = (((info or {}).get("Spec") or {}).get("TaskTemplate") or {}).get("ContainerSpec") or {}
    return {
        str(ref.get("ConfigName") or ref.get("SecretName"))
        for ref in (container.get("Configs") or []) + (container.get("Secrets") or [])
    }
