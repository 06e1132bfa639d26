"""A second Docker engine for tests: a remote host or a Swarm manager on this machine.

Each engine is a `dockerd` of its own (socket, data root, exec root, pid file) in a network
namespace of its own, so its bridges, iptables rules and swarm ports never touch the host's.
It gets images from the host's engine (`docker save | load`: no registry is reachable).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import docker
import docker.errors
import requests.exceptions

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


class EngineFailed(RuntimeError):
    """The engine did not start; the message carries the end of its log."""


class DockerEngine:
    """A dockerd the tests start and stop, reached at `host` (a unix socket)."""

    def __init__(self, storage_driver: str | None = None) -> None:
        # A short path of its own: unix socket paths are limited to 107 bytes.
        self.dir = Path(tempfile.mkdtemp(prefix="da-engine-", dir="/tmp"))
        self.socket = self.dir / "docker.sock"
        self.host = f"unix://{self.socket}"
        self.storage_driver = storage_driver
        self._process: subprocess.Popen[bytes] | None = None
        self._client: docker.DockerClient | None = None
        self.swarm = False

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"DockerEngine({self.host}, {state}{', swarm' if self.swarm else ''})"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def client(self) -> docker.DockerClient:
        """A client for this engine (made once, kept across restarts)."""
        if self._client is None:
            self._client = docker.DockerClient(base_url=self.host, timeout=60)
        return self._client

    @property
    def log(self) -> str:
        path = self.dir / "dockerd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> None:
        """Start dockerd (again, after stop(): its data root is kept) and wait for it to answer."""
        if self.running:
            return
        daemon = [
            "dockerd", "--host", self.host,
            "--data-root", str(self.dir / "data"), "--exec-root", str(self.dir / "x"),
            "--pidfile", str(self.dir / "docker.pid"),
        ]
        if self.storage_driver:
            daemon += ["--storage-driver", self.storage_driver]
        # Loopback up inside the namespace: a swarm advertises on 127.0.0.1.
        script = 'ip link set lo up && exec "$@"'
        with open(self.dir / "dockerd.log", "ab") as log:
            self._process = subprocess.Popen(
                ["unshare", "--net", "sh", "-c", script, "sh", *daemon],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if not self.running:
                raise EngineFailed(f"dockerd at {self.host} exited; its log ends:\n{self.log[-3000:]}")
            try:
                self.client.ping()
                return
            except (docker.errors.DockerException, requests.exceptions.RequestException):
                time.sleep(0.2)
        self.stop()
        raise EngineFailed(f"dockerd at {self.host} did not answer in {START_TIMEOUT_S:g}s:\n{self.log[-3000:]}")

    def stop(self) -> None:
        """Stop dockerd (SIGTERM, then SIGKILL) and unmount what it left under its directory."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(STOP_TIMEOUT_S)
        if self._client is not None:
            self._client.close()  # its pooled connections point at a dead socket
            self._client = None
        self._unmount()

    def close(self) -> None:
        """Stop the engine and remove its directory, data root included."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def load_image(self, source: docker.DockerClient, image: str) -> None:
        """Copy `image` from the engine `source` reaches to this one."""
        data = b"".join(source.images.get(image).save(named=True))
        self.client.images.load(data)

    def swarm_init(self) -> None:
        """Make this engine a single-node swarm manager."""
        self.client.swarm.init(advertise_addr="127.0.0.1", listen_addr="127.0.0.1:2377")
        self.swarm = True

    def _unmount(self) -> None:
        """Lazily unmount every mount under the engine's directory, deepest first."""
        prefix = f"{self.dir}/"
        with open("/proc/mounts") as mounts:
            points = [line.split()[1] for line in mounts]
        for point in sorted((p for p in points if p.startswith(prefix)), reverse=True):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def remove_prefixed_services(client: docker.DockerClient, prefix: str) -> None:
    """Remove the swarm services, configs and secrets named with `prefix`, and wait until
    the services' task containers are gone (so their volumes can be removed after)."""
    services = [s for s in client.services.list() if s.name.startswith(prefix)]
    for service in services:
        try:
            service.remove()
        except docker.errors.NotFound:
            pass
    # Their tasks stop gracefully (10 s for a process that ignores SIGTERM): a test's need not.
    deadline = time.monotonic() + 30.0
    while services and time.monotonic() < deadline:
        left = client.api.containers(all=True, filters={"name": prefix})
        tasks = [c for c in left if "com.docker.swarm.service.name" in (c.get("Labels") or {})]
        if not tasks:
            break
        for task in tasks:
            try:
                client.api.remove_container(task["Id"], force=True)
            except docker.errors.APIError:
                pass  # already going
        time.sleep(0.2)
    for item in [*client.configs.list(), *client.secrets.list()]:
        if item.name.startswith(prefix):
            try:
                item.remove()
            except docker.errors.NotFound:
                pass
