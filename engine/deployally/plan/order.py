"""The order actions go out in: dependency waves, and the cycle that makes one impossible.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from deployally.errors import ValidationError
from deployally.types import Action, ActionKind


def order(actions: Iterable[Action]) -> list[list[Action]]:
    """Waves to apply in turn: each definition after those it depends on in the same plan.

    Removes go in the first wave. A dependency cycle raises ValidationError naming it.
    """
    by_name = {a.name: a for a in actions}
    needs = {
        name: {d for d in a.desired.depends_on if d in by_name and d != name}
        if a.desired is not None and a.kind is not ActionKind.REMOVE
        else set()
        for name, a in by_name.items()
    }
    # Each wave once its dependencies' waves are out, counting down what each still waits
    # for: linear in actions and edges (looking at every action for every wave was quadratic
    # along a long depends_on chain).
    waiting = {name: len(deps) for name, deps in needs.items()}
    dependents: dict[str, list[str]] = {name: [] for name in by_name}
    for name, deps in needs.items():
        for dep in deps:
            dependents[dep].append(name)
    waves: list[list[Action]] = []
    done: set[str] = set()
    ready = sorted(n for n, count in waiting.items() if count == 0)
    while ready:
        waves.append([by_name[n] for n in ready])
        done.update(ready)
        after = []
        for name in ready:
            for dependent in dependents[name]:
                waiting[dependent] -= 1
                if waiting[dependent] == 0:
                    after.append(dependent)
        ready = sorted(after)
    if len(done) < len(by_name):
        raise _cycle_error({n: needs[n] - done for n in by_name if n not in done})
    return waves


def _cycle_error(needs: Mapping[str, set[str]]) -> ValidationError:
    # Every remaining node waits on another remaining one: walk until a name repeats.
    start = min(needs)
    path = [start]
    while True:
        step = min(needs[path[-1]])
        if step in path:
            cycle = [*path[path.index(step) :], step]
            break
        path.append(step)
    return ValidationError(
        f"definitions/{cycle[0]}.yaml",
        "depends_on",
        f"dependency cycle: {' -> '.join(cycle)}; remove one of these depends_on entries",
    )
