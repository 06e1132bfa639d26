"""Secrets: placeholders in rendered specs, resolved to values only at apply time, and masking."""

from __future__ import annotations

import re
from typing import Callable

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
