"""Repository settings (deployally.yaml) and the duration and memory sizes written in YAML files."""

from __future__ import annotations

import re
from dataclasses import dataclass

from deployally.errors import ValidationError, ValidationErrors
from deployally.model.schema import line_of, load_yaml, schema_errors
from deployally.types import DEFAULT_MIN_READY_S, DEFAULT_NETWORK, DEFAULT_PROFILE, DEFAULT_SERVER

SETTINGS_FILE = "deployally.yaml"

_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_MEMORY = re.compile(r"([0-9]+(?:\.[0-9]+)?) ?(?:([bkmgt])i?b?)?", re.IGNORECASE)
_MEMORY_UNITS = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


# Seconds each duration setting may take. Zero makes no sense for the first two: a health gate
# of 0 s fails every container with a healthcheck, and a drift check every 0 s spins. A
# min_ready of 0 s counts a container done once it is seen running; past an hour, a rollout
# would hold its sync (and the definitions after it) for longer than anyone waits on purpose.
DURATION_BOUNDS: dict[str, tuple[float, float]] = {
    "reconcile_interval": (1.0, 86400.0),
    "health_timeout": (1.0, 86400.0),
    "min_ready": (0.0, 3600.0),
}
_TOO_SHORT = {
    "reconcile_interval": "the engine would check for drift without pause",
    "health_timeout": "no container could become healthy in that time",
    "min_ready": "a time cannot be negative",
}
_TOO_LONG = {"min_ready": "longer than an hour would hold the sync for that long"}


@dataclass(frozen=True)
class Settings:
    """deployally.yaml, with every default filled in; durations in seconds."""

    branch: str = "main"
    reconcile_interval: float = 30.0
    network: str = DEFAULT_NETWORK
    # Concurrent Docker creates/starts: 8 was fastest on 2 cores (bench/sync_scale.py: 4 -> 25 s,
    # 8 -> 19 s, 16 -> 21 s for 100 definitions); health waits overlap beyond it.
    max_parallel: int = 8
    # Services an update may have down at once (volumes or host ports: the old container stops
    # before the new one starts); None means max_parallel.
    max_unavailable: int | None = None
    health_timeout: float = 120.0
    min_ready: float = DEFAULT_MIN_READY_S
    default_server: str = DEFAULT_SERVER
    default_profile: str = DEFAULT_PROFILE


def parse_settings(path: str, text: str | None) -> Settings:
    """Parse deployally.yaml; None (no file) gives all defaults. Raises ValidationError(s)."""
    if text is None or not text.strip():
        return Settings()
    data, lines = load_yaml(path, text)
    errors = schema_errors("settings.schema.json", path, data, lines)
    if errors:
        raise ValidationErrors(errors)
    defaults = data.get("defaults", {})
    base = Settings()
    durations: dict[str, float] = {}
    for name, default in (
        ("reconcile_interval", base.reconcile_interval),
        ("health_timeout", base.health_timeout),
        ("min_ready", base.min_ready),
    ):
        try:
            durations[name] = bounded_duration(path, name, data.get(name, default))
        except ValidationError as exc:
            errors.append(ValidationError(path, name, exc.message, line=line_of(lines, (name,))))
    if errors:
        raise ValidationErrors(errors)
    return Settings(
        branch=data.get("branch", base.branch),
        reconcile_interval=durations["reconcile_interval"],
        network=data.get("network", base.network),
        max_parallel=data.get("max_parallel", base.max_parallel),
        max_unavailable=data.get("max_unavailable", base.max_unavailable),
        health_timeout=durations["health_timeout"],
        min_ready=durations["min_ready"],
        default_server=defaults.get("server", base.default_server),
        default_profile=defaults.get("profile", base.default_profile),
    )


def bounded_duration(path: str, setting: str, value: str | float, field: str = "") -> float:
    """A duration `setting` (a key of DURATION_BOUNDS) in seconds, within what makes sense for
    it; ValidationError naming `path` and `field` (the setting's own name unless given)."""
    field = field or setting
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        seconds = float(value)  # a negative number is a duration, only out of range
    else:
        seconds = parse_duration(value, path=path, field=field)
    low, high = DURATION_BOUNDS[setting]
    if not low <= seconds <= high:
        if seconds < low:
            why = _TOO_SHORT[setting]
        else:
            why = _TOO_LONG.get(setting, "longer than a day is a typo")
        shown = f"{high / 3600:g}h" if high >= 3600 else f"{high:g}s"
        raise ValidationError(
            path, field, f"{value!r} is out of range: {why}; use {low:g}s to {shown}"
        )
    return seconds


def parse_duration(value: str | float, *, path: str = "", field: str = "") -> float:
    """Seconds in "1m30s", "10s", "500ms", "2h" or a plain number of seconds; ValidationError names the value."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    text = value.strip() if isinstance(value, str) else ""
    parts = _DURATION_PART.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise ValidationError(
            path, field, f"{value!r} is not a duration; write e.g. 10s, 1m30s or 500ms"
        )
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def parse_memory(value: str | int, *, path: str = "", field: str = "") -> int:
    """Bytes in "512m", "2g", "1.5g", "64k" (binary units, as Docker) or a plain byte count."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _MEMORY.fullmatch(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValidationError(path, field, f"{value!r} is not a memory size; write e.g. 512m or 2g")
    return int(float(match.group(1)) * _MEMORY_UNITS[(match.group(2) or "b").lower()])
