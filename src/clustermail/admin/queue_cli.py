"""`clustermail queue list|retry|delete VS` and `clustermail track`.

The queue is a SQLite file on the virtual server's disk; for the local cluster these
commands open it directly (SQLite's locking serialises them with the running SMTP
resource, whose queue runner re-reads the file every few seconds). The disk path comes
from the applied configuration's ``disk`` resource (``{data}`` = the data directory),
else ``DATA/disks/VS``. `track` searches the tracking logs of every virtual server disk.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from clustermail.admin import local
from clustermail.admin.common import emit, json_text
from clustermail.admin.errors import AdminError
from clustermail.cluster import keys
from clustermail.cluster.config import ConfigError
from clustermail.cluster.model import ClusterConfig
from clustermail.cluster.records import ConfigRecord, RecordError
from clustermail.coord import CoordError, open_store
from clustermail.mail.queue import store as qstore
from clustermail.mail.queue.tracking import Query, log_files, search

Handler = Callable[[argparse.Namespace, Console], Coroutine[Any, Any, int]]
AddCommand = Callable[..., argparse.ArgumentParser]


def add_commands(sub: Any, add: AddCommand, parser_class: type[argparse.ArgumentParser]) -> None:
    queue = sub.add_parser("queue", help="the relay queue of a virtual server: list, retry, delete")
    qsub = queue.add_subparsers(dest="sub", metavar="ACTION", parser_class=parser_class,
                                required=True)
    p = add("list", "list the messages waiting in a virtual server's queue", cmd_queue_list, qsub)
    p.add_argument("vs")
    p = add("retry", "try queued messages again now (all, or the given queue ids)",
            cmd_queue_retry, qsub)
    p.add_argument("vs")
    p.add_argument("queue_id", nargs="*")
    p = add("delete", "delete queued messages (no bounce is sent)", cmd_queue_delete, qsub)
    p.add_argument("vs")
    p.add_argument("queue_id", nargs="*")
    p.add_argument("--all", action="store_true", help="delete every queued message")
    p = add("track", "search the message tracking logs of the virtual servers", cmd_track)
    p.add_argument("--sender")
    p.add_argument("--recipient")
    p.add_argument("--message-id")
    p.add_argument("--vs", help="only this virtual server's log")
    p.add_argument("--since", type=float, help="only entries newer than this many hours")


# --------------------------------------------------------------------------- disks


async def _configured_disks(args: argparse.Namespace) -> dict[str, Path]:
    """Virtual server → disk path, from the applied configuration when there is one."""
    data = args.data.resolve()
    if not args.store and not local.has_cluster(args.data):
        return {}
    url = str(args.store) if args.store else local.store_url_for(args.data)
    try:
        store = await open_store(url)
    except CoordError:
        return {}
    try:
        kv = await store.get(keys.CONFIG)
    except CoordError:
        return {}
    finally:
        await store.close()
    if kv is None:
        return {}
    try:
        config = ConfigRecord.from_store(kv.key, kv.value).parse()
    except (RecordError, ConfigError):
        return {}
    return disks_of(config, data)


def disks_of(config: ClusterConfig, data: Path) -> dict[str, Path]:
    """Virtual server → the folder of its ``disk`` resource (``{data}`` = ``data``)."""
    out: dict[str, Path] = {}
    for server in config.virtual_servers:
        for res in server.resources:
            if res.type == "disk":
                path = str(res.properties.get("path", ""))
                out[server.name] = Path(path.replace("{data}", str(data)))
    return out


def queue_rows(messages: list[qstore.QueuedMessage], now: float) -> list[dict[str, Any]]:
    """The queue as `queue list --json` and the API show it."""
    return [
        {
            "queue_id": m.queue_id, "sender": m.sender or "<>", "size": m.size,
            "age": round(now - m.arrived, 1), "message_id": m.message_id,
            "recipients": [
                {"address": r.address, "route": r.route, "attempts": r.attempts,
                 "next_attempt_in": round(max(0.0, r.next_attempt - now), 1),
                 "last_error": r.last_error}
                for r in m.recipients
            ],
        }
        for m in messages
    ]


async def _disk(args: argparse.Namespace, vs: str) -> Path:
    disks = await _configured_disks(args)
    default: Path = args.data.resolve() / "disks" / vs
    return disks.get(vs, default)


async def _queue_file(args: argparse.Namespace) -> Path:
    path = qstore.queue_path(await _disk(args, args.vs))
    if not path.exists():
        raise AdminError(f"no queue for virtual server {args.vs!r} at {path}")
    return path


# --------------------------------------------------------------------------- commands


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


async def cmd_queue_list(args: argparse.Namespace, console: Console) -> int:
    conn = qstore.connect(await _queue_file(args), create=False)
    try:
        messages = qstore.read_messages(conn, limit=100_000)
    finally:
        conn.close()
    now = time.time()
    rows = queue_rows(messages, now)
    table = Table(title=f"queue of {args.vs} ({len(rows)} messages)")
    for col in ("queue id", "age", "sender", "recipient", "route", "tries", "next", "last error"):
        table.add_column(col)
    for m in messages:
        for r in m.recipients:
            table.add_row(m.queue_id, _age(now - m.arrived), m.sender or "<>", r.address, r.route,
                          str(r.attempts), _age(max(0.0, r.next_attempt - now)),
                          (r.last_error or "")[:60])
    emit(console, args, rows, table)
    return 0


async def cmd_queue_retry(args: argparse.Namespace, console: Console) -> int:
    conn = qstore.connect(await _queue_file(args), create=False)
    try:
        n = qstore.retry_now(conn, args.queue_id or None, time.time())
    finally:
        conn.close()
    console.print(f"{n} recipients of {args.vs} due now")
    return 0


async def cmd_queue_delete(args: argparse.Namespace, console: Console) -> int:
    if not args.queue_id and not args.all:
        raise AdminError("name the queue ids to delete, or give --all")
    conn = qstore.connect(await _queue_file(args), create=False)
    try:
        n = qstore.delete_messages(conn, None if args.all else args.queue_id)
    finally:
        conn.close()
    console.print(f"{n} messages deleted from the queue of {args.vs}")
    return 0


async def cmd_track(args: argparse.Namespace, console: Console) -> int:
    disks = await _configured_disks(args)
    root = args.data.resolve() / "disks"
    if root.is_dir():
        for folder in root.iterdir():
            disks.setdefault(folder.name, folder)
    if args.vs:
        disks = {args.vs: disks.get(args.vs, root / args.vs)}
    since = time.time() - args.since * 3600 if args.since else None
    query = Query(args.sender, args.recipient, args.message_id, since)
    found = list(search(log_files(disks.values()), query))
    if args.json:
        print(json_text(found))
        return 0
    table = Table(title=f"message tracking ({len(found)} entries)")
    for col in ("time", "vs", "event", "queue id", "sender", "recipients", "size", "result"):
        table.add_column(col)
    for e in found:
        t = e.get("time")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(t))) \
            if isinstance(t, int | float) else "?"
        rcpts = e.get("recipients")
        table.add_row(when, str(e.get("vs", "")), str(e.get("event", "")),
                      str(e.get("queue_id", "")), str(e.get("sender") or "<>"),
                      ", ".join(map(str, rcpts)) if isinstance(rcpts, list) else "",
                      str(e.get("size", "")), str(e.get("result", "")))
    console.print(table)
    return 0
