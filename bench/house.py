"""The shape of the package at a commit: top-level modules, the deepest import chain, the largest module.

    python bench/house.py                 # the checkout's HEAD
    python bench/house.py --rev 4830665^  # any commit, read from git (nothing is checked out)

An import chain is a path a -> b -> c where each module imports the next at import time
(module level, outside `if TYPE_CHECKING:`; relative imports resolved), counted in modules.
Imports inside functions are counted separately, as the deepest chain with them too.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = "engine/deployally"


def sources(rev: str) -> tuple[dict[str, str], set[str]]:
    """Module name -> source text of every .py file of the package at `rev`, and which are packages."""
    names = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", rev, PACKAGE_DIR + "/"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()
    out = {}
    packages = set()
    for path in names:
        if not path.endswith(".py"):
            continue
        text = subprocess.run(
            ["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        parts = ["deployally", *Path(path).relative_to(PACKAGE_DIR).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
            packages.add(".".join(parts))
        out[".".join(parts)] = text
    return out, packages


def _imports(module: str, tree: ast.Module, is_package: bool, modules: set[str], *, lazy: bool) -> Iterator[str]:
    """The package's modules that `module` imports (at module level, or anywhere when `lazy`)."""

    def walk(nodes: list[ast.stmt], top: bool) -> Iterator[ast.stmt]:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            yield node
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if lazy:
                    yield from walk(node.body, False)
            elif hasattr(node, "body"):
                for field in ("body", "orelse", "finalbody", "handlers"):
                    yield from walk(list(getattr(node, field, []) or []), top)

    base = module if is_package else module.rpartition(".")[0]
    for node in walk(tree.body, True):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules:
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in modules:
                    yield sub
                elif target in modules:
                    yield target


def graph(texts: Mapping[str, str], packages: set[str], *, lazy: bool) -> dict[str, set[str]]:
    """module -> the package modules it imports."""
    modules = set(texts)
    out: dict[str, set[str]] = {}
    for name, text in texts.items():
        tree = ast.parse(text)
        out[name] = set(_imports(name, tree, name in packages, modules, lazy=lazy)) - {name}
    return out


def deepest_chain(edges: Mapping[str, set[str]]) -> tuple[list[str], bool]:
    """The longest import chain, and whether the graph has a cycle (then chains stop at it)."""
    best: dict[str, list[str]] = {}
    on_path: set[str] = set()
    cyclic = False

    def longest(node: str) -> list[str]:
        nonlocal cyclic
        if node in best:
            return best[node]
        on_path.add(node)
        chain = [node]
        for nxt in sorted(edges.get(node, ())):
            if nxt in on_path:
                cyclic = True
                continue
            candidate = [node, *longest(nxt)]
            if len(candidate) > len(chain):
                chain = candidate
        on_path.discard(node)
        best[node] = chain
        return chain

    chains = [longest(n) for n in sorted(edges)]
    return max(chains, key=len), cyclic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="HEAD", help="the commit to measure (default HEAD)")
    args = parser.parse_args()
    texts, packages = sources(args.rev)
    top = sorted(m for m in texts if m.count(".") == 1 and m not in packages)
    lines = {m: len(t.splitlines()) for m, t in texts.items()}
    largest = max(lines, key=lambda m: lines[m])
    print(f"revision {args.rev}: {len(texts)} modules, {len(packages) - 1} sub-packages")
    print(f"top-level modules: {len(top)} ({', '.join(m.split('.')[-1] for m in top)})")
    print(f"largest module: {largest} ({lines[largest]} lines)")
    for lazy, what in ((False, "at import time"), (True, "with imports inside functions")):
        chain, cyclic = deepest_chain(graph(texts, packages, lazy=lazy))
        note = " (the graph has a cycle)" if cyclic else ""
        print(f"deepest import chain {what}: {len(chain)} modules{note}")
        print("  " + " -> ".join(m.removeprefix("deployally.") for m in chain))


if __name__ == "__main__":
    main()
