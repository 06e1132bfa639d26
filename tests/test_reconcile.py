"""End to end: a real git repository of definitions synced to a real Docker engine."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import docker
import pytest
from click.testing import CliRunner

from conftest import DefinitionsRepo
from deployally.cli import main
from deployally.model.render import rendered_hash
from deployally.secrets import placeholder
from deployally.sync.reconcile import SyncReport
from deployally.types import DeploymentStatus, ReasonKind
from deployally.workspace import Workspace

pytestmark = pytest.mark.docker


def sync(repo: DefinitionsRepo) -> SyncReport:
    ws = Workspace.open(repo.path, health_timeout_s=30)
    try:
        return ws.engine.sync()
    finally:
        ws.close()


def container(client: docker.DockerClient, name: str) -> Any:
    return client.containers.get(name)


def run_in(client: docker.DockerClient, name: str, cmd: str) -> str:
    result = container(client, name).exec_run(["sh", "-c", cmd])
    assert result.exit_code == 0, result.output
    return str(result.output.decode())


def statuses(report: SyncReport) -> dict[str, str]:
    return {d.definition_name: d.status.value for d in report.deployments}


def test_create_runs_every_definition_with_labels_volume_and_network(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient
) -> None:
    a = defs_repo.worker("a", message="hello")
    b = defs_repo.worker("b", _extra=f"depends_on: [{a}]\n",
                         health=f"ping -c1 -W1 {a} >/dev/null")
    head = defs_repo.commit("Add a and b")

    report = sync(defs_repo)

    assert statuses(report) == {a: "success", b: "success"}
    c = container(docker_client, a)
    labels = c.labels
    assert c.status == "running"
    assert labels["com.deployally.managed"] == "true"
    assert labels["com.deployally.revision"] == "1"
    assert labels["com.deployally.commit"] == head
    assert labels["com.deployally.rendered-hash"].startswith("sha256:")
    assert "MESSAGE=hello" in c.attrs["Config"]["Env"]
    assert c.attrs["HostConfig"]["PortBindings"] in (None, {})
    mounts = {m["Destination"]: m for m in c.attrs["Mounts"]}
    assert mounts["/data"]["Name"] == f"{a}_data"
    # b reached a by name on the shared network, which is how it became healthy.
    assert container(docker_client, b).attrs["State"]["Health"]["Status"] == "healthy"
    # depends_on: b was applied after a was healthy.
    order = [d.definition_name for d in sorted(report.deployments, key=lambda d: d.finished_at)]
    assert order == [a, b]


def test_update_replaces_container_and_keeps_volume_data(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient
) -> None:
    name = defs_repo.worker("db", message="v1")
    defs_repo.commit("Add db")
    sync(defs_repo)
    old_id = container(docker_client, name).id
    run_in(docker_client, name, "echo precious > /data/keep.txt")

    defs_repo.worker("db", message="v2")
    defs_repo.commit("Bump db message")
    report = sync(defs_repo)

    assert statuses(report) == {name: "success"}
    new = container(docker_client, name)
    assert new.id != old_id
    assert "MESSAGE=v2" in new.attrs["Config"]["Env"]
    assert new.labels["com.deployally.revision"] == "2"
    assert run_in(docker_client, name, "cat /data/keep.txt").strip() == "precious"
    deployment = report.deployments[0]
    assert deployment.reason.kind is ReasonKind.DEFINITION
    assert "changed in" in deployment.reason.summary
    assert [c.field for c in deployment.reason.changes] == ["env.MESSAGE"]


def test_failing_update_rolls_back_to_the_old_container(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient
) -> None:
    name = defs_repo.worker("svc", message="good")
    defs_repo.commit("Add svc")
    sync(defs_repo)
    old = container(docker_client, name)
    run_in(docker_client, name, "echo still-here > /data/mark")

    defs_repo.worker("svc", message="bad", script="echo broken; exit 3")
    defs_repo.commit("Break svc")
    ws = Workspace.open(defs_repo.path, health_timeout_s=30)
    report = ws.engine.sync()

    assert statuses(report) == {name: "rolled_back"}
    back = container(docker_client, name)
    assert back.id == old.id and back.status == "running"
    assert "MESSAGE=good" in back.attrs["Config"]["Env"]
    assert run_in(docker_client, name, "cat /data/mark").strip() == "still-here"
    record = ws.store.definition(name)
    assert record is not None and record.status.value == "failed"
    logs = ws.store.deployment(report.deployments[0].id)
    assert logs is not None
    text = "\n".join(line.message for line in logs.logs)
    assert "broken" in text  # the failing container's own output is kept
    ws.close()


def test_removed_file_removes_container_and_keeps_volume(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient
) -> None:
    keep = defs_repo.worker("keep")
    gone = defs_repo.worker("gone")
    defs_repo.commit("Add two")
    sync(defs_repo)

    defs_repo.remove(f"definitions/{gone}.yaml")
    defs_repo.commit("Remove one")
    report = sync(defs_repo)

    assert statuses(report) == {gone: "success"}
    assert report.deployments[0].reason.kind is ReasonKind.REMOVED
    with pytest.raises(docker.errors.NotFound):
        container(docker_client, gone)
    assert container(docker_client, keep).status == "running"
    assert docker_client.volumes.get(f"{gone}_data") is not None  # data is never lost by a deploy


BAD_INPUTS = {
    "broken_yaml": ("name: {n}\ntemplate: [unclosed\n", "invalid YAML"),
    "schema": ("name: {n}\ntemplate: tools/busybox/worker/stable\nflavour: spicy\n", "flavour"),
    "unknown_template": ("name: {n}\ntemplate: database/nosuch/x/1\n", "template"),
    "missing_required": (
        (
            "name: {n}\ntemplate: database/mysql/standard/8.4\n"
            "params: {{root_password: {{secret: r}}}}\n"
        ),
        "params.database_name",
    ),
    "wrong_type": ("name: {n}\ntemplate: tools/busybox/worker/stable\nparams: {{message: [1, 2]}}\n",
                   "params.message"),
    "jinja_error": (
        (
            "name: {n}\ntemplate: tools/busybox/worker/stable\n"
            "params: {{message: ok}}\nfiles: [{{path: /etc/x, content: '{{{{ nope.missing }}}}'}}]\n"
        ),
        "files",
    ),
    "path_trick": (
        (
            "name: {n}\ntemplate: tools/busybox/worker/stable\n"
            "files: [{{path: /etc/x, source: ../../etc/passwd}}]\n"
        ),
        "source",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_names_file_and_field_and_touches_nothing_running(
    case: str, defs_repo: DefinitionsRepo, docker_client: docker.DockerClient
) -> None:
    victim = defs_repo.worker("victim", message="original")
    defs_repo.commit("Add victim")
    sync(defs_repo)
    before = container(docker_client, victim)

    text, field = BAD_INPUTS[case]
    defs_repo.write(f"definitions/{victim}.yaml", text.format(n=victim))
    fresh = defs_repo.worker("fresh")  # a good definition in the same commit
    defs_repo.commit(f"Break victim ({case})")
    report = sync(defs_repo)

    assert statuses(report) == {fresh: "success"}
    assert report.errors, "the bad file must be reported"
    messages = [str(e) for e in report.errors]
    assert any(f"definitions/{victim}.yaml" in m and field in m for m in messages), messages
    after = container(docker_client, victim)
    assert after.id == before.id and after.status == "running"
    assert "MESSAGE=original" in after.attrs["Config"]["Env"]


def test_unsafe_name_and_duplicate_names_are_refused(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient
) -> None:
    one = defs_repo.worker("one")
    defs_repo.write("definitions/evil.yaml", "name: ../../evil\ntemplate: tools/busybox/worker/stable\n")
    defs_repo.write("definitions/copy.yaml", f"name: {one}\ntemplate: tools/busybox/plain/stable\n")
    defs_repo.commit("Add bad names")

    report = sync(defs_repo)

    messages = "\n".join(str(e) for e in report.errors)
    assert "definitions/evil.yaml" in messages and "name" in messages
    assert "definitions/copy.yaml" in messages and one in messages
    assert docker_client.containers.list(all=True, filters={"name": "evil"}) == []


def test_revisions_count_commits_that_change_the_desired_state(defs_repo: DefinitionsRepo) -> None:
    name = defs_repo.worker("rev", message="1")
    defs_repo.commit("r1")
    defs_repo.worker("rev", message="2")
    defs_repo.commit("r2")
    defs_repo.write("README.md", "unrelated\n")
    defs_repo.commit("not a revision of rev")
    defs_repo.worker("rev", message="3")
    third = defs_repo.commit("r3")

    report = sync(defs_repo)  # three revisions in one catch-up sync

    assert statuses(report) == {name: "success"}
    ws = Workspace.open(defs_repo.path)
    record = ws.store.definition(name)
    assert record is not None and record.current_revision == 3
    revisions = ws.store.revisions(record.id)
    assert [r.number for r in revisions] == [1, 2, 3]
    assert revisions[-1].commit == third
    ws.close()


def test_secret_reaches_the_container_but_no_label_log_or_git(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient
) -> None:
    name = defs_repo.name("sec")
    defs_repo.write(
        f"definitions/{name}.yaml",
        f"name: {name}\ntemplate: tools/busybox/worker/stable\n"
        "params:\n  message: {secret: greeting}\n",
    )
    defs_repo.commit("Add sec")
    runner = CliRunner()
    result = runner.invoke(main, ["secret", "set", "greeting", "--repo", str(defs_repo.path)],
                           input="s3cr3t-value\n")
    assert result.exit_code == 0, result.output

    report = sync(defs_repo)

    assert statuses(report) == {name: "success"}
    c = container(docker_client, name)
    assert "MESSAGE=s3cr3t-value" in c.attrs["Config"]["Env"]
    assert "s3cr3t-value" not in json.dumps(c.labels)
    assert "s3cr3t-value" not in defs_repo.git("log", "-p", "--all")
    shown = runner.invoke(main, ["deployments", "show", report.deployments[0].id,
                                 "--repo", str(defs_repo.path), "--json"])
    assert shown.exit_code == 0 and "s3cr3t-value" not in shown.output

    # A new secret version redeploys, with the reason saying so.
    runner.invoke(main, ["secret", "set", "greeting", "--repo", str(defs_repo.path)], input="other\n")
    report = sync(defs_repo)
    assert statuses(report) == {name: "success"}
    assert report.deployments[0].reason.kind is ReasonKind.SECRET
    assert "MESSAGE=other" in container(docker_client, name).attrs["Config"]["Env"]


def test_config_file_change_redeploys_exactly_its_users(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient
) -> None:
    defs_repo.write("config/motd.txt", "hello from {{ definition.name }}\n")
    user = defs_repo.worker("user", _extra="files: [{path: /etc/motd, source: config/motd.txt}]\n")
    other = defs_repo.worker("other")
    defs_repo.commit("Add user and other")
    sync(defs_repo)
    assert run_in(docker_client, user, "cat /etc/motd") == f"hello from {user}\n"

    defs_repo.write("config/motd.txt", "changed\n")
    defs_repo.commit("Change motd")
    report = sync(defs_repo)

    assert statuses(report) == {user: "success"}
    assert report.deployments[0].reason.kind is ReasonKind.CONFIG_FILE
    assert run_in(docker_client, user, "cat /etc/motd") == "changed\n"
    assert container(docker_client, other).labels["com.deployally.revision"] == "1"
    assert run_in(docker_client, user, "touch /etc/motd 2>&1 || echo read-only").strip().endswith("read-only")


def test_one_failing_definition_never_blocks_the_others(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient
) -> None:
    bad = defs_repo.worker("bad", script="exit 1")
    good = [defs_repo.worker(f"g{i}") for i in range(3)]
    defs_repo.commit("Mixed")

    report = sync(defs_repo)

    result = statuses(report)
    assert result[bad] == "failed"
    assert all(result[g] == "success" for g in good)
    with pytest.raises(docker.errors.NotFound):
        container(docker_client, bad)  # a failed create leaves no half-made container


def test_out_of_band_changes_are_healed(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient
) -> None:
    name = defs_repo.worker("heal")
    defs_repo.commit("Add heal")
    sync(defs_repo)

    container(docker_client, name).remove(force=True)
    report = sync(defs_repo)
    assert statuses(report) == {name: "success"}
    assert report.deployments[0].reason.kind is ReasonKind.DRIFT
    assert container(docker_client, name).status == "running"

    container(docker_client, name).stop(timeout=1)
    report = sync(defs_repo)
    assert statuses(report) == {name: "success"}
    assert container(docker_client, name).status == "running"


def test_plan_cli_between_revisions_and_against_live(defs_repo: DefinitionsRepo) -> None:
    name = defs_repo.worker("p", message="one")
    base = defs_repo.commit("p1")
    defs_repo.worker("p", message="two")
    added = defs_repo.worker("q")
    head = defs_repo.commit("p2")
    runner = CliRunner()
    repo = str(defs_repo.path)

    text = runner.invoke(main, ["plan", "--repo", repo, "--base", base, "--head", head])
    assert text.exit_code == 0, text.output
    assert "~ update" in text.output and name in text.output
    assert 'env.MESSAGE: "one" -> "two"' in text.output
    assert "+ create" in text.output and added in text.output

    md = runner.invoke(main, ["plan", "--repo", repo, "--base", base, "--head", head,
                              "--format", "markdown"])
    assert md.exit_code == 0 and "```diff" in md.output

    js = runner.invoke(main, ["plan", "--repo", repo, "--base", base, "--head", head,
                              "--format", "json"])
    data = json.loads(js.output)
    kinds = {a["name"]: a["kind"] for a in data["actions"]}
    assert kinds == {name: "update", added: "create"}

    live = runner.invoke(main, ["plan", "--repo", repo, "--format", "json"])
    kinds = {a["name"]: a["kind"] for a in json.loads(live.output)["actions"]}
    assert kinds[name] == "create" and kinds[added] == "create"
    sync(defs_repo)
    live = runner.invoke(main, ["plan", "--repo", repo, "--format", "json"])
    kinds = {a["name"]: a["kind"] for a in json.loads(live.output)["actions"]}
    assert kinds[name] == "unchanged" and kinds[added] == "unchanged"


def test_validate_cli_exit_codes(defs_repo: DefinitionsRepo) -> None:
    runner = CliRunner()
    defs_repo.worker("v")
    defs_repo.commit("ok")
    ok = runner.invoke(main, ["validate", "--repo", str(defs_repo.path)])
    assert ok.exit_code == 0, ok.output
    defs_repo.write("definitions/broken.yaml", "name: broken\ntemplate: nope/nope/nope/1\n")
    bad = runner.invoke(main, ["validate", "--repo", str(defs_repo.path)])
    assert bad.exit_code == 1
    assert "definitions/broken.yaml" in bad.output and "template" in bad.output
    at_head = runner.invoke(main, ["validate", "--repo", str(defs_repo.path), "--rev", "HEAD"])
    assert at_head.exit_code == 0  # the broken file is not committed


def test_validate_checks_servers_only_where_a_store_knows_them(
    defs_repo: DefinitionsRepo, tmp_path: Path
) -> None:
    runner = CliRunner()
    name = defs_repo.worker("far", _extra="server: mars\n")
    defs_repo.commit("far away")
    repo = str(defs_repo.path)
    # A checkout in CI: no store, so no server list; the check is skipped, and said so.
    ci = runner.invoke(main, ["validate", "--repo", repo])
    assert ci.exit_code == 0, ci.output
    assert "servers not checked" in ci.stderr
    assert json.loads(runner.invoke(main, ["validate", "--repo", repo, "--json"]).stdout)[
        "servers_checked"
    ] is False
    assert not (defs_repo.path / ".deployally").exists()  # validate made no store
    # Beside the engine's store: `mars` is not registered there.
    state = tmp_path / "state"
    Workspace.open(defs_repo.path, state).store.close()
    there = runner.invoke(main, ["validate", "--repo", repo, "--state-dir", str(state)])
    assert there.exit_code == 1
    assert f"definitions/{name}.yaml" in there.output and "server" in there.output
    assert "no server `mars`" in there.output and "local" in there.output
    ws = Workspace.open(defs_repo.path, state)
    ws.store.add_server("mars", "staging", "")
    ws.close()
    assert runner.invoke(main, ["validate", "--repo", repo, "--state-dir", str(state)]).exit_code == 0


def test_a_definition_on_an_unknown_server_is_refused_until_the_server_is_registered(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient
) -> None:
    near = defs_repo.worker("near")
    far = defs_repo.worker("far", _extra="server: mars\n")
    defs_repo.commit("near and far")
    report = sync(defs_repo)
    assert statuses(report) == {near: "success"}  # the good one beside it deploys
    [error] = [e for e in report.errors if e.path == f"definitions/{far}.yaml"]
    assert error.field == "server" and "`mars`" in error.message
    ws = Workspace.open(defs_repo.path)
    try:
        record = ws.store.definition(far)
        assert record is not None and record.status.value == "invalid"
        assert record.last_error and "mars" in record.last_error
        ws.store.add_server("mars", "staging", "")
    finally:
        ws.close()
    report = sync(defs_repo)  # no new commit: the invalid file is read again
    assert not [e for e in report.errors if e.path == f"definitions/{far}.yaml"]
    ws = Workspace.open(defs_repo.path)
    try:
        record = ws.store.definition(far)
        assert record is not None and record.status.value != "invalid"
        assert record.desired is not None and record.server_id == "mars"
    finally:
        ws.close()
    # It runs where mars's agent pulls it, never on this host.
    assert docker_client.containers.list(all=True, filters={"name": f"^/{far}$"}) == []


def test_rollback_commits_a_past_revision_back(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient
) -> None:
    name = defs_repo.worker("rb", message="first")
    defs_repo.commit("rb1")
    sync(defs_repo)
    defs_repo.worker("rb", message="second")
    defs_repo.commit("rb2")
    sync(defs_repo)

    result = CliRunner().invoke(main, ["rollback", name, "--to", "1", "--repo", str(defs_repo.path)])
    assert result.exit_code == 0, result.output
    report = sync(defs_repo)

    assert statuses(report) == {name: "success"}
    assert report.deployments[0].reason.kind is ReasonKind.ROLLBACK
    c = container(docker_client, name)
    assert "MESSAGE=first" in c.attrs["Config"]["Env"]
    assert c.labels["com.deployally.revision"] == "3"
    assert "Roll back" in defs_repo.git("log", "-1", "--format=%s")


def test_second_sync_with_no_change_does_nothing(defs_repo: DefinitionsRepo) -> None:
    defs_repo.worker("idle")
    defs_repo.commit("idle")
    first = sync(defs_repo)
    assert len(first.deployments) == 1
    again = sync(defs_repo)
    assert again.deployments == () and again.unchanged == 1
    assert again.ok


def test_deployment_records_reason_and_log(defs_repo: DefinitionsRepo) -> None:
    name = defs_repo.worker("rec")
    head = defs_repo.commit("Add rec")
    report = sync(defs_repo)
    ws = Workspace.open(defs_repo.path)
    d = ws.store.deployment(report.deployments[0].id)
    assert d is not None
    assert d.definition_name == name
    assert d.status is DeploymentStatus.SUCCESS and d.commit == head
    assert d.reason.kind is ReasonKind.NEW and "Add rec" in d.reason.summary
    assert d.created_at <= d.started_at <= d.finished_at  # type: ignore[operator]
    assert any("healthy" in line.message for line in d.logs)
    assert ws.store.last_applied_commit() == head
    ws.close()


def test_init_makes_a_repository_with_hooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    monkeypatch.chdir(tmp_path)
    bare = tmp_path / "deploy.git"
    result = runner.invoke(main, ["init", "deploy.git", "--bare"])  # a relative path
    assert result.exit_code == 0, result.output
    assert (bare / "hooks" / "pre-receive").stat().st_mode & 0o111
    assert (bare / "hooks" / "post-receive").exists()
    work = tmp_path / "work"
    result = runner.invoke(main, ["init", str(work)])
    assert result.exit_code == 0, result.output
    assert (work / "deployally.yaml").exists() and (work / ".git" / "hooks" / "pre-commit").exists()


def test_definition_waiting_for_its_secret_deploys_once_the_secret_is_set(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient
) -> None:
    name = defs_repo.name("late")
    defs_repo.write(
        f"definitions/{name}.yaml",
        f"name: {name}\ntemplate: tools/busybox/worker/stable\nparams:\n  message: {{secret: {name}_msg}}\n",
    )
    defs_repo.commit("Add late, secret not set yet")
    first = sync(defs_repo)
    assert first.deployments == ()
    assert any(f"{name}_msg" in str(e) and "deployally secret set" in str(e) for e in first.errors)

    result = CliRunner().invoke(main, ["secret", "set", f"{name}_msg", "--repo", str(defs_repo.path)],
                                input="now-set\n")
    assert result.exit_code == 0, result.output
    second = sync(defs_repo)  # no new commit: the secret alone makes it valid

    assert statuses(second) == {name: "success"}
    assert "MESSAGE=now-set" in container(docker_client, name).attrs["Config"]["Env"]


def test_settings_in_the_repository_take_effect(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient
) -> None:
    defs_repo.write("deployally.yaml", f"network: {defs_repo.prefix}net\nhealth_timeout: 1s\n")
    slow = defs_repo.worker(
        "slow", script="sleep 4; touch /tmp/ready; exec sleep 2147483647", health="test -f /tmp/ready"
    )
    defs_repo.commit("A definition slower to become healthy than the settings allow")

    report = Workspace.open(defs_repo.path).engine.sync()  # no command-line override

    assert statuses(report) == {slow: "failed"}
    ws = Workspace.open(defs_repo.path)
    deployment = ws.store.deployment(report.deployments[0].id)
    assert deployment is not None
    assert any("timeout 1s" in line.message for line in deployment.logs)
    ws.close()


def test_a_name_changed_inside_its_file_replaces_the_container(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient
) -> None:
    old = defs_repo.worker("before")
    defs_repo.commit("Add before")
    sync(defs_repo)

    new = defs_repo.name("after")
    path = defs_repo.path / "definitions" / f"{old}.yaml"
    path.write_text(path.read_text().replace(f"name: {old}", f"name: {new}"))
    defs_repo.commit("Rename the definition, same file")
    report = sync(defs_repo)

    assert statuses(report) == {old: "success", new: "success"}
    with pytest.raises(docker.errors.NotFound):
        container(docker_client, old)
    assert container(docker_client, new).status == "running"
    ws = Workspace.open(defs_repo.path)
    assert ws.store.definition(old) is None
    ws.close()


def test_a_never_valid_definition_disappears_with_its_file(defs_repo: DefinitionsRepo) -> None:
    broken = defs_repo.name("broken")
    defs_repo.write(f"definitions/{broken}.yaml", f"name: {broken}\ntemplate: nope/nope/nope/1\n")
    defs_repo.commit("Add a broken definition")
    sync(defs_repo)
    ws = Workspace.open(defs_repo.path)
    record = ws.store.definition(broken)
    assert record is not None and record.status.value == "invalid"

    defs_repo.remove(f"definitions/{broken}.yaml")
    defs_repo.commit("Remove it")
    report = sync(defs_repo)

    assert report.deployments == () and report.errors == ()
    assert ws.store.definition(broken) is None
    ws.close()


def test_deployment_events_carry_running_status_and_the_server_id(defs_repo: DefinitionsRepo) -> None:
    ws = Workspace.open(defs_repo.path)
    hook = ws.store.add_webhook("http://127.0.0.1:9/", ["deployment.started", "deployment.success"], "s")
    name = defs_repo.worker("evt")
    defs_repo.commit("Add evt")
    assert statuses(sync(defs_repo)) == {name: "success"}

    sent = {d.event: d.data for d in ws.store.deliveries(hook.id, 10, 0)}
    assert sent["deployment.started"]["status"] == "running"
    assert sent["deployment.success"]["status"] == "success"
    assert str(sent["deployment.success"]["server_id"]).startswith("srv_")
    assert sent["deployment.success"]["server"] == "local"
    ws.close()


def test_broken_settings_change_nothing_running(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient
) -> None:
    name = defs_repo.worker("steady")
    defs_repo.commit("Add steady")
    sync(defs_repo)
    before = container(docker_client, name).id

    defs_repo.write("deployally.yaml", f"network: {defs_repo.prefix}net\ndefaults: {{profile: production\n")
    defs_repo.commit("Break the settings")
    report = sync(defs_repo)

    assert report.deployments == ()
    assert any("deployally.yaml" in str(e) for e in report.errors)
    assert container(docker_client, name).id == before


def test_a_rename_into_a_broken_file_removes_nothing(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient
) -> None:
    name = defs_repo.worker("moving")
    defs_repo.commit("Add moving")
    sync(defs_repo)
    before = container(docker_client, name).id

    defs_repo.git("mv", f"definitions/{name}.yaml", "definitions/elsewhere.yaml")
    defs_repo.write("definitions/elsewhere.yaml", f"name: {name}\ntemplate: [broken\n")
    defs_repo.commit("Move it and break it")
    report = sync(defs_repo)

    assert report.deployments == () and report.errors
    assert container(docker_client, name).id == before


def test_a_new_file_with_a_taken_name_is_refused(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient
) -> None:
    name = defs_repo.worker("owner", message="original")
    defs_repo.commit("Add owner")
    sync(defs_repo)

    defs_repo.write("definitions/intruder.yaml",
                    f"name: {name}\ntemplate: tools/busybox/worker/stable\nparams: {{message: intruder}}\n")
    defs_repo.commit("Another file takes the same name")
    report = sync(defs_repo)

    assert report.deployments == ()
    assert any("definitions/intruder.yaml" in str(e) and "name" in str(e) for e in report.errors)
    assert "MESSAGE=original" in container(docker_client, name).attrs["Config"]["Env"]


def test_dependencies_must_be_running_and_cycles_block_only_their_members(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient
) -> None:
    base = defs_repo.worker("base", script="exit 1")  # never comes up
    app = defs_repo.worker("app", _extra=f"depends_on: [{base}]\n")
    p = defs_repo.worker("p", _extra=f"depends_on: [{defs_repo.name('q')}]\n")
    q = defs_repo.worker("q", _extra=f"depends_on: [{p}]\n")
    free = defs_repo.worker("free")
    defs_repo.commit("A failing base, a cycle and a free one")

    bad = CliRunner().invoke(main, ["validate", "--repo", str(defs_repo.path)])
    assert bad.exit_code == 1 and "depends_on" in bad.output and "cycle" in bad.output

    report = sync(defs_repo)
    result = statuses(report)
    assert result[free] == "success"
    # app is not failed: it waits for base, saying so, with no backoff and no failure webhook.
    assert result[base] == "failed" and result[app] == "waiting"
    assert p not in result and q not in result  # refused as invalid: a full read sees the cycle
    waiting = next(d for d in report.deployments if d.definition_name == app)
    assert waiting.waiting is not None and waiting.waiting.on == (base,)
    assert report.ok is False  # base failed

    defs_repo.worker("app", message="again", _extra=f"depends_on: [{base}]\n")
    defs_repo.commit("Change only app while base is still failed")
    report = sync(defs_repo)
    result = statuses(report)
    assert result[app] == "waiting" and p not in result and q not in result
    with pytest.raises(docker.errors.NotFound):
        container(docker_client, app)


def test_a_garbage_collected_last_commit_does_not_stop_syncing(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient
) -> None:
    name = defs_repo.worker("gc", message="one")
    defs_repo.commit("one")
    defs_repo.worker("gc", message="two")
    defs_repo.commit("two")
    sync(defs_repo)

    defs_repo.git("reset", "-q", "--hard", "HEAD~1")  # a force-push, in effect
    defs_repo.worker("gc", message="three")
    defs_repo.commit("three")
    defs_repo.git("reflog", "expire", "--expire=now", "--all")
    defs_repo.git("gc", "-q", "--prune=now")
    report = sync(defs_repo)

    assert statuses(report) == {name: "success"}
    assert "MESSAGE=three" in container(docker_client, name).attrs["Config"]["Env"]


def test_a_removal_does_not_wait_behind_a_failed_update(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient
) -> None:
    name = defs_repo.worker("flaky")
    defs_repo.commit("Add flaky")
    ws = Workspace.open(defs_repo.path, health_timeout_s=30)
    ws.engine.sync()
    defs_repo.worker("flaky", script="exit 2")
    defs_repo.commit("Break flaky")
    assert statuses(ws.engine.sync()) == {name: "rolled_back"}

    defs_repo.remove(f"definitions/{name}.yaml")
    defs_repo.commit("Remove flaky")
    report = ws.engine.sync()  # the same engine, inside the failed update's backoff

    assert statuses(report) == {name: "success"}
    with pytest.raises(docker.errors.NotFound):
        container(docker_client, name)
    ws.close()


def test_a_removal_held_back_by_an_unreadable_file_happens_once_it_is_fixed(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient
) -> None:
    going = defs_repo.worker("going")
    other = defs_repo.worker("other")
    defs_repo.commit("Add two")
    sync(defs_repo)

    defs_repo.remove(f"definitions/{going}.yaml")
    defs_repo.write("definitions/new.yaml", "name: [not yaml\n")
    defs_repo.commit("Delete one, add an unreadable file")
    held = sync(defs_repo)
    assert held.deployments == ()
    assert container(docker_client, going).status == "running"  # it may have moved there

    fresh = defs_repo.name("new")
    defs_repo.write("definitions/new.yaml", f"name: {fresh}\ntemplate: tools/busybox/worker/stable\n")
    defs_repo.commit("Fix the file")
    report = sync(defs_repo)

    assert statuses(report) == {going: "success", fresh: "success"}
    with pytest.raises(docker.errors.NotFound):
        container(docker_client, going)
    assert container(docker_client, other).status == "running"


THIEF_TEMPLATE = """\
name: Thief
version: "1"
taxonomy: {kingdom: assets, family: tools, species: thief, variant: plain, specimen: "1"}
spec:
  image: {repository: busybox, tag: stable}
  user_inputs: {}
  profiles: [development]
  command: ["sh", "-c", "exec sleep 2147483647"]
  env: {STOLEN: "\\0secret:%s\\0"}
  stop_signal: SIGKILL
