"""What msgspec leaves unchecked in a body's JSON text: how deep it nests, whether an object
names a key twice, and a clear word for a string holding half a UTF-16 surrogate pair.

msgspec refuses malformed JSON, but it nests as deep as Python's recursion limit allows (and
then raises RecursionError), lets the last of two equal keys win, and calls a lone surrogate
"truncated". The checks read the text as msgspec's C formatter re-lays it
(`msgspec.json.format`, one space of indent per level): it parses without building a single
object, and its own recursion guard stops a hostile body long before the C stack is at risk.
Decoding into the request's struct, and the status of each problem, are `inputs.py`'s.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal

import msgspec

from tally.errors import InvalidJson

MAX_DEPTH = 32
"""The deepest a body may nest: the body object is level 1, its `metadata` object level 2."""

TOO_DEEP = f"The body is nested more than {MAX_DEPTH} levels deep; Tally takes at most that."

# In the re-laid text a value inside d containers starts a line indented d spaces; a container
# opening on a line indented MAX_DEPTH spaces is one level too deep. Strings cannot hold a raw
# newline, so a newline and spaces are always layout.
_DEEPEST_INDENT = b"\n" + b" " * MAX_DEPTH
_TOO_DEEP_LINE = re.compile(
    rb"\n {%d}(?:\"[^\"\\]*(?:\\.[^\"\\]*)*\": )?[\[{]" % MAX_DEPTH, re.DOTALL
)
_ESCAPE = re.compile(rb"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)

_loose = msgspec.json.Decoder(float_hook=Decimal).decode
_compact = msgspec.json.Encoder(decimal_format="number").encode


def layout(body: bytes) -> bytes:
    """`body` re-laid one level per space of indent; `InvalidJson` when it is not JSON or nests
    deeper than `MAX_DEPTH`. `body` must already be known to be UTF-8 (the formatter does not
    check)."""
    try:
        text = msgspec.json.format(body, indent=1)
    except RecursionError:
        raise InvalidJson(TOO_DEEP) from None
    except msgspec.DecodeError as error:
        raise malformed(body, error) from None
    if _DEEPEST_INDENT in text and _TOO_DEEP_LINE.search(text):
        raise InvalidJson(TOO_DEEP)
    return text


def malformed(body: bytes, error: msgspec.DecodeError) -> InvalidJson:
    """The refusal of a body msgspec could not parse, saying so plainly for a lone surrogate."""
    lone = lone_surrogate(body)
    if lone is not None:
        escape, offset = lone
        return InvalidJson(
            f"The body is not valid JSON: {escape} (at byte {offset}) is half of a UTF-16 "
            "surrogate pair without its other half; strings must hold whole characters."
        )
    return InvalidJson(f"The body is not valid UTF-8 JSON: {error}.")


def lone_surrogate(body: bytes) -> tuple[str, int] | None:
    """The first `\\uD800`-`\\uDFFF` escape of `body` that is not half of a pair, and its offset.

    Runs only on a body that already failed to parse, so one pass over its escapes is cheap
    enough; an escaped backslash (`\\\\ud800`) is text, not an escape, and is skipped whole.
    """
    waiting: re.Match[bytes] | None = None  # a high half, looking for its low half
    for match in _ESCAPE.finditer(body):
        digits = match.group(1)
        unit = int(digits, 16) if digits else -1
        if waiting is not None:
            if 0xDC00 <= unit <= 0xDFFF and match.start() == waiting.end():
                waiting = None
                continue
            break
        if 0xD800 <= unit <= 0xDBFF:
            waiting = match
        elif 0xDC00 <= unit <= 0xDFFF:
            return match.group().decode(), match.start()
    if waiting is None:
        return None
    return waiting.group().decode(), waiting.start()


def duplicate_key(body: bytes, text: bytes) -> str | None:
    """The path (`metadata.a.b`, `awards[3].points`) of a key some object of `body` names more
    than once, or None; `text` is `layout(body)`.

    Cheap when there is none: the keys written (each `": ` of the layout outside a string) are
    counted against the keys msgspec keeps (each `":` of its compact re-encoding). Only when
    they differ, or a number is too large to re-encode, is the body walked to name the key.
    """
    try:
        kept = _key_count(_compact(_loose(body)), b'":')
    except msgspec.ValidationError:  # an integer of thousands of digits: count by walking
        kept = -1
    if kept == _key_count(text, b'": '):
        return None
    return _first_duplicate(body)


def _key_count(text: bytes, key_end: bytes) -> int:
    """How many keys `text` (JSON laid out by msgspec) holds: a key's closing quote followed
    by `key_end`, once escaped backslashes and quotes inside strings are out of the way."""
    if b"\\" in text:
        text = text.replace(b"\\\\", b"").replace(b'\\"', b"")
    return text.count(key_end)


class _Object(list[tuple[str, object]]):
    """A JSON object as the stdlib parser saw it: every (key, value) pair, repeats kept."""


def _first_duplicate(body: bytes) -> str | None:
    try:
        # Numbers stay text: the walk only needs keys, and int() refuses thousands of digits.
        parsed = json.loads(body, object_pairs_hook=_Object, parse_int=str, parse_float=str)
    except ValueError:
        return None
    return _repeated(parsed, "")


def _repeated(value: object, path: str) -> str | None:
    """The first repeated key at or under `value` (depth-first, in the order written)."""
    if isinstance(value, _Object):
        seen: set[str] = set()
        for key, item in value:
            here = f"{path}.{key}" if path else key
            if key in seen:
                return here
            seen.add(key)
            found = _repeated(item, here)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _repeated(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None
