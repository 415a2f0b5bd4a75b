"""The IMAP command table: every command has an entry, and the rules it declares."""

from __future__ import annotations

import typing

import pytest

from clustermail.mail.imap import commands as c
from clustermail.mail.imap.command_table import (
    AUTHENTICATED,
    NOT_AUTHENTICATED,
    SELECTED,
    CommandFlag,
    CommandTable,
    SessionState,
)
from clustermail.mail.imap.outcome import Done
from clustermail.mail.imap.sequence import SequenceSet
from clustermail.mail.imap.session import COMMANDS


def _command_types() -> set[type[c.Command]]:
    """Every command the parser can produce."""
    return set(typing.get_args(c.AnyCommand))


def test_every_command_type_has_an_entry() -> None:
    types = _command_types()
    assert len(types) > 30
    assert set(COMMANDS.kinds()) == types
    for kind in types:
        spec = COMMANDS.specs[kind]
        assert spec.name == kind.name and spec.states, kind


def test_states() -> None:
    assert COMMANDS.specs[c.Login].states == {SessionState.NOT_AUTHENTICATED}
    assert COMMANDS.specs[c.Select].states == AUTHENTICATED
    assert COMMANDS.specs[c.Fetch].states == {SessionState.SELECTED}
    assert COMMANDS.specs[c.Noop].states == set(SessionState)


def test_sequence_number_rules() -> None:
    """No EXPUNGE during FETCH, STORE and SEARCH (RFC 3501 §7.4.1) but their UID forms;
    only EXPUNGE and MOVE report their own expunges at once."""
    uses = {k for k, spec in COMMANDS.specs.items() if CommandFlag.USES_SEQS in spec.flags}
    breaks = {k for k, spec in COMMANDS.specs.items() if spec.breaks_seqs}
    assert uses == {c.Fetch, c.Store, c.Search}
    assert breaks == {c.Expunge, c.Move}
    fetch = COMMANDS.specs[c.Fetch]
    seqs = SequenceSet.parse("1:*")
    assert fetch.uses_seqs(c.Fetch("a", seqs, ()))
    assert not fetch.uses_seqs(c.Fetch("a", seqs, (), uid=True))
    assert not COMMANDS.specs[c.Copy].uses_seqs(c.Copy("a", seqs, "x"))


async def _handler(s: object, cmd: c.Noop) -> Done:
    return Done("ok")


def test_a_command_is_declared_once_and_consistently() -> None:
    table: CommandTable[object] = CommandTable()
    table.command(c.Noop, NOT_AUTHENTICATED)(_handler)
    with pytest.raises(ValueError, match="declared twice"):
        table.command(c.Noop, SELECTED)(_handler)
    with pytest.raises(ValueError, match="cannot both"):
        table.command(c.Check, SELECTED, CommandFlag.USES_SEQS | CommandFlag.BREAKS_SEQS)
    with pytest.raises(ValueError, match="declared twice"):
        CommandTable(table, table)
