"""Shared fixtures: a real Docker engine, a locally built busybox image, per-test names."""

from __future__ import annotations

import io
import os
import secrets
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest
import requests.exceptions

BUSYBOX_IMAGE = "busybox:stable"
BUSYBOX_BINARY = Path("/bin/busybox")  # Debian's busybox-static
# Containers a test makes outside the driver may carry this label with the test's prefix,
# so the `names` finalizer removes them even when their name does not start with it.
TEST_LABEL = "com.deployally.test"


@pytest.fixture(scope="session")
def docker_client() -> Iterator[docker.DockerClient]:
    """A client for the local engine; fails under CI=true, skips elsewhere, when none answers."""
    try:
        client = docker.from_env()
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"no Docker engine answers, and CI=true forbids skipping: {exc}")
        pytest.skip(f"no Docker engine: {exc}")
    yield client
    client.close()


def _busybox_rootfs() -> bytes:
    """A tar of bin/busybox plus one bin/<applet> symlink per applet, so sh, wget... exist."""
    applets = subprocess.run(
        [str(BUSYBOX_BINARY), "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for directory, mode in (("bin", 0o755), ("etc", 0o755), ("tmp", 0o1777)):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = mode
            tar.addfile(info)
        tar.add(str(BUSYBOX_BINARY), arcname="bin/busybox")
        for applet in applets:
            if applet == "busybox":
                continue
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
    return buf.getvalue()


@pytest.fixture(scope="session")
def busybox_image(docker_client: docker.DockerClient) -> str:
    """`busybox:stable`, imported from the host's static busybox when missing (no registry)."""
    try:
        docker_client.images.get(BUSYBOX_IMAGE)
        return BUSYBOX_IMAGE
    except docker.errors.ImageNotFound:
        pass
    if not BUSYBOX_BINARY.exists():
        pytest.fail(f"{BUSYBOX_BINARY} is missing: install Debian's busybox-static")
    repository, tag = BUSYBOX_IMAGE.split(":")
    docker_client.api.import_image_from_data(
        _busybox_rootfs(),
        repository=repository,
        tag=tag,
        changes=['CMD ["sh"]', "ENV PATH=/bin"],
    )
    docker_client.images.get(BUSYBOX_IMAGE)
    return BUSYBOX_IMAGE


def _remove_prefixed(client: docker.DockerClient, prefix: str) -> None:
    """Remove every container, volume and network a test made, by name prefix or test label."""
    doomed: dict[str, str] = {}
    for c in client.api.containers(all=True, filters={"name": prefix}):
        if any(n.lstrip("/").startswith(prefix) for n in c["Names"]):
            doomed[c["Id"]] = c["Id"]
    for c in client.api.containers(all=True, filters={"label": f"{TEST_LABEL}={prefix}"}):
        doomed[c["Id"]] = c["Id"]
    for cid in doomed:
        try:
            client.api.remove_container(cid, force=True)
        except docker.errors.NotFound:
            pass
    for v in client.api.volumes(filters={"name": prefix}).get("Volumes") or []:
        if v["Name"].startswith(prefix):
            try:
                client.api.remove_volume(v["Name"], force=True)
            except docker.errors.NotFound:
                pass
    for n in client.api.networks(names=[prefix]):
        if n["Name"].startswith(prefix):
            try:
                client.api.remove_network(n["Id"])
            except docker.errors.NotFound:
                pass


@pytest.fixture
def names(docker_client: docker.DockerClient) -> Iterator[str]:
    """A unique prefix (`t` + 6 hex) for this test's names; everything so named goes at the end."""
    prefix = "t" + secrets.token_hex(3)
    yield prefix
    _remove_prefixed(docker_client, prefix)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """An empty state directory for a driver or store."""
    path = tmp_path / "state"
    path.mkdir()
    return path
