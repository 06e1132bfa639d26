"""GitRepo against real repositories made with the git CLI in tmp dirs."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import UTC
from pathlib import Path

import pytest

import deployally.source.git as git_module
from deployally.errors import Conflict, SourceError
from deployally.source import GitRepo
from deployally.source.tree import DirTree
from deployally.types import ChangeSet, Unreadable

AUTHOR = {"author_name": "Ada Ops", "author_email": "ada@example.com"}


def git(cwd: Path, *args: str, input: str | None = None) -> str:
    """Run the git CLI the way a user would, with a fixed identity."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "Tester",
        "GIT_AUTHOR_EMAIL": "tester@example.com",
        "GIT_COMMITTER_NAME": "Tester",
        "GIT_COMMITTER_EMAIL": "tester@example.com",
    }
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env=env, input=input, text=True, capture_output=True, check=True
    )
    return proc.stdout.strip()


def commit_files(work: Path, files: dict[str, str | None], message: str) -> str:
    """Write/delete files in a checkout, commit them, return the new sha."""
    for rel, text in files.items():
        target = work / rel
        if text is None:
            git(work, "rm", "-q", rel)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            git(work, "add", rel)
    git(work, "commit", "-q", "-m", message)
    return git(work, "rev-parse", "HEAD")


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    return path


# ---------------------------------------------------------------- opening


def test_missing_path_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such directory"):
        GitRepo(tmp_path / "nope")


def test_a_repository_that_goes_away_is_named_not_taken_for_a_missing_git(work: Path) -> None:
    repo = GitRepo(work)
    work.rename(work.with_name("aside"))  # moved or deleted while the engine runs
    with pytest.raises(SourceError, match="the repository is gone") as exc:
        repo.head()
    assert str(work) in str(exc.value)
    assert "not installed" not in str(exc.value)


def test_plain_directory_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not a git repository"):
        GitRepo(tmp_path)


def test_head_of_empty_repo_is_none(work: Path, tmp_path: Path) -> None:
    assert GitRepo(work).head() is None
    bare = GitRepo.init(tmp_path / "bare.git", bare=True)
    assert bare.head() is None


def test_head_is_the_branch_tip(work: Path) -> None:
    sha = commit_files(work, {"a.txt": "1"}, "one")
    git(work, "checkout", "-q", "-b", "other")
    commit_files(work, {"a.txt": "2"}, "two on other")
    assert GitRepo(work, "main").head() == sha


def test_head_names_the_missing_branch(work: Path) -> None:
    commit_files(work, {"a.txt": "1"}, "one")
    with pytest.raises(SourceError, match="no branch 'production'.*main"):
        GitRepo(work, "production").head()


# ---------------------------------------------------------------- history


def test_commits_between_linear(work: Path) -> None:
    c1 = commit_files(work, {"a": "1"}, "1")
    c2 = commit_files(work, {"a": "2"}, "2")
    c3 = commit_files(work, {"a": "3"}, "3")
    repo = GitRepo(work)
    assert repo.commits_between(None, c3) == [c1, c2, c3]
    assert repo.commits_between(c1, c3) == [c2, c3]
    assert repo.commits_between(c3, c3) == []


def test_commits_between_follows_first_parent_only(work: Path) -> None:
    c1 = commit_files(work, {"a": "1"}, "1")
    git(work, "checkout", "-q", "-b", "feature")
    f1 = commit_files(work, {"b": "1"}, "feature 1")
    f2 = commit_files(work, {"b": "2"}, "feature 2")
    git(work, "checkout", "-q", "main")
    c2 = commit_files(work, {"a": "2"}, "2")
    git(work, "merge", "-q", "--no-ff", "-m", "merge feature", "feature")
    merge = git(work, "rev-parse", "HEAD")
    repo = GitRepo(work)
    assert repo.commits_between(c1, merge) == [c2, merge]
    assert f1 not in repo.commits_between(None, merge)
    assert f2 not in repo.commits_between(None, merge)
    assert repo.first_parent(merge) == c2
    assert repo.first_parent(c1) is None


