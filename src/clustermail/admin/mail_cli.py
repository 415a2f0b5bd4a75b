"""The mail commands of `clustermail`: domain, user, alias, group, store.

They write the recipient directory and the storage plans in the coordination store;
running virtual servers pick the changes up through their mail_store resource. Only
`user move`, `user recover-deleted`, `user purge` and `store check` touch databases,
from this machine (see :mod:`clustermail.admin.mail_local`). Every command takes
``--json``.
"""

from __future__ import annotations

import argparse
import functools
import getpass
import re
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from clustermail.admin import backup_cli, backup_ops
from clustermail.admin.common import Add, Handler, add_group, emit, table, with_store
from clustermail.admin.errors import AdminError

if TYPE_CHECKING:
    from clustermail.coord import Store
    from clustermail.mail.directory import Directory
    from clustermail.mail.store import QuotaLimits

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4,
          "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4}


# --------------------------------------------------------------------------- plumbing


def guarded(handler: Handler) -> Handler:
    """Translates the mail layer's errors into the one-line AdminError."""

    @functools.wraps(handler)
    async def run(args: argparse.Namespace, console: Console) -> int:
        from clustermail.cluster.resources.base import ResourceError
        from clustermail.mail.directory.model import DirectoryError
        from clustermail.mail.store import StoreError

        try:
            return await handler(args, console)
        except (DirectoryError, StoreError, ResourceError, ValueError) as exc:
            raise AdminError(str(exc)) from exc

    return run


async def open_directory(args: argparse.Namespace) -> tuple[Store, Directory]:
    from clustermail.mail.directory import Directory

    store = await with_store(args)
    return store, Directory(store)


def parse_size(text: str) -> int | None:
    """"100MB", "2GiB", "500k", "1048576" → bytes; "unlimited" / "none" → None."""
    if text.strip().lower() in ("unlimited", "none"):
        return None
    m = _SIZE.match(text)
    if not m:
        raise AdminError(f"invalid size {text!r}: use a number of bytes with an optional "
                         "unit (k, M, G, KiB, MiB, GiB), or 'unlimited'")
    unit = (m.group(2) or "").lower().rstrip("b")
    return int(m.group(1)) * _UNITS[unit]


def parse_database(text: str | None) -> tuple[str, str]:
    if text is None:
        return "SG1", "DB1"
    group, slash, db = text.partition("/")
    if not slash or not group or not db:
        raise AdminError(f"--database {text!r}: expected STORAGE_GROUP/DATABASE, e.g. SG1/DB1")
    return group, db


def read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise AdminError("no password on standard input")
        return password
    if not sys.stdin.isatty():
        raise AdminError("no password given: use --password-stdin and write it to standard "
                         "input, or run in a terminal to be asked")
    password = getpass.getpass("password: ")
    if password != getpass.getpass("password again: "):
        raise AdminError("the passwords differ")
    return password


async def check_vs(store: Store, vs: str) -> Any:
    """The cluster view, after checking ``vs`` is a virtual server with a mail store."""
    from clustermail.admin import intents

    view = await intents.current_view(store)
    intents.check_vs(view, vs)
    resources = view.config["virtual_servers"][vs].get("resources", {}) if view.config else {}
    if not any(r.get("type") == "mail_store" for r in resources.values()):
        raise AdminError(f"virtual server {vs} has no mail_store resource: it cannot hold "
                         "mailboxes (add one to the configuration)")
    return view


async def _known_vs(store: Store, vs: str | None) -> None:
    """A filter on a virtual server that does not exist is a typo, not an empty list."""
    if vs is not None:
        from clustermail.admin import intents

        intents.check_vs(await intents.current_view(store), vs)


def quota_text(q: QuotaLimits | None) -> str:
    if q is None:
        return "database default"
    return "/".join("-" if v is None else str(v)
                    for v in (q.warning, q.prohibit_send, q.prohibit_send_receive))


# --------------------------------------------------------------------------- domains


