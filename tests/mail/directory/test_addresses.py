"""Address syntax, lookup keys and sub-addressing (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clustermail.mail.directory.addresses import (
    InvalidAddressError,
    lookup_key,
    normalize_domain,
    parse_address,
    same_address,
)


def test_parse_keeps_local_spelling_and_lowercases_domain() -> None:
    a = parse_address("John.Smith@Example.TEST")
    assert (a.local, a.domain) == ("John.Smith", "example.test")
    assert str(a) == "John.Smith@example.test"
    assert a.key == "john.smith@example.test"
    assert same_address("JOHN.smith@example.test", "john.SMITH@EXAMPLE.test")


def test_subaddress_base() -> None:
    a = parse_address("bob+lists@example.test")
    base = a.base()
    assert base is not None and str(base) == "bob@example.test"
    assert parse_address("bob@example.test").base() is None
    assert parse_address("+only@example.test").base() is None  # no base before the tag
    assert str(parse_address("a+b+c@x.test").base()) == "a@x.test"


def test_smtputf8_addresses() -> None:
    a = parse_address("Jörg@Bücher.example")
    assert a.domain == "bücher.example"
    assert a.key == "jörg@bücher.example"
    assert parse_address("用户@例子.广告").local == "用户"


def test_quoted_local_part() -> None:
    a = parse_address('"john doe"@example.test')
    assert a.local == "john doe"
    assert str(a) == '"john doe"@example.test'
    assert str(parse_address('"plain"@example.test')) == "plain@example.test"
    assert parse_address(r'"a\"b"@x.test').local == 'a"b'


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("no-at-sign", "no '@'"),
        ("@example.test", "empty local part"),
        ("user@", "domain is empty"),
        ("a b@example.test", "space"),
        ("a..b@example.test", "dot"),
        (".a@example.test", "dot"),
        ("a@b@example.test", "more than one '@'"),
        ("user@exa_mple.test", "'_' is not allowed"),
        ("user@-example.test", "hyphen"),
        ("user@example..test", "empty label"),
        ("user@example.test.", "ends with a dot"),
        ("user@[127.0.0.1]", "address literals"),
        ("<user@example.test>", "angle brackets"),
        ("us\ter@example.test", "control character"),
        ("x" * 65 + "@example.test", "longer than 64"),
        ("user@" + "a" * 64 + ".test", "longer than 63"),
        ("a(b@example.test", "'('"),
    ],
)
def test_invalid_addresses_say_why(text: str, fragment: str) -> None:
    with pytest.raises(InvalidAddressError) as info:
        parse_address(text)
    assert fragment in str(info.value)


def test_normalize_domain() -> None:
    assert normalize_domain("EXAMPLE.Test") == "example.test"
    with pytest.raises(InvalidAddressError):
        normalize_domain("bad domain")


_atext = st.sampled_from("abcXYZ019!#$%&'*+-/=?^_`{|}~é")


@given(
    local=st.lists(st.text(_atext, min_size=1, max_size=8), min_size=1, max_size=4),
    domain=st.lists(st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True),
                    min_size=1, max_size=3),
)
def test_round_trip_and_key_case_insensitive(local: list[str], domain: list[str]) -> None:
    text = ".".join(local) + "@" + ".".join(domain)
    a = parse_address(text)
    assert str(parse_address(str(a))) == str(a)
    assert lookup_key(text.upper()) == lookup_key(text.lower()) == a.key
