"""The busybox image the demo and tests run, made from the host's static busybox when no registry answers."""

from __future__ import annotations

import io
import logging
import subprocess
import tarfile
from pathlib import Path

import docker
import docker.errors

from deployally.errors import DriverError

log = logging.getLogger(__name__)

BUSYBOX_IMAGE = "busybox:stable"
BUSYBOX_BINARY = Path("/bin/busybox")  # Debian's busybox-static


def busybox_rootfs(binary: Path = BUSYBOX_BINARY) -> bytes:
    """A tar of bin/busybox plus one bin/<applet> symlink per applet, so sh, wget... exist."""
    applets = subprocess.run(
        [str(binary), "--list"], check=True, capture_output=True, text=True
    ).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for directory, mode in (("bin", 0o755), ("etc", 0o755), ("tmp", 0o1777)):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = mode
            tar.addfile(info)
        tar.add(str(binary), arcname="bin/busybox")
        for applet in applets:
            if applet == "busybox":
                continue
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
    return buf.getvalue()


def ensure_busybox(client: docker.DockerClient, *, pull: bool = True) -> str:
    """`busybox:stable` present: as found, pulled, or imported from /bin/busybox; returns its name."""
    try:
        client.images.get(BUSYBOX_IMAGE)
        return BUSYBOX_IMAGE
    except docker.errors.ImageNotFound:
        pass
    repository, tag = BUSYBOX_IMAGE.split(":")
    if pull:
        try:
            client.images.pull(repository, tag=tag)
            return BUSYBOX_IMAGE
        except docker.errors.APIError as exc:
            log.info("pulling %s failed (%s); importing the host's busybox", BUSYBOX_IMAGE, exc)
    if not BUSYBOX_BINARY.exists():
        raise DriverError(
            f"{BUSYBOX_IMAGE} is missing, no registry answers and {BUSYBOX_BINARY} does not exist: "
            "install busybox-static or `docker pull busybox:stable` on a connected machine"
        )
    client.api.import_image_from_data(
        busybox_rootfs(), repository=repository, tag=tag, changes=['CMD ["sh"]', "ENV PATH=/bin"]
    )
    client.images.get(BUSYBOX_IMAGE)
    return BUSYBOX_IMAGE
