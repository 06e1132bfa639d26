"""What a repository may ask of the host: refused unless engine.yaml allows it, tested with plain data."""

from __future__ import annotations

from typing import Any

import pytest

from deployally.model.engine_config import Allowances
from deployally.model.host_policy import definition_refusals, settings_refusals
from deployally.model.settings import Settings
from test_render import MYSQL_SPEC, make_definition, make_template

PATH = "definitions/mysql_prod.yaml"
TEXT = "name: mysql_prod\ntemplate: database/mysql/standard/8.4\npublish:\n  3306: 80\n"


NOTHING = Allowances()  # the defaults


def refusals(allow: Allowances = NOTHING, **spec: Any) -> dict[str, str]:
    template = make_template({**MYSQL_SPEC, **spec})
    definition = make_definition(publish=((3306, 80),) if not spec else ())
    return {e.field: e.message for e in definition_refusals(definition, template, allow, TEXT)}


def test_a_host_port_below_1024_is_refused_naming_the_field_line_and_setting() -> None:
    template = make_template()
    [error] = definition_refusals(make_definition(publish=((3306, 80),)), template, Allowances(), TEXT)
    assert (error.path, error.field, error.line) == (PATH, "publish.3306", 4)
    assert "host port 80" in error.message and "ports_below_1024" in error.message
    assert "engine.yaml" in error.message


@pytest.mark.parametrize(
    "allow", [Allowances(ports_below_1024=True), Allowances(low_ports=frozenset({80, 443}))]
)
def test_the_operator_allows_low_ports_all_or_by_number(allow: Allowances) -> None:
    assert refusals(allow) == {}


def test_a_port_from_1024_needs_no_allowance() -> None:
    definition = make_definition(publish=((3306, 1024),))
    assert definition_refusals(definition, make_template(), Allowances(), None) == []


def test_network_host_is_refused_unless_allowed() -> None:
    settings = Settings(network="host")
    [error] = settings_refusals("deployally.yaml", settings, Allowances(), "network: host\n")
    assert (error.path, error.field, error.line) == ("deployally.yaml", "network", 1)
    assert "host_network: true" in error.message
    assert settings_refusals("deployally.yaml", settings, Allowances(host_network=True), None) == []
    assert settings_refusals("deployally.yaml", Settings(network="apps"), Allowances(), None) == []


@pytest.mark.parametrize(
    ("spec", "field", "setting"),
    [
        ({"privileged": True}, "spec.privileged", "allow: {privileged: true}"),
        ({"cap_add": ["NET_ADMIN"]}, "spec.cap_add", "allow: {capabilities: [...]}"),
        ({"devices": ["/dev/fuse"]}, "spec.devices", "allow: {devices: [...]}"),
        (
            {"volumes": [{"mount_path": "/data", "host_path": "/srv/data"}]},
            "spec.volumes[0].host_path",
            "allow: {host_paths: [...]}",
        ),
        (
            {"volumes": [{"mount_path": "/s", "host_path": "/var/run/docker.sock"}]},
            "spec.volumes[0].host_path",
            "allow: {docker_socket: true}",
        ),
        (
            {"volumes": [{"mount_path": "/r", "host_path": "/run"}]},
            "spec.volumes[0].host_path",
            "allow: {docker_socket: true}",
        ),
        (
            {"volumes": [{"mount_path": "/h", "host_path": "/"}]},
            "spec.volumes[0].host_path",
            "allow: {docker_socket: true}",
        ),
    ],
)
def test_reserved_template_fields_are_refused_naming_the_setting_and_the_template(
    spec: dict[str, Any], field: str, setting: str
) -> None:
    found = refusals(**spec)
    assert list(found) == [field]
    assert setting in found[field]
    assert "reserves" in found[field] and "catalog/database/mysql-8.4.yaml" in found[field]


def test_a_profile_override_can_ask_and_can_take_back() -> None:
    overrides = {"production": {"privileged": True}, "development": {"privileged": False}}
    template = make_template({**MYSQL_SPEC, "privileged": True, "profile_overrides": overrides})
    allow = Allowances()
    assert definition_refusals(make_definition(profile="development"), template, allow, None) == []
    [error] = definition_refusals(make_definition(profile="production"), template, allow, None)
    assert error.field == "spec.privileged"
