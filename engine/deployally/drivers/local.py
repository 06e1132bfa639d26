"""The local driver: carries out actions on this host's Docker engine through docker-py.

docker-py objects never leave this module; callers get LiveInstance and ApplyResult.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions
from docker.types import Mount
from docker.utils import parse_repository_tag

from deployally import secrets
from deployally.drivers.base import Driver, Log, Resolve
from deployally.errors import DeployAllyError, DriverError, NotFound
from deployally.types import (
    LABEL_COMMIT,
    LABEL_DEFINITION,
    LABEL_MANAGED,
    LABEL_NAME,
    LABEL_OWNER,
    LABEL_PRUNE_VOLUMES,
    LABEL_RENDERED_HASH,
    LABEL_REVISION,
    LABEL_SERVER,
    Action,
    ActionKind,
    ApplyResult,
    ContainerSpec,
    DeploymentStatus,
    LiveInstance,
)

OLD_SUFFIX = ".old"  # the previous container during a rollout, kept until the new one is healthy
LOG_TAIL = 20
_POLL_S = 0.25
_NANO = 1_000_000_000
_DOCKER_STOP_S = 10  # Docker's grace period when a container sets none


@contextlib.contextmanager
def _docker(doing: str) -> Iterator[None]:
    """Turn any docker-py or transport failure into a DriverError saying what we were doing."""
    try:
        yield
    except docker.errors.APIError as exc:
        raise DriverError(f"Docker refused to {doing}: {exc.explanation or exc}") from exc
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise DriverError(
            f"could not {doing}: Docker engine unreachable ({exc}); is dockerd running?"
        ) from exc


def _health_from_status(status: str) -> str | None:
    """Health as `docker ps` shows it in its Status text; None when there is no healthcheck."""
    if "(unhealthy)" in status:
        return "unhealthy"
    if "(healthy)" in status:
        return "healthy"
    if "(health: starting)" in status:
        return "starting"
    return None


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


class _Failed(Exception):
    """A container did not come up; the message is the reason shown to the user."""


class LocalDriver(Driver):
    """Runs definitions as containers on this host's Docker engine."""

    def __init__(
        self,
        state_dir: Path,
        *,
        server: str = "local",
        client: docker.DockerClient | None = None,
        health_timeout_s: float = 120,
        settle_s: float = 2.0,
        owner: str = "",
        docker_slots: int = 4,
    ) -> None:
        self.server = server
        self.owner = owner
        # Docker saturates at about 4 concurrent creates/starts on 2 cores; health waits are
        # idle polling, so more definitions may be in flight than hold a slot.
        self._slots = threading.BoundedSemaphore(docker_slots)
        self.state_dir = Path(state_dir)
        self.health_timeout_s = health_timeout_s
        self.settle_s = settle_s
        self._client_value = client
        self._lock = threading.Lock()  # guards lazy client, network/image creation, name locks
        self._name_locks: dict[str, threading.Lock] = {}

    def __repr__(self) -> str:
        return f"LocalDriver(server={self.server!r}, state_dir={str(self.state_dir)!r})"

    @property
    def _client(self) -> docker.DockerClient:
        # Made lazily so a driver exists (and the API serves) while Docker is down.
        with self._lock:
            if self._client_value is None:
                with _docker("connect to the Docker engine"):
                    self._client_value = docker.from_env()
            return self._client_value

    @property
    def _api(self) -> docker.APIClient:
        return self._client.api

    @property
    def _owned(self) -> list[str]:
        """Label filter for this engine's containers (all managed ones when it has no owner id)."""
        owned = [f"{LABEL_MANAGED}=true"]
        if self.owner:
            owned.append(f"{LABEL_OWNER}={self.owner}")
        return owned

    def _name_lock(self, name: str) -> threading.Lock:
        with self._lock:
            return self._name_locks.setdefault(name, threading.Lock())

    # ------------------------------------------------------------ observe

    def ping(self) -> None:
        """Check the engine answers; raise DriverError naming the cause if not."""
        with _docker("ping the Docker engine"):
            self._api.ping()

    def live(self) -> dict[str, LiveInstance]:
        """Every managed instance keyed by definition name, from one filtered list call."""
        with _docker("list containers"):
            rows = self._api.containers(all=True, filters={"label": self._owned})
        out: dict[str, LiveInstance] = {}
        for row in rows:
            labels: dict[str, str] = row.get("Labels") or {}
            cname = (row.get("Names") or ["/"])[0].lstrip("/")
            name = labels.get(LABEL_NAME, cname)
            if cname != name:  # a `<name>.old` mid-rollout, or renamed by hand
                continue
            revision = labels.get(LABEL_REVISION, "")
            created = row.get("Created")
            out[name] = LiveInstance(
                container_id=row["Id"],
                name=name,
                definition_id=labels.get(LABEL_DEFINITION, ""),
                revision=int(revision) if revision.isdigit() else None,
                rendered_hash=labels.get(LABEL_RENDERED_HASH, ""),
                commit=labels.get(LABEL_COMMIT, ""),
                status=row.get("State", ""),
                health=_health_from_status(row.get("Status", "")),
                image=row.get("Image", ""),
                created_at=datetime.fromtimestamp(created, UTC) if created else None,
            )
        return out

    def started_at(self, container_id: str) -> datetime | None:
        """The container's State.StartedAt, from one inspect; None when it is not running."""
        info = self._inspect(container_id)
        state = (info or {}).get("State") or {}
        if not state.get("Running"):
            return None
        # Docker gives nanoseconds ("2026-02-10T08:00:00.123456789Z"); Python takes microseconds.
        stamp = str(state.get("StartedAt", ""))
        head, _, frac = stamp.rstrip("Z").partition(".")
        try:
            return datetime.fromisoformat(f"{head}.{(frac or '0')[:6]:0<6}+00:00")
        except ValueError:
            return None

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
        if info is None or labels.get(LABEL_MANAGED) != "true":
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
                self._api.stop(info["Id"], timeout=_stop_timeout(info))

    def restart(self, name: str) -> None:
        """Restart the named instance (operator action); NotFound if there is none."""
        with self._name_lock(name):
            info = self._managed(name)
            with _docker(f"restart container {name}"):
                self._api.restart(info["Id"], timeout=_stop_timeout(info) or _DOCKER_STOP_S)

    # ------------------------------------------------------------ apply

    def apply(
        self,
        action: Action,
        *,
        revision: int | None,
        commit: str | None,
        resolve: Resolve,
        log: Log,
    ) -> ApplyResult:
        """Carry out one action; a failed deploy is reported in the result, never raised."""
        masker = _Masker(resolve)

        def safe_log(message: str) -> None:
            log(masker.mask(message))

        if action.kind is ActionKind.NOOP:
            return ApplyResult(
                DeploymentStatus.SUCCESS, action.live.container_id if action.live else None
            )
        with self._name_lock(action.name):
            try:
                self._recover_name(action.name, safe_log)
                if action.kind is ActionKind.REMOVE:
                    return self._remove(action.name, safe_log)
                if action.kind is ActionKind.START:
                    return self._start(action.name, safe_log)
                if action.desired is None:
                    raise DriverError(f"{action.kind.value} of {action.name} has no desired spec")
                return self._rollout(action.desired, revision, commit, masker, safe_log)
            except DeployAllyError as exc:
                message = masker.mask(str(exc))
                safe_log(f"failed: {message}")
                return ApplyResult(DeploymentStatus.FAILED, None, message)

    def _start(self, name: str, log: Log) -> ApplyResult:
        info = self._managed(name)
        log(f"starting container {info['Id'][:12]}")
        with _docker(f"start container {name}"):
            self._api.start(info["Id"])
        try:
            self._wait_ready(info["Id"], info["Config"].get("Healthcheck") is not None, log)
        except _Failed as exc:
            self._log_tail(info["Id"], log)
            return ApplyResult(DeploymentStatus.FAILED, info["Id"], str(exc))
        return ApplyResult(DeploymentStatus.SUCCESS, info["Id"], "started")

    def _remove(self, name: str, log: Log) -> ApplyResult:
        info = self._inspect(name)
        if info is None:
            log(f"container {name} is already gone")
            return ApplyResult(DeploymentStatus.SUCCESS, None, "already removed")
        labels = info["Config"].get("Labels") or {}
        log(f"stopping container {info['Id'][:12]}")
        with _docker(f"stop container {name}"):
            self._api.stop(info["Id"], timeout=_stop_timeout(info))
        with _docker(f"remove container {name}"):
            self._api.remove_container(info["Id"], v=False)
        log("removed container")
        shutil.rmtree(self.state_dir / "files" / name, ignore_errors=True)
        if labels.get(LABEL_PRUNE_VOLUMES) == "true":
            for mount in info.get("Mounts") or []:
                if mount.get("Type") == "volume" and mount.get("Name"):
                    with _docker(f"remove volume {mount['Name']}"):
                        self._api.remove_volume(mount["Name"])
                    log(f"removed volume {mount['Name']}")
        return ApplyResult(DeploymentStatus.SUCCESS, info["Id"], "removed")

    def _rollout(
        self,
        spec: ContainerSpec,
        revision: int | None,
        commit: str | None,
        resolve: _Masker,
        log: Log,
    ) -> ApplyResult:
        """Create, or replace the running container, keeping the old one until the new is ready."""
        try:
            self._ensure_image(spec.image, log)
        except DriverError as exc:
            return ApplyResult(DeploymentStatus.FAILED, None, str(exc))
        self._ensure_network(spec.network, log)
        self._ensure_volumes(spec)
        create_args = self._create_args(spec, revision, commit, resolve)

        old = self._inspect(spec.name)
        old_labels = (old["Config"].get("Labels") or {}) if old is not None else {}
        if old is not None and old_labels.get(LABEL_MANAGED) != "true":
            raise DriverError(
                f"a container named {spec.name!r} exists and is not managed by DeployAlly; "
                "rename or remove it, then sync again"
            )
        if old is not None and self.owner and old_labels.get(LABEL_OWNER, "") != self.owner:
            raise DriverError(
                f"a container named {spec.name!r} belongs to another DeployAlly engine "
                f"(owner {old_labels.get(LABEL_OWNER) or 'unknown'}); rename the definition"
            )
        old_stopped = False
        if old is not None:
            with _docker(f"rename container {spec.name}"):
                self._api.rename(old["Id"], spec.name + OLD_SUFFIX)
            log(f"renamed old container {old['Id'][:12]} to {spec.name}{OLD_SUFFIX}")
            if old["State"].get("Running") and _must_stop_first(old, spec):
                log("stopping old container first (ports or volumes are shared)")
                with _docker(f"stop container {spec.name}{OLD_SUFFIX}"):
                    self._api.stop(old["Id"], timeout=_stop_timeout(old))
                old_stopped = True

        new_id: str | None = None
        try:
            with self._slots:
                with _docker(f"create container {spec.name}"):
                    new_id = str(self._api.create_container(**create_args)["Id"])
                log(f"created container {new_id[:12]}")
                with _docker(f"start container {spec.name}"):
                    self._api.start(new_id)
            self._wait_ready(new_id, spec.healthcheck is not None, log)
        except (_Failed, DriverError) as exc:
            reason = str(exc)
            log(f"container {spec.name} did not come up: {reason}")
            if new_id is not None:
                self._log_tail(new_id, log)
                with _docker(f"remove container {spec.name}"):
                    self._api.remove_container(new_id, force=True)
                log(f"removed failed container {new_id[:12]}")
            if old is None:
                return ApplyResult(DeploymentStatus.FAILED, None, reason)
            with _docker(f"rename container {spec.name}{OLD_SUFFIX}"):
                self._api.rename(old["Id"], spec.name)
            if old_stopped:
                with _docker(f"start container {spec.name}"):
                    self._api.start(old["Id"])
            log(f"rolled back to container {old['Id'][:12]}")
            return ApplyResult(DeploymentStatus.ROLLED_BACK, old["Id"], reason)

        if old is not None:
            with _docker(f"remove container {spec.name}{OLD_SUFFIX}"):
                self._api.remove_container(old["Id"], force=True, v=False)
            log(f"removed old container {old['Id'][:12]}")
            # The old container's config files: nothing mounts them any more.
            current = self._files_dir(spec)
            for directory in (self.state_dir / "files" / spec.name).glob("*"):
                if directory != current:
                    shutil.rmtree(directory, ignore_errors=True)
        return ApplyResult(DeploymentStatus.SUCCESS, new_id, "deployed")

    # ------------------------------------------------------------ pieces of a rollout

    def _ensure_image(self, image: str, log: Log) -> None:
        with self._name_lock(f"image:{image}"):  # one pull per image, however many use it
            try:
                with _docker(f"look up image {image}"):
                    self._client.images.get(image)
                return
            except DriverError as exc:
                if not isinstance(exc.__cause__, docker.errors.ImageNotFound):
                    raise
            log(f"pulling {image}")
            repository, tag = parse_repository_tag(image)
            with _docker(f"pull image {image}"):
                self._client.images.pull(repository, tag=tag or "latest")
            log(f"pulled {image}")

    def _ensure_network(self, network: str, log: Log) -> None:
        with self._name_lock(f"network:{network}"), _docker(f"create network {network}"):
            # The name filter matches substrings, so compare exactly here.
            if any(n["Name"] == network for n in self._api.networks(names=[network])):
                return
            self._api.create_network(network, driver="bridge", labels={LABEL_MANAGED: "true"})
            log(f"created network {network}")

    def _ensure_volumes(self, spec: ContainerSpec) -> None:
        for volume in spec.volumes:
            with _docker(f"create volume {volume.name}"):
                # Creating an existing volume returns it unchanged: its data stays.
                self._api.create_volume(
                    volume.name,
                    labels={LABEL_MANAGED: "true", LABEL_DEFINITION: spec.definition_id},
                )

    def _files_dir(self, spec: ContainerSpec) -> Path:
        digest = spec.rendered_hash.split(":")[-1][:12] or "unhashed"
        return self.state_dir / "files" / spec.name / digest

    def _write_files(self, spec: ContainerSpec, resolve: _Masker) -> list[Mount]:
        """Write config files under state_dir/files/<name>/<hash12>/<n>; bind them read-only."""
        if not spec.files:
            return []
        directory = self._files_dir(spec)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        mounts = []
        for n, file in enumerate(spec.files):
            path = directory / str(n)
            tmp = directory / f".{n}.tmp"
            # A new inode each time: a running container keeps seeing the file it started with.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, file.mode)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(resolve(file.content))
            os.chmod(tmp, file.mode)
            os.replace(tmp, path)
            mounts.append(Mount(file.mount_path, str(path), type="bind", read_only=True))
        return mounts

    def _create_args(
        self, spec: ContainerSpec, revision: int | None, commit: str | None, resolve: _Masker
    ) -> dict[str, Any]:
        """Everything create_container needs; secrets are resolved here and only here."""
        labels = {k: secrets.display(v) for k, v in spec.labels}
        labels.update(
            {
                LABEL_MANAGED: "true",
                LABEL_DEFINITION: spec.definition_id,
                LABEL_NAME: spec.name,
                LABEL_RENDERED_HASH: spec.rendered_hash,
                LABEL_COMMIT: commit or "",
                LABEL_SERVER: self.server,
                LABEL_OWNER: self.owner,
            }
        )
        if revision is not None:
            labels[LABEL_REVISION] = str(revision)
        if spec.prune_volumes:
            labels[LABEL_PRUNE_VOLUMES] = "true"
        mounts = [Mount(v.mount_path, v.name, type="volume") for v in spec.volumes]
        mounts += self._write_files(spec, resolve)
        host_config = self._api.create_host_config(
            port_bindings={
                f"{p.container_port}/{p.protocol}": p.host_port
                for p in spec.ports
                if p.host_port is not None
            },
            mounts=mounts,
            restart_policy=_restart_policy(spec.restart),
            mem_limit=spec.memory_bytes,
            nano_cpus=int(spec.cpus * _NANO) if spec.cpus else None,
            network_mode=spec.network,
        )
        networking = self._api.create_networking_config(
            # docker-py takes {network: EndpointConfig}; its stubs say otherwise.
            {spec.network: self._api.create_endpoint_config(aliases=[spec.name])}  # type: ignore[arg-type]
        )
        return {
            "image": spec.image,
            "name": spec.name,
            "command": [resolve(c) for c in spec.command] if spec.command is not None else None,
            "entrypoint": (
                [resolve(c) for c in spec.entrypoint] if spec.entrypoint is not None else None
            ),
            "environment": [f"{k}={resolve(v)}" for k, v in spec.env],
            "labels": labels,
            "user": spec.user,
            "working_dir": spec.working_dir,
            "ports": [(p.container_port, p.protocol) for p in spec.ports],
            "host_config": host_config,
            "networking_config": networking,
            "healthcheck": _healthcheck(spec, resolve),
            "stop_signal": spec.stop_signal,
            "stop_timeout": math.ceil(spec.stop_grace_s) if spec.stop_grace_s is not None else None,
        }

    def _wait_ready(self, container_id: str, has_healthcheck: bool, log: Log) -> None:
        """Return when the container is healthy (or still running after settle_s); else _Failed."""
        began = time.monotonic()
        if has_healthcheck:
            log(f"waiting for health (timeout {self.health_timeout_s:g}s)")
            deadline = began + self.health_timeout_s
        else:
            log(f"waiting {self.settle_s:g}s to see it keeps running")
            deadline = began + self.settle_s
        while True:
            with _docker("inspect the new container"):
                info = self._api.inspect_container(container_id)
            state = info["State"]
            _raise_if_down(info)
            health = (state.get("Health") or {}).get("Status")
            if has_healthcheck and health == "healthy":
                log(f"healthy after {time.monotonic() - began:.1f}s")
                return
            if has_healthcheck and health == "unhealthy":
                checks = (state.get("Health") or {}).get("Log") or []
                output = checks[-1].get("Output", "").strip() if checks else ""
                raise _Failed("healthcheck reported unhealthy" + (f": {output}" if output else ""))
            if time.monotonic() >= deadline:
                if has_healthcheck:
                    raise _Failed(
                        f"not healthy after {self.health_timeout_s:g}s (health: {health})"
                    )
                log(f"running after {time.monotonic() - began:.1f}s")
                return
            time.sleep(_POLL_S)

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
        """Finish or undo rollouts a crash interrupted; drop config file dirs nobody mounts."""
        with _docker("list containers"):
            rows = self._api.containers(all=True, filters={"label": self._owned})
        for row in rows:
            cname = (row.get("Names") or ["/"])[0].lstrip("/")
            if cname.endswith(OLD_SUFFIX):
                name = cname[: -len(OLD_SUFFIX)]
                with self._name_lock(name):
                    self._recover_name(name, log)
        used = {
            m.get("Source", "")
            for row in rows
            for m in row.get("Mounts") or []
            if m.get("Type") == "bind"
        }
        files = self.state_dir / "files"
        for directory in files.glob("*/*") if files.is_dir() else []:
            if not any(src.startswith(f"{directory}{os.sep}") for src in used):
                shutil.rmtree(directory, ignore_errors=True)

    def _recover_name(self, name: str, log: Log) -> None:
        """If `<name>.old` is left over, keep whichever of the two containers can run."""
        old = self._inspect(name + OLD_SUFFIX)
        if old is None:
            return
        current = self._inspect(name)
        if current is not None and current["State"].get("Running"):
            with _docker(f"remove container {name}{OLD_SUFFIX}"):
                self._api.remove_container(old["Id"], force=True, v=False)
            log(f"recovered {name}: removed leftover {name}{OLD_SUFFIX}")
            return
        if current is not None:
            with _docker(f"remove container {name}"):
                self._api.remove_container(current["Id"], force=True, v=False)
        with _docker(f"rename container {name}{OLD_SUFFIX}"):
            self._api.rename(old["Id"], name)
        if not old["State"].get("Running"):
            with _docker(f"start container {name}"):
                self._api.start(old["Id"])
        log(f"recovered {name}: restored the previous container {old['Id'][:12]}")


