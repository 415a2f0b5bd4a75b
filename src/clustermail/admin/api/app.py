"""The admin service's web application: the API under /api/v1, /metrics, the console.

Every route of the table needs a credential except ``GET /api/v1/health`` and
the console's static files (the login page: they hold no data). Errors are
JSON ``{"error": {"code", "message", "status"}}``: the layer's own errors are
translated here, once, and anything unexpected is logged and answered 500
``internal`` without a traceback.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from aiohttp import web

from clustermail.admin.api import backup_routes, cluster_routes, events, mail_routes
from clustermail.admin.api.accounts import AccountError
from clustermail.admin.api.auth import CONSOLE_HEADER
from clustermail.admin.api.context import ApiContext
from clustermail.admin.api.openapi import document
from clustermail.admin.api.routing import (
    ANY_OBJECT,
    NUMBER,
    STRING,
    ApiError,
    Call,
    Role,
    Route,
    array,
    conflict,
    invalid,
    not_found,
    nullable,
    obj,
    read_body,
)
from clustermail.admin.errors import AdminError, InvalidRequestError, NotFoundError
from clustermail.coord import CoordError

log = logging.getLogger(__name__)

CTX = web.AppKey("ctx", ApiContext)
MAX_BODY = 1 << 20


def _version() -> str:
    try:
        return version("clustermail")
    except PackageNotFoundError:
        return "0"


# --------------------------------------------------------------------------- sessions


async def login(call: Call) -> Any:
    request, auth = call.request, call.ctx.auth
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        raise ApiError(403, "cross_origin", f"logins from {origin} are refused")
    account = await auth.login(request, call.body["name"], call.body["password"])
    token, session = auth.new_session(account)
    response = web.json_response({"name": account.name, "role": account.role.label,
                                  "csrf_token": auth.csrf_token(session)})
    auth.set_cookie(response, token, secure=request.secure)
    await call.ctx.log_change(account.name, "session.login", "logged in to the console")
    return response


async def whoami(call: Call) -> Any:
    assert call.account is not None
    session = call.session
    csrf = call.ctx.auth.csrf_token(session) if session is not None else None
    return {"name": call.account.name, "role": call.account.role.label, "csrf_token": csrf}


async def logout(call: Call) -> Any:
    response = web.json_response({"done": "logged out"})
    response.del_cookie("clustermail_session", path="/")
    return response


# --------------------------------------------------------------------------- admin accounts


async def list_admins(call: Call) -> Any:
    return [a.public() for a in await call.ctx.accounts.list()]


async def add_admin(call: Call) -> Any:
    body = call.body
    account = await call.ctx.accounts.add(body["name"], body["password"],
                                          Role.parse(body.get("role", "viewer")))
    await call.ctx.log_change(call.user, "admin.add",
                              f"added administrator {account.name} ({account.role.label})")
    return account.public()


async def remove_admin(call: Call) -> Any:
    name = call.param("name")
    if name == call.user:
        raise conflict("you cannot remove your own account")
    await call.ctx.accounts.remove(name)
    await call.ctx.log_change(call.user, "admin.remove", f"removed administrator {name}")
    return {"done": f"administrator {name} removed"}


# --------------------------------------------------------------------------- service


async def health(call: Call) -> Any:
    return {"status": "ok", "node": call.ctx.node}


async def openapi(call: Call) -> Any:
    return document(all_routes(), _version())


async def prometheus_metrics(call: Call) -> Any:
    from clustermail.admin.api.cluster_metrics import exposition

    body, content_type = await exposition(call.ctx)
    return web.Response(body=body, headers={"Content-Type": content_type})


async def metrics_history(call: Call) -> Any:
    history = call.ctx.history
    return history.snapshot() if history is not None else {"interval": 0, "samples": []}


SESSION = obj({"name": STRING, "role": STRING, "csrf_token": nullable(STRING)})
ADMIN = obj({"name": STRING, "role": STRING, "created": NUMBER})
DONE = obj({"done": STRING}, additional=True)

SERVICE_ROUTES = [
    Route("GET", "/health", health, "Is the admin service up (no authentication)",
          "service", None, response=obj({"status": STRING, "node": STRING})),
    Route("GET", "/openapi.json", openapi, "This document", "service", Role.VIEWER,
          response=ANY_OBJECT),
    Route("POST", "/session", login, "Log in: sets the console's session cookie and returns "
          "the CSRF token to send as X-CSRF-Token", "session", None,
          body=obj({"name": STRING, "password": STRING}, required=["name", "password"]),
          body_required=True, response=SESSION),
    Route("GET", "/session", whoami, "Who is logged in", "session", Role.VIEWER,
          response=SESSION),
    Route("DELETE", "/session", logout, "Log out", "session", Role.VIEWER, response=DONE),
    Route("GET", "/admin-users", list_admins, "List administrator accounts", "administrators",
          Role.OPERATOR, response=array(ADMIN)),
    Route("POST", "/admin-users", add_admin, "Add an administrator account", "administrators",
          Role.OPERATOR, body=obj({"name": STRING, "password": STRING,
                                   "role": {"type": "string", "enum": ["viewer", "operator"]}},
                                  required=["name", "password"]),
          body_required=True, status=201, response=ADMIN),
    Route("DELETE", "/admin-users/{name}", remove_admin, "Remove an administrator account",
          "administrators", Role.OPERATOR, response=DONE),
    Route("GET", "/metrics/history", metrics_history, "The last minutes of performance "
          "samples (what the console charts)", "metrics", Role.VIEWER, response=ANY_OBJECT),
    Route("GET", "//metrics", prometheus_metrics, "Cluster metrics in the Prometheus text "
          "format", "metrics", Role.VIEWER, content_type="text/plain"),
]


def all_routes() -> list[Route]:
    return [*SERVICE_ROUTES, *cluster_routes.ROUTES, *events.ROUTES, *mail_routes.ROUTES,
            *backup_routes.ROUTES]


# --------------------------------------------------------------------------- errors


def translate(exc: Exception) -> ApiError | None:
    """The API error for an error of a lower layer, or None when it is unexpected."""
    from clustermail.cluster.resources.base import ResourceError
    from clustermail.mail import directory as d
    from clustermail.mail.store import StoreError

    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, NotFoundError | d.NotFoundError):
        return not_found(str(exc))
    if isinstance(exc, InvalidRequestError | d.InvalidRequestError | d.UnknownDomainError
                  | AccountError):
        if isinstance(exc, AccountError) and str(exc).startswith("no administrator"):
            return not_found(str(exc))
        if isinstance(exc, AccountError) and "already exists" in str(exc):
            return conflict(str(exc))
        return invalid(str(exc))
    if isinstance(exc, AdminError | d.DirectoryError | StoreError | ResourceError):
        return conflict(str(exc))
    if isinstance(exc, CoordError):
        return ApiError(503, "store_unavailable", f"the coordination store: {exc}")
    if isinstance(exc, ValueError):
        return invalid(str(exc))
    return None


def error_response(error: ApiError, request: web.Request) -> web.Response:
    response = web.json_response(error.body(), status=error.status)
    if error.status == 401 and error.challenge and CONSOLE_HEADER not in request.headers:
        response.headers["WWW-Authenticate"] = 'Basic realm="clustermail", charset="UTF-8"'
    if error.status == 429:
        response.headers["Retry-After"] = str(max(1, round(error.retry_after or 1)))
    return response


@web.middleware
async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except web.HTTPException as exc:
        if not request.path.startswith("/api/") and exc.status != 405:
            raise
        code = {404: "not_found", 405: "method_not_allowed",
                413: "too_large"}.get(exc.status, "http_error")
        message = {404: f"no such route: {request.path}",
                   405: f"{request.method} is not allowed on {request.path}",
                   413: "the request body is too large"}.get(exc.status, exc.reason)
        return error_response(ApiError(exc.status, code, message), request)
    except Exception as exc:
        error = translate(exc)
        if error is None:
            log.exception("unexpected error in %s %s", request.method, request.path)
            error = ApiError(500, "internal", f"internal error ({type(exc).__name__}); "
                             "see the admin service's log")
        return error_response(error, request)


# --------------------------------------------------------------------------- the app


def _endpoint(route: Route) -> Any:
    async def handle(request: web.Request) -> web.StreamResponse:
        ctx = request.app[CTX]
        account, session = None, None
        if route.role is not None:
            account, session = await ctx.auth.identify(request, route.changes)
            if account.role < route.role:
                raise ApiError(403, "forbidden", f"{account.name} is a {account.role.label}: "
                               "this needs the operator role")
        body = await read_body(request, route)
        result = await route.handler(Call(request, ctx, account, body, session))
        if isinstance(result, web.StreamResponse):
            return result
        return web.json_response(result, status=route.status,
                                 dumps=lambda d: json.dumps(d, default=str))

    return handle


def web_root() -> Path:
    return Path(str(resources.files("clustermail.admin") / "web"))


async def _console_index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(web_root() / "index.html",
                            headers={"Cache-Control": "no-cache"})


async def _to_console(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/console/")


@web.middleware
async def security_headers(request: web.Request, handler: Any) -> web.StreamResponse:
    from clustermail.admin.api.service_metrics import API_REQUESTS

    response: web.StreamResponse = await handler(request)
    if request.path.startswith("/api/"):
        API_REQUESTS.labels(str(response.status)).inc()
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.path.startswith("/console"):
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; style-src 'self'; script-src 'self'; img-src 'self' data:")
    return response


def build_app(ctx: ApiContext, *, console: bool = True) -> web.Application:
    app = web.Application(middlewares=[security_headers, errors], client_max_size=MAX_BODY)
    app[CTX] = ctx
    for route in all_routes():
        app.router.add_route(route.method, route.full_path, _endpoint(route))
    if console:
        app.router.add_get("/", _to_console)
        app.router.add_get("/console", _to_console)
        app.router.add_get("/console/", _console_index)
        app.router.add_static("/console/", web_root(), show_index=False)
    return app
