"""Where an engine keeps its state for a repository: light enough for `validate` and the hooks."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from deployally.source.git import GitRepo

STATE_DIR_NAME: Final = ".deployally"
DB_FILE: Final = "deployally.db"  # the state store's database, in the state directory


def default_state_dir(repo: Path) -> Path:
    """`.deployally/` in the repository directory (git-ignored by `deployally init`)."""
    return repo / STATE_DIR_NAME


def engine_state_dir(repo: GitRepo) -> Path:
    """Where the engine of `repo` keeps its state: the repository's `deployally.stateDir`
    (which `serve` sets), else `.deployally/` in it. The hooks find the engine this way."""
    configured = repo.config("deployally.stateDir")
    return Path(configured) if configured else default_state_dir(repo.path)


def has_store(state: Path) -> bool:
    """Whether `state` holds a state store (never created just to look)."""
    return (state / DB_FILE).is_file()
