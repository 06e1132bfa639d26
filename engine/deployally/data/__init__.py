"""The files that ship inside the package: built-in templates, JSON Schemas, git hooks, the example.

Read through importlib.resources, never by walking up from a module's path, so a
wheel, pipx, a container image built with pip or the pre-commit framework finds them
exactly as a checkout does.
"""

from __future__ import annotations

from collections.abc import Iterator
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path

ROOT: Traversable = files(__name__)
CATALOG = ROOT / "catalog"  # built-in templates, one YAML file each
SCHEMAS = ROOT / "schemas"  # JSON Schemas of every file format, and openapi.yaml
HOOKS = ROOT / "hooks"  # the git hooks `deployally init` installs
EXAMPLE_REPOSITORY = ROOT / "example-repo"  # what `deployally demo` pushes


def walk(folder: Traversable, prefix: str = "") -> Iterator[tuple[str, Traversable]]:
    """Every file under `folder` with its slash-separated path relative to it, in name order."""
    for item in sorted(folder.iterdir(), key=lambda entry: entry.name):
        relative = f"{prefix}{item.name}"
        if item.is_dir():
            yield from walk(item, f"{relative}/")
        elif item.is_file():
            yield relative, item


def copy_tree(folder: Traversable, dest: Path) -> None:
    """Copy every file under `folder` into `dest`, keeping their relative paths."""
    for relative, item in walk(folder):
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(item.read_bytes())
