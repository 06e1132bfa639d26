"""sync/revisions.py: which commit makes which revision, as data (no git, no Docker)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from conftest import DictTree, worker_file
from deployally.identity import definition_id
from deployally.model import desired as desired_mod
from deployally.sync.revisions import new_revisions
from deployally.types import ChangeSet, DefinitionRecord, DefinitionStatus, Revision, SecretVersions

NOW = datetime(2026, 2, 13, tzinfo=UTC)
WEB = "definitions/web.yaml"


def state_of(files: dict[str, str], only: set[str] | None = None) -> desired_mod.DesiredState:
    return desired_mod.load(
        DictTree(files), secret_versions=SecretVersions.unchecked(), only=only
    )


def record(name: str, path: str) -> DefinitionRecord:
    return DefinitionRecord(
        id=definition_id(name), name=name, path=path, template_id="tpl_x", server_id="local",
        profile="development", status=DefinitionStatus.ACTIVE, current_revision=1,
        applied_revision=1, desired=None, applied_hash="sha256:x", depends_files=(),
        params={}, last_error=None, operator_stopped=False, created_at=NOW, updated_at=NOW,
    )


def hash_of(files: dict[str, str], name: str) -> str:
    return state_of(files).ok[name].desired_hash


V1 = {WEB: worker_file("web", message="one")}
V2 = {WEB: worker_file("web", message="two")}

# case: (files at the commit, changes, latest recorded revision, known records,
#        expected [(name, number, path or "" when the commit removed it)])
CASES: dict[str, tuple[object, ...]] = {
    "a new file is revision 1": (V1, ChangeSet(added=(WEB,)), None, [], [("web", 1, WEB)]),
    "a change is the next revision": (
        V2, ChangeSet(modified=(WEB,)), Revision(definition_id("web"), "web", 4, "c0", "sha256:old", WEB, NOW),
        [record("web", WEB)], [("web", 5, WEB)],
    ),
    "an unchanged file makes none": (
        V1, ChangeSet(modified=(WEB,)), Revision(definition_id("web"), "web", 1, "c0", hash_of(V1, "web"), WEB, NOW),
        [record("web", WEB)], [],
    ),
    "a deleted file is a revision with no file": (
        {}, ChangeSet(deleted=(WEB,)), Revision(definition_id("web"), "web", 2, "c0", "sha256:old", WEB, NOW),
        [record("web", WEB)], [("web", 3, "")],
    ),
    "a file deleted before any revision makes none": ({}, ChangeSet(deleted=(WEB,)), None, [], []),
    "a refused file is a revision too": (
        {WEB: "name: web\ntemplate: no/such/template/1\n"}, ChangeSet(modified=(WEB,)),
        Revision(definition_id("web"), "web", 1, "c0", "sha256:old", WEB, NOW),
        [record("web", WEB)], [("web", 2, WEB)],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_revision_cases(case: str) -> None:
    files, changes, latest, records, expected = CASES[case]
    assert isinstance(files, dict) and isinstance(changes, ChangeSet)
    state = state_of(files, only=set(changes.paths()))
    made = new_revisions(
        "c1",
        changes,
        state,
        invalid_texts={p: files[p] for p in state.invalid_names if p in files},
        records=records,  # type: ignore[arg-type]
        latest=lambda def_id: latest if latest is not None else None,  # type: ignore[return-value]
        now=NOW,
    )
    assert [(r.name, r.number, r.path) for r in made] == expected
    assert all(r.commit == "c1" for r in made)


def test_a_mounted_config_file_changes_the_revision_hash() -> None:
    def files(conf: str) -> dict[str, str]:
        extra = "files:\n  - path: /etc/app.conf\n    source: config/app.conf\n"
        return {WEB: worker_file("web", _extra=extra), "config/app.conf": conf}

    assert hash_of(files("a=1\n"), "web") != hash_of(files("a=2\n"), "web")