@guarded
async def cmd_domain_add(args: argparse.Namespace, console: Console) -> int:
    store, d = await open_directory(args)
    try:
        entry = await d.add_domain(args.domain, catch_all=args.catch_all)
    finally:
        await store.close()
    emit(console, args, {"domain": entry.domain, "catch_all": entry.catch_all},
         f"domain {entry.domain} added")
    return 0


@guarded
async def cmd_domain_list(args: argparse.Namespace, console: Console) -> int:
    store, d = await open_directory(args)
    try:
        domains = await d.list_domains()
        boxes = await d.list_mailboxes()
    finally:
        await store.close()
    counts = {x.domain: 0 for x in domains}
    for box in boxes:
        domain = box.address.rpartition("@")[2]
        counts[domain] = counts.get(domain, 0) + 1
    data: list[dict[str, Any]] = [
        {"domain": x.domain, "catch_all": x.catch_all, "mailboxes": counts[x.domain]}
        for x in domains
    ]
    emit(console, args, data, table("domains", ["domain", "mailboxes", "catch-all"],
         [[x["domain"], str(x["mailboxes"]), x["catch_all"] or "-"] for x in data]))
    return 0


@guarded
async def cmd_domain_remove(args: argparse.Namespace, console: Console) -> int:
    store, d = await open_directory(args)
    try:
        await d.remove_domain(args.domain)
    finally:
        await store.close()
    emit(console, args, {"removed": args.domain.lower()}, f"domain {args.domain.lower()} removed")
    return 0


@guarded
async def cmd_domain_catch_all(args: argparse.Namespace, console: Console) -> int:
    if (args.address is None) == (not args.none):
        raise AdminError("give the catch-all ADDRESS, or --none to clear it")
    store, d = await open_directory(args)
    try:
        entry = await d.set_catch_all(args.domain, args.address)
    finally:
        await store.close()
    emit(console, args, {"domain": entry.domain, "catch_all": entry.catch_all},
         f"catch-all of {entry.domain}: {entry.catch_all or 'none'}")
    return 0


# --------------------------------------------------------------------------- users


@guarded
async def cmd_user_add(args: argparse.Namespace, console: Console) -> int:
    from clustermail.mail.directory import UnknownDomainError
    from clustermail.mail.directory.addresses import parse_address

    addr = parse_address(args.address)
    group, db = parse_database(args.database)
    store, d = await open_directory(args)
    try:
        # Mistakes are reported before a password is asked for.
        await check_vs(store, args.server)
        await d.check_database(args.server, group, db)
        if not await d.is_local_domain(addr.domain):
            raise UnknownDomainError(addr.domain)
        if (kind := await d.kind_of(args.address)) is not None:
            raise AdminError(f"{addr} is already {'an' if kind == 'alias' else 'a'} {kind}")
        password = read_password(args)
        entry = await d.add_mailbox(args.address, password=password, server=args.server,
                                    display_name=args.name or "", storage_group=group,
                                    database=db)
    finally:
        await store.close()
    emit(console, args, entry.public(),
         f"mailbox {entry.address} added on {entry.server} ({group}/{db}); "
         f"{entry.server}'s mail_store creates it in the database")
    return 0


@guarded
async def cmd_user_list(args: argparse.Namespace, console: Console) -> int:
    store, d = await open_directory(args)
    try:
        boxes = await d.list_mailboxes(args.domain, server=args.server)
        await _known_vs(store, args.server)  # after the name's own check
    finally:
        await store.close()
    emit(console, args, [b.public() for b in boxes], table(
        "mailboxes", ["address", "name", "home", "quota (warn/send/receive)", "enabled"],
        [[b.address, b.display_name, f"{b.server} {b.storage_group}/{b.database}",
          quota_text(b.quota), "yes" if b.enabled else "no"] for b in boxes]))
    return 0


async def _existing(d: Directory, address: str) -> Any:
    entry = await d.mailbox(address)
    if entry is None:
        raise AdminError(f"no mailbox {address!r}")
    return entry


