"""Templates: the built-in catalog, template validation errors, ids and spec hashes, lookup and merge."""

from __future__ import annotations

import json
import textwrap

import jsonschema
import pytest
import yaml

from deployally import identity
from deployally.data import CATALOG, SCHEMAS, walk
from deployally.errors import ValidationError, ValidationErrors
from deployally.model.catalog import (
    Catalog,
    load_builtin,
    load_repo_templates,
    parse_template,
)
from deployally.types import Template

REPO_TEMPLATE = textwrap.dedent(
    """\
    name: Demo App
    description: a repo-local template
    version: "1.0"
    taxonomy: {kingdom: assets, family: apps, species: demo, variant: custom, specimen: "1.0"}
    spec:
      image: {repository: ghcr.io/example/demo, tag: "1.0"}
      user_inputs:
        greeting: {type: string, default: hi}
      profiles: [development, production]
      profile_overrides:
        production: {restart: always}
      ports: [{container_port: 8080}]
      env:
        GREETING: "{{ params.greeting }}"
      healthcheck: {test: ["CMD", "true"], interval: 10s}
    """
)


def spec_errors(
    text: str, *, builtin: bool = False, path: str = "catalog/apps/demo.yaml"
) -> list[ValidationError]:
    with pytest.raises(ValidationErrors) as exc:
        parse_template(path, text, builtin=builtin)
    return exc.value.errors


def fields(errors: list[ValidationError]) -> list[str]:
    return [e.field for e in errors]


# ------------------------------------------------------------------ built-in catalog


def test_every_builtin_template_parses_and_is_found_by_path_and_id() -> None:
    catalog = load_builtin()
    templates = catalog.all()
    assert len(templates) >= 9
    assert len({t.taxonomy.family for t in templates}) >= 4
    for tpl in templates:
        assert tpl.builtin
        assert tpl.taxonomy.kingdom == "assets"
        assert tpl.id == identity.template_id(tpl.taxonomy.path)
        assert catalog.resolve(tpl.taxonomy.path) is tpl
        assert catalog.resolve(tpl.id) is tpl
        assert set(tpl.spec["profiles"]) >= {"minimal", "development", "production"}
        assert (
            tpl.source.startswith("catalog/")
            and (CATALOG / tpl.source.removeprefix("catalog/")).is_file()
        )


