"""Reading a request: the key, the JSON body, the query and the Idempotency-Key, all checked.

Every problem becomes a `TallyError` naming the field, raised before anything is changed.
Whether the key is valid and may do what the route does is `callers.py`'s question; the shapes
of bodies are `schemas.py`.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from datetime import UTC, date, datetime, time, timedelta
from typing import TypeVar

import msgspec
from starlette.requests import Request

from tally.commands import Idempotency
from tally.domain import EntryType, HistoryQuery, Page
from tally.errors import (
    Detail,
    InvalidJson,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
    ValidationFailed,
    invalid,
)
from tally.http import jsontext, schemas
from tally.http.protocol import BODY_ARRIVED

S = TypeVar("S", bound=msgspec.Struct)

MAX_METADATA_BYTES = 16 * 1024
BODY_SECONDS = 30.0  # how long a body may take to arrive after its headers
_PRINTABLE_ASCII = re.compile(r"^[\x20-\x7e]{1,255}$")

# msgspec (0.22) gives a ValidationError nothing but its message, `args[0]`: no path, no field
# name, no kind of problem (asked for upstream in msgspec issues #264 and #1158). What can be
# known without it is (whether a body is an object at all: `decode` looks at the parsed JSON).
# The field is read from the text, here only, and only where msgspec's messages have a fixed
# shape: the path, in "<problem> - at `$<path>`" (absent at the top level), and the two
# problems of a field as a whole, which name it: "Object missing required field `reason`",
# "Object contains unknown field `pionts`". tests/test_http_inputs.py pins these shapes against
# msgspec itself, so an upgrade that changes them fails there, not by losing field names.
_AT_PATH = re.compile(r" - at `\$(?P<path>[^`]*)`$")
_FIELD_AS_A_WHOLE = re.compile(
    r"^Object (?:missing required|contains unknown) field `(?P<name>[^`]+)`"
)


def path_id(request: Request, name: str) -> str:
    """An id from the path. One with a NUL character cannot exist, so it becomes one that
    cannot exist either but that every backend can look up (and not find)."""
    value: str = request.path_params[name]
    return value.replace("\x00", "\ufffd")


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, secret = header.partition(" ")
    return secret.strip() if scheme.lower() == "bearer" else None


async def body_bytes(request: Request, *, limit: int, media: str = "application/json") -> bytes:
    """The raw body, refused when it is not of the `media` type (JSON unless the route says),
    larger than `limit` bytes, or not all there within `BODY_SECONDS` (a client that stalls
    half-way holds nothing for longer)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The body is larger than the limit of {limit} bytes.")
    try:
        if request.scope.get(BODY_ARRIVED):  # the server has it all: reading cannot stall
            body = await _body_within(request, limit)
        else:
            async with asyncio.timeout(BODY_SECONDS):
                body = await _body_within(request, limit)
    except TimeoutError:
        raise RequestTimeout(
            f"The body did not arrive within {BODY_SECONDS:.0f} seconds; send it whole."
        ) from None
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if body and media_type != media:
        if media == "application/json":
            raise UnsupportedMediaType("Send the body as JSON with Content-Type: application/json.")
        raise UnsupportedMediaType(f"Send the body with Content-Type: {media}.")
    return body


