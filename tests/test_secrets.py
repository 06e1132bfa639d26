"""Secret placeholders, masking, and lookups through the store."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from deployally.cli import main
from deployally.errors import SecretError
from deployally.secrets import (
    SecretMasker,
    display,
    lookup_from,
    placeholder,
    referenced,
    resolve,
)
from deployally.store import Store


def test_placeholders_resolve_and_display_without_values() -> None:
    text = f"user=root password={placeholder('mysql_root')} key={placeholder('api.key')}"
    assert referenced(text) == {"mysql_root", "api.key"}
    values = {"mysql_root": "hunter2", "api.key": "k-1"}
    assert resolve(text, values.__getitem__) == "user=root password=hunter2 key=k-1"
    assert display(text) == "user=root password=<secret:mysql_root> key=<secret:api.key>"


def test_masker_hides_every_known_value() -> None:
    masker = SecretMasker()
    assert masker.mask("nothing known yet: hunter2") == "nothing known yet: hunter2"
    masker.add("hunter2")
    masker.add("s3cr3t-token")
    line = "login root/hunter2 then hunter2 again with s3cr3t-token"
    assert masker.mask(line) == "login root/******** then ******** again with ********"


def test_masker_hides_the_longer_secret_whole() -> None:
    masker = SecretMasker()
    masker.add("abc")
    masker.add("abcdef")
    assert masker.mask("x=abcdef y=abc") == "x=******** y=********"


def test_masker_treats_values_literally_and_ignores_empty() -> None:
    masker = SecretMasker()
    masker.add("")
    masker.add("a.b*c")
    assert masker.mask("axbxc a.b*c") == "axbxc ********"
    assert repr(masker) == "SecretMasker(1 values)"


def test_masker_hides_each_line_of_a_multi_line_secret() -> None:
    key = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END KEY-----"
    masker = SecretMasker()
    masker.add(key)
    logged = "read key line MIIEvQIBADANBgkqhkiG9w0BAQEFAASC from file"
    assert masker.mask(logged) == "read key line ******** from file"
    assert masker.mask(f"whole: {key}") == "whole: ********"
    assert masker.mask("a } b") == "a } b"


def test_masker_is_safe_to_share_between_threads() -> None:
    masker = SecretMasker()
    values = [f"secret-value-{i:03d}" for i in range(200)]

    def add(chunk: list[str]) -> None:
        for v in chunk:
            masker.add(v)

    threads = [threading.Thread(target=add, args=(values[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert masker.mask(" ".join(values)) == " ".join(["********"] * 200)


def test_lookup_from_store_reads_values_and_raises_when_missing(tmp_path: Path) -> None:
    with Store(tmp_path / "state") as store:
        store.set_secret("mysql_root", "hunter2")
        lookup = lookup_from(store)
        assert resolve(placeholder("mysql_root"), lookup) == "hunter2"
        with pytest.raises(SecretError, match="deployally secret set redis"):
            resolve(placeholder("redis"), lookup)


def test_lookup_from_store_feeds_the_masker(tmp_path: Path) -> None:
    with Store(tmp_path / "state") as store:
        store.set_secret("mysql_root", "hunter2")
        masker = SecretMasker()
        env = resolve(
            f"MYSQL_ROOT_PASSWORD={placeholder('mysql_root')}", lookup_from(store, masker)
        )
        assert env == "MYSQL_ROOT_PASSWORD=hunter2"
        assert masker.mask(f"container env: {env}") == "container env: MYSQL_ROOT_PASSWORD=********"


def test_masker_hides_the_escaped_spellings_of_a_value() -> None:
    masker = SecretMasker()
    masker.add("pa\tss\"word")
    assert masker.mask('PW=pa\\tss\\"word') == "PW=********"  # as repr/JSON quote it
    assert "pa" not in masker.mask("env: pa\tss\"word")


BAD_NAMES = ["../x", "a/b", "", "a\nb", "x" * 5000, "Upper", "_x", "a b", "a\x00b"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_secret_set_refuses_a_name_that_breaks_the_rules(tmp_path: Path, name: str) -> None:
    state = tmp_path / "state"
    result = CliRunner().invoke(
        main, ["secret", "set", name, "--repo", str(tmp_path), "--state-dir", str(state)],
        input="the-value\n",
    )
    assert result.exit_code == 2, result.output
    assert "is not a valid secret name: 1-63 of a-z 0-9 _ . -" in result.output
    assert len(result.output) < 300  # a 5,000-character name is not echoed whole
    with Store(state) as store:
        assert store.list_secrets() == []
        with pytest.raises(SecretError, match="not a valid secret name"):
            store.set_secret(name, "the-value")


def test_a_secret_name_may_have_63_characters_but_not_64(tmp_path: Path) -> None:
    with Store(tmp_path / "state") as store:
        assert store.set_secret("a" * 63, "v") == 1
        with pytest.raises(SecretError, match="not a valid secret name"):
            store.set_secret("a" * 64, "v")


def test_lookup_resolves_only_what_the_definition_references_at_its_version(
    tmp_path: Path,
) -> None:
    with Store(tmp_path / "state") as store:
        store.set_secret("mine", "my-value")
        store.set_secret("theirs", "their-value")
        spec_secrets = {"mine": 1, "theirs": 1}  # a spec that somehow holds another's placeholder
        lookup = lookup_from(store, versions=spec_secrets, named={"mine"})
        assert resolve(placeholder("mine"), lookup) == "my-value"
        with pytest.raises(SecretError, match="does not reference") as caught:
            resolve(placeholder("theirs"), lookup)
        assert "their-value" not in str(caught.value)
        unlisted = lookup_from(store, versions={"mine": 1}, named={"mine", "theirs"})
        with pytest.raises(SecretError, match="does not reference"):
            resolve(placeholder("theirs"), unlisted)


def test_the_readme_states_the_secret_name_rule_the_code_enforces() -> None:
    import re

    from deployally.secrets import name_problem

    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    found = re.search(r"A secret's name is (\d+)–(\d+) characters of `([^`]+)`, starting with "
                      r"a letter or digit", readme)
    assert found, "the README's Secrets section states the rule"
    low, high, chars = int(found[1]), int(found[2]), found[3].split()
    assert name_problem("a" * low) is None and name_problem("a" * high) is None
    assert name_problem("a" * (low - 1)) and name_problem("a" * (high + 1))
    ranges = {"a-z": "abcdefghijklmnopqrstuvwxyz", "0-9": "0123456789"}
    allowed = "".join(ranges.get(c, c) for c in chars)
    assert all(name_problem(f"a{c}") is None for c in allowed)
    assert all(name_problem(f"{c}a") for c in allowed if not c.isalnum())
    assert all(name_problem(f"a{c}") for c in "ABZ/ \n:+@" if c not in allowed)


def test_validate_with_a_store_refuses_a_pinned_version_it_does_not_keep(tmp_path: Path) -> None:
    import json

    from conftest import DefinitionsRepo

    repo = DefinitionsRepo(tmp_path / "repo", "tpin")
    state = tmp_path / "state"
    with Store(state) as store:
        store.set_secret("tpin_pw", "first")
        store.set_secret("tpin_pw", "second")
    for name, ref in (("kept", "tpin_pw, version: 2"), ("gone", "tpin_pw, version: 7"),
                      ("later", "tpin_not_set_yet")):  # unpinned: may be set before it deploys
        repo.write(f"definitions/tpin_{name}.yaml",
                   f"name: tpin_{name}\ntemplate: tools/busybox/worker/stable\n"
                   f"params:\n  message: {{secret: {ref}}}\n")
    repo.commit("Pin versions")

    checked = CliRunner().invoke(main, ["validate", "--repo", str(repo.path), "--state-dir",
                                        str(state), "--json"])

    assert checked.exit_code == 1, checked.output  # before: valid, and the sync failed on it
    [error] = json.loads(checked.output)["errors"]
    assert (error["file"], error["field"]) == ("definitions/tpin_gone.yaml", "params.message.version")
    assert "tpin_gone: secret 'tpin_pw' has no version 7 (kept: 1, 2)" in error["message"]
    # Without a store (CI on a checkout) pins cannot be checked, and validate says so.
    ci = CliRunner().invoke(main, ["validate", "--repo", str(repo.path), "--state-dir",
                                   str(tmp_path / "none")])
    assert ci.exit_code == 0, ci.output
    assert "nor pinned secret versions" in ci.output
