"""The local driver against a real Docker engine and the locally built busybox image."""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from deployally import secrets
from deployally.drivers.base import DriverConfig
from deployally.drivers.local.driver import LocalDriver
from deployally.drivers.local.ownership import Adopted
from deployally.errors import NotFound
from deployally.identity import content_hash, definition_id
from deployally.store import Store
from deployally.types import (
    LABEL_COMMIT,
    LABEL_DEFINITION,
    LABEL_MANAGED,
    LABEL_NAME,
    LABEL_OWNER,
    LABEL_PRUNE_VOLUMES,
    LABEL_RENDERED_HASH,
    LABEL_REVISION,
    LABEL_SERVER,
    Action,
    ActionKind,
    ApplyResult,
    ConfigFile,
    ContainerSpec,
    DeploymentStatus,
    Healthcheck,
    InstanceSettings,
    PortBinding,
    VolumeMount,
)

pytestmark = pytest.mark.docker

SERVE = ("sh", "-c", "echo started; mkdir -p /data; exec httpd -f -p 8080 -h /data")
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def make_spec(prefix: str, image: str, **over: Any) -> ContainerSpec:
    """A busybox spec on the test's own network, hashed like render would."""
    name = over.pop("name", f"{prefix}app")
    base = ContainerSpec(
        name=name,
        definition_id=definition_id(name),
        template_id="tpl_000000000000",
        image=image,
        command=SERVE,
        env=(("GREETING", "hello"),),
        labels=(("org.example.team", "platform"),),
        volumes=(VolumeMount(name=f"{name}_data", mount_path="/data"),),
        files=(ConfigFile(mount_path="/etc/app.conf", content="port=8080\n"),),
        stop_signal="SIGKILL",
        network=f"{prefix}net",
    )
    spec = dataclasses.replace(base, **over)
    fields = {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}
    fields.pop("rendered_hash")
    return dataclasses.replace(spec, rendered_hash=content_hash(repr(sorted(fields.items()))))


