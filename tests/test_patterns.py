"""Patterns from a repository, matched by RE2: linear time, whatever the pattern."""

from __future__ import annotations

import subprocess
import sys

import pytest

from deployally.model import patterns
from deployally.model.catalog import check_input_value
from deployally.types import UserInput


def test_fullmatch_and_search() -> None:
    assert patterns.fullmatch("[a-z]+", "abc")
    assert not patterns.fullmatch("[a-z]+", "abc1")
    assert patterns.search(r"\{\{.*\}\}", "x {{ params.a }} y")
    assert not patterns.search(r"\{\{.*\}\}", "{" * 100_000)


def test_a_catastrophic_pattern_answers_at_once() -> None:
    # Python's re would run 2^100 steps here holding the GIL, which no timeout in this
    # process could interrupt: the check runs in a child, bounded.
    code = (
        "from deployally.model.catalog import check_input_value\n"
        "from deployally.types import UserInput\n"
        "spec = UserInput(name='word', type='string', pattern='(a+)+$')\n"
        "print(check_input_value(spec, 'a' * 100 + '!'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout == f"'{'a' * 76}... does not match the pattern '(a+)+$'\n"


@pytest.mark.parametrize(
    ("pattern", "why"),
    [("(?=a)a", "lookarounds"), (r"(a)\1", "backreferences"), ("(a{1000}){1000}", "repetition")],
)
def test_what_re2_cannot_match_in_linear_time_is_refused(pattern: str, why: str) -> None:
    with pytest.raises(patterns.PatternError, match=why):
        patterns.compiled(pattern)


def test_a_value_that_is_not_text_is_an_error_not_a_crash() -> None:
    spec = UserInput(name="word", type="string", pattern="[a-z]+")
    assert check_input_value(spec, "\udc80") == (
        "cannot be checked against the pattern '[a-z]+': the value is not valid text"
    )
