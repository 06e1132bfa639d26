"""`deployally validate`: kept apart from the other repository commands, so a CI job or a
push hook imports only what checking needs (no Docker client, no HTTP server, no store
unless one is there to check against)."""

from __future__ import annotations

import json
import sys

import click

from deployally.cli.common import (
    _tree,
    branch_option,
    engine_state,
    json_option,
    repo_option,
    state_option,
)
from deployally.model.engine_config import load_engine_config
from deployally.state_dir import has_store
from deployally.validation import StoreChecks
from deployally.validation import validate as check


@click.command()
@repo_option
@state_option
@branch_option
@click.option("--rev", default=None, help="Validate this commit instead of the working directory.")
@click.option("--pushed", is_flag=True,
              help="(The pre-receive hook.) With trusted_keys, require a trusted signature on "
                   "every commit REV brings that no branch or tag holds yet, not only on REV.")
@json_option
def validate(repo: str, state_dir: str | None, branch: str, rev: str | None, pushed: bool,
             as_json: bool) -> None:
    """Check every definition; exit 1 with every error, each naming its file and field.

    What the host allows comes from the engine's configuration: DEPLOYALLY_CONFIG, else
    engine.yaml in --state-dir (default: the repository's engine state directory). Without
    one, the defaults apply, which allow least. Servers are registered in the engine's state
    store, not in git: with a store there, each definition's server is checked, and each
    pinned secret version must be one it keeps; without one, as in CI on a checkout, those
    checks are skipped and said so. With the engine's trusted_keys, a commit (--rev, or the
    head of a bare repository) must be signed by one of them.
    """
    tree = _tree(repo, rev, branch)

    def store_checks() -> StoreChecks:
        state = engine_state(repo, state_dir, branch)
        if not has_store(state):
            return StoreChecks()  # never create a store just to validate
        from deployally.store import Store

        with Store(state) as store:
            return StoreChecks.of(store)

    result = check(tree, lambda: load_engine_config(engine_state(repo, state_dir, branch)),
                   store_checks, pushed=pushed)
    if as_json:
        click.echo(json.dumps(result.as_json(), indent=2, default=str))
    else:
        for line, to_stderr in result.lines():
            click.echo(line, err=to_stderr)
    sys.exit(0 if result.ok else 1)