@guarded
async def cmd_user_show(args: argparse.Namespace, console: Console) -> int:
    from clustermail.mail.directory.addresses import parse_address

    store, d = await open_directory(args)
    try:
        entry = await _existing(d, args.address)
        key = parse_address(entry.address).key
        aliases = [a.address for a in await d.list_aliases()
                   if parse_address(a.target).key == key]
        groups = [g.address for g in await d.list_groups()
                  if key in {parse_address(m).key for m in g.members}]
    finally:
        await store.close()
    data = {**entry.public(), "aliases": aliases, "groups": groups}
    lines = [f"{k}: {v}" for k, v in [
        ("address", entry.address), ("display name", entry.display_name or "-"),
        ("mailbox id", entry.mailbox_id),
        ("home", f"{entry.server} {entry.storage_group}/{entry.database}"),
        ("quota (warn/send/receive)", quota_text(entry.quota)),
        ("enabled", "yes" if entry.enabled else "no"),
        ("aliases", ", ".join(aliases) or "-"), ("groups", ", ".join(groups) or "-"),
    ]]
    emit(console, args, data, "\n".join(lines))
    return 0


@guarded
async def cmd_user_remove(args: argparse.Namespace, console: Console) -> int:
    store, d = await open_directory(args)
    try:
        entry = await d.remove_mailbox(args.address)
    finally:
        await store.close()
    emit(console, args, {"removed": entry.address, "mailbox_id": entry.mailbox_id},
         f"mailbox {entry.address} removed from the directory (with its aliases and group "
         f"memberships); its data stays in {entry.server} {entry.storage_group}/"
         f"{entry.database} as disconnected mailbox {entry.mailbox_id}: `user reconnect "
         f"ADDRESS --mailbox {entry.mailbox_id}` attaches it again, `user purge --mailbox "
         f"{entry.mailbox_id} --confirm` deletes it")
    return 0


@guarded
async def cmd_user_passwd(args: argparse.Namespace, console: Console) -> int:
    store, d = await open_directory(args)
    try:
        await _existing(d, args.address)
        entry = await d.set_password(args.address, read_password(args))
    finally:
        await store.close()
    emit(console, args, {"address": entry.address, "password": "changed"},
         f"password of {entry.address} changed")
    return 0


@guarded
async def cmd_user_enable(args: argparse.Namespace, console: Console) -> int:
    enabled = args.sub == "enable"
    store, d = await open_directory(args)
    try:
        entry = await d.set_enabled(args.address, enabled)
    finally:
        await store.close()
    emit(console, args, entry.public(), f"{entry.address} {args.sub}d")
    return 0


@guarded
async def cmd_user_quota(args: argparse.Namespace, console: Console) -> int:
    from clustermail.mail.store import QuotaLimits

    limits = [args.warning, args.prohibit_send, args.prohibit_send_receive]
    if args.default == any(v is not None for v in limits):
        raise AdminError("give --default, or one or more of --warning, --prohibit-send, "
                         "--prohibit-send-receive")
    quota = None if args.default else QuotaLimits(
        *(None if v is None else parse_size(v) for v in limits))
    store, d = await open_directory(args)
    try:
        entry = await d.set_quota(args.address, quota)
    finally:
        await store.close()
    emit(console, args, entry.public(), f"quota of {entry.address}: {quota_text(entry.quota)}")
    return 0


@guarded
async def cmd_user_move(args: argparse.Namespace, console: Console) -> int:
    from clustermail.admin.mail_move import move_mailbox

    store, d = await open_directory(args)
    try:
        entry = await _existing(d, args.address)
        view = await check_vs(store, args.server)
        group, db = parse_database(args.database)
        started = time.monotonic()
        report = await move_mailbox(d, view, args.data, entry, args.server, group, db)
    finally:
        await store.close()
    data = {**report.to_dict(), "seconds": round(time.monotonic() - started, 3)}
    text = (f"{report.address} moved from {data['from']} to {data['to']}: {report.messages} "
            f"messages ({report.bytes} bytes) in {data['seconds']} s. UIDVALIDITY changed "
            "(a new database assigns its own), so IMAP clients resynchronise it once.")
    emit(console, args, data, "\n".join([text, *report.notes]))
    return 0


