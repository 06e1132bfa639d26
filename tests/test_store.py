"""The SQLite store: every record round-trips, and threads and processes share it safely."""

from __future__ import annotations

import dataclasses
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conftest import full_spec
from deployally import identity
from deployally.errors import (
    Conflict,
    NotFound,
    SecretError,
    StoreUnavailable,
    UnstorableValue,
    ValidationError,
)
from deployally.store import (
    LOCAL_SERVER_ID,
    SCHEMA_VERSION,
    DeliveryStatus,
    Store,
)
from deployally.types import (
    ActionKind,
    DefinitionRecord,
    DefinitionStatus,
    Deployment,
    DeploymentStatus,
    FieldChange,
    LogLine,
    Reason,
    ReasonKind,
    Revision,
    SecretRef,
    SecretVersions,
    Waiting,
    WaitKind,
)

T0 = datetime(2026, 2, 13, 10, 0, 0, tzinfo=UTC)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def store(state_dir: Path) -> Iterator[Store]:
    s = Store(state_dir)
    yield s
    s.close()


def definition_record(name: str = "mysql_producao", **changes: object) -> DefinitionRecord:
    rec = DefinitionRecord(
        id=identity.definition_id(name),
        name=name,
        path=f"definitions/{name}.yaml",
        template_id=identity.template_id("database/mysql/standard/8.4"),
        server_id=LOCAL_SERVER_ID,
        profile="production",
        status=DefinitionStatus.PENDING,
        current_revision=2,
        applied_revision=1,
        desired=full_spec(),
        applied_hash="sha256:" + "cd" * 32,
        depends_files=("config/my.cnf",),
        params={
            "database_name": "app_db",
            "root_password": SecretRef("mysql_root"),
            "replicas": 2,
            "flags": ["a", "b"],
        },
        last_error=None,
        operator_stopped=False,
        created_at=T0,
        updated_at=T0 + timedelta(seconds=5),
    )
    return dataclasses.replace(rec, **changes)  # type: ignore[arg-type]


def deployment(dep_id: str = "deploy_000000000001", **changes: object) -> Deployment:
    dep = Deployment(
        id=dep_id,
        definition_id=identity.definition_id("mysql_producao"),
        definition_name="mysql_producao",
        server_id=LOCAL_SERVER_ID,
        revision=2,
        commit="a" * 40,
        action=ActionKind.UPDATE,
        status=DeploymentStatus.PENDING,
        reason=Reason(
            ReasonKind.DEFINITION,
            "definitions/mysql_producao.yaml changed",
            "a" * 40,
            (FieldChange("image", "mysql:8.0", "mysql:8.4"), FieldChange("cpus", None, 1.5)),
        ),
        created_at=T0,
    )
    return dataclasses.replace(dep, **changes)  # type: ignore[arg-type]


# ---------------------------------------------------------------- files and schema


def test_state_dir_is_0700_and_db_files_0600(state_dir: Path, store: Store) -> None:
    store.set_secret("mysql_root", "s3cret")  # a write, so the WAL files exist
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    for name in ("deployally.db", "deployally.db-wal", "deployally.db-shm"):
        assert stat.S_IMODE((state_dir / name).stat().st_mode) == 0o600, name


def test_database_is_in_wal_mode(state_dir: Path, store: Store) -> None:
    conn = sqlite3.connect(state_dir / "deployally.db")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


def test_opening_twice_keeps_data_and_schema_version(state_dir: Path) -> None:
    with Store(state_dir) as first:
        first.set_meta("k", "v")
        assert first.schema_version() == SCHEMA_VERSION
    with Store(state_dir) as second:
        assert second.schema_version() == SCHEMA_VERSION
        assert second.get_meta("k") == "v"
        assert [s.name for s in second.servers()] == ["local"]


def test_local_server_exists_from_the_start(store: Store) -> None:
    local = store.server("local")
    assert local is not None
    assert local.id == identity.stable_id("srv", "local") == LOCAL_SERVER_ID
    assert (local.environment, local.status) == ("production", "active")
    assert store.server(LOCAL_SERVER_ID) == local


def test_naive_datetimes_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="naive"):
        store.add_revision(
            Revision(
                "def_x", "x", 1, "a" * 40, "sha256:0", "definitions/x.yaml", datetime(2026, 1, 1)
            )
        )


# ---------------------------------------------------------------- sync bookkeeping


def test_attempted_and_applied_commits_are_separate(store: Store) -> None:
    assert store.last_applied_commit() is None
    assert store.last_attempted_commit() is None
    store.set_last_attempted_commit("b" * 40)
    store.set_last_applied_commit("a" * 40)
    store.set_last_attempted_commit("c" * 40)
    assert store.last_attempted_commit() == "c" * 40
    assert store.last_applied_commit() == "a" * 40


