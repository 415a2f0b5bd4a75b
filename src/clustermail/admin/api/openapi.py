"""The OpenAPI 3.0 document of the API, built from the route table."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from clustermail.admin.api.routing import Role, Route

ERROR = {
    "type": "object",
    "properties": {"error": {"type": "object", "properties": {
        "code": {"type": "string"}, "message": {"type": "string"},
        "status": {"type": "integer"}}, "required": ["code", "message", "status"]}},
    "required": ["error"],
}
_ERRORS = {
    "400": "bad request (not JSON, a body where none is taken)",
    "404": "no such node, virtual server, resource or mailbox",
    "409": "refused in the cluster's current state",
    "422": "a value that cannot be used",
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _operation_id(route: Route) -> str:
    words = re.sub(r"[{}]", "", route.path).replace("-", "_").strip("/").split("/")
    return route.method.lower() + "_" + "_".join(w for w in words if w)


def _operation(route: Route) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": route.summary, "tags": [route.tag],
                          "operationId": _operation_id(route)}
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", route.path)
    ]
    params += [{"name": p.name, "in": "query", "required": False, "description": p.description,
                "schema": p.schema} for p in route.query]
    if params:
        op["parameters"] = params
    if route.body is not None:
        op["requestBody"] = {"required": route.body_required,
                             "content": {"application/json": {"schema": route.body}}}
    if route.content_type == "application/json":
        content = {"application/json": {"schema": route.response or {}}}
    else:
        content = {route.content_type: {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {str(route.status): {"description": "success",
                                                     "content": content}}
    for code, text in _ERRORS.items():
        responses[code] = _error(text)
    if route.body is not None and "timeout" in route.body.get("properties", {}):
        responses["504"] = _error("the operation outlived the call's timeout (it goes on "
                                  "where it runs)")
    if route.role is None:
        op["security"] = []
    else:
        responses["401"] = _error("no valid credential")
        if route.role is Role.OPERATOR:
            responses["403"] = _error("a viewer asked for a change, or a CSRF check failed")
            op["description"] = "Needs the operator role."
    responses["429"] = _error("too many failed logins")
    op["responses"] = responses
    return op


def document(routes: Iterable[Route], version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.full_path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "clustermail administration API",
            "version": version,
            "description": "Cluster Administrator over HTTP: the cluster, its nodes and "
                           "virtual servers, the event log, mail recipients and queues. "
                           "HTTP Basic for scripts; the console uses a session cookie and "
                           "sends X-CSRF-Token with every change.",
        },
        "servers": [{"url": "/"}],
        "security": [{"basic": []}, {"session": []}],
        "components": {
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "session": {"type": "apiKey", "in": "cookie", "name": "clustermail_session"},
            },
            "schemas": {"Error": ERROR},
        },
        "paths": paths,
    }