@guarded
async def cmd_user_recover(args: argparse.Namespace, console: Console) -> int:
    from clustermail.admin.mail_local import locate, mounted

    since = _parse_time(args.since) if args.since else None
    store, d = await open_directory(args)
    try:
        entry = await _existing(d, args.address)
        view = await check_vs(store, entry.server)
        loc = locate(view, entry.server, args.data)
        with mounted(loc, entry.storage_group, entry.database) as db:
            recovered = await db.recover_deleted(entry.mailbox_id, since)
    finally:
        await store.close()
    data = {"address": entry.address,
            "recovered": [{"folder": r.folder, "uidvalidity": r.uidvalidity, "uid": r.uid}
                          for r in recovered]}
    folders = sorted({r.folder for r in recovered})
    emit(console, args, data, f"recovered {len(recovered)} deleted message(s) of "
         f"{entry.address}" + (f" into {', '.join(folders)}" if folders else ""))
    return 0


@guarded
async def cmd_user_disconnected(args: argparse.Namespace, console: Console) -> int:
    store, d = await open_directory(args)
    try:
        found = await d.list_disconnected(args.server)
        await _known_vs(store, args.server)
    finally:
        await store.close()
    shown = table("disconnected mailboxes", [], [])
    shown.add_column("mailbox id", no_wrap=True)  # whole, to be copied into a command
    for col in ("last address", "name", "home", "disconnected"):
        shown.add_column(col)
    for x in found:
        shown.add_row(x.mailbox_id, x.address or "-", x.display_name,
                      f"{x.server} {x.storage_group}/{x.database}",
                      _when(x.disconnected_at) + (" (being purged)" if x.purging else ""))
    emit(console, args, [x.public() for x in found], shown)
    return 0


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


@guarded
async def cmd_user_reconnect(args: argparse.Namespace, console: Console) -> int:
    from clustermail.mail.directory import UnknownDomainError
    from clustermail.mail.directory.addresses import parse_address

    addr = parse_address(args.address)
    store, d = await open_directory(args)
    try:
        # Mistakes are reported before a password is asked for.
        record = await d.disconnected_mailbox(args.mailbox)
        if record.purging:
            raise AdminError(f"mailbox {args.mailbox} is being purged; it cannot be reconnected")
        kind = await d.kind_of(args.address)
        if kind not in (None, "mailbox"):
            raise AdminError(f"{addr} is {'an' if kind == 'alias' else 'a'} {kind}: reconnect "
                             "a mailbox to a mailbox's address or to a free one")
        if kind is None and not await d.is_local_domain(addr.domain):
            raise UnknownDomainError(addr.domain)
        password = read_password(args) if kind is None else None
        entry, swapped = await d.reconnect_mailbox(args.address, args.mailbox,
                                                   password=password, display_name=args.name)
    finally:
        await store.close()
    home = f"{entry.server} {entry.storage_group}/{entry.database}"
    text = (f"mailbox {entry.mailbox_id} reconnected to {entry.address} ({home})"
            if swapped is None else
            f"mailbox {entry.mailbox_id} reconnected to {entry.address} ({home}); the mailbox "
            f"it had, {swapped.mailbox_id}, is disconnected now (`user disconnected` lists it)")
    emit(console, args, {**entry.public(),
                         "disconnected": None if swapped is None else swapped.mailbox_id}, text)
    return 0


@guarded
async def cmd_user_purge(args: argparse.Namespace, console: Console) -> int:
    from clustermail.admin import intents
    from clustermail.admin.mail_purge import purge_mailbox

    store, d = await open_directory(args)
    try:
        record = await d.disconnected_mailbox(args.mailbox)
        if not args.confirm:
            raise AdminError(
                f"purging deletes mailbox {record.mailbox_id} (last address "
                f"{record.address or '-'}, on {record.server} {record.storage_group}/"
                f"{record.database}) and all its mail for good: add --confirm")
        view = await intents.current_view(store)
        report = await purge_mailbox(d, view, args.data, args.mailbox)
    finally:
        await store.close()
    what = (f"{report.messages} message(s), {report.bytes} bytes" if report.found
            else "its database held nothing of it any more")
    emit(console, args, report.to_dict(),
         f"mailbox {report.mailbox_id} ({report.address or 'no address'}) purged from "
         f"{report.home[0]} {report.home[1]}/{report.home[2]}: {what}")
    return 0


