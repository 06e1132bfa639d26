"""Structured log lines on stderr: `key=value` text for people, one JSON object a line for machines."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

FORMATS = ("text", "json")
# Fields a record carries in `extra={"fields": {...}}`: what the line is about.
FIELDS = "fields"


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    value = getattr(record, FIELDS, None)
    return dict(value) if isinstance(value, dict) else {}


def _stamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class TextFormatter(logging.Formatter):
    """`2024-05-01T12:00:00.000+00:00 INFO  server: message key=value`."""

    def format(self, record: logging.LogRecord) -> str:
        """One line: time, level, short logger name, message and fields."""
        extra = " ".join(f"{k}={_text(v)}" for k, v in _fields(record).items())
        line = f"{_stamp(record)} {record.levelname:<5} {record.name.removeprefix('deployally.')}: "
        line += record.getMessage() + (f" {extra}" if extra else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    """`{"ts": ..., "level": ..., "logger": ..., "msg": ..., <fields>}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        """One JSON object; fields never override the four fixed keys."""
        body: dict[str, Any] = _fields(record)
        body.update(
            ts=_stamp(record), level=record.levelname, logger=record.name, msg=record.getMessage()
        )
        if record.exc_info:
            body["exc"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str, ensure_ascii=False)


def _text(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (" " in text or '"' in text or not text) else text


def configure(fmt: str = "text", level: int = logging.INFO, stream: TextIO | None = None) -> None:
    """Send every `deployally` logger's records to stderr in `fmt` (text or json)."""
    if fmt not in FORMATS:
        raise ValueError(f"--log-format: {fmt!r} is not one of {', '.join(FORMATS)}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # aiohttp's access log would add one unstructured line per request.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def fields(**values: Any) -> dict[str, Any]:
    """`extra=` for a log call: `log.info("synced", extra=fields(commit=sha))`."""
    return {FIELDS: values}
