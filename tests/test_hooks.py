"""git push to deploy: real pushes through the installed hooks, with and without a running engine."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

import docker
import pytest
import requests

from conftest import PushRepo, ServeProcess, wait_until
from deployally.store import Store
from deployally.types import DefinitionStatus

pytestmark = pytest.mark.docker


def revision_of(client: docker.DockerClient, name: str) -> str:
    return str(client.containers.get(name).labels["com.deployally.revision"])


def test_push_with_no_engine_deploys_in_the_push_and_prints_each_outcome(
    push_repo: PushRepo, docker_client: docker.DockerClient
) -> None:
    name = push_repo.worker("web", message="one")
    push_repo.commit("Add web")

    pushed = push_repo.push()

    assert pushed.returncode == 0, pushed.stdout
    assert f"remote: {name}: revision 1 deployed" in pushed.stdout
    assert "1 deployed, 0 failed" in pushed.stdout
    assert docker_client.containers.get(name).status == "running"


def test_invalid_push_is_refused_with_file_and_field_and_changes_nothing(
    push_repo: PushRepo, docker_client: docker.DockerClient
) -> None:
    name = push_repo.worker("web")
    push_repo.commit("Add web")
    assert push_repo.push().returncode == 0
    before = docker_client.containers.get(name).id
    push_repo.write(f"definitions/{name}.yaml", f"name: {name}\ntemplate: no/such/template/1\n")
    push_repo.commit("Break web")

    pushed = push_repo.push()

    assert pushed.returncode != 0
    assert f"definitions/{name}.yaml" in pushed.stdout and "template" in pushed.stdout
    assert "push refused" in pushed.stdout
    assert docker_client.containers.get(name).id == before


def test_push_with_the_engine_running_prints_the_engines_outcome_once(
    push_repo: PushRepo, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    name = push_repo.worker("web", message="one")
    push_repo.commit("Add web")
    assert push_repo.push().returncode == 0
    state = push_repo.bare / ".deployally"
    engine = ServeProcess(push_repo.bare, state)
    try:
        push_repo.worker("web", message="two")
        push_repo.commit("Change web")
        pushed = push_repo.push()
        assert f"remote: {name}: revision 2 deployed" in pushed.stdout, pushed.stdout
        assert "deploying here" not in pushed.stdout  # the engine did it, not the hook
        assert revision_of(docker_client, name) == "2"
        assert f"{name}: revision 2 deployed" in engine.log()
    finally:
        assert engine.stop() == 0
    with Store(state) as store:
        record = store.definition(name)
        assert record is not None
        revision_2 = [d for d in store.deployments(definition_id=record.id) if d.revision == 2]
    assert len(revision_2) == 1  # the watcher and the hook both asked; one deployment


def test_a_stale_engine_file_falls_back_to_deploying_in_the_push(
    push_repo: PushRepo, docker_client: docker.DockerClient
) -> None:
    state = push_repo.bare / ".deployally"
    state.mkdir(parents=True, exist_ok=True)
    # What a SIGKILLed engine leaves behind: a URL nobody listens on.
    (state / "engine.json").write_text('{"url": "http://127.0.0.1:9", "token": "da_x", "pid": 1}')
    name = push_repo.worker("web")
    push_repo.commit("Add web")

    pushed = push_repo.push()

    assert "no engine answers" in pushed.stdout
    assert f"remote: {name}: revision 1 deployed" in pushed.stdout


def test_a_commit_that_bypassed_pre_receive_is_recorded_invalid_and_keeps_its_container(
    push_repo: PushRepo, docker_client: docker.DockerClient
) -> None:
    name = push_repo.worker("web")
    push_repo.commit("Add web")
    assert push_repo.push().returncode == 0
    before = docker_client.containers.get(name).id
    (push_repo.bare / "hooks" / "pre-receive").unlink()  # a bare repo without the guard
    push_repo.write(f"definitions/{name}.yaml", f"name: {name}\ntemplate: tools/busybox/worker/stable\nparams: {{nope: 1}}\n")
    push_repo.commit("Bad param")

    pushed = push_repo.push()

    assert "error: definitions/" in pushed.stdout and "nope" in pushed.stdout, pushed.stdout
    assert "1 invalid" in pushed.stdout
    assert docker_client.containers.get(name).id == before
    with Store(push_repo.bare / ".deployally") as store:
        record = store.definition(name)
    assert record is not None and record.status is DefinitionStatus.INVALID
    assert record.last_error and "nope" in record.last_error


def test_demo_sets_up_pushes_and_deploys_the_example(
    tmp_path: Path, docker_client: docker.DockerClient, busybox_image: str
) -> None:
    target = tmp_path / "demo"
    owner = None
    try:
        result = subprocess.run(
            [sys.executable, "-m", "deployally", "demo", str(target), "--no-serve"],
            check=False, capture_output=True, text=True, timeout=600,
        )
        with Store(target / "state") as store:
            owner = store.get_meta("engine_id")
            records = {r.name: r.status.value for r in store.definitions()}
        assert result.returncode == 0, result.stdout + result.stderr
        assert "remote: site: revision 1 deployed" in result.stdout
        assert "Read token: da_" in result.stdout and "http://127.0.0.1:18080/" in result.stdout
        assert "git push" in result.stdout
        assert records == {n: "active" for n in ("docs", "heartbeat", "site", "site_checker")}
        assert (target / "work" / "definitions" / "site.yaml").exists()
    finally:
        if owner:
            for c in docker_client.containers.list(
                all=True, filters={"label": f"com.deployally.owner={owner}"}
            ):
                volumes = [m["Name"] for m in c.attrs["Mounts"] if m.get("Type") == "volume"]
                c.remove(force=True)
                for volume in volumes:
                    docker_client.volumes.get(volume).remove(force=True)
            for network in docker_client.networks.list(
                filters={"label": f"com.deployally.owner={owner}"}
            ):
                network.remove()


def test_an_engine_killed_during_a_push_is_one_line_of_push_output(
    push_repo: PushRepo, docker_client: docker.DockerClient
) -> None:
    assert push_repo.push().returncode == 0
    state = push_repo.bare / ".deployally"
    engine = ServeProcess(push_repo.bare, state)
    # Ready only after a few seconds, so the push is still waiting when the engine dies.
    name = push_repo.worker("slow", script="sleep 3; touch /tmp/ready; exec sleep 2147483647",
                           health="test -f /tmp/ready")
    push_repo.commit("Add slow")
    pushing = subprocess.Popen(["git", "push", "origin", "main"], cwd=push_repo.path, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert pushing.stdout is not None
    lines: list[str] = []
    try:
        # The hook prints this right before it asks the engine, and then waits for the answer.
        for line in pushing.stdout:
            lines.append(line)
            if "DeployAlly: deploying" in line:
                break

        def deploying() -> bool:
            with Store(state) as store:
                return any(d.definition_name == name for d in store.deployments(status="running"))

        wait_until(deploying, 60, "the push's deployment to be under way")
    finally:
        engine.stop(signal.SIGKILL)
    output = "".join(lines) + pushing.communicate(timeout=120)[0]

    assert "Traceback" not in output, output
    lost = [line for line in output.splitlines() if "lost the connection to the engine" in line]
    assert len(lost) == 1, output
    assert "deploys when the engine runs again" in lost[0]


def test_a_push_for_a_server_that_is_not_reachable_says_its_deployments_wait(
    defs_repo: object, tmp_path: Path
) -> None:
    """Waiting is no failure: the push output says the server's deployments wait, not "error"."""
    from deployally.serve.hook_client import post_receive

    state = tmp_path / "state"
    with Store(state) as store:
        store.add_server("edge", "staging", "", "agent", None)  # no agent has connected
    defs_repo.worker("app", _extra="server: edge\n")  # type: ignore[attr-defined]
    head = defs_repo.commit("app on the edge server")  # type: ignore[attr-defined]
    lines: list[str] = []
    post_receive(defs_repo.path / ".git", "main", head, lines.append, state)  # type: ignore[attr-defined]
    said = "\n".join(lines)
    assert "server edge is unreachable" in said and "its deployments wait" in said, said
    assert not [line for line in lines if line.startswith("error:")], said
    assert "1 waiting" in lines[-1], said


