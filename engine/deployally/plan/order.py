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
    waves: list[list[Action]] = []
    done: set[str] = set()
    while len(done) < len(by_name):
        ready = sorted(n for n in by_name if n not in done and needs[n] <= done)
        if not ready:
            raise _cycle_error({n: needs[n] - done for n in by_name if n not in done})
        waves.append([by_name[n] for n in ready])
        done.update(ready)
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
