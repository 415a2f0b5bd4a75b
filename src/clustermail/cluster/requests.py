"""The request protocol: work asked of one party through records in the coordination store.

Whoever needs work done where it can only be done (a backup on a virtual server's owner,
a validation on a node) writes a request record and waits on it; the party it is meant
for claims it, runs it and writes the result back:

    pending --claim (compare-and-swap on the record's revision)--> running --> done | failed

* A request runs at most once: the claim is a compare-and-swap on the revision the
  claimant read (plus whatever else the claimant must still hold, e.g. an owner key).
* A pending request has a deadline to be claimed (``claim_by``): past it nobody runs it,
  because the one who asked stopped waiting.
* Finished requests are kept :data:`KEEP_FINISHED` for the asker to read, then deleted.

The records differ by who they are addressed to (the mail layer's store requests, the
cluster's node requests in :mod:`.node_requests`); these helpers work on any record that
has a ``key`` and ``to_store()``.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from typing import Protocol

from clustermail.coord import Compare, Delete, Put, Store

PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"
STATES = (PENDING, RUNNING, DONE, FAILED)
#: Finished requests are kept this long (the one who asked reads the result), then deleted.
KEEP_FINISHED = 24 * 3600.0


class RequestRecord(Protocol):
    @property
    def key(self) -> str: ...

    def to_store(self) -> bytes: ...


def new_id(now: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + "-" + secrets.token_hex(3)


def who() -> str:
    return f"clustermail on {socket.gethostname()} (pid {os.getpid()})"


async def put_new(store: Store, request: RequestRecord) -> int | None:
    """Writes a new request; its revision, or None if its key is taken."""
    result = await store.txn([Compare.absent(request.key)],
                             [Put(request.key, request.to_store())])
    return result.revision if result.succeeded else None


async def replace_if(store: Store, request: RequestRecord, revision: int,
                     extra: list[Compare] | None = None) -> int | None:
    """Writes ``request`` if its key is still at ``revision`` (and ``extra`` holds);
    returns the new revision, or None if someone changed it meanwhile."""
    result = await store.txn([Compare.mod_is(request.key, revision), *(extra or [])],
                             [Put(request.key, request.to_store())])
    return result.revision if result.succeeded else None


async def withdraw(store: Store, request: RequestRecord, revision: int) -> bool:
    """Deletes a request still at ``revision`` (the asker gives up, or has read it)."""
    result = await store.txn([Compare.mod_is(request.key, revision)], [Delete(request.key)])
    return result.succeeded


__all__ = [
    "DONE", "FAILED", "KEEP_FINISHED", "PENDING", "RUNNING", "STATES", "RequestRecord",
    "new_id", "put_new", "replace_if", "who", "withdraw",
]
