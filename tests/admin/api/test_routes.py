"""Every route of the admin API over a real socket and a real SQLite store: who may
call it (401 without a credential, 403 for a viewer's change), bad input (400/422,
never 500), and what each change writes (intents, directory, event log with who)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from openapi_spec_validator import validate

from clustermail.admin.api.app import all_routes
from clustermail.admin.api.routing import Role, Route
from clustermail.admin.status import build_status
from clustermail.cluster import eventlog
from clustermail.cluster.view import read_view
from tests.support.api_server import OPERATOR, VIEWER, Api, running_api

#: A value for each path parameter, so every route can be called.
PARAMS = {"resource": "pop3", "address": "alice@example.test", "domain": "example.test",
          "alias": "postmaster@example.test", "member": "alice@example.test",
          "id": "mail1-20261201T000000Z-full", "database": "DB1"}


def concrete(route: Route) -> str:
    def value(m: re.Match[str]) -> str:
        name = m.group(1)
        if name == "name":
            if route.path.startswith("/nodes"):
                return "node1"
            if route.path.startswith("/admin-users"):
                return "someone"
            return "mail1"
        if name == "group":
            return "SG1" if "storage" in route.path else "staff@example.test"
        return PARAMS[name]

    return re.sub(r"{(\w+)}", value, route.full_path)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(tmp_path) as running:
        yield running


async def log_entries(api: Api) -> list[eventlog.LogEntry]:
    return await eventlog.read(api.store)


# --------------------------------------------------------------------------- the document


async def test_openapi_document_is_valid_and_lists_every_route(api: Api) -> None:
    status, doc = await api.call("GET", "/api/v1/openapi.json", user=VIEWER)
    assert status == 200
    validate(doc)
    listed = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert listed == {(r.method, r.full_path) for r in all_routes()}


# --------------------------------------------------------------------------- who may call


@pytest.mark.parametrize("route", [r for r in all_routes() if r.role is not None],
                         ids=lambda r: f"{r.method} {r.path}")
async def test_unauthenticated_gets_401(api: Api, route: Route) -> None:
    status, body = await api.call(route.method, concrete(route), user=None)
    assert status == 401, body
    assert body["error"]["code"] == "unauthorized"


async def test_wrong_password_and_malformed_credentials_get_401(api: Api) -> None:
    status, body = await api.call("GET", "/api/v1/status", user=("oper", "wrong-password"))
    assert (status, body["error"]["code"]) == (401, "unauthorized")
    status, body = await api.call("GET", "/api/v1/status", user=None,
                                  headers={"Authorization": "Basic !!!"})
    assert (status, body["error"]["message"]) == (401, "malformed Basic credentials")
    status, body = await api.call("GET", "/api/v1/status", user=None,
                                  headers={"Authorization": "Bearer abc"})
    assert status == 401


@pytest.mark.parametrize("route", [r for r in all_routes() if r.role is Role.OPERATOR],
                         ids=lambda r: f"{r.method} {r.path}")
async def test_viewer_changing_things_gets_403(api: Api, route: Route) -> None:
    status, body = await api.call(route.method, concrete(route), user=VIEWER)
    assert status == 403, body
    assert body["error"]["code"] == "forbidden"
    assert "operator role" in body["error"]["message"]


async def test_health_needs_no_credential(api: Api) -> None:
    assert await api.call("GET", "/api/v1/health", user=None) == (
        200, {"status": "ok", "node": "node1"})


async def test_viewer_reads(api: Api) -> None:
    for route in all_routes():
        if route.role is Role.VIEWER and route.method == "GET" \
                and route.content_type == "application/json":
            status, body = await api.call("GET", concrete(route), user=VIEWER)
            # A route about one mailbox answers 404 while there is none: still read access.
            assert status in (200, 404), (route.path, body)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "code"), [
    ("POST", "/api/v1/virtual-servers/mail1/move", {"json_body": {"to": 3}}, 422, "invalid"),
    ("POST", "/api/v1/virtual-servers/mail1/move", {"json_body": {"node": "x"}}, 422,
     "invalid"),
    ("POST", "/api/v1/virtual-servers/mail1/move", {"json_body": ["node2"]}, 422, "invalid"),
    ("POST", "/api/v1/virtual-servers/mail1/move",
     {"data": b"{not json", "headers": {"Content-Type": "application/json"}}, 400,
     "bad_request"),
    ("POST", "/api/v1/virtual-servers/mail1/move",
     {"data": b"to=node2", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
     415, "unsupported_media_type"),
    ("POST", "/api/v1/virtual-servers/mail1/move", {"json_body": {"to": "node9"}}, 404,
     "not_found"),
    ("POST", "/api/v1/virtual-servers/nope/move", {}, 404, "not_found"),
    ("POST", "/api/v1/nodes/node1/pause", {"json_body": {"x": 1}}, 400, "bad_request"),
    ("GET", "/api/v1/nodes/node9", {}, 404, "not_found"),
    ("GET", "/api/v1/virtual-servers/nope/explain", {}, 404, "not_found"),
    ("POST", "/api/v1/virtual-servers/mail1/resources/nope/offline", {}, 404, "not_found"),
    ("POST", "/api/v1/virtual-servers/mail1/resources", {}, 400, "bad_request"),
    ("POST", "/api/v1/virtual-servers/mail1/resources", {"json_body": {"type": "nosuch"}},
     422, "invalid"),
    ("POST", "/api/v1/virtual-servers/mail1/resources", {"json_body": {"type": "pop3"}},
     409, "conflict"),
    ("POST", "/api/v1/virtual-servers/mail1/resources",
     {"json_body": {"type": "pop3", "name": "pop3b", "properties": {"port": "x"}}}, 422,
     "invalid"),
    ("DELETE", "/api/v1/virtual-servers/mail1/resources/store", {}, 409, "conflict"),
    ("GET", "/api/v1/events?limit=abc", {}, 422, "invalid"),
    ("GET", "/api/v1/events?limit=0", {}, 422, "invalid"),
    ("GET", "/api/v1/tracking?since_hours=-1", {}, 422, "invalid"),
    ("GET", "/api/v1/tracking?vs=nope", {}, 404, "not_found"),
    ("GET", "/api/v1/no-such-thing", {}, 404, "not_found"),
    ("PATCH", "/api/v1/status", {}, 405, "method_not_allowed"),
    ("POST", "/api/v1/users", {"json_body": {"address": "x@example.test"}}, 422, "invalid"),
    ("POST", "/api/v1/users", {"json_body": {"address": "x@nodomain.test", "password": "pw-pw-pw",
                                             "server": "mail1"}}, 422, "invalid"),
    ("POST", "/api/v1/users", {"json_body": {"address": "x@example.test", "password": "pw",
                                             "server": "mail9"}}, 404, "not_found"),
    ("POST", "/api/v1/users", {"json_body": {"address": "x@example.test", "password": "pw",
                                             "server": "mail1", "database": "nodb"}}, 422,
     "invalid"),
    ("GET", "/api/v1/users/nobody@example.test", {}, 404, "not_found"),
    ("PUT", "/api/v1/users/alice@example.test/quota", {"json_body": {}}, 422, "invalid"),
    ("PUT", "/api/v1/users/alice@example.test/quota", {"json_body": {"warning": "big"}}, 422,
     "invalid"),
    ("POST", "/api/v1/domains", {"json_body": {"domain": "not a domain"}}, 422, "invalid"),
    ("DELETE", "/api/v1/aliases/nobody@example.test", {}, 404, "not_found"),
    ("POST", "/api/v1/virtual-servers/mail1/queue/delete", {"json_body": {}}, 422, "invalid"),
    ("POST", "/api/v1/admin-users", {"json_body": {"name": "x", "password": "short"}}, 422,
     "invalid"),
    ("POST", "/api/v1/admin-users", {"json_body": {"name": "bad name!", "password": "long-pw-1"}},
     422, "invalid"),
    ("POST", "/api/v1/admin-users", {"json_body": {"name": "x", "password": "long-password",
                                                   "role": "root"}}, 422, "invalid"),
    ("POST", "/api/v1/admin-users", {"json_body": {"name": "view", "password": "long-password"}},
     409, "conflict"),
    ("DELETE", "/api/v1/admin-users/nobody", {}, 404, "not_found"),
    ("DELETE", "/api/v1/admin-users/oper", {}, 409, "conflict"),
    ("POST", "/api/v1/nodes/node1/evict", {}, 200, None),
    ("GET", "/api/v1/virtual-servers/cluster/storage", {}, 409, "conflict"),
    ("POST", "/api/v1/virtual-servers/mail1/storage/SG9/databases", {"json_body": {"name": "D"}},
     422, "invalid"),
    ("POST", "/api/v1/groups/staff@example.test/members", {"json_body": {}}, 422, "invalid"),
    ("PUT", "/api/v1/domains/nowhere.test/catch-all", {"json_body": {"address": None}}, 404,
     "not_found"),
    ("PUT", "/api/v1/config", {"json_body": {"nodes": {}}}, 422, "invalid"),
    ("PUT", "/api/v1/config", {"json_body": []}, 422, "invalid"),
    # backups
    ("POST", "/api/v1/virtual-servers/mail1/backups", {"json_body": {"incremental": "yes"}},
     422, "invalid"),
    ("POST", "/api/v1/virtual-servers/mail1/backups", {"json_body": {"to": "/tmp"}}, 422,
     "invalid"),
    ("POST", "/api/v1/virtual-servers/mail1/backups", {"json_body": {"timeout": 0}}, 422,
     "invalid"),
    ("POST", "/api/v1/virtual-servers/nope/backups", {}, 404, "not_found"),
    ("POST", "/api/v1/virtual-servers/cluster/backups", {}, 409, "conflict"),
    ("POST", "/api/v1/virtual-servers/mail1/backups", {}, 409, "conflict"),
    ("POST", "/api/v1/cluster-backups", {"json_body": {"x": 1}}, 400, "bad_request"),
    ("GET", "/api/v1/backups?vs=nope", {}, 404, "not_found"),
    ("GET", "/api/v1/backups/nope/verify", {}, 404, "not_found"),
    ("GET", "/api/v1/backups/../verify", {}, 404, "not_found"),
    ("POST", "/api/v1/backups/prune", {}, 400, "bad_request"),
    ("POST", "/api/v1/backups/prune", {"json_body": {"keep": 0}}, 422, "invalid"),
    ("POST", "/api/v1/backups/prune", {"json_body": {"keep": 1, "vs": "nope"}}, 404,
     "not_found"),
    ("POST", "/api/v1/virtual-servers/mail1/restore", {}, 400, "bad_request"),
    ("POST", "/api/v1/virtual-servers/mail1/restore", {"json_body": {"database": "SG1/DB1"}},
     422, "invalid"),
    ("POST", "/api/v1/virtual-servers/mail1/restore", {"json_body": {"from": "x"}}, 422,
     "invalid"),
    ("POST", "/api/v1/virtual-servers/mail1/restore",
     {"json_body": {"from": "x", "database": "DB1"}}, 422, "invalid"),
    ("POST", "/api/v1/virtual-servers/mail1/restore",
     {"json_body": {"from": "x", "database": "SG1/DB1", "all": True}}, 422, "invalid"),
    ("POST", "/api/v1/virtual-servers/mail1/restore",
     {"json_body": {"from": "x", "all": True, "recovery": True}}, 422, "invalid"),
    ("POST", "/api/v1/virtual-servers/mail1/restore",
     {"json_body": {"from": "x", "database": "SG1/DB1", "until": "yesterday"}}, 422,
     "invalid"),
    ("POST", "/api/v1/virtual-servers/mail1/restore",
     {"json_body": {"from": "x", "database": "SG1/DB1", "until": True}}, 422, "invalid"),
    ("POST", "/api/v1/virtual-servers/mail1/restore",
     {"json_body": {"from": "x", "database": "SG1/DB1", "until": 5, "roll_forward": False}},
     422, "invalid"),
    ("POST", "/api/v1/virtual-servers/mail1/restore",
     {"json_body": {"from": "x", "database": "SG1/DB1", "timeout": 1e9}}, 422, "invalid"),
    ("POST", "/api/v1/virtual-servers/nope/restore",
     {"json_body": {"from": "x", "database": "SG1/DB1"}}, 404, "not_found"),
    ("POST", "/api/v1/virtual-servers/mail1/restore",
     {"json_body": {"from": "x", "database": "SG1/DB1"}}, 409, "conflict"),
    ("POST", "/api/v1/virtual-servers/mail1/storage/SG1/databases/DB1/reset",
     {"json_body": {"confirm": False}}, 422, "invalid"),
    ("POST", "/api/v1/virtual-servers/mail1/storage/SG1/databases/DB1/reset", {}, 400,
     "bad_request"),
    ("POST", "/api/v1/virtual-servers/nope/storage/SG1/databases/DB1/reset",
     {"json_body": {"confirm": True}}, 404, "not_found"),
    ("DELETE", "/api/v1/virtual-servers/nope/recovery", {}, 404, "not_found"),
    ("DELETE", "/api/v1/virtual-servers/mail1/recovery", {}, 409, "conflict"),
    ("POST", "/api/v1/users/nobody@example.test/recover", {}, 404, "not_found"),
    ("POST", "/api/v1/users/nobody@example.test/recover", {"json_body": {"since": "soon"}},
     422, "invalid"),
    ("POST", "/api/v1/users/nobody@example.test/recover", {"json_body": {"folder": 1}}, 422,
     "invalid"),
])
async def test_bad_input_is_a_clear_error(api: Api, method: str, path: str,
                                          kwargs: dict[str, Any], status: int,
                                          code: str | None) -> None:
    got, body = await api.call(method, path, **kwargs)
    assert got == status, body
    if code is not None:
        assert body["error"]["code"] == code
        message = body["error"]["message"]
        assert message and "\n" not in message and "Traceback" not in message


@pytest.mark.parametrize("route", all_routes(), ids=lambda r: f"{r.method} {r.path}")
async def test_every_route_refuses_a_body_it_does_not_take(api: Api, route: Route) -> None:
    """Bad input on every route: a field it does not know or a missing one (422), or a
    body where it takes none (400); never a 500, and nothing is changed."""
    before = await log_entries(api)
    status, body = await api.call(route.method, concrete(route),
                                  json_body={"no_such_field": 1})
    if route.body is None:
        assert (status, body["error"]["code"]) == (400, "bad_request"), body
    elif route.body.get("additionalProperties") is False:
        assert (status, body["error"]["code"]) == (422, "invalid"), body
        message = body["error"]["message"]
        assert "unknown field 'no_such_field'" in message or "missing field" in message
    else:  # a free-form body (PUT /config): still a clear error
        assert status == 422, body
    assert await log_entries(api) == before


# --------------------------------------------------------------------------- cluster changes


async def test_status_is_the_cli_contract(api: Api) -> None:
    status, body = await api.call("GET", "/api/v1/status", user=VIEWER)
    assert status == 200
    contract = build_status(await read_view(api.store))
    assert {k: body[k] for k in contract} | {"nodes": [], "virtual_servers": []} == \
        contract | {"nodes": [], "virtual_servers": []}
    for ours, theirs in zip(body["nodes"], contract["nodes"], strict=True):
        assert {k: ours[k] for k in theirs} == theirs
    for ours, theirs in zip(body["virtual_servers"], contract["virtual_servers"], strict=True):
        assert {k: ours[k] for k in theirs} == theirs
    assert [n["metrics_url"] for n in body["nodes"]] == [
        f"http://127.0.0.1:{p}/metrics" for p in (9101, 9102, 9103, 9104)]
    assert {v["name"]: v["kind"] for v in body["virtual_servers"]}["cluster"] == "cluster"


async def test_cluster_changes_are_made_and_logged_with_who(api: Api) -> None:
    calls = [
        ("POST", "/api/v1/nodes/node2/pause", None),
        ("POST", "/api/v1/nodes/node2/resume", None),
        ("POST", "/api/v1/virtual-servers/mail1/move", {"to": "node4"}),
        ("POST", "/api/v1/virtual-servers/mail2/offline", None),
        ("POST", "/api/v1/virtual-servers/mail2/online", None),
        ("POST", "/api/v1/virtual-servers/mail3/clear-failures", None),
        ("POST", "/api/v1/virtual-servers/mail1/resources/pop3/offline", None),
        ("POST", "/api/v1/virtual-servers/mail1/resources/imap4/offline", None),
        ("POST", "/api/v1/virtual-servers/mail1/resources/imap4/online", None),
        ("DELETE", "/api/v1/virtual-servers/mail3/resources/pop3", None),
        ("POST", "/api/v1/virtual-servers/mail3/resources", {"type": "pop3"}),
    ]
    for method, path, body in calls:
        status, answer = await api.call(method, path, json_body=body)
        assert status in (200, 201, 202), (path, answer)
    view = await read_view(api.store)
    assert not view.paused("node2")
    assert view.vs_intent("mail1").move_to == "node4"
    assert not view.vs_intent("mail2").offline
    assert view.vs_intent("mail3").cleared_at is not None
    assert view.offline_resources("mail1") == ["pop3"]
    mail3 = view.applied_config().virtual_server("mail3")
    assert mail3 is not None and mail3.resource("pop3") is not None
    changes = [e for e in await log_entries(api) if e.event == "admin_change"]
    assert len(changes) == len(calls)
    assert all(e.extra["user"] == "oper" and e.message.startswith("oper: ") for e in changes)
    assert [e.extra["action"] for e in changes][:3] == ["node.pause", "node.resume", "vs.move"]


async def test_virtual_server_detail_and_explain(api: Api) -> None:
    await api.call("POST", "/api/v1/virtual-servers/mail1/move", json_body={})
    status, vs = await api.call("GET", "/api/v1/virtual-servers/mail1", user=VIEWER)
    assert status == 200
    names = [r["name"] for r in vs["resource_list"]]
    assert sorted(names) == ["disk", "imap4", "ip", "name", "pop3", "smtp", "store"]
    for i, res in enumerate(vs["resource_list"]):  # dependencies first
        assert all(names.index(dep) < i for dep in res["depends_on"]), names
    assert vs["resource_list"][names.index("store")]["depends_on"] == ["disk"]
    assert vs["move"]["to"] == "*" and vs["move"]["done"] is False
    status, body = await api.call("GET", "/api/v1/virtual-servers/mail1/explain", user=VIEWER)
    assert status == 200 and "candidates, in the order tried" in body["explanation"]


# --------------------------------------------------------------------------- mail


async def test_mail_administration(api: Api) -> None:
    async def ok(method: str, path: str, body: Any = None) -> Any:
        status, answer = await api.call(method, path, json_body=body)
        assert status in (200, 201), (method, path, answer)
        return answer

    await ok("POST", "/api/v1/domains", {"domain": "example.test"})
    user = await ok("POST", "/api/v1/users", {"address": "alice@example.test",
                                             "password": "alice-password", "server": "mail1",
                                             "display_name": "Alice"})
    assert user["server"] == "mail1" and user["quota"] is None
    await ok("POST", "/api/v1/aliases", {"alias": "postmaster@example.test",
                                        "mailbox": "alice@example.test"})
    shown = await ok("GET", "/api/v1/users/alice@example.test")
    assert shown["aliases"] == ["postmaster@example.test"]
    quota = await ok("PUT", "/api/v1/users/alice@example.test/quota",
                     {"warning": 1000, "prohibit_send": None, "prohibit_send_receive": 5000})
    assert quota["quota"] == {"warning": 1000, "prohibit_send": None,
                              "prohibit_send_receive": 5000}
    assert (await ok("POST", "/api/v1/users/alice@example.test/disable"))["enabled"] is False
    assert (await ok("POST", "/api/v1/users/alice@example.test/enable"))["enabled"] is True
    await ok("POST", "/api/v1/users/alice@example.test/password", {"password": "new-password"})
    assert await ok("GET", "/api/v1/domains") == [
        {"domain": "example.test", "catch_all": None, "mailboxes": 1}]
    assert await ok("GET", "/api/v1/aliases?domain=example.test") == [
        {"alias": "postmaster@example.test", "mailbox": "alice@example.test"}]
    assert [u["address"] for u in await ok("GET", "/api/v1/users?server=mail1")] == [
        "alice@example.test"]
    await ok("PUT", "/api/v1/domains/example.test/catch-all", {"address": None})
    await ok("POST", "/api/v1/users", {"address": "bob@example.test", "password": "bob-password",
                                      "server": "mail2"})
    assert (await ok("POST", "/api/v1/groups/staff@example.test/members",
                     {"member": "bob@example.test"}))["members"] == ["bob@example.test"]
    assert await ok("GET", "/api/v1/groups") == [
        {"group": "staff@example.test", "members": ["bob@example.test"]}]
    await ok("DELETE", "/api/v1/groups/staff@example.test/members/bob@example.test")
    assert await ok("GET", "/api/v1/groups") == []
    await ok("POST", "/api/v1/virtual-servers/mail2/storage", {"name": "SG2"})
    await ok("POST", "/api/v1/virtual-servers/mail2/storage/SG2/databases", {"name": "DB7"})
    storage = await ok("GET", "/api/v1/virtual-servers/mail2/storage")
    assert storage["storage_groups"] == [
        {"name": "SG1", "databases": [{"name": "DB1", "mailboxes": 1}]},
        {"name": "SG2", "databases": [{"name": "DB7", "mailboxes": 0}]}]
    await ok("DELETE", "/api/v1/users/bob@example.test")
    status, body = await api.call("DELETE", "/api/v1/domains/example.test")
    assert status == 409 and body["error"]["code"] == "conflict"
    await ok("DELETE", "/api/v1/aliases/postmaster@example.test")
    await ok("DELETE", "/api/v1/users/alice@example.test")
    await ok("DELETE", "/api/v1/domains/example.test")
    assert await ok("GET", "/api/v1/virtual-servers/mail1/queue") == []
    assert (await ok("POST", "/api/v1/virtual-servers/mail1/queue/retry", {}))["count"] == 0
    assert (await ok("POST", "/api/v1/virtual-servers/mail1/queue/delete",
                     {"all": True}))["count"] == 0
    assert await ok("GET", "/api/v1/tracking?sender=a@example.test&since_hours=1") == []
    actions = [e.extra["action"] for e in await log_entries(api) if e.event == "admin_change"]
    assert actions[:3] == ["domain.add", "user.add", "alias.add"]
    assert "storage.add_database" in actions and "group.add_member" in actions


async def test_queue_and_tracking_read_the_virtual_servers_disks(api: Api) -> None:
    from clustermail.mail.queue import store as qstore
    from clustermail.mail.queue.tracking import TrackingLog

    disk = api.data.resolve() / "disks" / "mail1"
    disk.mkdir(parents=True)
    conn = qstore.connect(qstore.queue_path(disk))
    conn.close()
    log = TrackingLog(disk, "mail1")
    log.record("receive", queue_id="Q1", message_id="<m1@example.test>",
               sender="a@example.test", recipients=["b@remote.test"], size=10, result="queued")
    log.close()
    status, rows = await api.call("GET", "/api/v1/tracking?vs=mail1", user=VIEWER)
    assert status == 200 and [r["queue_id"] for r in rows] == ["Q1"]
    status, rows = await api.call("GET", "/api/v1/virtual-servers/mail1/queue", user=VIEWER)
    assert (status, rows) == (200, [])


# --------------------------------------------------------------------------- sessions


async def test_console_session_with_csrf(api: Api) -> None:
    http = api.http
    async with http.post(api.url + "/api/v1/session",
                         json={"name": "oper", "password": "operator-password"}) as r:
        assert r.status == 200
        session = await r.json()
        cookie = r.cookies["clustermail_session"]
        assert cookie["httponly"] and cookie["samesite"] == "Strict"
        assert not cookie["secure"]  # plain HTTP on loopback; set over HTTPS
    assert session["role"] == "operator" and session["csrf_token"]
    async with http.get(api.url + "/api/v1/session") as r:
        assert r.status == 200 and (await r.json())["csrf_token"] == session["csrf_token"]
    async with http.post(api.url + "/api/v1/nodes/node1/pause") as r:
        assert r.status == 403 and (await r.json())["error"]["code"] == "csrf"
    async with http.post(api.url + "/api/v1/nodes/node1/pause",
                         headers={"X-CSRF-Token": "0" * 64}) as r:
        assert r.status == 403
    csrf = {"X-CSRF-Token": session["csrf_token"]}
    async with http.post(api.url + "/api/v1/nodes/node1/pause", headers=csrf) as r:
        assert r.status == 200
    async with http.post(api.url + "/api/v1/nodes/node1/resume",
                         headers={**csrf, "Origin": "http://evil.test"}) as r:
        assert r.status == 403 and (await r.json())["error"]["code"] == "cross_origin"
    async with http.delete(api.url + "/api/v1/session", headers=csrf) as r:
        assert r.status == 200
    async with http.get(api.url + "/api/v1/status",
                        headers={"X-Clustermail-Console": "1"}) as r:
        assert r.status == 401 and "WWW-Authenticate" not in r.headers


async def test_sessions_need_the_account_and_a_valid_signature(api: Api) -> None:
    status, _ = await api.call("POST", "/api/v1/session", user=None,
                               json_body={"name": "view", "password": "viewer-password"})
    assert status == 200
    token = next(c.value for c in api.http.cookie_jar if c.key == "clustermail_session")
    payload, _, signature = token.partition(".")
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as fresh:
        async def status_with(cookie: str) -> tuple[int, str]:
            async with fresh.get(api.url + "/api/v1/status",
                                 headers={"Cookie": f"clustermail_session={cookie}"}) as r:
                return r.status, (await r.json())["error"]["message"] if r.status != 200 else ""

        assert await status_with(token) == (200, "")
        forged = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB")
        status, message = await status_with(f"{forged}.{signature}")
        assert status == 401 and "log in again" in message
        await api.server.ctx.accounts.remove("view")
        status, message = await status_with(token)
        assert status == 401 and "no longer exists" in message


async def test_logins_are_throttled(api: Api) -> None:
    for _ in range(5):
        status, _ = await api.call("POST", "/api/v1/session", user=None,
                                   json_body={"name": "oper", "password": "guess"})
        assert status == 401
    async with api.http.post(api.url + "/api/v1/session",
                             json={"name": "oper", "password": "operator-password"}) as r:
        assert r.status == 429
        assert int(r.headers["Retry-After"]) >= 1
        assert (await r.json())["error"]["code"] == "too_many_attempts"
    # Basic authentication counts against the same limit.
    status, _ = await api.call("GET", "/api/v1/status", user=OPERATOR)
    assert status == 429


# --------------------------------------------------------------------------- streams, metrics


async def test_event_stream_sends_status_and_log_entries(api: Api) -> None:
    from tests.support.api_server import basic

    async with api.http.get(api.url + "/api/v1/events/stream", headers=basic(VIEWER)) as r:
        assert r.status == 200 and r.content_type == "text/event-stream"

        async def next_event() -> tuple[str, Any]:
            kind, data = "", ""
            while True:
                line = (await r.content.readline()).decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    data = line[6:]
                elif line == "" and kind:
                    return kind, json.loads(data)

        async with asyncio.timeout(10):
            kind, status = await next_event()
            assert kind == "status" and len(status["virtual_servers"]) == 4
            await api.call("POST", "/api/v1/virtual-servers/mail3/offline")
            seen: list[str] = []
            while "status" not in seen or "log" not in seen:
                kind, data = await next_event()
                if kind == "log":
                    assert data["event"] == "admin_change" and data["extra"]["user"] == "oper"
                    seen.append(kind)
                elif kind == "status":
                    assert data["virtual_servers"][3]["name"] == "mail3"
                    seen.append(kind)


async def test_metrics_and_history(api: Api) -> None:
    status, text = await api.call("GET", "/metrics", user=VIEWER)
    assert status == 200
    assert 'clustermail_vs_state{state="offline",vs="mail1"} 1.0' in text
    assert "clustermail_api_requests_total" in text
    status, history = await api.call("GET", "/api/v1/metrics/history", user=VIEWER)
    assert status == 200 and history == {"interval": 0, "samples": []}


async def test_config_show_and_apply(api: Api) -> None:
    status, shown = await api.call("GET", "/api/v1/config", user=VIEWER)
    assert status == 200 and set(shown["virtual_servers"]) == {"cluster", "mail1", "mail2",
                                                                  "mail3"}
    shown["virtual_servers"]["mail1"]["priority"] = 5
    status, answer = await api.call("PUT", "/api/v1/config", json_body=shown)
    assert status == 200, answer
    config = (await read_view(api.store)).applied_config()
    mail1 = config.virtual_server("mail1")
    assert mail1 is not None and mail1.priority == 5
