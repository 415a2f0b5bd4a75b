"""The backup, restore and recovery commands of `clustermail`:

    backup create VS [--storage-group SG ...] [--to DIR] [--incremental]
    backup create --cluster [--to DIR]
    backup list [--dir DIR] [--vs VS]       backup verify ID [--dir DIR]
    backup prune --keep N [--dir DIR] [--vs VS]
    restore VS SG/DB --from ID [--no-roll-forward] [--until TIME] [--recovery]
    restore VS --all --from ID [--no-roll-forward] [--until TIME]
    restore --cluster --from ID [--dir DIR]
    store reset VS SG/DB --confirm          store drop-recovery VS [--storage-group SG]
    user recover ADDRESS --from-recovery [--folder F] [--since TIME]

What they do is in :mod:`clustermail.admin.backup_ops`; this module parses, shows progress
(a bar on a terminal, plain lines on standard error otherwise, nothing with ``--json``)
and prints the result: the backup id alone on standard output, so scripts can keep it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn

from clustermail.admin import backup_ops, cluster_backup, intents, local
from clustermail.admin.common import Add, Handler, add_group, emit, store_url, with_store
from clustermail.admin.errors import AdminError
from clustermail.coord import open_store
from clustermail.mail.store import StoreError

#: How long a command waits for the owner to finish (it goes on there afterwards).
DEFAULT_TIMEOUT = 3600.0


def parse_time(value: str) -> float:
    """ISO 8601 (naive = UTC) or Unix seconds; AdminError otherwise."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise AdminError(f"not a time: {value!r} (use ISO 8601 such as 2026-12-01T08:00 "
                         "(UTC) or Unix seconds)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


class ProgressDisplay:
    """Progress of a long operation: a rich bar when standard output is a terminal, plain
    lines on standard error otherwise, nothing with ``--json``. Callable from any thread."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.mode = ("off" if getattr(args, "json", False)
                     else "bar" if sys.stdout.isatty() and sys.stderr.isatty() else "lines")
        self._lock = threading.Lock()
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._what = ""
        self._next_pct = 0

    def __enter__(self) -> ProgressDisplay:
        if self.mode == "bar":
            self._bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.percentage:>3.0f}%"), DownloadColumn(),
                                 console=Console(stderr=True), transient=True)
            self._bar.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()

    def progress(self, what: str, done: int, total: int) -> None:
        with self._lock:
            if self._bar is not None:
                if self._task is None:
                    self._task = self._bar.add_task(what, total=total)
                self._bar.update(self._task, description=what, completed=done, total=total)
                return
            if self.mode != "lines":
                return
            if what != self._what:
                self._what, self._next_pct = what, 0
            pct = 100 * done // max(total, 1)
            if pct >= self._next_pct:
                self._next_pct = (pct // 25 + 1) * 25
                sys.stderr.write(f"{what}: {pct}% ({done / 1e6:,.1f} of {total / 1e6:,.1f} "
                                 "MB)\n")
                sys.stderr.flush()

    def note(self, text: str) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.console.print(text, highlight=False)
            elif self.mode == "lines":
                sys.stderr.write(text + "\n")
                sys.stderr.flush()

    def run_options(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"progress": self.progress, "note": self.note,
                "timeout": getattr(args, "timeout", None)}


# --------------------------------------------------------------------------- commands


def guarded(handler: Handler) -> Handler:
    """The mail layer's errors and file errors as the one-line AdminError."""

    @functools.wraps(handler)
    async def run(args: argparse.Namespace, console: Console) -> int:
        try:
            return await handler(args, console)
        except StoreError as exc:
            raise AdminError(str(exc)) from exc
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise AdminError(f"{where}{exc.strerror or exc}") from exc

    return run


async def _dirs(args: argparse.Namespace, vs: str | None) -> list[Path]:
    """``--dir`` or every backup directory the configuration names."""
    given = getattr(args, "dir", None)
    if given is not None:
        return [given.resolve()]
    if not args.store and not local.has_cluster(args.data):
        return [(args.data / "backups").resolve()]
    async with await with_store(args) as store:
        view = await intents.current_view(store)
        if vs is not None:
            intents.check_vs(view, vs)
        return backup_ops.backup_dirs(view, args.data, vs)


@guarded
async def cmd_backup_create(args: argparse.Namespace, console: Console) -> int:
    if args.cluster:
        if args.vs or args.storage_group or args.incremental:
            raise AdminError("backup create --cluster takes no virtual server, "
                             "--storage-group or --incremental")
        to = (args.to or args.data / "backups").resolve()
        async with await with_store(args) as store:
            doc, text = await cluster_backup.create(store, to)
    else:
        if not args.vs:
            raise AdminError("give the virtual server to back up (or --cluster)")
        async with await with_store(args) as store:
            with ProgressDisplay(args) as show:
                doc, text = await backup_ops.backup_create(
                    store, args.data, args.vs, storage_groups=args.storage_group,
                    to=args.to, incremental=args.incremental, **show.run_options(args))
    emit(console, args, doc, text)
    return 0


@guarded
async def cmd_backup_list(args: argparse.Namespace, console: Console) -> int:
    doc, text = await backup_ops.backup_list(await _dirs(args, args.vs), args.vs)
    emit(console, args, doc, text)
    return 0


@guarded
async def cmd_backup_verify(args: argparse.Namespace, console: Console) -> int:
    doc, text = await backup_ops.backup_verify(await _dirs(args, None), args.id)
    emit(console, args, doc, text)
    return 0 if doc.get("ok") else 1


@guarded
async def cmd_backup_prune(args: argparse.Namespace, console: Console) -> int:
    doc, text = await backup_ops.backup_prune(await _dirs(args, args.vs), args.keep, args.vs)
    emit(console, args, doc, text)
    return 0


@guarded
async def cmd_restore(args: argparse.Namespace, console: Console) -> int:
    if args.cluster:
        if args.vs or args.database or args.all or args.recovery:
            raise AdminError("restore --cluster takes only --from ID (and --dir DIR)")
        return await _restore_cluster(args, console)
    if not args.vs:
        raise AdminError("give the virtual server to restore (or --cluster)")
    until = parse_time(args.until) if args.until else None
    if until is not None and args.no_roll_forward:
        raise AdminError("--until rolls forward to a time; --no-roll-forward does not roll "
                         "forward at all: give one of them")
    async with await with_store(args) as store:
        with ProgressDisplay(args) as show:
            doc, text = await backup_ops.restore(
                store, args.data, args.vs, from_id=args.from_id, database=args.database,
                all_databases=args.all, roll_forward=not args.no_roll_forward, until=until,
                recovery=args.recovery, to=args.dir, **show.run_options(args))
    emit(console, args, doc, text)
    return 0


async def _restore_cluster(args: argparse.Namespace, console: Console) -> int:
    backups = (args.dir or args.data / "backups").resolve()
    if not args.store:
        args.data.mkdir(parents=True, exist_ok=True)  # a new, empty local store
    async with await open_store(store_url(args)) as store:
        doc, text = await cluster_backup.restore(store, backups, args.from_id)
    emit(console, args, doc, text)
    return 0


@guarded
async def cmd_store_reset(args: argparse.Namespace, console: Console) -> int:
    async with await with_store(args) as store:
        with ProgressDisplay(args) as show:
            doc, text = await backup_ops.store_reset(store, args.data, args.vs, args.database,
                                                     confirm=args.confirm,
                                                     **show.run_options(args))
    emit(console, args, doc, text)
    return 0


@guarded
async def cmd_drop_recovery(args: argparse.Namespace, console: Console) -> int:
    async with await with_store(args) as store:
        with ProgressDisplay(args) as show:
            doc, text = await backup_ops.drop_recovery(store, args.data, args.vs,
                                                       args.storage_group,
                                                       **show.run_options(args))
    emit(console, args, doc, text)
    return 0


@guarded
async def cmd_user_recover(args: argparse.Namespace, console: Console) -> int:
    if not args.from_recovery:
        raise AdminError("say where from: --from-recovery (the recovery storage group; "
                         "restore into it with clustermail restore VS SG/DB --from ID "
                         "--recovery). Retained deleted items: clustermail user "
                         "recover-deleted")
    since = parse_time(args.since) if args.since else None
    async with await with_store(args) as store:
        with ProgressDisplay(args) as show:
            doc, text = await backup_ops.recover_mailbox(
                store, args.data, args.address, folder=args.folder, since=since,
                **show.run_options(args))
    emit(console, args, doc, text)
    return 0


# --------------------------------------------------------------------------- parser


def _timeout(p: argparse.ArgumentParser) -> None:
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help="how long to wait for the virtual server's owner to finish "
                        f"(default {DEFAULT_TIMEOUT:.0f}; it goes on there afterwards)")


