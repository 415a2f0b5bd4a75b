"""The mail checker: what is in each mailbox, read over IMAP.

UIDs are never reused and the campaign never deletes, so each check fetches
only the messages newer than the last one it saw (``UID FETCH last+1:*``) and
keeps a count per message number: 0 for an acknowledged message is a loss,
more than 1 a duplicate.
"""

from __future__ import annotations

import contextlib
import imaplib
import re
from collections import Counter
from dataclasses import dataclass, field

_UID = re.compile(rb"UID (\d+)")
_SUBJECT = re.compile(rb"Subject: cm (\S+) (\S+) (\d+)", re.IGNORECASE)


@dataclass
class Mailbox:
    """One user's INBOX as the checker last saw it."""

    vs: str
    address: str
    port: int
    user: str
    password: str
    tag: str
    last_uid: int = 0
    #: message number -> how many copies are in the mailbox
    copies: Counter[int] = field(default_factory=Counter)

    def refresh(self, timeout: float = 10.0) -> None:
        """Reads the messages delivered since the last refresh (raises OSError or
        imaplib errors when the server cannot be read)."""
        imap = imaplib.IMAP4(self.address, self.port, timeout=timeout)
        try:
            imap.login(self.user, self.password)
            typ, _ = imap.select("INBOX", readonly=True)
            if typ != "OK":
                raise imaplib.IMAP4.error(f"SELECT INBOX: {typ}")
            typ, data = imap.uid("FETCH", f"{self.last_uid + 1}:*",
                                 "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
            if typ != "OK":
                raise imaplib.IMAP4.error(f"UID FETCH: {typ}")
            newest = self.last_uid
            for item in data:
                if not isinstance(item, tuple):
                    continue
                uid_match = _UID.search(item[0])
                if uid_match is None:
                    continue
                uid = int(uid_match.group(1))
                # "n:*" names the newest message even when it is older than n.
                if uid <= self.last_uid:
                    continue
                newest = max(newest, uid)
                found = _SUBJECT.search(item[1])
                if found and found.group(1).decode() == self.tag and \
                        found.group(2).decode() == self.vs:
                    self.copies[int(found.group(3))] += 1
            self.last_uid = newest
        finally:
            with contextlib.suppress(OSError, imaplib.IMAP4.error, imaplib.IMAP4.abort):
                imap.logout()

    def missing(self, acked: set[int]) -> set[int]:
        return {n for n in acked if self.copies[n] == 0}

    def duplicates(self) -> set[int]:
        return {n for n, count in self.copies.items() if count > 1}
