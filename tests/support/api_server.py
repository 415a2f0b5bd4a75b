"""A real admin API over a real socket, on a real SQLite store holding the sample
cluster's configuration, with an operator and a viewer account."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from argon2 import PasswordHasher

from clustermail.admin import local, sample_cluster
from clustermail.admin.api.routing import Role
from clustermail.admin.api.server import ApiServer, Listener, make_context
from clustermail.coord import Store, open_store
from clustermail.mail.directory.passwords import Passwords

OPERATOR = ("oper", "operator-password")
VIEWER = ("view", "viewer-password")


def basic(user: tuple[str, str]) -> dict[str, str]:
    token = base64.b64encode(f"{user[0]}:{user[1]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


@dataclass
class Api:
    url: str
    store: Store
    server: ApiServer
    http: aiohttp.ClientSession
    data: Path

    async def call(self, method: str, path: str, *, user: tuple[str, str] | None = OPERATOR,
                   json_body: Any = None, data: bytes | None = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """Status and decoded JSON answer (text when the answer is not JSON)."""
        sent = dict(headers or {})
        if user is not None:
            sent.update(basic(user))
        async with self.http.request(method, self.url + path, json=json_body, data=data,
                                     headers=sent) as response:
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, text


@asynccontextmanager
async def running_api(tmp: Path, *, history: bool = False) -> AsyncIterator[Api]:
    data = tmp / "data"
    data.mkdir()
    store = await open_store(local.store_url_for(data))
    server: ApiServer | None = None
    try:
        await local.apply_config(store, sample_cluster.sample_config())
        # argon2id still, at a test's cost: the defaults take ~0.15 s per login.
        cheap = Passwords(PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1))
        ctx = await make_context(store, "node1", data, history=history, passwords=cheap)
        await ctx.accounts.add(*OPERATOR, Role.OPERATOR)
        await ctx.accounts.add(*VIEWER, Role.VIEWER)
        server = ApiServer(ctx)
        await server.start([Listener("127.0.0.1", 0)])
        # unsafe=True: keep cookies of an IP-address host, as browsers do.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            yield Api(server.listeners[0].url, store, server, http, data)
    finally:
        if server is not None:
            await server.stop()
        await store.close()
