"""Commands valid in any state (RFC 3501 §6.1)."""

from __future__ import annotations

from clustermail.mail.imap import commands as c
from clustermail.mail.imap import response as r
from clustermail.mail.imap.command_table import ANY_STATE, CommandTable
from clustermail.mail.imap.context import SessionContext
from clustermail.mail.imap.outcome import Done, SessionClosed

COMMANDS: CommandTable[SessionContext] = CommandTable()


@COMMANDS.command(c.Capability, ANY_STATE)
async def capability(s: SessionContext, cmd: c.Capability) -> Done:
    s.send(r.capability_data(s.capabilities()))
    return Done("Capability completed.")


@COMMANDS.command(c.Noop, ANY_STATE)
async def noop(s: SessionContext, cmd: c.Noop) -> Done:
    s.dirty = True  # look even if no notification arrived yet
    return Done("NOOP completed.")


@COMMANDS.command(c.Logout, ANY_STATE)
async def logout(s: SessionContext, cmd: c.Logout) -> Done:
    s.send(r.untagged_status("BYE", "Logging out."))
    s.send(r.tagged(cmd.tag, "OK", "Logout completed."))
    raise SessionClosed


@COMMANDS.command(c.Id, ANY_STATE)
async def id_(s: SessionContext, cmd: c.Id) -> Done:
    s.send(r.id_data([("name", s.config.server_name)]))
    return Done("ID completed.")
