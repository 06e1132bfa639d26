"""min_ready end to end: a real git repository synced to a real Docker engine, min_ready set in
deployally.yaml, in a template and in a definition, the definition's winning."""

from __future__ import annotations

import docker
import pytest

from conftest import DefinitionsRepo
from deployally.sync.reconcile import SyncReport
from deployally.workspace import Workspace

pytestmark = pytest.mark.docker

# A repository template without a healthcheck (so min_ready gates it) that sets its own.
TEMPLATE = """\
name: Patient Command
version: stable
taxonomy: {kingdom: assets, family: tools, species: patient, variant: plain, specimen: stable}
spec:
  image: {repository: busybox, tag: stable}
  profiles: [development, production]
  profile_overrides:
    production: {min_ready: 0.4s}
  command: ["sh", "-c", "exec sleep 2147483647"]
  stop_signal: SIGKILL
  min_ready: 0.3s
"""


def plain(name: str, extra: str = "") -> str:
    return f"name: {name}\ntemplate: tools/busybox/plain/stable\n{extra}"


def patient(name: str, extra: str = "") -> str:
    return f"name: {name}\ntemplate: tools/patient/plain/stable\n{extra}"


def waits(repo: DefinitionsRepo) -> tuple[SyncReport, dict[str, str]]:
    """Sync, and each deployment's min_ready line from its log."""
    ws = Workspace.open(repo.path, health_timeout_s=30)
    try:
        report = ws.engine.sync()
        out = {}
        for d in report.deployments:
            full = ws.store.deployment(d.id)
            assert full is not None
            out[d.definition_name] = next(
                (line.message for line in full.logs if "(min_ready)" in line.message), ""
            )
        return report, out
    finally:
        ws.close()


def test_min_ready_from_each_of_the_three_places_the_definitions_first(
    defs_repo: DefinitionsRepo,
) -> None:
    defs_repo.write("deployally.yaml", f"network: {defs_repo.prefix}net\nmin_ready: 0.2s\n")
    defs_repo.write("catalog/patient.yaml", TEMPLATE)
    names = {k: defs_repo.name(k) for k in ("repo", "template", "profile", "own")}
    defs_repo.write(f"definitions/{names['repo']}.yaml", plain(names["repo"]))
    defs_repo.write(f"definitions/{names['template']}.yaml", patient(names["template"]))
    defs_repo.write(f"definitions/{names['profile']}.yaml",
                    patient(names["profile"], "profile: production\n"))
    defs_repo.write(f"definitions/{names['own']}.yaml", patient(names["own"], "min_ready: 0s\n"))
    defs_repo.commit("Five waits")

    report, said = waits(defs_repo)

    assert {d.definition_name: d.status.value for d in report.deployments} == dict.fromkeys(
        [names["repo"], names["template"], names["profile"], names["own"]], "success"
    )
    assert said == {
        names["repo"]: "waiting 0.2s (min_ready) to see it keeps running",  # deployally.yaml's
        names["template"]: "waiting 0.3s (min_ready) to see it keeps running",  # the template's
        names["profile"]: "waiting 0.4s (min_ready) to see it keeps running",  # its profile's
        names["own"]: "waiting 0s (min_ready) to see it keeps running",  # the definition's
    }


def test_without_any_the_default_is_5s(defs_repo: DefinitionsRepo) -> None:
    defs_repo.write("deployally.yaml", f"network: {defs_repo.prefix}net\n")
    name = defs_repo.name("app")
    defs_repo.write(f"definitions/{name}.yaml", plain(name))
    defs_repo.commit("One with no min_ready anywhere")

    _report, said = waits(defs_repo)

    assert said == {name: "waiting 5s (min_ready) to see it keeps running"}


def test_a_change_of_min_ready_alone_restarts_nothing_and_gates_the_next_rollout(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient
) -> None:
    name = defs_repo.name("app")
    defs_repo.write(f"definitions/{name}.yaml", plain(name, "min_ready: 0s\n"))
    defs_repo.commit("Add app")
    waits(defs_repo)
    before = docker_client.api.inspect_container(name)

    defs_repo.write(f"definitions/{name}.yaml", plain(name, "min_ready: 0.3s\n"))
    defs_repo.write("deployally.yaml", f"network: {defs_repo.prefix}net\nmin_ready: 0.2s\n")
    defs_repo.commit("Wait longer")
    report, _said = waits(defs_repo)

    assert report.deployments == ()  # the plan sees no difference in the running container
    after = docker_client.api.inspect_container(name)
    assert (after["Id"], after["State"]["StartedAt"]) == (before["Id"], before["State"]["StartedAt"])

    defs_repo.write(f"definitions/{name}.yaml",
                    plain(name, "min_ready: 0.3s\nparams: {script: exec sleep 1000000}\n"))
    defs_repo.commit("A new command")
    report, said = waits(defs_repo)
    assert [d.status.value for d in report.deployments] == ["success"]
    assert said == {name: "waiting 0.3s (min_ready) to see it keeps running"}


def test_a_bad_min_ready_is_an_error_of_its_file_and_field(defs_repo: DefinitionsRepo) -> None:
    name = defs_repo.name("app")
    defs_repo.write(f"definitions/{name}.yaml", plain(name, "min_ready: -5s\n"))
    defs_repo.commit("A negative wait")

    report, _said = waits(defs_repo)

    assert report.deployments == ()
    (err,) = report.errors
    assert (err.path, err.field) == (f"definitions/{name}.yaml", "min_ready")
    assert "not negative" in err.message
