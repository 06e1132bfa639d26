"""Definitions: parsing, params against user_inputs, every bad-input error, uniqueness, writing files back."""

from __future__ import annotations

import json
import textwrap

import pytest

from deployally import identity
from deployally.errors import ValidationError, ValidationErrors
from deployally.model.catalog import Catalog, load_builtin, parse_template
from deployally.model.definitions import (
    check_unique,
    dump_definition,
    parse_definition,
    public_params,
    referenced_files,
    to_yaml,
)
from deployally.model.settings import Settings
from deployally.types import Definition, SecretRef

PATH = "definitions/mysql_producao.yaml"

MYSQL = textwrap.dedent(
    """\
    name: mysql_producao
    template: database/mysql/standard/8.4
    server: local
    profile: production
    params:
      database_name: app_db
      root_password: {secret: mysql_root}
    depends_on: [redis_cache]
    publish: {3306: 13306}
    """
)

# A repo template with one input of every type, to check params type by type.
KITCHEN = textwrap.dedent(
    """\
    name: Kitchen Sink
    version: "1"
    taxonomy: {kingdom: assets, family: tools, species: kitchen, variant: sink, specimen: "1"}
    spec:
      image: {repository: busybox, tag: stable}
      user_inputs:
        label: {type: string, pattern: "[a-z]+", default: abc}
        count: {type: integer, default: 1}
        ratio: {type: number, default: 0.5}
        enabled: {type: boolean, default: false}
        level: {type: enum, values: [low, high], default: low}
        port: {type: port, default: 8080}
        token: {type: password}
      profiles: [development, production]
      profile_overrides:
        production:
          files: [{path: /etc/prod.conf, source: config/prod.conf}]
      files: [{path: /etc/base.conf, source: config/base.conf}, {path: /etc/inline.conf, content: "x"}]
      command: ["sh", "-c", "echo {{ params.label }} {{ params.count }} {{ params.ratio }} {{ params.enabled }}"]
      env: {LEVEL: "{{ params.level }}", PORT: "{{ params.port }}", TOKEN: "{{ params.token }}"}
    """
)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    kitchen = parse_template("catalog/kitchen.yaml", KITCHEN, builtin=False)
    return Catalog.merge(load_builtin(), [kitchen])


def kitchen(params: str = "", extra: str = "") -> str:
    body = textwrap.indent(textwrap.dedent(params), "  ") if params else "  {}\n"
    return f"name: sink\ntemplate: tools/kitchen/sink/1\nparams:\n{body}{extra}"


def errors_of(text: str, catalog: Catalog, path: str = PATH) -> list[ValidationError]:
    with pytest.raises(ValidationErrors) as exc:
        parse_definition(path, text, catalog)
    for err in exc.value.errors:
        assert err.path == path
    return exc.value.errors


def only_error(text: str, catalog: Catalog) -> ValidationError:
    errors = errors_of(text, catalog)
    assert len(errors) == 1, errors
    return errors[0]


# ------------------------------------------------------------------ valid files


def test_documented_example_parses(catalog: Catalog) -> None:
    d = parse_definition(PATH, MYSQL, catalog)
    mysql = catalog.resolve("database/mysql/standard/8.4")
    assert mysql is not None
    assert d.id == identity.definition_id("mysql_producao")
    assert (d.name, d.path, d.template, d.template_id) == (
        "mysql_producao",
        PATH,
        mysql.taxonomy.path,
        mysql.id,
    )
    assert (d.server, d.profile) == ("local", "production")
    assert d.params["root_password"] == SecretRef("mysql_root")
    assert d.params["database_name"] == "app_db"
    assert d.depends_on == ("redis_cache",)
    assert d.publish == ((3306, 13306),)
    assert d.prune_volumes is False


def test_defaults_fill_server_profile_and_params(catalog: Catalog) -> None:
    d = parse_definition("definitions/sink.yaml", kitchen("token: {secret: t}\n"), catalog)
    assert (d.server, d.profile) == ("local", "development")
    assert d.params == {
        "label": "abc",
        "count": 1,
        "ratio": 0.5,
        "enabled": False,
        "level": "low",
        "port": 8080,
        "token": SecretRef("t"),
    }
    mysql = parse_definition(PATH, MYSQL.replace("profile: production\n", ""), catalog)
    assert (
        mysql.params["user_name"] is None
    )  # optional, no default: present so templates can test it


