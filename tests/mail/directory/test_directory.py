"""The recipient directory against both real coordination store backends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from argon2 import PasswordHasher

from clustermail.coord import Store
from clustermail.mail.directory import (
    AddressTakenError,
    Directory,
    InUseError,
    InvalidRequestError,
    MailboxEntry,
    NotFoundError,
    UnknownDomainError,
)
from clustermail.mail.directory.addresses import InvalidAddressError
from clustermail.mail.directory.passwords import Passwords
from clustermail.mail.store import QuotaLimits
from tests.support.directory import CHEAP


def make(store: Store, ns: str, hasher: PasswordHasher = CHEAP) -> Directory:
    return Directory(store, prefix=ns + "directory/", passwords=Passwords(hasher))


@pytest.fixture
async def d(store: Store, ns: str) -> AsyncIterator[Directory]:
    directory = make(store, ns)
    await directory.add_domain("Example.TEST")
    await directory.add_domain("other.test")
    for user in ("alice", "Bob.Smith", "carol"):
        await directory.add_mailbox(f"{user}@example.test", password=f"pw-{user}",
                                    server="mail1", display_name=user.title())
    yield directory
    await directory.close()


def addresses(entries: list[MailboxEntry]) -> list[str]:
    return [e.address for e in entries]


async def test_add_and_resolve_with_case_rules(d: Directory) -> None:
    entry = await d.mailbox("bob.smith@EXAMPLE.test")
    assert entry is not None
    assert entry.address == "Bob.Smith@example.test"  # spelling kept for display
    assert (entry.server, entry.storage_group, entry.database) == ("mail1", "SG1", "DB1")
    assert entry.password_hash.startswith("$argon2id$")
    assert "pw-Bob.Smith" not in entry.to_json()
    assert addresses(await d.resolve("BOB.SMITH@example.test")) == ["Bob.Smith@example.test"]
    assert await d.resolve("nobody@example.test") == []
    assert await d.resolve("alice@elsewhere.test") == []
    assert await d.is_local_domain("EXAMPLE.test")
    assert not await d.is_local_domain("elsewhere.test")
    assert not await d.is_local_domain("not a domain")
    with pytest.raises(InvalidAddressError):
        await d.resolve("not an address")


async def test_duplicates_unknown_domain_and_bad_input(d: Directory) -> None:
    with pytest.raises(AddressTakenError, match="already a mailbox"):
        await d.add_mailbox("ALICE@example.test", password="x", server="mail1")
    with pytest.raises(UnknownDomainError, match=r"elsewhere\.test"):
        await d.add_mailbox("x@elsewhere.test", password="x", server="mail1")
    with pytest.raises(AddressTakenError, match="domain"):
        await d.add_domain("EXAMPLE.test")
    with pytest.raises(InvalidRequestError, match="password is empty"):
        await d.add_mailbox("new@example.test", password="", server="mail1")
    with pytest.raises(InvalidRequestError, match="virtual server name"):
        await d.add_mailbox("new@example.test", password="x", server="bad name")
    with pytest.raises(InvalidRequestError, match="no database SG2/DB1"):
        await d.add_mailbox("new@example.test", password="x", server="mail1",
                            storage_group="SG2")
    with pytest.raises(InvalidAddressError):
        await d.add_mailbox("new@@example.test", password="x", server="mail1")
    with pytest.raises(AddressTakenError, match="already a mailbox"):
        await d.add_alias("alice@example.test", "carol@example.test")
    with pytest.raises(NotFoundError, match="not a mailbox"):
        await d.add_alias("x@example.test", "nobody@example.test")


async def test_concurrent_adds_of_one_address_create_it_once(store: Store, ns: str) -> None:
    directory = make(store, ns)
    await directory.add_domain("race.test")
    results = await asyncio.gather(
        *(directory.add_mailbox("same@race.test", password="x", server=f"mail{i}")
          for i in range(1, 6)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, MailboxEntry) for r in results) == 1
    assert all(isinstance(r, MailboxEntry | AddressTakenError) for r in results)


async def test_aliases_subaddressing_and_catch_all(d: Directory) -> None:
    await d.add_alias("Postmaster@example.test", "alice@example.test")
    assert addresses(await d.resolve("postmaster@example.test")) == ["alice@example.test"]
    assert addresses(await d.resolve("alice+news@example.test")) == ["alice@example.test"]
    assert addresses(await d.resolve("postmaster+x@example.test")) == ["alice@example.test"]
    mbx = await d.mailbox("postmaster@example.test")
    assert mbx is not None and mbx.address == "alice@example.test"
    assert [a.address for a in await d.list_aliases()] == ["Postmaster@example.test"]

    assert await d.resolve("unknown@example.test") == []
    await d.set_catch_all("example.test", "carol@example.test")
    assert addresses(await d.resolve("unknown@example.test")) == ["carol@example.test"]
    assert addresses(await d.resolve("alice@example.test")) == ["alice@example.test"]
    with pytest.raises(NotFoundError):
        await d.set_catch_all("example.test", "nobody@example.test")
    await d.remove_alias("POSTMASTER@example.test")
    assert addresses(await d.resolve("postmaster@example.test")) == ["carol@example.test"]
    await d.set_catch_all("example.test", None)
    assert await d.resolve("postmaster@example.test") == []


async def test_groups_nest_and_cycles_are_cut(d: Directory) -> None:
    await d.add_group_member("team@example.test", "alice@example.test")
    await d.add_group_member("team@example.test", "bob.smith@example.test")
    await d.add_group_member("all@example.test", "team@example.test")
    await d.add_group_member("all@example.test", "carol@example.test")
    await d.add_group_member("all@example.test", "alice@example.test")  # twice via team
    await d.add_group_member("team@example.test", "all@example.test")  # a cycle
    got = addresses(await d.resolve("ALL@example.test"))
    assert sorted(got) == ["Bob.Smith@example.test", "alice@example.test", "carol@example.test"]
    assert len(got) == len(set(got))
    assert sorted(addresses(await d.resolve("team@example.test"))) == sorted(got)
    with pytest.raises(AddressTakenError, match="already a member"):
        await d.add_group_member("team@example.test", "ALICE@example.test")
    with pytest.raises(InvalidRequestError):
        await d.add_group_member("team@example.test", "team@example.test")
    with pytest.raises(NotFoundError):
        await d.add_group_member("team@example.test", "ghost@example.test")
    with pytest.raises(AddressTakenError, match="already a group"):
        await d.add_mailbox("team@example.test", password="x", server="mail1")
    assert await d.mailbox("team@example.test") is None

    assert await d.remove_group_member("team@example.test", "all@example.test") is not None
    await d.remove_group_member("team@example.test", "alice@example.test")
    assert await d.remove_group_member("team@example.test", "bob.smith@example.test") is None
    groups = {g.address: g.members for g in await d.list_groups()}
    assert groups == {"all@example.test": ("carol@example.test", "alice@example.test")}


async def test_disabled_mailboxes_get_nothing_and_cannot_log_in(d: Directory) -> None:
    await d.add_group_member("team@example.test", "alice@example.test")
    await d.add_group_member("team@example.test", "carol@example.test")
    await d.set_enabled("alice@example.test", False)
    assert await d.resolve("alice@example.test") == []
    assert addresses(await d.resolve("team@example.test")) == ["carol@example.test"]
    assert await d.authenticate("alice@example.test", "pw-alice") is None
    assert (await d.mailbox("alice@example.test")) is not None  # still known
    await d.set_enabled("alice@example.test", True)
    assert await d.authenticate("alice@example.test", "pw-alice") is not None


async def test_authenticate(d: Directory) -> None:
    ok = await d.authenticate("BOB.SMITH@example.test", "pw-Bob.Smith")
    assert ok is not None and ok.address == "Bob.Smith@example.test"
    assert await d.authenticate("bob.smith@example.test", "wrong") is None
    assert await d.authenticate("nobody@example.test", "pw-alice") is None
    assert await d.authenticate("not an address", "x") is None
    await d.add_alias("boss@example.test", "bob.smith@example.test")
    via_alias = await d.authenticate("boss@example.test", "pw-Bob.Smith")
    assert via_alias is not None and via_alias.address == "Bob.Smith@example.test"
    await d.set_password("bob.smith@example.test", "new secret")
    assert await d.authenticate("bob.smith@example.test", "pw-Bob.Smith") is None
    assert await d.authenticate("bob.smith@example.test", "new secret") is not None


async def test_stronger_parameters_rehash_on_login(d: Directory, store: Store, ns: str) -> None:
    stronger = make(store, ns, PasswordHasher(time_cost=2, memory_cost=16, parallelism=1))
    assert await stronger.authenticate("carol@example.test", "pw-carol") is not None
    entry = await d.mailbox("carol@example.test")
    assert entry is not None and "t=2" in entry.password_hash
    assert await d.authenticate("carol@example.test", "pw-carol") is not None


async def test_send_as(d: Directory) -> None:
    await d.add_alias("Sales@example.test", "bob.smith@example.test")
    await d.add_alias("info@other.test", "bob.smith@example.test")
    await d.add_alias("help@example.test", "alice@example.test")
    assert await d.send_as("Bob.Smith@example.test") == {
        "bob.smith@example.test", "sales@example.test", "info@other.test"
    }
    assert await d.send_as("sales@example.test") == await d.send_as("bob.smith@example.test")
    assert await d.send_as("nobody@example.test") == set()
    assert await d.may_send_as("bob.smith@example.test", "SALES@example.test")
    assert not await d.may_send_as("bob.smith@example.test", "help@example.test")
    assert not await d.may_send_as("bob.smith@example.test", "not an address")


async def test_remove_mailbox_cascades(d: Directory) -> None:
    await d.add_alias("boss@example.test", "alice@example.test")
    await d.add_group_member("team@example.test", "alice@example.test")
    await d.add_group_member("team@example.test", "carol@example.test")
    await d.add_group_member("solo@example.test", "alice@example.test")
    await d.add_group_member("outer@example.test", "solo@example.test")
    await d.set_catch_all("example.test", "alice@example.test")
    removed = await d.remove_mailbox("ALICE@example.test")
    assert removed.address == "alice@example.test"
    assert await d.mailbox("alice@example.test") is None
    assert await d.list_aliases() == []
    groups = {g.address: g.members for g in await d.list_groups()}
    assert groups == {"team@example.test": ("carol@example.test",)}  # solo, outer emptied
    assert [x.catch_all for x in await d.list_domains() if x.domain == "example.test"] == [None]
    # A new mailbox at the old address inherits nothing.
    await d.add_mailbox("alice@example.test", password="x", server="mail1")
    assert addresses(await d.resolve("boss@example.test")) == []
    with pytest.raises(NotFoundError):
        await d.remove_mailbox("ghost@example.test")


async def test_domains(d: Directory) -> None:
    assert [x.domain for x in await d.list_domains()] == ["example.test", "other.test"]
    with pytest.raises(InUseError, match="3 mailboxes"):
        await d.remove_domain("example.test")
    await d.remove_domain("OTHER.test")
    assert [x.domain for x in await d.list_domains()] == ["example.test"]
    with pytest.raises(NotFoundError):
        await d.remove_domain("other.test")


async def test_mailbox_settings_and_lists(d: Directory) -> None:
    limits = QuotaLimits(warning=100, prohibit_send=200, prohibit_send_receive=300)
    entry = await d.set_quota("carol@example.test", limits)
    assert entry.quota == limits
    assert (await d.set_quota("carol@example.test", None)).quota is None
    await d.set_display_name("carol@example.test", "Carol C.")
    await d.add_domain("third.test")
    await d.add_mailbox("zed@third.test", password="x", server="mail2", quota=limits)
    assert addresses(await d.list_mailboxes("third.test")) == ["zed@third.test"]
    assert addresses(await d.list_mailboxes(server="mail2")) == ["zed@third.test"]
    assert len(await d.list_mailboxes()) == 4
    with pytest.raises(NotFoundError):
        await d.set_enabled("ghost@example.test", False)


async def test_storage_plan_and_move_entry(d: Directory) -> None:
    layout = await d.storage_layout("mail2")
    assert [(g.name, g.databases) for g in layout.storage_groups] == [("SG1", ("DB1",))]
    await d.add_storage_group("mail2", "SG2")
    await d.add_database("mail2", "SG2", "DB5")
    with pytest.raises(InvalidRequestError, match="already"):
        await d.add_storage_group("mail2", "SG2")
    with pytest.raises(InvalidRequestError, match="no storage group"):
        await d.add_database("mail2", "SG9", "DB1")
    moved = await d.move_mailbox_entry("alice@example.test", "mail2", "SG2", "DB5",
                                       expect_home=("mail1", "SG1", "DB1"))
    assert moved.home == ("mail2", "SG2", "DB5")
    assert (await d.authenticate("alice@example.test", "pw-alice")) is not None
    with pytest.raises(Exception, match="moved meanwhile"):
        await d.move_mailbox_entry("alice@example.test", "mail1", "SG1", "DB1",
                                   expect_home=("mail1", "SG1", "DB1"))
    with pytest.raises(InvalidRequestError):
        await d.move_mailbox_entry("alice@example.test", "mail3", "SG2", "DB5")


async def test_cache_follows_writes(d: Directory, store: Store, ns: str) -> None:
    reader = make(store, ns)
    cache = await reader.start_cache()
    changed = asyncio.Event()
    cache.add_listener(lambda keys: changed.set())
    assert addresses(await reader.resolve("alice@example.test")) == ["alice@example.test"]
    revision = cache.revision
    await d.add_mailbox("dave@example.test", password="x", server="mail1")
    async with asyncio.timeout(10):
        while cache.revision <= revision:
            changed.clear()
            await changed.wait()
    assert cache.live
    assert addresses(await reader.resolve("dave@example.test")) == ["dave@example.test"]
    await reader.close()


async def test_a_no_from_a_cache_behind_the_store_is_asked_of_the_store(
        d: Directory, store: Store, ns: str) -> None:
    """The cache trails the store by the watch delay: a mailbox, domain or password made
    a moment ago must not be refused for good (5.1.1, a relay refusal, a bounce of a
    queued message, a failed login) because the cache has not seen it yet."""
    reader = make(store, ns)
    cache = await reader.start_cache()
    await cache.close()
    cache.live = True  # a cache that no longer follows: as far behind as a watch can be
    await d.add_domain("new.test")
    await d.add_mailbox("dave@example.test", password="pw-dave", server="mail1")
    await d.set_password("alice@example.test", "new-pw")
    assert cache.get("domains/new.test") is None  # the cache does not know them
    assert await reader.is_local_domain("new.test")
    assert addresses(await reader.resolve("dave@example.test")) == ["dave@example.test"]
    entry = await reader.mailbox("dave@example.test")
    assert entry is not None and entry.address == "dave@example.test"
    assert await reader.authenticate("dave@example.test", "pw-dave") is not None
    assert await reader.authenticate("alice@example.test", "new-pw") is not None
    await d.add_alias("boss@example.test", "alice@example.test")
    assert "boss@example.test" not in await reader.send_as("alice@example.test")
    assert "boss@example.test" in await reader.send_as("alice@example.test",
                                                       covering=["Boss@example.test"])
    # A yes is the cache's until it hears (as with Dovecot's auth cache): the old
    # password, a mailbox removed since.
    assert await reader.authenticate("alice@example.test", "pw-alice") is not None
    assert await reader.authenticate("alice@example.test", "wrong") is None
    await d.remove_mailbox("carol@example.test")
    assert addresses(await reader.resolve("carol@example.test")) == ["carol@example.test"]
    assert await reader.resolve("nobody@example.test") == []
    assert not await reader.is_local_domain("nowhere.test")
    await reader.close()
