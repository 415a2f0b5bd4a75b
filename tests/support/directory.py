"""Helpers for tests of the directory and the mail_store resource."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher

from clustermail.coord import Store
from clustermail.mail import keys
from clustermail.mail.directory import Directory
from clustermail.mail.directory.passwords import Passwords

#: Cheap parameters keep the suite fast; production uses RFC 9106's (see passwords.py).
CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
WAIT = 10.0


def directory(store: Store, prefix: str = keys.DIRECTORY) -> Directory:
    return Directory(store, prefix=prefix, passwords=Passwords(CHEAP))


async def wait_provisioned(
    store: Store, vs: str, revision: int, timeout: float = WAIT
) -> dict[str, Any]:
    """Waits (on a watch, bounded) until ``vs``'s mail_store says it applied the directory
    at ``revision`` or later; returns its status record."""
    key = f"{keys.DIRECTORY}provisioned/{vs}"
    async with asyncio.timeout(timeout):
        current = await store.range(key)
        for kv in current.kvs:
            record = json.loads(kv.value)
            if record["revision"] >= revision:
                return dict(record)
        async for ev in store.watch(key, current.revision + 1):
            if ev.value and (record := json.loads(ev.value))["revision"] >= revision:
                return dict(record)
    raise AssertionError("unreachable: the watch ended")


async def last_change(store: Store) -> int:
    """The revision of the directory's latest change (status records excluded)."""
    result = await store.range(keys.DIRECTORY)
    return max((kv.mod_revision for kv in result.kvs if "/provisioned/" not in kv.key),
               default=0)


def db_mailboxes(path: Path) -> list[str]:
    """Mailbox names in a database file, read with a plain SQLite connection."""
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT name FROM mailbox ORDER BY name")]
    finally:
        conn.close()


def db_epoch(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT epoch FROM mount").fetchone()[0])
    finally:
        conn.close()