def test_repo_settings_supply_the_defaults(catalog: Catalog) -> None:
    settings = Settings(default_server="edge-1", default_profile="production")
    text = MYSQL.replace("server: local\n", "").replace("profile: production\n", "")
    d = parse_definition(PATH, text, catalog, defaults=settings)
    assert (d.server, d.profile) == ("edge-1", "production")


def test_template_by_id_and_given_values_of_every_type(catalog: Catalog) -> None:
    sink = catalog.resolve("tools/kitchen/sink/1")
    assert sink is not None
    text = kitchen(
        """\
        label: xyz
        count: 3
        ratio: 2
        enabled: true
        level: high
        port: 65535
        token: {secret: t}
        """
    ).replace("tools/kitchen/sink/1", sink.id)
    d = parse_definition("definitions/sink.yaml", text, catalog)
    assert d.template == sink.id and d.template_id == sink.id
    assert (d.params["label"], d.params["count"], d.params["ratio"], d.params["enabled"]) == (
        "xyz",
        3,
        2,
        True,
    )
    assert (d.params["level"], d.params["port"]) == ("high", 65535)


def test_secret_reference_is_allowed_on_any_input(catalog: Catalog) -> None:
    d = parse_definition(
        PATH, MYSQL.replace("database_name: app_db", "database_name: {secret: db_name}"), catalog
    )
    assert d.params["database_name"] == SecretRef("db_name")


# ------------------------------------------------------------------ bad input, one case each


def test_broken_yaml_names_the_line(catalog: Catalog) -> None:
    with pytest.raises(ValidationError) as exc:
        parse_definition(
            PATH, MYSQL.replace("depends_on: [redis_cache]", "depends_on: [redis_cache"), catalog
        )
    assert exc.value.path == PATH and exc.value.line is not None and exc.value.line >= 8


@pytest.mark.parametrize("name", ["../x", "a/b", "Mysql", "-db", "", "x" * 64, "a b", "a", "7"])
def test_names_must_be_docker_safe(catalog: Catalog, name: str) -> None:
    err = only_error(MYSQL.replace("name: mysql_producao", f"name: {json.dumps(name)}"), catalog)
    assert err.field == "name" and err.line == 1


def test_a_one_character_name_is_refused_saying_docker_needs_two(catalog: Catalog) -> None:
    # Docker itself answers "Invalid container name (a)": the rule is checked before it.
    err = only_error(MYSQL.replace("name: mysql_producao", "name: a"), catalog)
    assert "Docker needs at least 2" in err.message
    assert parse_definition(PATH, MYSQL.replace("name: mysql_producao", "name: ab"), catalog)


def test_a_name_ending_in_old_is_refused(catalog: Catalog) -> None:
    # An update of `site` renames its running container `site.old`.
    err = only_error(MYSQL.replace("name: mysql_producao", "name: site.old"), catalog)
    assert err.field == "name" and ".old" in err.message and "'site'" in err.message


def test_unknown_template_suggests_the_templates_command(catalog: Catalog) -> None:
    err = only_error(MYSQL.replace("standard/8.4", "standard/8.5"), catalog)
    assert err.field == "template"
    assert "deployally templates list" in err.message
    assert "database/mysql/standard/8.4" in err.message  # the close match


def test_profile_must_be_one_of_the_templates(catalog: Catalog) -> None:
    err = only_error(MYSQL.replace("profile: production", "profile: staging"), catalog)
    assert err.field == "profile" and "minimal, development, production" in err.message


def test_unknown_top_level_field(catalog: Catalog) -> None:
    err = only_error(MYSQL + "replica: 3\n", catalog)
    assert err.field == "replica" and "unknown field" in err.message


