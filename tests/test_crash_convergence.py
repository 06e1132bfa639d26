"""The fault test: `serve` killed with SIGKILL at ten moments of a 30-definition create and update.

After each kill the engine is started again and must converge to the truth: one container
per definition running head's rendered spec with the spec's restart policy, no `.old`, no
orphan, no deployment left open, every definition's status true, every volume's data
intact, and a `deployment.*` outcome posted for every `deployment.started`.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from conftest import DefinitionsRepo, ServeProcess, wait_until
from deployally.model import desired
from deployally.source.git import GitRepo
from deployally.source.tree import CommitTree
from deployally.store import Store
from test_webhooks_e2e import Receiver

# Ten trials of 30 definitions: about 6 minutes on an idle 2-core machine (Docker's starts are
# most of it), more on a busy one; each wait below is bounded, so the test ends (and says what
# did not converge) in time.
pytestmark = [pytest.mark.docker, pytest.mark.timeout(1800)]

DEFINITIONS = 30
CONVERGE_S = 180.0  # after a restart, for everything to be true
BUDGET_S = 1600.0  # the whole test: it fails, saying what it saw, before pytest-timeout kills it
# Writes its volume's birth certificate once; an update that lost the volume would write a new one.
SCRIPT = "[ -f /data/born ] || echo \"$MESSAGE\" > /data/born; exec sleep 2147483647"
# The repository's own template: the busybox worker without its 1 s healthcheck. Sixty containers
# each exec'ing a check every second load a 2-core host until checks pass their 2 s timeout and
# fail rollouts for that alone; this test is about crashes, so readiness is the settle wait.
TEMPLATE_PATH = "tools/busybox/keeper/stable"
TEMPLATE = f"""\
name: Busybox Keeper
description: busybox keeping a birth certificate in its /data volume
version: stable
taxonomy: {{kingdom: assets, family: tools, species: busybox, variant: keeper, specimen: stable}}
deprecated: false
spec:
  image: {{repository: busybox, tag: stable}}
  user_inputs:
    message: {{type: string, default: hello}}
  profiles: [minimal, development, production]
  volumes: [{{mount_path: /data}}]
  env:
    MESSAGE: "{{{{ params.message }}}}"
  command: ["sh", "-c", {SCRIPT!r}]
  restart: unless-stopped
  stop_signal: SIGKILL
