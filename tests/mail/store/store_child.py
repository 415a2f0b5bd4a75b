"""Child processes for the multi-process store tests (run as scripts, not collected).

``zygote DB``: imports the store once, then for each "run N" line on stdin forks a delivering
child (so 200 kill rounds do not pay 200 interpreter start-ups). The child prints "pid P",
"ready", then one line per returned delivery: "UID_A UID_B TAG". The zygote reaps it and
prints "exited N".

``worker DB``: one command per stdin line, one reply line each ("ok ..." or
"error ErrorClass message"): mount E | create | deliver | count | uidvalidity | dismount.
"""

from __future__ import annotations

import asyncio
import os
import sys

from clustermail.mail.store import MailboxDatabase, StoreError

A, B = "alice@example.test", "bob@example.test"


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def deliver_forever(db: MailboxDatabase, run: int) -> None:
    async def lane(lane_no: int) -> None:
        n = 0
        while True:
            tag = f"r{run}-l{lane_no}-n{n}"
            body = f"Subject: {tag}\r\nTo: {A}, {B}\r\n\r\n{tag}\r\n".encode() + b"z" * (
                n % 7 * 300
            )
            res = await db.deliver(body, [A, B])
            ua, ub = (r.uid for r in res.recipients)
            say(f"{ua} {ub} {tag}")
            if n % 5 == 4 and ua is not None:
                await db.set_flags(A, "INBOX", [ua], ["\\Seen"])
            n += 1

    await asyncio.gather(*(lane(i) for i in range(4)))


def child(path: str, run: int) -> None:
    say(f"pid {os.getpid()}")
    db = MailboxDatabase(path)
    db.mount(1)
    say("ready")
    asyncio.run(deliver_forever(db, run))


def zygote(path: str) -> None:
    for line in sys.stdin:
        run = int(line.split()[1])
        pid = os.fork()
        if pid == 0:
            try:
                child(path, run)
            finally:
                os._exit(1)
        os.waitpid(pid, 0)
        say(f"exited {run}")


def worker(path: str) -> None:
    db = MailboxDatabase(path)
    for line in sys.stdin:
        cmd, *args = line.split()
        try:
            if cmd == "mount":
                db.mount(int(args[0]))
                say("ok")
            elif cmd == "create":
                db.create_mailbox_sync(A)
                say("ok")
            elif cmd == "deliver":
                res = db.deliver_sync(b"Subject: x\r\n\r\nx\r\n", [A])
                say(f"ok {res.recipients[0].uid}")
            elif cmd == "count":
                say(f"ok {db.status(A, 'INBOX').messages}")
            elif cmd == "uidvalidity":
                say(f"ok {db.status(A, 'INBOX').uidvalidity}")
            elif cmd == "dismount":
                db.dismount()
                say("ok")
            else:
                say(f"error ValueError unknown command {cmd}")
        except StoreError as exc:
            say(f"error {type(exc).__name__} {exc}")


if __name__ == "__main__":
    {"zygote": zygote, "worker": worker}[sys.argv[1]](sys.argv[2])