class Recorder:
    """Collects what the driver logs, as a deployment would."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def no_secrets(text: str) -> str:
    return text


def apply(
    driver: LocalDriver,
    kind: ActionKind,
    spec: ContainerSpec | None,
    *,
    name: str | None = None,
    revision: int = 1,
    log: Recorder | None = None,
    resolve: Any = no_secrets,
) -> ApplyResult:
    action = Action(kind=kind, name=name or (spec.name if spec else ""), desired=spec, live=None)
    return driver.apply(
        action, revision=revision, commit=COMMIT, resolve=resolve, log=log or Recorder()
    )


def run_in(client: docker.DockerClient, image: str, network: str, script: str, prefix: str) -> str:
    """Run a throwaway container on `network` and return its output."""
    out = client.containers.run(
        image,
        ["sh", "-c", script],
        network=network,
        remove=True,
        labels={"com.deployally.test": prefix},
    )
    assert isinstance(out, bytes)
    return out.decode()


def exec_in(client: docker.DockerClient, name: str, script: str) -> str:
    result = client.containers.get(name).exec_run(["sh", "-c", script])
    assert result.exit_code == 0, result.output
    assert isinstance(result.output, bytes)
    return result.output.decode()


@pytest.fixture
def driver(
    docker_client: docker.DockerClient, busybox_image: str, state_dir: Path, names: str,
    claims: Store,
) -> LocalDriver:
    # Owned by this test alone: recover() and prune never reach another engine's containers.
    return LocalDriver(
        state_dir, client=docker_client, config=DriverConfig(health_timeout_s=30, min_ready_s=1.0),
        owner=names, claims=claims,
    )


def test_create_runs_a_labelled_container_on_the_network(
    driver: LocalDriver, docker_client: docker.DockerClient, busybox_image: str, names: str
) -> None:
    spec = make_spec(names, busybox_image)
    log = Recorder()

    result = apply(driver, ActionKind.CREATE, spec, revision=3, log=log)

    assert result.status is DeploymentStatus.SUCCESS, log.text
    info = docker_client.api.inspect_container(spec.name)
    assert info["Id"] == result.ref
    assert info["State"]["Running"]
    # Set once the container proved ready (it runs without one during the health gate).
    assert info["HostConfig"]["RestartPolicy"]["Name"] == spec.restart
    labels = info["Config"]["Labels"]
    assert labels["org.example.team"] == "platform"
    assert labels[LABEL_MANAGED] == "true"
    assert labels[LABEL_DEFINITION] == spec.definition_id
    assert labels[LABEL_NAME] == spec.name
    assert labels[LABEL_REVISION] == "3"
    assert labels[LABEL_RENDERED_HASH] == spec.rendered_hash
    assert labels[LABEL_COMMIT] == COMMIT
    assert labels[LABEL_SERVER] == "local"
    assert LABEL_PRUNE_VOLUMES not in labels
    assert "GREETING=hello" in info["Config"]["Env"]
    assert info["Config"]["StopSignal"] == "SIGKILL"
    # Nothing is published unless a host port is asked for.
    assert not info["HostConfig"]["PortBindings"]
    assert docker_client.volumes.get(f"{spec.name}_data").attrs["Labels"][LABEL_MANAGED] == "true"
    assert exec_in(docker_client, spec.name, "cat /etc/app.conf") == "port=8080\n"
    assert "Read-only" in exec_in(
        docker_client, spec.name, "echo x > /etc/app.conf 2>&1 || echo Read-only"
    )
    # Another container on the network reaches it by name.
    exec_in(docker_client, spec.name, "echo pong > /data/index.html")
    assert "pong" in run_in(
        docker_client, busybox_image, spec.network, f"wget -qO- http://{spec.name}:8080/", names
    )
    assert "created container" in log.text


def test_create_publishes_only_the_asked_host_port(
    driver: LocalDriver, docker_client: docker.DockerClient, busybox_image: str, names: str
) -> None:
    spec = make_spec(
        names,
        busybox_image,
        volumes=(),
        ports=(PortBinding(8080, host_port=18080 + int(names[1:], 16) % 1000), PortBinding(9090)),
    )

    assert apply(driver, ActionKind.CREATE, spec).status is DeploymentStatus.SUCCESS
    bindings = docker_client.api.inspect_container(spec.name)["HostConfig"]["PortBindings"]
    assert list(bindings) == ["8080/tcp"]


def test_update_keeps_volume_data_and_replaces_the_container(
    driver: LocalDriver, docker_client: docker.DockerClient, busybox_image: str, names: str
) -> None:
    spec = make_spec(names, busybox_image)
    first = apply(driver, ActionKind.CREATE, spec)
    exec_in(docker_client, spec.name, "echo kept > /data/file")
    changed = make_spec(names, busybox_image, env=(("GREETING", "bonjour"),))
    log = Recorder()

    result = apply(driver, ActionKind.UPDATE, changed, revision=2, log=log)

    assert result.status is DeploymentStatus.SUCCESS, log.text
    assert result.ref != first.ref
    assert exec_in(docker_client, spec.name, "cat /data/file; echo $GREETING") == "kept\nbonjour\n"
    assert "removed old container" in log.text
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(f"{spec.name}.old")
    live = driver.live()
    assert live[spec.name].revision == 2
    assert live[spec.name].rendered_hash == changed.rendered_hash


@pytest.mark.parametrize(
    "broken",
    [
        {"command": ("sh", "-c", "echo boom-from-new; exit 1")},
        {
            "healthcheck": Healthcheck(
                test=("CMD-SHELL", "test -e /nope"), interval_s=0.2, timeout_s=1, retries=2
            )
        },
    ],
    ids=["exits", "unhealthy"],
)
def test_failed_update_rolls_back_to_the_old_container(
    driver: LocalDriver,
    docker_client: docker.DockerClient,
    busybox_image: str,
    names: str,
    broken: dict[str, Any],
) -> None:
    spec = make_spec(names, busybox_image)
    first = apply(driver, ActionKind.CREATE, spec)
    exec_in(docker_client, spec.name, "echo kept > /data/file")
    log = Recorder()

    result = apply(driver, ActionKind.UPDATE, make_spec(names, busybox_image, **broken), log=log)

    assert result.status is DeploymentStatus.ROLLED_BACK
    assert result.ref == first.ref
    info = docker_client.api.inspect_container(spec.name)
    assert info["Id"] == first.ref
    assert info["State"]["Running"]
    assert exec_in(docker_client, spec.name, "cat /data/file") == "kept\n"
    expected = "exited with code 1" if "command" in broken else "unhealthy"
    assert expected in result.message
    assert expected in log.text
    assert "rolled back" in log.text
    if "command" in broken:
        assert "boom-from-new" in log.text  # the failing container's own last lines
    assert len([c for c in docker_client.api.containers(all=True) if names in c["Names"][0]]) == 1


def test_healthcheck_gated_update_waits_for_healthy(
    driver: LocalDriver, docker_client: docker.DockerClient, busybox_image: str, names: str
) -> None:
    check = Healthcheck(
        test=("CMD-SHELL", "test -e /tmp/ready"), interval_s=0.2, timeout_s=1, retries=50
    )
    spec = make_spec(names, busybox_image, volumes=(), healthcheck=check)
    apply(driver, ActionKind.CREATE, make_spec(names, busybox_image, volumes=()))
    slow = make_spec(
        names,
        busybox_image,
        volumes=(),
        healthcheck=check,
        command=("sh", "-c", "sleep 1; touch /tmp/ready; exec sleep 3600"),
    )
    log = Recorder()

    result = apply(driver, ActionKind.UPDATE, slow, log=log)

    assert result.status is DeploymentStatus.SUCCESS, log.text
    assert "waiting for health" in log.text
    assert "healthy after" in log.text
    live = driver.live()[spec.name]
    assert live.health == "healthy"
    assert live.state == "running"


def test_remove_keeps_volumes_unless_prune(
    driver: LocalDriver, docker_client: docker.DockerClient, busybox_image: str, names: str
) -> None:
    kept = make_spec(names, busybox_image, name=f"{names}kept")
    pruned = make_spec(names, busybox_image, name=f"{names}pruned", prune_volumes=True)
    for spec in (kept, pruned):
        assert apply(driver, ActionKind.CREATE, spec).status is DeploymentStatus.SUCCESS

    for spec in (kept, pruned):
        result = apply(driver, ActionKind.REMOVE, None, name=spec.name)
        assert result.status is DeploymentStatus.SUCCESS

    assert kept.name not in driver.live() and pruned.name not in driver.live()
    docker_client.volumes.get(f"{kept.name}_data")
    with pytest.raises(docker.errors.NotFound):
        docker_client.volumes.get(f"{pruned.name}_data")


def test_live_reports_each_managed_container_once(
    driver: LocalDriver, docker_client: docker.DockerClient, busybox_image: str, names: str
) -> None:
    a = make_spec(names, busybox_image, name=f"{names}a", volumes=())
    b = make_spec(names, busybox_image, name=f"{names}b", volumes=())
    apply(driver, ActionKind.CREATE, a, revision=4)
    apply(driver, ActionKind.CREATE, b, revision=7)
    driver.stop(b.name)
    # An unmanaged container with our prefix is not an instance.
    docker_client.containers.create(busybox_image, ["sleep", "60"], name=f"{names}stray")

    calls: list[str] = []
    real = docker_client.api.containers

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append("containers")
        return real(*args, **kwargs)

    docker_client.api.containers = counting  # type: ignore[method-assign]
    try:
        live = driver.live()
    finally:
        del docker_client.api.containers

    ours = {k: v for k, v in live.items() if k.startswith(names)}
    assert sorted(ours) == [a.name, b.name]
    assert calls == ["containers"]
    assert ours[a.name].revision == 4 and ours[a.name].rendered_hash == a.rendered_hash
    assert ours[a.name].state == "running" and ours[a.name].health is None
    assert ours[b.name].revision == 7 and ours[b.name].state == "exited"
    assert ours[a.name].definition_id == a.definition_id
    assert ours[a.name].commit == COMMIT


def test_recover_after_a_crash_mid_update_restores_one_running_container(
    driver: LocalDriver, docker_client: docker.DockerClient, busybox_image: str, names: str
) -> None:
    spec = make_spec(names, busybox_image)
    first = apply(driver, ActionKind.CREATE, spec)
    assert first.ref is not None
    # The crash: the old container was renamed and a half-made new one never started.
    docker_client.api.rename(first.ref, f"{spec.name}.old")
    half = docker_client.api.create_container(
        busybox_image, ["sleep", "60"], name=spec.name, labels={LABEL_MANAGED: "true"}
    )
    assert spec.name not in driver.live() or driver.live()[spec.name].state != "running"
    log = Recorder()

    driver.recover(log)

    info = docker_client.api.inspect_container(spec.name)
    assert info["Id"] == first.ref
    assert info["State"]["Running"]
    with pytest.raises(docker.errors.NotFound):
        docker_client.api.inspect_container(half["Id"])
    with pytest.raises(docker.errors.NotFound):
        docker_client.api.inspect_container(f"{spec.name}.old")
    assert f"recovered {spec.name}" in log.text


def wait_for_health(client: docker.DockerClient, container_id: str, status: str) -> None:
    """Poll until Docker reports `status` for the container's healthcheck (a wait, not a check)."""
    for _ in range(240):
        if client.api.inspect_container(container_id)["State"]["Health"]["Status"] == status:
            return
        time.sleep(0.25)