"""
OUTCOMES = ("deployment.success", "deployment.failed")


@dataclass(frozen=True)
class Moment:
    """When to kill: once `count` deployments of this round have reached `stage`."""

    stage: str  # "started" (running or done) or "finished"
    count: int

    def __str__(self) -> str:
        return f"{self.count} {self.stage}"


# Five moments of a create, five of an update: from the first start to the last few health waits.
MOMENTS = (Moment("started", 1), Moment("finished", 2), Moment("finished", 10),
           Moment("finished", 20), Moment("finished", 28))


def _round_deployments(state: Path, since: int) -> list[str]:
    with Store(state) as store:
        return [d.status.value for d in store.deployments(limit=500)][: max(0, _count(store) - since)]


def _count(store: Store) -> int:
    return store.count_deployments()


def _reached(state: Path, since: int, moment: Moment) -> bool:
    statuses = _round_deployments(state, since)
    if moment.stage == "started":
        return sum(1 for s in statuses if s != "pending") >= moment.count
    return sum(1 for s in statuses if s not in ("pending", "running")) >= moment.count


class Fleet:
    """The definitions of the current round, what head renders for them, and their volumes' data."""

    def __init__(self, repo: DefinitionsRepo, client: docker.DockerClient, state: Path) -> None:
        self.repo = repo
        self.client = client
        self.state = state
        self.names: list[str] = []
        self.born: dict[str, str] = {}  # name -> the birth certificate in its volume

    def write(self, generation: str, message: str) -> None:
        """Definitions of `generation` with this message; the previous generation's files go."""
        for name in self.names:
            if not name.startswith(self.repo.name(generation)):
                self.repo.remove(f"definitions/{name}.yaml")
        self.names = [self.repo.name(f"{generation}{n:02d}") for n in range(DEFINITIONS)]
        for name in self.names:
            self.repo.write(f"definitions/{name}.yaml",
                            f"name: {name}\ntemplate: {TEMPLATE_PATH}\nparams: {{message: {message}}}\n")
        self.born = {n: v for n, v in self.born.items() if n in self.names}

    def problems(self, receiver: Receiver, earlier: set[str]) -> list[str]:
        """Everything that is not yet true; empty once converged. `earlier`: deployments
        of earlier trials, whose webhooks that trial checked."""
        head = self.repo.git("rev-parse", "HEAD").strip()
        specs = desired.load(CommitTree(GitRepo(self.repo.path), head), secret_versions={}).specs()
        out: list[str] = []
        with Store(self.state) as store:
            owner = store.get_meta("engine_id")
            open_ = [f"{d.definition_name} {d.status.value}"
                     for status in ("pending", "running")
                     for d in store.deployments(status=status, limit=500)]
            records = {r.name: r for r in store.definitions()}
        if open_:
            out.append(f"deployments left open: {open_}")
        mine = self.client.api.containers(all=True, filters={"label": f"com.deployally.owner={owner}"})
        named = self.client.api.containers(all=True, filters={"name": self.repo.prefix})
        by_name: dict[str, list[dict[str, Any]]] = {}
        for row in mine + [r for r in named if r["Id"] not in {m["Id"] for m in mine}]:
            by_name.setdefault(row["Names"][0].lstrip("/"), []).append(row)
        extra = sorted(set(by_name) - set(self.names))
        if extra:
            out.append(f"containers that should not exist (.old or orphans): {extra}")
        running: dict[str, str] = {}  # name -> container id, for those that look right
        for name in self.names:
            rows = by_name.get(name, [])
            spec = specs[name]
            record = records.get(name)
            if record is None or record.status.value != "active" or record.applied_hash != spec.rendered_hash:
                out.append(f"{name}: definition is {record.status.value if record else 'missing'}"
                           + (_why(self.state, record.id) if record else ""))
            if len(rows) != 1:
                out.append(f"{name}: {len(rows)} containers")
            elif rows[0]["State"] != "running":
                out.append(f"{name}: container {rows[0]['State']}")
            elif rows[0]["Labels"].get("com.deployally.rendered-hash") != spec.rendered_hash:
                out.append(f"{name}: not head's rendered hash")
            else:
                running[name] = rows[0]["Id"]
        if not out:  # what only an inspect and an exec tell, once the rest holds (they cost Docker)
            out += self._settings_and_data(running, specs)
        started = {e["data"]["deployment_id"] for e in receiver.delivered()
                   if e["event"] == "deployment.started"} - earlier
        ended = {e["data"]["deployment_id"] for e in receiver.delivered() if e["event"] in OUTCOMES}
        if started - ended:
            out.append(f"{len(started - ended)} deployment.started without an outcome")
        return out

    def _settings_and_data(self, running: dict[str, str], specs: dict[str, Any]) -> list[str]:
        """Each container's restart policy against its spec, and its volume's birth certificate."""
        out: list[str] = []
        api = self.client.api
        for name, container in running.items():
            spec = specs[name]
            try:
                info = api.inspect_container(container)
                run = api.exec_create(container, ["cat", "/data/born"])
                born = api.exec_start(run["Id"])
            except docker.errors.APIError as exc:  # it stopped or went since the list call
                out.append(f"{name}: cannot look at its container: {exc.explanation}")
                continue
            policy = info["HostConfig"]["RestartPolicy"]["Name"] or "no"
            if policy != spec.restart:
                out.append(f"{name}: restart policy {policy!r}, spec says {spec.restart!r}")
            text = born.decode().strip()
            if self.born.setdefault(name, text) != text:
                out.append(f"{name}: volume data changed: {self.born[name]!r} -> {text!r}")
        return out



