"""Mailbox identity in the directory: a re-added address gets a new mailbox; the removed
one is disconnected, and can be reconnected or purged (both store backends)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from clustermail.coord import Store
from clustermail.mail.directory import (
    AddressTakenError,
    ConflictError,
    Directory,
    DisconnectedEntry,
    InUseError,
    InvalidRequestError,
    MailboxEntry,
    NotFoundError,
)
from clustermail.mail.directory.passwords import Passwords
from tests.support.directory import CHEAP


@pytest.fixture
async def d(store: Store, ns: str) -> AsyncIterator[Directory]:
    directory = Directory(store, prefix=ns + "directory/", passwords=Passwords(CHEAP))
    await directory.add_domain("example.test")
    yield directory
    await directory.close()


async def test_each_mailbox_has_its_own_id(d: Directory) -> None:
    alice = await d.add_mailbox("alice@example.test", password="a", server="mail1")
    bob = await d.add_mailbox("bob@example.test", password="b", server="mail1")
    assert len(alice.mailbox_id) == 32 and alice.mailbox_id != bob.mailbox_id
    assert "@" not in alice.mailbox_id
    found = await d.mailbox("ALICE@example.test")
    assert found is not None and found.mailbox_id == alice.mailbox_id
    assert alice.public()["mailbox_id"] == alice.mailbox_id


async def test_remove_then_add_gives_a_new_mailbox(d: Directory) -> None:
    old = await d.add_mailbox("alice@example.test", password="a", server="mail1",
                              display_name="Alice")
    removed = await d.remove_mailbox("alice@example.test")
    assert removed.mailbox_id == old.mailbox_id
    [gone] = await d.list_disconnected()
    assert (gone.mailbox_id, gone.address, gone.display_name, gone.home, gone.purging) == (
        old.mailbox_id, "alice@example.test", "Alice", ("mail1", "SG1", "DB1"), False)
    new = await d.add_mailbox("alice@example.test", password="a2", server="mail1")
    assert new.mailbox_id != old.mailbox_id
    assert [x.mailbox_id for x in await d.list_disconnected()] == [old.mailbox_id]
    assert await d.list_disconnected(server="mail2") == []


async def test_reconnect_to_a_free_address_needs_a_password(d: Directory) -> None:
    old = await d.add_mailbox("alice@example.test", password="a", server="mail1",
                              display_name="Alice")
    await d.remove_mailbox("alice@example.test")
    with pytest.raises(InvalidRequestError, match="not a mailbox: give a password"):
        await d.reconnect_mailbox("alice@example.test", old.mailbox_id)
    entry, swapped = await d.reconnect_mailbox("ally@example.test", old.mailbox_id,
                                               password="new")
    assert swapped is None
    assert (entry.address, entry.mailbox_id, entry.display_name, entry.home) == (
        "ally@example.test", old.mailbox_id, "Alice", ("mail1", "SG1", "DB1"))
    assert await d.authenticate("ally@example.test", "new") is not None
    assert await d.list_disconnected() == []
    with pytest.raises(NotFoundError, match="no disconnected mailbox"):
        await d.reconnect_mailbox("bob@example.test", old.mailbox_id, password="x")


async def test_reconnect_to_a_mailbox_swaps_its_data(d: Directory) -> None:
    old = await d.add_mailbox("alice@example.test", password="a", server="mail1")
    await d.remove_mailbox("alice@example.test")
    await d.add_storage_group("mail2", "SG2")
    await d.add_database("mail2", "SG2", "DB2")
    new = await d.add_mailbox("alice@example.test", password="a2", server="mail2",
                              storage_group="SG2", database="DB2")
    await d.add_alias("al@example.test", "alice@example.test")
    entry, swapped = await d.reconnect_mailbox("alice@example.test", old.mailbox_id)
    # The address keeps its password and aliases and points to the old data, where it is.
    assert (entry.mailbox_id, entry.home) == (old.mailbox_id, ("mail1", "SG1", "DB1"))
    assert await d.authenticate("al@example.test", "a2") is not None
    assert swapped is not None and swapped.mailbox_id == new.mailbox_id
    [listed] = await d.list_disconnected()
    assert (listed.mailbox_id, listed.home) == (new.mailbox_id, ("mail2", "SG2", "DB2"))


async def test_reconnect_refuses_an_alias_or_a_group(d: Directory) -> None:
    old = await d.add_mailbox("alice@example.test", password="a", server="mail1")
    await d.add_mailbox("bob@example.test", password="b", server="mail1")
    await d.add_alias("al@example.test", "bob@example.test")
    await d.remove_mailbox("alice@example.test")
    with pytest.raises(AddressTakenError, match="already an alias"):
        await d.reconnect_mailbox("al@example.test", old.mailbox_id, password="x")
    assert [x.mailbox_id for x in await d.list_disconnected()] == [old.mailbox_id]


async def test_purge_marks_then_forgets(d: Directory) -> None:
    old = await d.add_mailbox("alice@example.test", password="a", server="mail1")
    with pytest.raises(NotFoundError):
        await d.begin_purge(old.mailbox_id)  # attached: nothing to purge
    await d.remove_mailbox("alice@example.test")
    marked = await d.begin_purge(old.mailbox_id)
    assert marked.purging
    assert (await d.begin_purge(old.mailbox_id)).purging  # again, after an interruption
    with pytest.raises(InUseError, match="being purged"):
        await d.reconnect_mailbox("alice@example.test", old.mailbox_id, password="x")
    await d.end_purge(old.mailbox_id)
    assert await d.list_disconnected() == []
    with pytest.raises(ConflictError):
        await d.end_purge(old.mailbox_id)


async def test_an_entry_without_an_id_keeps_its_address_as_id(
    d: Directory, store: Store, ns: str
) -> None:
    # A record written before mailboxes had ids: its data is named by its address.
    entry = await d.add_mailbox("Alice@example.test", password="a", server="mail1")
    record = json.loads(entry.to_json())
    del record["mailbox_id"]
    await store.put(ns + "directory/mailboxes/alice@example.test", json.dumps(record))
    found = await d.mailbox("alice@example.test")
    assert found is not None and found.mailbox_id == "Alice@example.test"
    assert MailboxEntry("a@b.test", "", "mail1", "SG1", "DB1", "x").mailbox_id == "a@b.test"
    # Removing it records that id; adding the address again gives a new one.
    await d.remove_mailbox("alice@example.test")
    assert [x.mailbox_id for x in await d.list_disconnected()] == ["Alice@example.test"]
    again = await d.add_mailbox("Alice@example.test", password="a", server="mail1")
    assert again.mailbox_id != "Alice@example.test"


async def test_record_found_skips_attached_and_recorded_ids(d: Directory) -> None:
    alice = await d.add_mailbox("alice@example.test", password="a", server="mail1")
    bob = await d.add_mailbox("bob@example.test", password="b", server="mail1")
    await d.remove_mailbox("bob@example.test")

    def found(mailbox_id: str) -> DisconnectedEntry:
        return DisconnectedEntry(mailbox_id, mailbox_id, "", "mail1", "SG1", "DB1", 1.0)

    added = await d.record_found([found(alice.mailbox_id), found(bob.mailbox_id),
                                 found("carol@example.test")])
    assert added == ["carol@example.test"]
    assert await d.record_found([found("carol@example.test")]) == []
    listed = {x.mailbox_id: x for x in await d.list_disconnected()}
    assert set(listed) == {bob.mailbox_id, "carol@example.test"}
    assert listed[bob.mailbox_id].address == "bob@example.test"  # the record kept


async def test_bad_ids_are_refused(d: Directory) -> None:
    for bad in ("", "a\nb", "x" * 321):
        with pytest.raises(InvalidRequestError, match="invalid mailbox id"):
            await d.disconnected_mailbox(bad)
