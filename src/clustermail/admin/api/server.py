"""Runs the admin web application on one or more listeners in the current event loop
(the resource host's, or a test's): no threads, no signal handlers of its own."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from clustermail.admin.api.accounts import Accounts
from clustermail.admin.api.app import build_app
from clustermail.admin.api.auth import Authenticator
from clustermail.admin.api.context import ApiContext
from clustermail.admin.api.history import History
from clustermail.coord import Store
from clustermail.mail.directory.passwords import Passwords

#: Open streams (SSE) are cut after this long when the service stops.
SHUTDOWN_TIMEOUT = 1.0


@dataclass(frozen=True, slots=True)
class Listener:
    host: str
    port: int
    tls: ssl.SSLContext | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"


async def make_context(store: Store, node: str, data_dir: Path, *, history: bool = True,
                       passwords: Passwords | None = None) -> ApiContext:
    accounts = Accounts(store, passwords)
    auth = Authenticator(accounts, await accounts.session_secret())
    return ApiContext(store=store, node=node, data_dir=data_dir, accounts=accounts, auth=auth,
                      history=History(store) if history else None)


class ApiServer:
    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self.runner: web.AppRunner | None = None
        self.listeners: list[Listener] = []
        self._history: asyncio.Task[None] | None = None

    async def start(self, listeners: list[Listener]) -> None:
        """Listens on every listener, or on none (an error leaves nothing open)."""
        runner = web.AppRunner(build_app(self.ctx), handle_signals=False, access_log=None,
                               shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        try:
            for listener in listeners:
                site = web.TCPSite(runner, listener.host, listener.port,
                                   ssl_context=listener.tls, reuse_address=True)
                await site.start()
                if listener.port == 0:  # tests: the port the kernel chose
                    server = site._server
                    sockets = getattr(server, "sockets", None) or []
                    port = sockets[0].getsockname()[1] if sockets else 0
                    listener = Listener(listener.host, port, listener.tls)
                self.listeners.append(listener)
        except BaseException:
            await runner.cleanup()
            raise
        self.runner = runner
        if self.ctx.history is not None:
            self._history = asyncio.ensure_future(self.ctx.history.run())

    async def stop(self) -> None:
        if self._history is not None:
            self._history.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._history
            self._history = None
        runner, self.runner = self.runner, None
        self.listeners = []
        if runner is not None:
            await runner.cleanup()