"""


def test_a_definition_spelling_another_definitions_secret_gets_nothing(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient
) -> None:
    owner = defs_repo.name("owner")
    secret = f"{owner}_pw"
    defs_repo.write(
        f"definitions/{owner}.yaml",
        f"name: {owner}\ntemplate: tools/busybox/worker/stable\n"
        f"params:\n  message: {{secret: {secret}}}\n",
    )
    # One spells the placeholder in a param, one in its own repository template.
    by_param, by_template = defs_repo.name("thief1"), defs_repo.name("thief2")
    defs_repo.write(
        f"definitions/{by_param}.yaml",
        f"name: {by_param}\ntemplate: tools/busybox/worker/stable\n"
        f'params:\n  message: "\\0secret:{secret}\\0"\n',
    )
    defs_repo.write("catalog/thief.yaml", THIEF_TEMPLATE % secret)
    defs_repo.write(f"definitions/{by_template}.yaml", f"name: {by_template}\ntemplate: tools/thief/plain/1\n")
    defs_repo.commit("An owner and two thieves")
    CliRunner().invoke(main, ["secret", "set", secret, "--repo", str(defs_repo.path)],
                       input="owners-only-value\n")

    report = sync(defs_repo)

    assert statuses(report) == {owner: "success"}
    errors = {(e.path, e.field): e.message for e in report.errors}
    assert "NUL" in errors[(f"definitions/{by_param}.yaml", "params.message")]
    assert "NUL" in errors[(f"definitions/{by_template}.yaml", "spec.env.STOLEN")]
    for thief in (by_param, by_template):
        with pytest.raises(docker.errors.NotFound):
            container(docker_client, thief)
    assert "MESSAGE=owners-only-value" in container(docker_client, owner).attrs["Config"]["Env"]


def test_a_stored_spec_holding_a_placeholder_its_definition_does_not_name_is_not_resolved(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient
) -> None:
    # As an older engine might have stored it: the spec holds another secret's placeholder.
    thief = defs_repo.worker("thief", message="plain")
    defs_repo.commit("Add thief")
    assert statuses(sync(defs_repo)) == {thief: "success"}
    ws = Workspace.open(defs_repo.path)
    ws.store.set_secret("someone_elses", "not-for-thief")
    record = ws.store.definition(thief)
    assert record is not None and record.desired is not None
    env = tuple(sorted({**dict(record.desired.env), "MESSAGE": placeholder("someone_elses")}.items()))
    tampered = replace(record.desired, env=env, secrets=(("someone_elses", 1),))
    ws.store.upsert_definition(replace(record, desired=replace(tampered, rendered_hash=rendered_hash(tampered))))
    ws.close()
    container(docker_client, thief).remove(force=True)  # self-heal will create it from that spec

    report = sync(defs_repo)

    assert statuses(report) == {thief: "failed"}
    [deployment] = report.deployments
    ws = Workspace.open(defs_repo.path)
    shown = ws.store.deployment(deployment.id)
    ws.close()
    assert shown is not None
    assert any("does not reference" in line.message for line in shown.logs)
    assert "not-for-thief" not in json.dumps([line.message for line in shown.logs])
    with pytest.raises(docker.errors.NotFound):
        container(docker_client, thief)


def test_a_pinned_secret_version_deploys_that_value_and_a_rollback_brings_it_back(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient
) -> None:
    secret = defs_repo.name("pw")
    runner = CliRunner()

    def set_secret(value: str) -> None:
        result = runner.invoke(main, ["secret", "set", secret, "--repo", str(defs_repo.path)], input=value)
        assert result.exit_code == 0, result.output

    def pin(version: int) -> str:
        name = defs_repo.name("pinned")
        defs_repo.write(
            f"definitions/{name}.yaml",
            f"name: {name}\ntemplate: tools/busybox/worker/stable\n"
            f"params:\n  message: {{secret: {secret}, version: {version}}}\n",
        )
        return name

    def message(name: str) -> str:
        env = dict(e.split("=", 1) for e in container(docker_client, name).attrs["Config"]["Env"])
        return env["MESSAGE"]

    set_secret("one")
    set_secret("two")
    name = pin(1)
    defs_repo.commit("Pin version 1")
    assert statuses(sync(defs_repo)) == {name: "success"}
    assert message(name) == "one"

    pin(2)
    defs_repo.commit("Pin version 2")
    report = sync(defs_repo)
    assert statuses(report) == {name: "success"}
    assert report.deployments[0].reason.kind is ReasonKind.DEFINITION
    assert message(name) == "two"

    result = runner.invoke(main, ["rollback", name, "--to", "1", "--repo", str(defs_repo.path)])
    assert result.exit_code == 0, result.output
    report = sync(defs_repo)
    assert statuses(report) == {name: "success"}
    assert report.deployments[0].reason.kind is ReasonKind.ROLLBACK
    assert message(name) == "one"

    set_secret("three")  # a new current version moves only unpinned references
    assert sync(defs_repo).deployments == ()

    pin(9)
    defs_repo.commit("Pin a version that does not exist")
    report = sync(defs_repo)
    assert report.deployments == ()
    [error] = report.errors
    assert (error.path, error.field) == (f"definitions/{name}.yaml", "params.message.version")
    assert "no version 9 (kept: 1, 2, 3)" in error.message
    assert message(name) == "one"  # what runs is untouched
