"""The engine's own configuration: what its operator allows, which no repository can grant itself.

Read from the file `DEPLOYALLY_CONFIG` names, else `engine.yaml` in the state
directory. Someone who can push, or who holds an API token, can write neither.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from deployally.errors import ValidationError, ValidationErrors
from deployally.model.schema import load_yaml, schema_errors

ENGINE_CONFIG_FILE = "engine.yaml"
CONFIG_ENV = "DEPLOYALLY_CONFIG"


@dataclass(frozen=True)
class EngineConfig:
    """engine.yaml with every default filled in."""

    path: str = ""  # the file it was read from; "" when there is none and defaults apply


def engine_config_path(state_dir: Path) -> Path:
    """Where this engine's configuration lives: $DEPLOYALLY_CONFIG, else <state dir>/engine.yaml."""
    named = os.environ.get(CONFIG_ENV)
    return Path(named) if named else Path(state_dir) / ENGINE_CONFIG_FILE


def load_engine_config(state_dir: Path) -> EngineConfig:
    """Read the engine's configuration; a missing file gives the defaults, a bad one raises.

    A file named by DEPLOYALLY_CONFIG must exist: a typo must not silently drop what the
    operator meant to allow or forbid.
    """
    path = engine_config_path(state_dir)
    if not path.is_file():
        if os.environ.get(CONFIG_ENV):
            raise ValidationErrors([_missing(path)])
        return EngineConfig()
    shown = str(path)
    data, lines = load_yaml(shown, path.read_text(encoding="utf-8"))
    errors = schema_errors("engine.schema.json", shown, data, lines)
    if errors:
        raise ValidationErrors(errors)
    return EngineConfig(path=shown)


def _missing(path: Path) -> ValidationError:
    return ValidationError(str(path), "", f"{CONFIG_ENV} names this file, which does not exist")