def test_replicas_default_to_one_and_round_trip_through_the_file(catalog: Catalog) -> None:
    assert parse_definition(PATH, MYSQL, catalog).replicas == 1
    three = parse_definition(PATH, MYSQL + "replicas: 3\n", catalog)
    assert three.replicas == 3
    assert "replicas: 3" in to_yaml(three)
    assert "replicas" not in to_yaml(parse_definition(PATH, MYSQL, catalog))


@pytest.mark.parametrize("value", ["-1", "two", "1.5", "true", "10001"])
def test_replicas_must_be_a_whole_number_from_zero(catalog: Catalog, value: str) -> None:
    err = only_error(MYSQL + f"replicas: {value}\n", catalog)
    assert (err.path, err.field) == (PATH, "replicas"), err
    assert "whole number from 0" in err.message, err


@pytest.mark.parametrize(("value", "seconds"), [("0s", 0.0), ("250ms", 0.25), ("3", 3.0), ("1m", 60.0)])
def test_min_ready_is_read_and_round_trips_through_the_file(
    catalog: Catalog, value: str, seconds: float
) -> None:
    assert parse_definition(PATH, MYSQL, catalog).min_ready_s is None  # the template's, else deployally.yaml's
    own = parse_definition(PATH, MYSQL + f"min_ready: {value}\n", catalog)
    assert own.min_ready_s == seconds
    assert parse_definition(PATH, to_yaml(own), catalog) == own


@pytest.mark.parametrize(
    ("value", "says"),
    [("-1", "not negative"), ("-2s", "not negative"), ("90m", "use 0s to 1h"), ("soon", "write a duration")],
)
def test_a_bad_min_ready_names_the_file_and_field(catalog: Catalog, value: str, says: str) -> None:
    err = only_error(MYSQL + f"min_ready: {value}\n", catalog)
    assert (err.path, err.field, err.line) == (PATH, "min_ready", 10), err
    assert says in err.message, err


def test_unknown_param(catalog: Catalog) -> None:
    err = only_error(
        MYSQL.replace("database_name: app_db", "database_name: app_db\n  databse: x"), catalog
    )
    assert err.field == "params.databse" and "unknown param" in err.message


def test_missing_required_param(catalog: Catalog) -> None:
    err = only_error(MYSQL.replace("  database_name: app_db\n", ""), catalog)
    assert err.field == "params.database_name" and "required" in err.message


def test_plaintext_password_says_exactly_how_to_fix_it(catalog: Catalog) -> None:
    err = only_error(MYSQL.replace("{secret: mysql_root}", "hunter2"), catalog)
    assert err.field == "params.root_password"
    assert (
        "write `root_password: {secret: mysql_root}` and run `deployally secret set mysql_root`"
        in err.message
    )
    assert "hunter2" not in str(err)


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("count", "true"),  # a bool is not an integer
        ("count", "1.5"),
        ("count", '"3"'),
        ("ratio", '"half"'),
        ("enabled", '"yes"'),
        ("label", "ABC"),  # pattern mismatch
        ("label", "12"),  # not a string
        ("level", "medium"),  # not in values
        ("port", "0"),
        ("port", "65536"),
        ("port", "true"),
    ],
)
def test_param_of_the_wrong_type_or_value(catalog: Catalog, param: str, value: str) -> None:
    err = only_error(kitchen(f"token: {{secret: t}}\n{param}: {value}\n"), catalog)
    assert err.field == f"params.{param}"
    assert err.line == 5


def test_malformed_secret_reference(catalog: Catalog) -> None:
    err = only_error(
        MYSQL.replace("{secret: mysql_root}", "{secret: mysql_root, vesrion: 2}"), catalog
    )
    assert err.field == "params.root_password.vesrion" and "unknown field" in err.message


def test_depends_on_itself_or_a_bad_name(catalog: Catalog) -> None:
    err = only_error(MYSQL.replace("[redis_cache]", "[mysql_producao]"), catalog)
    assert err.field == "depends_on[0]" and "itself" in err.message
    err = only_error(MYSQL.replace("[redis_cache]", "[../etc]"), catalog)
    assert err.field == "depends_on[0]"


