"""The tracked branch of a git repository: head, history, diffs, files, and commits.

Only this module touches git. Reads are plumbing commands whose cost follows
what is asked (one ref, the changed paths, the named blobs), never the size of
the repository. Writes build a commit without a working tree and move the
branch with a compare-and-swap, so a concurrent push makes one side lose cleanly.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from deployally.errors import Conflict, SourceError
from deployally.types import ChangeSet, Unreadable

T = TypeVar("T")
ZERO_SHA = "0" * 40
_FULL_SHA = re.compile(r"[0-9a-f]{40}")
# Listings and diffs of commits are immutable; a sync asks for the same few several times
# (intake, settings, catalog), and each answer kept saves a git process (~5 ms).
_KEPT_ANSWERS = 16
_KEPT_COMMITS = 10_000
# Files read at a commit, kept up to this many characters (a sync of 5,000 definitions reads
# about a megabyte, and both its revision and its desired pass read them): then dropped.
_KEPT_TEXT_CHARS = 16_000_000
_ABSENT = object()  # a path a commit does not hold, kept like a text
_READ_BY_PATH = 32  # files read at once by `<commit>:<path>`; more are read by their blobs
# How git names the directory a push's objects wait in until pre-receive accepts them.
QUARANTINE_PREFIX = "tmp_objdir-incoming-"

# Variables a calling git (a hook) may have set that would point our commands at
# another repository or index. The quarantine object directories of a
# pre-receive hook are deliberately kept: without them the pushed commits
# cannot be read before they are accepted.
_SCRUBBED_ENV = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_PREFIX", "GIT_COMMON_DIR")


@dataclass(frozen=True)
class CommitInfo:
    """Who made a commit, when, and its one-line summary."""

    sha: str
    short: str
    summary: str
    author_name: str
    author_email: str
    committed_at: datetime  # UTC
    message: str = ""  # the whole message, trailers included


@dataclass(frozen=True)
class SignatureCheck:
    """git's own verdict on a commit's signature (`%G?`) and the key and signer it names."""

    sha: str
    status: str  # G good and trusted, B bad, U/E untrusted or unknown key, X/Y/R expired or revoked, N none
    key: str = ""  # the key git names (an OpenPGP key id, an SSH fingerprint)
    signer: str = ""  # the signer git names (an OpenPGP user id, an SSH principal)
    summary: str = ""  # the commit's subject line


class GitRepo:
    """One branch of a working, bare or mirrored repository."""

    # How the engine's own commits (API writes, rollbacks) are signed; None: unsigned.
    signing_key: Path | None = None
    # True while only signed commits deploy: an unsigned write would never go live.
    writes_need_signature: bool = False

    def __init__(self, path: Path, branch: str = "main") -> None:
        # Plain git, not gitpython: opening a repository is what `validate` and the push
        # hooks do first, and gitpython's import alone costs them a tenth of a second.
        if not Path(path).is_dir():
            raise SourceError(
                f"{path}: no such directory; create the repository with `deployally init` "
                "or fix the repository path"
            )
        if not _valid_branch_name(branch):
            raise SourceError(f"{path}: branch: {branch!r} is not a valid branch name")
        located = _locate(Path(path))
        if located is None:
            raise SourceError(
                f"{path}: not a git repository; create one with `deployally init` "
                "or fix the repository path"
            )
        self.path = Path(path)
        self.branch = branch
        self.git_dir, self.work_tree = located
        self.bare: bool = self.work_tree is None
        self.ref = f"refs/heads/{branch}"
        self.remote_url: str | None = self.config("remote.origin.url")
        self._start_caches()

    def _start_caches(self) -> None:
        # Full shas known to name commits, and answers about commits: a commit never changes,
        # so neither do they. Only has_commit asks git again (gc may drop a commit).
        self._commits: set[str] = set()
        self._answers: OrderedDict[tuple[str, ...], object] = OrderedDict()
        self._answers_lock = threading.Lock()
        self._parents: dict[str, str | None] = {}  # commit -> its first parent
        self._texts: dict[tuple[str, str], object] = {}  # (commit, path) -> text, Unreadable, _ABSENT
        self._text_chars = 0

    # Extra object directories a pre-receive hook's quarantine adds (see with_quarantine).
    _objects_env: Mapping[str, str] = {}

    def with_quarantine(self, quarantine: Path) -> GitRepo:
        """This repository reading the objects a push has in quarantine too (pre-receive), and
        refusing, as git does there, to move any ref. A SourceError unless `quarantine` is one
        of this repository's own quarantine directories."""
        objects = (self.git_dir / "objects").resolve()
        found = Path(quarantine).resolve()
        if found.parent != objects or not found.name.startswith(QUARANTINE_PREFIX) \
                or not found.is_dir():
            raise SourceError(f"{quarantine}: not a quarantine directory of {self.git_dir}")
        copy = object.__new__(GitRepo)
        copy.__dict__.update(self.__dict__)
        copy._start_caches()  # what the push's objects show stays with this copy
        copy._objects_env = {
            "GIT_QUARANTINE_PATH": str(found),
            "GIT_OBJECT_DIRECTORY": str(found),
            "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(objects),
        }
        return copy

    def __repr__(self) -> str:
        kind = "mirror" if self.remote_url else "bare" if self.bare else "working"
        return f"GitRepo({str(self.path)!r}, branch={self.branch!r}, {kind})"

    # ------------------------------------------------------------ creating

    @classmethod
    def init(cls, path: Path, *, bare: bool, branch: str = "main") -> GitRepo:
        """Create (or re-open) a repository at `path` whose HEAD names `branch`."""
        if not _valid_branch_name(branch):
            raise SourceError(f"{path}: branch: {branch!r} is not a valid branch name")
        path = Path(path).resolve()
        path.mkdir(parents=True, exist_ok=True)
        _run(["init", "--quiet", *(["--bare"] if bare else []), str(path)], cwd=path)
        repo = cls(path, branch)
        if repo._try_resolve("HEAD") is None:  # unborn: name the branch the first commit makes
            repo._git("symbolic-ref", "HEAD", repo.ref)
        return repo

    @classmethod
    def mirror(cls, url: str, into: Path, branch: str) -> GitRepo:
        """Keep a bare copy of a remote's branches in `into`, fetched now; re-opens an existing one."""
        into = Path(into)
        if not (into / "HEAD").exists():
            cls.init(into, bare=True, branch=branch)
            _run(["remote", "add", "origin", url], cwd=into)
            _run(["config", "remote.origin.fetch", "+refs/heads/*:refs/heads/*"], cwd=into)
        repo = cls(into, branch)
        if repo.remote_url != url:
            raise SourceError(
                f"{into}: already mirrors {repo.remote_url!r}, not {url!r}; "
                "remove the directory or use another state directory"
            )
        repo.fetch()
        return repo

    # ------------------------------------------------------------ reading

    def head(self) -> str | None:
        """Sha of the tracked branch; None while the repository has no commits yet."""
        sha = self._ref_sha()
        if sha is None:
            others = self._git("for-each-ref", "--format=%(refname:short)", "refs/heads/").split()
            if others:
                raise SourceError(
                    f"{self.path}: no branch {self.branch!r} (branches: {', '.join(others)}); "
                    "push to it or set `branch` in deployally.yaml"
                )
        return sha

    def commits_between(self, since: str | None, until: str) -> list[str]:
        """First-parent commits in (since, until], oldest first; from the root when since is None."""
        until_sha = self.resolve(until)
        since_sha = None if since is None else self._try_resolve(since)
        # After a force-push `since` may be gone or off the new history: the
        # first-parent commits of `until` it cannot reach are then the new ones.
        spec = f"{since_sha}..{until_sha}" if since_sha else until_sha
        out = self._git("rev-list", "--first-parent", "--reverse", "--parents", spec, "--")
        commits = []
        if len(self._parents) >= _KEPT_COMMITS:
            self._parents.clear()
        for line in out.splitlines():
            sha, *parents = line.split()
            self._parents[self._known_commit(sha)] = parents[0] if parents else None
            commits.append(sha)
        return commits

    def changes(self, old: str | None, new: str) -> ChangeSet:
        """Paths that differ between two commits, renames detected; old None means all added."""
        new_sha = self.resolve(new)
        if old is None:
            return ChangeSet(added=tuple(sorted(self.list_files(new_sha, ""))))
        old_sha = self.resolve(old)
        key = ("changes", old_sha, new_sha)
        kept = self._kept(key)
        if isinstance(kept, ChangeSet):
            return kept
        out = self._git_bytes(
            "diff-tree", "-r", "-M", "--no-commit-id", "--name-status", "-z", old_sha, new_sha, "--"
        )
        return self._keep(key, _parse_name_status(out))

    def first_parent(self, commit: str) -> str | None:
        """The first parent of `commit`, None for a root commit."""
        sha = self.resolve(commit)
        if sha in self._parents:  # listed by commits_between
            return self._parents[sha]
        shas = self._git("rev-list", "--parents", "-n", "1", sha, "--").split()
        return shas[1] if len(shas) > 1 else None

    def has_commit(self, rev: str) -> bool:
        """True when `rev` names a commit this repository still has (a force-push and gc drop some)."""
        self._commits.discard(rev)  # asked because it may be gone: ask git, not what we kept
        return self._try_resolve(rev) is not None

    def is_ancestor(self, a: str, b: str) -> bool:
        """True when commit `a` is `b` or in its history."""
        proc = self._git_proc("merge-base", "--is-ancestor", self.resolve(a), self.resolve(b))
        if proc.returncode not in (0, 1):
            raise SourceError(f"{self.path}: {_stderr(proc)}")
        return proc.returncode == 0

    def resolve(self, rev: str) -> str:
        """The full sha of the commit `rev` names; SourceError when it names none."""
        sha = self._try_resolve(rev)
        if sha is None:
            raise SourceError(f"{self.path}: bad revision {rev!r}: no such commit")
        return sha

    def read(self, commit: str, path: str) -> str | None:
        """Text of `path` at `commit`; None when the file does not exist there.

        Raises SourceError naming the file when it exists but is not readable text.
        """
        text = self.read_many(commit, [path]).get(path)
        if isinstance(text, Unreadable):
            raise SourceError(f"{text.shown} at {commit[:12]}: {text.problem}")
        return text

    def read_many(self, commit: str, paths: Iterable[str]) -> dict[str, str | Unreadable]:
        """Texts of the files that exist at `commit`, by path, read by one `cat-file` process.

        A file that exists but cannot be read as text (not UTF-8, or a name with a control
        character) maps to Unreadable: one bad file never hides the others. What a full sha
        holds is kept: asked again, it is not read again.
        """
        wanted = list(dict.fromkeys(paths))
        if not _FULL_SHA.fullmatch(commit):  # a name (HEAD, a branch) may move: read it now
            return self._read_many(commit, wanted)
        kept = {p: self._texts.get((commit, p)) for p in wanted}
        unread = [p for p, value in kept.items() if value is None]
        if unread:
            found = self._read_many(commit, unread)
            if self._text_chars > _KEPT_TEXT_CHARS:
                self._texts, self._text_chars = {}, 0
            for p in unread:
                value = kept[p] = found.get(p, _ABSENT)
                self._texts[(commit, p)] = value
                self._text_chars += len(p) + (len(value) if isinstance(value, str) else 0)
        return {p: value for p, value in kept.items() if isinstance(value, (str, Unreadable))}

    def _read_many(self, commit: str, wanted: list[str]) -> dict[str, str | Unreadable]:
        result: dict[str, str | Unreadable] = {}
        misnamed = {p: problem for p in wanted if (problem := name_problem(p)) is not None}
        if misnamed:
            for p in self._names_at(commit, list(misnamed)) & misnamed.keys():  # absent stay absent
                result[p] = Unreadable(shown_path(p), misnamed[p])
            wanted = [p for p in wanted if p not in misnamed]
        if not wanted:
            return result
        # Many files are named by their blobs, from one listing of the commit: git finds
        # `<commit>:<path>` by reading and scanning the path's tree again for each one (5,000
        # files of one directory took 35 s); a few go by path, which needs no listing.
        blobs = self.list_files(commit, "") if len(wanted) > _READ_BY_PATH else None
        # The commit itself goes first, so a bad revision is told apart from absent files.
        lines = [f"{commit}^{{commit}}"] + [
            f"{commit}:{p.lstrip('/')}" if blobs is None else blobs.get(p.lstrip("/"), ZERO_SHA)
            for p in wanted
        ]
        out = self._git_bytes("cat-file", "--batch", "--buffer", input="\n".join(lines).encode() + b"\n")
        objects = _parse_batch(out)
        if objects[0] is None:
            raise SourceError(f"{self.path}: bad revision {commit!r}: no such commit")
        for p, obj in zip(wanted, objects[1:]):
            if obj is None or obj[0] != "blob":
                continue
            try:
                result[p] = obj[1].decode("utf-8")
            except UnicodeDecodeError:
                result[p] = Unreadable(p, "not UTF-8 text; save the file as UTF-8")
        return result

    def _names_at(self, commit: str, paths: list[str]) -> set[str]:
        """Which of `paths` are files at `commit`, whatever bytes their names hold."""
        # Arguments carry any name (the argv is encoded back to the name's bytes); the
        # batch input of cat-file could not hold a newline.
        out = self._git_bytes(
            "--literal-pathspecs", "ls-tree", "-z", "--name-only", "--full-tree", commit,
            "--", *paths,
        )
        return {e.decode("utf-8", "surrogateescape") for e in out.split(b"\0") if e}

    def list_files(self, commit: str, prefix: str) -> dict[str, str]:
        """Path -> blob sha of every file under the directory `prefix` ("" for all), recursively."""
        sha = self.resolve(commit)
        key = ("files", sha, prefix)
        kept = self._kept(key)
        if kept is None and prefix:
            kept = self._kept(("files", sha, ""))
        if isinstance(kept, dict):  # the caller's own copy
            return {path: blob for path, blob in kept.items() if path.startswith(prefix)}
        pathspec = [prefix] if prefix else []
        out = self._git_bytes("ls-tree", "-r", "-z", "--full-tree", sha, "--", *pathspec)
        files: dict[str, str] = {}
        for entry in out.split(b"\0"):
            if not entry:
                continue
            meta, _, raw_path = entry.partition(b"\t")
            _mode, kind, blob = meta.decode().split()
            path = raw_path.decode("utf-8", "surrogateescape")
            if kind == "blob" and path.startswith(prefix):
                files[path] = blob
        self._keep(key, dict(files))
        return files

    def commit_info(self, commit: str) -> CommitInfo:
        """Author, time and summary of one commit."""
        resolved = self.resolve(commit)
        kept = self._kept(("info", resolved))
        if isinstance(kept, CommitInfo):
            return kept
        fmt = "%H%x00%h%x00%an%x00%ae%x00%ct%x00%s%x00%B"
        out = self._git("show", "-s", "--no-show-signature", f"--format={fmt}", resolved, "--")
        sha, short, name, email, ts, summary, message = out.rstrip("\n").split("\0", 6)
        return self._keep(("info", resolved), CommitInfo(
            sha=sha,
            short=short,
            summary=summary,
            author_name=name,
            author_email=email,
            committed_at=datetime.fromtimestamp(int(ts), tz=UTC),
            message=message,
        ))

    def signatures(
        self, commits: Sequence[str], *, allowed_signers: Path, gnupg_home: Path
    ) -> list[SignatureCheck]:
        """git's verdict on each commit's signature, against these trusted keys only: SSH
        keys in `allowed_signers`, OpenPGP keys in the keyring `gnupg_home`."""
        if not commits:
            return []
        out = self._git(
            "-c", f"gpg.ssh.allowedSignersFile={allowed_signers}",
            "log", "--no-walk=unsorted", "--stdin", "--format=%H%x00%G?%x00%GK%x00%GS%x00%s%x1e", "--",
            input="".join(f"{c}\n" for c in commits).encode(),
            env={"GNUPGHOME": str(gnupg_home)},
        )
        found = []
        for record in out.split("\x1e"):
            fields = record.strip("\n").split("\0")
            if len(fields) == 5:
                found.append(SignatureCheck(*fields))
        return found

    def new_commits(self, rev: str) -> list[str]:
        """Commits `rev` brings that no branch or tag holds yet, oldest first (what a
        pre-receive hook is asked to accept)."""
        return self._git("rev-list", "--reverse", self.resolve(rev), "--not", "--all", "--").split()

    def set_config(self, key: str, value: str) -> None:
        """Set a repository config value (the hooks read `deployally.branch`)."""
        self._git("config", key, value)

    def config(self, key: str) -> str | None:
        """This repository's own config value for `key` (not the user's or the system's)."""
        proc = self._git_proc("config", "--file", str(self.git_dir / "config"), "--get", key)
        value = proc.stdout.decode("utf-8", "replace").strip()
        return value if proc.returncode == 0 and value else None

    # ------------------------------------------------------------ remote

    def fetch(self) -> bool:
        """Fetch the remote's branches; True when the tracked branch moved."""
        if self.remote_url is None:
            raise SourceError(f"{self.path}: has no remote to fetch; it is not a mirror")
        before = self._ref_sha()
        proc = self._git_proc("fetch", "--quiet", "--prune", "origin")
        if proc.returncode != 0:
            raise SourceError(f"{self.path}: fetching {self.remote_url} failed: {_stderr(proc)}")
        after = self._ref_sha()
        if after is None:
            self.head()  # raises the readable "no such branch" error if others exist
        return before != after

    # ------------------------------------------------------------ writing

    def write(
        self,
        changes: Mapping[str, str | None],
        *,
        message: str,
        author_name: str,
        author_email: str,
        expected_head: str | None,
    ) -> str:
        """Commit these paths (text, or None to delete) on the branch; return the new head.

        Raises Conflict when the branch is no longer at `expected_head`. A write
        that changes nothing returns the head unchanged.
        """
        for p in changes:
            _check_path(p)
        if self.writes_need_signature and self.signing_key is None:
            raise Conflict(
                "this engine deploys only commits signed by a key in trusted_keys (engine.yaml) "
                "and has no signing_key to sign its own: make the change as a signed commit "
                "in git, or have the engine's operator set signing_key"
            )
        current = self._ref_sha()
        if current != expected_head:
            raise _moved(expected_head, current)
        parent_tree = self._tree_of(expected_head)
        tree = self._build_tree(expected_head, changes)
        if expected_head is not None and tree == parent_tree:
            return expected_head
        env = {
            "GIT_AUTHOR_NAME": author_name,
            "GIT_AUTHOR_EMAIL": author_email,
            "GIT_COMMITTER_NAME": author_name,
            "GIT_COMMITTER_EMAIL": author_email,
        }
        parents = ["-p", expected_head] if expected_head else []
        signing = (
            ["-c", "gpg.format=ssh", "-c", f"user.signingKey={self.signing_key}"]
            if self.signing_key is not None
            else []
        )
        sign = ["-S"] if self.signing_key is not None else []
        new = self._git(
            *signing, "commit-tree", tree, *parents, *sign, "-F", "-", input=message.encode(), env=env
        ).strip()
        tree_clean = self._tracked_tree_clean()
        if self.remote_url is not None:
            self._push(new, expected_head)
        self._swap_ref(new, expected_head, message)
        if tree_clean and self.work_tree is not None:
            self._follow_work_tree(expected_head, new)
        return new

    def _build_tree(self, base: str | None, changes: Mapping[str, str | None]) -> str:
        """Write blobs and a tree for `base` with `changes` applied, using a throwaway index."""
        with tempfile.TemporaryDirectory(prefix="deployally-index-") as tmp:
            env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
            if base is None:
                self._git("read-tree", "--empty", env=env)
            else:
                self._git("read-tree", base, env=env)
            entries: list[str] = []
            for path, text in sorted(changes.items()):
                path = path.lstrip("/")
                if text is None:
                    entries.append(f"0 {ZERO_SHA}\t{path}")
                else:
                    blob = self._git(
                        "hash-object", "-w", "--stdin", input=text.encode("utf-8")
                    ).strip()
                    entries.append(f"100644 {blob}\t{path}")
            if entries:
                stdin = ("\n".join(entries) + "\n").encode("utf-8")
                self._git("update-index", "--index-info", input=stdin, env=env)
            return self._git("write-tree", env=env).strip()

    def _push(self, new: str, expected: str | None) -> None:
        """Push `new` to the remote branch; Conflict when the remote moved meanwhile."""
        lease = f"--force-with-lease={self.ref}:{expected or ''}"
        proc = self._git_proc(
            "push", "--quiet", "--porcelain", lease, "origin", f"{new}:{self.ref}"
        )
        if proc.returncode == 0:
            return
        text = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
        if "[rejected]" in text or "stale info" in text or "fetch first" in text:
            raise Conflict(
                f"{self.remote_url}: the branch {self.branch!r} moved on the remote; "
                "fetch and retry"
            )
        raise SourceError(f"{self.path}: pushing to {self.remote_url} failed: {text.strip()}")

    def _swap_ref(self, new: str, expected: str | None, message: str) -> None:
        """Move the branch from `expected` to `new`, or fail if someone else moved it."""
        summary = message.splitlines()[0] if message.strip() else "write"
        proc = self._git_proc(
            "update-ref", "-m", f"deployally: {summary}", self.ref, new, expected or ZERO_SHA
        )
        if proc.returncode == 0:
            return
        now = self._ref_sha()
        if now == new:  # a fetch already brought our own pushed commit
            return
        if now != expected:
            raise _moved(expected, now)
        raise SourceError(
            f"{self.path}: cannot move {self.ref}: {_stderr(proc)}; "
            "if no git process is running, remove the stale .lock file"
        )

    def _tracked_tree_clean(self) -> bool:
        """True when this is a working repo on the tracked branch with no local changes."""
        if self.work_tree is None:
            return False
        proc = self._git_proc("symbolic-ref", "-q", "HEAD")
        if proc.stdout.decode().strip() != self.ref:
            return False
        status = self._git_proc("status", "--porcelain", "--untracked-files=no")
        return status.returncode == 0 and not status.stdout.strip()

    def _follow_work_tree(self, old: str | None, new: str) -> None:
        """Bring a clean checkout from `old` to `new`; left as is if a file is in the way."""
        args = ["read-tree", "-u", "-m", *([old] if old else []), new]
        # A failure leaves index and files untouched: the engine reads commits,
        # not the working tree, so a stale checkout is harmless.
        self._git_proc(*args)

    # ------------------------------------------------------------ plumbing

    def _ref_sha(self) -> str | None:
        proc = self._git_proc("rev-parse", "--verify", "-q", f"{self.ref}^{{commit}}")
        if proc.returncode == 0:
            return self._known_commit(proc.stdout.decode().strip())
        if proc.returncode == 1:
            return None
        raise SourceError(f"{self.path}: cannot read {self.ref}: {_stderr(proc)}")

    def _try_resolve(self, rev: str) -> str | None:
        if rev in self._commits:
            return rev
        if rev.startswith("-"):
            return None
        proc = self._git_proc("rev-parse", "--verify", "-q", f"{rev}^{{commit}}")
        if proc.returncode != 0:
            return None
        return self._known_commit(proc.stdout.decode().strip())

    def _known_commit(self, sha: str) -> str:
        """Remember that git named `sha` a commit, so resolving it again costs no process."""
        if _FULL_SHA.fullmatch(sha):
            if len(self._commits) >= _KEPT_COMMITS:
                self._commits.clear()  # a long-lived engine sees many: keep memory bounded
            self._commits.add(sha)
        return sha

    def _kept(self, key: tuple[str, ...]) -> object:
        """An answer kept for `key`, or None."""
        with self._answers_lock:
            found = self._answers.get(key)
            if found is not None:
                self._answers.move_to_end(key)
            return found

    def _keep(self, key: tuple[str, ...], answer: T) -> T:
        """Keep `answer` for `key` (the newest few only) and return it."""
        with self._answers_lock:
            self._answers[key] = answer
            while len(self._answers) > _KEPT_ANSWERS:
                self._answers.popitem(last=False)
        return answer

    def _tree_of(self, commit: str | None) -> str | None:
        if commit is None:
            return None
        return self._git("rev-parse", f"{commit}^{{tree}}").strip()

    def _git(
        self, *args: str, input: bytes | None = None, env: Mapping[str, str] | None = None
    ) -> str:
        return self._git_bytes(*args, input=input, env=env).decode("utf-8", "surrogateescape")

    def _git_bytes(
        self, *args: str, input: bytes | None = None, env: Mapping[str, str] | None = None
    ) -> bytes:
        proc = self._git_proc(*args, input=input, env=env)
        if proc.returncode != 0:
            raise SourceError(f"{self.path}: git {args[0]}: {_stderr(proc)}")
        return proc.stdout

    def _git_proc(
        self, *args: str, input: bytes | None = None, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        if self._objects_env:
            env = {**self._objects_env, **(env or {})}
        return _run(list(args), cwd=self.work_tree or self.git_dir, input=input, env=env)


# ---------------------------------------------------------------- module-private


def _locate(path: Path) -> tuple[Path, Path | None] | None:
    """The git directory and work tree (None: bare) of the repository at exactly `path` (a
    bare repository, the top of a working one, or its .git); None when it is none of these."""
    proc = _run(["rev-parse", "--absolute-git-dir", "--is-bare-repository"], cwd=path)
    lines = proc.stdout.decode("utf-8", "surrogateescape").splitlines()
    if proc.returncode != 0 or len(lines) != 2:
        return None
    git_dir, bare = Path(lines[0]), lines[1] == "true"
    here = path.resolve()
    if git_dir == here:  # a bare repository, or a working one's .git (as its hooks see it)
        return git_dir, None if bare else git_dir.parent
    # git finds a repository above any directory inside it; only the top itself is one.
    return (git_dir, here) if not bare and (here / ".git").exists() else None


def _run(
    args: list[str], *, cwd: Path, input: bytes | None = None, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run one git command; a missing git binary is a SourceError too."""
    full_env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    # C locale: error texts are matched below; no prompt: a fetch must fail, not hang.
    full_env.update({"LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"})
    full_env.update(env or {})
    try:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, input=input, env=full_env, capture_output=True, check=False
        )
    except FileNotFoundError:
        if not Path(cwd).is_dir():  # the same error as a missing binary: say which it was
            raise SourceError(f"{cwd}: the repository is gone (no such directory)") from None
        raise SourceError("git is not installed or not on PATH; install git") from None
    if args and args[0] == "init" and proc.returncode != 0:
        raise SourceError(f"{cwd}: git init failed: {_stderr(proc)}")
    return proc


_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)


def redact_url(text: str) -> str:
    """`text` with any credentials in URLs (`https://user:token@host`) replaced by ***."""
    return _USERINFO.sub(r"\1***@", text)


def _stderr(proc: subprocess.CompletedProcess[bytes]) -> str:
    text = redact_url(proc.stderr.decode("utf-8", "replace").strip())
    if "index.lock" in text or ".lock': File exists" in text:
        return text + " (a lock is held by another git process)"
    return text or f"exit status {proc.returncode}"


def _moved(expected: str | None, now: str | None) -> Conflict:
    return Conflict(
        f"the branch moved from {expected or '(no commits)'} to {now or '(deleted)'}; retry"
    )


def _parse_name_status(out: bytes) -> ChangeSet:
    """Parse `diff-tree --name-status -z` output into a ChangeSet."""
    fields = [f.decode("utf-8", "surrogateescape") for f in out.split(b"\0")]
    added: list[str] = []
    modified: list[str] = []
    deleted: list[str] = []
    renamed: list[tuple[str, str]] = []
    i = 0
    while i < len(fields) and fields[i]:
        status = fields[i][0]
        if status in "RC":
            old, new = fields[i + 1], fields[i + 2]
            if status == "R":
                renamed.append((old, new))
            else:
                added.append(new)
            i += 3
            continue
        path = fields[i + 1]
        {"A": added, "D": deleted}.get(status, modified).append(path)
        i += 2
    return ChangeSet(tuple(added), tuple(modified), tuple(deleted), tuple(renamed))


def _parse_batch(out: bytes) -> list[tuple[str, bytes] | None]:
    """Parse `cat-file --batch` output: (type, content) per input line, None if missing."""
    objects: list[tuple[str, bytes] | None] = []
    pos = 0
    while pos < len(out):
        end = out.index(b"\n", pos)
        header = out[pos:end].split()
        pos = end + 1
        if len(header) != 3 or not header[2].isdigit():  # "<name> missing" / "ambiguous"
            objects.append(None)
            continue
        size = int(header[2])
        objects.append((header[1].decode(), out[pos : pos + size]))
        pos += size + 1  # content is followed by a newline
    return objects


_BAD_REF = re.compile(r"(^[-/.])|(\.\.)|([\s~^:?*\[\\])|(@\{)|(\.lock$)|(/$)|(//)")


def _valid_branch_name(branch: str) -> bool:
    return bool(branch) and not _BAD_REF.search(branch)


def name_problem(path: str) -> str | None:
    """Why a file name from a repository cannot be used, or None: every path DeployAlly
    reads is printed in errors and push output, where a newline or an escape sequence
    could forge lines, and a name that is not UTF-8 cannot be stored or shown."""
    for char in path:
        if char.isprintable():
            continue
        if char == "\n":
            return "the file name holds a newline; rename the file"
        if "\udc80" <= char <= "\udcff":
            return "the file name is not UTF-8; rename the file"
        return f"the file name holds the unprintable character U+{ord(char):04X}; rename the file"
    return None


def shown_path(path: str) -> str:
    """`path` as one printable line: control characters escaped (\\n), non-UTF-8 bytes as \\xNN."""
    out = []
    for char in path:
        if char.isprintable():
            out.append(char)
        elif "\udc80" <= char <= "\udcff":  # a byte the name held that was not UTF-8
            out.append(f"\\x{ord(char) - 0xDC00:02x}")
        else:
            out.append(repr(char)[1:-1])
    return "".join(out)


def _check_path(path: str) -> None:
    parts = path.strip("/").split("/")
    if not path.strip("/") or any(p in ("", ".", "..", ".git") for p in parts) or "\n" in path:
        raise SourceError(
            f"{path!r}: not a valid repository path; use a relative path "
            "like definitions/<name>.yaml"
        )
