"""The command table: for each IMAP command, its handler and the rules the session loop
enforces for it, declared as data next to the handler (Dovecot's ``imap-commands.c``).

Each module of :mod:`clustermail.mail.imap.handlers` has a :class:`CommandTable` and
declares its commands with the decorator::

    @COMMANDS.command(c.Fetch, SELECTED, CommandFlag.USES_SEQS)
    async def fetch(s: SessionContext, cmd: c.Fetch) -> Done: ...

and the session merges the tables. The loop, not the handlers, then

* answers BAD to a command sent in a state it is not allowed in (RFC 3501 §6);
* sends no EXPUNGE while or right after answering a command that uses sequence
  numbers, unless it is the UID form (:attr:`CommandFlag.USES_SEQS`, RFC 3501 §7.4.1);
* lets only a command that breaks sequence numbers send its expunges at once
  (:attr:`CommandFlag.BREAKS_SEQS`); any other command's stay pending for the next
  moment EXPUNGE responses are allowed.

Commands run one at a time, so Dovecot's other use of these flags (holding back a
pipelined command that uses numbers while one that breaks them runs) holds by
construction.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from clustermail.mail.imap.commands import Command
from clustermail.mail.imap.outcome import Done


class SessionState(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"


ANY_STATE = frozenset(SessionState)
NOT_AUTHENTICATED = frozenset({SessionState.NOT_AUTHENTICATED})
AUTHENTICATED = frozenset({SessionState.AUTHENTICATED, SessionState.SELECTED})
SELECTED = frozenset({SessionState.SELECTED})


class CommandFlag(enum.Flag):
    NONE = 0
    #: The answer names messages by sequence number (FETCH, STORE, SEARCH): no EXPUNGE
    #: response may shift them meanwhile, unless the command is in its UID form.
    USES_SEQS = enum.auto()
    #: The command expunges messages and reports it at once (EXPUNGE, MOVE).
    BREAKS_SEQS = enum.auto()


S = TypeVar("S")
C = TypeVar("C", bound=Command)
Handler = Callable[[S, C], Awaitable[Done]]


@dataclass(frozen=True, slots=True)
class CommandSpec(Generic[S]):
    name: str
    handler: Callable[[S, Any], Awaitable[Done]]
    states: frozenset[SessionState]
    flags: CommandFlag

    def uses_seqs(self, cmd: Command) -> bool:
        """Whether ``cmd``'s answer names messages by sequence number."""
        return CommandFlag.USES_SEQS in self.flags and not getattr(cmd, "uid", False)

    @property
    def breaks_seqs(self) -> bool:
        return CommandFlag.BREAKS_SEQS in self.flags


class CommandTable(Generic[S]):
    """Command type → :class:`CommandSpec`; handlers take the session type ``S``."""

    def __init__(self, *parts: CommandTable[S]) -> None:
        self.specs: dict[type[Command], CommandSpec[S]] = {}
        for part in parts:
            for kind, spec in part.specs.items():
                self._add(kind, spec)

    def command(
        self,
        kind: type[C],
        states: frozenset[SessionState],
        flags: CommandFlag = CommandFlag.NONE,
    ) -> Callable[[Handler[S, C]], Handler[S, C]]:
        """Declares the decorated function as the handler of ``kind``."""
        if CommandFlag.USES_SEQS in flags and CommandFlag.BREAKS_SEQS in flags:
            raise ValueError(f"{kind.name}: a command cannot both use and break sequence numbers")

        def declare(handler: Handler[S, C]) -> Handler[S, C]:
            self._add(kind, CommandSpec(kind.name, handler, states, flags))
            return handler

        return declare

    def _add(self, kind: type[Command], spec: CommandSpec[S]) -> None:
        if kind in self.specs:
            raise ValueError(f"{spec.name} is declared twice")
        self.specs[kind] = spec

    def kinds(self) -> Iterable[type[Command]]:
        return self.specs.keys()
