"""One bad commit never stops the engine: a hostile file is an error for that file alone.

Each case is committed beside good files into a real git repository and synced to a real
Docker engine; a later commit that removes the file must heal the engine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import docker
import pytest

from conftest import DefinitionsRepo, PushRepo, ServeProcess, wait_until
from deployally.sync.reconcile import SyncReport
from deployally.types import SecretVersions
from deployally.workspace import Workspace

pytestmark = pytest.mark.docker

DEEP = 100_000


def sync(repo: DefinitionsRepo) -> SyncReport:
    ws = Workspace.open(repo.path, health_timeout_s=30)
    try:
        return ws.engine.sync()
    finally:
        ws.close()


def statuses(report: SyncReport) -> dict[str, str]:
    return {d.definition_name: d.status.value for d in report.deployments}


def write_bytes(repo: DefinitionsRepo, rel: str | bytes, data: bytes) -> None:
    target = repo.path / os.fsdecode(rel)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


# path (bytes for a name that is not UTF-8), content, what the error shows as the file and
# a word the error must hold.
UNREADABLE_DEFINITIONS: dict[str, tuple[str | bytes, bytes, str, str]] = {
    "a list nested 100,000 deep": (
        "definitions/deep.yaml",
        b"name: deep\nparams: " + b"[" * DEEP + b"]" * DEEP + b"\n",
        "definitions/deep.yaml",
        "nested",
    ),
    "a mapping nested 50,000 deep": (  # 100,000 would be refused as too large to parse
        "definitions/deepmap.yaml",
        b"name: deep\nparams: " + b"{a: " * (DEEP // 2) + b"1" + b"}" * (DEEP // 2) + b"\n",
        "definitions/deepmap.yaml",
        "nested",
    ),
    "a binary file": (
        "definitions/logo.yaml",
        b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe",
        "definitions/logo.yaml",
        "UTF-8",
    ),
    "a newline in the file name": (
        "definitions/two\nlines.yaml",
        b"name: twolines\ntemplate: tools/busybox/worker/stable\n",
        "definitions/two\\nlines.yaml",
        "newline",
    ),
    "a file name that is not UTF-8": (
        b"definitions/caf\xe9.yaml",
        b"name: cafe\ntemplate: tools/busybox/worker/stable\n",
        "definitions/caf\\xe9.yaml",
        "UTF-8",
    ),
}

# Settings and repository templates are tree-wide: while one is refused, every definition
# keeps its last good spec (README, "How a sync works").
UNREADABLE_TREE_WIDE: dict[str, tuple[str, bytes, str]] = {
    "a binary repository template": ("catalog/tools/blob.yaml", b"\x00\xff" * 64, "UTF-8"),
    "a repository template nested 100,000 deep": (
        "catalog/tools/deep.yaml",
        b"name: deep\nspec: " + b"[" * DEEP + b"]" * DEEP + b"\n",
        "nested",
    ),
    "a binary deployally.yaml": ("deployally.yaml", b"network: \xff\xfe\x00\n", "UTF-8"),
}


def test_unreadable_definition_files_are_errors_for_them_alone_and_removing_them_heals(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient
) -> None:
    running = defs_repo.worker("running", message="original")
    defs_repo.commit("Add running")
    sync(defs_repo)
    before = docker_client.containers.get(running)

    for path, data, _shown, _word in UNREADABLE_DEFINITIONS.values():
        write_bytes(defs_repo, path, data)
    beside = defs_repo.worker("beside")  # a good file in the same commit
    defs_repo.commit("Add unreadable files")
    report = sync(defs_repo)

    messages = [str(e) for e in report.errors]
    for case, (_path, _data, shown, word) in UNREADABLE_DEFINITIONS.items():
        assert any(m.startswith(shown) and word in m for m in messages), (case, messages)
    assert all("\n" not in m for m in messages), messages  # a file name cannot forge lines
    assert statuses(report) == {beside: "success"}
    after = docker_client.containers.get(running)
    assert after.id == before.id and after.status == "running"

    # Their removal heals the engine: the next change deploys and nothing is refused.
    for path, *_rest in UNREADABLE_DEFINITIONS.values():
        (defs_repo.path / os.fsdecode(path)).unlink()
    later = defs_repo.worker("later")
    defs_repo.commit("Remove the unreadable files")
    healed = sync(defs_repo)

    assert healed.errors == ()
    assert statuses(healed) == {later: "success"}


@pytest.mark.parametrize("case", sorted(UNREADABLE_TREE_WIDE))
def test_an_unreadable_settings_or_template_file_holds_the_tree_and_removing_it_heals(
    case: str, defs_repo: DefinitionsRepo, docker_client: docker.DockerClient
) -> None:
    path, data, word = UNREADABLE_TREE_WIDE[case]
    settings = (defs_repo.path / "deployally.yaml").read_bytes()
    running = defs_repo.worker("running", message="original")
    defs_repo.commit("Add running")
    sync(defs_repo)
    before = docker_client.containers.get(running)

    write_bytes(defs_repo, path, data)
    beside = defs_repo.worker("beside")
    defs_repo.commit(f"Add {case}")
    report = sync(defs_repo)

    messages = [str(e) for e in report.errors]
    assert any(m.startswith(path) and word in m for m in messages), messages
    assert statuses(report) == {}
    assert docker_client.containers.get(running).id == before.id

    if path == "deployally.yaml":
        (defs_repo.path / path).write_bytes(settings)
    else:
        (defs_repo.path / path).unlink()
    defs_repo.commit(f"Remove {case}")
    healed = sync(defs_repo)

    assert healed.errors == ()
    assert statuses(healed) == {beside: "success"}


def test_a_config_file_that_cannot_be_read_refuses_only_the_definition_that_mounts_it(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient
) -> None:
    write_bytes(defs_repo, "config/logo.png", b"\x89PNG\r\n\x1a\n\x00\xff")
    binary = defs_repo.worker(
        "binary", _extra="files: [{path: /etc/logo.png, source: config/logo.png}]\n"
    )
    newline = defs_repo.worker(
        "newline", _extra='files: [{path: /etc/app.conf, source: "config/a\\nb.conf"}]\n'
    )
    fine = defs_repo.worker("fine")
    defs_repo.commit("Mount a binary file and a name with a newline")

    report = sync(defs_repo)

    assert statuses(report) == {fine: "success"}
    messages = "\n".join(str(e) for e in report.errors)
    assert f"definitions/{binary}.yaml" in messages and "config/logo.png" in messages
    assert f"definitions/{newline}.yaml" in messages and "files[0].source" in messages
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(binary)


def test_validate_and_plan_name_the_unreadable_files(defs_repo: DefinitionsRepo) -> None:
    from click.testing import CliRunner

    from deployally.cli import main

    defs_repo.worker("good")
    write_bytes(defs_repo, "definitions/deep.yaml", b"a: " + b"[" * DEEP + b"]" * DEEP + b"\n")
    write_bytes(defs_repo, "definitions/logo.yaml", b"\x89PNG\x00\xff")
    write_bytes(defs_repo, "definitions/two\nlines.yaml", b"name: x\n")
    defs_repo.commit("Three unreadable files")

    for args in (
        ["validate", "--repo", str(defs_repo.path), "--rev", "HEAD", "--json"],
        ["validate", "--repo", str(defs_repo.path), "--json"],  # the working directory
        ["plan", "--repo", str(defs_repo.path), "--base", "HEAD~1", "--head", "HEAD",
         "--format", "json"],
    ):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 1, (args, result.output, result.exception)
        files = {e["file"] for e in json.loads(result.output)["errors"]}
        assert files == {
            "definitions/deep.yaml", "definitions/logo.yaml", "definitions/two\\nlines.yaml"
        }, args


def test_an_api_update_of_a_file_nested_too_deep_is_refused(tmp_path: Path) -> None:
    from deployally.errors import ValidationError
    from deployally.model.catalog import load_builtin
    from deployally.sync import edits

    repo = DefinitionsRepo(tmp_path / "repo", "tapi")
    repo.worker("deep")
    repo.commit("Add deep")
    ws = Workspace.open(repo.path)
    try:
        ws.engine.intake.refresh(ws.repo.head() or "")
        repo.write("definitions/tapi_deep.yaml", "params: " + "[" * DEEP + "]" * DEEP + "\n")
        repo.commit("Nest it")
        with pytest.raises(ValidationError, match="nested"):
            edits.update_definition(
                ws.repo, ws.store, load_builtin(), "tapi_deep", params={"message": "x"}, author="t"
            )
    finally:
        ws.close()


def test_pre_receive_refuses_unreadable_files_naming_each(push_repo: PushRepo) -> None:
    push_repo.worker("good")
    write_bytes(push_repo, "definitions/logo.yaml", b"\x89PNG\x00\xff")
    write_bytes(push_repo, "definitions/two\nlines.yaml", b"name: x\n")
    push_repo.commit("Unreadable files")

    pushed = push_repo.push()

    assert pushed.returncode != 0
    assert "remote: error: definitions/logo.yaml: not UTF-8 text" in pushed.stdout, pushed.stdout
    assert "error: definitions/two\\nlines.yaml: the file name holds a newline" in pushed.stdout
    assert "Traceback" not in pushed.stdout and "push refused" in pushed.stdout


# ---------------------------------------------------------------- patterns

# `(a+)+$` against a run of a's that ends otherwise backtracks 2^n times in Python's `re`.
HOSTILE_PATTERN = "(a+)+$"
HOSTILE_VALUE = "a" * 100 + "!"
# A Jinja-looking string the template schema checks with the pattern `\{\{.*\}\}`: with
# backtracking that is quadratic, about a minute for this one value.
BRACES = "{" * 200_000

SLOW_TEMPLATE = f"""\
name: Slow pattern
description: A template whose input pattern backtracks catastrophically
version: "1"
taxonomy: {{kingdom: assets, family: tools, species: slow, variant: pattern, specimen: "1"}}
deprecated: false
spec:
  image: {{repository: busybox, tag: stable}}
  user_inputs:
    word: {{type: string, default: aaa, pattern: "{HOSTILE_PATTERN}"}}
  profiles: [development]
  command: ["sh", "-c", "sleep 2147483647"]
  stop_signal: SIGKILL
