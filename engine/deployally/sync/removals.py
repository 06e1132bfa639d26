"""Removals: the definitions no file at head defines any more, judged so bad input removes nothing.

A definition goes when its file was deleted or its `name:` changed, and only when
no file at head defines that name, its own file was not refused, and every file at
head can be read for its name (it may be where the definition moved). Pure.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from deployally.model import desired as desired_mod
from deployally.sync.revisions import is_definition
from deployally.types import DefinitionRecord


def suspects(
    records: Iterable[DefinitionRecord],
    files: Collection[str],
    touched: Collection[str],
    names_at: Mapping[str, str],
) -> list[DefinitionRecord]:
    """Definitions that may be gone: their file is not at head, or a touched file of theirs
    now names another definition. `names_at` maps the files read at head to their names."""
    changed = {p for p in touched if is_definition(p)}
    present = set(files)  # every record is looked up: a list would make this quadratic
    return [
        r for r in records
        if r.path not in present or (r.path in changed and names_at.get(r.path, r.name) != r.name)
    ]


def gone(
    maybe: Iterable[DefinitionRecord], whole: desired_mod.DesiredState
) -> list[DefinitionRecord]:
    """Of the suspects, those truly gone, judged against every file at head (`whole`).

    While any file cannot even be read for its name, nothing goes; a definition whose own
    file was refused stays; one already removed (no desired spec, once deployed) is not
    removed twice.
    """
    if whole.errors or any(p not in whole.invalid_names for p in whole.invalid):
        return []
    defined = set(whole.ok) | set(whole.invalid_names.values())
    return [
        r for r in maybe
        if r.name not in defined
        and r.path not in whole.invalid
        and (r.desired is not None or r.applied_hash is None)
    ]


def names_at(state: desired_mod.DesiredState) -> dict[str, str]:
    """File path -> the name it defines, for every file `state` read (valid or not)."""
    out = {d.definition.path: name for name, d in state.ok.items()}
    out.update(state.invalid_names)
    return out
