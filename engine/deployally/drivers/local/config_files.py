"""Config files a definition mounts: written under state_dir/files/<name>/<hash12>/<n>, bound read-only.

One directory per rendered hash, so a rollout writes the new files beside the ones
the running container mounts; a directory goes once no container mounts it.
A file holds its secrets resolved, in plaintext: Docker reads the host file at every
start of the container. state_dir/files is tagged as a cache directory, so a backup
made with --exclude-caches (tar, borg, restic) leaves them out; the engine writes
them again when it deploys.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from docker.types import Mount

from deployally.drivers.base import Resolve
from deployally.types import ContainerSpec

PERMISSION_BITS = 0o777
FILES_DIR = "files"
# The Cache Directory Tagging Specification (https://bford.info/cachedir/): backup tools
# skip a directory holding this file when asked to exclude caches.
CACHEDIR_TAG = "CACHEDIR.TAG"
_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# DeployAlly's rendered config files, secrets resolved in plaintext (Docker bind-mounts\n"
    "# them). Leave them out of backups: the engine writes them again when it deploys.\n"
)


def files_dir(state_dir: Path, spec: ContainerSpec) -> Path:
    """The directory holding this rendered spec's config files."""
    digest = spec.rendered_hash.split(":")[-1][:12] or "unhashed"
    return state_dir / FILES_DIR / spec.name / digest


def write_files(state_dir: Path, spec: ContainerSpec, resolve: Resolve) -> list[Mount]:
    """Write config files under state_dir/files/<name>/<hash12>/<n>; bind them read-only."""
    if not spec.files:
        return []
    _tagged(state_dir / FILES_DIR)
    directory = files_dir(state_dir, spec)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    mounts = []
    for n, file in enumerate(spec.files):
        path = directory / str(n)
        tmp = directory / f".{n}.tmp"
        # Permission bits only, whatever the spec says: a spec stored before render refused
        # setuid, setgid and sticky bits must not make a privileged root-owned file here.
        mode = file.mode & PERMISSION_BITS
        # A new inode each time: a running container keeps seeing the file it started with.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(resolve(file.content))
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        mounts.append(Mount(file.mount_path, str(path), type="bind", read_only=True))
    return mounts


def _tagged(root: Path) -> None:
    """Make `root` (0700) with its cache-directory tag, before any secret is written in it."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    try:
        with open(root / CACHEDIR_TAG, "x", encoding="ascii") as fh:  # parallel creates: one writes
            fh.write(_TAG)
    except FileExistsError:
        pass


def drop_others(state_dir: Path, spec: ContainerSpec) -> None:
    """Remove the name's config file directories other than this spec's (the old container's)."""
    current = files_dir(state_dir, spec)
    for directory in (state_dir / FILES_DIR / spec.name).glob("*"):
        if directory != current:
            shutil.rmtree(directory, ignore_errors=True)


def drop_all(state_dir: Path, name: str) -> None:
    """Remove every config file directory of the name (its container is gone)."""
    shutil.rmtree(state_dir / FILES_DIR / name, ignore_errors=True)


def drop_unmounted(state_dir: Path, mounted: Iterable[str]) -> None:
    """Remove the config file directories no bind mount source (`mounted`) lies in."""
    used = set(mounted)
    files = state_dir / FILES_DIR
    for directory in files.glob("*/*") if files.is_dir() else []:
        if not any(src.startswith(f"{directory}{os.sep}") for src in used):
            shutil.rmtree(directory, ignore_errors=True)