SECOND_NS = 1_000_000_000


@pytest.mark.parametrize(
    ("check", "health", "kept"),
    [
        (["CMD", "false"], "unhealthy", False),
        # An hour-long interval and start period: killed while the check is still starting.
        (["CMD", "true"], "starting", False),
        (["CMD", "true"], "healthy", True),
        (None, None, True),
    ],
    ids=["unhealthy", "starting", "healthy", "no-healthcheck"],
)
def test_recover_after_a_crash_in_the_health_wait_keeps_only_a_proven_container(
    docker_client: docker.DockerClient,
    busybox_image: str,
    names: str,
    state_dir: Path,
    claims: Store,
    check: list[str] | None,
    health: str | None,
    kept: bool,
) -> None:
    driver = LocalDriver(
        state_dir, client=docker_client, config=DriverConfig(health_timeout_s=30, min_ready_s=1.0),
        owner=names, claims=claims,
    )
    spec = make_spec(names, busybox_image)
    first = apply(driver, ActionKind.CREATE, spec)
    assert first.status is DeploymentStatus.SUCCESS and first.ref is not None
    # The crash, as a rollout leaves it: the old container renamed and (sharing a volume)
    # stopped, the new one started under the name, the engine killed while waiting for health.
    docker_client.api.rename(first.ref, f"{spec.name}.old")
    docker_client.api.stop(first.ref)
    interval = 3600 if health == "starting" else 1
    new = docker_client.api.create_container(
        busybox_image,
        ["sleep", "3600"],
        name=spec.name,
        labels={LABEL_MANAGED: "true", LABEL_OWNER: names},
        healthcheck=None
        if check is None
        else {
            "test": check,
            "interval": interval * SECOND_NS,
            "start_period": interval * SECOND_NS,
            "retries": 1,
        },
    )
    docker_client.api.start(new["Id"])
    if health is not None:
        wait_for_health(docker_client, new["Id"], health)
    new_state = docker_client.api.inspect_container(new["Id"])["State"]
    assert new_state["Running"]
    assert (new_state.get("Health") or {}).get("Status") == health
    log = Recorder()

    driver.recover(log)

    info = docker_client.api.inspect_container(spec.name)
    assert info["State"]["Running"]
    gone = first.ref if kept else new["Id"]
    assert info["Id"] == (new["Id"] if kept else first.ref)
    with pytest.raises(docker.errors.NotFound):
        docker_client.api.inspect_container(gone)
    with pytest.raises(docker.errors.NotFound):
        docker_client.api.inspect_container(f"{spec.name}.old")
    if not kept:
        # The restored container still has the definition's data and its old spec's hash,
        # so the next sync's plan redoes the update.
        assert driver.live()[spec.name].rendered_hash == spec.rendered_hash
    assert f"recovered {spec.name}" in log.text