def test_publish_ports_must_be_valid_and_distinct(catalog: Catalog) -> None:
    assert (
        only_error(MYSQL.replace("{3306: 13306}", "{3306: 70000}"), catalog).field == "publish.3306"
    )
    assert only_error(MYSQL.replace("{3306: 13306}", "{0: 13306}"), catalog).field == "publish.0"
    err = only_error(MYSQL.replace("{3306: 13306}", "{3306: 13306, 33060: 13306}"), catalog)
    assert err.field == "publish.33060" and "13306" in err.message


@pytest.mark.parametrize("source", ["../secrets.txt", "config/../../x", "/etc/passwd", "C:/x"])
def test_file_sources_cannot_leave_the_repository(catalog: Catalog, source: str) -> None:
    err = only_error(
        MYSQL + f"files: [{{path: /etc/mysql/conf.d/x.cnf, source: {json.dumps(source)}}}]\n",
        catalog,
    )
    assert err.field == "files[0].source"


def test_file_mount_path_must_be_absolute(catalog: Catalog) -> None:
    err = only_error(MYSQL + "files: [{path: etc/x.cnf, content: x}]\n", catalog)
    assert err.field == "files[0].path"


@pytest.mark.parametrize("mode", ["07777", "04755", "02755", "01777", '"4755"', "4095"])
def test_file_modes_are_plain_permission_bits(catalog: Catalog, mode: str) -> None:
    # setuid, setgid and sticky bits would land on a root-owned file of the host.
    err = only_error(MYSQL + f"files: [{{path: /etc/mysql/conf.d/x.cnf, content: x, mode: {mode}}}]\n", catalog)
    assert err.path == PATH and err.field == "files[0].mode"
    assert "0644" in err.message


def test_every_error_of_the_file_is_reported_at_once(catalog: Catalog) -> None:
    text = textwrap.dedent(
        """\
        name: mysql_producao
        template: database/mysql/standard/8.4
        profile: staging
        params:
          root_password: hunter2
          user_name: "not valid!"
          extra: 1
        depends_on: [mysql_producao]
        publish: {3306: 0}
        """
    )
    assert sorted(e.field for e in errors_of(text, catalog)) == [
        "depends_on[0]",
        "params.database_name",
        "params.extra",
        "params.root_password",
        "params.user_name",
        "profile",
        "publish.3306",
    ]


# ------------------------------------------------------------------ across files and helpers


def test_duplicate_names_name_both_files(catalog: Catalog) -> None:
    a = parse_definition("definitions/a.yaml", MYSQL, catalog)
    b = parse_definition("definitions/b.yaml", MYSQL, catalog)
    other = parse_definition(
        "definitions/c.yaml", MYSQL.replace("mysql_producao", "mysql_teste"), catalog
    )
    errors = check_unique([b, other, a])
    assert [(e.path, e.field) for e in errors] == [("definitions/a.yaml", "name"), ("definitions/b.yaml", "name")]
    assert "definitions/b.yaml" in errors[0].message and "definitions/a.yaml" in errors[1].message
    assert check_unique([a, other]) == []


def test_referenced_files_cover_template_profile_and_definition(catalog: Catalog) -> None:
    sink = catalog.resolve("tools/kitchen/sink/1")
    assert sink is not None
    extra = "profile: production\nfiles: [{path: /etc/mine.conf, source: config/mine.conf}]\n"
    d = parse_definition("definitions/sink.yaml", kitchen("token: {secret: t}\n", extra), catalog)
    assert referenced_files(d, sink) == ("config/base.conf", "config/mine.conf", "config/prod.conf")
    dev = parse_definition("definitions/sink.yaml", kitchen("token: {secret: t}\n"), catalog)
    assert referenced_files(dev, sink) == ("config/base.conf",)


def test_public_params_show_secret_names_only(catalog: Catalog) -> None:
    d = parse_definition(PATH, MYSQL, catalog)
    shown = public_params(d)
    assert shown["root_password"] == {"secret": "mysql_root"}
    assert json.loads(json.dumps(shown)) == shown


