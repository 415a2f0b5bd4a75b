"""A local copy of the directory, kept current by a watch on its prefix.

Resource hosts resolve a recipient per RCPT and a login per connection; with
the cache live those are dictionary lookups instead of store round trips. The
copy is one range read at revision R, then every event from R+1 in order (the
store guarantees no gaps), so it is always some consistent past state of the
store, behind by the watch delay. When the watch breaks, the cache is marked
not live (readers fall back to the store) until it has reloaded.

Listeners are called on the event loop with the keys that changed (relative to
the prefix); ``RELOADED`` stands for "anything may have changed".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from clustermail.coord import Compacted, CoordError, EventType, Store

RELOADED = "*"
RETRY_MIN = 0.2
RETRY_MAX = 5.0
Listener = Callable[[frozenset[str]], None]
ErrorReporter = Callable[[str], None]


class DirectoryCache:
    def __init__(self, store: Store, prefix: str, on_error: ErrorReporter | None = None):
        self.store = store
        self.prefix = prefix
        self.revision = 0
        self.live = False
        self._data: dict[str, bytes] = {}
        self._listeners: list[Listener] = []
        self._on_error = on_error
        self._task: asyncio.Task[None] | None = None

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    async def start(self) -> None:
        """Loads the snapshot and starts following; returns once live (or raises
        the store's error if the first load fails)."""
        await self._load()
        self._task = asyncio.get_running_loop().create_task(
            self._follow(), name=f"directory-cache {self.prefix}"
        )

    async def close(self) -> None:
        self.live = False
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ------------------------------------------------------------------ reads

    def get(self, key: str) -> bytes | None:
        return self._data.get(key)

    def items(self, sub: str) -> list[tuple[str, bytes]]:
        """(key, value) of every key under ``sub`` (relative to the prefix), sorted."""
        return sorted((k, v) for k, v in self._data.items() if k.startswith(sub))

    # ------------------------------------------------------------------ following

    async def _load(self) -> None:
        result = await self.store.range(self.prefix)
        n = len(self.prefix)
        self._data = {kv.key[n:]: kv.value for kv in result.kvs}
        self.revision = result.revision
        self.live = True
        self._notify(frozenset({RELOADED}))

    async def _follow(self) -> None:
        delay = RETRY_MIN
        n = len(self.prefix)
        while True:
            try:
                if not self.live:
                    await self._load()
                async for ev in self.store.watch(self.prefix, self.revision + 1):
                    key = ev.key[n:]
                    if ev.type is EventType.PUT:
                        self._data[key] = ev.value
                    else:
                        self._data.pop(key, None)
                    self.revision = ev.revision
                    delay = RETRY_MIN
                    self._notify(frozenset({key}))
                raise CoordError("the watch ended")
            except asyncio.CancelledError:
                raise
            except (CoordError, OSError) as exc:
                self.live = False
                if self._on_error is not None:
                    why = "history compacted" if isinstance(exc, Compacted) else str(exc)
                    self._on_error(f"directory watch interrupted ({why}); reloading")
            await asyncio.sleep(delay)  # back off before asking a struggling store again
            delay = min(delay * 2, RETRY_MAX)

    def _notify(self, keys: frozenset[str]) -> None:
        for listener in list(self._listeners):
            try:
                listener(keys)
            except Exception as exc:  # a listener's bug must not stop the cache
                if self._on_error is not None:
                    self._on_error(f"directory listener failed: {type(exc).__name__}: {exc}")
