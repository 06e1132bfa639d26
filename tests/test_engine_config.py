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


# ---------------------------------------------------------------- what the operator allows

SSH_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM8MJzkPGZAxthD8+dEUGSSR0yzAvMK2hfieKxTj45GY alice@example.com"
)


def load_text(state_dir: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> EngineConfig:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    (state_dir / "engine.yaml").write_text(text)
    return load_engine_config(state_dir)


def errors_of(state_dir: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    with pytest.raises(ValidationErrors) as caught:
        load_text(state_dir, text, monkeypatch)
    for err in caught.value.errors:
        assert err.path.endswith("engine.yaml")
    return {e.field: e.message for e in caught.value.errors}


def test_the_defaults_allow_nothing_beyond_what_every_container_gets() -> None:
    config = EngineConfig()
    assert config.publish_address == "127.0.0.1"
    assert not config.allow.allows_host_port(80) and config.allow.allows_host_port(1024)
    assert not config.allow.host_network
    assert not config.adopted_volumes and not config.adopted_networks
    assert not config.verifies_commits


def test_every_allowance_is_read(state_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    keys = tmp_path / "keys.pub"
    keys.write_text(f"# release keys\n{SSH_KEY}\n")
    config = load_text(
        state_dir,
        f"""\
publish_address: 0.0.0.0
allow:
  ports_below_1024: [80, 443]
  host_network: true
  privileged: false
adopt:
  volumes: [legacy_data]
  networks: [proxy]
trusted_keys:
  - {SSH_KEY}
  - file: {keys}
""",
        monkeypatch,
    )
    assert config.publish_address == "0.0.0.0"
    assert config.allow.allows_host_port(443) and not config.allow.allows_host_port(22)
    assert config.allow.host_network
    assert config.adopted_volumes == {"legacy_data"} and config.adopted_networks == {"proxy"}
    assert [(k.kind, k.origin) for k in config.trusted_keys] == [
        ("ssh", "trusted_keys[0]"),
        ("ssh", str(keys)),
    ]
    assert config.verifies_commits
    armoured = load_text(
        state_dir,
        "trusted_keys:\n  - |\n    -----BEGIN PGP PUBLIC KEY BLOCK-----\n\n    mDMEZ...\n"
        "    -----END PGP PUBLIC KEY BLOCK-----\n",
        monkeypatch,
    )
    assert [k.kind for k in armoured.trusted_keys] == ["openpgp"]
    every = load_text(state_dir, "allow: {ports_below_1024: true}\n", monkeypatch)
    assert every.allow.allows_host_port(1)


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("allow: {privileged: true}\n", "allow.privileged", "reserved"),
        ("allow: {capabilities: [NET_ADMIN]}\n", "allow.capabilities", "reserved"),
        ("allow: {devices: [/dev/fuse]}\n", "allow.devices", "reserved"),
        ("allow: {host_paths: [/srv]}\n", "allow.host_paths", "reserved"),
        ("allow: {docker_socket: true}\n", "allow.docker_socket", "reserved"),
        ("allow: {ports_below_1024: [8080]}\n", "allow.ports_below_1024", "below 1024"),
        ("publish_address: everywhere\n", "publish_address", "not an IP address"),
        ("trusted_keys: [not a key]\n", "trusted_keys[0]", "SSH public key"),
        ("trusted_keys: [{file: /nonexistent/keys}]\n", "trusted_keys[0].file", "cannot read"),
        ("signing_key: /nonexistent/key\n", "signing_key", "does not exist"),
    ],
)
def test_a_bad_setting_names_its_field(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch, text: str, field: str, words: str
) -> None:
    errors = errors_of(state_dir, text, monkeypatch)
    assert field in errors, errors
    assert words in errors[field]


def test_a_key_file_with_a_line_that_is_no_key_is_an_error(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"{SSH_KEY}\n-----BEGIN OPENSSH PRIVATE KEY-----\n")
    errors = errors_of(state_dir, f"trusted_keys: [{{file: {keys}}}]\n", monkeypatch)
    assert "line 2" in errors["trusted_keys[0].file"]


def test_webhook_allowances_are_read_and_checked(
    state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    assert load_engine_config(state_dir).webhook_allow == frozenset()
    (state_dir / "engine.yaml").write_text("webhooks:\n  allow: [loopback, engine_host]\n")
    assert load_engine_config(state_dir).webhook_allow == {"loopback", "engine_host"}
    (state_dir / "engine.yaml").write_text("webhooks:\n  allow: [everything]\n")
    with pytest.raises(ValidationErrors) as caught:
        load_engine_config(state_dir)
    assert "webhooks.allow" in str(caught.value) and "everything" in str(caught.value)