def test_sigkill_at_ten_moments_of_a_create_and_an_update_converges_every_time(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    # The receiver is on loopback, where webhooks go only when the operator allows it.
    (state / "engine.yaml").write_text("webhooks:\n  allow: [loopback]\n")
    defs_repo.write("catalog/tools/keeper.yaml", TEMPLATE)
    # The kills land in readiness waits as long as a deployment's: not the fixture's 0s.
    defs_repo.write("deployally.yaml", f"network: {defs_repo.prefix}net\nhealth_timeout: 30s\nmin_ready: 2s\n")
    receiver = Receiver()
    with Store(state) as store:
        store.add_webhook(receiver.url, ["deployment.started", *OUTCOMES], "fault-secret")
    env = {"DEPLOYALLY_WEBHOOK_BACKOFF": "0.2"}
    fleet = Fleet(defs_repo, docker_client, state)
    trials: list[tuple[str, list[str]]] = []
    engine = ServeProcess(defs_repo.path, state, env=env)
    budget_end = time.monotonic() + BUDGET_S
    try:
        for round_, moment in enumerate(MOMENTS):
            for kind, change in (("create", lambda r=round_: fleet.write(f"g{r}", f"c{r}")),
                                 ("update", lambda r=round_: fleet.write(f"g{r}", f"u{r}"))):
                trial = f"{kind} killed at {moment}"
                if time.monotonic() > budget_end:
                    trials.append((trial, [f"not run: the test's {BUDGET_S:.0f} s were spent"]))
                    continue
                earlier = _deployment_ids(state)
                began = time.monotonic()
                engine = _kill_and_restart(engine, fleet, change, moment, trial, env)
                problems = _converge(fleet, receiver, earlier, budget_end)
                trials.append((trial, problems))
                outcome = "converged" if not problems else problems
                print(f"{trial}: {outcome} ({time.monotonic() - began:.0f} s)", flush=True)
    finally:
        engine.stop()
        receiver.close()
    failed = [f"{trial}: {'; '.join(p[:4])}" for trial, p in trials if p]
    converged = len(trials) - len(failed)
    assert not failed, f"converged {converged}/{len(trials)}:\n" + "\n".join(failed)


def _kill_and_restart(
    engine: ServeProcess,
    fleet: Fleet,
    change: Callable[[], None],
    moment: Moment,
    trial: str,
    env: dict[str, str],
) -> ServeProcess:
    with Store(fleet.state) as store:
        since = _count(store)
    began = time.monotonic()
    change()
    fleet.repo.commit(trial)
    wait_until(lambda: _reached(fleet.state, since, moment), 120, f"{trial}: the moment to kill",
               interval=0.2)
    engine.stop(signal.SIGKILL)
    killed = time.monotonic()
    restarted = ServeProcess(fleet.repo.path, fleet.state, env=env)
    print(f"{trial}: killed {killed - began:.1f} s after the commit, "
          f"serving again {time.monotonic() - killed:.1f} s later", flush=True)
    return restarted


def _why(state: Path, definition_id: str) -> str:
    """The last log lines of the definition's newest deployment, to say why it is not active."""
    with Store(state) as store:
        newest = store.deployments(definition_id=definition_id, limit=1)
        if not newest:
            return ""
        dep = store.deployment(newest[0].id)
    lines = [line.message for line in dep.logs[-3:]] if dep else []
    return f" ({newest[0].status.value}: {' | '.join(lines)})"


def _deployment_ids(state: Path) -> set[str]:
    with Store(state) as store:
        return {d.id for d in store.deployments(limit=100_000)}


def _converge(fleet: Fleet, receiver: Receiver, earlier: set[str], budget_end: float) -> list[str]:
    """Wait until nothing is wrong; the problems still there at the deadline."""
    deadline = min(time.monotonic() + CONVERGE_S, budget_end)
    problems = fleet.problems(receiver, earlier)
    while problems and time.monotonic() < deadline:
        time.sleep(1.0)
        problems = fleet.problems(receiver, earlier)
    return problems