def _dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", type=Path, metavar="DIR",
                   help="backup directory (default: the virtual server's backup_path, "
                        "DATA/backups)")


def add_commands(sub: Any, add: Add) -> None:
    """`backup …` and `restore` (``add`` is build_parser's)."""
    g = add_group(sub, "backup", "backups: create, list, verify, prune")
    p = add("create", "back up a virtual server's mail store while it serves (or the "
            "cluster's configuration and directory with --cluster); prints the backup id",
            cmd_backup_create, g)
    p.add_argument("vs", nargs="?")
    p.add_argument("--storage-group", action="append", metavar="SG",
                   help="only this storage group (repeatable; default: all)")
    p.add_argument("--to", "--dir", dest="to", type=Path, metavar="DIR",
                   help="backup directory (default: the virtual server's backup_path, "
                        "DATA/backups)")
    p.add_argument("--incremental", action="store_true",
                   help="only what the transaction logs recorded since the previous backup")
    p.add_argument("--cluster", action="store_true",
                   help="the coordination store's configuration, intents and directory")
    _timeout(p)
    p = add("list", "list backups, full ones with their incrementals (chains)",
            cmd_backup_list, g)
    _dir(p)
    p.add_argument("--vs", help="only this virtual server's backups")
    p = add("verify", "check a backup: checksums, SQLite integrity of every database, the "
            "chain complete", cmd_backup_verify, g)
    p.add_argument("id")
    _dir(p)
    p = add("prune", "keep the N newest chains per virtual server, delete older ones",
            cmd_backup_prune, g)
    p.add_argument("--keep", type=int, required=True, metavar="N")
    _dir(p)
    p.add_argument("--vs", help="only this virtual server's backups")

    p = add("restore", "restore a database (rolled forward to its last change), every "
            "database of a virtual server (--all), or the cluster (--cluster)", cmd_restore)
    p.add_argument("vs", nargs="?")
    p.add_argument("database", nargs="?", metavar="SG/DB")
    p.add_argument("--from", dest="from_id", required=True, metavar="ID",
                   help="backup id (see backup list)")
    p.add_argument("--all", action="store_true",
                   help="every database and the relay queue (the virtual server offline)")
    p.add_argument("--no-roll-forward", action="store_true",
                   help="the backup as it was, without the changes logged since")
    p.add_argument("--until", metavar="TIME",
                   help="roll forward only to this time (ISO 8601, UTC, or Unix seconds)")
    p.add_argument("--recovery", action="store_true",
                   help="into the recovery storage group, beside the live database")
    p.add_argument("--cluster", action="store_true",
                   help="a cluster backup, into an empty coordination store")
    _dir(p)
    _timeout(p)