# ---------------------------------------------------------------- the hooks through a running engine


def spy_on_deployally(push_repo: PushRepo) -> Path:
    """Make the hooks' own `deployally` runs leave a mark: the returned file lists each one."""
    marks = push_repo.bare.parent / "deployally-runs"
    spy = push_repo.bare.parent / "deployally-spy"
    spy.write_text(f'#!/bin/sh\necho "$*" >> "{marks}"\nexec "{sys.executable}" -m deployally "$@"\n')
    spy.chmod(0o755)
    command = f'"{sys.executable}" -m deployally'
    for name in ("pre-receive", "post-receive"):
        hook = push_repo.bare / "hooks" / name
        text = hook.read_text()
        assert command in text
        hook.write_text(text.replace(command, f'"{spy}"'))
    return marks


def hook_count(engine: ServeProcess, hook: str, outcome: str) -> float:
    """deployally_git_hooks_total{hook, outcome} from the engine's /metrics."""
    text = engine.session.get(f"{engine.url}/metrics", timeout=30).text
    for line in text.splitlines():
        if line.startswith(f'deployally_git_hooks_total{{hook="{hook}",outcome="{outcome}"}}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def error_lines(output: str) -> list[str]:
    return [line.strip() for line in output.splitlines() if line.startswith("remote: error:")]


def test_with_the_engine_up_a_push_is_validated_and_reported_by_the_engine_alone(
    push_repo: PushRepo, docker_client: docker.DockerClient
) -> None:
    marks = spy_on_deployally(push_repo)
    state = push_repo.bare / ".deployally"
    engine = ServeProcess(push_repo.bare, state)
    try:
        name = push_repo.worker("web", message="one")
        push_repo.commit("Add web")
        pushed = push_repo.push()
        assert pushed.returncode == 0, pushed.stdout
        assert f"remote: {name}: revision 1 deployed" in pushed.stdout, pushed.stdout
        assert "remote: DeployAlly: 1 deployed, 0 failed" in pushed.stdout
        assert "1 definition(s) valid in" in pushed.stdout
        assert not marks.exists(), marks.read_text()  # no deployally process: the engine did both
        assert hook_count(engine, "pre-receive", "accepted") == 1
        assert hook_count(engine, "post-receive", "reported") == 1
        assert "pre-receive: push accepted" in engine.log()
        before = docker_client.containers.get(name).id

        push_repo.write(f"definitions/{name}.yaml", f"name: {name}\ntemplate: no/such/template/1\n")
        bad = push_repo.commit("Break web")
        refused = push_repo.push()
        assert refused.returncode != 0
        assert "remote: DeployAlly: push refused" in refused.stdout
        assert not marks.exists(), marks.read_text()
        assert hook_count(engine, "pre-receive", "refused") == 1
        # The engine read the pushed commit from git's quarantine; refused, it never landed.
        assert subprocess.run(["git", "cat-file", "-e", bad], cwd=push_repo.bare,
                              check=False).returncode != 0
        assert docker_client.containers.get(name).id == before
    finally:
        assert engine.stop() == 0
    assert not (state / "hook.curlrc").exists()  # a stopped engine leaves the hooks no way in

    # With no engine, deployally validates in the hook: the same words, line for line.
    in_process = push_repo.push()
    assert in_process.returncode != 0 and marks.read_text().startswith("validate ")
    assert error_lines(in_process.stdout) == error_lines(refused.stdout)
    assert [e for e in error_lines(refused.stdout) if f"definitions/{name}.yaml" in e
            and "template" in e]


def test_without_curl_or_with_a_dead_engine_the_hooks_do_the_work_themselves(
    push_repo: PushRepo, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    marks = spy_on_deployally(push_repo)
    state = push_repo.bare / ".deployally"
    engine = ServeProcess(push_repo.bare, state)
    try:
        # No curl on PATH: deployally validates, and asks the engine to deploy.
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        git = subprocess.run(["sh", "-c", "command -v git"], capture_output=True, text=True,
                             check=True).stdout.strip()
        (bin_dir / "git").symlink_to(git)
        name = push_repo.worker("web", message="one")
        push_repo.commit("Add web")
        pushed = subprocess.run(["git", "push", "origin", "main"], cwd=push_repo.path, check=False,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "PATH": str(bin_dir)})
        assert pushed.returncode == 0, pushed.stdout
        assert f"remote: {name}: revision 1 deployed" in pushed.stdout, pushed.stdout
        assert "deploying here" not in pushed.stdout  # the engine deployed it
        runs = marks.read_text().splitlines()
        assert [r.split()[0] for r in runs] == ["validate", "hook"], runs
        assert hook_count(engine, "pre-receive", "accepted") == 0
    finally:
        engine.stop(signal.SIGKILL)  # what a crash leaves: engine.json and hook.curlrc
    assert (state / "hook.curlrc").exists() and (state / "engine.json").exists()
    marks.unlink()

    push_repo.worker("web", message="two")
    push_repo.commit("Change web")
    pushed = push_repo.push()
    assert pushed.returncode == 0, pushed.stdout
    assert "no engine answers" in pushed.stdout and "deploying here" in pushed.stdout
    assert f"remote: {name}: revision 2 deployed" in pushed.stdout, pushed.stdout
    assert "Traceback" not in pushed.stdout and "curl:" not in pushed.stdout
    assert [r.split()[0] for r in marks.read_text().splitlines()] == ["validate", "hook"]
    assert revision_of(docker_client, name) == "2"


def test_the_hook_endpoint_takes_only_the_hook_token_and_this_repositorys_quarantine(
    push_repo: PushRepo, tmp_path: Path
) -> None:
    state = push_repo.bare / ".deployally"
    assert push_repo.push().returncode == 0
    head = subprocess.run(["git", "rev-parse", "main"], cwd=push_repo.bare, check=True,
                          capture_output=True, text=True).stdout.strip()
    engine = ServeProcess(push_repo.bare, state)
    try:
        config = state / "hook.curlrc"
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
        secret = re.search(r"Bearer (da_hook_[\w-]+)", config.read_text())
        assert secret is not None
        hook_token = secret.group(1)
        # Nowhere a pusher reads: not in the hooks, the repository's config, or engine.json.
        for path in (*(push_repo.bare / "hooks").iterdir(), push_repo.bare / "config",
                     state / "engine.json"):
            assert hook_token not in path.read_text(), path
        url = f"{engine.url}/api/v1/hook"
        form = {"hook": "pre-receive", "repo": str(push_repo.bare), "commit": head}

        def post(token: str, **changes: str) -> requests.Response:
            return requests.post(url, data={**form, **changes}, timeout=60,
                                 headers={"Authorization": f"Bearer {token}"})

        ok = post(hook_token)
        assert ok.status_code == 200 and "definition(s) valid in" in ok.text, ok.text
        # An API token, even the engine's own write token, does not open this endpoint.
        assert post(engine.token).status_code == 401
        other = tmp_path / "other.git"
        subprocess.run(["git", "init", "-q", "--bare", str(other)], check=True)
        assert post(hook_token, repo=str(other)).status_code == 409
        outside = tmp_path / "tmp_objdir-incoming-x"
        outside.mkdir()
        for quarantine in (str(outside), str(push_repo.bare / "objects"),
                           str(push_repo.bare / "objects" / "tmp_objdir-incoming-nope")):
            answer = post(hook_token, quarantine=quarantine)
            assert answer.status_code == 400 and "quarantine" in answer.text, answer.text
    finally:
        assert engine.stop() == 0