def test_commits_between_after_force_push(work: Path) -> None:
    c1 = commit_files(work, {"a": "1"}, "1")
    old = commit_files(work, {"a": "2"}, "2 (to be rewritten)")
    git(work, "reset", "-q", "--hard", c1)
    n2 = commit_files(work, {"a": "two"}, "2 rewritten")
    n3 = commit_files(work, {"a": "three"}, "3")
    repo = GitRepo(work)
    assert not repo.is_ancestor(old, n3)
    assert repo.commits_between(old, n3) == [n2, n3]
    # A since that no longer exists at all (gc'd, or from another repo) never fails either.
    assert repo.commits_between("0" * 40, n3) == [c1, n2, n3]


def test_is_ancestor(work: Path) -> None:
    c1 = commit_files(work, {"a": "1"}, "1")
    c2 = commit_files(work, {"a": "2"}, "2")
    repo = GitRepo(work)
    assert repo.is_ancestor(c1, c2)
    assert repo.is_ancestor(c2, c2)
    assert not repo.is_ancestor(c2, c1)


def test_bad_revision_is_a_source_error(work: Path) -> None:
    commit_files(work, {"a": "1"}, "1")
    repo = GitRepo(work)
    with pytest.raises(SourceError, match="bad revision 'deadbeef'"):
        repo.commits_between(None, "deadbeef")
    with pytest.raises(SourceError, match="bad revision"):
        repo.read("nosuchref", "a")
    with pytest.raises(SourceError, match="bad revision"):
        repo.commit_info("--all")


def test_commit_info(work: Path) -> None:
    sha = commit_files(work, {"a": "1"}, "Add a\n\nLonger body.")
    info = GitRepo(work).commit_info(sha)
    assert info.sha == sha
    assert sha.startswith(info.short)
    assert info.summary == "Add a"
    assert (info.author_name, info.author_email) == ("Tester", "tester@example.com")
    assert info.committed_at.tzinfo == UTC
    assert int(info.committed_at.timestamp()) == int(git(work, "log", "-1", "--format=%ct"))


# ---------------------------------------------------------------- diffs


def test_changes_add_modify_delete_rename(work: Path) -> None:
    old = commit_files(
        work,
        {
            "definitions/a.yaml": "name: a\ntemplate: database/mysql/standard/8.4\n" * 5,
            "definitions/keep.yaml": "name: keep\n",
            "definitions/gone.yaml": "name: gone\n",
            "catalog/x.yaml": "name: x\n",
        },
        "base",
    )
    git(work, "mv", "definitions/a.yaml", "definitions/b.yaml")
    new = commit_files(
        work,
        {
            "definitions/gone.yaml": None,
            "catalog/x.yaml": "name: x2\n",
            "definitions/new.yaml": "n",
        },
        "change",
    )
    changes = GitRepo(work).changes(old, new)
    assert changes == ChangeSet(
        added=("definitions/new.yaml",),
        modified=("catalog/x.yaml",),
        deleted=("definitions/gone.yaml",),
        renamed=(("definitions/a.yaml", "definitions/b.yaml"),),
    )


def test_changes_from_nothing_adds_everything(work: Path) -> None:
    sha = commit_files(work, {"deployally.yaml": "branch: main\n", "definitions/a.yaml": "x"}, "1")
    changes = GitRepo(work).changes(None, sha)
    assert changes.added == ("definitions/a.yaml", "deployally.yaml")
    assert changes.paths() == {"definitions/a.yaml", "deployally.yaml"}


def test_changes_between_equal_commits_is_empty(work: Path) -> None:
    sha = commit_files(work, {"a": "1"}, "1")
    assert GitRepo(work).changes(sha, sha) == ChangeSet()


# ---------------------------------------------------------------- files


def test_read_at_older_commits(work: Path) -> None:
    c1 = commit_files(work, {"definitions/a.yaml": "v1\n"}, "1")
    c2 = commit_files(work, {"definitions/a.yaml": "v2 é\n"}, "2")
    c3 = commit_files(work, {"definitions/a.yaml": None}, "3")
    repo = GitRepo(work)
    assert repo.read(c1, "definitions/a.yaml") == "v1\n"
    assert repo.read(c2, "definitions/a.yaml") == "v2 é\n"
    assert repo.read(c3, "definitions/a.yaml") is None
    assert repo.read(c1, "definitions") is None  # a directory is not a file


def test_read_many(work: Path) -> None:
    files = {f"definitions/d{i}.yaml": f"name: d{i}\n" + "x" * i for i in range(50)}
    files["with space/file name.yaml"] = "spaced\n"
    files["empty.txt"] = ""
    sha = commit_files(work, dict(files), "many")
    got = GitRepo(work).read_many(sha, [*files, "definitions/missing.yaml"])
    assert got == files