# ---------------------------------------------------------------- definitions


def test_definition_round_trip_by_id_and_name(store: Store) -> None:
    rec = definition_record()
    store.upsert_definition(rec)
    assert store.definition(rec.id) == rec
    assert store.definition("mysql_producao") == rec
    assert isinstance(rec.params["root_password"], SecretRef)
    assert store.definition("nope") is None


def test_upsert_replaces_fields_but_keeps_created_at(store: Store) -> None:
    store.upsert_definition(definition_record())
    later = definition_record(
        status=DefinitionStatus.ACTIVE,
        desired=None,
        created_at=T0 + timedelta(days=1),
        updated_at=T0 + timedelta(days=1),
    )
    store.upsert_definition(later)
    got = store.definition(later.id)
    assert got == dataclasses.replace(later, created_at=T0)


def test_definitions_filter_page_and_count(store: Store) -> None:
    for i, name in enumerate(["c_app", "a_app", "b_app", "d_app"]):
        store.upsert_definition(
            definition_record(
                name,
                server_id="srv_edge" if i % 2 else LOCAL_SERVER_ID,
                status=DefinitionStatus.ACTIVE if i < 3 else DefinitionStatus.FAILED,
            )
        )
    assert [d.name for d in store.definitions()] == ["a_app", "b_app", "c_app", "d_app"]
    assert [d.name for d in store.definitions(limit=2, offset=1)] == ["b_app", "c_app"]
    assert [d.name for d in store.definitions(server_id="srv_edge")] == ["a_app", "d_app"]
    assert [d.name for d in store.definitions(status=DefinitionStatus.FAILED)] == ["d_app"]
    assert store.count_definitions() == 4
    assert store.count_definitions(server_id=LOCAL_SERVER_ID, status="active") == 2


def test_set_definition_status_is_a_partial_update(store: Store) -> None:
    rec = definition_record()
    store.upsert_definition(rec)
    store.set_definition_status(rec.id, DefinitionStatus.FAILED, last_error="image not found")
    got = store.definition(rec.id)
    assert got is not None
    assert (got.status, got.last_error) == (DefinitionStatus.FAILED, "image not found")
    assert (got.applied_revision, got.applied_hash) == (rec.applied_revision, rec.applied_hash)
    assert got.updated_at > rec.updated_at

    store.set_definition_status(rec.id, "active", applied_revision=2, applied_hash="sha256:ee")
    got = store.definition(rec.id)
    assert got is not None
    assert (got.status, got.last_error) == (DefinitionStatus.ACTIVE, None)
    assert (got.applied_revision, got.applied_hash) == (2, "sha256:ee")
    assert got.desired == rec.desired

    with pytest.raises(NotFound, match="def_missing"):
        store.set_definition_status("def_missing", "active")


def test_operator_stopped_and_delete(store: Store) -> None:
    rec = definition_record()
    store.upsert_definition(rec)
    store.set_operator_stopped(rec.id, True)
    got = store.definition(rec.id)
    assert got is not None and got.operator_stopped
    store.set_operator_stopped(rec.id, False)
    got = store.definition(rec.id)
    assert got is not None and not got.operator_stopped
    store.delete_definition(rec.id)
    assert store.definition(rec.id) is None
    assert store.count_definitions() == 0


def test_a_name_taken_by_another_id_is_a_conflict(store: Store) -> None:
    store.upsert_definition(definition_record())
    with pytest.raises(Conflict, match="mysql_producao"):
        store.upsert_definition(definition_record(id="def_other"))


# ---------------------------------------------------------------- revisions


def revision(number: int, commit: str = "", def_name: str = "app") -> Revision:
    return Revision(
        definition_id=identity.definition_id(def_name),
        name=def_name,
        number=number,
        commit=commit or f"{number:040x}",
        desired_hash=f"sha256:{number}",
        path=f"definitions/{def_name}.yaml",
        created_at=T0 + timedelta(minutes=number),
    )


def test_revisions_ascending_latest_and_by_number(store: Store) -> None:
    for n in (2, 1, 3):
        store.add_revision(revision(n))
    store.add_revision(revision(1, def_name="other"))
    def_id = identity.definition_id("app")
    assert store.revisions(def_id) == [revision(1), revision(2), revision(3)]
    assert store.latest_revision(def_id) == revision(3)
    assert store.revision(def_id, 2) == revision(2)
    assert store.revision(def_id, 9) is None
    assert store.latest_revision("def_none") is None


