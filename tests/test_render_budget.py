"""Rendering in the budgeted worker: the same specs and errors as in-process, bombs stopped."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest

from deployally.errors import RenderError
from deployally.model.catalog import Catalog, load_builtin, parse_template
from deployally.model.definitions import parse_definition
from deployally.model.render import render
from deployally.model.render_budget import RenderBudget
from deployally.types import Definition, Template

TEMPLATE = """\
name: Budget
description: t
version: "1"
taxonomy: {kingdom: assets, family: tools, species: budget, variant: test, specimen: "1"}
deprecated: false
spec:
  image: {repository: busybox, tag: stable}
  user_inputs: {}
  profiles: [development]
  env: {VALUE: "%s"}
"""


def pair(body: str) -> tuple[Definition, Template]:
    template = parse_template("catalog/tools/budget.yaml", TEMPLATE % body, builtin=False)
    catalog = Catalog([*load_builtin().all(), template])
    text = "name: budgeted\ntemplate: tools/budget/test/1\n"
    return parse_definition("definitions/budgeted.yaml", text, catalog), template


@pytest.fixture
def budget() -> object:
    b = RenderBudget()
    yield b
    b.close()


def test_the_worker_renders_what_render_renders(budget: RenderBudget) -> None:
    definition, template = pair("{{ definition.name }}-{{ profile }}")
    spec = budget.render(definition, template, repo_files={}, secret_versions={})
    assert spec == render(definition, template, repo_files={}, secret_versions={})
    assert dict(spec.env)["VALUE"] == "budgeted-development"


def test_a_template_error_comes_back_as_the_same_error(budget: RenderBudget) -> None:
    definition, template = pair("{{ nope.missing }}")
    with pytest.raises(RenderError) as info:
        budget.render(definition, template, repo_files={}, secret_versions={})
    assert (info.value.path, info.value.field) == ("definitions/budgeted.yaml", "spec.env.VALUE")
    assert "nope" in info.value.message


def test_a_cpu_bomb_is_stopped_and_refused_at_once_the_next_time(budget: RenderBudget) -> None:
    bomb = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    definition, template = pair(bomb)
    for _ in range(2):
        with pytest.raises(RenderError) as info:
            budget.render(definition, template, repo_files={}, secret_versions={})
        assert info.value.path == "definitions/budgeted.yaml"
        assert "the template catalog/tools/budget.yaml took more than its budget of 2 s" in str(
            info.value
        )
        assert budget._worker is None  # killed, and not started again for the same inputs
    fine, template = pair("ok")  # the next render gets a fresh worker
    assert dict(budget.render(fine, template, repo_files={}, secret_versions={}).env) == {
        "VALUE": "ok"
    }


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ("{% set a = 'x' * 1000000 %}" + "{% set a = a ~ a %}" * 9 + "{{ a | length }}",
         "more than its budget of 256 MiB of memory"),
        ("{{ range(50000) | join('y' * 10000) }}", "more than its budget of 256 MiB of memory"),
        ("{{ 'z' * 1000000 }}" * 20, "above the 16 MiB bound"),
    ],
)
def test_memory_and_size_bombs_are_refused(budget: RenderBudget, body: str, why: str) -> None:
    definition, template = pair(body)
    with pytest.raises(RenderError, match=why):
        budget.render(definition, template, repo_files={}, secret_versions={})


def builtin_pair(extra: str = "") -> tuple[Definition, Template]:
    catalog = load_builtin()
    text = "name: trusted\ntemplate: tools/busybox/worker/stable\n" + extra
    definition = parse_definition("definitions/trusted.yaml", text, catalog)
    template = catalog.resolve(definition.template_id)
    assert template is not None
    return definition, template


def test_a_built_in_template_with_no_repository_files_renders_without_a_worker(
    budget: RenderBudget,
) -> None:
    # Params reach Jinja as values, never as source: nothing of the repository's runs.
    definition, template = builtin_pair("params: {message: '{{ 7 * 7 }}'}\n")
    spec = budget.render(definition, template, repo_files={}, secret_versions={})
    assert spec == render(definition, template, repo_files={}, secret_versions={})
    assert "{{ 7 * 7 }}" in repr(spec)
    assert budget._worker is None


def test_a_repository_config_file_is_rendered_under_the_budget(budget: RenderBudget) -> None:
    definition, template = builtin_pair(
        "files: [{path: /etc/app.conf, source: config/app.conf}]\n"
    )
    bomb = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    with pytest.raises(RenderError, match="more than its budget"):
        budget.render(
            definition, template, repo_files={"config/app.conf": bomb}, secret_versions={}
        )


def test_a_worker_whose_engine_is_gone_before_it_is_ready_ends_without_a_word() -> None:
    """A push hook's `validate` may end before its render worker is up: the pusher must see no
    traceback from the worker (its stderr is the push's output)."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will read the worker's replies
    worker = subprocess.run(
        [sys.executable, "-m", "deployally.model.render_budget"],
        stdin=subprocess.PIPE, stdout=write_end, stderr=subprocess.PIPE, timeout=60, check=False,
    )
    os.close(write_end)
    assert worker.stderr.decode() == ""
    assert worker.returncode == 0


def test_the_worker_answers_an_engine_holding_more_than_1024_descriptors(budget: RenderBudget) -> None:
    """select() refuses a descriptor above 1023; an engine with many connections has them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2048), max(hard, 2048)))
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        fresh = RenderBudget()  # its pipes now get descriptors above 1023
        try:
            test_the_worker_renders_what_render_renders(fresh)
        finally:
            fresh.close()
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