def test_secret_values_reach_env_but_never_labels_or_logs(
    driver: LocalDriver, docker_client: docker.DockerClient, busybox_image: str, names: str
) -> None:
    value = "s3cr3t-" + names
    spec = make_spec(
        names,
        busybox_image,
        volumes=(),
        env=(("PASSWORD", secrets.placeholder("db_root")),),
        labels=(("org.example.pw", secrets.placeholder("db_root")),),
        command=("sh", "-c", 'echo "password is $PASSWORD"; exit 1'),
    )
    log = Recorder()

    def resolve(text: str) -> str:
        return secrets.resolve(text, lambda name: value)

    result = apply(driver, ActionKind.CREATE, spec, log=log, resolve=resolve)

    assert result.status is DeploymentStatus.FAILED
    assert "password is <secret:db_root>" in log.text  # the container's output, masked
    assert value not in log.text and value not in result.message

    ok = dataclasses.replace(spec, command=SERVE)
    log = Recorder()
    assert apply(driver, ActionKind.CREATE, ok, log=log, resolve=resolve).status is (
        DeploymentStatus.SUCCESS
    )
    info = docker_client.api.inspect_container(spec.name)
    assert f"PASSWORD={value}" in info["Config"]["Env"]
    assert all(value not in v for v in info["Config"]["Labels"].values())
    assert value not in log.text