def test_builtin_files_validate_against_the_published_schema_as_editors_would() -> None:
    schema = json.loads((SCHEMAS / "template.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    for path, file in walk(CATALOG):
        assert list(validator.iter_errors(yaml.safe_load(file.read_text()))) == [], path


def test_mysql_template_matches_the_documented_inputs() -> None:
    mysql = load_builtin().resolve("database/mysql/standard/8.4")
    assert mysql is not None
    assert mysql.spec["image"] == {"repository": "mysql", "tag": "8.4"}
    inputs = {ui.name: (ui.type, ui.required) for ui in mysql.user_inputs}
    assert inputs == {
        "root_password": ("password", True),
        "database_name": ("string", True),
        "user_name": ("string", False),
        "user_password": ("password", False),
    }


def test_busybox_templates_stop_at_once_and_use_the_stable_tag() -> None:
    busybox = [t for t in load_builtin().all() if t.spec["image"]["repository"] == "busybox"]
    assert {t.taxonomy.path for t in busybox} >= {
        "web/static-site/busybox/stable",
        "tools/busybox/worker/stable",
    }
    for tpl in busybox:
        assert tpl.spec["image"]["tag"] == "stable"
        assert tpl.spec["stop_signal"] == "SIGKILL"
    worker = load_builtin().resolve("tools/busybox/worker/stable")
    assert worker is not None
    assert worker.spec["command"] == ["sh", "-c", "{{ params.script }}"]
    assert worker.spec["volumes"] == [{"mount_path": "/data"}]


def test_builtin_catalog_is_read_once() -> None:
    assert load_builtin() is load_builtin()


# ------------------------------------------------------------------ identity


def test_spec_hash_is_stable_ignores_key_order_and_follows_values() -> None:
    first = parse_template("catalog/apps/demo.yaml", REPO_TEMPLATE, builtin=False)
    again = parse_template("catalog/apps/demo.yaml", REPO_TEMPLATE, builtin=False)
    assert first.spec_hash == again.spec_hash
    assert first.spec_hash.startswith("sha256:") and len(first.spec_hash) == 7 + 64

    reordered = REPO_TEMPLATE.replace(
        '  image: {repository: ghcr.io/example/demo, tag: "1.0"}\n', ""
    ).replace("  ports:", '  image: {tag: "1.0", repository: ghcr.io/example/demo}\n  ports:')
    assert reordered != REPO_TEMPLATE
    assert parse_template("x.yaml", reordered, builtin=False).spec_hash == first.spec_hash

    changed = REPO_TEMPLATE.replace('tag: "1.0"}', 'tag: "1.1"}')
    assert parse_template("x.yaml", changed, builtin=False).spec_hash != first.spec_hash

    # Fields outside spec (the description) are not part of what is deployed.
    described = REPO_TEMPLATE.replace("a repo-local template", "another description")
    assert parse_template("x.yaml", described, builtin=False).spec_hash == first.spec_hash


def test_template_fields_are_read_as_written() -> None:
    tpl = parse_template("catalog/apps/demo.yaml", REPO_TEMPLATE, builtin=False)
    assert tpl.id == identity.template_id("apps/demo/custom/1.0")
    assert (tpl.name, tpl.version, tpl.source, tpl.builtin, tpl.deprecated) == (
        "Demo App",
        "1.0",
        "catalog/apps/demo.yaml",
        False,
        False,
    )
    assert tpl.user_inputs[0].name == "greeting" and tpl.user_inputs[0].default == "hi"


# ------------------------------------------------------------------ template errors


def test_broken_yaml_names_the_file_and_line() -> None:
    broken = REPO_TEMPLATE.replace(
        "  profiles: [development, production]", "  profiles: [development, production"
    )
    with pytest.raises(ValidationError) as exc:
        parse_template("catalog/apps/demo.yaml", broken, builtin=False)
    assert exc.value.path == "catalog/apps/demo.yaml"
    assert exc.value.line is not None and exc.value.line >= 9
    assert "invalid YAML" in str(exc.value)


def test_duplicate_yaml_key_is_an_error_not_a_silent_override() -> None:
    doubled = REPO_TEMPLATE.replace('version: "1.0"\n', 'version: "1.0"\nversion: "2.0"\n')
    with pytest.raises(ValidationError) as exc:
        parse_template("catalog/apps/demo.yaml", doubled, builtin=False)
    assert exc.value.field == "version" and exc.value.line == 4


def test_unknown_key_is_named_with_a_suggestion() -> None:
    errors = spec_errors(REPO_TEMPLATE.replace("  healthcheck:", "  helthcheck:"))
    assert fields(errors) == ["spec.helthcheck"]
    assert "did you mean `healthcheck`" in errors[0].message
    assert errors[0].line == 15


def test_bad_duration_names_the_dotted_field() -> None:
    errors = spec_errors(REPO_TEMPLATE.replace("interval: 10s", "interval: 10 seconds"))
    assert fields(errors) == ["spec.healthcheck.interval"]
    assert "'10 seconds'" in errors[0].message and "1m30s" in errors[0].message


def test_min_ready_in_a_spec_or_a_profile_override_is_read_as_written() -> None:
    text = REPO_TEMPLATE.replace("production: {restart: always}", "production: {min_ready: 30s}")
    template = parse_template("catalog/apps/demo.yaml", text + "  min_ready: 0s\n", builtin=False)
    assert template.spec["min_ready"] == "0s"
    assert template.spec["profile_overrides"]["production"]["min_ready"] == "30s"


@pytest.mark.parametrize(
    ("value", "says"), [("-1", "not negative"), ("2h", "use 0s to 1h"), ("a while", "write a duration")]
)
def test_a_bad_min_ready_names_the_template_file_and_field(value: str, says: str) -> None:
    override = REPO_TEMPLATE.replace("production: {restart: always}", f"production: {{min_ready: {value}}}")
    for text, field in (
        (REPO_TEMPLATE + f"  min_ready: {value}\n", "spec.min_ready"),
        (override, "spec.profile_overrides.production.min_ready"),
    ):
        (err,) = spec_errors(text)
        assert (err.path, err.field) == ("catalog/apps/demo.yaml", field), err
        assert says in err.message, err


def test_every_schema_error_is_reported_at_once() -> None:
    text = (
        REPO_TEMPLATE.replace("container_port: 8080", "container_port: 70000")
        .replace("interval: 10s", "interval: soon")
        .replace("{restart: always}", "{restart: sometimes}")
    )
    assert sorted(fields(spec_errors(text))) == [
        "spec.healthcheck.interval",
        "spec.ports[0].container_port",
        "spec.profile_overrides.production.restart",
    ]


def test_missing_required_field_is_named() -> None:
    errors = spec_errors(REPO_TEMPLATE.replace('version: "1.0"\n', ""))
    assert fields(errors) == ["version"]


def test_profile_override_must_name_a_declared_profile() -> None:
    errors = spec_errors(
        REPO_TEMPLATE.replace("production: {restart: always}", "prod: {restart: always}")
    )
    assert fields(errors) == ["spec.profile_overrides.prod"]
    assert "spec.profiles" in errors[0].message


def test_builtin_templates_carry_files_inline_only() -> None:
    with_source = REPO_TEMPLATE + "  files: [{path: /etc/demo.conf, source: config/demo.conf}]\n"
    assert parse_template("catalog/apps/demo.yaml", with_source, builtin=False).spec["files"][0][
        "source"
    ] == ("config/demo.conf")
    errors = spec_errors(with_source, builtin=True)
    assert fields(errors) == ["spec.files[0].source"]


def test_file_source_cannot_leave_the_repository() -> None:
    errors = spec_errors(
        REPO_TEMPLATE + "  files: [{path: /etc/demo.conf, source: ../../etc/passwd}]\n"
    )
    assert fields(errors) == ["spec.files[0].source"]
    errors = spec_errors(REPO_TEMPLATE + "  files: [{path: /etc/demo.conf, source: /etc/passwd}]\n")
    assert fields(errors) == ["spec.files[0].source"]


def test_file_needs_exactly_one_of_content_or_source() -> None:
    errors = spec_errors(REPO_TEMPLATE + "  files: [{path: /etc/demo.conf}]\n")
    assert fields(errors) == ["spec.files[0]"]


def test_jinja_must_use_declared_params_and_parse() -> None:
    errors = spec_errors(REPO_TEMPLATE.replace("{{ params.greeting }}", "{{ params.greting }}"))
    assert fields(errors) == ["spec.env.GREETING"] and "params.greting" in errors[0].message
    errors = spec_errors(REPO_TEMPLATE.replace("{{ params.greeting }}", "{{ params.greeting "))
    assert fields(errors) == ["spec.env.GREETING"] and "Jinja" in errors[0].message


def test_user_input_declarations_are_checked() -> None:
    bad_inputs = REPO_TEMPLATE.replace(
        "    greeting: {type: string, default: hi}\n",
        "    greeting: {type: string, default: hi}\n"
        "    secret: {type: password, default: hunter2}\n"
        "    level: {type: enum, values: [low, high], default: medium}\n"
        "    count: {type: integer, default: true}\n",
    )
    assert sorted(fields(spec_errors(bad_inputs))) == [
        "spec.user_inputs.count.default",
        "spec.user_inputs.level.default",
        "spec.user_inputs.secret.default",
    ]


def test_enum_input_needs_values() -> None:
    no_values = REPO_TEMPLATE.replace(
        "    greeting: {type: string, default: hi}\n",
        "    greeting: {type: string, default: hi}\n    color: {type: enum}\n",
    )
    assert fields(spec_errors(no_values)) == ["spec.user_inputs.color.values"]


def test_reserved_labels_are_refused() -> None:
    errors = spec_errors(REPO_TEMPLATE + '  labels: {"com.deployally.managed": "false"}\n')
    assert fields(errors) == ["spec.labels"]


# ------------------------------------------------------------------ lookup and merge


def test_resolve_unknown_is_none_and_all_is_sorted_by_path() -> None:
    catalog = load_builtin()
    assert catalog.resolve("database/mysql/standard/9.9") is None
    assert catalog.resolve("tpl_000000000000") is None
    paths = [t.taxonomy.path for t in catalog.all()]
    assert paths == sorted(paths)
    mysql = catalog.resolve("database/mysql/standard/8.4")
    assert mysql is not None and catalog.by_id(mysql.id) is mysql


def _repo_template(path: str, taxonomy_path: str) -> Template:
    family, species, variant, specimen = taxonomy_path.split("/")
    text = REPO_TEMPLATE.replace(
        'taxonomy: {kingdom: assets, family: apps, species: demo, variant: custom, specimen: "1.0"}',
        f'taxonomy: {{kingdom: assets, family: {family}, species: {species}, variant: {variant}, specimen: "{specimen}"}}',
    )
    return parse_template(path, text, builtin=False)


def test_merge_adds_repo_templates_beside_the_builtins() -> None:
    builtin = load_builtin()
    demo = _repo_template("catalog/demo.yaml", "apps/demo/custom/1.0")
    merged = Catalog.merge(builtin, [demo])
    assert len(merged) == len(builtin) + 1
    assert merged.resolve("apps/demo/custom/1.0") is demo
    assert merged.resolve("database/mysql/standard/8.4") is builtin.resolve(
        "database/mysql/standard/8.4"
    )


def test_repo_template_may_not_override_a_builtin() -> None:
    clash = _repo_template("catalog/my-mysql.yaml", "database/mysql/standard/8.4")
    with pytest.raises(ValidationError) as exc:
        Catalog.merge(load_builtin(), [clash])
    assert exc.value.path == "catalog/my-mysql.yaml"
    assert exc.value.field == "taxonomy"
    assert "catalog/database/mysql-8.4.yaml" in exc.value.message


def test_load_repo_templates_keeps_the_valid_and_reports_the_rest() -> None:
    other = REPO_TEMPLATE.replace("species: demo", "species: other")
    files = {
        "catalog/demo.yaml": REPO_TEMPLATE,
        "catalog/demo-copy.yaml": REPO_TEMPLATE,  # same taxonomy as demo.yaml
        "catalog/other.yaml": other,
        "catalog/broken.yaml": REPO_TEMPLATE.replace("interval: 10s", "interval: never"),
    }
    templates, errors = load_repo_templates(files)
    assert sorted(t.source for t in templates) == ["catalog/demo-copy.yaml", "catalog/other.yaml"]
    assert sorted((e.path, e.field) for e in errors) == [
        ("catalog/broken.yaml", "spec.healthcheck.interval"),
        ("catalog/demo.yaml", "taxonomy"),
    ]
    assert "catalog/demo-copy.yaml" in next(e for e in errors if e.field == "taxonomy").message


def test_file_mode_may_be_yaml_octal_or_quoted_text() -> None:
    for mode in ("0640", '"0640"', "416"):
        text = REPO_TEMPLATE + f"  files: [{{path: /etc/demo.conf, content: x, mode: {mode}}}]\n"
        assert (
            parse_template("catalog/apps/demo.yaml", text, builtin=False).spec["files"][0]["path"]
            == "/etc/demo.conf"
        )
    errors = spec_errors(
        REPO_TEMPLATE + '  files: [{path: /etc/demo.conf, content: x, mode: "rw-r--r--"}]\n'
    )
    assert fields(errors) == ["spec.files[0].mode"]
    for mode in ("07777", "04755", '"2755"', "0o1777"):
        errors = spec_errors(
            REPO_TEMPLATE + f"  files: [{{path: /etc/demo.conf, content: x, mode: {mode}}}]\n"
        )
        assert fields(errors) == ["spec.files[0].mode"], mode


def test_alias_expansion_is_refused_before_it_eats_memory() -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [
        f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]"
        for i in range(1, 12)
    ]
    with pytest.raises(ValidationError) as exc:
        parse_template("catalog/bomb.yaml", "\n".join(lines) + "\n", builtin=False)
    assert "aliases" in exc.value.message
