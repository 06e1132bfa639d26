"""What the engine opens it closes: a driver's Docker connections, a command's state store
(a long-running engine, or a process running commands in turn, would run out of descriptors)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from conftest import DefinitionsRepo, open_files
from deployally.cli import main
from deployally.workspace import Workspace


def _opened_since(before: dict[str, str]) -> list[str]:
    # No gc.collect(): what is closed is closed now, not whenever a collection finds it.
    return sorted(v for k, v in open_files().items() if before.get(k) != v)


def test_a_closed_workspace_keeps_no_docker_connection_or_store_file(
    defs_repo: DefinitionsRepo, state_dir: Path
) -> None:
    web = defs_repo.worker("web")
    defs_repo.commit("Add web")
    before = open_files()
    ws = Workspace.open(defs_repo.path, state_dir)
    ws.engine.sync()
    driver = ws.driver_for("local")
    assert driver is not None and web in driver.live()
    ws.close()
    assert _opened_since(before) == []


def test_a_command_run_in_process_leaves_its_state_store_closed(
    api_ws: Workspace,
) -> None:
    where = ["--repo", str(api_ws.repo_path), "--state-dir", str(api_ws.state_dir)]
    before = open_files()
    for name in ("ci", "deploy"):
        made = CliRunner().invoke(main, ["token", "create", name, *where])
        assert made.exit_code == 0, made.output
    listed = CliRunner().invoke(main, ["token", "list", *where])
    assert "deploy" in listed.stdout
    assert [f for f in _opened_since(before) if f.startswith(str(api_ws.state_dir))] == []
