"""What a sync of a tree would do, recording nothing: `deployally plan` against live state.

The same steps as the sync, on a tree instead of the tracked head: the intake's
`desired_step` and removals (with the store's secret versions, so hashes match),
the carried requests, then `server_intent` and `plan_server` for every server this
engine applies to. A pull-request preview is therefore what the merge then does
(only a failed definition's backoff, known to the running engine alone, is not
seen here: its update shows, and runs once its retry is due).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from deployally.drivers.registry import DriverRegistry
from deployally.model import desired as desired_mod
from deployally.model.engine_config import EngineConfig
from deployally.plan.server import plan_server, server_intent
from deployally.source.git import GitRepo
from deployally.source.tree import CommitTree, Tree
from deployally.store import ServerRecord, Store
from deployally.sync import removals, requests
from deployally.sync.changes import CommitNote, desired_step
from deployally.sync.edits import ROLLBACK_TRAILER
from deployally.sync.intake import META_ENGINE_CONFIG
from deployally.types import Action, Desired, Plan


def preview(
    repo: GitRepo,
    store: Store,
    tree: Tree,
    drivers: DriverRegistry[ServerRecord],
    engine: EngineConfig | None = None,
) -> tuple[Plan, desired_mod.DesiredState]:
    """The plan a sync of `tree` would carry out on every server applied here, and the tree's
    state; `engine` is the engine configuration the sync renders with."""
    engine = engine or EngineConfig()
    state = desired_mod.load(
        tree, secret_versions=store.available_secrets(), engine=engine, servers=store.server_keys(),
        replicated=store.server_keys(kind="swarm"),
    )
    desired = desired_of(repo, store, tree, state, engine)
    carried = requests.pending(store)
    actions: list[Action] = []
    for server, driver in drivers.applied_here():
        intent = server_intent(
            server.name, (server.name, server.id), desired, open_deployments=carried
        )
        actions += plan_server(intent, driver.live()).actions
    return Plan(tuple(sorted(actions, key=lambda a: a.name))), state


def desired_of(
    repo: GitRepo,
    store: Store,
    tree: Tree,
    state: desired_mod.DesiredState,
    engine: EngineConfig,
) -> Desired:
    """The records a sync of `tree` would leave, from the intake's own pure step."""
    records = store.definitions()
    base = store.get_meta("desired_commit")
    touched = changed_paths(
        CommitTree(repo, base) if base and repo.has_commit(base) else None,
        tree,
        extra=[f for r in records for f in r.depends_files]
        + [f for d in state.ok.values() for f in d.depends_files],
    )
    maybe = removals.suspects(
        records, desired_mod.definition_paths(tree), touched, removals.names_at(state)
    )
    step = desired_step(
        state,
        removals.gone(maybe, state) if maybe else [],
        old={r.name: r for r in records}.get,
        at_path={r.path: r for r in records}.get,
        latest_number=lambda def_id: (r.number if (r := store.latest_revision(def_id)) else None),
        note=_note(repo, tree),
        touched=touched,
        now=datetime.now(UTC),
        engine=engine if store.get_meta(META_ENGINE_CONFIG) != engine.render_fingerprint() else None,
    )
    by_name = {r.name: r for r in records}
    by_name.update({r.name: r for r in step.upserts})
    for record in step.deleted:
        by_name.pop(record.name, None)
    return Desired(
        commit=tree.commit if isinstance(tree, CommitTree) else base or "",
        records=by_name,
        reasons=step.reasons,
        before=step.before,
        errors=step.errors,
        changed=frozenset(step.reasons),
    )


def changed_paths(old: Tree | None, new: Tree, *, extra: Iterable[str] = ()) -> frozenset[str]:
    """The paths whose text differs between two trees, among what a desired state reads:
    definitions, repository templates, settings and the config files in `extra`."""
    def listed(tree: Tree) -> set[str]:
        return (
            set(tree.list(desired_mod.DEFINITIONS_DIR))
            | set(tree.list(desired_mod.CATALOG_DIR))
            | {desired_mod.SETTINGS_PATH}
        )

    paths = listed(new) | (listed(old) if old is not None else set()) | set(extra)
    after = new.read_many(paths)
    before = old.read_many(paths) if old is not None else {}
    return frozenset(p for p in paths if after.get(p) != before.get(p))


def _note(repo: GitRepo, tree: Tree) -> CommitNote:
    """What the reasons say of where the preview's changes come from."""
    if isinstance(tree, CommitTree):
        info = repo.commit_info(tree.commit)
        return CommitNote(tree.commit, tree.label, info.summary, ROLLBACK_TRAILER in info.message)
    return CommitNote(None, tree.label, "not committed yet")
