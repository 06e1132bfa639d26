"""The source: the tracked branch of a git repository (see git.py)."""

from deployally.source.git import CommitInfo, GitRepo

__all__ = ["CommitInfo", "GitRepo"]
