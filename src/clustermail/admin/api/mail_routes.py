"""Mail routes: domains, users (mailboxes) and their quotas, aliases, the relay queue
and message tracking.

They call what the mail commands call: the recipient directory
(:class:`clustermail.mail.directory.Directory`) and the queue and tracking files on
the virtual servers' disks (as `clustermail queue` and `track` do, from the
machine the admin service runs on).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from clustermail.admin import intents
from clustermail.admin.api.routing import (
    BOOLEAN,
    INTEGER,
    STRING,
    STRINGS,
    Call,
    Param,
    Role,
    Route,
    array,
    invalid,
    not_found,
    nullable,
    obj,
)
from clustermail.admin.errors import AdminError
from clustermail.admin.mail_cli import parse_database
from clustermail.admin.queue_cli import disks_of, queue_rows
from clustermail.mail.directory import Directory, MailboxEntry
from clustermail.mail.queue import store as qstore
from clustermail.mail.queue.tracking import Query, log_files, search
from clustermail.mail.store import QuotaLimits

OP, VIEW = Role.OPERATOR, Role.VIEWER


@asynccontextmanager
async def directory(call: Call) -> AsyncIterator[Directory]:
    d = Directory(call.ctx.store)
    try:
        yield d
    finally:
        await d.close()


# --------------------------------------------------------------------------- domains


async def list_domains(call: Call) -> Any:
    async with directory(call) as d:
        domains = await d.list_domains()
        boxes = await d.list_mailboxes()
    counts = {x.domain: 0 for x in domains}
    for box in boxes:
        domain = box.address.rpartition("@")[2]
        counts[domain] = counts.get(domain, 0) + 1
    return [{"domain": x.domain, "catch_all": x.catch_all, "mailboxes": counts[x.domain]}
            for x in domains]


async def add_domain(call: Call) -> Any:
    async with directory(call) as d:
        entry = await d.add_domain(call.body["domain"], catch_all=call.body.get("catch_all"))
    await call.ctx.log_change(call.user, "domain.add", f"added domain {entry.domain}")
    return {"domain": entry.domain, "catch_all": entry.catch_all}


async def remove_domain(call: Call) -> Any:
    domain = call.param("domain")
    async with directory(call) as d:
        await d.remove_domain(domain)
    await call.ctx.log_change(call.user, "domain.remove", f"removed domain {domain.lower()}")
    return {"done": f"domain {domain.lower()} removed"}


# --------------------------------------------------------------------------- users


def _quota(q: QuotaLimits | None) -> dict[str, int | None] | None:
    if q is None:
        return None
    return {"warning": q.warning, "prohibit_send": q.prohibit_send,
            "prohibit_send_receive": q.prohibit_send_receive}


def _user(entry: MailboxEntry) -> dict[str, Any]:
    return {"address": entry.address, "display_name": entry.display_name,
            "server": entry.server, "storage_group": entry.storage_group,
            "database": entry.database, "quota": _quota(entry.quota), "enabled": entry.enabled}


async def _existing(d: Directory, address: str) -> MailboxEntry:
    entry = await d.mailbox(address)
    if entry is None:
        raise not_found(f"no mailbox {address!r}")
    return entry


async def list_users(call: Call) -> Any:
    async with directory(call) as d:
        boxes = await d.list_mailboxes(call.query("domain"), server=call.query("server"))
    return [_user(b) for b in boxes]


async def get_user(call: Call) -> Any:
    from clustermail.mail.directory.addresses import parse_address

    async with directory(call) as d:
        entry = await _existing(d, call.param("address"))
        key = parse_address(entry.address).key
        aliases = [a.address for a in await d.list_aliases()
                   if parse_address(a.target).key == key]
    return {**_user(entry), "aliases": aliases}


async def add_user(call: Call) -> Any:
    body = call.body
    try:
        group, db = parse_database(body.get("database"))
    except AdminError as exc:
        raise invalid(str(exc)) from None
    view = await intents.current_view(call.ctx.store)
    intents.check_vs(view, body["server"])
    async with directory(call) as d:
        entry = await d.add_mailbox(body["address"], password=body["password"],
                                    server=body["server"],
                                    display_name=body.get("display_name", ""),
                                    storage_group=group, database=db)
    await call.ctx.log_change(call.user, "user.add",
                              f"added mailbox {entry.address} on {entry.server}",
                              vs=entry.server)
    return _user(entry)


async def remove_user(call: Call) -> Any:
    async with directory(call) as d:
        entry = await d.remove_mailbox(call.param("address"))
    await call.ctx.log_change(call.user, "user.remove", f"removed mailbox {entry.address}",
                              vs=entry.server)
    return {"done": f"mailbox {entry.address} removed (its data stays in its database)"}


async def set_enabled(call: Call, enabled: bool) -> Any:
    async with directory(call) as d:
        await _existing(d, call.param("address"))
        entry = await d.set_enabled(call.param("address"), enabled)
    word = "enabled" if enabled else "disabled"
    await call.ctx.log_change(call.user, f"user.{word[:-1]}", f"{word} mailbox {entry.address}",
                              vs=entry.server)
    return _user(entry)


async def enable_user(call: Call) -> Any:
    return await set_enabled(call, True)


async def disable_user(call: Call) -> Any:
    return await set_enabled(call, False)


async def set_password(call: Call) -> Any:
    async with directory(call) as d:
        await _existing(d, call.param("address"))
        entry = await d.set_password(call.param("address"), call.body["password"])
    await call.ctx.log_change(call.user, "user.password",
                              f"changed the password of {entry.address}", vs=entry.server)
    return {"done": f"password of {entry.address} changed"}


async def set_quota(call: Call) -> Any:
    body = call.body
    limits = [body.get(k) for k in ("warning", "prohibit_send", "prohibit_send_receive")]
    if body.get("default", False) == any(v is not None for v in limits):
        raise invalid("give \"default\": true, or one or more of warning, prohibit_send, "
                      "prohibit_send_receive (bytes)")
    quota = None if body.get("default") else QuotaLimits(*limits)
    async with directory(call) as d:
        await _existing(d, call.param("address"))
        entry = await d.set_quota(call.param("address"), quota)
    await call.ctx.log_change(call.user, "user.quota", f"set the quota of {entry.address}",
                              vs=entry.server, quota=_quota(quota))
    return _user(entry)


# --------------------------------------------------------------------------- aliases


async def list_aliases(call: Call) -> Any:
    async with directory(call) as d:
        aliases = await d.list_aliases(call.query("domain"))
    return [{"alias": a.address, "mailbox": a.target} for a in aliases]


async def add_alias(call: Call) -> Any:
    async with directory(call) as d:
        entry = await d.add_alias(call.body["alias"], call.body["mailbox"])
    await call.ctx.log_change(call.user, "alias.add", f"added alias {entry.address} → "
                              f"{entry.target}")
    return {"alias": entry.address, "mailbox": entry.target}


async def remove_alias(call: Call) -> Any:
    async with directory(call) as d:
        entry = await d.remove_alias(call.param("alias"))
    await call.ctx.log_change(call.user, "alias.remove", f"removed alias {entry.address}")
    return {"done": f"alias {entry.address} removed"}


async def set_catch_all(call: Call) -> Any:
    domain = call.param("domain")
    async with directory(call) as d:
        entry = await d.set_catch_all(domain, call.body.get("address"))
    await call.ctx.log_change(call.user, "domain.catch_all",
                              f"set the catch-all of {entry.domain} to "
                              f"{entry.catch_all or 'none'}")
    return {"domain": entry.domain, "catch_all": entry.catch_all}


# --------------------------------------------------------------------------- groups


async def list_groups(call: Call) -> Any:
    async with directory(call) as d:
        groups = await d.list_groups(call.query("domain"))
    return [{"group": g.address, "members": list(g.members)} for g in groups]


async def add_group_member(call: Call) -> Any:
    group = call.param("group")
    async with directory(call) as d:
        entry = await d.add_group_member(group, call.body["member"])
    await call.ctx.log_change(call.user, "group.add_member",
                              f"added {call.body['member']} to {entry.address}")
    return {"group": entry.address, "members": list(entry.members)}


async def remove_group_member(call: Call) -> Any:
    group, member = call.param("group"), call.param("member")
    async with directory(call) as d:
        left = await d.remove_group_member(group, member)
    await call.ctx.log_change(call.user, "group.remove_member",
                              f"removed {member} from {group}")
    return {"group": group, "members": list(left.members) if left else []}


# --------------------------------------------------------------------------- storage plans


async def _mail_vs(call: Call) -> str:
    from clustermail.admin.mail_cli import check_vs as check_mail_vs

    name = call.param("name")
    await check_mail_vs(call.ctx.store, name)
    return name


async def get_storage(call: Call) -> Any:
    name = await _mail_vs(call)
    async with directory(call) as d:
        layout = await d.storage_layout(name)
        boxes = await d.list_mailboxes(server=name)
    return {"vs": name, "storage_groups": [
        {"name": g.name, "databases": [
            {"name": db, "mailboxes": sum(1 for b in boxes
                                          if (b.storage_group, b.database) == (g.name, db))}
            for db in g.databases]}
        for g in layout.storage_groups]}


async def add_storage_group(call: Call) -> Any:
    name = await _mail_vs(call)
    group = call.body["name"]
    async with directory(call) as d:
        await d.add_storage_group(name, group)
    await call.ctx.log_change(call.user, "storage.add_group",
                              f"planned storage group {group} on {name}", vs=name)
    return {"done": f"storage group {group} planned on {name}: its mail_store creates it"}


async def add_database(call: Call) -> Any:
    name, group = await _mail_vs(call), call.param("group")
    db = call.body["name"]
    async with directory(call) as d:
        await d.add_database(name, group, db)
    await call.ctx.log_change(call.user, "storage.add_database",
                              f"planned database {group}/{db} on {name}", vs=name)
    return {"done": f"database {group}/{db} planned on {name}: its mail_store creates it"}


# --------------------------------------------------------------------------- queue, tracking


async def _disks(call: Call) -> dict[str, Path]:
    view = await intents.current_view(call.ctx.store)
    return disks_of(intents.applied_config(view), call.ctx.data_dir.resolve())


async def _queue_file(call: Call) -> tuple[str, Path | None]:
    name = call.param("name")
    view = await intents.current_view(call.ctx.store)
    intents.check_vs(view, name)
    disk = disks_of(intents.applied_config(view), call.ctx.data_dir.resolve()).get(name)
    path = qstore.queue_path(disk) if disk is not None else None
    return name, path if path is not None and path.exists() else None


async def list_queue(call: Call) -> Any:
    _, path = await _queue_file(call)
    if path is None:
        return []

    def read() -> list[qstore.QueuedMessage]:
        conn = qstore.connect(path, create=False)
        try:
            return qstore.read_messages(conn, limit=10_000)
        finally:
            conn.close()

    return queue_rows(await asyncio.to_thread(read), time.time())


async def retry_queue(call: Call) -> Any:
    name, path = await _queue_file(call)
    ids = call.body.get("queue_ids") or None
    if path is None:
        return {"count": 0, "done": f"the queue of {name} is empty"}

    def retry() -> int:
        conn = qstore.connect(path, create=False)
        try:
            return qstore.retry_now(conn, ids, time.time())
        finally:
            conn.close()

    n = await asyncio.to_thread(retry)
    await call.ctx.log_change(call.user, "queue.retry", f"retried {n} recipients of {name}",
                              vs=name)
    return {"count": n, "done": f"{n} recipients of {name} due now"}


async def delete_queued(call: Call) -> Any:
    name, path = await _queue_file(call)
    ids = call.body.get("queue_ids") or None
    if ids is None and not call.body.get("all"):
        raise invalid("name the queue_ids to delete, or give \"all\": true")
    if path is None:
        return {"count": 0, "done": f"the queue of {name} is empty"}

    def delete() -> int:
        conn = qstore.connect(path, create=False)
        try:
            return qstore.delete_messages(conn, ids)
        finally:
            conn.close()

    n = await asyncio.to_thread(delete)
    await call.ctx.log_change(call.user, "queue.delete",
                              f"deleted {n} messages from the queue of {name}", vs=name)
    return {"count": n, "done": f"{n} messages deleted from the queue of {name}"}


async def track(call: Call) -> Any:
    disks = await _disks(call)
    vs = call.query("vs")
    if vs is not None:
        if vs not in disks:
            raise not_found(f"no virtual server with a disk named {vs!r}")
        disks = {vs: disks[vs]}
    hours = call.query_float("since_hours")
    query = Query(call.query("sender"), call.query("recipient"), call.query("message_id"),
                  time.time() - hours * 3600 if hours is not None else None)
    limit = call.query_int("limit", 500, 1, 10_000)

    def run() -> list[dict[str, object]]:
        found = []
        for entry in search(log_files(disks.values()), query):
            found.append(entry)
            if len(found) >= limit:
                break
        return found

    return await asyncio.to_thread(run)


# --------------------------------------------------------------------------- the table

QUOTA = nullable(obj({"warning": nullable(INTEGER), "prohibit_send": nullable(INTEGER),
                      "prohibit_send_receive": nullable(INTEGER)}))
USER = obj({"address": STRING, "display_name": STRING, "server": STRING,
            "storage_group": STRING, "database": STRING, "quota": QUOTA, "enabled": BOOLEAN},
           additional=True)
DOMAIN = obj({"domain": STRING, "catch_all": nullable(STRING), "mailboxes": INTEGER},
             additional=True)
ALIAS = obj({"alias": STRING, "mailbox": STRING})
DONE = obj({"done": STRING}, additional=True)
COUNT = obj({"count": INTEGER, "done": STRING})
USER_PATH = "/users/{address}"
QUEUE = "/virtual-servers/{name}/queue"
FILTERS = (Param("domain", "only this domain"),)

ROUTES = [
    Route("GET", "/domains", list_domains, "List the local mail domains", "mail", VIEW,
          response=array(DOMAIN)),
    Route("POST", "/domains", add_domain, "Add a local mail domain", "mail", OP,
          body=obj({"domain": STRING, "catch_all": nullable(STRING)}, required=["domain"]),
          body_required=True, status=201, response=DOMAIN),
    Route("DELETE", "/domains/{domain}", remove_domain, "Remove a domain that holds no "
          "recipients", "mail", OP, response=DONE),
    Route("PUT", "/domains/{domain}/catch-all", set_catch_all, "Set (or, with null, clear) "
          "the mailbox, alias or group that gets mail for unknown addresses", "mail", OP,
          body=obj({"address": nullable(STRING)}, required=["address"]), body_required=True,
          response=DOMAIN),
    Route("GET", "/groups", list_groups, "List distribution groups", "mail", VIEW,
          response=array(obj({"group": STRING, "members": STRINGS})), query=FILTERS),
    Route("POST", "/groups/{group}/members", add_group_member, "Add a member to a "
          "distribution group (creates the group on its first)", "mail", OP,
          body=obj({"member": STRING}, required=["member"]), body_required=True, status=201,
          response=obj({"group": STRING, "members": STRINGS})),
    Route("DELETE", "/groups/{group}/members/{member}", remove_group_member, "Remove a member "
          "(the last takes the group along)", "mail", OP,
          response=obj({"group": STRING, "members": STRINGS})),
    Route("GET", "/virtual-servers/{name}/storage", get_storage, "A virtual server's planned "
          "storage groups and databases", "mail", VIEW, response=obj({}, additional=True)),
    Route("POST", "/virtual-servers/{name}/storage", add_storage_group, "Plan a storage group "
          "on a virtual server", "mail", OP, body=obj({"name": STRING}, required=["name"]),
          body_required=True, status=201, response=DONE),
    Route("POST", "/virtual-servers/{name}/storage/{group}/databases", add_database, "Plan a "
          "database in a storage group", "mail", OP, body=obj({"name": STRING},
                                                           required=["name"]),
          body_required=True, status=201, response=DONE),
    Route("GET", "/users", list_users, "List mailboxes", "mail", VIEW, response=array(USER),
          query=(*FILTERS, Param("server", "only mailboxes homed on this virtual server"))),
    Route("POST", "/users", add_user, "Add a mailbox homed on a virtual server", "mail", OP,
          body=obj({"address": STRING, "password": STRING, "server": STRING,
                    "display_name": STRING, "database": STRING},
                   required=["address", "password", "server"]),
          body_required=True, status=201, response=USER),
    Route("GET", USER_PATH, get_user, "One mailbox and its aliases", "mail", VIEW,
          response=USER),
    Route("DELETE", USER_PATH, remove_user, "Remove a mailbox from the directory (its data "
          "stays)", "mail", OP, response=DONE),
    Route("POST", USER_PATH + "/enable", enable_user, "Let a mailbox receive mail and log in",
          "mail", OP, response=USER),
    Route("POST", USER_PATH + "/disable", disable_user, "Stop a mailbox receiving mail and "
          "logging in", "mail", OP, response=USER),
    Route("POST", USER_PATH + "/password", set_password, "Set a mailbox's password", "mail",
          OP, body=obj({"password": STRING}, required=["password"]), body_required=True,
          response=DONE),
    Route("PUT", USER_PATH + "/quota", set_quota, "Override a mailbox's quota (bytes; null "
          "is no limit), or {\"default\": true}", "mail", OP,
          body=obj({"warning": nullable(INTEGER), "prohibit_send": nullable(INTEGER),
                    "prohibit_send_receive": nullable(INTEGER), "default": BOOLEAN}),
          body_required=True, response=USER),
    Route("GET", "/aliases", list_aliases, "List aliases", "mail", VIEW, response=array(ALIAS),
          query=FILTERS),
    Route("POST", "/aliases", add_alias, "Add an alias of a mailbox", "mail", OP,
          body=obj({"alias": STRING, "mailbox": STRING}, required=["alias", "mailbox"]),
          body_required=True, status=201, response=ALIAS),
    Route("DELETE", "/aliases/{alias}", remove_alias, "Remove an alias", "mail", OP,
          response=DONE),
    Route("GET", QUEUE, list_queue, "The messages waiting in a virtual server's relay queue",
          "queue", VIEW, response=array(obj({"queue_id": STRING}, additional=True))),
    Route("POST", QUEUE + "/retry", retry_queue, "Try queued messages again now (all, or "
          "queue_ids)", "queue", OP, body=obj({"queue_ids": STRINGS}), response=COUNT),
    Route("POST", QUEUE + "/delete", delete_queued, "Delete queued messages (no bounce is "
          "sent): queue_ids, or all", "queue", OP,
          body=obj({"queue_ids": STRINGS, "all": BOOLEAN}), body_required=True,
          response=COUNT),
    Route("GET", "/tracking", track, "Search the message tracking logs", "queue", VIEW,
          response=array(obj({}, additional=True)),
          query=(Param("sender", "sender address"), Param("recipient", "recipient address"),
                 Param("message_id", "Message-ID"), Param("vs", "one virtual server's log"),
                 Param("since_hours", "only entries newer than this", {"type": "number"}),
                 Param("limit", "at most this many entries (default 500)",
                       {"type": "integer", "minimum": 1}))),
]
