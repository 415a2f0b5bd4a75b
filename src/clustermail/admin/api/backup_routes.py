"""Backup routes: backups of a virtual server's mail store and of the cluster, list,
verify, prune, restore (into the live or the recovery storage group), dial tone (store
reset), the recovery storage group's drop, and a mailbox's recovery from it.

They call what the backup commands call (:mod:`clustermail.admin.backup_ops`,
:mod:`clustermail.admin.cluster_backup`): an operation on a virtual server runs on its
owner through a store request, or on the admin service's machine when nobody owns it.
A call waits for the operation to finish (up to ``timeout`` seconds; past it, the
operation goes on where it runs and the call answers 504).

Unlike the commands, the API takes no directory: backups go to, and are read from, each
virtual server's configured ``backup_path`` (cluster backups: the admin service's
``{data}/backups``). The admin service moves with its group, so a path given to it would
name a different machine after each failover.
"""

from __future__ import annotations

from typing import Any

from clustermail.admin import backup_ops, cluster_backup, intents
from clustermail.admin.api.routing import (
    BOOLEAN,
    INTEGER,
    NUMBER,
    STRING,
    STRINGS,
    ApiError,
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
from clustermail.admin.backup_cli import DEFAULT_TIMEOUT, parse_time
from clustermail.admin.errors import AdminError
from clustermail.mail.backup.operations import split_database
from clustermail.mail.backup.sets import BackupError

OP, VIEW = Role.OPERATOR, Role.VIEWER

#: The longest a call may wait for its operation (a day).
MAX_TIMEOUT = 86_400.0


def _run(call: Call) -> dict[str, Any]:
    """How long to wait, from the body's ``timeout``."""
    timeout = call.body.get("timeout", DEFAULT_TIMEOUT)
    if not 0 < timeout <= MAX_TIMEOUT:
        raise invalid(f"body.timeout: expected seconds between 0 and {MAX_TIMEOUT:.0f}, "
                      f"got {timeout}")
    return {"timeout": float(timeout)}


async def _waited(operation: Any) -> tuple[dict[str, Any], str]:
    """Awaits a backup operation; one that outlived its timeout is a 504."""
    try:
        result: tuple[dict[str, Any], str] = await operation
    except backup_ops.StillRunningError as exc:
        raise ApiError(504, "still_running", str(exc)) from None
    return result


def _database(value: str) -> str:
    try:
        split_database(value)
    except BackupError as exc:
        raise invalid(str(exc)) from None
    return value


async def _vs(call: Call) -> str:
    name = call.param("name")
    intents.check_vs(await intents.current_view(call.ctx.store), name)
    return name


def _result(doc: dict[str, Any], text: str) -> dict[str, Any]:
    return {**doc, "text": text}


# --------------------------------------------------------------------------- backups


async def create_backup(call: Call) -> Any:
    name = await _vs(call)
    run = _run(call)
    doc, text = await _waited(backup_ops.backup_create(
        call.ctx.store, call.ctx.data_dir, name,
        storage_groups=call.body.get("storage_groups") or None,
        incremental=bool(call.body.get("incremental", False)), **run))
    await call.ctx.log_change(call.user, "backup.create",
                              f"backed up {name}: {doc.get('id', text)}", vs=name,
                              backup=doc.get("id"))
    return _result(doc, text)


async def create_cluster_backup(call: Call) -> Any:
    doc, text = await cluster_backup.create(call.ctx.store,
                                            (call.ctx.data_dir / "backups").resolve())
    await call.ctx.log_change(call.user, "backup.create_cluster",
                              f"backed up the cluster: {doc.get('id', text)}",
                              backup=doc.get("id"))
    return _result(doc, text)


async def _dirs(call: Call, vs: str | None) -> list[Any]:
    view = await intents.current_view(call.ctx.store)
    if vs is not None:
        intents.check_vs(view, vs)
    return backup_ops.backup_dirs(view, call.ctx.data_dir, vs)


async def list_backups(call: Call) -> Any:
    vs = call.query("vs")
    doc, text = await backup_ops.backup_list(await _dirs(call, vs), vs)
    return _result(doc, text)


async def verify_backup(call: Call) -> Any:
    set_id = call.param("id")
    dirs = await _dirs(call, None)
    if set_id in (".", "..") or not any((d / set_id).is_dir() for d in dirs):
        raise not_found(f"no backup {set_id!r} in {', '.join(map(str, dirs))}")
    doc, text = await backup_ops.backup_verify(dirs, set_id)
    return _result(doc, text)


async def prune_backups(call: Call) -> Any:
    vs = call.body.get("vs")
    keep = call.body["keep"]
    doc, text = await backup_ops.backup_prune(await _dirs(call, vs), keep, vs)
    await call.ctx.log_change(call.user, "backup.prune",
                              f"pruned backups{' of ' + vs if vs else ''}, keeping {keep} "
                              f"chain(s): {len(doc['deleted'])} set(s) deleted", vs=vs or "",
                              deleted=doc["deleted"])
    return _result(doc, text)


# --------------------------------------------------------------------------- restore


async def restore(call: Call) -> Any:
    name = await _vs(call)
    body = call.body
    database = body.get("database")
    every = bool(body.get("all", False))
    recovery = bool(body.get("recovery", False))
    roll_forward = bool(body.get("roll_forward", True))
    if every == (database is not None):
        raise invalid("give either \"database\": \"SG/DB\" or \"all\": true")
    if every and recovery:
        raise invalid("\"recovery\" restores one database: give \"database\": \"SG/DB\"")
    if database is not None:
        _database(database)
    until = _until(body.get("until"))
    if until is not None and not roll_forward:
        raise invalid("\"until\" rolls forward to a time; \"roll_forward\": false does not "
                      "roll forward at all: give one of them")
    doc, text = await _waited(backup_ops.restore(
        call.ctx.store, call.ctx.data_dir, name, from_id=body["from"], database=database,
        all_databases=every, roll_forward=roll_forward, until=until, recovery=recovery,
        **_run(call)))
    what = "every database" if every else database
    where = " into the recovery storage group" if recovery else ""
    await call.ctx.log_change(call.user, "backup.restore",
                              f"restored {name} {what}{where} from {body['from']}", vs=name,
                              backup=body["from"], recovery=recovery)
    return _result(doc, text)


def _until(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise invalid("body.until: expected a time (ISO 8601, UTC, or Unix seconds)")
    try:
        when = parse_time(str(value))
    except AdminError as exc:
        raise invalid(f"body.until: {exc}") from None
    if when != when or when < 0:
        raise invalid(f"body.until: not a time: {value!r}")
    return when


async def reset_database(call: Call) -> Any:
    name = await _vs(call)
    database = _database(f"{call.param('group')}/{call.param('database')}")
    if call.body.get("confirm") is not True:
        raise invalid(f"a reset replaces {name} {database} with an EMPTY database (its file "
                      "and log are kept beside it): send {\"confirm\": true} to do it")
    doc, text = await _waited(backup_ops.store_reset(
        call.ctx.store, call.ctx.data_dir, name, database, confirm=True, **_run(call)))
    await call.ctx.log_change(call.user, "store.reset",
                              f"reset {name} {database} to an empty database", vs=name)
    return _result(doc, text)


async def drop_recovery(call: Call) -> Any:
    name = await _vs(call)
    group = call.query("storage_group")
    doc, text = await _waited(backup_ops.drop_recovery(
        call.ctx.store, call.ctx.data_dir, name, group, timeout=DEFAULT_TIMEOUT))
    await call.ctx.log_change(call.user, "store.drop_recovery",
                              f"dropped the recovery storage group of {name}"
                              + (f" ({group})" if group else ""), vs=name)
    return _result(doc, text)


async def recover_mailbox(call: Call) -> Any:
    from clustermail.mail.directory import Directory

    address = call.param("address")
    since = _until(call.body.get("since"))
    directory = Directory(call.ctx.store)
    try:
        if await directory.mailbox(address) is None:
            raise not_found(f"no mailbox {address!r}")
    finally:
        await directory.close()
    doc, text = await _waited(backup_ops.recover_mailbox(
        call.ctx.store, call.ctx.data_dir, address, folder=call.body.get("folder"),
        since=since, **_run(call)))
    await call.ctx.log_change(call.user, "user.recover",
                              f"recovered {address} from the recovery storage group",
                              copied=doc.get("copied"))
    return _result(doc, text)


# --------------------------------------------------------------------------- the table

TIMEOUT: dict[str, Any] = {
    "type": "number",
    "description": f"seconds to wait for the operation (default {DEFAULT_TIMEOUT:.0f}); "
                   "past it the call answers 504 and the operation goes on where it runs",
}
TIME: dict[str, Any] = {"description": "ISO 8601 (UTC if no zone) or Unix seconds",
                        "oneOf": [STRING, NUMBER]}
RESULT = obj({"text": STRING}, additional=True)
VS_BACKUPS = "/virtual-servers/{name}/backups"

ROUTES = [
    Route("GET", "/backups", list_backups, "List backups (full ones with their incrementals, "
          "and cluster backups) in the virtual servers' backup directories", "backup", VIEW,
          query=(Param("vs", "only this virtual server's backups"),),
          response=obj({"directories": STRINGS, "chains": array(obj({}, additional=True)),
                        "cluster": array(obj({}, additional=True)), "text": STRING},
                       additional=True)),
    Route("POST", VS_BACKUPS, create_backup, "Back up a virtual server's mail store while it "
          "serves (full, or incremental: what the logs recorded since the previous backup)",
          "backup", OP, body=obj({"storage_groups": STRINGS, "incremental": BOOLEAN,
                                  "timeout": TIMEOUT}),
          status=201, response=RESULT),
    Route("POST", "/cluster-backups", create_cluster_backup, "Back up the cluster's "
          "configuration, intents and recipient directory (what the coordination store "
          "holds)", "backup", OP, status=201, response=RESULT),
    Route("GET", "/backups/{id}/verify", verify_backup, "Check a backup: checksums, SQLite "
          "integrity of every database, the chain complete", "backup", VIEW,
          response=obj({"ok": BOOLEAN, "text": STRING}, additional=True)),
    Route("POST", "/backups/prune", prune_backups, "Keep the newest chains (per virtual "
          "server), delete older ones", "backup", OP,
          body=obj({"keep": {"type": "integer", "minimum": 1}, "vs": nullable(STRING)},
                   required=["keep"]), body_required=True,
          response=obj({"kept": STRINGS, "deleted": STRINGS, "text": STRING})),
    Route("POST", "/virtual-servers/{name}/restore", restore, "Restore a database (rolled "
          "forward to its last change, to \"until\", or not at all), into the recovery "
          "storage group beside the live one (\"recovery\"), or every database and the "
          "relay queue of an offline virtual server (\"all\")", "backup", OP,
          body=obj({"from": STRING, "database": STRING, "all": BOOLEAN,
                    "roll_forward": BOOLEAN, "until": nullable(TIME), "recovery": BOOLEAN,
                    "timeout": TIMEOUT}, required=["from"]),
          body_required=True, response=RESULT),
    Route("POST", "/virtual-servers/{name}/storage/{group}/databases/{database}/reset",
          reset_database, "Replace a lost database with a new EMPTY one (dial tone); its old "
          "file and log are kept beside", "backup", OP,
          body=obj({"confirm": BOOLEAN, "timeout": TIMEOUT}, required=["confirm"]),
          body_required=True, response=RESULT),
    Route("DELETE", "/virtual-servers/{name}/recovery", drop_recovery, "Delete a virtual "
          "server's recovery storage group", "backup", OP,
          query=(Param("storage_group", "only this storage group's"),), response=RESULT),
    Route("POST", "/users/{address}/recover", recover_mailbox, "Merge a mailbox's messages "
          "from the recovery storage group back into it (what it still has is not copied "
          "again)", "backup", OP,
          body=obj({"folder": STRING, "since": nullable(TIME), "timeout": TIMEOUT}),
          response=obj({"copied": INTEGER, "skipped": INTEGER, "text": STRING},
                       additional=True)),
]
