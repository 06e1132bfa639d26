"""How long validating a repository takes: `deployally validate` and the in-process load.

    python bench/validate_scale.py --definitions 100 [--repo-template]

Makes a git repository of N definitions on the busybox worker template (each renders a
few strings; with --repo-template, on a copy of it kept in the repository's catalog/, so
every render runs in the budgeted worker as a repository template must), then times `deployally validate --rev HEAD` as a user or a pre-receive hook
runs it (a new process each time), and the engine's in-process validate-and-render of the
whole tree: the first load (which starts the render worker) and warm ones. Prints medians.
No Docker needed; everything lives in a temporary directory.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.resources import files
from pathlib import Path

from deployally.model import desired
from deployally.source.git import GitRepo
from deployally.source.tree import CommitTree
from deployally.types import SecretVersions


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", *args],
                   cwd=repo, check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--definitions", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--repo-template", action="store_true",
                        help="use a repository template (rendered in the worker)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        (repo / "definitions").mkdir(parents=True)
        git(repo, "init", "-q", "-b", "main")
        template = "tools/busybox/worker/stable"
        if args.repo_template:
            template = "tools/busybox/worker/bench"
            builtin = files("deployally.data").joinpath("catalog/tools/busybox-worker.yaml")
            (repo / "catalog").mkdir()
            (repo / "catalog" / "bench-worker.yaml").write_text(
                builtin.read_text().replace("specimen: stable", "specimen: bench")
            )
        for i in range(args.definitions):
            name = f"bench{i:04d}"
            (repo / "definitions" / f"{name}.yaml").write_text(
                f"name: {name}\ntemplate: {template}\n"
                f"params: {{message: 'hello {i}', script: 'echo {i}; exec sleep 2147483647'}}\n"
            )
        git(repo, "add", "-A")
        git(repo, "commit", "-qm", "many definitions")

        cli = []
        for _ in range(args.runs):
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-m", "deployally", "validate", "--repo", str(repo),
                            "--rev", "HEAD"], check=False, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"validate failed: {done.stderr}")
            cli.append(time.perf_counter() - started)
        print(f"deployally validate, {args.definitions} definitions (new process): "
              f"{statistics.median(cli):.2f} s median of {args.runs}")

        tree = CommitTree(GitRepo(repo), "HEAD")
        first = load(tree, args.definitions)
        print(f"in-process load and render, first (starts the worker): {first:.3f} s")
        budget = getattr(desired, "render_budget", None)
        if budget is None:  # a version without the render budget: renders in-process
            warm = [load(tree, args.definitions) for _ in range(args.runs)]
            print(f"in-process load and render, warm: {statistics.median(warm):.3f} s")
            return
        # Interleaved, so a busy machine weighs on both alike.
        bounded, direct = [], []
        for _ in range(args.runs):
            bounded.append(load(tree, args.definitions))
            direct.append(load(tree, args.definitions, in_process=True))
        for label, times in (("through the render budget", bounded), ("in-process, unbounded", direct)):
            median = statistics.median(times)
            print(f"load and render {label}: {median:.3f} s median of {args.runs} "
                  f"({median / args.definitions * 1000:.2f} ms a definition)")


def load(tree: CommitTree, expected: int, *, in_process: bool = False) -> float:
    """Seconds to validate and render the whole tree once."""
    budget = getattr(desired, "render_budget", None)
    if in_process and budget is not None:
        from deployally.model.render import render

        worker = budget.shared().render
        budget.shared().render = render  # type: ignore[method-assign]
    started = time.perf_counter()
    try:
        state = desired.load(tree, secret_versions=SecretVersions.unchecked())
    finally:
        if in_process and budget is not None:
            budget.shared().render = worker  # type: ignore[method-assign]
    elapsed = time.perf_counter() - started
    assert len(state.ok) == expected, state.all_errors()[:3]
    return elapsed


if __name__ == "__main__":
    main()
