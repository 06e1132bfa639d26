"""A repository tree to read definitions from: a commit of a GitRepo, or a plain directory.

`validate` and `plan` run on any checkout (a working directory in CI, a pushed
commit in a pre-receive hook); the engine reads commits. Both look the same
to the model through `Tree`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from deployally.source.git import GitRepo, name_problem, shown_path
from deployally.types import Unreadable


class Tree(Protocol):
    """Read-only files of one repository state, by repo-relative path."""

    label: str  # what a person calls this state: a short sha or a directory

    def list(self, prefix: str) -> list[str]:
        """Repo-relative paths of the files under `prefix`, sorted."""
        ...

    def read_many(self, paths: Iterable[str]) -> dict[str, str | Unreadable]:
        """Texts of the paths that exist, Unreadable for a file that is not text; absent
        paths are left out."""
        ...


class CommitTree:
    """The files of one commit."""

    def __init__(self, repo: GitRepo, commit: str) -> None:
        self.repo = repo
        self.commit = commit
        self.label = commit[:12]

    def list(self, prefix: str) -> list[str]:
        return sorted(self.repo.list_files(self.commit, prefix))

    def read_many(self, paths: Iterable[str]) -> dict[str, str | Unreadable]:
        return self.repo.read_many(self.commit, list(paths))

    def __repr__(self) -> str:
        return f"CommitTree({self.label})"


class DirTree:
    """The files of a directory, such as a working copy in a pull-request check."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.label = str(root)

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and ".git" not in p.relative_to(self.root).parts
        )

    def read_many(self, paths: Iterable[str]) -> dict[str, str | Unreadable]:
        out: dict[str, str | Unreadable] = {}
        for rel in paths:
            path = (self.root / rel).resolve()
            # A config file source may never reach outside the repository.
            if self.root not in path.parents or not path.is_file():
                continue
            problem = name_problem(rel)
            if problem is not None:
                out[rel] = Unreadable(shown_path(rel), problem)
                continue
            try:
                out[rel] = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                out[rel] = Unreadable(rel, "not UTF-8 text; save the file as UTF-8")
            except OSError as exc:
                out[rel] = Unreadable(rel, f"cannot be read: {exc.strerror or exc}")
        return out

    def __repr__(self) -> str:
        return f"DirTree({self.label})"
