"""The recipient directory's records, their JSON form, its keys and its errors. Pure.

Layout under the directory prefix (``/clustermail-directory/`` by default)::

    domains/<domain>        {"domain", "catch_all"}
    mailboxes/<key>         {"address", "mailbox_id", "display_name", "server",
                             "storage_group", "database", "password_hash", "quota",
                             "enabled"}
    disconnected/<id>       {"mailbox_id", "address", "display_name", "server",
                             "storage_group", "database", "disconnected_at", "purging"}
    aliases/<key>           {"address", "target"}
    groups/<key>            {"address", "members"}
    storage/<vs>            the virtual server's planned layout (storage.json format)
    provisioned/<vs>        status written by the vs's mail_store resource

``<key>`` is :attr:`clustermail.mail.directory.addresses.Address.key` (local part lowercased),
so one recipient has one key whatever its spelling; the record keeps the spelling.

A mailbox's data is named by its ``mailbox_id`` in its database, not by its address, so
an address removed and added again gets a new, empty mailbox. Mailboxes created before
identities existed have none in their record: their id is their address (what their
data is named by), so they keep their mail. A mailbox whose directory entry was removed
is *disconnected*: its data stays in its database, and ``disconnected/<id>`` says where,
until it is reconnected to an address or purged.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from clustermail.coord.api import KeyValue
from clustermail.mail.directory.addresses import parse_address
from clustermail.mail.store.quota import QuotaLimits

DOMAINS = "domains/"
MAILBOXES = "mailboxes/"
DISCONNECTED = "disconnected/"
ALIASES = "aliases/"
GROUPS = "groups/"
STORAGE = "storage/"
PROVISIONED = "provisioned/"
RECIPIENT_KINDS = (MAILBOXES, ALIASES, GROUPS)
_KIND_NAMES = {MAILBOXES: "mailbox", ALIASES: "alias", GROUPS: "group"}

_SERVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
MAX_PASSWORD_CHARS = 1024
MAX_DISPLAY_NAME_CHARS = 256
#: A mailbox id: a new one is 32 hex digits; an older mailbox's is its address.
MAX_MAILBOX_ID_CHARS = 320


# --------------------------------------------------------------------------- errors


class DirectoryError(Exception):
    """Base of the directory's errors; the text is for the user."""


class InvalidRequestError(DirectoryError, ValueError):
    """A value that cannot be used (bad name, empty password, unknown database…)."""


class UnknownDomainError(DirectoryError):
    def __init__(self, domain: str) -> None:
        super().__init__(
            f"domain {domain!r} is not a local domain: add it first (clustermail domain add)"
        )
        self.domain = domain


class AddressTakenError(DirectoryError):
    """The address already names a mailbox, an alias or a group (or the domain exists)."""


class NotFoundError(DirectoryError):
    """No such mailbox, alias, group or domain."""


class InUseError(DirectoryError):
    """A domain that still holds recipients, or a similar dependency."""


class ConflictError(DirectoryError):
    """The record changed under a compare-and-swap more often than the retry budget."""


def kind_name(kind: str) -> str:
    return _KIND_NAMES[kind]


def a_kind(kind: str) -> str:
    """"a mailbox", "an alias", "a group"."""
    name = _KIND_NAMES[kind]
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class DomainEntry:
    domain: str
    catch_all: str | None = None

    def to_json(self) -> str:
        return json.dumps({"domain": self.domain, "catch_all": self.catch_all}, sort_keys=True)

    @classmethod
    def from_json(cls, raw: bytes) -> DomainEntry:
        d = json.loads(raw)
        return cls(d["domain"], d.get("catch_all"))


def new_mailbox_id() -> str:
    """A new mailbox's identity: random, never an address, never reused."""
    return uuid.uuid4().hex