def test_operator_actions_and_missing_names(
    driver: LocalDriver, docker_client: docker.DockerClient, busybox_image: str, names: str
) -> None:
    spec = make_spec(names, busybox_image, volumes=())
    apply(driver, ActionKind.CREATE, spec)

    driver.stop(spec.name)
    assert driver.live()[spec.name].state == "exited"
    result = apply(driver, ActionKind.START, None, name=spec.name)
    assert result.status is DeploymentStatus.SUCCESS
    driver.restart(spec.name)
    assert driver.live()[spec.name].state == "running"
    with pytest.raises(NotFound):
        driver.start(f"{names}missing")


def test_missing_image_fails_without_touching_the_running_container(
    driver: LocalDriver, docker_client: docker.DockerClient, busybox_image: str, names: str
) -> None:
    spec = make_spec(names, busybox_image, volumes=())
    first = apply(driver, ActionKind.CREATE, spec)
    log = Recorder()

    result = apply(
        driver, ActionKind.UPDATE, make_spec(names, f"{names}/nowhere:1", volumes=()), log=log
    )

    assert result.status is DeploymentStatus.FAILED
    assert f"{names}/nowhere:1" in result.message
    assert "pulling" in log.text
    assert docker_client.api.inspect_container(spec.name)["Id"] == first.ref


def test_parallel_creates_share_one_new_network(
    driver: LocalDriver, docker_client: docker.DockerClient, busybox_image: str, names: str
) -> None:
    specs = [make_spec(names, busybox_image, name=f"{names}p{i}", volumes=()) for i in range(4)]

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda s: apply(driver, ActionKind.CREATE, s), specs))

    assert [r.status for r in results] == [DeploymentStatus.SUCCESS] * 4
    networks = [n for n in docker_client.api.networks() if n["Name"] == f"{names}net"]
    assert len(networks) == 1
    ours = {k for k in driver.live() if k.startswith(names)}
    assert ours == {s.name for s in specs}


def test_update_drops_the_old_config_files(
    driver: LocalDriver, docker_client: docker.DockerClient, busybox_image: str, names: str
) -> None:
    spec = make_spec(names, busybox_image, volumes=())
    apply(driver, ActionKind.CREATE, spec)
    changed = make_spec(
        names, busybox_image, volumes=(), files=(ConfigFile("/etc/app.conf", "port=9090\n"),)
    )

    assert apply(driver, ActionKind.UPDATE, changed).status is DeploymentStatus.SUCCESS

    assert exec_in(docker_client, spec.name, "cat /etc/app.conf") == "port=9090\n"
    left = list((driver.state_dir / "files" / spec.name).iterdir())
    assert [d.name for d in left] == [changed.rendered_hash.split(":")[1][:12]]


def test_a_config_file_never_gets_setuid_setgid_or_sticky_bits_on_the_host(
    driver: LocalDriver, docker_client: docker.DockerClient, busybox_image: str, names: str
) -> None:
    # A spec stored before modes were checked may still carry them: the host file must not.
    spec = make_spec(
        names, busybox_image, volumes=(), files=(ConfigFile("/etc/app.conf", "x\n", 0o7777),)
    )

    assert apply(driver, ActionKind.CREATE, spec).status is DeploymentStatus.SUCCESS

    written = [p for p in (driver.state_dir / "files" / spec.name).rglob("*") if p.is_file()]
    assert written and all(p.stat().st_mode & 0o7000 == 0 for p in written)
    assert exec_in(docker_client, spec.name, "stat -c %a /etc/app.conf").strip() == "777"


