"""`http/jsontext`: nesting depth and duplicate keys read from the text, checked against the
stdlib's parse of the same text."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tally.errors import InvalidJson
from tally.http import jsontext


def depth(value: Any) -> int:
    """How many containers deep `value` nests (a scalar: 0)."""
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


def accepted(text: bytes) -> bool:
    try:
        jsontext.layout(text)
    except InvalidJson:
        return False
    return True


def wrap(value: Any, levels: int, *, key: str) -> Any:
    for level in range(levels):
        value = {key: value} if level % 2 else [value]
    return value


leaves = st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}":\\ ab', max_size=6)
values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=12,
)


@given(values, st.integers(min_value=20, max_value=40), st.sampled_from(["k", '{"[', 'a\\"b']))
def test_a_value_is_accepted_exactly_when_it_nests_at_most_32_deep(
    inner: Any, levels: int, key: str
) -> None:
    value = wrap(inner, levels, key=key)
    for indent in (None, 2):
        text = json.dumps(value, indent=indent).encode()
        assert accepted(text) == (depth(value) <= jsontext.MAX_DEPTH), text


@pytest.mark.parametrize("empty", [b"[]", b"{}", b'{"k":[]}', b'[{"k":{}}]'])
def test_an_empty_container_counts_as_a_level(empty: bytes) -> None:
    for levels in range(28, 36):
        text = b"[" * levels + empty + b"]" * levels
        assert accepted(text) == (depth(json.loads(text)) <= jsontext.MAX_DEPTH)


DUPLICATES = [
    (b'{"a":1,"b":2}', None),
    (b'{"a":1,"a":2}', "a"),
    (b'{"a":{"b":1},"c":{"b":1}}', None),
    (b'{"a":[{"x":1},{"x":1,"y":{"z":1,"z":1}}]}', "a[1].y.z"),
    (b'{"a\\"":1,"a\\"":2}', 'a"'),
    (b'{"a\\\\":1,"a\\\\":2}', "a\\"),
    (b'{"k":"\\":","k2":"x"}', None),
    (b'{"\\u0061":1,"a":2}', "a"),
    (b'{"n":1e400,"m":' + b"9" * 5000 + b"}", None),
    (b'{"n":1e400,"n":' + b"9" * 5000 + b"}", "n"),
    (b'[{"a":1},{"a":1}]', None),
]


@pytest.mark.parametrize(("text", "path"), DUPLICATES)
def test_a_duplicate_key_is_found_and_named_by_its_path(text: bytes, path: str | None) -> None:
    assert jsontext.duplicate_key(text, jsontext.layout(text)) == path


@pytest.mark.parametrize(
    ("text", "found"),
    [
        (b'"\\ud800"', ("\\ud800", 1)),
        (b'"ok \\udfff"', ("\\udfff", 4)),
        (b'"\\ud83d\\ude00 then \\ud83d"', ("\\ud83d", 19)),
        (b'"\\ud83d\\ude00"', None),
        (b'"\\\\ud800"', None),
        (b'"\\\\\\ud800"', ("\\ud800", 3)),
    ],
)
def test_a_lone_surrogate_is_found_where_it_is_written(
    text: bytes, found: tuple[str, int] | None
) -> None:
    assert jsontext.lone_surrogate(text) == found