def test_adding_a_revision_twice_is_a_no_op(store: Store) -> None:
    store.add_revision(revision(1))
    store.add_revision(revision(1, commit="f" * 40))  # a replay after a crash
    assert store.revisions(identity.definition_id("app")) == [revision(1)]


# ---------------------------------------------------------------- deployments


def test_deployment_round_trip_with_logs(store: Store) -> None:
    dep = deployment(logs=(LogLine(T0, "pulling mysql:8.4"),))
    store.create_deployment(dep)
    store.append_log(dep.id, "starting", at=T0 + timedelta(seconds=1))
    store.update_deployment(dep.id, status=DeploymentStatus.RUNNING, started_at=T0)
    store.update_deployment(
        dep.id, status=DeploymentStatus.SUCCESS, finished_at=T0 + timedelta(seconds=2)
    )
    got = store.deployment(dep.id)
    assert got == dataclasses.replace(
        dep,
        status=DeploymentStatus.SUCCESS,
        started_at=T0,
        finished_at=T0 + timedelta(seconds=2),
        logs=(LogLine(T0, "pulling mysql:8.4"), LogLine(T0 + timedelta(seconds=1), "starting")),
    )
    without = store.deployment(dep.id, with_logs=False)
    assert without is not None and without.logs == ()
    assert store.deployment("deploy_missing") is None


def test_a_waiting_deployment_keeps_what_it_waits_for_until_it_runs(store: Store) -> None:
    waiting = Waiting(WaitKind.DEPENDENCY, "dependency db is not running and healthy", ("db",), T0)
    store.create_deployment(deployment("deploy_w", status=DeploymentStatus.WAITING, waiting=waiting))
    found = store.deployment("deploy_w")
    assert found is not None and found.waiting == waiting
    assert store.waiting_by_definition()[found.definition_id].id == "deploy_w"
    store.update_deployment("deploy_w", status=DeploymentStatus.RUNNING, started_at=T0)
    assert store.deployment("deploy_w").waiting == waiting  # type: ignore[union-attr]
    store.update_deployment("deploy_w", status=DeploymentStatus.SUCCESS, waiting=None)
    assert store.deployment("deploy_w").waiting is None  # type: ignore[union-attr]
    assert store.waiting_by_definition() == {}


def test_each_server_knows_the_commit_it_applied(store: Store) -> None:
    store.set_server_applied_commit(LOCAL_SERVER_ID, "a" * 40)
    assert store.server("local").applied_commit == "a" * 40  # type: ignore[union-attr]
    with pytest.raises(NotFound):
        store.set_server_applied_commit("srv_nowhere", "a" * 40)


def test_deployments_newest_first_with_filters_and_counts(store: Store) -> None:
    store.create_deployment(deployment("deploy_1", created_at=T0))
    store.create_deployment(deployment("deploy_2", created_at=T0 + timedelta(seconds=1)))
    store.create_deployment(
        deployment(
            "deploy_3",
            created_at=T0 + timedelta(seconds=1),  # same instant: insertion order decides
            definition_id="def_other",
            server_id="srv_edge",
            status=DeploymentStatus.FAILED,
        )
    )
    assert [d.id for d in store.deployments()] == ["deploy_3", "deploy_2", "deploy_1"]
    assert [d.id for d in store.deployments(limit=1, offset=1)] == ["deploy_2"]
    assert [d.id for d in store.deployments(definition_id="def_other")] == ["deploy_3"]
    assert [d.id for d in store.deployments(server_id=LOCAL_SERVER_ID)] == ["deploy_2", "deploy_1"]
    assert store.count_deployments(status=DeploymentStatus.PENDING) == 2
    assert store.count_deployments() == 3
    assert store.counts_by_status() == {
        "pending": 2,
        "running": 0,
        "success": 0,
        "failed": 1,
        "rolled_back": 0,
        "waiting": 0,
    }


def test_logs_since_returns_only_newer_lines(store: Store) -> None:
    store.create_deployment(deployment())
    numbers = [store.append_log("deploy_000000000001", f"line {i}") for i in range(5)]
    assert numbers == [1, 2, 3, 4, 5]
    tail = store.logs_since("deploy_000000000001", 3)
    assert [(n, line.message) for n, line in tail] == [(4, "line 3"), (5, "line 4")]
    assert store.logs_since("deploy_000000000001", 5) == []


def test_unknown_deployment_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        store.append_log("deploy_missing", "x")
    with pytest.raises(NotFound):
        store.update_deployment("deploy_missing", status="failed")


