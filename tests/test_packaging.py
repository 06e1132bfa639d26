"""The wheel: it carries every file the package reads, and runs with no checkout beside it.

The whole check (a fresh venv, `demo` and `sync` against Docker) is `.ci/wheel_check.py`;
this one builds the wheel from a copy of the sources and runs the commands that need no Docker.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import deployally

CHECKOUT = Path(__file__).resolve().parents[1]
SOURCES = CHECKOUT / "engine" / "deployally"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deployally's wheel, built the way `pip install .` builds it, from a copy of the sources."""
    if Path(deployally.__file__).resolve().parent != SOURCES:
        message = "deployally is imported from elsewhere than this checkout"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; .ci/run installs this checkout with pip install -e")
        pytest.skip(message)
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(CHECKOUT / name, src / name)
    shutil.copytree(
        SOURCES, src / "engine" / "deployally",
        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
    )
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dist), str(src)],
        check=True, capture_output=True, timeout=300,
    )
    (built,) = dist.glob("deployally-*.whl")
    return built


@pytest.fixture(scope="module")
def unpacked(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel's contents, as pip would lay them out in site-packages."""
    target = tmp_path_factory.mktemp("site-packages")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    return target


def test_the_wheel_carries_every_data_file(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    data = SOURCES / "data"
    expected = {
        "deployally/data/" + p.relative_to(data).as_posix()
        for p in data.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert {"deployally/data/schemas/definition.schema.json", "deployally/data/hooks/pre-receive",
            "deployally/data/example-repo/deployally.yaml"} <= expected
    assert expected - shipped == set()


def test_the_unpacked_wheel_lists_templates_inits_and_validates_away_from_any_checkout(
    unpacked: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "PYTHONPATH": str(unpacked)}  # the wheel's package, not the checkout's

    def deployally_cli(*args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "deployally", *args], cwd=tmp_path, env=env,
            capture_output=True, text=True, timeout=120, check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    where = deployally_cli("templates", "show", "tools/busybox/plain/stable")
    assert "Busybox Command" in where
    listed = deployally_cli("templates", "list")
    assert "database/mysql/standard/8.4" in listed and "web/nginx/standard/1.27" in listed

    deployally_cli("init", "repo")
    hook = (tmp_path / "repo" / ".git" / "hooks" / "pre-commit").read_text()
    assert "validate" in hook and sys.executable in hook
    (tmp_path / "repo" / "definitions" / "hello.yaml").write_text(
        "name: hello\ntemplate: tools/busybox/plain/stable\nparams: {script: 'sleep 1'}\n"
    )
    assert "1 definition(s) valid" in deployally_cli("validate", "--repo", "repo")
    (tmp_path / "repo" / "definitions" / "hello.yaml").write_text("name: hello\ntemplate: 3\n")
    proc = subprocess.run(
        [sys.executable, "-m", "deployally", "validate", "--repo", "repo"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 1 and "definitions/hello.yaml" in proc.stderr + proc.stdout
