"""Identity: canonical JSON, content hashes and the prefixed ids (DESIGN.md, "Identity and hashing")."""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces, so equal values give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(value: Any) -> str:
    """"sha256:" + hex digest of the canonical JSON of `value`."""
    return "sha256:" + hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def stable_id(prefix: str, key: str) -> str:
    """An id that is the same every time for the same key, e.g. tpl_ from a taxonomy path."""
    return f"{prefix}_" + hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]


def random_id(prefix: str) -> str:
    """A fresh id, e.g. deploy_, whk_, srv_."""
    return f"{prefix}_" + secrets.token_hex(6)


def template_id(taxonomy_path: str) -> str:
    return stable_id("tpl", taxonomy_path)


def definition_id(name: str) -> str:
    return stable_id("def", name)


def instance_id(ref: str) -> str:
    """inst_ + the first 12 characters of the driver's instance reference (a container's short id)."""
    return "inst_" + ref[:12]
