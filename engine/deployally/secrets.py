"""Secrets: names, placeholders in rendered specs, resolved to values only at apply time, and masking.

A rendered spec holds a placeholder where a secret's value goes. Only the renderer
places them (model/render.py refuses every other NUL byte), and a spec resolves
only the secrets its own definition names, at the version its `secrets` say.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Protocol

from deployally.errors import SecretError

# The definition-name rules (model/definitions.py): no "../x", "a/b", newline or empty name.
SECRET_NAME_RE = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
_SECRET_NAME = re.compile(SECRET_NAME_RE)

# A NUL-delimited marker: if one ever leaked to Docker unresolved, Docker would
# refuse it rather than run with a wrong value.
_PLACEHOLDER = re.compile("\x00secret:([a-z0-9][a-z0-9_.-]{0,62})\x00")


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a secret, or None when it can."""
    if _SECRET_NAME.fullmatch(name):
        return None
    shown = name if len(name) <= 70 else name[:67] + "..."
    return (
        f"{shown!r} is not a valid secret name: 1-63 of a-z 0-9 _ . - "
        "starting with a letter or digit"
    )


def check_name(name: str) -> None:
    """Raise SecretError when `name` breaks the secret-name rules."""
    if problem := name_problem(name):
        raise SecretError(problem)


def missing_version(definition: str, secret: str, version: int, kept: Iterable[tuple[str, int]]) -> str:
    """What is wrong with a pin of `definition` naming a version the store does not keep."""
    versions = sorted(v for n, v in kept if n == secret)
    return (
        f"{definition}: secret {secret!r} has no version {version} ("
        + (f"kept: {', '.join(map(str, versions))}" if versions else "it is not set")
        + "); `deployally secret list` shows the versions"
    )


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
    """Anything that can give a secret's value by name and version (the Store does)."""

    def secret_value(self, name: str, version: int | None = None) -> str:
        """The value of that version (None: the current one); SecretError when there is none."""
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


def lookup_from(
    store: SecretSource,
    masker: SecretMasker | None = None,
    *,
    versions: Mapping[str, int] | None = None,
    named: Collection[str] | None = None,
) -> Callable[[str], str]:
    """A `lookup` for `resolve` reading `store`; each value read is also added to `masker`.

    With `versions` (a spec's `secrets`) and `named` (the secrets its definition
    references), any other name is refused and each name reads its own version.
    """

    seen: dict[str, str] = {}  # one read and decryption per secret per lookup (a deployment)

    def lookup(name: str) -> str:
        if name in seen:
            return seen[name]
        version = None
        if versions is not None:
            if name not in versions or (named is not None and name not in named):
                raise SecretError(
                    f"the spec holds a placeholder for secret {name!r}, which its definition "
                    "does not reference; it is not resolved"
                )
            version = versions[name]
        value = seen[name] = store.secret_value(name, version)
        if masker is not None:
            masker.add(value)
        return value

    return lookup
