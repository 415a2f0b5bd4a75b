"""A separate OS process for the conformance suite's cross-process tests.

    python -m tests.coord.racer cas URL KEY NAME START_AT
        waits until time.time() >= START_AT, tries to create KEY with NAME
        (compare-and-swap on absence) and prints "won" or "lost".
    python -m tests.coord.racer write URL PREFIX NAME COUNT
        puts COUNT keys PREFIX/NAME/i and prints each revision.
"""

from __future__ import annotations

import asyncio
import sys
import time

from clustermail.coord import Compare, Put, open_store


async def cas(url: str, key: str, name: str, start_at: float) -> None:
    store = await open_store(url)
    try:
        await store.revision()  # connect before the race starts
        while time.time() < start_at:
            await asyncio.sleep(0.001)
        result = await store.txn([Compare.absent(key)], [Put(key, name)])
        print("won" if result.succeeded else "lost", flush=True)
    finally:
        await store.close()


async def write(url: str, prefix: str, name: str, count: int) -> None:
    store = await open_store(url)
    try:
        for i in range(count):
            rev = await store.put(f"{prefix}{name}/{i:04d}", f"{name}-{i}")
            print(rev, flush=True)
    finally:
        await store.close()


def main() -> None:
    mode, url, key, name, arg = sys.argv[1:6]
    if mode == "cas":
        asyncio.run(cas(url, key, name, float(arg)))
    else:
        asyncio.run(write(url, key, name, int(arg)))


if __name__ == "__main__":
    main()
