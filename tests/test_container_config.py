"""ContainerSpec -> docker-py create arguments, and Docker list/inspect documents -> our types."""

from __future__ import annotations

from datetime import UTC, datetime

from deployally.drivers.local import container_config
from deployally.types import (
    LABEL_MANAGED,
    LABEL_NAME,
    LABEL_OWNER,
    LABEL_PRUNE_VOLUMES,
    LABEL_REVISION,
    ConfigFile,
    ContainerSpec,
    Healthcheck,
    InstanceHealth,
    InstanceState,
    PortBinding,
    VolumeMount,
)

SPEC = ContainerSpec(
    name="web",
    definition_id="def_1",
    template_id="tpl_1",
    image="busybox:stable",
    command=("sh", "-c", "echo <secret:TOKEN>"),
    env=(("PASSWORD", "<secret:DB>"),),
    labels=(("team", "ops"),),
    ports=(PortBinding(8080, host_port=18080), PortBinding(9090)),
    volumes=(VolumeMount("web_data", "/data"),),
    files=(ConfigFile("/etc/app.conf", "x"),),
    restart="on-failure:3",
    cpus=0.5,
    healthcheck=Healthcheck(("wget -q -O- localhost:8080",), interval_s=2, start_period_s=1),
    stop_grace_s=2.5,
    prune_volumes=True,
    rendered_hash="sha256:abc",
)


def _resolve(text: str) -> str:
    return text.replace("<secret:TOKEN>", "t0k").replace("<secret:DB>", "pw")


def _args() -> dict[str, object]:
    return container_config.create_args(
        SPEC,
        revision=7,
        commit="c0ffee",
        server="local",
        owner="eng_1",
        resolve=_resolve,
        file_mounts=[],
        api_version="1.41",
    )


def test_secrets_are_resolved_in_command_and_env_only() -> None:
    args = _args()
    assert args["command"] == ["sh", "-c", "echo t0k"]
    assert args["environment"] == ["PASSWORD=pw"]
    assert "pw" not in str(args["labels"])


def test_labels_carry_bookkeeping_and_the_spec_labels() -> None:
    labels = container_config.labels(
        SPEC, revision=7, commit="c0ffee", server="local", owner="eng_1"
    )
    assert labels["team"] == "ops"
    assert labels[LABEL_MANAGED] == "true"
    assert labels[LABEL_NAME] == "web"
    assert labels[LABEL_OWNER] == "eng_1"
    assert labels[LABEL_REVISION] == "7"
    assert labels[LABEL_PRUNE_VOLUMES] == "true"
    no_rev = container_config.labels(SPEC, revision=None, commit=None, server="s", owner="")
    assert LABEL_REVISION not in no_rev


def test_host_config_publishes_only_host_ports_and_mounts_volumes() -> None:
    host = _args()["host_config"]
    assert isinstance(host, dict)
    assert host["PortBindings"] == {"8080/tcp": [{"HostIp": "", "HostPort": "18080"}]}
    assert [m["Target"] for m in host["Mounts"]] == ["/data"]
    assert host["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert host["NanoCpus"] == 500_000_000


def test_stop_timeout_rounds_the_grace_up() -> None:
    assert _args()["stop_timeout"] == 3


def test_restart_policy_from_compose_text() -> None:
    assert container_config.restart_policy("no") == {"Name": ""}
    assert container_config.restart_policy("always") == {"Name": "always"}


def test_healthcheck_wraps_a_bare_command_in_cmd_shell() -> None:
    hc = container_config.healthcheck(SPEC, _resolve)
    assert hc is not None
    assert hc["test"] == ["CMD-SHELL", "wget -q -O- localhost:8080"]
    assert hc["interval"] == 2_000_000_000
    assert hc["start_period"] == 1_000_000_000


def test_health_from_status_text() -> None:
    assert container_config.health_from_status("Up 3 seconds (healthy)") == "healthy"
    assert container_config.health_from_status("Up 1 second (health: starting)") == "starting"
    assert container_config.health_from_status("Up 2 minutes (unhealthy)") == "unhealthy"
    assert container_config.health_from_status("Up 2 minutes") is None


def test_live_instance_skips_the_old_container_of_a_rollout() -> None:
    row = {
        "Id": "abc",
        "Names": ["/web"],
        "Labels": {LABEL_NAME: "web", LABEL_REVISION: "4"},
        "State": "running",
        "Status": "Up (healthy)",
        "Image": "busybox:stable",
        "Created": 0,
    }
    live = container_config.live_instance(row)
    assert live is not None
    assert (live.name, live.revision, live.health) == ("web", 4, InstanceHealth.HEALTHY)
    assert live.state is InstanceState.RUNNING and live.ref == "abc"
    assert container_config.live_instance({**row, "Names": ["/web.old"]}) is None


def test_started_at_takes_docker_nanoseconds() -> None:
    info = {"State": {"Running": True, "StartedAt": "2026-02-10T08:00:00.123456789Z"}}
    assert container_config.started_at(info) == datetime(2026, 2, 10, 8, 0, 0, 123456, tzinfo=UTC)
    assert container_config.started_at({"State": {"Running": False}}) is None


def test_stop_timeout_reads_the_containers_own_grace() -> None:
    assert container_config.stop_timeout({"Config": {"StopTimeout": 5}}) == 5
    assert container_config.stop_timeout({"Config": {}}) is None
