"""Reading YAML against schemas/*.json: data, the line of every field, and errors a user can act on."""

from __future__ import annotations

import pytest
import yaml

from deployally.data import CATALOG, EXAMPLE_REPOSITORY, walk
from deployally.errors import ValidationError
from deployally.model import schema
from deployally.model.schema import field_name, line_of, load_yaml, schema_errors


def test_load_yaml_gives_json_safe_data_and_the_line_of_every_field() -> None:
    data, lines = load_yaml("a.yaml", "name: x\nwhen: 2024-01-01\nports:\n  - 80\n  - 443\n")
    assert data == {"name": "x", "when": "2024-01-01", "ports": [80, 443]}
    assert lines[("when",)] == 2
    assert lines[("ports", 1)] == 5


def test_a_file_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(ValidationError, match="a list; it must be a YAML mapping"):
        load_yaml("a.yaml", "- 1\n")


def test_a_duplicate_key_names_its_field_and_line() -> None:
    with pytest.raises(ValidationError) as info:
        load_yaml("a.yaml", "spec:\n  image: a\n  image: b\n")
    assert (info.value.field, info.value.line) == ("spec.image", 3)


def test_field_name_and_line_of_the_nearest_parent() -> None:
    assert field_name(("spec", "ports", 0, "container_port")) == "spec.ports[0].container_port"
    lines = {("spec",): 1, ("spec", "ports"): 4}
    assert line_of(lines, ("spec", "ports", 0, "container_port")) == 4
    assert line_of(lines, ("other",)) is None


def test_schema_errors_name_the_unknown_field_with_a_suggestion() -> None:
    data, lines = load_yaml("deployally.yaml", "defaults:\n  sever: local\n")
    errors = schema_errors("settings.schema.json", "deployally.yaml", data, lines)
    assert [(e.field, e.line) for e in errors] == [("defaults.sever", 2)]
    assert "did you mean `server`?" in errors[0].message


@pytest.mark.parametrize(
    "text",
    [
        "a: " + "[" * 100_000 + "]" * 100_000,
        "a: " + "{a: " * 10_000 + "1" + "}" * 10_000,
        "a:\n" + "".join("  " * i + "b:\n" for i in range(1, 40)) + "  " * 40 + "c: 1\n",
        "a: &a [*a]\n",  # a recursive alias is infinitely deep
        # aliases nest without nesting in the text
        "x: &x [[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]\ny: &y [[[[[[[[[[[[[[[[*x]]]]]]]]]]]]]]]]\nz: [[*y]]\n",
    ],
)
def test_a_file_nested_too_deep_is_refused_with_its_line(text: str) -> None:
    with pytest.raises(ValidationError, match="nested more than 32 levels deep") as info:
        load_yaml("deep.yaml", text)
    assert info.value.path == "deep.yaml" and info.value.line is not None


def test_nesting_up_to_the_bound_is_read() -> None:
    data, _ = load_yaml("ok.yaml", "a: " + "[" * 31 + "1" + "]" * 31)
    assert isinstance(data["a"], list)


def test_a_file_too_large_to_parse_is_refused_before_parsing() -> None:
    with pytest.raises(ValidationError, match="more than the 256,000"):
        load_yaml("big.yaml", "a: '" + "x" * 300_000 + "'\n")


# ---------------------------------------------------------------- libyaml and pure Python alike

BROKEN = [
    "a: [unclosed\n",
    "a: b: c\n",
    "a: &x [1]\nb: *y\n",
    "\ta: 1\n",
    "a: !!python/object:os.system x\n",
    "a:\n  - 1\n - 2\n",
    "a: 'open\n",
    "a: 1\n---\nb: 2\n",
    "[" * 40 + "]" * 40,
]


def _pure_python(path: str, text: str) -> object:
    """load_yaml as it reads without libyaml: the result, or the error's words and line."""
    saved = schema._Loader
    schema._Loader = schema._BoundedLoader
    try:
        return _outcome(path, text)
    finally:
        schema._Loader = saved


def _outcome(path: str, text: str) -> object:
    try:
        return load_yaml(path, text)
    except ValidationError as exc:
        return (str(exc), exc.field, exc.line)


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML was built without libyaml")
def test_libyaml_reads_every_shipped_file_as_the_pure_python_parser_does() -> None:
    assert schema._Loader is not schema._BoundedLoader  # the fast parser is the one in use
    shipped = [(p, f.read_text(encoding="utf-8")) for folder in (CATALOG, EXAMPLE_REPOSITORY)
               for p, f in walk(folder) if p.endswith((".yaml", ".yml"))]
    assert len(shipped) >= 10
    for path, text in shipped:
        assert _outcome(path, text) == _pure_python(path, text), path


@pytest.mark.parametrize("text", BROKEN)
def test_a_broken_file_says_the_same_words_and_line_with_libyaml_or_without(text: str) -> None:
    fast = _outcome("definitions/x.yaml", text)
    assert isinstance(fast, tuple) and fast[0].startswith("definitions/x.yaml")
    assert fast == _pure_python("definitions/x.yaml", text)
