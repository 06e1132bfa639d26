"""sync/removals.py: which definitions go, as data: bad input never removes anything running."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from conftest import DictTree, worker_file
from deployally.identity import definition_id
from deployally.model import desired as desired_mod
from deployally.sync import removals
from deployally.types import ContainerSpec, DefinitionRecord, DefinitionStatus, SecretVersions

NOW = datetime(2026, 2, 13, tzinfo=UTC)
SPEC = ContainerSpec("x", "def_x", "tpl_x", "busybox:stable", rendered_hash="sha256:1")


def record(name: str, path: str | None = None, **over: object) -> DefinitionRecord:
    base = DefinitionRecord(
        id=definition_id(name), name=name, path=path or f"definitions/{name}.yaml",
        template_id="tpl_x", server_id="local", profile="development",
        status=DefinitionStatus.ACTIVE, current_revision=1, applied_revision=1, desired=SPEC,
        applied_hash="sha256:1", depends_files=(), params={}, last_error=None,
        operator_stopped=False, created_at=NOW, updated_at=NOW,
    )
    return replace(base, **over)  # type: ignore[arg-type]


def gone(records: list[DefinitionRecord], head: dict[str, str], touched: set[str]) -> list[str]:
    """What removals decide for `records` against the files at head."""
    whole = desired_mod.load(DictTree(head), secret_versions=SecretVersions.unchecked())
    maybe = removals.suspects(records, list(head), touched, removals.names_at(whole))
    return sorted(r.name for r in removals.gone(maybe, whole))


A, B = "definitions/alpha.yaml", "definitions/beta.yaml"
BROKEN = "name: [unclosed\n"  # cannot even be read for its name

# case: (records before, files at head, touched paths, expected gone)
CASES: dict[str, tuple[list[DefinitionRecord], dict[str, str], set[str], list[str]]] = {
    "a deleted file goes": ([record("alpha")], {}, {A}, ["alpha"]),
    "a file moved to another path stays": ([record("alpha")], {B: worker_file("alpha")}, {A, B}, []),
    "a name changed inside the file goes": (
        [record("alpha")], {A: worker_file("renamed")}, {A}, ["alpha"],
    ),
    "nothing goes while a file cannot be read for its name": (
        [record("alpha")], {B: BROKEN}, {A, B}, [],
    ),
    "a definition whose own file is refused stays": (
        [record("alpha")], {A: "name: alpha\ntemplate: no/such/template/1\n"}, {A}, [],
    ),
    "a removal already recorded is not made twice": (
        [record("alpha", desired=None)], {}, {A}, [],
    ),
    "one never deployed goes (its record is dropped)": (
        [record("alpha", desired=None, applied_hash=None)], {}, {A}, ["alpha"],
    ),
    "an untouched file that is still there stays": (
        [record("alpha"), record("beta")], {B: worker_file("beta")}, {A}, ["alpha"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_removal_cases(case: str) -> None:
    records, head, touched, expected = CASES[case]
    assert gone(records, head, touched) == expected