def test_eight_threads_append_logs_concurrently(store: Store) -> None:
    ids = [f"deploy_{i:012x}" for i in range(8)]
    for dep_id in ids:
        store.create_deployment(deployment(dep_id))
    start = threading.Barrier(len(ids))

    def write(dep_id: str) -> None:
        start.wait()
        for n in range(200):
            store.append_log(dep_id, f"{dep_id} {n}")

    with ThreadPoolExecutor(max_workers=len(ids)) as pool:
        for future in [pool.submit(write, d) for d in ids]:
            future.result()  # re-raises a writer's error here
    for dep_id in ids:
        got = store.deployment(dep_id)
        assert got is not None
        assert [line.message for line in got.logs] == [f"{dep_id} {n}" for n in range(200)]


def test_two_stores_on_one_directory_see_each_other(state_dir: Path) -> None:
    # Two Store objects are two processes' view: separate connections, one file.
    with Store(state_dir) as serve, Store(state_dir) as cli:
        serve.create_deployment(deployment())
        serve.append_log("deploy_000000000001", "from serve")
        got = cli.deployment("deploy_000000000001")
        assert got is not None and [line.message for line in got.logs] == ["from serve"]
        cli.set_secret("api_key", "k1")
        assert serve.secret_value("api_key") == "k1"
        serve.set_last_applied_commit("a" * 40)
        assert cli.last_applied_commit() == "a" * 40


_WRITER = """
import sys
from pathlib import Path
from deployally.store import Store
store = Store(Path(sys.argv[1]))
for n in range(100):
    store.append_log(sys.argv[2], f"{sys.argv[2]} {n}")
    store.set_secret("shared", sys.argv[2])
store.close()
"""


def test_two_processes_write_at_once(state_dir: Path, store: Store) -> None:
    ids = ["deploy_00000000000a", "deploy_00000000000b"]
    for dep_id in ids:
        store.create_deployment(deployment(dep_id))
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(state_dir), d], stderr=subprocess.PIPE)
        for d in ids
    ]
    for w in writers:
        _, err = w.communicate()
        assert w.returncode == 0, err.decode()
    for dep_id in ids:
        got = store.deployment(dep_id)
        assert got is not None
        assert [line.message for line in got.logs] == [f"{dep_id} {n}" for n in range(100)]
    assert store.secret_versions() == {"shared": 200}


# ---------------------------------------------------------------- secrets


