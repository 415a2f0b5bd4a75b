"""Command-line pieces for backup, restore and recovery, ready to be hooked into the
``clustermail`` parser: argument builders (``add_*_arguments``) and runners that take the
parsed arguments plus where the virtual server's disk is (the caller resolves it from the
cluster and checks that it is safe to touch from here), and return (JSON document, text).

    backup create VS [--storage-group SG ...] [--to DIR] [--incremental]
    backup list [--to DIR] [--vs VS]        backup verify ID [--to DIR]
    backup prune --keep N [--to DIR] [--vs VS]
    restore VS SG/DB --from ID [--no-roll-forward] [--until TIME] [--recovery]
    restore VS --all --from ID [--no-roll-forward] [--until TIME]
    store reset VS SG/DB --confirm          store drop-recovery VS [--storage-group SG]
    user recover ADDRESS --from-recovery [--folder F] [--since TIME]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path
from typing import Any

from clustermail.admin.errors import AdminError
from clustermail.mail import backup
from clustermail.mail.queue.store import queue_path
from clustermail.mail.store import MailboxDatabase

DEFAULT_DIR = "backups"  # under the data directory: clustermail-data/backups/

Result = tuple[dict[str, Any], str]


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
                         "or Unix seconds)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def split_database(value: str) -> tuple[str, str]:
    sg, sep, db = value.partition("/")
    if not sep or not sg or not db:
        raise AdminError(f"expected SG/DB such as SG1/DB1, got {value!r}")
    return sg, db


class TerminalProgress:
    """One progress line on standard error, only on a terminal."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self._last = 0.0

    def __call__(self, what: str, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self._last < 0.1 and done < total):
            return
        self._last = now
        pct = 100 * done // max(total, 1)
        sys.stderr.write(f"\r{what}: {pct:3d}% ({done / 1e6:,.1f} of {total / 1e6:,.1f} MB)\033[K")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _errors(fn: Any) -> Any:
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except backup.BackupError as exc:
            raise AdminError(str(exc)) from None
        except OSError as exc:
            raise AdminError(f"{exc.filename or ''}: {exc.strerror}") from None

    wrapped.__doc__ = fn.__doc__
    return wrapped


# --------------------------------------------------------------------------- arguments


def add_backup_create_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("vs")
    p.add_argument("--storage-group", action="append", metavar="SG",
                   help="only this storage group (repeatable; default: all)")
    p.add_argument("--to", type=Path, metavar="DIR", help="backup directory")
    p.add_argument("--incremental", action="store_true",
                   help="only the log records since the previous backup of the chain")


def add_backup_dir_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--to", type=Path, metavar="DIR", help="backup directory")
    p.add_argument("--vs", help="only this virtual server's backups")


def add_restore_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("vs")
    p.add_argument("database", nargs="?", metavar="SG/DB")
    p.add_argument("--all", action="store_true", help="every database and the relay queue")
    p.add_argument("--from", dest="from_id", required=True, metavar="ID", help="backup id")
    p.add_argument("--to", type=Path, metavar="DIR", help="backup directory")
    p.add_argument("--no-roll-forward", action="store_true",
                   help="restore the backup as it was, without the live log")
    p.add_argument("--until", help="roll forward only to this time (ISO 8601 or Unix)")
    p.add_argument("--recovery", action="store_true",
                   help="into the recovery storage group, beside the live database")


# --------------------------------------------------------------------------- runners


@_errors
def run_backup_create(args: argparse.Namespace, disk: Path, backups: Path,
                      epoch: int | None) -> Result:
    done = backup.create_backup(
        disk / "mail", backups, virtual_server=args.vs, incremental=args.incremental,
        storage_groups=args.storage_group, queue=queue_path(disk), epoch=epoch,
        progress=TerminalProgress())
    stored = sum(f["size"] for f in done.files.values())
    return ({"id": done.id, "kind": done.kind, "path": str(done.path), "bytes": stored,
             "databases": {f"{d.storage_group}/{d.name}": d.txn for d in done.databases}},
            done.id)