def test_a_backup_excluding_caches_leaves_out_the_secrets_of_config_files(
    driver: LocalDriver, docker_client: docker.DockerClient, busybox_image: str, names: str
) -> None:
    import subprocess

    value = "filed-s3cret-" + names
    spec = make_spec(names, busybox_image, volumes=(), files=(
        ConfigFile("/etc/app.conf", f"password={secrets.placeholder('db_root')}\n"),))

    def resolve(text: str) -> str:
        return secrets.resolve(text, lambda name: value)

    assert apply(driver, ActionKind.CREATE, spec, resolve=resolve).status is DeploymentStatus.SUCCESS

    assert exec_in(docker_client, spec.name, "cat /etc/app.conf") == f"password={value}\n"
    # Docker needs the host file at every start, so it is there, in plaintext (README,
    # Secrets) — under files/, which is tagged so that backups can leave it out.
    files = driver.state_dir / "files"
    assert (files / "CACHEDIR.TAG").read_text().startswith(
        "Signature: 8a477f597d28d172789f06886806bc55")
    assert files.stat().st_mode & 0o077 == 0
    backup = subprocess.run(["tar", "--exclude-caches", "-C", str(driver.state_dir), "-cf", "-",
                             "."], capture_output=True, check=True).stdout
    assert value.encode() not in backup  # before: the file went into the backup
    assert b"CACHEDIR.TAG" in backup


def test_a_driver_without_an_owner_is_refused(state_dir: Path, claims: Store) -> None:
    with pytest.raises(ValueError, match="owning engine"):
        LocalDriver(state_dir, owner="", claims=claims)


def test_recover_and_live_leave_another_engines_containers_alone(
    driver: LocalDriver, docker_client: docker.DockerClient, busybox_image: str, names: str
) -> None:
    # Another engine on this host, mid-rollout: its old container renamed `.old`.
    foreign = docker_client.api.create_container(
        busybox_image,
        ["sleep", "3600"],
        name=f"{names}other.old",
        labels={LABEL_MANAGED: "true", LABEL_OWNER: f"{names}-someone-else"},
    )
    docker_client.api.start(foreign["Id"])
    spec = make_spec(names, busybox_image)
    assert apply(driver, ActionKind.CREATE, spec).status is DeploymentStatus.SUCCESS

    driver.recover(Recorder())

    assert docker_client.api.inspect_container(foreign["Id"])["State"]["Running"]
    assert set(driver.live()) == {spec.name}


# ---------------------------------------------------------------- volumes and networks it did not make


def test_a_volume_this_engine_did_not_create_is_refused_before_anything_running_is_touched(
    driver: LocalDriver, docker_client: docker.DockerClient, busybox_image: str, names: str
) -> None:
    spec = make_spec(names, busybox_image)
    first = apply(driver, ActionKind.CREATE, spec)
    assert first.status is DeploymentStatus.SUCCESS
    # Someone else's volume with the name a new mount of the definition would take.
    docker_client.api.create_volume(f"{spec.name}_cache", labels={"org.example": "theirs"})
    more = spec.volumes + (VolumeMount(f"{spec.name}_cache", "/cache"),)
    log = Recorder()

    result = apply(driver, ActionKind.UPDATE, make_spec(names, busybox_image, volumes=more), log=log)

    assert result.status is DeploymentStatus.FAILED
    assert f"volume {spec.name}_cache exists" in result.message
    assert f"adopt: {{volumes: [{spec.name}_cache]}}" in result.message
    assert "engine.yaml" in result.message and result.message in log.text
    info = docker_client.api.inspect_container(spec.name)
    assert info["Id"] == first.ref and info["State"]["Running"]
    assert "renamed" not in log.text


@pytest.mark.parametrize("labels", [{}, {LABEL_MANAGED: "true", LABEL_OWNER: "eng_someone_else"}])
def test_a_network_this_engine_did_not_create_is_never_joined(
    driver: LocalDriver,
    docker_client: docker.DockerClient,
    busybox_image: str,
    names: str,
    labels: dict[str, str],
) -> None:
    docker_client.api.create_network(f"{names}net", driver="bridge", labels=labels)
    spec = make_spec(names, busybox_image, volumes=())

    result = apply(driver, ActionKind.CREATE, spec)

    assert result.status is DeploymentStatus.FAILED
    assert f"network {names}net exists" in result.message
    assert f"adopt: {{networks: [{names}net]}}" in result.message
    assert not docker_client.api.containers(all=True, filters={"name": spec.name})


