"""Patterns a repository supplies (a template's `user_inputs` pattern), and the patterns of
our own JSON Schemas applied to repository data, matched by RE2.

RE2 matches in time linear in the input whatever the pattern, so no pattern and no param
can stall a sync, an API write or a pre-receive hook (Python's `re` backtracks: `(a+)+$`
against 40 characters runs for minutes, with the GIL held). RE2 refuses what it cannot
match in linear time — lookarounds and backreferences — when the template is read.
"""

from __future__ import annotations

import functools
from typing import Any

import re2  # type: ignore[import-untyped]

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would write every refused pattern to stderr (push output)
# RE2's own default, written down: a pattern whose compiled program needs more is refused,
# so compiling is bounded in memory too (Python's `re` and `regex` are not: `x{4294967294}`).
_OPTIONS.max_mem = 8 << 20


class PatternError(ValueError):
    """A pattern RE2 cannot compile; the message says why."""


@functools.lru_cache(maxsize=1024)
def compiled(pattern: str) -> Any:
    """The compiled pattern; PatternError naming RE2's reason when it cannot be compiled."""
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode("utf-8", "replace") if exc.args else "invalid"
        hint = ""
        if "perl operator" in reason or "escape sequence" in reason:
            hint = " (lookarounds and backreferences are not supported: they cannot match in linear time)"
        raise PatternError(f"{reason}{hint}") from None
    except UnicodeEncodeError:
        raise PatternError("the pattern is not valid text") from None


def fullmatch(pattern: str, value: str) -> bool:
    """True when all of `value` matches `pattern`; PatternError for a bad pattern or value."""
    return _match(pattern, value, whole=True)


def search(pattern: str, value: str) -> bool:
    """True when `pattern` matches somewhere in `value` (JSON Schema's `pattern`)."""
    return _match(pattern, value, whole=False)


def _match(pattern: str, value: str, *, whole: bool) -> bool:
    regexp = compiled(pattern)
    try:
        found = regexp.fullmatch(value) if whole else regexp.search(value)
    except UnicodeEncodeError:  # a lone surrogate, which YAML's "\udc80" can produce
        raise PatternError("the value is not valid text") from None
    return found is not None