@_errors
def run_backup_list(args: argparse.Namespace, backups: Path) -> Result:
    chains = backup.list_chains(backups, args.vs)
    lines = []
    for chain in chains:
        for s in chain.sets:
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(s.created))
            indent = "" if s.kind == "full" else "  └ "
            size = sum(f["size"] for f in s.files.values())
            lines.append(f"{indent}{s.id}  {s.kind}  {when} UTC  {size / 1e6:,.1f} MB")
    return {"chains": [c.to_json() for c in chains]}, "\n".join(lines) or "no backups"


@_errors
def run_backup_verify(args: argparse.Namespace, backups: Path) -> Result:
    report = backup.verify(backups, args.id)
    text = "\n".join([f"backup {args.id}: {'ok' if report.ok else 'DAMAGED'}"]
                     + [f"  {line}" for line in report.checked]
                     + [f"  problem: {p}" for p in report.problems])
    return {"id": args.id, "ok": report.ok, "chain": report.chain,
            "problems": report.problems}, text


@_errors
def run_backup_prune(args: argparse.Namespace, backups: Path) -> Result:
    report = backup.prune(backups, args.keep, args.vs)
    return ({"kept": report.kept, "deleted": report.deleted},
            f"kept {len(report.kept)} set(s), deleted {len(report.deleted)}")


@_errors
def run_restore(args: argparse.Namespace, disk: Path, backups: Path) -> Result:
    until = parse_time(args.until) if args.until else None
    progress = TerminalProgress()
    if args.all == bool(args.database):
        raise AdminError("give either SG/DB or --all")
    if args.all:
        reports = backup.restore_all(disk / "mail", backups, from_id=args.from_id,
                                     roll_forward=not args.no_roll_forward, until=until,
                                     queue=queue_path(disk), progress=progress)
    else:
        sg, db = split_database(args.database)
        reports = [backup.restore_database(
            disk / "mail", backups, sg, db, from_id=args.from_id,
            roll_forward=not args.no_roll_forward, until=until, recovery=args.recovery,
            progress=progress)]
    doc = {"restored": [{"database": f"{r.storage_group}/{r.database}", "path": str(r.path),
                         "txn": r.txn, "rolled_forward": r.rolled_forward,
                         "stopped": r.stopped, "log_restarted": r.log_restarted}
                        for r in reports]}
    return doc, "\n".join(line for r in reports for line in r.lines())


@_errors
def run_store_reset(args: argparse.Namespace, disk: Path) -> Result:
    sg, db = split_database(args.database)
    report = backup.reset_database(disk / "mail", sg, db, confirm=args.confirm)
    return ({"database": f"{sg}/{db}", "kept": [str(p) for p in report.kept]},
            f"{sg}/{db} will be created empty at its next mount; kept: "
            + (", ".join(p.name for p in report.kept) or "nothing"))


@_errors
def run_drop_recovery(args: argparse.Namespace, disk: Path) -> Result:
    gone = backup.drop_recovery(disk / "mail", getattr(args, "storage_group", None))
    return {"dropped": [str(p) for p in gone]}, f"dropped {len(gone)} recovery database(s)"


async def run_user_recover(args: argparse.Namespace, live: MailboxDatabase, disk: Path,
                           storage_group: str, database: str) -> Result:
    """``live`` is the mailbox's mounted database (``mail_local.mounted``)."""
    since = parse_time(args.since) if args.since else None
    path = backup.recovery_path(disk / "mail", storage_group, database)
    try:
        report = await backup.merge_mailbox(live, path, args.address, folder=args.folder,
                                            since=since)
    except backup.BackupError as exc:
        raise AdminError(str(exc)) from None
    return ({"address": args.address, "copied": report.copied, "skipped": report.skipped,
             "folders_created": report.folders_created},
            f"recovered {report.copied} message(s) into {args.address} "
            f"({report.skipped} already there)")
