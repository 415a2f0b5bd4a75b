"""Login rate of one IMAP server: first logins (argon2id per login) against returning
users (the login cache), with the real directory over a real SQLite coordination store.

    python -m bench.logins [--users 300] [--concurrency 20] [--rounds 3]

Our IMAP server runs in a child process with the directory at its default argon2id
parameters; this process connects ``--users`` clients, each logging in to its own
account from its own loopback address (first logins, at most 8 at a time: the login
guard's budget for unfamiliar clients), then does it again ``--rounds`` times
(returning users, as mail clients reconnect). Target: ≥ 500 logins/s for returning users.

Results go to bench/results/logins.json; the summary is in docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
PASSWORD = "a returning user's password"


def user(n: int) -> str:
    return f"user{n}@example.test"


def serve(root: str, users: int, port_file: str) -> None:
    """Child process: the directory and our IMAP server, as the imap4 resource has them."""
    from clustermail import eventloop
    from clustermail.coord import open_store
    from clustermail.mail.directory import Directory
    from clustermail.mail.imap.server import ImapServer
    from clustermail.mail.store import MailboxDatabase

    async def main() -> None:
        store = await open_store(f"sqlite://{root}/cluster.db")
        directory = Directory(store)
        await directory.add_domain("example.test")
        db = MailboxDatabase(f"{root}/db.sqlite")
        db.mount(1)
        for n in range(users):
            await directory.add_mailbox(user(n), password=PASSWORD, server="mail1")
            db.create_mailbox_sync(user(n))
        await directory.start_cache()
        server = ImapServer(directory, lambda entry: (db, str(entry.address)),
                            allow_plaintext_on_loopback=True)
        srv = await server.listen("127.0.0.1", 0)
        Path(port_file).write_text(str(srv.sockets[0].getsockname()[1]))
        await asyncio.Event().wait()

    eventloop.run(main())


async def login(port: int, n: int) -> None:
    # Each user from its own loopback address, as many clients on many machines: the
    # login guard bounds checks in flight per client address.
    source = f"127.0.{1 + n // 250}.{1 + n % 250}"
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        await reader.readline()
        writer.write(f'a LOGIN "{user(n)}" "{PASSWORD}"\r\nb LOGOUT\r\n'.encode())
        while True:
            line = await reader.readline()
            if not line:
                raise ConnectionError("closed before the LOGIN answer")
            if line.startswith(b"a "):
                if not line.startswith(b"a OK"):
                    raise RuntimeError(f"login of {user(n)} failed: {line!r}")
                return
    finally:
        writer.close()


async def wave(port: int, users: int, concurrency: int) -> float:
    """Logins per second of one login per user, ``concurrency`` at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        async with gate:
            await login(port, n)

    start = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(users)))
    return users / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        port_file = os.path.join(root, "port")
        child = multiprocessing.get_context("spawn").Process(
            target=serve, args=(root, args.users, port_file), daemon=True)
        child.start()
        try:
            deadline = time.monotonic() + 600
            while not os.path.exists(port_file) or not Path(port_file).read_text():
                if not child.is_alive() or time.monotonic() > deadline:
                    sys.exit("bench.logins: the server did not start")
                time.sleep(0.1)
            port = int(Path(port_file).read_text())
            # First logins within the guard's budget for unfamiliar clients (16 password
            # checks at once, 4 of them kept for returning users).
            first = asyncio.run(wave(port, args.users, min(args.concurrency, 8)))
            returning = [asyncio.run(wave(port, args.users, args.concurrency))
                         for _ in range(args.rounds)]
        finally:
            child.kill()
            child.join(10)
    result: dict[str, Any] = {
        "users": args.users, "concurrency": args.concurrency,
        "first_logins_per_s": round(first, 1),
        "returning_logins_per_s": round(statistics.median(returning), 1),
        "returning_rounds": [round(r, 1) for r in returning],
        "load_average": os.getloadavg(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "logins.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