# ---------------------------------------------------------------- pure conversions


def _raise_if_down(info: dict[str, Any]) -> None:
    """_Failed when the container has exited, or exited and was restarted by its policy."""
    state = info["State"]
    if not state.get("Running") or state.get("Restarting") or info.get("RestartCount"):
        raise _Failed(f"container exited with code {state.get('ExitCode')}")


def _must_stop_first(old: dict[str, Any], spec: ContainerSpec) -> bool:
    """Stop the old container before starting the new when they share host ports or volumes."""
    if spec.volumes:  # two processes must never write one data directory
        return True
    bindings = old.get("HostConfig", {}).get("PortBindings") or {}
    old_ports = {b.get("HostPort") for bs in bindings.values() for b in bs or []}
    return any(str(p.host_port) in old_ports for p in spec.ports if p.host_port is not None)


def _stop_timeout(info: dict[str, Any]) -> int | None:
    """The container's own grace period, so a stop honours what the spec asked."""
    value = info.get("Config", {}).get("StopTimeout")
    return int(value) if value is not None else None


def _restart_policy(restart: str) -> dict[str, Any]:
    """Docker's restart policy dict from compose-style text ("on-failure:3", "always"...)."""
    name, _, count = restart.partition(":")
    policy: dict[str, Any] = {"Name": "" if name == "no" else name}
    if count.isdigit():
        policy["MaximumRetryCount"] = int(count)
    return policy


def _healthcheck(spec: ContainerSpec, resolve: _Masker) -> dict[str, Any] | None:
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
