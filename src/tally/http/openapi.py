"""The OpenAPI 3.1 document, built from the route table, the error table and the msgspec schemas.

Each operation lists every status it can answer with: its success, and one entry per status
its error codes (`RouteSpec.error_codes`) have in the error table, naming those codes. Routes
that are not in the table (`/openapi.json`, `/docs` and its files, `docs.py`) are not
described.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from tally import __version__
from tally.domain import EntryType
from tally.http import schemas
from tally.http.errors import WITH_RETRY_AFTER, status_of

if TYPE_CHECKING:
    from tally.http.routes.spec import RouteSpec

_REF = "#/components/schemas/{name}"

_QUERY: dict[str, dict[str, Any]] = {
    "page": {"type": "integer", "minimum": 1, "default": 1},
    "per_page": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
    "type": {"type": "string", "enum": [t.value for t in EntryType]},
    "from": {"type": "string", "description": "RFC 3339 time with a zone, or YYYY-MM-DD."},
    "to": {"type": "string", "description": "RFC 3339 time, or YYYY-MM-DD (the whole day)."},
    "status": {"type": "string", "enum": ["pending", "succeeded", "failed"]},
    "as_of": {
        "type": "string",
        "format": "date-time",
        "description": "RFC 3339 time with a zone, not in the future: the balance then.",
    },
}

_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": "Retries with the same key and body have exactly one effect.",
}

_HEADERS: dict[str, dict[str, Any]] = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 0},
    },
    "RateLimit-Policy": {
        "description": "When rate limits are on (draft-ietf-httpapi-ratelimit-headers-11): "
        "the per-key token bucket, q requests at once refilled over w seconds, and the "
        'per-address budget of failed authentications: `"default";q=200;w=2, '
        '"failed-auth";q=20;w=2`.',
        "schema": {"type": "string"},
    },
    "X-Request-Id": {
        "description": "The request's id: the client's X-Request-Id when it is 1 to 128 "
        "visible ASCII characters, else one made by the server. Logged with the request.",
        "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,128}$"},
    },
    "RateLimit": {
        "description": "When rate limits are on: requests left now (r) and seconds until "
        'the bucket is full again (t), `"default";r=199;t=1`; after failed '
        'authentications also `"failed-auth";r=..;t=..`.',
        "schema": {"type": "string"},
    },
}


def _header(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/headers/{name}"}


_TRACED = {"X-Request-Id": _header("X-Request-Id")}
_LIMITED = {
    **_TRACED,
    "RateLimit-Policy": _header("RateLimit-Policy"),
    "RateLimit": _header("RateLimit"),
}

_REQUEST_ID = {
    "name": "X-Request-Id",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "An id for this request, returned and logged; replaced by one the server "
    "makes unless it is 1 to 128 visible ASCII characters.",
}


def openapi_document(routes: tuple[RouteSpec, ...]) -> dict[str, Any]:
    types: list[Any] = [schemas.ErrorOut, schemas.ListMeta]
    for route in routes:
        types += [
            t for t in (route.body, route.response, route.meta) if t is not None and t is not str
        ]
    refs, components = msgspec.json.schema_components(types, ref_template=_REF)
    ref_of = dict(zip(types, refs, strict=True))
    names = [route.operation_id for route in routes]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"operation ids must be unique; used more than once: {twice}")
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, ref_of)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Tally",
            "version": __version__,
            "description": "A loyalty points ledger. Every change is an immutable transaction.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "headers": _HEADERS,
        },
    }


def _operation(route: RouteSpec, ref_of: dict[Any, Any]) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _path_names(route.path)
    ]
    own = route.query_schemas or {}
    parameters += [
        {"name": name, "in": "query", "required": False, "schema": own.get(name, _QUERY.get(name))}
        for name in route.query
    ]
    if route.method == "POST":
        parameters.append(_IDEMPOTENCY_KEY)
    parameters.append(_REQUEST_ID)
    operation: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [route.tag],
        "security": [{"bearer": []}] if route.auth else [],
        "parameters": parameters,
    }
    if route.body is not None:
        operation["requestBody"] = {
            "required": route.body_required,
            "content": {"application/json": {"schema": ref_of[route.body]}},
        }
    if route.body_media_type is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {route.body_media_type: {"schema": {"type": "string"}}},
        }
    # Rate limits, and their headers, are for /v1 (`limits.py`); every answer has its id.
    common = _LIMITED if route.auth else _TRACED
    if route.media_type == "application/json":
        meta = ref_of[route.meta] if route.meta is not None else None
        success = _envelope(ref_of[route.response], listing=route.listing, meta=meta)
        content = {"application/json": {"schema": success}}
    else:
        content = {route.media_type: {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {
        str(route.status): {"description": "Success", "headers": common, "content": content}
    }
    codes = route.error_codes
    for status in sorted({status_of(code) for code in codes}):
        named = sorted(code for code in codes if status_of(code) == status)
        headers = dict(common)
        if any(code in WITH_RETRY_AFTER for code in named):
            headers["Retry-After"] = _header("Retry-After")
        responses[str(status)] = {
            "description": "Error: " + ", ".join(named),
            "headers": headers,
            "content": {"application/json": {"schema": ref_of[schemas.ErrorOut]}},
        }
    operation["responses"] = responses
    return operation


def _envelope(
    schema: dict[str, Any], *, listing: bool, meta: dict[str, Any] | None = None
) -> dict[str, Any]:
    data = {"type": "array", "items": schema} if listing else schema
    properties: dict[str, Any] = {"success": {"const": True}, "data": data}
    if listing:
        properties["meta"] = meta or {"$ref": _REF.format(name="ListMeta")}
    return {"type": "object", "properties": properties, "required": list(properties)}


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]