def test_a_store_locked_by_another_process_refuses_writes_saying_so_and_recovers(
    state_dir: Path, store: Store
) -> None:
    holder = sqlite3.connect(state_dir / "deployally.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # what `sqlite3 deployally.db` mid-transaction holds
    try:
        with pytest.raises(StoreUnavailable, match="locked by another process"):
            store.probe_write()
        assert store.write_fault is not None and "locked" in store.write_fault
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    store.set_meta("after", "yes")  # no transaction was left open by the failed one
    assert store.get_meta("after") == "yes"
    assert store.write_fault is None
    store.probe_write()


def test_a_current_store_opens_and_reads_while_another_process_holds_the_write_lock(
    state_dir: Path, store: Store
) -> None:
    store.set_meta("seen", "yes")
    holder = sqlite3.connect(state_dir / "deployally.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with Store(state_dir) as reader:  # e.g. `validate` in a pre-receive hook
            assert reader.get_meta("seen") == "yes"
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_secret_versions_increment_and_listing_hides_values(store: Store) -> None:
    assert store.set_secret("mysql_root", "first-value") == 1
    assert store.set_secret("mysql_root", "second-value") == 2
    assert store.set_secret("redis", "r-value") == 1
    assert store.secret_value("mysql_root") == "second-value"
    assert store.secret_versions() == {"mysql_root": 2, "redis": 1}
    listed = store.list_secrets()
    assert [(s.name, s.version) for s in listed] == [("mysql_root", 2), ("redis", 1)]
    first = listed[0]
    assert (first.name, first.version, first.versions) == ("mysql_root", 2, (1, 2))
    assert first.updated_at.tzinfo is not None
    assert "second-value" not in repr(listed) and "r-value" not in repr(listed)


def test_missing_secret_says_how_to_set_it(store: Store) -> None:
    with pytest.raises(
        SecretError, match=r"secret 'nope' is not set: run `deployally secret set nope`"
    ):
        store.secret_value("nope")


def test_every_version_is_kept_until_nothing_needs_it(store: Store) -> None:
    for value in ("v1", "v2", "v3", "v4"):
        store.set_secret("pw", value)
    assert store.secret_value("pw", 2) == "v2" and store.secret_value("pw") == "v4"
    # Revision 1 of app pins version 2; a spec in use holds version 3.
    store.add_revision(replace(revision(1), secrets=(("pw", 2),)))
    assert store.revision(identity.definition_id("app"), 1) == replace(revision(1), secrets=(("pw", 2),))
    assert store.drop_unused_secret_versions(keep={("pw", 3)}) == 1  # version 1
    assert store.list_secrets()[0].versions == (2, 3, 4)
    with pytest.raises(SecretError, match=r"secret 'pw' has no version 1 \(kept: 2, 3, 4\)"):
        store.secret_value("pw", 1)
    assert store.available_secrets() == SecretVersions(
        current={"pw": 4}, kept=frozenset({("pw", 2), ("pw", 3), ("pw", 4)})
    )


def test_a_revision_whose_pin_does_not_fit_is_refused_whole(store: Store) -> None:
    with pytest.raises(UnstorableValue, match=r"revision 1 of app .* cannot be stored"):
        store.add_revision(replace(revision(1), secrets=(("pw", 2**63),)))
    assert store.revisions(identity.definition_id("app")) == []  # nothing half-written


APP = identity.definition_id("app")


def test_a_staged_version_is_pinned_only_until_published_or_discarded(store: Store) -> None:
    first = store.stage_secret("pw", "first-api-write", owner=APP)
    store.publish_secret("pw", first, "b" * 40)
    store.add_revision(replace(revision(1, commit="b" * 40), secrets=()))
    staged = store.stage_secret("pw", "from-an-api-write", owner=APP)
    assert staged == 2
    assert store.secret_value("pw") == "first-api-write"  # unpinned references do not see it
    assert store.secret_value("pw", 2) == "from-an-api-write"
    assert store.list_secrets()[0].versions == (1,)
    assert store.drop_unused_secret_versions() == 0  # in flight: kept
    store.publish_secret("pw", staged, "c" * 40)
    assert store.secret_value("pw") == "from-an-api-write"
    # Its commit is not synced yet, so nothing pins it; still it stays until it is.
    assert store.set_secret("pw", "newer") == 3
    assert store.drop_unused_secret_versions() == 1  # version 1 only
    assert store.list_secrets()[0].versions == (2, 3)
    store.add_revision(replace(revision(2, commit="c" * 40), secrets=()))
    assert store.drop_unused_secret_versions() == 1  # synced and pinned by nothing: gone
    lost = store.stage_secret("pw", "lost-race", owner=APP)
    store.discard_secret("pw", lost)
    with pytest.raises(SecretError, match="has no version 4"):
        store.secret_value("pw", lost)
    older, second = store.stage_secret("pw", "a", owner=APP), store.stage_secret("pw", "b", owner=APP)
    store.publish_secret("pw", second, "d" * 40)
    store.publish_secret("pw", older, "e" * 40)  # published last, but older: not current
    assert store.secret_versions() == {"pw": second}


def test_a_staged_version_is_refused_for_a_secret_its_definition_did_not_make(store: Store) -> None:
    store.set_secret("operators", "operator-set")
    with pytest.raises(Conflict, match="'operators' exists already and is the operator's"):
        store.stage_secret("operators", "through-the-api", owner=APP)
    store.stage_secret("app_pw", "api-write", owner=APP)  # staged, not yet published: still its
    with pytest.raises(Conflict, match="another definition's"):
        store.stage_secret("app_pw", "other", owner=identity.definition_id("other"))
    assert store.secret_value("operators") == "operator-set"
    assert store.stage_secret("app_pw", "again", owner=APP) == 2
    store.delete_secret("operators")  # the operator removed it: an API write may make it anew
    assert store.stage_secret("operators", "now-the-apps", owner=APP) == 2
    store.set_secret("app_pw", "the-operator-sets-the-apps")  # a new value of its secret: still its
    assert store.stage_secret("app_pw", "api-again", owner=APP) == 4
    store.delete_secret("app_pw")
    store.set_secret("app_pw", "the-operators-own-now")  # set anew after removal: the operator's
    with pytest.raises(Conflict, match="operator's"):
        store.stage_secret("app_pw", "would-overwrite", owner=APP)


def test_secrets_api_writes_made_before_owners_were_kept_stay_theirs(tmp_path: Path) -> None:
    from deployally.store.db import _MIGRATIONS, DB_FILE

    state = tmp_path / "state"
    state.mkdir()
    db = sqlite3.connect(state / DB_FILE)
    owners = next(i for i, m in enumerate(_MIGRATIONS) if "ALTER TABLE secrets ADD COLUMN owner TEXT" in m)
    for migration in _MIGRATIONS[:owners]:  # the schema before owners
        for statement in migration:
            db.execute(statement)
    db.execute(f"PRAGMA user_version = {owners}")
    at = "2026-01-01T00:00:00.000000Z"
    for name, commit in (("app_admin_password", "c" * 40), ("operators", None)):
        db.execute("INSERT INTO secrets (name, version, current, updated_at) VALUES (?, 1, 1, ?)",
                   (name, at))
        db.execute("INSERT INTO secret_versions (name, version, value, key_id, commit_sha,"
                   " created_at) VALUES (?, 1, 'plain', '', ?, ?)", (name, commit, at))
        db.execute("INSERT INTO revision_secrets VALUES (?, 1, ?, 1)", (APP, name))
    db.execute("INSERT INTO revisions VALUES (?, 1, 'app', ?, 'sha256:1', 'definitions/app.yaml', ?)",
               (APP, "c" * 40, at))
    db.commit()
    db.close()
    with Store(state) as store:
        assert store.stage_secret("app_admin_password", "next", owner=APP) == 2
        with pytest.raises(Conflict, match="operator's"):  # pinned, but no API write made it
            store.stage_secret("operators", "next", owner=APP)


def test_deleted_secret_is_gone_and_its_version_keeps_counting(store: Store) -> None:
    store.set_secret("mysql_root", "v1")
    store.delete_secret("mysql_root")
    with pytest.raises(SecretError):
        store.secret_value("mysql_root")
    assert store.secret_versions() == {}
    assert store.list_secrets() == []
    # A new value must not reuse version 1, or specs hashed over it would not redeploy.
    assert store.set_secret("mysql_root", "v2") == 2
    with pytest.raises(NotFound):
        store.delete_secret("never_set")


# ---------------------------------------------------------------- tokens


def db_bytes(state_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(state_dir.iterdir()) if p.is_file())


def test_token_create_verify_revoke(state_dir: Path, store: Store) -> None:
    token = store.create_token("ci", "write")
    assert token.startswith("da_") and len(token) == len("da_") + 32
    record = store.verify_token(token)
    assert record is not None and (record.name, record.scope) == ("ci", "write")
    assert store.verify_token(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert store.verify_token("") is None
    assert [t.name for t in store.list_tokens()] == ["ci"]

    assert token.encode() not in db_bytes(state_dir)

    store.revoke_token("ci")
    assert store.verify_token(token) is None
    assert store.list_tokens() == []
    with pytest.raises(NotFound):
        store.revoke_token("ci")


def test_token_revoke_by_id_and_bad_scope_and_duplicate_name(store: Store) -> None:
    token = store.create_token("ops", "admin")
    record = store.verify_token(token)
    assert record is not None
    store.revoke_token(record.id)
    assert store.verify_token(token) is None
    with pytest.raises(ValidationError, match="scope"):
        store.create_token("x", "root")
    store.create_token("dup", "read")
    with pytest.raises(Conflict, match="dup"):
        store.create_token("dup", "read")


# ---------------------------------------------------------------- servers


def test_add_server_key_is_shown_once_and_verifies(state_dir: Path, store: Store) -> None:
    record, key = store.add_server("edge-1", "staging", "rack 4")
    assert record.id.startswith("srv_") and key.startswith("da_server_")
    assert len(key) == len("da_server_") + 32
    assert store.server("edge-1") == record
    assert store.server(record.id) == record
    assert store.verify_server_key(key) == record
    assert store.verify_server_key(key + "x") is None
    assert store.verify_token(key) is None  # a server key is not an API token
    assert [s.name for s in store.servers()] == ["edge-1", "local"]
    assert key.encode() not in db_bytes(state_dir)
    with pytest.raises(Conflict):
        store.add_server("edge-1", "staging", "")


def test_touch_server_sets_last_seen(store: Store) -> None:
    record, _ = store.add_server("edge-1", "staging", "")
    assert record.last_seen_at is None
    store.touch_server(record.id)
    seen = store.server(record.id)
    assert seen is not None and seen.last_seen_at is not None
    assert seen.last_seen_at >= record.created_at
    with pytest.raises(NotFound):
        store.touch_server("srv_missing")


def test_a_store_from_before_server_hosts_migrates_and_keeps_its_servers(state_dir: Path) -> None:
    from deployally.store.db import _MIGRATIONS, DB_FILE

    # The schema as it was before docker_host and the agent's versions, one agent registered.
    state_dir.mkdir()
    conn = sqlite3.connect(state_dir / DB_FILE)
    for migration in _MIGRATIONS[:-1]:
        for statement in migration:
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {len(_MIGRATIONS) - 1}")
    conn.execute(
        "INSERT INTO servers (id, name, environment, description, status, key_hash, created_at)"
        " VALUES ('srv_0123456789ab', 'edge-1', 'staging', '', 'active', 'h',"
        " '2026-01-01T00:00:00.000000Z')"
    )
    conn.commit()
    conn.close()
    with Store(state_dir) as store:
        edge = store.server("edge-1")
        assert edge is not None and edge.kind == "agent"
        assert (edge.docker_host, edge.agent_version, edge.docker_version) == (None, None, None)
        swarm, key = store.add_server("mgr", "production", kind="swarm", docker_host="tcp://m:2376")
        assert key is None and store.server("mgr") == swarm
        assert store.schema_version() == SCHEMA_VERSION


def test_remove_and_rotate_server_by_name_or_id(store: Store) -> None:
    edge, old = store.add_server("edge-1", "staging")
    assert old is not None
    again, new = store.rotate_server_key("edge-1")
    assert again.id == edge.id and store.verify_server_key(old) is None
    assert store.verify_server_key(new) == edge
    assert store.remove_server(edge.id) == edge
    assert store.server("edge-1") is None and store.verify_server_key(new) is None
    with pytest.raises(NotFound):
        store.remove_server("edge-1")
    with pytest.raises(Conflict, match="cannot be removed"):
        store.remove_server("local")
    with pytest.raises(ValidationError, match="kind"):
        store.add_server("other", "staging", kind="local")


# ---------------------------------------------------------------- webhooks and outbox


def test_webhook_round_trip_and_delete(store: Store) -> None:
    hook = store.add_webhook("https://ci.example/hook", ["deployment.failed"], "sign-me")
    assert hook.id.startswith("whk_")
    assert store.webhook(hook.id) == hook
    assert store.webhooks() == [hook]
    assert "sign-me" not in repr(hook)
    store.delete_webhook(hook.id)
    assert store.webhook(hook.id) is None
    with pytest.raises(NotFound):
        store.delete_webhook(hook.id)


def test_enqueue_event_fans_out_to_subscribed_webhooks_only(store: Store) -> None:
    failed = store.add_webhook("https://a.example", ["deployment.failed"], "s1")
    both = store.add_webhook("https://b.example", ["deployment.started", "deployment.failed"], "s2")
    store.add_webhook("https://c.example", ["instance.stopped"], "s3")

    event_id = store.enqueue_event("deployment.failed", {"deployment_id": "deploy_1"})
    assert event_id.startswith("evt_")
    assert store.pending_webhooks() == [failed.id, both.id]
    due = [d for w in store.pending_webhooks() for d in store.pending_deliveries(w)]
    assert sorted(d.webhook_id for d in due) == sorted([failed.id, both.id])
    for d in due:
        assert (d.event_id, d.event, d.status, d.attempts) == (
            event_id,
            "deployment.failed",
            DeliveryStatus.PENDING,
            0,
        )
        assert d.data == {"deployment_id": "deploy_1"}


def test_enqueue_event_is_atomic(state_dir: Path, store: Store) -> None:
    store.add_webhook("https://a.example", ["deployment.failed"], "s1")
    # A webhook row that cannot be read, fanned out to after the first one got its
    # delivery row: the failure must take the event and that delivery back out.
    raw = sqlite3.connect(state_dir / "deployally.db")
    with raw:
        raw.execute(
            "INSERT INTO webhooks (id, url, events, secret, created_at)"
            " VALUES ('whk_broken', 'https://b.example', 'not json', 's', '2999-01-01T00:00:00Z')"
        )
    with pytest.raises(ValueError):
        store.enqueue_event("deployment.failed", {"deployment_id": "deploy_1"})
    assert raw.execute("SELECT count(*) FROM events").fetchone()[0] == 0
    assert raw.execute("SELECT count(*) FROM deliveries").fetchone()[0] == 0
    raw.close()
    assert store.pending_webhooks() == []


def test_a_deployment_outcome_its_log_line_and_its_webhook_are_written_together(
    state_dir: Path, store: Store
) -> None:
    store.add_webhook("https://a.example", ["deployment.failed"], "s1")
    store.create_deployment(deployment())
    store.update_deployment("deploy_000000000001", status=DeploymentStatus.FAILED, log="closed",
                            event=("deployment.failed", {"deployment_id": "deploy_000000000001"}))
    closed = store.deployment("deploy_000000000001")
    assert closed is not None and closed.status is DeploymentStatus.FAILED
    assert [line.message for line in closed.logs] == ["closed"]
    assert len(store.pending_webhooks()) == 1
    with pytest.raises(NotFound):  # no such deployment: no event either
        store.update_deployment("deploy_nope", status=DeploymentStatus.FAILED,
                                event=("deployment.failed", {"deployment_id": "deploy_nope"}))
    raw = sqlite3.connect(state_dir / "deployally.db")
    assert raw.execute("SELECT count(*) FROM events").fetchone()[0] == 1
    raw.close()


def test_pending_deliveries_in_event_order_and_record_attempt(store: Store) -> None:
    hook = store.add_webhook("https://a.example", ["deployment.success"], "s")
    other = store.add_webhook("https://b.example", ["deployment.success"], "s")
    for n in range(3):
        store.enqueue_event("deployment.success", {"n": n})
    first, second, third = store.pending_deliveries(hook.id)
    assert [d.data["n"] for d in (first, second, third)] == [0, 1, 2]
    assert {d.webhook_id for d in (first, second, third)} == {hook.id}

    now = datetime.now(UTC)
    store.record_attempt(
        first.id,
        status_code=500,
        duration_ms=12.5,
        error="HTTP 500",
        next_attempt_at=now + timedelta(seconds=30),
    )
    store.record_attempt(
        second.id,
        status_code=200,
        duration_ms=3.0,
        error=None,
        next_attempt_at=None,
        final_status=DeliveryStatus.DELIVERED,
    )
    # The failed first stays at the head, in its place: the third waits behind it.
    pending = store.pending_deliveries(hook.id)
    assert [d.id for d in pending] == [first.id, third.id]
    assert pending[0].attempts == 1 and pending[0].last_status_code == 500
    assert pending[0].next_attempt_at is not None and pending[0].next_attempt_at > now
    assert store.pending_deliveries(hook.id, 1) == [pending[0]]
    assert [d.data["n"] for d in store.pending_deliveries(other.id)] == [0, 1, 2]

    store.record_attempt(
        first.id,
        status_code=None,
        duration_ms=5000.0,
        error="timeout",
        next_attempt_at=None,
        final_status="failed",
    )
    attempts = store.delivery_attempts(first.id)
    assert [(a.number, a.status_code, a.error) for a in attempts] == [
        (1, 500, "HTTP 500"),
        (2, None, "timeout"),
    ]
    assert [d.id for d in store.deliveries(hook.id)] == [third.id, second.id, first.id]
    assert [d.status for d in store.deliveries(hook.id, limit=2, offset=1)] == [
        DeliveryStatus.DELIVERED,
        DeliveryStatus.FAILED,
    ]
    with pytest.raises(ValueError, match="next_attempt_at"):
        store.record_attempt(
            third.id, status_code=500, duration_ms=1.0, error="x", next_attempt_at=None
        )


def test_outbox_survives_a_restart(state_dir: Path) -> None:
    with Store(state_dir) as before:
        before.add_webhook("https://a.example", ["definition.created"], "s")
        before.enqueue_event("definition.created", {"name": "app"})
    with Store(state_dir) as after:
        [webhook_id] = after.pending_webhooks()
        assert [d.data for d in after.pending_deliveries(webhook_id)] == [{"name": "app"}]


def test_closed_store_refuses_new_connections(state_dir: Path) -> None:
    s = Store(state_dir)
    s.get_meta("x")  # this thread now has a connection
    s.close()
    with pytest.raises(RuntimeError, match="closed"):
        s.get_meta("x")
    # A thread that never used the store would open a new connection: refused too.
    with ThreadPoolExecutor(max_workers=1) as pool, pytest.raises(RuntimeError, match="closed"):
        pool.submit(s.get_meta, "x").result()


def test_a_secret_with_a_nul_byte_is_refused(store: Store) -> None:
    with pytest.raises(SecretError, match="NUL"):
        store.set_secret("bad", "a\x00b")
    assert "bad" not in store.secret_versions()


def test_threads_that_come_and_go_leave_no_open_database_files(state_dir: Path) -> None:
    # A sync's pool threads (one per server, several per wave) each read and write the store;
    # a long-running engine must not keep a connection for every thread that ever lived.
    import os

    with Store(state_dir) as store:
        store.servers()
        for _ in range(3):
            with ThreadPoolExecutor(max_workers=8) as pool:
                list(pool.map(lambda _: store.servers(), range(8)))
        last = threading.Thread(target=store.servers)  # opening one closes the ended threads'
        last.start()
        last.join()
        # Each open connection holds its write-ahead log open (SQLite may keep the database
        # file's own descriptors for reuse): this thread's and the last one's, no more.
        fd_dir = Path("/proc/self/fd")
        logs = [fd for fd in os.listdir(fd_dir)
                if os.path.realpath(fd_dir / fd) == f"{store.path}-wal"]
        assert len(logs) <= 2, len(logs)
