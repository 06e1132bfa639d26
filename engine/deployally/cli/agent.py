"""`deployally agent`: run a registered server's agent next to its Docker engine."""

from __future__ import annotations

import os
import signal
import stat
import sys
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from deployally.errors import DeployAllyError

if TYPE_CHECKING:
    from deployally.agent.process import MakeDriver
    from deployally.drivers.base import Driver
from deployally.store import SERVER_KEY_PREFIX

KEY_ENV = "DEPLOYALLY_AGENT_KEY"
# A tmpfs on most hosts: config files, which hold their secrets resolved, never touch a disk.
DEFAULT_STATE_DIR = "/run/deployally-agent"


def read_key(key_file: str | None, key: str | None) -> str:
    """The server key from --key-file, else DEPLOYALLY_AGENT_KEY or --key; a clear error otherwise."""
    where = f"--key-file {key_file}" if key_file else f"{KEY_ENV} / --key"
    if key_file is not None:
        try:
            with open(key_file, encoding="utf-8") as fh:
                mode = os.fstat(fh.fileno()).st_mode
                if mode & (stat.S_IRWXG | stat.S_IRWXO):
                    # As for the engine's secret key file: a key others can read protects nothing.
                    raise DeployAllyError(
                        f"--key-file {key_file} can be read by others (mode {stat.S_IMODE(mode):04o});"
                        f" run: chmod 600 {key_file}"
                    )
                key = fh.read().strip()
        except OSError as exc:
            raise DeployAllyError(f"--key-file {key_file}: cannot read it ({exc.strerror})") from None
        except UnicodeDecodeError:
            raise DeployAllyError(f"--key-file {key_file}: not a server key (not text)") from None
    if not key:
        raise DeployAllyError(
            f"no server key: give --key-file FILE or set {KEY_ENV} (the da_server_... key that"
            " `deployally server add` or POST /api/v1/servers showed once)"
        )
    if not key.startswith(SERVER_KEY_PREFIX):
        raise DeployAllyError(f"{where}: not a server key (it starts with {SERVER_KEY_PREFIX})")
    return key


@click.command()
@click.option("--url", required=True, help="The engine's address, e.g. https://deploy.example.com:8443.")
@click.option("--key-file", type=click.Path(dir_okay=False), default=None,
              help="A file holding the server's key (da_server_...), readable by the agent alone.")
@click.option("--key", envvar=KEY_ENV, default=None, show_envvar=True,
              help="The server's key; prefer --key-file or the environment (arguments show in ps).")
@click.option("--ca-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The CA certificate that signed an https:// engine's certificate "
                   "[default: the system's CAs].")
@click.option("--docker-host", envvar="DOCKER_HOST", default=None, show_envvar=True,
              help="This host's Docker engine [default: the local socket].")
@click.option("--state-dir", default=None,
              help="Where rendered config files are kept [default: $RUNTIME_DIRECTORY, else "
                   f"{DEFAULT_STATE_DIR}]; a tmpfs keeps their secrets off the disk.")
@click.option("--heartbeat", default=10.0, show_default=True, type=click.FloatRange(min=0.05, max=60),
              help="Seconds between heartbeats (at most 60); the server is offline after three missed.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Log lines on stderr: text, or one JSON object a line.")
def agent(url: str, key_file: str | None, key: str | None, ca_file: str | None,
          docker_host: str | None, state_dir: str | None, heartbeat: float, log_format: str) -> None:
    """Deploy a registered server's definitions on this host, polling out to the engine.

    Exits 3 when the engine refuses the key (rotated, removed, another server's), 4 when it
    refuses the agent's requests otherwise (a --url with a wrong path).
    """
    from deployally import logs
    from deployally.agent.link import EngineLink
    from deployally.agent.process import Agent
    from deployally.serve.tls import client_context

    if not url.startswith(("http://", "https://")):
        raise DeployAllyError(f"--url {url}: give the engine's http:// or https:// address")
    # Checked for https:// (the host name too) against --ca-file, else the system's CAs.
    context = client_context(Path(ca_file) if ca_file else None) if url.startswith("https://") else None
    link = EngineLink(url, read_key(key_file, key), context=context)
    state = Path(state_dir or os.environ.get("RUNTIME_DIRECTORY") or DEFAULT_STATE_DIR)
    try:
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise DeployAllyError(f"--state-dir {state}: cannot make it ({exc.strerror})") from None
    logs.configure(log_format)
    runner = Agent(
        link, _local_drivers(state, docker_host), heartbeat_s=heartbeat,
        docker_version=lambda: _docker_version(docker_host),
    )

    def on_signal(signum: int, frame: FrameType | None) -> None:
        runner.stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    sys.exit(runner.run())


def _local_drivers(state: Path, docker_host: str | None) -> MakeDriver:
    """Makes the local driver for the server and owner the engine names."""
    from deployally.agent.claims import MemoryClaims
    from deployally.drivers.local.driver import LocalDriver

    def make(server: str, owner: str) -> Driver:
        return LocalDriver(state, owner=owner, server=server, claims=MemoryClaims(),
                           docker_host=docker_host)

    return make


def _docker_version(docker_host: str | None) -> str | None:
    """This host's Docker engine version, None while it does not answer."""
    import docker
    import docker.errors
    import requests.exceptions

    try:
        client = docker.from_env() if docker_host is None else docker.DockerClient(base_url=docker_host)
        try:
            return str(client.version().get("Version")) or None
        finally:
            client.close()
    except (docker.errors.DockerException, requests.exceptions.RequestException):
        return None
