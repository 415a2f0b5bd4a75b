"""An SMTP service in its own process (for the SIGKILL durability test).

Usage: python -m tests.mail.smtp.smtp_child DISK ADDRESS; prints one JSON line with the
ports once it listens, then serves until killed."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from tests.support.mail_fakes import DOMAIN, FakeDirectory, start_smtp


async def main(disk: Path, address: str) -> None:
    d = FakeDirectory()
    d.add(f"alice@{DOMAIN}")
    d.add(f"carol@{DOMAIN}", server="mail2")
    running = await start_smtp(disk, d, address=address)
    print(json.dumps({"inbound": running.ports.inbound}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