def add_store_commands(g: Any, add: Add) -> None:
    """`store reset` and `store drop-recovery` (``g``: the store group's actions)."""
    p = add("reset", "replace a lost database with a new EMPTY one (dial tone); its old "
            "file and log are kept beside", cmd_store_reset, g)
    p.add_argument("vs")
    p.add_argument("database", metavar="SG/DB")
    p.add_argument("--confirm", action="store_true", help="yes, an empty database")
    _timeout(p)
    p = add("drop-recovery", "delete the recovery storage group of a virtual server",
            cmd_drop_recovery, g)
    p.add_argument("vs")
    p.add_argument("--storage-group", metavar="SG", help="only this storage group's")
    _timeout(p)


def add_user_commands(g: Any, add: Add) -> None:
    """`user recover` (``g``: the user group's actions)."""
    p = add("recover", "merge a mailbox's messages from the recovery storage group back "
            "into it (what it still has is not copied again)", cmd_user_recover, g)
    p.add_argument("address")
    p.add_argument("--from-recovery", action="store_true",
                   help="from the recovery storage group (restore --recovery first)")
    p.add_argument("--folder", help="only this folder (and its subfolders)")
    p.add_argument("--since", metavar="TIME",
                   help="only messages received at or after this time (ISO 8601, UTC)")
    _timeout(p)