def test_what_the_operator_adopted_is_used_and_never_pruned(
    docker_client: docker.DockerClient, busybox_image: str, state_dir: Path, names: str,
    claims: Store,
) -> None:
    docker_client.api.create_network(f"{names}net", driver="bridge")
    volume = f"{names}legacy"
    docker_client.api.create_volume(volume)
    docker_client.containers.run(
        busybox_image, ["sh", "-c", "echo kept > /v/file"], volumes={volume: {"bind": "/v"}},
        remove=True, labels={"com.deployally.test": names},
    )
    driver = LocalDriver(
        state_dir, client=docker_client, config=DriverConfig(health_timeout_s=30, min_ready_s=1.0),
        owner=names, claims=claims,
        adopted=Adopted(volumes=frozenset({volume}), networks=frozenset({f"{names}net"})),
    )
    spec = make_spec(names, busybox_image, volumes=(VolumeMount(volume, "/data"),), prune_volumes=True)

    assert apply(driver, ActionKind.CREATE, spec).status is DeploymentStatus.SUCCESS
    assert exec_in(docker_client, spec.name, "cat /data/file") == "kept\n"
    log = Recorder()
    assert apply(driver, ActionKind.REMOVE, None, name=spec.name, log=log).status is (
        DeploymentStatus.SUCCESS
    )

    assert docker_client.api.inspect_volume(volume)["Name"] == volume
    assert f"kept volume {volume}: adopted in engine.yaml" in log.text


def test_volumes_and_networks_it_creates_carry_its_owner(
    driver: LocalDriver, docker_client: docker.DockerClient, busybox_image: str, names: str
) -> None:
    spec = make_spec(names, busybox_image)
    assert apply(driver, ActionKind.CREATE, spec).status is DeploymentStatus.SUCCESS
    assert docker_client.api.inspect_volume(f"{spec.name}_data")["Labels"][LABEL_OWNER] == names
    assert docker_client.api.inspect_network(f"{names}net")["Labels"][LABEL_OWNER] == names


def legacy_deployment(
    client: docker.DockerClient, image: str, names: str, owner: str
) -> tuple[ContainerSpec, str]:
    """What an engine made before volumes and networks carried an owner: a network and a
    volume labelled managed only, and a running container of that engine using both."""
    spec = make_spec(names, image, prune_volumes=True)
    client.api.create_network(spec.network, driver="bridge", labels={LABEL_MANAGED: "true"})
    client.api.create_volume(
        f"{spec.name}_data", labels={LABEL_MANAGED: "true", LABEL_DEFINITION: spec.definition_id}
    )
    container = client.containers.run(
        image, ["sh", "-c", "echo precious > /data/file; exec sleep 3600"], name=spec.name,
        detach=True, network=spec.network, volumes={f"{spec.name}_data": {"bind": "/data"}},
        labels={LABEL_MANAGED: "true", LABEL_OWNER: owner, LABEL_NAME: spec.name,
                LABEL_DEFINITION: spec.definition_id, LABEL_PRUNE_VOLUMES: "true"},
    )
    for _ in range(100):  # wait for the file, not for a time
        if container.exec_run(["cat", "/data/file"]).exit_code == 0:
            break
        time.sleep(0.1)
    return spec, str(container.id)


def test_after_an_upgrade_what_the_engine_made_before_owner_labels_keeps_working(
    driver: LocalDriver, docker_client: docker.DockerClient, busybox_image: str, names: str,
    claims: Store,
) -> None:
    spec, old_id = legacy_deployment(docker_client, busybox_image, names, owner=names)
    log = Recorder()

    driver.recover(log)  # the first sync after the upgrade

    assert claims.claimed("volume", f"{spec.name}_data") and claims.claimed("network", spec.network)
    assert f"claimed volume {spec.name}_data" in log.text
    result = apply(driver, ActionKind.UPDATE, spec)
    assert result.status is DeploymentStatus.SUCCESS and result.ref != old_id
    assert exec_in(docker_client, spec.name, "cat /data/file") == "precious\n"
    # Removed out of band, then healed: the claim outlives every container that showed it.
    docker_client.api.remove_container(spec.name, force=True)
    assert apply(driver, ActionKind.CREATE, spec).status is DeploymentStatus.SUCCESS
    # It is this engine's, so prune_volumes removes it like any volume it made.
    assert apply(driver, ActionKind.REMOVE, None, name=spec.name).status is DeploymentStatus.SUCCESS
    with pytest.raises(docker.errors.NotFound):
        docker_client.api.inspect_volume(f"{spec.name}_data")
    assert not claims.claimed("volume", f"{spec.name}_data")


