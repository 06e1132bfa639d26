"""The local driver: carries out actions on this host's Docker engine through docker-py.

docker-py objects never leave this module and the container_config, config_files, resources and
events modules beside it; callers get LiveInstance, ApplyResult and InstanceEvent. An
instance's ref is its container id.
"""

from __future__ import annotations

import contextlib
import ipaddress
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.utils import parse_repository_tag

from deployally import secrets
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
from deployally.drivers.local import config_files, container_config, readiness
from deployally.drivers.local.calls import docker_call as _docker
from deployally.drivers.local.events import DockerEvents
from deployally.drivers.local.ownership import Adopted, Claims
from deployally.drivers.local.resources import VolumesAndNetworks
from deployally.errors import DeployAllyError, DriverError, NotBegun, NotFound
from deployally.types import (
    LABEL_MANAGED,
    LABEL_OWNER,
    LABEL_PRUNE_VOLUMES,
    LABEL_SERVER,
    Action,
    ActionKind,
    ApplyResult,
    ContainerSpec,
    DeploymentStatus,
    LiveInstance,
    Network,
)

OLD_SUFFIX = ".old"  # the previous container during a rollout, kept until the new one is healthy
LOG_TAIL = 20
_DOCKER_STOP_S = 10  # Docker's grace period when a container sets none


class _Masker:
    """Resolves placeholders and remembers the values, so no log line can carry one."""

    def __init__(self, resolve: Resolve) -> None:
        self._resolve = resolve
        self._values: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        for name in secrets.referenced(text):
            self._values[name] = self._resolve(secrets.placeholder(name))
        return self._resolve(text)

    def mask(self, text: str) -> str:
        """`text` with every resolved value replaced by <secret:NAME>."""
        for name, value in sorted(self._values.items(), key=lambda kv: -len(kv[1])):
            if value:
                text = text.replace(value, f"<secret:{name}>")
        return text


