"""Repository settings (deployally.yaml), durations and memory sizes."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployally.errors import ValidationError, ValidationErrors
from deployally.model.settings import Settings, parse_duration, parse_memory, parse_settings

PATH = "deployally.yaml"


def test_no_file_gives_the_documented_defaults() -> None:
    for text in (None, "", "\n"):
        s = parse_settings(PATH, text)
        assert s == Settings()
    assert (s.branch, s.reconcile_interval, s.network, s.max_parallel, s.health_timeout) == (
        "main",
        30.0,
        "deployally",
        8,
        120.0,
    )
    assert (s.default_server, s.default_profile) == ("local", "development")
    assert s.min_ready == 5.0  # Swarm's update monitor: README "min_ready"


def test_every_field_is_read() -> None:
    text = (
        "branch: production\n"
        "reconcile_interval: 5\n"
        "network: apps\n"
        "max_parallel: 8\n"
        "max_unavailable: 2\n"
        "health_timeout: 2m30s\n"
        "min_ready: 1m30s\n"
        "defaults: {server: edge-1, profile: production}\n"
    )
    assert parse_settings(PATH, text) == Settings(
        branch="production",
        reconcile_interval=5.0,
        network="apps",
        max_parallel=8,
        max_unavailable=2,
        health_timeout=150.0,
        min_ready=90.0,
        default_server="edge-1",
        default_profile="production",
    )


def test_partial_file_keeps_other_defaults() -> None:
    s = parse_settings(PATH, "defaults: {profile: minimal}\n")
    assert (s.default_profile, s.default_server, s.branch) == ("minimal", "local", "main")


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("brnach: main\n", "brnach"),
        ("reconcile_interval: 0\n", "reconcile_interval"),
        ("max_parallel: 0\n", "max_parallel"),
        ("max_parallel: two\n", "max_parallel"),
        ("max_unavailable: 0\n", "max_unavailable"),
        ("health_timeout: forever\n", "health_timeout"),
        ("health_timeout: 0\n", "health_timeout"),
        ("health_timeout: 0s\n", "health_timeout"),
        ("health_timeout: 500ms\n", "health_timeout"),
        ("health_timeout: 9999999h\n", "health_timeout"),
        ("reconcile_interval: 0s\n", "reconcile_interval"),
        ("reconcile_interval: 0.1\n", "reconcile_interval"),
        ("reconcile_interval: 25h\n", "reconcile_interval"),
        ("defaults: {profil: production}\n", "defaults.profil"),
        ("network: 'bad name'\n", "network"),
        ("min_ready: -1\n", "min_ready"),
        ("min_ready: -1s\n", "min_ready"),
        ("min_ready: 2h\n", "min_ready"),
        ("min_ready: soon\n", "min_ready"),
        ("min_ready: true\n", "min_ready"),
    ],
)
def test_bad_settings_name_file_and_field(text: str, field: str) -> None:
    with pytest.raises(ValidationErrors) as exc:
        parse_settings(PATH, text)
    assert [(e.path, e.field, e.line) for e in exc.value.errors] == [(PATH, field, 1)]


def test_settings_must_be_a_mapping() -> None:
    with pytest.raises(ValidationError) as exc:
        parse_settings(PATH, "- main\n")
    assert exc.value.path == PATH and "mapping" in exc.value.message


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("10s", 10.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("2h", 7200.0),
        ("1.5s", 1.5),
        ("1h1m1s", 3661.0),
        (7, 7.0),
    ],
)
def test_parse_duration(value: str | int, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["", "10", "ten seconds", "10x", "s", "1m 30s", "-5s", -1, True])
def test_bad_duration_names_the_value(value: object) -> None:
    with pytest.raises(ValidationError) as exc:
        parse_duration(value, path="catalog/x.yaml", field="spec.healthcheck.interval")  # type: ignore[arg-type]
    assert repr(value) in exc.value.message
    assert (exc.value.path, exc.value.field) == ("catalog/x.yaml", "spec.healthcheck.interval")


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("512m", 512 * 1024**2),
        ("2g", 2 * 1024**3),
        ("2G", 2 * 1024**3),
        ("64k", 65536),
        ("1.5g", 3 * 1024**3 // 2),
        ("256mb", 256 * 1024**2),
        ("1000", 1000),
        (4096, 4096),
    ],
)
def test_parse_memory(value: str | int, size: int) -> None:
    assert parse_memory(value) == size


@pytest.mark.parametrize("value", ["", "lots", "2 gigabytes", "g", "-1m"])
def test_bad_memory_names_the_value(value: str) -> None:
    with pytest.raises(ValidationError) as exc:
        parse_memory(value, field="spec.resources.memory")
    assert repr(value) in exc.value.message and exc.value.field == "spec.resources.memory"


def test_zero_durations_say_why_and_what_range_to_use() -> None:
    with pytest.raises(ValidationErrors) as exc:
        parse_settings(PATH, "branch: main\nhealth_timeout: 0\nreconcile_interval: 0s\n")
    by_field = {e.field: e for e in exc.value.errors}
    assert set(by_field) == {"health_timeout", "reconcile_interval"}
    assert by_field["health_timeout"].line == 2 and by_field["reconcile_interval"].line == 3
    assert "no container could become healthy" in by_field["health_timeout"].message
    assert "1s to 24h" in by_field["health_timeout"].message


def test_reconcile_interval_is_a_duration_like_health_timeout() -> None:
    assert parse_settings(PATH, "reconcile_interval: 1m30s\n").reconcile_interval == 90.0
    assert parse_settings(PATH, "reconcile_interval: 45\n").reconcile_interval == 45.0


@pytest.mark.parametrize(
    ("args", "says"),
    [(["serve", "--parallel", "0"], "--parallel"), (["sync", "--parallel", "0"], "--parallel"),
     (["serve", "--reconcile-interval", "0"], "--reconcile-interval")],
)
def test_zero_on_the_command_line_is_refused(args: list[str], says: str, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from deployally.cli import main

    # A repository that does not exist: were the option taken, the command would stop anyway.
    where = ["--repo", str(tmp_path / "none"), "--state-dir", str(tmp_path / "state")]
    done = CliRunner().invoke(main, [*args, *where])
    assert done.exit_code == 2 and says in done.output


@pytest.mark.parametrize(("text", "seconds"), [("0s", 0.0), ("0", 0.0), ("200ms", 0.2), ("1h", 3600.0)])
def test_min_ready_may_be_zero_and_up_to_an_hour(text: str, seconds: float) -> None:
    assert parse_settings(PATH, f"min_ready: {text}\n").min_ready == seconds


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("-1", "not negative"),
        ("-1s", "not negative"),
        ("61m", "longer than an hour would hold the sync for that long; use 0s to 1h"),
        ("soon", "write a duration from 0s to 1h"),
    ],
)
def test_a_bad_min_ready_says_what_to_write(text: str, says: str) -> None:
    with pytest.raises(ValidationErrors) as exc:
        parse_settings(PATH, f"branch: main\nmin_ready: {text}\n")
    (err,) = exc.value.errors
    assert (err.path, err.field, err.line) == (PATH, "min_ready", 2)
    assert says in err.message