def check_mailbox_id(mailbox_id: str) -> str:
    if (not isinstance(mailbox_id, str) or not mailbox_id
            or len(mailbox_id) > MAX_MAILBOX_ID_CHARS
            or any(ord(c) < 32 or ord(c) == 127 for c in mailbox_id)):
        raise InvalidRequestError(
            f"invalid mailbox id {mailbox_id[:40]!r}: 1 to {MAX_MAILBOX_ID_CHARS} characters, "
            "no control characters (see `clustermail user disconnected`)"
        )
    return mailbox_id


@dataclass(frozen=True, slots=True)
class MailboxEntry:
    """A mailbox as the directory knows it: the address (domain lowercased, local part
    as created), and ``mailbox_id``, the name of its data in its database (the address
    itself for a mailbox created before mailboxes had ids)."""

    address: str
    display_name: str
    server: str
    storage_group: str
    database: str
    password_hash: str = field(repr=False)
    #: Overrides of the database's quota; None uses the database default.
    quota: QuotaLimits | None = None
    enabled: bool = True
    mailbox_id: str = ""  # "": the address (a mailbox older than identities)

    def __post_init__(self) -> None:
        if not self.mailbox_id:
            object.__setattr__(self, "mailbox_id", self.address)

    @property
    def home(self) -> tuple[str, str, str]:
        return (self.server, self.storage_group, self.database)

    def to_json(self) -> str:
        quota = None
        if self.quota is not None:
            q = self.quota
            quota = {
                "warning": q.warning,
                "prohibit_send": q.prohibit_send,
                "prohibit_send_receive": q.prohibit_send_receive,
            }
        return json.dumps(
            {
                "address": self.address,
                "mailbox_id": self.mailbox_id,
                "display_name": self.display_name,
                "server": self.server,
                "storage_group": self.storage_group,
                "database": self.database,
                "password_hash": self.password_hash,
                "quota": quota,
                "enabled": self.enabled,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, raw: bytes) -> MailboxEntry:
        d: dict[str, Any] = json.loads(raw)
        q = d.get("quota")
        return cls(
            address=d["address"],
            display_name=d.get("display_name", ""),
            server=d["server"],
            storage_group=d["storage_group"],
            database=d["database"],
            password_hash=d["password_hash"],
            quota=None if q is None else QuotaLimits(**q),
            enabled=bool(d.get("enabled", True)),
            mailbox_id=str(d.get("mailbox_id") or d["address"]),
        )

    def public(self) -> dict[str, Any]:
        """For display and JSON output: everything but the password hash."""
        q = self.quota
        return {
            "address": self.address,
            "mailbox_id": self.mailbox_id,
            "display_name": self.display_name,
            "server": self.server,
            "storage_group": self.storage_group,
            "database": self.database,
            "quota": None
            if q is None
            else {
                "warning": q.warning,
                "prohibit_send": q.prohibit_send,
                "prohibit_send_receive": q.prohibit_send_receive,
            },
            "enabled": self.enabled,
        }


@dataclass(frozen=True, slots=True)
class DisconnectedEntry:
    """A mailbox no address points to: its data stays in its database until it is
    reconnected (`user reconnect`) or purged (`user purge`). ``address`` and
    ``display_name`` are the ones it had last; ``purging`` is set while a purge runs,
    so it cannot be reconnected meanwhile."""

    mailbox_id: str
    address: str
    display_name: str
    server: str
    storage_group: str
    database: str
    disconnected_at: float
    purging: bool = False

    @property
    def home(self) -> tuple[str, str, str]:
        return (self.server, self.storage_group, self.database)

    @classmethod
    def of(cls, entry: MailboxEntry, now: float) -> DisconnectedEntry:
        return cls(entry.mailbox_id, entry.address, entry.display_name, entry.server,
                   entry.storage_group, entry.database, now)

    def to_json(self) -> str:
        return json.dumps(self.public(), sort_keys=True)

    @classmethod
    def from_json(cls, raw: bytes) -> DisconnectedEntry:
        d: dict[str, Any] = json.loads(raw)
        return cls(
            mailbox_id=d["mailbox_id"], address=d.get("address", ""),
            display_name=d.get("display_name", ""), server=d["server"],
            storage_group=d["storage_group"], database=d["database"],
            disconnected_at=float(d.get("disconnected_at", 0.0)),
            purging=bool(d.get("purging", False)),
        )

    def public(self) -> dict[str, Any]:
        return {
            "mailbox_id": self.mailbox_id, "address": self.address,
            "display_name": self.display_name, "server": self.server,
            "storage_group": self.storage_group, "database": self.database,
            "disconnected_at": self.disconnected_at, "purging": self.purging,
        }


@dataclass(frozen=True, slots=True)
class AliasEntry:
    address: str
    target: str

    def to_json(self) -> str:
        return json.dumps({"address": self.address, "target": self.target}, sort_keys=True)

    @classmethod
    def from_json(cls, raw: bytes) -> AliasEntry:
        d = json.loads(raw)
        return cls(d["address"], d["target"])


@dataclass(frozen=True, slots=True)
class GroupEntry:
    address: str
    members: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps({"address": self.address, "members": list(self.members)},
                          sort_keys=True)

    @classmethod
    def from_json(cls, raw: bytes) -> GroupEntry:
        d = json.loads(raw)
        return cls(d["address"], tuple(d["members"]))


# --------------------------------------------------------------------------- checks


def check_server_name(server: str) -> str:
    if not isinstance(server, str) or not _SERVER_NAME.match(server):
        raise InvalidRequestError(
            f"invalid virtual server name {server!r}: 1 to 63 letters, digits, '-' or '_'"
        )
    return server


def check_password(password: str) -> str:
    if not isinstance(password, str) or not password:
        raise InvalidRequestError("the password is empty")
    if len(password) > MAX_PASSWORD_CHARS:
        raise InvalidRequestError(f"the password is longer than {MAX_PASSWORD_CHARS} characters")
    if "\x00" in password:
        raise InvalidRequestError("the password contains a NUL character")
    return password


def check_display_name(name: str) -> str:
    if len(name) > MAX_DISPLAY_NAME_CHARS or any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidRequestError(
            f"invalid display name {name[:40]!r}: at most {MAX_DISPLAY_NAME_CHARS} characters, "
            "no control characters"
        )
    return name


# --------------------------------------------------------------------------- pure helpers


def record_address(kind: str, raw: bytes) -> str:
    if kind == MAILBOXES:
        return MailboxEntry.from_json(raw).address
    if kind == ALIASES:
        return AliasEntry.from_json(raw).address
    return GroupEntry.from_json(raw).address


def references_removed(
    records: dict[str, KeyValue], kind: str, key: str
) -> tuple[list[str], dict[str, str]]:
    """What removing recipient ``kind``+``key`` changes (pure): keys to delete and
    records to rewrite. Groups emptied by it go too, recursively."""
    deletes: list[str] = []
    puts: dict[str, str] = {}
    doomed = [(kind, key)]
    while doomed:
        k, name = doomed.pop()
        if k + name in deletes:
            continue
        deletes.append(k + name)
        puts.pop(k + name, None)
        for rel, kv in records.items():
            if rel in deletes:
                continue
            value = puts[rel].encode() if rel in puts else kv.value
            if k == MAILBOXES and rel.startswith(ALIASES):
                if parse_address(AliasEntry.from_json(value).target).key == name:
                    doomed.append((ALIASES, rel[len(ALIASES) :]))
            elif rel.startswith(GROUPS):
                group = GroupEntry.from_json(value)
                rest = tuple(x for x in group.members if parse_address(x).key != name)
                if len(rest) != len(group.members):
                    if rest:
                        puts[rel] = GroupEntry(group.address, rest).to_json()
                    else:
                        doomed.append((GROUPS, rel[len(GROUPS) :]))
            elif rel.startswith(DOMAINS):
                domain = DomainEntry.from_json(value)
                if domain.catch_all and parse_address(domain.catch_all).key == name:
                    puts[rel] = DomainEntry(domain.domain, None).to_json()
    return deletes, puts