class LocalDriver(Driver):
    """Runs definitions as containers on this host's Docker engine."""

    kind = "local"

    def __init__(
        self,
        state_dir: Path,
        *,
        owner: str,
        claims: Claims,
        adopted: Adopted | None = None,
        server: str = "local",
        client: docker.DockerClient | None = None,
        docker_host: str | None = None,
        config: DriverConfig = DEFAULT_CONFIG,
    ) -> None:
        if not owner:
            # Without an owner the driver would recover, prune and heal every managed
            # container on the host, another engine's included.
            raise ValueError("a LocalDriver needs the owning engine's id")
        self.server = server
        self.owner = owner
        self.state_dir = Path(state_dir)
        self.config = config
        self._legacy_checked = False
        # Docker saturates at about 4 concurrent creates/starts on 2 cores; health waits are
        # idle polling, so more definitions may be in flight than hold a slot.
        self._slots = threading.BoundedSemaphore(config.parallel)
        # Held from stopping an old container until its replacement is ready (or the old one
        # is back): at most this many services are down at once.
        self._down = threading.BoundedSemaphore(config.unavailable)
        self._client_value = client
        self._owns_client = client is None
        self._docker_host = docker_host  # None: DOCKER_HOST or the default socket
        self._lock = threading.Lock()  # guards lazy client, network/image creation, name locks
        self._name_locks: dict[str, threading.Lock] = {}
        # Images found present during this sync: one look-up each, not one per rollout (each
        # took its turn under the image's lock, and cost Docker an inspect).
        self._present_images: set[str] = set()
        # Docker's events for every readiness wait on this engine: one subscription, not
        # an inspect loop per container (whose CPU a busy engine is short of).
        self._news = readiness.ContainerNews(self._new_client, owner=owner)
        self.resources = VolumesAndNetworks(
            lambda: self._api, owner, claims, adopted or Adopted(), self._name_lock
        )

    def __repr__(self) -> str:
        return f"LocalDriver(server={self.server!r}, state_dir={str(self.state_dir)!r})"

    @property
    def _client(self) -> docker.DockerClient:
        # Made lazily so a driver exists (and the API serves) while Docker is down; made
        # outside the lock, so close() never waits for an engine that does not answer.
        with self._lock:
            client = self._client_value
        if client is None:
            with _docker("connect to the Docker engine"):
                made = self._new_client()
            with self._lock:
                if self._client_value is None:
                    self._client_value = made
                client = self._client_value
            if client is not made:  # another thread made one meanwhile
                made.close()
        return client

    def _new_client(self) -> docker.DockerClient:
        if self._docker_host is None:
            return docker.from_env()
        return docker.DockerClient(base_url=self._docker_host)

    @property
    def _api(self) -> docker.APIClient:
        return self._client.api

    @property
    def _owned(self) -> list[str]:
        """Label filter for this engine's own containers of this server (an agent run with another
        server's key on this host must not take that server's containers for its own)."""
        return [f"{LABEL_MANAGED}=true", f"{LABEL_OWNER}={self.owner}", f"{LABEL_SERVER}={self.server}"]

    def _name_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._name_locks.setdefault(name, threading.Lock())

    # ------------------------------------------------------------ observe

    def ping(self) -> None:
        """Check the engine answers; raise DriverError naming the cause if not."""
        with _docker("ping the Docker engine"):
            self._api.ping()

    def host_networks(self) -> tuple[Network, ...]:
        """The subnets of every Docker network on this host, the engine's and any other: a
        container on any of them is reached through this host only."""
        with _docker("list networks"):
            rows = self._api.networks()
        out: list[Network] = []
        for row in rows:
            for pool in (row.get("IPAM") or {}).get("Config") or ():
                with contextlib.suppress(ValueError, TypeError):
                    out.append(ipaddress.ip_network(pool.get("Subnet") or "", strict=False))
        return tuple(out)

    def live(self) -> dict[str, LiveInstance]:
        """Every managed instance keyed by definition name, from one filtered list call."""
        with _docker("list containers"):
            rows = self._api.containers(all=True, filters={"label": self._owned})
        return _live_from(rows)

    def recover_and_list(self, log: Log) -> dict[str, LiveInstance]:
        """Recover, then what runs: from recovery's own list call when it found nothing to
        recover (a sync with nothing to do asks Docker once), else from a new one."""
        rows = self._recover(log)
        return self.live() if rows is None else _live_from(rows)

    def close(self) -> None:
        """End the readiness event subscription now, not a linger after the last wait, and close
        the Docker client the driver made (a later call opens both again)."""
        self._news.close()
        if not self._owns_client:
            return  # the caller's client: the caller closes it
        with self._lock:
            client, self._client_value = self._client_value, None
        if client is not None:
            client.close()  # its connection pool's sockets to the engine

    def configure(self, config: DriverConfig) -> None:
        """Health timeout, readiness and concurrent Docker calls for the next sync (between syncs)."""
        self._present_images.clear()  # a new sync looks again: an image may have been removed
        self.resources.forget()
        if config.parallel != self.config.parallel:
            self._slots = threading.BoundedSemaphore(config.parallel)
        if config.unavailable != self.config.unavailable:
            self._down = threading.BoundedSemaphore(config.unavailable)
        self.config = config

    def started_at(self, instance: LiveInstance) -> datetime | None:
        """The container's State.StartedAt, from one inspect; None when it is not running."""
        if instance.started_at is not None:
            return instance.started_at
        return container_config.started_at(self._inspect(instance.ref) or {})

    def settings(self, instance: LiveInstance) -> LiveInstance:
        """`instance` with its restart policy and limits, from one inspect (the list omits them)."""
        if instance.settings is not None:
            return instance
        info = self._inspect(instance.ref)
        if info is None:
            return instance
        return replace(instance, settings=container_config.instance_settings(info))

    def watch(self, on_event: OnEvent) -> EventStream:
        """Follow Docker's events for this engine's containers alone, on a daemon thread."""
        # Clients of its own: the stream holds its connection open, and reconnects.
        stream = DockerEvents(self._new_client, on_event, owner=self.owner, server=self.server)
        stream.start()
        return stream

    def _inspect(self, name: str) -> dict[str, Any] | None:
        """The container's inspect document, or None when there is none by that name."""
        try:
            with _docker(f"inspect container {name}"):
                result: dict[str, Any] = self._api.inspect_container(name)
                return result
        except DriverError as exc:
            if isinstance(exc.__cause__, docker.errors.NotFound):
                return None
            raise

    def _managed(self, name: str) -> dict[str, Any]:
        info = self._inspect(name)
        labels = (info or {}).get("Config", {}).get("Labels") or {}
        if (
            info is None
            or labels.get(LABEL_MANAGED) != "true"
            or labels.get(LABEL_OWNER) != self.owner  # another engine's: not ours to touch
            or labels.get(LABEL_SERVER) != self.server  # another server's on this host
        ):
            raise NotFound(f"no managed container named {name!r} on server {self.server!r}")
        return info

    # ------------------------------------------------------------ operator actions

    def start(self, name: str) -> None:
        """Start the named instance (operator action); NotFound if there is none."""
        with self._name_lock(name), _docker(f"start container {name}"):
            self._api.start(self._managed(name)["Id"])

    def stop(self, name: str) -> None:
        """Stop the named instance, honouring its stop signal and grace; NotFound if none."""
        with self._name_lock(name):
            info = self._managed(name)
            with _docker(f"stop container {name}"):
                self._api.stop(info["Id"], timeout=container_config.stop_timeout(info))

    def restart(self, name: str) -> None:
        """Restart the named instance (operator action); NotFound if there is none."""
        with self._name_lock(name):
            info = self._managed(name)
            with _docker(f"restart container {name}"):
                self._api.restart(
                    info["Id"], timeout=container_config.stop_timeout(info) or _DOCKER_STOP_S
                )

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
        """Carry out one action; a failed deploy is reported in the result, never raised
        (NotBegun when `begin` says the engine is stopping: then nothing changed)."""
        masker = _Masker(resolve)

        def begun() -> None:
            if begin is not None and not begin():
                raise NotBegun(f"{action.kind.value} of {action.name} not begun: the engine is stopping")

        def safe_log(message: str) -> None:
            log(masker.mask(message))

        if action.kind is ActionKind.NOOP:
            return ApplyResult(DeploymentStatus.SUCCESS, action.live.ref if action.live else None)
        with self._name_lock(action.name):
            try:
                if action.kind in (ActionKind.REMOVE, ActionKind.START):
                    begun()
                self._recover_name(action.name, safe_log)
                if action.kind is ActionKind.REMOVE:
                    return self._remove(action.name, safe_log)
                if action.kind is ActionKind.START:
                    return self._start(action, safe_log)
                if action.desired is None:
                    raise DriverError(f"{action.kind.value} of {action.name} has no desired spec")
                if action.desired.replicas != 1:
                    return self._refuse_replicas(action.desired, safe_log)
                return self._rollout(action.desired, revision, commit, masker, safe_log, begun)
            except NotBegun:
                raise
            except DeployAllyError as exc:
                message = masker.mask(str(exc))
                safe_log(f"failed: {message}")
                return ApplyResult(DeploymentStatus.FAILED, None, message)

    def _refuse_replicas(self, spec: ContainerSpec, log: Log) -> ApplyResult:
        """A server of one container per definition cannot run several: nothing is touched,
        and the same spec is not tried again by itself."""
        message = (
            f"replicas: {spec.replicas} needs a swarm server; server {self.server!r} "
            f"({self.kind}) runs exactly one container per definition: set replicas: 1 in "
            f"{spec.name}'s definition or move it to a swarm server"
        )
        log(f"not applied: {message}")
        return ApplyResult(DeploymentStatus.FAILED, None, message, unready=True)

    def _start(self, action: Action, log: Log) -> ApplyResult:
        """Heal in place: start it if it is not running, prove it ready, give it its spec's
        restart policy (a crash may have left the one a rollout starts with)."""
        name = action.name
        info = self._managed(name)
        if info["State"].get("Running"):
            log(f"container {info['Id'][:12]} is running; checking it is ready")
        else:
            log(f"starting container {info['Id'][:12]}")
            with _docker(f"start container {name}"):
                self._api.start(info["Id"])
        try:
            self._wait_ready(
                info["Id"], container_config.check_interval_s(info) is not None, action.desired, log
            )
        except readiness.NotReady as exc:
            self._log_tail(info["Id"], log)
            return ApplyResult(DeploymentStatus.FAILED, info["Id"], str(exc), unready=True)
        want = action.desired.restart if action.desired is not None else None
        have = container_config.instance_settings(info).restart
        if want is not None and have != want:
            with _docker(f"set the restart policy of {name}"):
                policy: Any = container_config.restart_policy(want)  # docker's stub wants a TypedDict
                self._api.update_container(info["Id"], restart_policy=policy)
            log(f"restart policy {have!r} -> {want!r}")
        return ApplyResult(DeploymentStatus.SUCCESS, info["Id"], "started")

    def _remove(self, name: str, log: Log) -> ApplyResult:
        info = self._inspect(name)
        if info is None:
            log(f"container {name} is already gone")
            return ApplyResult(DeploymentStatus.SUCCESS, None, "already removed")
        labels = info["Config"].get("Labels") or {}
        log(f"stopping container {info['Id'][:12]}")
        with _docker(f"stop container {name}"):
            self._api.stop(info["Id"], timeout=container_config.stop_timeout(info))
        with _docker(f"remove container {name}"):
            self._api.remove_container(info["Id"], v=False)
        log("removed container")
        config_files.drop_all(self.state_dir, name)
        if labels.get(LABEL_PRUNE_VOLUMES) == "true":
            for mount in info.get("Mounts") or []:
                if mount.get("Type") == "volume" and mount.get("Name"):
                    self.resources.prune_volume(mount["Name"], log)
        return ApplyResult(DeploymentStatus.SUCCESS, info["Id"], "removed")

    def _rollout(
        self,
        spec: ContainerSpec,
        revision: int | None,
        commit: str | None,
        resolve: _Masker,
        log: Log,
        begun: Callable[[], None],
    ) -> ApplyResult:
        """Create, or replace the running container, keeping the old one until the new is ready."""
        try:
            self._ensure_image(spec.image, log)
        except DriverError as exc:
            return ApplyResult(DeploymentStatus.FAILED, None, str(exc))
        # Before anything running is touched: a volume or network that is not ours stops here.
        self.resources.ensure_network(spec.network, log)
        self.resources.ensure_volumes(spec, log)
        args = container_config.create_args(
            spec,
            revision=revision,
            commit=commit,
            server=self.server,
            owner=self.owner,
            resolve=resolve,
            file_mounts=config_files.write_files(self.state_dir, spec, resolve),
            api_version=self._api.api_version,
        )

        old = self._inspect(spec.name)
        old_labels = (old["Config"].get("Labels") or {}) if old is not None else {}
        if old is not None and old_labels.get(LABEL_MANAGED) != "true":
            raise DriverError(
                f"a container named {spec.name!r} exists and is not managed by DeployAlly; "
                "rename or remove it, then sync again"
            )
        if old is not None and old_labels.get(LABEL_OWNER, "") != self.owner:
            raise DriverError(
                f"a container named {spec.name!r} belongs to another DeployAlly engine "
                f"(owner {old_labels.get(LABEL_OWNER) or 'unknown'}); rename the definition"
            )
        if old is not None and old_labels.get(LABEL_SERVER, self.server) != self.server:
            raise DriverError(
                f"a container named {spec.name!r} on this host is server "
                f"{old_labels.get(LABEL_SERVER)}'s, not {self.server}'s (two servers"
                " on one Docker engine?); give each server a Docker engine of its own"
            )
        stop_first = old is not None and bool(old["State"].get("Running")) and _must_stop_first(old, spec)
        # No restart policy until it proves ready: Docker restarting a failing container
        # would hide its exit (and its exit code) from the health gate.
        args["host_config"]["RestartPolicy"] = {"Name": "no"}
        # A service whose old container must stop first is down until the new one is ready:
        # take one of `max_unavailable` turns for that whole time, before a Docker slot.
        with self._down if stop_first else contextlib.nullcontext():
            result = self._replace(spec, args, old, stop_first, log, begun)
        if result.status is not DeploymentStatus.SUCCESS:
            return result
        if old is not None:
            with _docker(f"remove container {spec.name}{OLD_SUFFIX}"):
                self._api.remove_container(old["Id"], force=True, v=False)
            log(f"removed old container {old['Id'][:12]}")
            # The old container's config files: nothing mounts them any more.
            config_files.drop_others(self.state_dir, spec)
        return result

    def _replace(
        self,
        spec: ContainerSpec,
        args: dict[str, Any],
        old: dict[str, Any] | None,
        stop_first: bool,
        log: Log,
        begun: Callable[[], None],
    ) -> ApplyResult:
        """Old aside, new created, started and proven ready (SUCCESS), or the old one put back.
        The old container is renamed and stopped only once a Docker slot is ours, right
        before its replacement is created."""
        new_id: str | None = None
        renamed = stopped = False
        try:
            with self._slots:
                begun()  # a turn at last; a stopping engine leaves everything as it is
                if old is not None:
                    with _docker(f"rename container {spec.name}"):
                        self._api.rename(old["Id"], spec.name + OLD_SUFFIX)
                    renamed = True
                    log(f"renamed old container {old['Id'][:12]} to {spec.name}{OLD_SUFFIX}")
                    if stop_first:
                        log("stopping old container first (ports or volumes are shared)")
                        with _docker(f"stop container {spec.name}{OLD_SUFFIX}"):
                            self._api.stop(old["Id"], timeout=container_config.stop_timeout(old))
                        stopped = True
                with _docker(f"create container {spec.name}"):
                    new_id = str(self._api.create_container(**args)["Id"])
                log(f"created container {new_id[:12]}")
                with _docker(f"start container {spec.name}"):
                    self._api.start(new_id)
            self._wait_ready(new_id, spec.healthcheck is not None, spec, log)
            # A slot too: dozens of rollouts come out of their waits at once in a cold sync,
            # and Docker's resource update of each would crowd the creates and starts out.
            with self._slots, _docker(f"set the restart policy of {spec.name}"):
                policy: Any = container_config.restart_policy(spec.restart)  # docker's stub wants a TypedDict
                self._api.update_container(new_id, restart_policy=policy)
        except (readiness.NotReady, DriverError) as exc:
            reason = str(exc)
            unready = isinstance(exc, readiness.NotReady)  # the spec's fault, not Docker's
            if new_id is None:
                self._present_images.discard(spec.image)  # removed since it was looked up?
            log(f"container {spec.name} did not come up: {reason}")
            if new_id is not None:
                self._log_tail(new_id, log)
                with _docker(f"remove container {spec.name}"):
                    self._api.remove_container(new_id, force=True)
                log(f"removed failed container {new_id[:12]}")
            if old is None:
                return ApplyResult(DeploymentStatus.FAILED, None, reason, unready=unready)
            if renamed:
                with _docker(f"rename container {spec.name}{OLD_SUFFIX}"):
                    self._api.rename(old["Id"], spec.name)
            if stopped:
                with _docker(f"start container {spec.name}"):
                    self._api.start(old["Id"])
            log(f"rolled back to container {old['Id'][:12]}")
            return ApplyResult(DeploymentStatus.ROLLED_BACK, old["Id"], reason, unready=unready)
        return ApplyResult(DeploymentStatus.SUCCESS, new_id, "deployed")

    # ------------------------------------------------------------ pieces of a rollout

    def _ensure_image(self, image: str, log: Log) -> None:
        if image in self._present_images:
            return
        with self._name_lock(f"image:{image}"):  # one pull per image, however many use it
            if image in self._present_images:
                return
            try:
                with _docker(f"look up image {image}"):
                    self._client.images.get(image)
                self._present_images.add(image)
                return
            except DriverError as exc:
                if not isinstance(exc.__cause__, docker.errors.ImageNotFound):
                    raise
            log(f"pulling {image}")
            repository, tag = parse_repository_tag(image)
            with _docker(f"pull image {image}"):
                self._client.images.pull(repository, tag=tag or "latest")
            log(f"pulled {image}")
            self._present_images.add(image)

    def _wait_ready(
        self, container_id: str, has_healthcheck: bool, spec: ContainerSpec | None, log: Log
    ) -> None:
        """Return when the container is healthy (or still running after its spec's min_ready);
        else NotReady. Docker's events say when to look; every wait on this engine shares one
        subscription."""

        def inspect() -> dict[str, Any]:
            with _docker("inspect the new container"):
                info: dict[str, Any] = self._api.inspect_container(container_id)
                return info

        with self._news.watch(container_id) as until_news:
            readiness.wait_ready(
                inspect,
                until_news,
                has_healthcheck=has_healthcheck,
                health_timeout_s=self.config.health_timeout_s,
                min_ready_s=self.config.min_ready_of(spec),
                log=log,
                alive=lambda: self._alive(container_id),
            )

    def _alive(self, container_id: str) -> bool | None:
        """Whether the container's process runs, as its process list says (the kernel's word,
        not Docker's record); None when Docker cannot list them (no `ps` on its host)."""
        try:
            with _docker("list the new container's processes"):
                top = self._api.top(container_id)
        except DriverError as exc:
            cause = exc.__cause__
            if isinstance(cause, docker.errors.APIError) and cause.status_code in (404, 409):
                return False  # gone, or Docker already knows it is not running
            return None  # the inspect that follows says what Docker says
        return bool(top.get("Processes"))

    def _log_tail(self, container_id: str, log: Log) -> None:
        """Put the failing container's last lines in the deployment log."""
        try:
            with _docker("read the container's logs"):
                raw = self._api.logs(container_id, tail=LOG_TAIL)
        except DriverError as exc:
            log(f"(no container logs: {exc})")
            return
        lines = raw.decode("utf-8", errors="replace").splitlines()
        log(
            f"last {len(lines)} log lines of the container:"
            if lines
            else "container logged nothing"
        )
        for line in lines:
            log(f"  | {line}")

    # ------------------------------------------------------------ crash recovery

    def recover(self, log: Log) -> None:
        """Finish or undo rollouts a crash interrupted; drop config file dirs nobody mounts.

        The first time, also claim the volumes and networks this engine made before they
        carried its owner label (an upgrade), while its containers still show which they are.
        """
        self._recover(log)

    def _recover(self, log: Log) -> list[dict[str, Any]] | None:
        """`recover`; the containers it listed, or None when it changed some of them."""
        if not self._legacy_checked:
            self.resources.claim_legacy(log)
            self._legacy_checked = True
        with _docker("list containers"):
            rows = self._api.containers(all=True, filters={"label": self._owned})
        leftovers = [
            cname[: -len(OLD_SUFFIX)]
            for row in rows
            if (cname := (row.get("Names") or ["/"])[0].lstrip("/")).endswith(OLD_SUFFIX)
        ]
        for name in leftovers:
            with self._name_lock(name):
                self._recover_name(name, log)
        config_files.drop_unmounted(
            self.state_dir,
            (
                m.get("Source", "")
                for row in rows
                for m in row.get("Mounts") or []
                if m.get("Type") == "bind"
            ),
        )
        return None if leftovers else rows

    def _recover_name(self, name: str, log: Log) -> None:
        """If `<name>.old` is left over, keep the new container only if it proved ready.

        A crash during the health wait leaves a new container that may be running but
        unhealthy or still starting; the old one goes back, and the next sync redoes the update.
        """
        old = self._inspect(name + OLD_SUFFIX)
        if old is None:
            return
        current = self._inspect(name)
        if current is not None and _proven_ready(current):
            with _docker(f"remove container {name}{OLD_SUFFIX}"):
                self._api.remove_container(old["Id"], force=True, v=False)
            log(f"recovered {name}: removed leftover {name}{OLD_SUFFIX}")
            return
        if current is not None:
            with _docker(f"remove container {name}"):
                self._api.remove_container(current["Id"], force=True, v=False)
            log(f"recovered {name}: removed unproven new container {current['Id'][:12]}")
        with _docker(f"rename container {name}{OLD_SUFFIX}"):
            self._api.rename(old["Id"], name)
        if not old["State"].get("Running"):
            with _docker(f"start container {name}"):
                self._api.start(old["Id"])
        log(f"recovered {name}: restored the previous container {old['Id'][:12]}")


# ---------------------------------------------------------------- pure conversions


def _live_from(rows: list[dict[str, Any]]) -> dict[str, LiveInstance]:
    """The managed instances of a container listing, keyed by definition name."""
    out: dict[str, LiveInstance] = {}
    for row in rows:
        instance = container_config.live_instance(row)
        if instance is not None:
            out[instance.name] = instance
    return out


def _proven_ready(info: dict[str, Any]) -> bool:
    """Whether a container passes what a rollout waits for: up, and healthy if it has a check."""
    try:
        readiness.raise_if_down(info)
    except readiness.NotReady:
        return False
    # Docker sets State.Health only when a healthcheck is in force.
    health = info["State"].get("Health")
    return health is None or health.get("Status") == "healthy"


def _must_stop_first(old: dict[str, Any], spec: ContainerSpec) -> bool:
    """Stop the old container before starting the new when they share host ports or volumes."""
    if spec.volumes:  # two processes must never write one data directory
        return True
    bindings = old.get("HostConfig", {}).get("PortBindings") or {}
    old_ports = {b.get("HostPort") for bs in bindings.values() for b in bs or []}
    return any(str(p.host_port) in old_ports for p in spec.ports if p.host_port is not None)
