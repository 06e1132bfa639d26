"""Edits to definitions made as commits on the tracked branch: git stays the source of truth.

The API's writes and `deployally rollback` come here; the engine then deploys
the new commit like any push.
"""

from __future__ import annotations

from .errors import NotFound
from .source.git import GitRepo
from .store import Store

ROLLBACK_TRAILER = "DeployAlly-Rollback:"
AUTHOR_EMAIL = "deployally@localhost"


def rollback(repo: GitRepo, store: Store, name: str, to: int, *, author: str) -> str:
    """Commit revision `to` of a definition's file back onto the branch; returns the commit."""
    record = store.definition(name)
    if record is None:
        raise NotFound(f"definition {name!r} is not known; see `deployally definitions list`")
    target = store.revision(record.id, to)
    if target is None or not target.path:
        known = ", ".join(str(r.number) for r in store.revisions(record.id) if r.path)
        raise NotFound(f"{record.name} has no revision {to} to roll back to (revisions: {known})")
    text = repo.read(target.commit, target.path)
    if text is None:
        raise NotFound(f"{target.path} is missing at {target.commit[:12]}")
    changes: dict[str, str | None] = {target.path: text}
    if record.path and record.path != target.path:
        changes[record.path] = None
    message = (
        f"Roll back {record.name} to revision {to}\n\n"
        f"Restores {target.path} as of {target.commit[:12]}.\n\n"
        f"{ROLLBACK_TRAILER} {record.name} {to}\n"
    )
    return repo.write(
        changes,
        message=message,
        author_name=author,
        author_email=AUTHOR_EMAIL,
        expected_head=repo.head(),
    )
