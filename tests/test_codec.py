"""codec.py: ContainerSpec's one JSON shape, used by the store, the API and the plan's diff."""

from __future__ import annotations

import dataclasses
import json

from conftest import full_spec
from deployally import identity, secrets
from deployally.api.views import spec_view
from deployally.codec import spec_from_json, spec_to_json
from deployally.plan.diff import diff_specs
from deployally.store import _spec_from_json, _spec_to_json
from deployally.types import ContainerSpec


def test_full_spec_sets_every_field() -> None:
    spec = full_spec()
    defaults = ContainerSpec(name="x", definition_id="d", template_id="t", image="i")
    same_as_default = [
        f.name
        for f in dataclasses.fields(ContainerSpec)
        if f.name not in ("name", "definition_id", "template_id", "image")
        and getattr(spec, f.name) == getattr(defaults, f.name)
    ]
    assert same_as_default == [], "extend full_spec() so the round trips cover these fields"


def test_round_trip_through_json_text_gives_the_same_spec() -> None:
    for spec in (full_spec(), ContainerSpec("x", "def_x", "tpl_x", "busybox:1")):
        wire = json.loads(json.dumps(spec_to_json(spec)))  # as an agent would receive it
        assert spec_from_json(wire) == spec
        assert _spec_from_json(_spec_to_json(spec)) == spec  # as the store keeps it


def test_every_field_is_in_the_json_in_declaration_order() -> None:
    data = spec_to_json(full_spec())
    assert list(data) == [f.name for f in dataclasses.fields(ContainerSpec)]
    assert (data["ports"][0]["container_port"], data["ports"][0]["host_port"]) == (3306, 13306)
    assert data["env"][0] == ["MYSQL_DATABASE", "app_db"]


def test_the_store_keeps_the_codec_shape_as_canonical_text() -> None:
    spec = full_spec()
    assert _spec_to_json(spec) == identity.canonical_json(spec_to_json(spec))


def test_a_key_from_a_newer_writer_is_ignored() -> None:
    data = spec_to_json(full_spec())
    data["placement"] = {"constraints": ["node.role==worker"]}
    data["healthcheck"]["grace"] = 1
    assert spec_from_json(data) == full_spec()


def test_the_api_shows_the_codec_shape_with_secrets_as_names() -> None:
    spec = full_spec()
    view = spec_view(spec)
    assert set(view) == set(spec_to_json(spec))
    assert ["MYSQL_ROOT_PASSWORD", "<secret:mysql_root>"] in view["env"]
    assert secrets.placeholder("mysql_root") not in json.dumps(view)
    assert view["healthcheck"] == spec_to_json(spec)["healthcheck"]


def test_the_diff_reaches_every_field_of_the_codec() -> None:
    spec = full_spec()
    fields = {c.field.split(".")[0].split("[")[0] for c in diff_specs(None, spec)}
    expected = set(spec_to_json(spec)) - {"rendered_hash", "memory_bytes", "cpus"} | {"resources"}
    assert fields == expected
