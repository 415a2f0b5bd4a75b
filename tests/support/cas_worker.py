"""One contender in a compare-and-swap race, run as its own OS process.

``python -m tests.support.cas_worker STORE_URL KEY NAME`` opens the store,
prints ``ready``, waits for a line on stdin (the starting gun), tries to create
KEY with value NAME in a transaction that requires KEY to be absent, and prints
``won`` or ``lost`` (or ``unavailable: ...``).
"""

from __future__ import annotations

import asyncio
import sys

from clustermail.coord import Compare, Put, StoreUnavailable, open_store


async def contend(url: str, key: str, name: str) -> str:
    store = await open_store(url)
    try:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        try:
            result = await store.txn([Compare.absent(key)], [Put(key, name)])
        except StoreUnavailable as exc:
            return f"unavailable: {exc}"
        return "won" if result.succeeded else "lost"
    finally:
        await store.close()


def main() -> None:
    url, key, name = sys.argv[1:4]
    print(asyncio.run(contend(url, key, name)), flush=True)


if __name__ == "__main__":
    main()