def test_an_unowned_volume_used_by_another_engine_is_not_claimed(
    driver: LocalDriver, docker_client: docker.DockerClient, busybox_image: str, names: str,
    claims: Store,
) -> None:
    spec, other_id = legacy_deployment(docker_client, busybox_image, names, owner=f"{names}-other")
    driver.recover(Recorder())
    assert not claims.claimed("volume", f"{spec.name}_data")
    assert not claims.claimed("network", spec.network)
    docker_client.api.remove_container(other_id, force=True)

    result = apply(driver, ActionKind.CREATE, spec)  # its container went; its volume did not

    # A volume nobody uses proves nothing: its data may still be the other engine's.
    assert result.status is DeploymentStatus.FAILED
    assert f"volume {spec.name}_data exists" in result.message
    assert "before volumes and networks carried an owner, and no container uses it" in result.message
    assert not claims.claimed("volume", f"{spec.name}_data")
    # A network nobody is on reaches no one: that one it may take.
    assert claims.claimed("network", spec.network)


def test_a_claimed_network_another_engine_joined_since_is_not_joined(
    driver: LocalDriver, docker_client: docker.DockerClient, busybox_image: str, names: str,
    claims: Store,
) -> None:
    spec, old_id = legacy_deployment(docker_client, busybox_image, names, owner=names)
    driver.recover(Recorder())
    assert claims.claimed("network", spec.network)
    # Since then another engine's container joined it (one not yet upgraded would): with no
    # label to say whose it is, who uses it decides, so this engine stays out of it.
    docker_client.containers.run(
        busybox_image, ["sleep", "3600"], name=f"{names}intruder", detach=True,
        network=spec.network, labels={LABEL_MANAGED: "true", LABEL_OWNER: f"{names}-other"},
    )

    result = apply(driver, ActionKind.UPDATE, spec)

    assert result.status is DeploymentStatus.FAILED
    assert f"network {spec.network} exists" in result.message
    assert "containers that are not this engine's use it" in result.message
    assert docker_client.api.inspect_container(old_id)["State"]["Running"]


def test_settings_are_observed_on_request_and_a_start_puts_the_restart_policy_back(
    driver: LocalDriver, docker_client: docker.DockerClient, busybox_image: str, names: str
) -> None:
    spec = make_spec(names, busybox_image, volumes=(), files=(), memory_bytes=64 * 1024**2)
    assert apply(driver, ActionKind.CREATE, spec).status is DeploymentStatus.SUCCESS
    listed = driver.live()[spec.name]
    assert listed.settings is None  # the list call does not say; an inspect does
    observed = driver.settings(listed).settings
    assert observed == InstanceSettings("unless-stopped", 64 * 1024**2, None)

    docker_client.api.update_container(listed.ref, restart_policy={"Name": "no"})  # out of band
    assert driver.settings(driver.live()[spec.name]).settings == InstanceSettings("no", 64 * 1024**2, None)
    log = Recorder()
    action = Action(ActionKind.START, spec.name, spec, listed)
    result = driver.apply(action, revision=1, commit=COMMIT, resolve=no_secrets, log=log)

    assert result.status is DeploymentStatus.SUCCESS, log.text
    info = docker_client.api.inspect_container(spec.name)
    assert info["Id"] == listed.ref  # healed in place, not replaced
    assert info["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    assert "restart policy 'no' -> 'unless-stopped'" in log.text


def test_another_servers_driver_on_the_same_docker_engine_neither_lists_nor_touches_its_containers(
    driver: LocalDriver, docker_client: docker.DockerClient, busybox_image: str, names: str,
    state_dir: Path, claims: Store,
) -> None:
    # An agent run with server edge's key on the host of `local`: same engine, same owner.
    edge = LocalDriver(state_dir, client=docker_client, owner=names, claims=claims, server="edge")
    spec = make_spec(names, busybox_image, volumes=())
    apply(driver, ActionKind.CREATE, spec)

    assert spec.name not in edge.live()
    assert spec.name in driver.live()
    for act in (edge.stop, edge.restart, edge.start):
        with pytest.raises(NotFound):
            act(spec.name)
    assert docker_client.api.inspect_container(spec.name)["State"]["Running"]
    result = apply(edge, ActionKind.CREATE, spec)
    assert result.status is DeploymentStatus.FAILED
    assert "server local's, not edge's" in (result.message or "")
    assert docker_client.api.inspect_container(spec.name)["State"]["Running"]