async def _body_within(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The body is larger than the limit of {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def decode(body: bytes, kind: type[S], *, prefix: str = "") -> S:
    """`body` decoded into `kind`, or the error that names the offending field.

    The text is checked first (`jsontext`: nesting, then duplicate keys once it decodes).
    `prefix` places a bulk item in its request (`awards[3].`): its text was checked with the
    request's, and an item that is not an object fails as that item's validation error, not as
    the request's `invalid_json`.
    """
    if not body.strip():
        raise InvalidJson("The body is empty; send a JSON object.")
    try:
        body.decode()  # msgspec leaves the insides of `Raw` values (bulk items) unchecked
    except UnicodeDecodeError as error:
        raise InvalidJson(f"The body is not valid UTF-8 JSON: {error}.") from None
    text = b"" if prefix else jsontext.layout(body)
    try:
        value = msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as error:
        # The text parsed (`layout`), so what is wrong is a field, unless the body as a whole
        # is not an object.
        if not prefix and not text.startswith(b"{"):
            raise InvalidJson("The body must be a JSON object.") from None
        raise validation_error(str(error), prefix=prefix) from None
    except msgspec.DecodeError as error:
        raise jsontext.malformed(body, error) from None
    if not prefix:
        repeated = jsontext.duplicate_key(body, text)
        if repeated is not None:
            raise invalid(repeated, f"{repeated}: the key is given more than once; give it once.")
    check_text_fields(value, prefix=prefix)
    return value


def no_fields(body: bytes) -> None:
    """The body of a route that takes no fields (a cancel): empty, or `{}`; anything else is
    refused like any body (`invalid_json`, or `validation_error` naming an unknown field)."""
    if body.strip():
        decode(body, schemas.CancelIn)


def validation_error(text: str, *, prefix: str = "") -> ValidationFailed:
    """msgspec's message (see above), as our error naming the field's path (`awards[3].points`)."""
    at = _AT_PATH.search(text)
    # A problem inside a free-form object (`$.metadata[...]`) is the object's: msgspec does
    # not say which key.
    path = at.group("path").split("[...]", 1)[0] if at else ""
    message = text[: at.start()] if at else text
    named = _FIELD_AS_A_WHOLE.match(message)
    if named:
        path = f"{path}.{named.group('name')}"
    field = (prefix + path.lstrip(".")).rstrip(".") or None
    sentence = f"{field}: {message}." if field else f"{message}."
    return ValidationFailed(sentence, details=[Detail(f"{message}.", field)])


def check_text_fields(value: msgspec.Struct, *, prefix: str = "") -> None:
    """Rules msgspec cannot say: no NUL characters, reasons and names not blank, small metadata.

    NUL is refused everywhere because PostgreSQL cannot store it in text, and both backends must
    accept exactly the same input.
    """
    for name in value.__struct_fields__:
        text = getattr(value, name)
        if isinstance(text, str) and "\x00" in text:
            raise invalid(prefix + name, f"{prefix + name} must not contain NUL characters.")
    for name in ("reason", "name"):
        text = getattr(value, name, None)
        if isinstance(text, str) and not text.strip():
            raise invalid(prefix + name, f"{prefix + name} must not be blank.")
    metadata = getattr(value, "metadata", None)
    if isinstance(metadata, dict):
        if len(msgspec.json.encode(metadata)) > MAX_METADATA_BYTES:
            raise invalid(prefix + "metadata", "metadata must be at most 16 KiB once serialised.")
        if _holds_nul(metadata):
            raise invalid(prefix + "metadata", f"{prefix}metadata must not contain NUL characters.")


def _holds_nul(value: object) -> bool:
    """Whether a NUL character is in any key or string of decoded JSON (at most 32 levels)."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in key or _holds_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_holds_nul(item) for item in value)
    return False


def utc(moment: datetime | None, *, field: str) -> datetime | None:
    """A time given with any offset, as the same instant in UTC (the API answers in UTC).

    `9999-12-31T23:59:59-14:00` is a valid RFC 3339 time whose instant in UTC is in the year
    10000, which no datetime holds: it is refused naming `field`, as is its twin at 0001-01-01.
    """
    if moment is None:
        return None
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise invalid(field, _beyond_the_calendar(field)) from None


def _beyond_the_calendar(name: str) -> str:
    return f"{name} falls outside 0001-01-01 to 9999-12-31 once converted to UTC."


def idempotency(request: Request, body: bytes) -> Idempotency | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not _PRINTABLE_ASCII.match(key):
        raise invalid(
            "Idempotency-Key", "Idempotency-Key must be 1 to 255 printable ASCII characters."
        )
    digest = hashlib.sha256()
    for part in (request.method.encode(), request.url.path.encode(), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return Idempotency(key, digest.hexdigest())


def page(request: Request) -> Page:
    number = int_param(request, "page", default=1, low=1, high=10**9)
    size = int_param(request, "per_page", default=20, low=1, high=100)
    return Page(number, size)


def history_query(request: Request) -> HistoryQuery:
    return history_filters(
        query_value(request, "type"), query_value(request, "from"), query_value(request, "to")
    )


def history_filters(kind: str | None, start_text: str | None, end_text: str | None) -> HistoryQuery:
    """The filters `type`, `from` and `to` of a history or an export, each checked."""
    if kind is not None and kind not in EntryType.__members__.values():
        allowed = ", ".join(t.value for t in EntryType)
        raise invalid("type", f"type must be one of {allowed}.")
    start = _moment(start_text, "from", end_of_day=False)
    end = _moment(end_text, "to", end_of_day=True)
    if start is not None and end is not None and start > end:
        raise invalid("from", "from must not be later than to.")
    return HistoryQuery(EntryType(kind) if kind else None, start, end)


def moment_param(request: Request, name: str) -> datetime | None:
    """The query parameter `name` as an RFC 3339 time with a zone (a date alone is refused:
    which instant of the day it means would be a guess), or None when it is not given."""
    text = query_value(request, name)
    if text is None:
        return None
    problem = f"{name} must be an RFC 3339 time with a zone, such as 2024-06-15T14:30:00Z."
    return _rfc3339(text, name, problem)


def _rfc3339(text: str, name: str, problem: str) -> datetime | None:
    """`text` as an RFC 3339 time with a zone, in UTC; `problem` (naming `name`) if it is not."""
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise invalid(name, problem) from None
    if "T" not in text.upper() or moment.tzinfo is None:
        raise invalid(name, problem)
    return utc(moment, field=name)


def day_param(request: Request, name: str, *, end: bool) -> date | None:
    """The query parameter `name` as a UTC day, or None when it is not given.

    A date (YYYY-MM-DD) is that day. An RFC 3339 time at a UTC midnight is the day it starts,
    or, for the `end` of a range, the day before it (the range ends at that instant). Any other
    time is refused: the report counts whole UTC days.
    """
    text = query_value(request, name)
    if text is None:
        return None
    problem = f"{name} must be a date (YYYY-MM-DD) or an RFC 3339 time at a UTC midnight."
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            raise invalid(name, problem) from None
    moment = moment_param(request, name)
    if moment is None or moment.time() != time.min:
        raise invalid(name, problem)
    return moment.date() - timedelta(days=1) if end else moment.date()


def query_value(request: Request, name: str) -> str | None:
    """The query parameter `name`, or None; given twice it is refused, never silently the last."""
    if not request.scope.get("query_string"):
        return None  # most requests have none: no need to parse (a balance read, 3% of its CPU)
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise invalid(name, f"{name} is given more than once; give it once.")
    return values[0] if values else None


def int_param(request: Request, name: str, *, default: int, low: int, high: int) -> int:
    text = query_value(request, name)
    if text is None:
        return default
    if not re.fullmatch(r"[0-9]{1,12}", text) or not low <= int(text) <= high:
        raise invalid(name, f"{name} must be a whole number from {low} to {high}.")
    return int(text)


def _moment(text: str | None, name: str, *, end_of_day: bool) -> datetime | None:
    """An RFC 3339 time with a zone, or a date (a `to` date covers that whole day)."""
    if text is None:
        return None
    problem = f"{name} must be an RFC 3339 time with a zone (2024-06-15T14:30:00Z) or a date."
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        try:
            day = date.fromisoformat(text)
        except ValueError:
            raise invalid(name, problem) from None
        return datetime.combine(day, time.max if end_of_day else time.min, tzinfo=UTC)
    return _rfc3339(text, name, problem)
