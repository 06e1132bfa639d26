"""Secrets at rest: encrypted with a key kept apart from the store, made once, never silently replaced."""

from __future__ import annotations

import re
import shutil
import sqlite3
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from deployally.cli import main
from deployally.errors import SecretKeyError
from deployally.store import DB_FILE, Store
from deployally.store.db import _MIGRATIONS
from deployally.store.secret_key import KEY_ENV, default_key_file, new_key

VALUE = "hunter2-a-value-no-file-may-hold"


def store_files(state: Path) -> bytes:
    """Every byte of the database, its WAL and shared memory: what a copy or backup takes."""
    return b"".join(p.read_bytes() for p in sorted(state.glob(f"{DB_FILE}*")))


def test_the_first_secret_makes_a_private_key_outside_the_state_directory(tmp_path: Path) -> None:
    state = tmp_path / "state"
    result = CliRunner().invoke(
        main, ["secret", "set", "db_pw", "--repo", str(tmp_path), "--state-dir", str(state)],
        input=VALUE,
    )
    assert result.exit_code == 0, result.output
    with Store(state) as store:
        key = default_key_file(store.engine_id())
        assert store.secret_value("db_pw") == VALUE
    assert key.is_file() and not key.is_relative_to(state)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert f"made the secret key {key} (mode 0600): back it up" in result.output
    again = CliRunner().invoke(
        main, ["secret", "set", "db_pw", "--repo", str(tmp_path), "--state-dir", str(state)],
        input="next",
    )
    assert again.exit_code == 0 and "made the secret key" not in again.output


def test_a_copied_store_without_its_key_reveals_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    with Store(state) as store:
        store.set_secret("db_pw", VALUE)
        store.set_secret("db_pw", VALUE + "-2")
        assert store.secret_value("db_pw", 1) == VALUE
    assert VALUE.encode() not in store_files(state)

    # The copy on another machine: the same store, neither the key file nor the variable.
    copy = tmp_path / "copy"
    shutil.copytree(state, copy)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "elsewhere"))
    with Store(copy) as stolen:
        with pytest.raises(SecretKeyError) as caught:
            stolen.secret_value("db_pw")
        message = str(caught.value)
        assert "does not exist: restore it from your backup" in message
        assert "none is made" in message
        assert not stolen.secret_key_file().path.exists()  # never a silent new key
        with pytest.raises(SecretKeyError, match="does not exist"):
            stolen.unlock_secrets(create=True)
        with pytest.raises(SecretKeyError, match="does not exist"):
            stolen.set_secret("another", "x")  # no value goes under a key nobody keeps
        # A fresh key opens nothing either.
        monkeypatch.setenv(KEY_ENV, new_key())
        with pytest.raises(SecretKeyError, match="is not the one the secrets") as wrong:
            stolen.secret_value("db_pw")
        assert VALUE not in str(wrong.value)
        assert [s.name for s in stolen.list_secrets()] == ["db_pw"]  # names and versions only


def test_the_key_may_come_from_the_environment_and_then_no_file_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = new_key()
    monkeypatch.setenv(KEY_ENV, f"{key}")
    with Store(tmp_path / "state") as store:
        store.set_secret("db_pw", VALUE)
        assert not store.secret_key_file().path.exists()
        assert store.unlock_secrets().source == f"${KEY_ENV}"
        monkeypatch.delenv(KEY_ENV)
        with pytest.raises(SecretKeyError, match=f"or \\${KEY_ENV}"):
            store.secret_value("db_pw")
        monkeypatch.setenv(KEY_ENV, f"{new_key()},{key}")  # another first, this one after it
        assert store.secret_value("db_pw") == VALUE


def test_the_engine_configuration_says_where_the_key_file_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "engine.yaml").write_text("secret_key_file: ../keys/engine.key\n")
    result = CliRunner().invoke(
        main, ["secret", "set", "db_pw", "--repo", str(tmp_path), "--state-dir", str(state)],
        input=VALUE,
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "keys" / "engine.key").is_file()
    shown = CliRunner().invoke(main, ["secret", "key", "--repo", str(tmp_path), "--state-dir", str(state)])
    assert f"key: {tmp_path / 'keys' / 'engine.key'}" in shown.output
    assert "it opens all 1 stored values" in shown.output


@pytest.mark.parametrize(
    ("content", "mode", "expected"),
    [
        (None, 0o644, "can be read by others (mode 0644); run: chmod 600"),
        ("not a key\n", 0o600, "is not a secret key"),
        ("", 0o600, "holds no key"),
    ],
)
def test_a_bad_key_file_is_an_error_naming_it(
    tmp_path: Path, content: str | None, mode: int, expected: str
) -> None:
    with Store(tmp_path / "state") as store:
        store.set_secret("db_pw", VALUE)
        key = store.secret_key_file().path
        if content is not None:
            key.write_text(content)
        key.chmod(mode)
    with Store(tmp_path / "state") as store:
        with pytest.raises(SecretKeyError, match=re.escape(expected)) as caught:
            store.secret_value("db_pw")
        assert str(key) in str(caught.value)


