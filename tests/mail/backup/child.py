"""A delivering process for the kill tests (run as a script, not collected).

``child.py ROOT``: mounts the mail store at ROOT (with its transaction logs) and delivers to
alice@example.test from 4 lanes forever, printing "TAG" after each delivery returned (was
acknowledged). The parent SIGKILLs it at a random moment.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from clustermail.mail.store import MailStore

A = "alice@example.test"


async def deliver_forever(store: MailStore) -> None:
    db = store.database("SG1", "DB1")

    async def lane(n: int) -> None:
        i = 0
        while True:
            tag = f"l{n}-{i}"
            body = f"Subject: {tag}\r\n\r\n{tag}\r\n".encode() + b"x" * (i % 5 * 700)
            await db.deliver(body, [A])
            sys.stdout.write(tag + "\n")
            sys.stdout.flush()
            i += 1

    await asyncio.gather(*(lane(n) for n in range(4)))


if __name__ == "__main__":
    store = MailStore(Path(sys.argv[1]), create=False)
    store.mount(2)
    print("ready", flush=True)
    asyncio.run(deliver_forever(store))