def test_read_rejects_non_utf8_with_the_path(work: Path) -> None:
    (work / "bin.dat").write_bytes(b"\xff\xfe\x00")
    git(work, "add", "bin.dat")
    git(work, "commit", "-q", "-m", "binary")
    with pytest.raises(SourceError, match="bin.dat.*UTF-8"):
        GitRepo(work).read("HEAD", "bin.dat")


def test_read_many_marks_each_unreadable_file_and_reads_the_rest(work: Path) -> None:
    (work / "good.yaml").write_text("fine\n")
    (work / "bin.dat").write_bytes(b"\xff\xfe\x00")
    (work / "two\nlines.yaml").write_text("x\n")
    (work / os.fsdecode(b"caf\xe9.yaml")).write_text("y\n")
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "mixed")
    names = ["good.yaml", "bin.dat", "two\nlines.yaml", os.fsdecode(b"caf\xe9.yaml"), "gone.yaml"]

    got = GitRepo(work).read_many("HEAD", names)

    assert got["good.yaml"] == "fine\n"
    assert got["bin.dat"] == Unreadable("bin.dat", "not UTF-8 text; save the file as UTF-8")
    assert got["two\nlines.yaml"] == Unreadable(
        "two\\nlines.yaml", "the file name holds a newline; rename the file"
    )
    assert got[os.fsdecode(b"caf\xe9.yaml")] == Unreadable(
        "caf\\xe9.yaml", "the file name is not UTF-8; rename the file"
    )
    assert "gone.yaml" not in got
    assert set(DirTree(work).read_many(names)) == set(got)  # a working copy reads the same
    assert DirTree(work).read_many(names)["bin.dat"] == got["bin.dat"]


def test_list_files(work: Path) -> None:
    sha = commit_files(
        work,
        {
            "definitions/a.yaml": "a",
            "definitions/nested/b.yaml": "b",
            "catalog/db/mysql.yaml": "m",
            "definitions.txt": "not under the directory",
            "README.md": "r",
        },
        "1",
    )
    repo = GitRepo(work)
    defs = repo.list_files(sha, "definitions/")
    assert sorted(defs) == ["definitions/a.yaml", "definitions/nested/b.yaml"]
    assert defs["definitions/a.yaml"] == git(work, "rev-parse", f"{sha}:definitions/a.yaml")
    assert list(repo.list_files(sha, "catalog/")) == ["catalog/db/mysql.yaml"]
    assert repo.list_files(sha, "nothing/") == {}
    assert len(repo.list_files(sha, "")) == 5


