"""LIST/LSUB patterns: the linear-time matcher agrees with a plain reference on small
inputs, and stays fast on inputs that make a backtracking matcher explode."""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clustermail.mail.imap.mailbox_pattern import MAX_PATTERN, PatternTooLong, compile_pattern


def reference(pattern: str, name: str) -> bool:
    """The RFC's definition, as a regular expression (fine on small inputs)."""
    out = []
    for ch in pattern:
        if ch == "*":
            out.append(".*")
        elif ch == "%":
            out.append("[^/]*")
        else:
            out.append(re.escape(ch))
    return re.fullmatch("".join(out), name, re.S) is not None


alphabet = st.sampled_from("ab/*%")
names = st.text(st.sampled_from("ab/"), max_size=12)


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet, max_size=10), names)
def test_agrees_with_the_reference(pattern: str, name: str) -> None:
    assert compile_pattern("", pattern).matches(name) == reference(pattern, name)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet, max_size=6), st.text(alphabet, max_size=6), names)
def test_reference_and_pattern_are_joined(ref: str, pattern: str, name: str) -> None:
    assert compile_pattern(ref, pattern).matches(name) == reference(ref + pattern, name)


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("*", "a/b", True),
        ("%", "a/b", False),
        ("%/%", "a/b", True),
        ("inbox", "INBOX", True),  # INBOX in any case
        ("Inbox/%", "INBOX/x", True),
        ("inboxes", "INBOXES", False),  # only the name INBOX, not a longer one
        ("", "", True),
        ("", "a", False),
        ("a%*%b", "a/x/b", True),  # a wildcard run with a "*" is a "*"
    ],
)
def test_examples(pattern: str, name: str, expected: bool) -> None:
    assert compile_pattern("", pattern).matches(name) is expected


@pytest.mark.parametrize(
    "pattern",
    ["*a" * 20 + "b", "%a" * 20 + "b", "*a%" * 100 + "b", "*" + "a*" * 500],
)
def test_adversarial_patterns_are_fast(pattern: str) -> None:
    folders = ["a" * 60, "a/" * 30 + "a", ("a" * 250 + "/") * 3 + "a" * 100]
    start = time.perf_counter()
    for _ in range(30):
        for folder in folders:
            compile_pattern("", pattern).matches(folder)
    assert time.perf_counter() - start < 1.0  # 90 matches; a backtracking regex: hours


def test_patterns_are_capped() -> None:
    compile_pattern("x" * (MAX_PATTERN - 1), "*")
    with pytest.raises(PatternTooLong, match=str(MAX_PATTERN)):
        compile_pattern("x" * MAX_PATTERN, "*")
