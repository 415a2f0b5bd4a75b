"""`clustermail … --api URL`: the cluster commands through the admin API instead of the
coordination store, for a cluster on other machines.

Credentials: ``CLUSTERMAIL_API_USER`` and ``CLUSTERMAIL_API_PASSWORD``, else the
file ``CLUSTERMAIL_API_CONFIG`` (default ``~/.config/clustermail/api.toml``)::

    user = "admin"
    password = "…"
    ca_file = "/path/to/cluster.crt"   # optional: the console's certificate
    insecure = false                   # true: do not verify the certificate

``CLUSTERMAIL_API_INSECURE=1`` also skips certificate verification.

Supported: ``status``, ``explain``, ``log [--follow]``, ``node list|pause|resume|evict``, ``vs
list|move|online|offline|clear-failures``, ``resource online|offline``, and the backup
commands (``backup create|list|verify|prune``, ``restore``, ``store reset|drop-recovery``,
``user recover``) without a directory option: through the API, backups live in each
virtual server's configured ``backup_path``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import ssl
import time
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from rich.console import Console, Group

from clustermail.admin.common import Handler, emit, table
from clustermail.admin.errors import AdminError

MOVE_TIMEOUT = 60.0


def config_path() -> Path:
    explicit = os.environ.get("CLUSTERMAIL_API_CONFIG")
    return Path(explicit) if explicit else Path.home() / ".config" / "clustermail" / "api.toml"


def _credentials() -> tuple[str, str, ssl.SSLContext | bool]:
    user = os.environ.get("CLUSTERMAIL_API_USER")
    password = os.environ.get("CLUSTERMAIL_API_PASSWORD")
    settings: dict[str, Any] = {}
    path = config_path()
    if path.exists():
        try:
            settings = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise AdminError(f"{path}: cannot read the API settings: {exc}") from None
    user = user or settings.get("user")
    password = password or settings.get("password")
    if not isinstance(user, str) or not isinstance(password, str) or not user or not password:
        raise AdminError("--api needs credentials: set CLUSTERMAIL_API_USER and "
                         f"CLUSTERMAIL_API_PASSWORD, or user and password in {path}")
    verify: ssl.SSLContext | bool = True
    if os.environ.get("CLUSTERMAIL_API_INSECURE") == "1" or settings.get("insecure") is True:
        verify = False
    elif isinstance(settings.get("ca_file"), str):
        try:
            verify = ssl.create_default_context(cafile=settings["ca_file"])
        except (OSError, ssl.SSLError) as exc:
            raise AdminError(f"{path}: ca_file: {exc}") from None
    return user, password, verify


class ApiClient:
    def __init__(self, url: str) -> None:
        if not url.startswith(("http://", "https://")):
            raise AdminError(f"--api {url!r}: expected http://HOST:PORT or https://HOST:PORT")
        self.url = url.rstrip("/")
        user, password, self.verify = _credentials()
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}"}
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> ApiClient:
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()

    async def call(self, method: str, path: str, body: Any = None, *,
                   timeout: float | None = None) -> Any:
        """The decoded answer; ``timeout``: how long to wait (default 30 s)."""
        assert self.session is not None
        wait = aiohttp.ClientTimeout(total=timeout) if timeout is not None else None
        try:
            async with self.session.request(method, f"{self.url}/api/v1{path}", json=body,
                                            headers=self.headers, ssl=self.verify,
                                            timeout=wait) as r:
                try:
                    data = await r.json(content_type=None)
                except ValueError:
                    data = None
                if r.status >= 400:
                    error = data.get("error", {}) if isinstance(data, dict) else {}
                    raise AdminError(f"{error.get('message') or r.reason} "
                                     f"({r.status} {error.get('code', '')})".rstrip())
                return data
        except aiohttp.ClientError as exc:
            raise AdminError(f"cannot reach the admin API at {self.url}: {exc}") from None
        except TimeoutError:
            raise AdminError(f"the admin API at {self.url} did not answer in time") from None


    async def stream(self, path: str) -> AsyncIterator[tuple[str, Any]]:
        """The server-sent events of ``path``: (event, decoded data), until it ends."""
        assert self.session is not None
        try:
            async with self.session.get(f"{self.url}/api/v1{path}", headers=self.headers,
                                        ssl=self.verify,
                                        timeout=aiohttp.ClientTimeout(total=None,
                                                                      sock_read=60)) as r:
                if r.status >= 400:
                    raise AdminError(f"{path}: {r.status} {r.reason}")
                kind = ""
                async for raw in r.content:
                    line = raw.decode().rstrip("\r\n")
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: ") and kind:
                        yield kind, json.loads(line[6:])
                        kind = ""
        except aiohttp.ClientError as exc:
            raise AdminError(f"the admin API at {self.url} went away: {exc}") from None


def _p(text: str) -> str:
    return quote(text, safe="")


RemoteHandler = Callable[[ApiClient, argparse.Namespace, Console], Awaitable[int]]


async def status(api: ApiClient, args: argparse.Namespace, console: Console) -> int:
    if getattr(args, "watch", False):
        raise AdminError("`status --watch` reads the store; through --api, open the console "
                         "(the API's /console/) instead")
    data = await api.call("GET", "/status")
    emit(console, args, data, Group(_nodes(data), _servers(data)))
    return 0


def _nodes(data: dict[str, Any]) -> Any:
    return table("nodes", ("node", "state", "leader", "hosts"), [
        [n["name"], n["state"], "*" if n["leader"] else "", ", ".join(n.get("virtual_servers", []))]
        for n in data["nodes"]])


def _servers(data: dict[str, Any]) -> Any:
    return table("virtual servers", ("virtual server", "state", "owner", "address", "reason"),
                 [[v["name"], v["state"], v["owner"] or "-", v["address"] or "-", v["reason"]]
                  for v in data["virtual_servers"]])


async def node_list(api: ApiClient, args: argparse.Namespace, console: Console) -> int:
    data = await api.call("GET", "/status")
    emit(console, args, data["nodes"], _nodes(data))
    return 0


async def vs_list(api: ApiClient, args: argparse.Namespace, console: Console) -> int:
    data = await api.call("GET", "/status")
    emit(console, args, data["virtual_servers"], _servers(data))
    return 0


async def explain(api: ApiClient, args: argparse.Namespace, console: Console) -> int:
    data = await api.call("GET", f"/virtual-servers/{_p(args.vs)}/explain")
    emit(console, args, data, data["explanation"])
    return 0


async def node_action(api: ApiClient, args: argparse.Namespace, console: Console) -> int:
    if args.sub not in ("pause", "resume", "evict"):
        raise AdminError(f"`node {args.sub}` runs on the node's own machine; it is not "
                         "available through --api")
    data = await api.call("POST", f"/nodes/{_p(args.name)}/{args.sub}")
    emit(console, args, data, data["done"])
    return 0


async def vs_action(api: ApiClient, args: argparse.Namespace, console: Console) -> int:
    data = await api.call("POST", f"/virtual-servers/{_p(args.vs)}/{args.sub}")
    emit(console, args, data, data["done"])
    return 0


async def resource_action(api: ApiClient, args: argparse.Namespace, console: Console) -> int:
    path = f"/virtual-servers/{_p(args.vs)}/resources/{_p(args.resource)}"
    if args.sub == "remove":
        data = await api.call("DELETE", path)
    else:
        data = await api.call("POST", f"{path}/{args.sub}")
    emit(console, args, data, data["done"])
    return 0


async def vs_move(api: ApiClient, args: argparse.Namespace, console: Console) -> int:
    started = time.monotonic()
    answer = await api.call("POST", f"/virtual-servers/{_p(args.vs)}/move",
                            {"to": args.to} if args.to else {})
    if args.no_wait:
        emit(console, args, answer, answer["done"])
        return 0
    deadline = started + MOVE_TIMEOUT
    while time.monotonic() < deadline:
        vs = await api.call("GET", f"/virtual-servers/{_p(args.vs)}")
        move = vs.get("move") or {}
        if move.get("id") == answer["move_id"] and move.get("done"):
            if move.get("refused"):
                raise AdminError(f"move of {args.vs} not done: {move['refused']}")
            if vs["state"] == "online":
                seconds = time.monotonic() - started
                emit(console, args, {**answer, "owner": vs["owner"], "seconds": seconds},
                     f"{args.vs} is online on {vs['owner']} ({seconds:.2f} s)")
                return 0
        await asyncio.sleep(0.2)
    raise AdminError(f"{args.vs} did not come online within {MOVE_TIMEOUT:.0f} s; see "
                     "`clustermail log`")


async def log(api: ApiClient, args: argparse.Namespace, console: Console) -> int:
    from clustermail.admin.common import emit_line
    from clustermail.admin.local import format_entry
    from clustermail.cluster.eventlog import LogEntry

    def show(data: dict[str, Any]) -> None:
        if args.json:
            emit_line(data)
        else:
            console.print(format_entry(LogEntry(**data)), highlight=False)

    for entry in await api.call("GET", f"/events?limit={max(1, args.n)}"):
        show(entry)
    if args.follow:
        async for kind, data in api.stream("/events/stream"):
            if kind == "log":
                show(data)
    return 0


# --------------------------------------------------------------------------- backups


def _no_dir(args: argparse.Namespace) -> None:
    for option in ("to", "dir"):
        if getattr(args, option, None) is not None:
            raise AdminError(f"--{option} is not available through --api: the admin service "
                             "uses each virtual server's configured backup_path")


async def _long(api: ApiClient, args: argparse.Namespace, method: str, path: str,
                body: dict[str, Any]) -> Any:
    """A call that waits for a backup operation (the server waits up to --timeout)."""
    timeout = float(args.timeout)
    return await api.call(method, path, {**body, "timeout": timeout} if method == "POST"
                          else None, timeout=timeout + 30)


async def backup_create(api: ApiClient, args: argparse.Namespace, console: Console) -> int:
    _no_dir(args)
    if args.cluster:
        if args.vs or args.storage_group or args.incremental:
            raise AdminError("backup create --cluster takes no virtual server, "
                             "--storage-group or --incremental")
        data = await api.call("POST", "/cluster-backups")
    else:
        if not args.vs:
            raise AdminError("give the virtual server to back up (or --cluster)")
        data = await _long(api, args, "POST", f"/virtual-servers/{_p(args.vs)}/backups",
                           {"storage_groups": args.storage_group or [],
                            "incremental": args.incremental})
    emit(console, args, _doc(data), data["text"])
    return 0


def _doc(data: dict[str, Any]) -> dict[str, Any]:
    """The document the store-side command prints (without the API's ``text``)."""
    return {k: v for k, v in data.items() if k != "text"}


async def backup_list(api: ApiClient, args: argparse.Namespace, console: Console) -> int:
    _no_dir(args)
    data = await api.call("GET", "/backups" + (f"?vs={_p(args.vs)}" if args.vs else ""))
    emit(console, args, _doc(data), data["text"])
    return 0


async def backup_verify(api: ApiClient, args: argparse.Namespace, console: Console) -> int:
    _no_dir(args)
    data = await api.call("GET", f"/backups/{_p(args.id)}/verify", timeout=3600)
    emit(console, args, _doc(data), data["text"])
    return 0 if data.get("ok") else 1


async def backup_prune(api: ApiClient, args: argparse.Namespace, console: Console) -> int:
    _no_dir(args)
    data = await api.call("POST", "/backups/prune", {"keep": args.keep, "vs": args.vs})
    emit(console, args, _doc(data), data["text"])
    return 0


async def restore(api: ApiClient, args: argparse.Namespace, console: Console) -> int:
    _no_dir(args)
    if args.cluster:
        raise AdminError("restore --cluster fills an empty coordination store: run it with "
                         "--store, not through --api")
    if not args.vs:
        raise AdminError("give the virtual server to restore (or --cluster)")
    body: dict[str, Any] = {"from": args.from_id, "roll_forward": not args.no_roll_forward,
                            "recovery": args.recovery}
    if args.all:
        body["all"] = True
    if args.database is not None:
        body["database"] = args.database
    if args.until:
        body["until"] = args.until
    data = await _long(api, args, "POST", f"/virtual-servers/{_p(args.vs)}/restore", body)
    emit(console, args, _doc(data), data["text"])
    return 0


async def store_action(api: ApiClient, args: argparse.Namespace, console: Console) -> int:
    vs = _p(args.vs)
    if args.sub == "reset":
        group, sep, db = args.database.partition("/")
        if not sep or not group or not db or "/" in db:
            raise AdminError(f"expected SG/DB such as SG1/DB1, got {args.database!r}")
        if not args.confirm:
            raise AdminError(f"store reset replaces {args.vs} {args.database} with an EMPTY "
                             "database (its file and log are kept beside it); repeat with "
                             "--confirm to do it")
        data = await _long(api, args, "POST",
                           f"/virtual-servers/{vs}/storage/{_p(group)}/databases/{_p(db)}"
                           "/reset", {"confirm": True})
    else:
        query = f"?storage_group={_p(args.storage_group)}" if args.storage_group else ""
        data = await _long(api, args, "DELETE", f"/virtual-servers/{vs}/recovery{query}", {})
    emit(console, args, _doc(data), data["text"])
    return 0


async def user_recover(api: ApiClient, args: argparse.Namespace, console: Console) -> int:
    if not args.from_recovery:
        raise AdminError("say where from: --from-recovery (the recovery storage group)")
    body = {"folder": args.folder, "since": args.since}
    data = await _long(api, args, "POST", f"/users/{_p(args.address)}/recover",
                       {k: v for k, v in body.items() if v is not None})
    emit(console, args, _doc(data), data["text"])
    return 0


#: (command, action) → what runs it through the API.
REMOTE: dict[tuple[str, str | None], RemoteHandler] = {
    ("status", None): status,
    ("explain", None): explain,
    ("log", None): log,
    ("node", "list"): node_list,
    ("node", "pause"): node_action,
    ("node", "resume"): node_action,
    ("node", "evict"): node_action,
    ("node", "start"): node_action,
    ("node", "stop"): node_action,
    ("vs", "list"): vs_list,
    ("vs", "move"): vs_move,
    ("vs", "online"): vs_action,
    ("vs", "offline"): vs_action,
    ("vs", "clear-failures"): vs_action,
    ("resource", "online"): resource_action,
    ("resource", "offline"): resource_action,
    ("resource", "remove"): resource_action,
    ("backup", "create"): backup_create,
    ("backup", "list"): backup_list,
    ("backup", "verify"): backup_verify,
    ("backup", "prune"): backup_prune,
    ("restore", None): restore,
    ("store", "reset"): store_action,
    ("store", "drop-recovery"): store_action,
    ("user", "recover"): user_recover,
}


def remote_handler(args: argparse.Namespace) -> Handler | None:
    """The handler that runs the chosen command through the API: with ``--api URL``, or
    ``CLUSTERMAIL_API_URL`` for a command that supports it; None: use the store."""
    key: tuple[str, str | None] = (str(getattr(args, "command", "")), getattr(args, "sub", None))
    handler = REMOTE.get(key)
    if not getattr(args, "api", None):
        url = os.environ.get("CLUSTERMAIL_API_URL") if handler is not None else None
        if not url:
            return None
        args.api = url
    if handler is None:
        what = " ".join(k for k in key if k)
        raise AdminError(f"`{what}` is not available through --api (available: status, "
                         "explain, log, node pause|resume|evict|list, vs list|move|online|offline|"
                         "clear-failures, resource online|offline|remove, backup "
                         "create|list|verify|prune, restore, store reset|drop-recovery, user "
                         "recover)")

    async def run(args: argparse.Namespace, console: Console) -> int:
        async with ApiClient(args.api) as api:
            return await handler(api, args, console)

    return run
