"""Administrator accounts of the API and the console, kept in the coordination store.

Under ``/clustermail-admin/`` (outside the cluster's prefix, so a change wakes no
reconcile loop): ``accounts/<name>`` holds ``{"name", "role", "hash", "created"}``
with an argon2id hash (the same hasher as mail passwords, off the event loop);
``session-secret`` holds the key that signs console sessions, made once by
whichever admin service starts first, so a session outlives a failover of the
admin service.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass

from clustermail.admin.api.roles import Role
from clustermail.coord import Compare, Put, Store
from clustermail.mail.directory.passwords import Passwords

PREFIX = "/clustermail-admin/"
ACCOUNTS = PREFIX + "accounts/"
SESSION_SECRET = PREFIX + "session-secret"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
MIN_PASSWORD = 8


class AccountError(ValueError):
    """A bad account name, role or password, or an account that does not exist."""


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    role: Role
    password_hash: str
    created: float = 0.0

    def public(self) -> dict[str, object]:
        return {"name": self.name, "role": self.role.label, "created": self.created}

    def to_store(self) -> bytes:
        return json.dumps({"name": self.name, "role": self.role.label,
                           "hash": self.password_hash, "created": self.created},
                          sort_keys=True).encode()

    @classmethod
    def from_store(cls, value: bytes) -> Account | None:
        """The account, or None when the record is unreadable (it then grants nothing)."""
        try:
            data = json.loads(value)
            return cls(str(data["name"]), Role.parse(str(data["role"])), str(data["hash"]),
                       float(data.get("created", 0.0)))
        except (ValueError, KeyError, TypeError):
            return None


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise AccountError(f"invalid account name {name!r}: use 1 to 63 letters, digits, "
                           "'.', '-' or '_', starting with a letter or digit")
    return name


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password is too short: use at least {MIN_PASSWORD} characters")


class Accounts:
    def __init__(self, store: Store, passwords: Passwords | None = None) -> None:
        self.store = store
        self.passwords = passwords or Passwords()

    async def get(self, name: str) -> Account | None:
        if not _NAME.match(name):
            return None
        kv = await self.store.get(ACCOUNTS + name)
        return Account.from_store(kv.value) if kv is not None else None

    async def list(self) -> list[Account]:
        result = await self.store.range(ACCOUNTS)
        found = (Account.from_store(kv.value) for kv in result.kvs)
        return sorted((a for a in found if a is not None), key=lambda a: a.name)

    async def add(self, name: str, password: str, role: Role) -> Account:
        """Creates an account; AccountError if the name is taken."""
        check_name(name)
        check_password(password)
        account = Account(name, role, await self.passwords.hash(password), time.time())
        result = await self.store.txn([Compare.absent(ACCOUNTS + name)],
                                      [Put(ACCOUNTS + name, account.to_store())])
        if not result.succeeded:
            raise AccountError(f"an administrator named {name!r} already exists")
        return account

    async def set_password(self, name: str, password: str) -> Account:
        check_password(password)
        account = await self.get(name)
        if account is None:
            raise AccountError(f"no administrator named {name!r}")
        changed = Account(name, account.role, await self.passwords.hash(password),
                          account.created)
        await self.store.put(ACCOUNTS + name, changed.to_store())
        return changed

    async def remove(self, name: str) -> None:
        if await self.get(name) is None:
            raise AccountError(f"no administrator named {name!r}")
        await self.store.delete(ACCOUNTS + name)

    async def verify(self, name: str, password: str) -> Account | None:
        """The account when the password matches; takes about as long either way."""
        account = await self.get(name)
        ok = await self.passwords.verify(account.password_hash if account else None, password)
        return account if ok and account is not None else None

    async def session_secret(self) -> bytes:
        """The key that signs sessions: made once, then the same for every admin service."""
        kv = await self.store.get(SESSION_SECRET)
        if kv is None:
            await self.store.txn([Compare.absent(SESSION_SECRET)],
                                 [Put(SESSION_SECRET, secrets.token_hex(32))])
            kv = await self.store.get(SESSION_SECRET)
        assert kv is not None
        return bytes.fromhex(kv.value.decode())
