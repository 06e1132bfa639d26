"""What `deployally validate` checks and prints, shared by the command and the running engine.

The pre-receive hook asks the engine when one runs and runs the command when none does;
both print these same lines, so a refused push reads the same either way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from deployally.errors import ValidationError, ValidationErrors
from deployally.model import desired as desired_mod
from deployally.model.engine_config import EngineConfig
from deployally.source.tree import CommitTree, Tree
from deployally.types import SecretVersions

if TYPE_CHECKING:
    from deployally.store import Store


NO_STORE = ("servers not checked, nor pinned secret versions: no state store here "
            "(give --state-dir to check them)")


@dataclass(frozen=True)
class StoreChecks:
    """What the engine's state store lets validate check: the servers (all, and the swarm ones,
    which alone take replicas) by name and srv_ id, and the secret versions it keeps."""

    servers: frozenset[str] | None = None  # None: no store, so servers are not checked
    replicated: frozenset[str] | None = None
    versions: SecretVersions = field(default_factory=SecretVersions.unchecked)

    @classmethod
    def of(cls, store: Store) -> StoreChecks:
        """The checks a store allows (no secret's value is read, only which versions exist)."""
        return cls(
            store.server_keys(),
            store.server_keys(kind="swarm"),
            SecretVersions.pins_only(store.available_secrets().kept),
        )


@dataclass(frozen=True)
class Validation:
    """One validation's verdict: every error, and what it was checked against."""

    label: str  # the commit or directory validated
    errors: tuple[ValidationError, ...]
    definitions: int  # how many are valid; 0 when the checks could not start
    engine_config: str | None  # the engine.yaml checked against; None: the defaults
    servers_checked: bool
    loaded: bool  # False when the engine's configuration (or its keys) stopped the checks

    @property
    def ok(self) -> bool:
        """True when the tree would deploy as it is."""
        return not self.errors

    def lines(self) -> list[tuple[str, bool]]:
        """What `validate` prints, in order, each line with whether it goes to stderr."""
        out: list[tuple[str, bool]] = [(f"error: {err}", True) for err in self.errors]
        if self.errors:
            out.append((f"{len(self.errors)} error(s) in {self.label}", True))
        else:
            out.append((f"{self.definitions} definition(s) valid in {self.label}", False))
        if self.loaded:
            out.append((
                f"host allowances from {self.engine_config}" if self.engine_config else
                "host allowances: the defaults (no engine.yaml found; DEPLOYALLY_CONFIG=PATH "
                "checks against the engine's own)",
                bool(self.errors),
            ))
            if not self.servers_checked:
                out.append((NO_STORE, True))
        return out

    def as_json(self) -> dict[str, Any]:
        """What `validate --json` prints."""
        return {"valid": self.ok, "definitions": self.definitions,
                "engine_config": self.engine_config, "servers_checked": self.servers_checked,
                "errors": [e.as_dict() for e in self.errors]}


def validate(
    tree: Tree,
    engine: Callable[[], EngineConfig],
    store: Callable[[], StoreChecks],
    *,
    pushed: bool,
) -> Validation:
    """Check every definition of `tree` as the engine would deploy it: templates, params,
    host allowances, servers and pinned secrets, and, with trusted keys, the signatures of
    the commit (with `pushed`, of every commit it brings that no ref holds yet).

    `engine` and `store` are called here, so an error in engine.yaml or its keys is
    reported like any other."""
    try:
        config = engine()
        checks = store()
        unsigned = unsigned_commits(tree, config, pushed=pushed)
    except ValidationErrors as exc:
        return Validation(tree.label, tuple(exc.errors), 0, None, False, loaded=False)
    state = desired_mod.load(
        tree, secret_versions=checks.versions, engine=config, servers=checks.servers,
        replicated=checks.replicated,
    )
    return Validation(
        tree.label,
        tuple(unsigned + state.all_errors()),
        len(state.ok),
        config.path or None,
        checks.servers is not None,
        loaded=True,
    )


def unsigned_commits(tree: Tree, engine: EngineConfig, *, pushed: bool) -> list[ValidationError]:
    """An error for each commit the engine would not deploy for want of a trusted signature."""
    if not engine.verifies_commits or not isinstance(tree, CommitTree):
        return []  # nothing to check, or a working directory: nothing is committed yet
    from deployally.source.signatures import Verifier  # only with trusted keys

    git_repo = tree.repo
    commits = git_repo.new_commits(tree.commit) if pushed else [tree.commit]
    verifier = Verifier(engine.trusted_keys, config_path=engine.path)
    try:
        verdicts = verifier.check(git_repo, commits)
    finally:
        verifier.close()
    return [
        ValidationError(
            f"commit {sha[:12]}",
            "",
            f"{v.summary!r} is {v.reason}; the engine deploys only "
            f"commits signed by a key in trusted_keys ({engine.path}): sign it "
            "(git commit --amend -S, or git rebase --exec 'git commit --amend --no-edit -S')",
        )
        for sha, v in verdicts.items()
        if not v.trusted
    ]
