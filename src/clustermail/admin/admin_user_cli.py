"""`clustermail admin-user add|remove|list|passwd`: the accounts of the API and the
console (roles viewer and operator), and the `admin` account `up` creates."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from clustermail.admin.common import Add, add_group, emit, table, with_store
from clustermail.admin.console_account import DEFAULT_ADMIN as DEFAULT_ADMIN  # re-exported
from clustermail.admin.console_account import console_url as console_url  # re-exported
from clustermail.admin.console_account import seed_admin as seed_admin  # re-exported
from clustermail.admin.errors import AdminError
from clustermail.admin.mail_cli import read_password


async def cmd_add(args: argparse.Namespace, console: Console) -> int:
    from clustermail.admin.api.accounts import AccountError, Accounts, check_name
    from clustermail.admin.api.routing import Role

    try:
        check_name(args.name)
        role = Role.parse(args.role)
    except (AccountError, ValueError) as exc:
        raise AdminError(str(exc)) from exc
    async with await with_store(args) as store:
        accounts = Accounts(store)
        if await accounts.get(args.name) is not None:
            raise AdminError(f"an administrator named {args.name!r} already exists")
        try:
            account = await accounts.add(args.name, read_password(args), role)
        except AccountError as exc:
            raise AdminError(str(exc)) from exc
    emit(console, args, account.public(),
         f"administrator {account.name} added ({account.role.label})")
    return 0


async def cmd_passwd(args: argparse.Namespace, console: Console) -> int:
    from clustermail.admin.api.accounts import AccountError, Accounts

    async with await with_store(args) as store:
        accounts = Accounts(store)
        if await accounts.get(args.name) is None:
            raise AdminError(f"no administrator named {args.name!r}")
        try:
            account = await accounts.set_password(args.name, read_password(args))
        except AccountError as exc:
            raise AdminError(str(exc)) from exc
    emit(console, args, account.public(), f"password of administrator {account.name} changed")
    return 0


async def cmd_remove(args: argparse.Namespace, console: Console) -> int:
    from clustermail.admin.api.accounts import AccountError, Accounts

    async with await with_store(args) as store:
        try:
            await Accounts(store).remove(args.name)
        except AccountError as exc:
            raise AdminError(str(exc)) from exc
    emit(console, args, {"removed": args.name}, f"administrator {args.name} removed")
    return 0


async def cmd_list(args: argparse.Namespace, console: Console) -> int:
    from clustermail.admin.api.accounts import Accounts

    async with await with_store(args) as store:
        accounts = await Accounts(store).list()
    rows: list[dict[str, Any]] = [a.public() for a in accounts]
    emit(console, args, rows, table("administrators", ["name", "role"],
                                    [[str(r["name"]), str(r["role"])] for r in rows]))
    return 0


def add_commands(sub: Any, add: Add) -> None:
    g = add_group(sub, "admin-user",
                  "administrators of the API and the console: add, remove, list, passwd")
    p = add("add", "add an administrator", cmd_add, g)
    p.add_argument("name")
    p.add_argument("--role", default="operator", choices=["viewer", "operator"],
                   help="viewer (read only) or operator (default)")
    _password_option(p)
    p = add("passwd", "set an administrator's password", cmd_passwd, g)
    p.add_argument("name")
    _password_option(p)
    add("remove", "remove an administrator", cmd_remove, g).add_argument("name")
    add("list", "list administrators", cmd_list, g)


def _password_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--password-stdin", action="store_true",
                   help="read the password from the first line of standard input "
                   "(default: ask, in a terminal)")



