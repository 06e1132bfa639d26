"""The engine's own configuration file: found in the state directory or by DEPLOYALLY_CONFIG."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployally.errors import ValidationErrors
from deployally.model.engine_config import CONFIG_ENV, EngineConfig, load_engine_config


def test_no_file_gives_the_defaults(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    assert load_engine_config(state_dir) == EngineConfig()


def test_an_unknown_key_is_an_error_naming_the_file_and_key(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    (state_dir / "engine.yaml").write_text("allow_everything: true\n")
    with pytest.raises(ValidationErrors) as caught:
        load_engine_config(state_dir)
    text = str(caught.value)
    assert "engine.yaml" in text and "allow_everything" in text


def test_the_environment_names_another_file_which_must_exist(
    state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "etc" / "deployally.yaml"
    monkeypatch.setenv(CONFIG_ENV, str(elsewhere))
    with pytest.raises(ValidationErrors, match="does not exist"):
        load_engine_config(state_dir)
    elsewhere.parent.mkdir()
    elsewhere.write_text("{}\n")
    assert load_engine_config(state_dir).path == str(elsewhere)
