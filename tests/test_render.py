"""render: definition + template -> ContainerSpec, tested with plain data."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from deployally import identity, secrets
from deployally.errors import RenderError
from deployally.model.render import _compile, render, volume_name
from deployally.types import (
    ConfigFile,
    ContainerSpec,
    Definition,
    Healthcheck,
    PortBinding,
    SecretRef,
    SecretVersions,
    Taxonomy,
    Template,
    VolumeMount,
)

MYSQL_SPEC: dict[str, Any] = {
    "image": {"repository": "mysql", "tag": "8.4"},
    "user_inputs": {
        "root_password": {"type": "password", "required": True},
        "database_name": {"type": "string", "required": True},
    },
    "profiles": ["minimal", "development", "production"],
    "profile_overrides": {
        "production": {"restart": "always", "resources": {"memory": "2g"}},
    },
    "ports": [{"container_port": 3306}],
    "volumes": [{"mount_path": "/var/lib/mysql"}],
    "env": {
        "MYSQL_ROOT_PASSWORD": "{{ params.root_password }}",
        "MYSQL_DATABASE": "{{ params.database_name }}",
    },
    "healthcheck": {"test": ["CMD", "mysqladmin", "ping"], "interval": "10s", "retries": 5},
    "stop_signal": "SIGTERM",
    "resources": {"cpus": 1.5, "memory": "512m"},
}


def make_template(spec: dict[str, Any] | None = None) -> Template:
    """A Template value as the model layer would build it."""
    spec = MYSQL_SPEC if spec is None else spec
    taxonomy = Taxonomy("assets", "database", "mysql", "standard", "8.4")
    return Template(
        id=identity.template_id(taxonomy.path),
        name="MySQL Database Server",
        description="",
        version="8.4",
        taxonomy=taxonomy,
        deprecated=False,
        spec=spec,
        spec_hash=identity.content_hash(spec),
        user_inputs=(),
        source="catalog/database/mysql-8.4.yaml",
        builtin=True,
    )


def make_definition(**overrides: Any) -> Definition:
    """A Definition value as the model layer would build it."""
    values: dict[str, Any] = {
        "id": identity.definition_id("mysql_prod"),
        "name": "mysql_prod",
        "path": "definitions/mysql_prod.yaml",
        "template": "database/mysql/standard/8.4",
        "template_id": identity.template_id("database/mysql/standard/8.4"),
        "server": "local",
        "profile": "development",
        "params": {"root_password": SecretRef("mysql_root"), "database_name": "app_db"},
    }
    values.update(overrides)
    return Definition(**values)


def run(
    definition: Definition | None = None,
    template: Template | None = None,
    *,
    repo_files: dict[str, str] | None = None,
    secret_versions: dict[str, int] | SecretVersions | None = None,
) -> ContainerSpec:
    return render(
        definition or make_definition(),
        template or make_template(),
        repo_files=repo_files or {},
        secret_versions={"mysql_root": 1} if secret_versions is None else secret_versions,
    )


def with_spec(**changes: Any) -> Template:
    return make_template({**MYSQL_SPEC, **changes})


def render_error(*args: Any, **kwargs: Any) -> RenderError:
    with pytest.raises(RenderError) as caught:
        run(*args, **kwargs)
    return caught.value


# ---------------------------------------------------------------- the whole spec


def test_mysql_definition_renders_to_the_full_spec() -> None:
    spec = run()
    assert spec.name == "mysql_prod"
    assert spec.image == "mysql:8.4"
    assert spec.env == (
        ("MYSQL_DATABASE", "app_db"),
        ("MYSQL_ROOT_PASSWORD", secrets.placeholder("mysql_root")),
    )
    assert spec.ports == (PortBinding(3306, "tcp", None),)
    assert spec.volumes == (VolumeMount("mysql_prod_var_lib_mysql", "/var/lib/mysql"),)
    assert spec.healthcheck == Healthcheck(("CMD", "mysqladmin", "ping"), 10.0, 5.0, 5, 0.0)
    assert spec.restart == "unless-stopped"
    assert spec.memory_bytes == 512 * 1024**2
    assert spec.cpus == 1.5
    assert spec.stop_signal == "SIGTERM"
    assert spec.secrets == (("mysql_root", 1),)
    assert spec.network == "deployally"
    assert spec.server == "local"
    assert spec.rendered_hash.startswith("sha256:")


def test_production_profile_merges_deeply_and_replaces_scalars() -> None:
    spec = run(make_definition(profile="production"))
    assert spec.restart == "always"
    assert spec.memory_bytes == 2 * 1024**3
    assert spec.cpus == 1.5  # kept: resources merged, not replaced


def test_profile_override_replaces_lists() -> None:
    template = with_spec(
        command=["mysqld", "--verbose"],
        profile_overrides={"minimal": {"command": ["mysqld"]}},
    )
    assert run(make_definition(profile="minimal"), template).command == ("mysqld",)
    assert run(make_definition(), template).command == ("mysqld", "--verbose")


def test_every_string_leaf_is_rendered() -> None:
    p = "{{ params.database_name }}"
    template = with_spec(
        image={"repository": "mysql", "tag": "{{ params.database_name }}-tag"},
        command=["run", p],
        entrypoint=f"/bin/{p} --flag",
        user=f"{p}-user",
        working_dir=f"/srv/{p}",
        labels={"team": p, "profile": "{{ profile }}"},
        healthcheck={"test": f"check {p}", "interval": "{{ 3 * 10 }}s", "timeout": "{{ 7 }}"},
        files=[{"path": "/etc/app.conf", "content": f"db={p}\nserver={{{{ server.name }}}}\n"}],
        stop_grace_period="{{ 5 }}s",
        env={"WHO": "{{ definition.name }} {{ definition.id }}"},
    )
    spec = run(template=template)
    assert spec.image == "mysql:app_db-tag"
    assert spec.command == ("run", "app_db")
    assert spec.entrypoint == ("/bin/app_db", "--flag")
    assert spec.user == "app_db-user"
    assert spec.working_dir == "/srv/app_db"
    assert spec.labels == (("profile", "development"), ("team", "app_db"))
    assert spec.healthcheck is not None
    assert spec.healthcheck.test == ("CMD-SHELL", "check app_db")
    assert spec.healthcheck.interval_s == 30.0
    assert spec.healthcheck.timeout_s == 7.0  # a bare rendered number is seconds
    assert spec.files == (ConfigFile("/etc/app.conf", "db=app_db\nserver=local\n", 0o644),)
    assert spec.stop_grace_s == 5.0
    assert spec.env == (("WHO", f"mysql_prod {identity.definition_id('mysql_prod')}"),)


def test_env_values_become_text_with_lowercase_booleans() -> None:
    spec = run(template=with_spec(env={"B": True, "N": 3, "F": False, "X": 1.5}))
    assert spec.env == (("B", "true"), ("F", "false"), ("N", "3"), ("X", "1.5"))


def test_user_inputs_are_not_rendered() -> None:
    # Descriptions may hold braces; they are metadata, not something Docker sees.
    template = with_spec(user_inputs={"x": {"type": "string", "description": "{{ oops"}})
    assert run(template=template).image == "mysql:8.4"


# ---------------------------------------------------------------- errors


def test_undefined_param_names_the_field() -> None:
    template = with_spec(env={"MYSQL_DATABASE": "{{ params.nope }}"})
    error = render_error(template=template)
    assert error.path == "definitions/mysql_prod.yaml"
    assert error.field == "spec.env.MYSQL_DATABASE"
    assert "nope" in error.message


def test_syntax_error_names_the_field() -> None:
    error = render_error(template=with_spec(command=["ok", "{{ params.database_name "]))
    assert error.field == "spec.command[1]"
    assert "syntax" in error.message


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ params.__class__ }}",
        "{{ 'x' * 10**9 }}",
    ],
)
def test_sandbox_refuses_escapes(source: str) -> None:
    error = render_error(template=with_spec(labels={"evil": source}))
    assert error.field == "spec.labels.evil"
    assert "sandbox" in error.message


def test_sandbox_refuses_mutating_the_context() -> None:
    error = render_error(template=with_spec(env={"A": "{{ params.update({'x': 1}) }}"}))
    assert error.field == "spec.env.A"


def test_bad_memory_names_the_field() -> None:
    error = render_error(template=with_spec(resources={"memory": "lots"}))
    assert error.field == "spec.resources.memory"


def test_bad_duration_names_the_field() -> None:
    error = render_error(template=with_spec(stop_grace_period="{{ 'soon' }}"))
    assert error.field == "spec.stop_grace_period"
    assert "10s" in error.message


def test_bad_port_names_the_field() -> None:
    error = render_error(template=with_spec(ports=[{"container_port": "http"}]))
    assert error.field == "spec.ports[0].container_port"


def test_each_distinct_text_is_compiled_once() -> None:
    run()  # warm the cache for this template's texts
    before = _compile.cache_info().misses
    for _ in range(3):
        run(
            make_definition(
                name="other",
                params={"root_password": SecretRef("mysql_root"), "database_name": "x"},
            )
        )
    assert _compile.cache_info().misses == before


# ---------------------------------------------------------------- secrets


def test_missing_secret_says_how_to_set_it() -> None:
    error = render_error(secret_versions={})
    assert error.field == "params.root_password"
    assert "deployally secret set mysql_root" in error.message


@pytest.mark.parametrize(
    "changes",
    [
        {"labels": {"pw": "{{ params.root_password }}"}},
        {"image": {"repository": "mysql", "tag": "{{ params.root_password }}"}},
        {"user": "{{ params.root_password }}"},
        {"healthcheck": {"test": ["CMD", "ping", "{{ params.root_password }}"]}},
    ],
)
def test_secrets_are_refused_where_docker_ps_shows_them(changes: dict[str, Any]) -> None:
    error = render_error(template=with_spec(**changes))
    assert "secrets may only be used" in error.message
    assert "\x00" not in str(error)


def test_secrets_allowed_in_env_and_files() -> None:
    pw = "{{ params.root_password }}"
    template = with_spec(
        env={"MYSQL_PWD": pw},
        command=["sh", "-c", 'mysqld --pw="$MYSQL_PWD"'],
        files=[{"path": "/etc/my.cnf", "content": f"password={pw}\n"}],
    )
    spec = run(template=template, secret_versions={"mysql_root": 7})
    marker = secrets.placeholder("mysql_root")
    assert dict(spec.env)["MYSQL_PWD"] == marker
    assert spec.files[0].content == f"password={marker}\n"
    assert spec.secrets == (("mysql_root", 7),)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"command": "mysqld --pw={{ params.root_password }}"}, "spec.command"),
        ({"command": ["mysqld", "--pw={{ params.root_password }}"]}, "spec.command[1]"),
        ({"entrypoint": ["/entry", "{{ params.root_password }}"]}, "spec.entrypoint[1]"),
    ],
)
def test_secrets_are_refused_in_the_command_and_entrypoint_ps_shows(
    changes: dict[str, Any], field: str
) -> None:
    error = render_error(template=with_spec(env={}, **changes))
    assert error.field == field  # before: rendered, and the value was in `ps` on the host
    assert "secrets may only be used in env values and files content" in error.message
    assert "`ps`" in error.message and "\x00" not in str(error)


def test_transformed_secret_is_refused() -> None:
    error = render_error(template=with_spec(env={"P": "{{ params.root_password | upper }}"}))
    assert "transformed" in error.message


def test_only_referenced_secrets_are_listed() -> None:
    definition = make_definition(
        params={
            "root_password": SecretRef("mysql_root"),
            "database_name": "app_db",
            "spare": SecretRef("unused"),
        }
    )
    spec = run(definition, secret_versions={"mysql_root": 2, "unused": 4})
    assert spec.secrets == (("mysql_root", 2),)


# ---------------------------------------------------------------- config files


def test_files_from_template_and_definition_with_sources() -> None:
    template = with_spec(
        files=[
            {
                "path": "/etc/b.conf",
                "content": "b={{ params.database_name }}",
                "mode": "0600",
            },
            {"path": "/etc/a.conf", "source": "config/a.conf.j2"},
        ]
    )
    definition = make_definition(
        files=({"path": "/etc/c.conf", "content": "c={{ profile }}", "mode": 0o640},)
    )
    spec = run(definition, template, repo_files={"config/a.conf.j2": "a={{ definition.name }}\n"})
    assert spec.files == (
        ConfigFile("/etc/a.conf", "a=mysql_prod\n", 0o644),
        ConfigFile("/etc/b.conf", "b=app_db", 0o600),
        ConfigFile("/etc/c.conf", "c=development", 0o640),
    )


@pytest.mark.parametrize("mode", [0o7777, 0o4755, "2755", "01777"])
def test_a_file_mode_beyond_permission_bits_is_refused(mode: object) -> None:
    # Also for values that did not come through the schema (a template built in code).
    definition = make_definition(files=({"path": "/etc/c.conf", "content": "c", "mode": mode},))
    error = render_error(definition)
    assert error.path == "definitions/mysql_prod.yaml" and error.field == "files[0].mode"
    assert "setuid" in error.message


def test_definition_file_replaces_template_file_at_same_path() -> None:
    template = with_spec(files=[{"path": "/etc/a.conf", "content": "template"}])
    definition = make_definition(files=({"path": "/etc/a.conf", "content": "mine"},))
    assert run(definition, template).files == (ConfigFile("/etc/a.conf", "mine"),)


def test_missing_source_names_field_and_path() -> None:
    template = with_spec(files=[{"path": "/etc/a.conf", "source": "config/nope.conf"}])
    error = render_error(template=template)
    assert error.field == "spec.files[0].source"
    assert "config/nope.conf" in error.message


def test_error_inside_a_definition_file_names_its_field() -> None:
    definition = make_definition(files=({"path": "/etc/a", "content": "{{ params.x }}"},))
    assert render_error(definition).field == "files[0].content"


# ---------------------------------------------------------------- hash


def test_hash_is_stable_across_calls_and_dict_orderings() -> None:
    reordered = dict(reversed(list(MYSQL_SPEC.items())))
    reordered["env"] = dict(reversed(list(MYSQL_SPEC["env"].items())))
    params = {"database_name": "app_db", "root_password": SecretRef("mysql_root")}
    a = run()
    b = run(make_definition(params=params), make_template(reordered))
    assert a == b
    assert a.rendered_hash == run().rendered_hash


def test_hash_covers_every_field_but_itself() -> None:
    spec = render(
        make_definition(publish=((3306, 13306),)), make_template(), repo_files={},
        secret_versions={"mysql_root": 1}, publish_address="127.0.0.1",
    )
    expected = dataclasses.asdict(dataclasses.replace(spec, rendered_hash=""))
    assert expected.pop("replicas") == 1  # hashed only when not 1 (below)
    assert expected.pop("min_ready_s") == 5.0  # gates a rollout, reaches no container (below)
    assert spec.rendered_hash == identity.content_hash(expected)


def test_one_replica_hashes_as_before_replicas_existed_and_more_change_the_hash() -> None:
    # Upgrading must not redeploy every definition; two replicas are another spec.
    one = run()
    fields = dataclasses.asdict(dataclasses.replace(one, rendered_hash=""))
    del fields["replicas"], fields["min_ready_s"]
    for port in fields["ports"]:
        del port["host_ip"]
    assert one.rendered_hash == identity.content_hash(fields)
    two = run(make_definition(replicas=2))
    assert two.replicas == 2 and two.rendered_hash != one.rendered_hash


# ---------------------------------------------------------------- min_ready


def test_min_ready_the_definitions_beats_the_templates_which_beats_the_repositorys() -> None:
    def min_ready(definition: Definition, template: Template) -> float | None:
        spec = render(definition, template, repo_files={}, secret_versions={"mysql_root": 1},
                      min_ready_s=7.0)
        return spec.min_ready_s

    plain, own = make_definition(), make_definition(min_ready_s=0.0)
    assert min_ready(plain, make_template()) == 7.0  # deployally.yaml's
    assert min_ready(plain, with_spec(min_ready="1m")) == 60.0  # the template's
    assert min_ready(own, with_spec(min_ready="1m")) == 0.0  # the definition's, 0s too
    assert run().min_ready_s == 5.0  # none of them: the built-in default


def test_a_profile_override_and_a_param_can_set_min_ready() -> None:
    spec = {**MYSQL_SPEC, "min_ready": "{{ params.database_name }}",
            "profile_overrides": {"production": {"min_ready": "30s"}}}
    params = {"root_password": SecretRef("mysql_root"), "database_name": "2"}
    assert run(make_definition(params=params), make_template(spec)).min_ready_s == 2.0
    production = make_definition(profile="production")
    assert run(production, make_template(spec)).min_ready_s == 30.0


def test_a_change_of_min_ready_alone_leaves_the_rendered_hash_as_it_is() -> None:
    # The plan compares rendered hashes: a running container is not replaced for it.
    assert run(make_definition(min_ready_s=0.0)).rendered_hash == run().rendered_hash
    assert run(template=with_spec(min_ready="1h")).rendered_hash == run().rendered_hash


@pytest.mark.parametrize("value", ["2h", "{{ -1 }}", "soon"])
def test_a_rendered_min_ready_out_of_range_or_no_duration_names_the_field_and_template(
    value: str,
) -> None:
    err = render_error(template=with_spec(min_ready=value))
    assert err.path == "definitions/mysql_prod.yaml" and err.field == "spec.min_ready"
    assert "catalog/database/mysql-8.4.yaml" in err.message


def test_hash_changes_with_config_file_content() -> None:
    template = with_spec(files=[{"path": "/etc/a.conf", "source": "a.conf"}])
    one = run(template=template, repo_files={"a.conf": "x=1\n"})
    two = run(template=template, repo_files={"a.conf": "x=2\n"})
    assert one.rendered_hash != two.rendered_hash


def test_hash_changes_with_secret_version_but_never_holds_its_value() -> None:
    one = run(secret_versions={"mysql_root": 1})
    two = run(secret_versions={"mysql_root": 2})
    assert one.rendered_hash != two.rendered_hash
    # Render never sees a value: the spec carries a placeholder, resolved at apply time.
    assert dict(two.env)["MYSQL_ROOT_PASSWORD"] == secrets.placeholder("mysql_root")


def test_hash_unchanged_by_template_metadata() -> None:
    template = with_spec(user_inputs={}, profiles=["development"])
    assert run(template=template).rendered_hash == run().rendered_hash


# ---------------------------------------------------------------- volumes and ports


@pytest.mark.parametrize(
    ("mount_path", "explicit", "expected"),
    [
        ("/var/lib/mysql", None, "db_var_lib_mysql"),
        ("/data/", None, "db_data"),
        ("/Srv/My--Files.d", None, "db_srv_my_files_d"),
        ("/var/lib/mysql", "mysql-data", "db_mysql_data"),
    ],
)
def test_volume_naming(mount_path: str, explicit: str | None, expected: str) -> None:
    assert volume_name("db", mount_path, explicit) == expected


def test_explicit_volume_name_in_spec() -> None:
    template = with_spec(volumes=[{"mount_path": "/var/lib/mysql", "name": "data"}])
    assert run(template=template).volumes == (VolumeMount("mysql_prod_data", "/var/lib/mysql"),)


def test_nothing_is_published_unless_publish_says() -> None:
    assert all(p.host_port is None for p in run().ports)


def test_publish_binds_listed_ports_and_adds_unlisted_ones() -> None:
    spec = run(make_definition(publish=((3306, 13306), (9104, 19104))))
    assert spec.ports == (PortBinding(3306, "tcp", 13306), PortBinding(9104, "tcp", 19104))


def test_published_ports_listen_on_the_engines_publish_address() -> None:
    definition = make_definition(publish=((3306, 13306), (9104, 19104)))
    spec = render(
        definition, with_spec(ports=[{"container_port": 3306}, {"container_port": 33060}]),
        repo_files={}, secret_versions={"mysql_root": 1}, publish_address="127.0.0.1",
    )
    assert spec.ports == (
        PortBinding(3306, "tcp", 13306, "127.0.0.1"),
        PortBinding(33060, "tcp", None, None),  # not published: no address
        PortBinding(9104, "tcp", 19104, "127.0.0.1"),
    )
    everywhere = render(
        definition, make_template(), repo_files={}, secret_versions={"mysql_root": 1},
        publish_address="0.0.0.0",
    )
    assert everywhere.rendered_hash != spec.rendered_hash


def test_a_port_that_is_not_published_hashes_as_before_its_address_existed() -> None:
    # Upgrading must not redeploy every container whose template lists a port.
    spec = run()
    fields = dataclasses.asdict(dataclasses.replace(spec, rendered_hash=""))
    del fields["replicas"]  # one replica: hashed as before replicas existed too
    del fields["min_ready_s"]  # never hashed
    for port in fields["ports"]:
        assert port.pop("host_ip") is None
    assert spec.rendered_hash == identity.content_hash(fields)


def test_definition_fields_carry_through() -> None:
    definition = make_definition(server="edge", depends_on=("redis",), prune_volumes=True)
    spec = run(definition)
    assert (spec.server, spec.depends_on, spec.prune_volumes) == ("edge", ("redis",), True)


# ---------------------------------------------------------------- placeholders no one can forge

FORGED = secrets.placeholder("victim")  # another definition's secret, spelled out


def test_a_param_holding_a_placeholder_resolves_nothing() -> None:
    # parse_definition refuses it first; render refuses it on its own too.
    definition = make_definition(
        params={"root_password": SecretRef("mysql_root"), "database_name": FORGED}
    )
    error = render_error(definition)
    assert error.field == "spec.env.MYSQL_DATABASE" and "NUL" in error.message
    assert "\x00" not in str(error)


@pytest.mark.parametrize(
    ("template", "files", "field"),
    [
        (with_spec(env={"X": FORGED}), {}, "spec.env.X"),
        (with_spec(command=["sh", "-c", f"echo {FORGED}"]), {}, "spec.command[2]"),
        (with_spec(env={"X": "{{ '\\x00secret:victim\\x00' }}"}), {}, "spec.env.X"),
        (with_spec(files=[{"path": "/etc/a", "content": f"pw={FORGED}"}]), {},
         "spec.files[0].content"),
        (with_spec(files=[{"path": "/etc/a", "source": "config/a"}]),
         {"config/a": f"pw={FORGED}\n"}, "spec.files[0].source"),
    ],
)
def test_a_placeholder_spelled_in_a_template_or_config_file_is_refused(
    template: Template, files: dict[str, str], field: str
) -> None:
    error = render_error(template=template, repo_files=files)
    assert error.field == field and "NUL" in error.message
    assert "\x00" not in str(error)


@pytest.mark.parametrize(
    "text",
    [
        # Built from the pieces of the definition's own marker around another name.
        "{{ params.root_password[:8] ~ 'victim' ~ params.root_password[-1:] }}",
        "{{ params.root_password | replace('mysql_root', 'victim') }}x",
        "{{ params.root_password | tojson }}",
        "{{ params.root_password[1:] }}",
    ],
)
def test_a_template_cannot_make_a_placeholder_from_its_own(text: str) -> None:
    try:
        spec = run(template=with_spec(env={"X": text}), secret_versions={"mysql_root": 1, "victim": 1})
    except RenderError as error:
        assert "NUL" in error.message and "\x00" not in str(error)
        return
    # Whatever renders resolves only the definition's own secret.
    assert spec.secrets == (("mysql_root", 1),)
    assert all(secrets.referenced(v) <= {"mysql_root"} for _, v in spec.env)


def test_a_spec_key_holding_a_nul_is_refused() -> None:
    error = render_error(template=with_spec(env={FORGED: "x"}))
    assert error.field == "spec.env" and "NUL" in error.message
    assert "\x00" not in str(error)


def test_the_same_secret_twice_gets_one_placeholder() -> None:
    definition = make_definition(
        params={"root_password": SecretRef("mysql_root"), "database_name": SecretRef("mysql_root")}
    )
    spec = run(definition)
    assert dict(spec.env) == {
        "MYSQL_DATABASE": secrets.placeholder("mysql_root"),
        "MYSQL_ROOT_PASSWORD": secrets.placeholder("mysql_root"),
    }


# ---------------------------------------------------------------- pinned secret versions

KEPT = SecretVersions(current={"mysql_root": 5}, kept=frozenset({("mysql_root", 2), ("mysql_root", 5)}))


def test_a_pinned_version_renders_with_that_version_and_an_unpinned_with_the_current() -> None:
    pinned = make_definition(params={"root_password": SecretRef("mysql_root", 2), "database_name": "x"})
    assert run(pinned, secret_versions=KEPT).secrets == (("mysql_root", 2),)
    assert run(secret_versions=KEPT).secrets == (("mysql_root", 5),)
    unchecked = run(pinned, secret_versions=SecretVersions.unchecked())
    assert unchecked.secrets == (("mysql_root", 2),)


def test_a_pinned_version_that_does_not_exist_names_the_file_field_and_version() -> None:
    pinned = make_definition(params={"root_password": SecretRef("mysql_root", 3), "database_name": "x"})
    error = render_error(pinned, secret_versions=KEPT)
    assert error.path == "definitions/mysql_prod.yaml"
    assert error.field == "params.root_password.version"
    assert "secret 'mysql_root' has no version 3 (kept: 2, 5)" in error.message


def test_one_secret_at_two_versions_is_refused() -> None:
    definition = make_definition(
        params={"root_password": SecretRef("mysql_root", 2), "database_name": SecretRef("mysql_root")}
    )
    error = render_error(definition, secret_versions=KEPT)
    assert "two versions" in error.message
