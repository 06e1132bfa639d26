"""Secrets: placeholders in rendered specs, resolved to values only at apply time, and masking."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from typing import Protocol

# A NUL-delimited marker: if one ever leaked to Docker unresolved, Docker would
# refuse it rather than run with a wrong value.
_PLACEHOLDER = re.compile("\x00secret:([A-Za-z0-9_.-]+)\x00")


def placeholder(name: str) -> str:
    """The marker a rendered spec holds where a secret's value goes."""
    return f"\x00secret:{name}\x00"


def referenced(text: str) -> set[str]:
    """Names of the secrets whose placeholders appear in `text`."""
    return set(_PLACEHOLDER.findall(text))


def resolve(text: str, lookup: Callable[[str], str]) -> str:
    """Replace every placeholder with its value; `lookup` raises SecretError when missing."""
    return _PLACEHOLDER.sub(lambda m: lookup(m.group(1)), text)


def display(text: str) -> str:
    """Show placeholders to a person as <secret:NAME>, never a value."""
    return _PLACEHOLDER.sub(lambda m: f"<secret:{m.group(1)}>", text)


class SecretSource(Protocol):
    """Anything that can give a secret's value by name (the Store does)."""

    def secret_value(self, name: str) -> str:
        """The current value; raises SecretError when the secret is not set."""
        ...


class SecretMasker:
    """Replaces every known secret value in a text with ********; safe to share between threads."""

    MASK = "********"
    # A line of a multi-line secret (a PEM key) is masked on its own, since logs
    # arrive line by line; shorter lines ("}", "-----") would mangle ordinary logs.
    _MIN_LINE = 8

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SecretMasker({len(self._values)} values)"

    def add(self, value: str) -> None:
        """Remember `value` (and each long line of it) so `mask` hides it from now on."""
        candidates = {value} if value else set()
        if "\n" in value:
            candidates |= {line.strip() for line in value.splitlines()}
        # Docker and our own error messages may quote a value with its escapes
        # (`PW=a\x00b`, `"a\nb"`): hide those spellings too.
        candidates |= {repr(value)[1:-1], json.dumps(value)[1:-1]}
        candidates = {c for c in candidates if c and (c == value or len(c) >= self._MIN_LINE)}
        with self._lock:
            if candidates <= self._values:
                return
            self._values |= candidates
            # Longest first, so a secret that contains another is hidden whole.
            ordered = sorted(self._values, key=lambda v: (-len(v), v))
            self._pattern = re.compile("|".join(re.escape(v) for v in ordered))

    def mask(self, text: str) -> str:
        """`text` with every known secret value replaced by ********."""
        pattern = self._pattern  # read once: add() swaps it whole, never edits it
        if pattern is None:
            return text
        return pattern.sub(self.MASK, text)


def lookup_from(store: SecretSource, masker: SecretMasker | None = None) -> Callable[[str], str]:
    """A `lookup` for `resolve` reading `store`; each value read is also added to `masker`."""
    if masker is None:
        return store.secret_value

    def lookup(name: str) -> str:
        value = store.secret_value(name)
        masker.add(value)
        return value

    return lookup