def test_a_key_file_opened_up_while_the_engine_runs_is_refused_at_its_next_read(
    tmp_path: Path,
) -> None:
    with Store(tmp_path / "state") as store:
        store.set_secret("db_pw", VALUE)
        assert store.secret_value("db_pw") == VALUE  # the key is read and kept
        key = store.secret_key_file().path
        key.chmod(0o644)  # same content, same mtime: only its mode changed
        with pytest.raises(SecretKeyError, match=re.escape("(mode 0644); run: chmod 600")):
            store.secret_value("db_pw")
        with pytest.raises(SecretKeyError, match=re.escape(str(key))):
            store.set_secret("db_pw", "next")
        key.chmod(0o600)
        assert store.secret_value("db_pw") == VALUE


def test_a_value_moved_to_another_row_does_not_decrypt(tmp_path: Path) -> None:
    with Store(tmp_path / "state") as store:
        store.set_secret("mine", "mine-value")
        store.set_secret("theirs", VALUE)
    db = sqlite3.connect(tmp_path / "state" / DB_FILE)
    with db:
        db.execute(
            "UPDATE secret_versions SET value = (SELECT value FROM secret_versions"
            " WHERE name = 'theirs') WHERE name = 'mine'"
        )
    db.close()
    with Store(tmp_path / "state") as store, pytest.raises(SecretKeyError, match="altered"):
        store.secret_value("mine")


def test_a_plaintext_store_from_before_is_encrypted_when_its_key_is_made(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    db = sqlite3.connect(state / DB_FILE)
    for statement in _MIGRATIONS[0]:  # the schema as the last release left it
        db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    db.execute(
        "INSERT INTO secrets (name, value, version, updated_at) VALUES ('db_pw', ?, 3, ?)",
        (VALUE, "2026-01-01T00:00:00.000000Z"),
    )
    db.commit()
    db.close()
    with Store(state) as store:
        assert store.secret_versions() == {"db_pw": 3}
        status = store.unlock_secrets()  # what `serve` does on start
        assert status.made_now and status.values == 1
        assert store.secret_value("db_pw") == VALUE
        assert store.set_secret("db_pw", "next") == 4
    assert VALUE.encode() not in store_files(state)


def test_rotation_re_encrypts_every_value_under_a_new_key(tmp_path: Path) -> None:
    with Store(tmp_path / "state") as store:
        store.set_secret("a", VALUE)
        store.set_secret("b", "b-value")
        key = store.secret_key_file().path
        old = key.read_text()
        rotated = store.rotate_secret_key()
        assert len(rotated.key_ids) == 2 and rotated.values == 2
        assert key.read_text().endswith(old)  # the old key is kept after the new one
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        dropped = store.rotate_secret_key(drop_old=True)
        assert dropped.key_ids == rotated.key_ids[:1]
        assert store.secret_value("a") == VALUE and store.secret_value("b") == "b-value"
        key.write_text(old)  # the old key alone opens nothing any more
        with pytest.raises(SecretKeyError, match="is not the one"):
            store.secret_value("a")


def test_the_cli_rotates_and_shows_the_key(tmp_path: Path) -> None:
    args = ["--repo", str(tmp_path), "--state-dir", str(tmp_path / "state")]
    runner = CliRunner()
    assert "no key yet" in runner.invoke(main, ["secret", "key", *args]).output
    runner.invoke(main, ["secret", "set", "a", *args], input=VALUE)
    result = runner.invoke(main, ["secret", "rotate-key", *args])
    assert result.exit_code == 0, result.output
    assert "1 values encrypted with key" in result.output and "--drop-old" in result.output
    printed = runner.invoke(main, ["secret", "key", "--new"]).output.strip()
    assert len(printed) == 44 and VALUE not in result.output


def test_a_missing_key_stops_serve_before_anything_deploys(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert CliRunner().invoke(main, ["init", str(repo)]).exit_code == 0
    state = tmp_path / "state"
    with Store(state) as store:
        store.set_secret("a", VALUE)
        store.secret_key_file().path.unlink()
    result = CliRunner().invoke(main, ["serve", "--repo", str(repo), "--state-dir", str(state),
                                       "--port", "0"])
    assert result.exit_code == 2
    assert "does not exist: restore it from your backup" in result.output
    assert not (state / "engine.json").exists()  # it never started serving


def test_a_webhooks_signing_secret_is_encrypted_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    hook_secret = "webhook-signing-secret-no-file-may-hold"
    with Store(state) as store:
        hook = store.add_webhook("https://example.com/hook", ["deployment.failed"], hook_secret)
        assert store.webhook(hook.id).secret == hook_secret  # type: ignore[union-attr]
        store.rotate_secret_key(drop_old=True)
        assert [w.secret for w in store.webhooks()] == [hook_secret]
    assert hook_secret.encode() not in store_files(state)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "elsewhere"))
    with Store(state) as stolen, pytest.raises(SecretKeyError, match="does not exist"):
        stolen.webhooks()


def test_a_plaintext_webhook_secret_from_before_is_encrypted_when_the_key_is_opened(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    hook_secret = "old-plaintext-webhook-secret"
    with Store(state) as store:
        hook = store.add_webhook("https://example.com/hook", ["deployment.failed"], "x")
    db = sqlite3.connect(state / DB_FILE)
    with db:  # as an older version stored it
        db.execute("UPDATE webhooks SET secret = ? WHERE id = ?", (hook_secret, hook.id))
    db.close()
    with Store(state) as store:
        assert store.unlock_secrets().values == 1
        assert store.webhook(hook.id).secret == hook_secret  # type: ignore[union-attr]
    assert hook_secret.encode() not in store_files(state)