def _parse_time(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise AdminError(f"--since {text!r}: expected an ISO date/time (2026-05-01 or "
                         "2026-05-01T12:00) or a Unix time") from None


# --------------------------------------------------------------------------- aliases, groups


@guarded
async def cmd_alias_add(args: argparse.Namespace, console: Console) -> int:
    store, d = await open_directory(args)
    try:
        entry = await d.add_alias(args.alias, args.mailbox)
    finally:
        await store.close()
    emit(console, args, {"alias": entry.address, "mailbox": entry.target},
         f"alias {entry.address} → {entry.target}")
    return 0


@guarded
async def cmd_alias_list(args: argparse.Namespace, console: Console) -> int:
    store, d = await open_directory(args)
    try:
        aliases = await d.list_aliases(args.domain)
    finally:
        await store.close()
    emit(console, args, [{"alias": a.address, "mailbox": a.target} for a in aliases],
         table("aliases", ["alias", "mailbox"], [[a.address, a.target] for a in aliases]))
    return 0


@guarded
async def cmd_alias_remove(args: argparse.Namespace, console: Console) -> int:
    store, d = await open_directory(args)
    try:
        entry = await d.remove_alias(args.alias)
    finally:
        await store.close()
    emit(console, args, {"removed": entry.address}, f"alias {entry.address} removed")
    return 0


@guarded
async def cmd_group_member(args: argparse.Namespace, console: Console) -> int:
    store, d = await open_directory(args)
    try:
        if args.sub == "add-member":
            entry = await d.add_group_member(args.group, args.member)
            data: dict[str, Any] = {"group": entry.address, "members": list(entry.members)}
            text = f"{args.member} added to {entry.address} ({len(entry.members)} members)"
        else:
            left = await d.remove_group_member(args.group, args.member)
            data = {"group": args.group, "members": list(left.members) if left else []}
            text = (f"{args.member} removed from {args.group}"
                    + ("" if left else "; the group had no members left and was removed"))
    finally:
        await store.close()
    emit(console, args, data, text)
    return 0


@guarded
async def cmd_group_list(args: argparse.Namespace, console: Console) -> int:
    store, d = await open_directory(args)
    try:
        groups = await d.list_groups(args.domain)
    finally:
        await store.close()
    emit(console, args, [{"group": g.address, "members": list(g.members)} for g in groups],
         table("groups", ["group", "members"], [[g.address, ", ".join(g.members)]
                                                for g in groups]))
    return 0


# --------------------------------------------------------------------------- store


@guarded
async def cmd_store_add(args: argparse.Namespace, console: Console) -> int:
    store, d = await open_directory(args)
    try:
        await check_vs(store, args.vs)
        if args.sub == "add-group":
            await d.add_storage_group(args.vs, args.storage_group)
            what = f"storage group {args.storage_group}"
        else:
            await d.add_database(args.vs, args.storage_group, args.database)
            what = f"database {args.storage_group}/{args.database}"
    finally:
        await store.close()
    emit(console, args, {"vs": args.vs, "added": what},
         f"{what} planned on {args.vs}: its mail_store creates it (at once if online)")
    return 0


@guarded
async def cmd_store_list(args: argparse.Namespace, console: Console) -> int:
    from clustermail.admin.mail_local import locate

    store, d = await open_directory(args)
    try:
        view = await check_vs(store, args.vs)
        layout = await d.storage_layout(args.vs)
        boxes = await d.list_mailboxes(server=args.vs)
    finally:
        await store.close()
    loc = locate(view, args.vs, args.data)
    rows: list[dict[str, Any]] = []
    for g in layout.storage_groups:
        for db in g.databases:
            path = loc.database_path(g.name, db)
            homed = sum(1 for b in boxes if (b.storage_group, b.database) == (g.name, db))
            rows.append({"storage_group": g.name, "database": db, "mailboxes": homed,
                         "path": str(path), "created": path.exists(),
                         "bytes": _size(path) if path.exists() else None,
                         "log_bytes": backup_ops.log_bytes(loc.root, g.name, db)})
    emit(console, args, {"vs": args.vs, "databases": rows}, table(
        f"mail store of {args.vs}", ["storage group", "database", "mailboxes", "size", "log",
                                     "file"],
        [[r["storage_group"], r["database"], str(r["mailboxes"]), _mb(r["bytes"]),
          _mb(r["log_bytes"]),
          r["path"] if r["created"] else f"{r['path']} (not created yet)"] for r in rows]))
    return 0


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def _mb(size: int | None) -> str:
    return "-" if size is None else f"{size / 1e6:,.1f} MB"


@guarded
async def cmd_store_check(args: argparse.Namespace, console: Console) -> int:
    from clustermail.admin.mail_local import locate, mounted, require_here
    from clustermail.mail.store import check

    store, d = await open_directory(args)
    try:
        view = await check_vs(store, args.vs)
        layout = await d.storage_layout(args.vs)
    finally:
        await store.close()
    loc = locate(view, args.vs, args.data)
    require_here(loc)
    results: list[dict[str, Any]] = []
    lines: list[str] = []
    for g in layout.storage_groups:
        for name in g.databases:
            path = loc.database_path(g.name, name)
            if not path.exists():
                lines.append(f"{g.name}/{name}: not created yet")
                continue
            if args.repair:
                with mounted(loc, g.name, name) as db:
                    report = check(db, repair=True)
            else:
                report = check(path)  # read only, beside a running owner
            lines += report.lines()
            results.append({"database": f"{g.name}/{name}", "path": str(path), "ok": report.ok,
                            "integrity": report.integrity, "problems": report.problems,
                            "repairs": report.repairs})
    emit(console, args, {"vs": args.vs, "databases": results}, "\n".join(lines))
    unrepaired = [r for r in results if r["problems"] and not r["repairs"]]
    return 1 if unrepaired else 0


# --------------------------------------------------------------------------- parser


def add_mail_commands(sub: Any, add: Add) -> None:
    """Adds the mail commands to `clustermail`'s subcommands; ``add`` is build_parser's."""
    g = add_group(sub, "domain", "mail domains: add, list, remove, catch-all")
    p = add("add", "add a local mail domain", cmd_domain_add, g)
    p.add_argument("domain")
    p.add_argument("--catch-all", metavar="ADDRESS",
                   help="mailbox, alias or group that gets mail for unknown addresses")
    add("list", "list the local domains", cmd_domain_list, g)
    p = add("remove", "remove a domain that holds no recipients", cmd_domain_remove, g)
    p.add_argument("domain")
    p = add("catch-all", "set or clear the catch-all of a domain", cmd_domain_catch_all, g)
    p.add_argument("domain")
    p.add_argument("address", nargs="?")
    p.add_argument("--none", action="store_true", help="clear the catch-all")

    g = add_group(sub, "user", "mailboxes: add, list, show, remove, passwd, move, "
                  "recover-deleted, recover, disconnected, reconnect, purge…")
    p = add("add", "add a mailbox homed on a virtual server", cmd_user_add, g)
    p.add_argument("address")
    p.add_argument("--server", required=True, metavar="VS", help="its virtual server")
    p.add_argument("--name", help="display name")
    p.add_argument("--database", metavar="SG/DB", help="its database (default SG1/DB1)")
    _password_option(p)
    p = add("list", "list mailboxes", cmd_user_list, g)
    p.add_argument("--domain")
    p.add_argument("--server", metavar="VS")
    for action, text, handler in [
        ("show", "show a mailbox, its aliases and groups", cmd_user_show),
        ("remove", "remove a mailbox from the directory (its data stays)", cmd_user_remove),
        ("enable", "allow a mailbox to receive mail and log in", cmd_user_enable),
        ("disable", "stop a mailbox receiving mail and logging in", cmd_user_enable),
    ]:
        add(action, text, handler, g).add_argument("address")
    p = add("passwd", "set a mailbox's password", cmd_user_passwd, g)
    p.add_argument("address")
    _password_option(p)
    p = add("quota", "override a mailbox's quota (sizes like 500MB, 2GiB)", cmd_user_quota, g)
    p.add_argument("address")
    p.add_argument("--warning")
    p.add_argument("--prohibit-send")
    p.add_argument("--prohibit-send-receive")
    p.add_argument("--default", action="store_true", help="use the database's quota again")
    p = add("move", "move a mailbox to another virtual server or database (copies its mail; "
            "run it on the machine of both virtual servers)", cmd_user_move, g)
    p.add_argument("address")
    p.add_argument("--server", required=True, metavar="VS", help="the new virtual server")
    p.add_argument("--database", metavar="SG/DB", help="the new database (default SG1/DB1)")
    p = add("recover-deleted", "restore a mailbox's retained deleted items", cmd_user_recover, g)
    p.add_argument("address")
    p.add_argument("--since", help="only items deleted at or after this time (ISO or Unix)")
    p = add("disconnected", "list disconnected mailboxes (kept after `user remove`)",
            cmd_user_disconnected, g)
    p.add_argument("--server", metavar="VS")
    p = add("reconnect", "attach a disconnected mailbox to an address (a mailbox's, whose "
            "own mailbox is disconnected in its place, or a free one)", cmd_user_reconnect, g)
    p.add_argument("address")
    p.add_argument("--mailbox", required=True, metavar="ID", help="the disconnected mailbox")
    p.add_argument("--name", help="display name (default: the address's, or the mailbox's last)")
    _password_option(p, " (asked only for a free address)")
    p = add("purge", "delete a disconnected mailbox and its mail for good (on its machine)",
            cmd_user_purge, g)
    p.add_argument("--mailbox", required=True, metavar="ID", help="the disconnected mailbox")
    p.add_argument("--confirm", action="store_true", help="yes, delete it")
    backup_cli.add_user_commands(g, add)

    g = add_group(sub, "alias", "aliases: add, list, remove")
    p = add("add", "add an alias of a mailbox", cmd_alias_add, g)
    p.add_argument("alias")
    p.add_argument("mailbox")
    add("list", "list aliases", cmd_alias_list, g).add_argument("--domain")
    add("remove", "remove an alias", cmd_alias_remove, g).add_argument("alias")

    g = add_group(sub, "group", "distribution groups: add-member, remove-member, list")
    for action, text in [("add-member", "add a member (creates the group on its first)"),
                         ("remove-member", "remove a member (the last takes the group along)")]:
        p = add(action, text, cmd_group_member, g)
        p.add_argument("group")
        p.add_argument("member")
    add("list", "list groups", cmd_group_list, g).add_argument("--domain")

    g = add_group(sub, "store",
                  "storage groups and databases: add-group, add-database, list, check, reset, "
                  "drop-recovery")
    p = add("add-group", "plan a storage group on a virtual server", cmd_store_add, g)
    p.add_argument("vs")
    p.add_argument("storage_group")
    p = add("add-database", "plan a database in a storage group", cmd_store_add, g)
    p.add_argument("vs")
    p.add_argument("storage_group")
    p.add_argument("database")
    add("list", "list a virtual server's databases", cmd_store_list, g).add_argument("vs")
    p = add("check", "check a virtual server's databases (on its machine)", cmd_store_check, g)
    p.add_argument("vs")
    p.add_argument("--repair", action="store_true", help="fix what can be fixed")
    backup_cli.add_store_commands(g, add)


def _password_option(p: argparse.ArgumentParser, when: str = "") -> None:
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of standard input "
                   f"(default: ask, in a terminal){when}")
