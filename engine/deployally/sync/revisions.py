"""Revisions: a definition's revision N is the Nth commit that changed its desired state.

Numbered from git alone: the definition's file, its template's spec_hash and the
config files it mounts (DESIGN.md, "Identity and hashing"), never whether a secret
happens to be set. Pure: the caller reads the commit and records what comes back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

from deployally.identity import definition_id
from deployally.model import desired as desired_mod
from deployally.model.definitions import pinned_secrets
from deployally.types import ChangeSet, DefinitionRecord, Revision

# The newest recorded revision of a definition (by def_ id), or None.
Latest = Callable[[str], Revision | None]


def new_revisions(
    commit: str,
    changes: ChangeSet,
    state: desired_mod.DesiredState,
    *,
    invalid_texts: Mapping[str, str],
    records: Iterable[DefinitionRecord],
    latest: Latest,
    now: datetime,
) -> list[Revision]:
    """The revisions `commit` makes: one per definition whose desired hash it changed.

    `state` is what the commit's touched files define; `invalid_texts` the text of
    each refused file it touched; `records` the definitions known before it.
    """
    hashes: dict[str, tuple[str, str]] = {
        name: (d.desired_hash, d.definition.path) for name, d in state.ok.items()
    }
    # The secret versions a revision pins, so they are kept while it may be rolled back to.
    pins = {name: pinned_secrets(d.definition.params) for name, d in state.ok.items()}
    for path, name in state.invalid_names.items():
        if path in changes.paths():
            text = invalid_texts.get(path, "")
            hashes.setdefault(name, (desired_mod.desired_hash(text, "", {}), path))
    for record in dropped_in(records, state, changes):
        hashes.setdefault(record.name, ("", ""))  # the commit removed it: a revision too
    out = []
    for name, (digest, path) in hashes.items():
        def_id = definition_id(name)
        previous = latest(def_id)
        if previous is not None and previous.desired_hash == digest:
            continue
        if previous is None and digest == "":
            continue  # gone before it ever had a revision
        number = (previous.number if previous else 0) + 1
        out.append(Revision(def_id, name, number, commit, digest, path, now, pins.get(name, ())))
    return out


def dropped_in(
    records: Iterable[DefinitionRecord], state: desired_mod.DesiredState, changes: ChangeSet
) -> list[DefinitionRecord]:
    """Definitions whose file a commit touched and no longer defines (deleted, or renamed inside)."""
    touched = {p for p in changes.paths() if is_definition(p)}
    defined = set(state.ok) | set(state.invalid_names.values())
    return [
        r for r in records
        if r.path in touched and r.name not in defined and r.path not in state.invalid
    ]


def is_definition(path: str) -> bool:
    """Is `path` a definition file (definitions/*.yaml)?"""
    return path.startswith(desired_mod.DEFINITIONS_DIR) and path.endswith((".yaml", ".yml"))
