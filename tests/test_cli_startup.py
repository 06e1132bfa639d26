"""`deployally` starts fast: `--help` imports no command's module, `validate` neither Docker nor
aiohttp, and the help listing says what each command's own help says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest

from deployally.cli import COMMANDS, main

HEAVY = ("docker", "aiohttp", "git", "jinja2", "jsonschema", "yaml", "watchdog")


def imported_by(*args: str, cwd: Path | None = None) -> set[str]:
    """The modules `python -m deployally ARGS` imports, as -X importtime reports them."""
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "deployally", *args],
        capture_output=True, text=True, cwd=cwd, check=False,
    )
    assert run.returncode in (0, 1), run.stderr[-2000:]
    return {
        line.rsplit("|", 1)[1].strip()
        for line in run.stderr.splitlines() if line.startswith("import time:") and "|" in line
    }


def test_the_listing_is_each_commands_own_help() -> None:
    ctx = click.Context(main)
    for name, (_, help_line) in COMMANDS.items():
        command = main.get_command(ctx, name)
        assert command is not None and command.name == name
        assert help_line == command.get_short_help_str(limit=70), name


def test_help_lists_every_command_and_imports_none_of_them() -> None:
    run = subprocess.run([sys.executable, "-m", "deployally", "--help"],
                         capture_output=True, text=True, check=True)
    for name in COMMANDS:
        assert f"  {name} " in run.stdout
    modules = imported_by("--help")
    assert not {m for m in modules if m.split(".")[0] in HEAVY}
    assert not {m for m in modules if m.startswith("deployally.cli.")}


def test_validate_imports_neither_docker_nor_the_api(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "deployally", "init", str(tmp_path / "repo")],
                   check=True, capture_output=True)
    modules = imported_by("validate", "--repo", str(tmp_path / "repo"))
    roots = {m.split(".")[0] for m in modules}
    assert "deployally.model.definitions" in modules  # it did validate
    assert not roots & {"docker", "aiohttp", "watchdog"}
    # Nor gitpython (plain git reads the repository), nor the engine's wiring, nor a store
    # that is not there to check against.
    assert "git" not in roots
    assert not {m for m in modules if m.startswith(
        ("deployally.workspace", "deployally.sync", "deployally.drivers", "deployally.api",
         "deployally.store", "deployally.plan"))}


@pytest.mark.parametrize("name", ["nosuch"])
def test_an_unknown_command_is_named(name: str) -> None:
    run = subprocess.run([sys.executable, "-m", "deployally", name],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 2 and f"No such command '{name}'" in run.stderr