"""


def hostile_definition(repo: DefinitionsRepo) -> str:
    """A definition on the slow template whose param makes its pattern backtrack; its name."""
    name = repo.name("hostile")
    repo.write(
        f"definitions/{name}.yaml",
        f"name: {name}\ntemplate: tools/slow/pattern/1\nparams: {{word: '{HOSTILE_VALUE}'}}\n",
    )
    return name


def test_validate_checks_hostile_patterns_in_linear_time(defs_repo: DefinitionsRepo) -> None:
    defs_repo.write("catalog/tools/slow.yaml", SLOW_TEMPLATE)
    name = hostile_definition(defs_repo)
    defs_repo.write(
        "catalog/tools/braces.yaml",
        SLOW_TEMPLATE.replace("variant: pattern", "variant: braces")
        + f"  ports: [{{container_port: '{{{{ {BRACES}'}}]\n",
    )
    defs_repo.commit("A hostile param, and a string the schema's pattern backtracks on")

    # A subprocess, bounded: a backtracking match holds the GIL and cannot be interrupted.
    done = subprocess.run(
        [sys.executable, "-m", "deployally", "validate", "--repo", str(defs_repo.path),
         "--rev", "HEAD"],
        capture_output=True, text=True, timeout=60, check=False,
    )

    assert done.returncode == 1, done.stderr
    [line] = [x for x in done.stderr.splitlines() if f"definitions/{name}.yaml" in x]
    assert line.endswith(f"params.word: '{'a' * 76}... does not match the pattern "
                         f"'{HOSTILE_PATTERN}'"), line
    assert "catalog/tools/braces.yaml" in done.stderr and "ports[0].container_port" in done.stderr


def test_a_pattern_re2_cannot_match_in_linear_time_is_refused_naming_template_and_field(
    defs_repo: DefinitionsRepo,
) -> None:
    from deployally.model import desired
    from deployally.source.tree import DirTree

    defs_repo.write("catalog/tools/slow.yaml", SLOW_TEMPLATE.replace(HOSTILE_PATTERN, "(?=a)a+"))

    state = desired.load(DirTree(defs_repo.path), secret_versions=SecretVersions.unchecked())

    [error] = state.errors
    assert (error.path, error.field) == ("catalog/tools/slow.yaml", "spec.user_inputs.word.pattern")
    assert "'(?=a)a+'" in error.message and "lookarounds" in error.message


def test_pre_receive_refuses_a_hostile_param_without_hanging(push_repo: PushRepo) -> None:
    push_repo.write("catalog/tools/slow.yaml", SLOW_TEMPLATE)
    name = hostile_definition(push_repo)
    push_repo.commit("A hostile param")

    pushed = subprocess_push(push_repo)

    assert pushed.returncode != 0
    assert f"definitions/{name}.yaml:3: params.word" in pushed.stdout, pushed.stdout
    assert HOSTILE_PATTERN in pushed.stdout and "push refused" in pushed.stdout


def subprocess_push(repo: PushRepo) -> subprocess.CompletedProcess[str]:
    """`git push`, bounded: on a hang the test fails instead of waiting forever."""
    return subprocess.run(["git", "push", "origin", "main"], cwd=repo.path, check=False,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=120)


def test_serve_keeps_answering_while_hostile_params_arrive_by_api_and_by_commit(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    defs_repo.write("catalog/tools/slow.yaml", SLOW_TEMPLATE)
    defs_repo.commit("Add the slow template")
    serve = ServeProcess(defs_repo.path, tmp_path / "state")
    try:
        refused = serve.request("POST", "/definitions", json={
            "name": defs_repo.name("api"), "template_id": "tools/slow/pattern/1", "server_id": "local",
            "params": {"word": HOSTILE_VALUE},
        })
        assert refused.status_code == 422, refused.text
        assert "params.word" in refused.text and HOSTILE_PATTERN in refused.text

        hostile = hostile_definition(defs_repo)
        good = defs_repo.worker("good")
        defs_repo.commit("A hostile param beside a good definition")
        health = serve.request("GET", "/health", token="")
        assert health.status_code == 200

        def deployed() -> bool:
            return bool(docker_client.containers.list(filters={"name": good}))

        wait_until(deployed, 60, f"{good} to run")
        definitions = serve.request("GET", "/definitions").json()["data"]
        by_name = {d["name"]: d for d in definitions}
        assert by_name[hostile]["status"] == "invalid"
        assert HOSTILE_PATTERN in by_name[hostile]["last_error"]
    finally:
        serve.stop()


# ---------------------------------------------------------------- render budget

BOMBS = {
    # 10^10 steps of an empty loop: CPU alone.
    "cpu": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    # Doubling a string with `~`, which no sandbox hook sees: 512 MB in nine steps.
    "doubling": "{% set a = 'x' * 1000000 %}" + "{% set a = a ~ a %}" * 9 + "{{ a | length }}",
    # A filter building 500 MB in C.
    "join": "{{ range(50000) | join('y' * 10000) }}",
}


def bomb_template(kind: str) -> str:
    return SLOW_TEMPLATE.replace("variant: pattern", f"variant: {kind}").replace(
        "  command:", f'  env: {{BOMB: "{BOMBS[kind]}"}}\n  command:'
    )


def commit_bombs(repo: DefinitionsRepo) -> dict[str, str]:
    """A repository template per bomb and a definition using each; definition name by kind."""
    names = {}
    for kind in BOMBS:
        repo.write(f"catalog/tools/{kind}.yaml", bomb_template(kind))
        # `a_` first: the CPU bomb renders before the memory ones.
        names[kind] = name = repo.name(f"a_{kind}")
        repo.write(f"definitions/{name}.yaml", f"name: {name}\ntemplate: tools/slow/{kind}/1\n")
    repo.commit("Three render bombs")
    return names


def run_cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """`deployally ARGS` in a subprocess, bounded: a hang fails the test instead of the suite."""
    return subprocess.run([sys.executable, "-m", "deployally", *args], capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_render_bombs_are_errors_naming_definition_and_template_and_the_rest_deploys(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient
) -> None:
    good = defs_repo.worker("good")
    bombs = commit_bombs(defs_repo)

    done = run_cli("sync", "--repo", str(defs_repo.path), "--json")

    report = json.loads(done.stdout)
    assert {d["definition_name"]: d["status"] for d in report["deployments"]} == {good: "success"}
    errors = {e["file"]: e["message"] for e in report["errors"]}
    for kind, name in bombs.items():
        message = errors[f"definitions/{name}.yaml"]
        assert f"the template catalog/tools/{kind}.yaml" in message, message
    assert "took more than its budget of 2 s" in errors[f"definitions/{bombs['cpu']}.yaml"]
    for kind in ("doubling", "join"):
        assert "MiB of memory" in errors[f"definitions/{bombs[kind]}.yaml"], errors

    # The engine is not wedged: the next commit deploys, and the bombs stay refused.
    later = defs_repo.worker("later")
    defs_repo.commit("Add later")
    again = json.loads(run_cli("sync", "--repo", str(defs_repo.path), "--json").stdout)
    assert {d["definition_name"]: d["status"] for d in again["deployments"]} == {later: "success"}


def test_validate_and_plan_refuse_a_render_bomb_within_the_budget(
    defs_repo: DefinitionsRepo,
) -> None:
    bombs = commit_bombs(defs_repo)

    for args in (("validate", "--repo", str(defs_repo.path), "--rev", "HEAD", "--json"),
                 ("plan", "--repo", str(defs_repo.path), "--base", "HEAD~1", "--head", "HEAD",
                  "--format", "json")):
        done = run_cli(*args)
        assert done.returncode == 1, done.stderr
        files = {e["file"] for e in json.loads(done.stdout)["errors"]}
        assert files == {f"definitions/{name}.yaml" for name in bombs.values()}, args


# ---------------------------------------------------------------- /health during a sync


def test_health_answers_during_a_long_sync_and_says_what_it_does(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    serve = ServeProcess(defs_repo.path, tmp_path / "state")
    try:
        defs_repo.worker("never", health="false")  # the health gate waits its 30 s out
        defs_repo.commit("A definition that never becomes healthy")

        def syncing() -> dict[str, object] | None:
            body = serve.request("GET", "/health", token="").json()
            sync = body["checks"]["engine"].get("sync")
            return sync if sync and sync["changes"] == 1 else None

        sync = wait_until(syncing, 60, "/health to show the sync applying its change")
        assert isinstance(sync, dict)
        assert sync["doing"] == "applying 1 change(s) on server local"
        assert sync["stuck_after_s"] == 60 + 1 * (2 * 30 + 60)  # health_timeout: 30s
    finally:
        serve.stop()


# ---------------------------------------------------------------- numbers beyond the store's


HUGE_PIN = 2**63  # one above SQLite's INTEGER


def huge_pin(repo: DefinitionsRepo, version: int = HUGE_PIN) -> str:
    """A definition pinning a secret version the store cannot hold; its name."""
    name = repo.name("huge")
    repo.write(
        f"definitions/{name}.yaml",
        f"name: {name}\ntemplate: tools/busybox/worker/stable\n"
        f"params:\n  message: {{secret: {repo.prefix}_pw, version: {version}}}\n",
    )
    return name


def test_a_secret_pin_beyond_the_store_is_an_error_for_its_file_and_removing_it_heals(
    defs_repo: DefinitionsRepo, docker_client: docker.DockerClient
) -> None:
    huge = huge_pin(defs_repo)
    beside = defs_repo.worker("beside")
    defs_repo.commit("Pin 2^63")

    report = sync(defs_repo)  # before: OverflowError, and so at every later sync

    [error] = report.errors
    assert (error.path, error.field) == (f"definitions/{huge}.yaml", "params.message.version")
    assert "9223372036854775807" in error.message
    assert statuses(report) == {beside: "success"}

    (defs_repo.path / f"definitions/{huge}.yaml").unlink()
    later = defs_repo.worker("later")
    defs_repo.commit("Remove the huge pin")
    healed = sync(defs_repo)
    assert healed.errors == () and statuses(healed) == {later: "success"}


def test_validate_refuses_a_secret_pin_beyond_the_store(defs_repo: DefinitionsRepo) -> None:
    huge = huge_pin(defs_repo, 99999999999999999999999)
    defs_repo.commit("Pin 10^23")

    done = run_cli("validate", "--repo", str(defs_repo.path), "--rev", "HEAD", "--json")

    assert done.returncode == 1, done.stdout + done.stderr
    [error] = json.loads(done.stdout)["errors"]
    assert (error["file"], error["field"]) == (f"definitions/{huge}.yaml", "params.message.version")


def test_pre_receive_refuses_a_secret_pin_beyond_the_store(push_repo: PushRepo) -> None:
    huge = huge_pin(push_repo)
    push_repo.commit("Pin 2^63")

    pushed = subprocess_push(push_repo)

    assert pushed.returncode != 0
    assert f"definitions/{huge}.yaml:4: params.message.version" in pushed.stdout, pushed.stdout
    assert "push refused" in pushed.stdout


def test_a_revision_the_store_cannot_hold_never_stops_later_syncs(
    defs_repo: DefinitionsRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever value no check catches, recording one commit's revisions cannot wedge the engine."""
    from dataclasses import replace

    from deployally.sync import intake

    real = intake.revisions.new_revisions

    def with_a_huge_pin(*args: object, **kw: object) -> list[object]:
        return [replace(r, secrets=(("pw", HUGE_PIN),)) for r in real(*args, **kw)]  # type: ignore[arg-type]

    defs_repo.worker("first")
    first = defs_repo.commit("First")
    ws = Workspace.open(defs_repo.path)
    try:
        monkeypatch.setattr(intake.revisions, "new_revisions", with_a_huge_pin)
        desired = ws.engine.intake.refresh(first)  # before: OverflowError, at every sync
        [error] = desired.errors
        assert error.path == f"definitions/{defs_repo.name('first')}.yaml"
        assert "cannot be stored" in error.message
        [revision] = ws.store.revisions(desired.records[defs_repo.name("first")].id)
        assert (revision.number, revision.secrets) == (1, ())
        monkeypatch.undo()

        defs_repo.worker("second")
        second = defs_repo.commit("Second")
        desired = ws.engine.intake.refresh(second)
        assert desired.errors == () and ws.store.get_meta("desired_commit") == second
    finally:
        ws.close()