def test_dump_definition_writes_a_stable_order() -> None:
    text = dump_definition(
        {
            "publish": {3306: 13306},
            "params": {"root_password": SecretRef("mysql_root"), "database_name": "app_db"},
            "name": "mysql_producao",
            "template": "database/mysql/standard/8.4",
            "depends_on": ["redis_cache"],
        }
    )
    assert text == textwrap.dedent(
        """\
        name: mysql_producao
        template: database/mysql/standard/8.4
        params:
          database_name: app_db
          root_password: {secret: mysql_root}
        depends_on: [redis_cache]
        publish: {3306: 13306}
        """
    )


def test_written_definition_parses_back_to_the_same_value(catalog: Catalog) -> None:
    d = parse_definition(
        PATH, MYSQL + "prune_volumes: true\nfiles: [{path: /etc/x.cnf, content: hi}]\n", catalog
    )
    again: Definition = parse_definition(PATH, to_yaml(d), catalog)
    assert again == d


def test_a_password_in_the_wrong_shape_is_not_repeated_in_the_error() -> None:
    from deployally.errors import ValidationErrors
    from deployally.model.catalog import load_builtin

    text = (
        "name: db\ntemplate: database/mysql/standard/8.4\n"
        "params: {database_name: app, root_password: {value: LEAKY-1234}}\n"
    )
    with pytest.raises(ValidationErrors) as caught:
        parse_definition("definitions/db.yaml", text, load_builtin())
    assert "params.root_password" in str(caught.value)
    assert "LEAKY-1234" not in str(caught.value)


def test_a_param_spelling_a_secret_placeholder_is_refused(catalog: Catalog) -> None:
    # YAML's "\0" escape makes the NUL bytes of the engine's internal placeholder.
    err = only_error(kitchen('label: "\\0secret:mysql_root\\0"\ntoken: {secret: t}\n'), catalog)
    assert err.field == "params.label" and "NUL" in err.message
    assert "\x00" not in str(err)


@pytest.mark.parametrize(
    "name", ["../x", "a/b", "", "a\nb", "x" * 5000, "Upper", "-dash", "a b"]
)
def test_a_secret_name_follows_the_definition_name_rules(catalog: Catalog, name: str) -> None:
    text = MYSQL.replace("{secret: mysql_root}", "{secret: " + json.dumps(name) + "}")
    err = only_error(text, catalog)
    assert err.path == PATH and err.field == "params.root_password.secret"
    assert "1-63" in err.message


def test_a_secret_name_of_63_characters_is_fine(catalog: Catalog) -> None:
    name = "a" + "b.c_d-" * 10 + "xy"
    assert len(name) == 63
    d = parse_definition(PATH, MYSQL.replace("mysql_root", name), catalog)
    assert d.params["root_password"] == SecretRef(name)


def test_a_secret_reference_may_pin_a_version(catalog: Catalog) -> None:
    text = MYSQL.replace("{secret: mysql_root}", "{secret: mysql_root, version: 3}")
    d = parse_definition(PATH, text, catalog)
    assert d.params["root_password"] == SecretRef("mysql_root", 3)
    assert public_params(d)["root_password"] == {"secret": "mysql_root", "version": 3}
    assert "root_password: {secret: mysql_root, version: 3}" in to_yaml(d)
    assert parse_definition(PATH, to_yaml(d), catalog) == d
    err = only_error(MYSQL.replace("{secret: mysql_root}", "{secret: mysql_root, version: 0}"), catalog)
    assert err.field == "params.root_password.version" and "version number" in err.message
    # A version is an SQLite INTEGER in the store: 2^63 would overflow it at the next sync.
    top = MYSQL.replace("{secret: mysql_root}", "{secret: mysql_root, version: 9223372036854775807}")
    assert parse_definition(PATH, top, catalog).params["root_password"] == SecretRef("mysql_root", 2**63 - 1)
    for huge in (2**63, 10**23):
        text = MYSQL.replace("{secret: mysql_root}", f"{{secret: mysql_root, version: {huge}}}")
        err = only_error(text, catalog)
        assert err.field == "params.root_password.version" and "9223372036854775807" in err.message