def test_answers_about_a_commit_cost_one_git_process_each(
    work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sync asks about the same commits several times (intake, settings, catalog); a commit
    never changes, so the second asking runs no git at all, and the answers stay right."""
    c1 = commit_files(work, {"definitions/a.yaml": "a", "catalog/t.yaml": "t"}, "1")
    c2 = commit_files(work, {"definitions/a.yaml": "a2", "definitions/b.yaml": "b"}, "2")
    repo = GitRepo(work)
    runs: list[str] = []
    real_run = git_module._run

    def counted(args: list[str], **kwargs: object) -> object:
        runs.append(args[0])
        return real_run(args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(git_module, "_run", counted)

    def ask() -> tuple[object, ...]:
        return (
            repo.resolve(c2),
            repo.changes(c1, c2),
            repo.list_files(c2, ""),
            repo.list_files(c2, "definitions/"),
            repo.list_files(c2, "catalog/"),
            repo.list_files(c2, "templates/"),
        )

    first = ask()
    asked_first = len(runs)
    again = ask()
    assert again == first
    assert len(runs) == asked_first, f"asked git again: {runs[asked_first:]}"
    assert first[1] == ChangeSet(added=("definitions/b.yaml",), modified=("definitions/a.yaml",))
    assert sorted(first[3]) == ["definitions/a.yaml", "definitions/b.yaml"]  # type: ignore[call-overload]
    assert list(first[4]) == ["catalog/t.yaml"]  # type: ignore[call-overload]
    assert first[5] == {}
    # Each caller gets its own copy: changing one answer changes no later one.
    repo.list_files(c2, "definitions/").clear()
    assert sorted(repo.list_files(c2, "definitions/")) == ["definitions/a.yaml", "definitions/b.yaml"]


def test_a_commit_gc_dropped_is_gone_although_it_was_read_before(work: Path) -> None:
    c1 = commit_files(work, {"a": "1"}, "1")
    dropped = commit_files(work, {"a": "2"}, "2 (to be dropped)")
    repo = GitRepo(work)
    assert repo.resolve(dropped) == dropped
    assert "a" in repo.list_files(dropped, "")
    git(work, "reset", "-q", "--hard", c1)
    git(work, "reflog", "expire", "--expire=now", "--all")
    git(work, "gc", "-q", "--prune=now")
    assert not repo.has_commit(dropped)
    with pytest.raises(SourceError, match="no such commit"):
        repo.resolve(dropped)
    assert repo.has_commit(c1)


def test_many_files_read_at_once_are_what_each_read_alone_gives(work: Path) -> None:
    """A read of many files goes by their blobs, a read of few by path: the same texts, the
    same absent files (a directory is no file) and the same unreadable ones either way."""
    files: dict[str, str | None] = {f"definitions/d{i:03d}.yaml": f"name: d{i:03d}\n" for i in range(60)}
    sha = commit_files(work, files, "many")
    (work / "definitions" / "latin1.yaml").write_bytes("caf\xe9\n".encode("latin-1"))
    git(work, "add", "-A")
    git(work, "commit", "-q", "-m", "one not UTF-8")
    sha = git(work, "rev-parse", "HEAD").strip()
    asked = [*files, "definitions/latin1.yaml", "definitions/absent.yaml", "definitions", "/definitions/d001.yaml"]

    together = GitRepo(work).read_many(sha, asked)
    alone = {}
    for path in asked:
        alone.update(GitRepo(work).read_many(sha, [path]))

    assert together == alone
    assert len(together) == 62 and together["definitions/d007.yaml"] == "name: d007\n"
    assert isinstance(together["definitions/latin1.yaml"], Unreadable)
    assert "definitions/absent.yaml" not in together and "definitions" not in together


# ---------------------------------------------------------------- writing


def test_write_on_a_bare_repo_then_clone_sees_it(tmp_path: Path) -> None:
    repo = GitRepo.init(tmp_path / "repo.git", bare=True)
    first = repo.write(
        {"definitions/a.yaml": "name: a\n", "deployally.yaml": "branch: main\n"},
        message="Create a",
        expected_head=None,
        **AUTHOR,
    )
    second = repo.write(
        {"definitions/a.yaml": None, "definitions/b.yaml": "name: b\n"},
        message="Replace a with b\n\nvia the API",
        expected_head=first,
        **AUTHOR,
    )
    assert repo.head() == second
    assert repo.first_parent(second) == first
    info = repo.commit_info(second)
    assert (info.author_name, info.author_email, info.summary) == (
        "Ada Ops",
        "ada@example.com",
        "Replace a with b",
    )
    body = git(tmp_path / "repo.git", "log", "-1", "--format=%B", second)
    assert body == "Replace a with b\n\nvia the API"

    git(tmp_path, "clone", "-q", str(tmp_path / "repo.git"), "clone")
    clone = tmp_path / "clone"
    assert (clone / "definitions/b.yaml").read_text() == "name: b\n"
    assert not (clone / "definitions/a.yaml").exists()
    assert (clone / "deployally.yaml").read_text() == "branch: main\n"
    assert git(clone, "rev-parse", "HEAD") == second


def test_write_with_nothing_changed_returns_the_head(tmp_path: Path) -> None:
    repo = GitRepo.init(tmp_path / "repo.git", bare=True)
    head = repo.write({"a.yaml": "a\n"}, message="a", expected_head=None, **AUTHOR)
    again = repo.write(
        {"a.yaml": "a\n", "absent.yaml": None}, message="same", expected_head=head, **AUTHOR
    )
    assert again == head
    assert repo.commits_between(None, repo.head() or "") == [head]


def test_write_with_stale_expected_head_conflicts(tmp_path: Path) -> None:
    repo = GitRepo.init(tmp_path / "repo.git", bare=True)
    first = repo.write({"a.yaml": "1"}, message="1", expected_head=None, **AUTHOR)
    second = repo.write({"a.yaml": "2"}, message="2", expected_head=first, **AUTHOR)
    with pytest.raises(Conflict, match=f"moved from {first} to {second}; retry"):
        repo.write({"a.yaml": "3"}, message="3", expected_head=first, **AUTHOR)
    with pytest.raises(Conflict):
        repo.write({"a.yaml": "3"}, message="3", expected_head=None, **AUTHOR)
    assert repo.head() == second
    assert repo.read(second, "a.yaml") == "2"


def test_concurrent_writes_one_wins_cleanly(tmp_path: Path) -> None:
    repo = GitRepo.init(tmp_path / "repo.git", bare=True)
    base = repo.write({"a.yaml": "0"}, message="0", expected_head=None, **AUTHOR)
    outcomes: list[str] = []

    def attempt(n: int) -> None:
        try:
            outcomes.append(
                repo.write({f"f{n}.yaml": str(n)}, message=str(n), expected_head=base, **AUTHOR)
            )
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in outcomes if o != "conflict"]
    assert len(winners) == 1
    assert repo.head() == winners[0]
    assert repo.first_parent(winners[0]) == base


def test_write_rejects_bad_paths(tmp_path: Path) -> None:
    repo = GitRepo.init(tmp_path / "repo.git", bare=True)
    for bad in ("../escape.yaml", "definitions/../../x", ".git/config", ""):
        with pytest.raises(SourceError, match="not a valid repository path"):
            repo.write({bad: "x"}, message="bad", expected_head=None, **AUTHOR)
    assert repo.head() is None


def test_write_moves_a_clean_working_tree(work: Path) -> None:
    base = commit_files(work, {"definitions/a.yaml": "a\n", "definitions/old.yaml": "o\n"}, "1")
    repo = GitRepo(work)
    new = repo.write(
        {"definitions/b.yaml": "b\n", "definitions/old.yaml": None},
        message="via api",
        expected_head=base,
        **AUTHOR,
    )
    assert git(work, "rev-parse", "HEAD") == new
    assert (work / "definitions/b.yaml").read_text() == "b\n"
    assert not (work / "definitions/old.yaml").exists()
    assert git(work, "status", "--porcelain") == ""


def test_write_leaves_a_dirty_working_tree_alone(work: Path) -> None:
    base = commit_files(work, {"definitions/a.yaml": "a\n"}, "1")
    (work / "definitions/a.yaml").write_text("local edit\n")
    repo = GitRepo(work)
    new = repo.write({"definitions/b.yaml": "b\n"}, message="via api", expected_head=base, **AUTHOR)
    assert repo.head() == new
    assert (work / "definitions/a.yaml").read_text() == "local edit\n"
    assert not (work / "definitions/b.yaml").exists()


def test_write_does_not_touch_another_checked_out_branch(work: Path) -> None:
    commit_files(work, {"a": "1"}, "1")
    git(work, "checkout", "-q", "-b", "feature")
    repo = GitRepo(work, "main")
    main_head = repo.head()
    new = repo.write({"b": "2"}, message="2", expected_head=main_head, **AUTHOR)
    assert git(work, "rev-parse", "main") == new
    assert git(work, "rev-parse", "--abbrev-ref", "HEAD") == "feature"
    assert not (work / "b").exists()


def test_held_lock_is_a_readable_source_error(tmp_path: Path) -> None:
    repo = GitRepo.init(tmp_path / "repo.git", bare=True)
    head = repo.write({"a": "1"}, message="1", expected_head=None, **AUTHOR)
    lock = tmp_path / "repo.git" / "refs" / "heads" / "main.lock"
    lock.write_text("")
    with pytest.raises(SourceError, match="lock"):
        repo.write({"a": "2"}, message="2", expected_head=head, **AUTHOR)
    lock.unlink()
    assert repo.head() == head


# ---------------------------------------------------------------- init and mirrors


def test_init_names_the_branch(tmp_path: Path) -> None:
    repo = GitRepo.init(tmp_path / "r", bare=False, branch="production")
    sha = repo.write({"a": "1"}, message="1", expected_head=None, **AUTHOR)
    assert git(tmp_path / "r", "symbolic-ref", "HEAD") == "refs/heads/production"
    assert repo.head() == sha
    assert (tmp_path / "r" / "a").read_text() == "1"


def test_mirror_and_fetch_see_new_pushes(tmp_path: Path, work: Path) -> None:
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    git(work, "remote", "add", "origin", str(remote))
    c1 = commit_files(work, {"definitions/a.yaml": "a\n"}, "1")
    git(work, "push", "-q", "origin", "main")

    mirror = GitRepo.mirror(str(remote), tmp_path / "state" / "mirror", "main")
    assert mirror.head() == c1
    assert mirror.fetch() is False

    c2 = commit_files(work, {"definitions/b.yaml": "b\n"}, "2")
    git(work, "push", "-q", "origin", "main")
    assert mirror.fetch() is True
    assert mirror.head() == c2
    assert mirror.read(c2, "definitions/b.yaml") == "b\n"

    # Re-opening the state dir reuses it.
    again = GitRepo.mirror(str(remote), tmp_path / "state" / "mirror", "main")
    assert again.head() == c2


def test_mirror_write_pushes_and_a_moved_remote_conflicts(tmp_path: Path, work: Path) -> None:
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    git(work, "remote", "add", "origin", str(remote))
    c1 = commit_files(work, {"a": "1"}, "1")
    git(work, "push", "-q", "origin", "main")
    mirror = GitRepo.mirror(str(remote), tmp_path / "mirror", "main")

    new = mirror.write({"b": "2"}, message="via api", expected_head=c1, **AUTHOR)
    assert git(remote, "rev-parse", "refs/heads/main") == new

    # Someone pushes to the remote; our mirror has not fetched it yet.
    git(work, "pull", "-q", "--ff-only", "origin", "main")
    theirs = commit_files(work, {"c": "3"}, "theirs")
    git(work, "push", "-q", "origin", "main")
    with pytest.raises(Conflict, match="moved on the remote; fetch and retry"):
        mirror.write({"d": "4"}, message="ours", expected_head=new, **AUTHOR)
    assert git(remote, "rev-parse", "refs/heads/main") == theirs
    assert mirror.head() == new
    assert mirror.fetch() is True
    assert mirror.head() == theirs


def test_mirror_of_a_missing_remote_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="fetching .* failed"):
        GitRepo.mirror(str(tmp_path / "no-such-remote"), tmp_path / "mirror", "main")


def test_mirror_of_a_remote_without_the_branch(tmp_path: Path, work: Path) -> None:
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    commit_files(work, {"a": "1"}, "1")
    git(work, "push", "-q", str(remote), "main:master")
    with pytest.raises(SourceError, match="no branch 'main' \\(branches: master\\)"):
        GitRepo.mirror(str(remote), tmp_path / "mirror", "main")


def test_reads_a_quarantined_push_from_a_pre_receive_hook(tmp_path: Path, work: Path) -> None:
    remote = GitRepo.init(tmp_path / "remote.git", bare=True)
    hook = tmp_path / "remote.git" / "hooks" / "pre-receive"
    hook.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "from pathlib import Path\n"
        "from deployally.source import GitRepo\n"
        "old, new, ref = sys.stdin.read().split()\n"
        "text = GitRepo(Path('.')).read(new, 'definitions/a.yaml')\n"
        "print('hook read:', text.strip())\n"
        "sys.exit(1 if 'reject' in text else 0)\n"
    )
    hook.chmod(0o755)
    git(work, "remote", "add", "origin", str(remote.path))
    commit_files(work, {"definitions/a.yaml": "please reject\n"}, "bad")
    rejected = subprocess.run(
        ["git", "push", "origin", "main"], cwd=work, capture_output=True, text=True, check=False
    )
    assert rejected.returncode != 0
    assert "hook read: please reject" in rejected.stderr
    assert remote.head() is None
    good = commit_files(work, {"definitions/a.yaml": "fine\n"}, "good")
    accepted = subprocess.run(
        ["git", "push", "origin", "main"], cwd=work, capture_output=True, text=True, check=False
    )
    assert "hook read: fine" in accepted.stderr
    assert remote.head() == good


def test_credentials_in_urls_are_redacted() -> None:
    from deployally.source.git import redact_url

    text = "fatal: unable to access 'https://bot:t0k3n@git.example.com/r.git/': 403"
    assert redact_url(text) == "fatal: unable to access 'https://***@git.example.com/r.git/': 403"
    assert redact_url("/srv/deploy.git") == "/srv/deploy.git"
