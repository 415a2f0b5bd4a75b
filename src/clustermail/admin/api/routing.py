"""The API's route table: each route declares its method, path, role, summary and
the JSON schema of its body and answer, once. The aiohttp router, the request
body check and the OpenAPI document are all built from this table, so the
document cannot drift from what the server does.

Handlers take a :class:`Call` and return JSON-able data (sent as 200, or the
route's ``status``) or an aiohttp response of their own (the SSE stream).
Errors are :class:`ApiError`: a stable ``code`` and a one-line ``message``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from clustermail.admin.api.roles import ApiError as ApiError  # re-exported
from clustermail.admin.api.roles import Role as Role  # re-exported

if TYPE_CHECKING:
    from clustermail.admin.api.accounts import Account
    from clustermail.admin.api.auth import Session
    from clustermail.admin.api.context import ApiContext

PREFIX = "/api/v1"

Schema = dict[str, Any]






def bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def invalid(message: str) -> ApiError:
    return ApiError(422, "invalid", message)


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)


def conflict(message: str) -> ApiError:
    return ApiError(409, "conflict", message)


@dataclass
class Call:
    """One request as a handler sees it."""

    request: web.Request
    ctx: ApiContext
    account: Account | None
    body: dict[str, Any]
    #: The console session the request came with (None: HTTP Basic, or no credential).
    session: Session | None = None

    def param(self, name: str) -> str:
        return self.request.match_info[name]

    def query(self, name: str) -> str | None:
        value = self.request.query.get(name)
        return value if value not in (None, "") else None

    def query_int(self, name: str, default: int, minimum: int, maximum: int) -> int:
        raw = self.query(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise invalid(f"query parameter {name}: expected an integer, got {raw!r}") from None
        if not minimum <= value <= maximum:
            raise invalid(f"query parameter {name}: expected {minimum} to {maximum}, got {value}")
        return value

    def query_float(self, name: str) -> float | None:
        raw = self.query(name)
        if raw is None:
            return None
        try:
            value = float(raw)
        except ValueError:
            raise invalid(f"query parameter {name}: expected a number, got {raw!r}") from None
        if value != value or value < 0:  # NaN or negative
            raise invalid(f"query parameter {name}: expected a number >= 0, got {raw!r}")
        return value

    @property
    def user(self) -> str:
        return self.account.name if self.account is not None else "anonymous"


Handler = Callable[[Call], Awaitable[Any]]


@dataclass(frozen=True)
class Param:
    name: str
    description: str
    schema: Schema = field(default_factory=lambda: {"type": "string"})


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # under PREFIX unless it starts with "//" (served at the root)
    handler: Handler
    summary: str
    tag: str
    role: Role | None  # None: no authentication (the health check)
    body: Schema | None = None
    body_required: bool = False
    response: Schema | None = None
    query: Sequence[Param] = ()
    status: int = 200
    #: The answer is not JSON (text/event-stream, text/plain).
    content_type: str = "application/json"

    @property
    def full_path(self) -> str:
        return self.path[1:] if self.path.startswith("//") else PREFIX + self.path

    @property
    def changes(self) -> bool:
        return self.method not in ("GET", "HEAD")


# --------------------------------------------------------------------------- schemas


def obj(properties: Mapping[str, Schema], required: Sequence[str] = (),
        additional: bool = False) -> Schema:
    out: Schema = {"type": "object", "properties": dict(properties),
                   "additionalProperties": additional}
    if required:
        out["required"] = list(required)
    return out


STRING: Schema = {"type": "string"}
INTEGER: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
BOOLEAN: Schema = {"type": "boolean"}
STRINGS: Schema = {"type": "array", "items": {"type": "string"}}
ANY_OBJECT: Schema = {"type": "object", "additionalProperties": True}


def nullable(schema: Schema) -> Schema:
    return {**schema, "nullable": True}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def check_body(schema: Schema, value: object, where: str = "body") -> None:
    """Checks a request body against the subset of JSON Schema the routes use;
    raises a 422 naming the field and what was expected."""
    if value is None and schema.get("nullable"):
        return
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            raise invalid(f"{where}: expected a JSON object, got {_describe(value)}")
        props: Mapping[str, Schema] = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in value:
                raise invalid(f"{where}: missing field {name!r}")
        for key, item in value.items():
            if key in props:
                check_body(props[key], item, f"{where}.{key}")
            elif schema.get("additionalProperties") is False:
                known = ", ".join(props) or "none"
                raise invalid(f"{where}: unknown field {key!r} (fields: {known})")
        return
    if kind == "array":
        if not isinstance(value, list):
            raise invalid(f"{where}: expected an array, got {_describe(value)}")
        for i, item in enumerate(value):
            check_body(schema.get("items", {}), item, f"{where}[{i}]")
        return
    ok = {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
    }.get(str(kind), True)
    if not ok:
        raise invalid(f"{where}: expected {'an' if kind == 'integer' else 'a'} {kind}, "
                      f"got {_describe(value)}")
    if kind == "string" and "enum" in schema and value not in schema["enum"]:
        raise invalid(f"{where}: expected one of {', '.join(schema['enum'])}, got {value!r}")
    if kind == "integer" and "minimum" in schema and isinstance(value, int) \
            and value < schema["minimum"]:
        raise invalid(f"{where}: expected an integer >= {schema['minimum']}, got {value}")


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


async def read_body(request: web.Request, route: Route) -> dict[str, Any]:
    """The JSON body checked against the route's schema ({} when it takes none)."""
    raw = await request.read() if request.can_read_body else b""
    if route.body is None:
        if raw.strip():
            raise bad_request(f"{route.method} {route.full_path} takes no request body")
        return {}
    if not raw.strip():
        if route.body_required:
            raise bad_request("a JSON request body is required")
        return {}
    ctype = request.content_type
    if ctype != "application/json":
        raise ApiError(415, "unsupported_media_type",
                       f"send the body as application/json, not {ctype or 'no content type'}")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise bad_request(f"the body is not valid JSON: {exc}") from None
    check_body(route.body, data)
    assert isinstance(data, dict)
    return data
