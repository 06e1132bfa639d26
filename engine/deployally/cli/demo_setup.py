"""`deployally demo`: a bare repository to push to, a working clone of the example, deployed once.

People run exactly what the demo runs: `git clone`, `git commit`, `git push`;
the installed hooks validate the push and deploy it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import requests.exceptions

from deployally.data import EXAMPLE_REPOSITORY, copy_tree
from deployally.drivers.local.images import ensure_busybox
from deployally.errors import DriverError, NotFound, SourceError
from deployally.store import Store

SITE_URL = "http://127.0.0.1:18080/"
DEMO_AUTHOR = ("DeployAlly demo", "demo@deployally.localhost")
READ_TOKEN_NAME = "demo"


@dataclass(frozen=True)
class DemoLayout:
    """Where the demo keeps its pieces under one directory."""

    root: Path

    @property
    def bare(self) -> Path:
        return self.root / "deploy.git"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def state(self) -> Path:
        return self.root / "state"


def check_docker() -> str:
    """Make sure a Docker engine answers and the busybox image exists; the image name."""
    try:
        client = docker.from_env()
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        raise DriverError(
            f"the demo needs a running Docker engine and none answers ({exc}); "
            "start Docker or set DOCKER_HOST"
        ) from None
    try:
        return ensure_busybox(client)
    finally:
        client.close()


def _git(cwd: Path, *args: str) -> str:
    name, email = DEMO_AUTHOR
    proc = subprocess.run(
        ["git", "-c", f"user.name={name}", "-c", f"user.email={email}", *args],
        cwd=cwd, capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise SourceError(f"{cwd}: git {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout + proc.stderr


def clone_and_push(layout: DemoLayout, echo: Callable[[str], None]) -> None:
    """Clone the bare repo, add the example's files, commit and push (the hooks deploy it)."""
    _git(layout.root, "clone", "--quiet", str(layout.bare), str(layout.work))
    copy_tree(EXAMPLE_REPOSITORY, layout.work)
    if not _has_identity(layout.work):
        # The person's own commits in the clone need an author; keep theirs when they have one.
        _git(layout.work, "config", "user.name", DEMO_AUTHOR[0])
        _git(layout.work, "config", "user.email", DEMO_AUTHOR[1])
    _git(layout.work, "add", "-A")
    _git(layout.work, "commit", "--quiet", "-m", "Add the example definitions")
    echo("$ git push origin main")
    for line in _git(layout.work, "push", "origin", "main").splitlines():
        echo(line)


def _has_identity(work: Path) -> bool:
    proc = subprocess.run(
        ["git", "config", "user.email"], cwd=work, capture_output=True, text=True, check=False
    )
    return bool(proc.stdout.strip())


def read_token(state_dir: Path) -> str:
    """A read-scope API token made for the demo (a new one each run)."""
    with Store(state_dir) as store:
        try:
            store.revoke_token(READ_TOKEN_NAME)
        except NotFound:
            pass
        return store.create_token(READ_TOKEN_NAME, "read")
