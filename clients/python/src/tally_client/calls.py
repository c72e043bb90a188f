"""What a request is, apart from how it is sent: `Call` (one request and how to decode its
answer) and `Pages` (a listing, page after page), shared by the sync and the async client.

Also the small rules both clients follow to write one: ids in paths are percent-encoded; a
create sends only the fields given; an update sends the fields given, `None` included (it
clears the field), and leaves out those left `UNSET`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from typing import Any, Generic, TypeVar, cast
from urllib.parse import quote

import msgspec
from msgspec import UNSET, Struct

from tally_client.models import FeedMeta, PageMeta

T = TypeVar("T")

Query = Mapping[str, str | int]


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request: its method, path (below the base URL), query and JSON body, the
    Idempotency-Key it must carry (a POST without one gets one made up), and how the body of a
    success becomes the result."""

    method: str
    path: str
    decode: Callable[[bytes], T]
    query: Query = dataclasses.field(default_factory=dict)
    body: Mapping[str, Any] | None = None
    idempotency_key: str | None = None
    csv: bytes | None = None  # a CSV body, sent instead of `body`


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """The items of one page, and the query that asks for the next (None after the last)."""

    items: list[T]
    following: Query | None

    def unseen(self, pages: Pages[T], seen: set[object]) -> list[T]:
        """The items not yielded before (by their `pages.id_field`); notes them as seen."""
        if pages.id_field is None:
            return self.items
        fresh = []
        for item in self.items:
            ident = getattr(item, pages.id_field)
            if ident not in seen:
                seen.add(ident)
                fresh.append(item)
        return fresh

    def next_call(self, call: Call[Page[T]]) -> Call[Page[T]] | None:
        if self.following is None:
            return None
        return dataclasses.replace(call, query={**call.query, **self.following})


@dataclass(frozen=True, slots=True)
class Pages(Generic[T]):
    """A listing read to its end, one page after another, starting with `first`.

    Numbered pages shift when rows are added above those already read (new history rows come
    first), so an item can come twice: `id_field` names the field that identifies an item, and
    each is yielded once. The event feed is a cursor, so it needs no such care (`id_field`
    None): it is the listing to follow changes with.
    """

    first: Call[Page[T]]
    id_field: str | None


def get(target: str, result: type[T], **query: str | int | None) -> Call[T]:
    """A read whose `data` is one `result`."""
    return Call("GET", target, data_of(result), query=_given(query))


def post(
    target: str, result: type[T], body: Mapping[str, Any], idempotency_key: str | None
) -> Call[T]:
    """A write: a POST with a JSON body, and an Idempotency-Key made up when none is given."""
    return Call("POST", target, data_of(result), body=body, idempotency_key=idempotency_key)


def upload(target: str, result: type[T], csv: bytes, idempotency_key: str | None) -> Call[T]:
    """A write whose body is a CSV file, with an Idempotency-Key as every POST."""
    return Call("POST", target, data_of(result), csv=csv, idempotency_key=idempotency_key)


def patch(target: str, result: type[T], body: Mapping[str, Any]) -> Call[T]:
    return Call("PATCH", target, data_of(result), body=body)


def delete(target: str, result: type[T]) -> Call[T]:
    return Call("DELETE", target, data_of(result))


def numbered(target: str, item: type[T], id_field: str, **query: str | int | None) -> Pages[T]:
    """A listing read with `page` and `per_page` (its `meta` has `page` and `total_pages`)."""
    call = Call("GET", target, numbered_page_of(item), query={**_given(query), "page": 1})
    return Pages(call, id_field)


def feed(target: str, item: type[T], **query: str | int | None) -> Pages[T]:
    """A listing read with a cursor (`after`; its `meta` has `has_more` and `next_after`)."""
    return Pages(Call("GET", target, feed_page_of(item), query=_given(query)), None)


def path(template: str, *ids: str) -> str:
    """`template` with each `{}` replaced by an id, percent-encoded (`/` and all)."""
    return template.format(*(quote(value, safe="") for value in ids))


def given(**fields: Any) -> dict[str, Any]:
    """The fields of a create that were given (a `None` is left out: the server's default)."""
    return {name: value for name, value in fields.items() if value is not None}


def changed(**fields: Any) -> dict[str, Any]:
    """The fields of an update that were given; `None` stays (it clears), `UNSET` goes."""
    return {name: value for name, value in fields.items() if value is not UNSET}


def moment(value: datetime | date | str | None) -> str | None:
    """A time or a day for a query: RFC 3339 (`YYYY-MM-DD` for a day); a string as given."""
    if value is None or isinstance(value, str):
        return value
    return value.isoformat()


def comma_separated(value: str | Sequence[str] | None) -> str | None:
    return value if value is None or isinstance(value, str) else ",".join(value)


def _given(query: Mapping[str, str | int | None]) -> dict[str, str | int]:
    return {name: value for name, value in query.items() if value is not None}


# Decoding the answer of a success: the envelope `{"success": true, "data": ..., "meta": ...}`.


class _Data(Struct, Generic[T]):
    data: T


class _Listing(Struct, Generic[T]):
    data: list[T]
    meta: PageMeta


class _Feed(Struct, Generic[T]):
    data: list[T]
    meta: FeedMeta


def text(content: bytes) -> str:
    """A success that is not JSON (`/metrics`)."""
    return content.decode()


@cache
def _decoder(shape: Any) -> msgspec.json.Decoder[Any]:
    """One decoder per shape (`_Data[Member]`, ...), made on first use."""
    return msgspec.json.Decoder(shape)


def data_of(result: type[T]) -> Callable[[bytes], T]:
    """Decodes the `data` of an envelope as a `result`."""
    if result is str:
        return cast(Callable[[bytes], T], text)
    decoder = _decoder(cast(Any, _Data)[result])

    def decode(content: bytes) -> T:
        return cast(T, decoder.decode(content).data)

    return decode


def numbered_page_of(item: type[T]) -> Callable[[bytes], Page[T]]:
    decoder = _decoder(cast(Any, _Listing)[item])

    def decode(content: bytes) -> Page[T]:
        listing = decoder.decode(content)
        meta: PageMeta = listing.meta
        last = meta.page >= meta.total_pages
        return Page(listing.data, None if last else {"page": meta.page + 1})

    return decode


def feed_page_of(item: type[T]) -> Callable[[bytes], Page[T]]:
    decoder = _decoder(cast(Any, _Feed)[item])

    def decode(content: bytes) -> Page[T]:
        listing = decoder.decode(content)
        meta: FeedMeta = listing.meta
        after = meta.next_after if meta.has_more else None
        return Page(listing.data, None if after is None else {"after": after})

    return decode
