"""The local cluster: `clustermail up`, `node start`, `node stop` on one machine.

`up` writes the sample cluster's configuration to ``DATA/cluster.toml`` (or
reuses the one there), applies it to the embedded store ``DATA/cluster.db``,
starts one `node run` process per node, and follows the event log until
Ctrl-C, when it stops every process it knows of, by PID. A node process that
dies is not restarted: it stands for a machine that lost power.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from clustermail import private_files
from clustermail.admin import sample_cluster
from clustermail.admin.errors import AdminError
from clustermail.admin.status import build_status
from clustermail.cluster import eventlog, keys, undo
from clustermail.cluster.config import ConfigError, load_config, render_toml
from clustermail.cluster.model import ClusterConfig
from clustermail.cluster.records import ConfigRecord
from clustermail.cluster.view import read_view
from clustermail.coord import Store, open_store
from clustermail.private_files import append_private, make_private_dir, write_private_text

STOP_TIMEOUT = 30.0


def store_url_for(data_dir: Path) -> str:
    return f"sqlite://{data_dir.resolve() / 'cluster.db'}"


def config_path_for(data_dir: Path) -> Path:
    return data_dir / "cluster.toml"


def ensure_config(data_dir: Path, console: Console) -> ClusterConfig:
    """Loads DATA/cluster.toml, writing the sample cluster's there first if missing."""
    path = config_path_for(data_dir)
    if not path.exists():
        write_private_text(path, render_toml(sample_cluster.sample_config()))
        console.print(f"wrote the sample cluster's configuration to [bold]{path}[/]")
    else:
        console.print(f"using the configuration in [bold]{path}[/]")
    try:
        return load_config(path)
    except ConfigError as exc:
        raise AdminError(str(exc)) from exc


async def apply_config(store: Store, config: ClusterConfig) -> int:
    return await store.put(keys.CONFIG, ConfigRecord.of(config).to_store())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive; /proc tells.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def spawn_node(data_dir: Path, store_url: str, name: str) -> subprocess.Popen[bytes]:
    logs = make_private_dir(data_dir / "logs")
    with os.fdopen(append_private(logs / f"{name}.log"), "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "clustermail", "node", "run", "--store", store_url,
             "--name", name, "--data", str(data_dir.resolve())],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            # Its own session: Ctrl-C in the terminal reaches `up`, which then
            # stops the nodes gracefully, instead of killing all at once.
            start_new_session=True,
        )


async def local_node_pids(store: Store) -> dict[str, int]:
    view = await read_view(store)
    here = socket.gethostname()
    return {
        name: rec.pid
        for name, rec in view.nodes.items()
        if rec.host == here and rec.pid and pid_alive(rec.pid)
    }


async def stop_pids(pids: dict[str, int], console: Console, timeout: float = STOP_TIMEOUT) -> None:
    for name, pid in pids.items():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            console.print(f"stopping {name} (pid {pid})…")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids.values()):
        await asyncio.sleep(0.05)
    for name, pid in pids.items():
        if pid_alive(pid):
            console.print(f"{name} (pid {pid}) did not stop in {timeout:.0f} s: killing it")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


async def wait_reaped(procs: list[subprocess.Popen[bytes]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for p in procs:
        while p.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)


def layout_table(config: ClusterConfig, status: dict[str, Any]) -> Table:
    table = Table(title=f"cluster {config.name} ({config.placement.value})")
    for col in ("virtual server", "address", "state", "owner", "preferred owners", "reason"):
        table.add_column(col)
    for vs in status["virtual_servers"]:
        model = config.virtual_server(vs["name"])
        prefs = ", ".join(model.preferred_owners) if model else ""
        table.add_row(vs["name"], vs["address"] or "", vs["state"], vs["owner"] or "-", prefs,
                      vs["reason"])
    return table


def check_data_dir(data_dir: Path, console: Console) -> None:
    """Refuses a data directory others can write; makes private what others can read."""
    try:
        changed = private_files.check_data_dir(data_dir, trusted=(undo.UNDO_DIR,))
    except (private_files.UnsafePathError, OSError) as exc:
        raise AdminError(f"refusing to use the data directory: {exc}") from None
    if changed:
        console.print(f"took group and others' access away from {changed} file(s) and "
                      f"folder(s) in {data_dir}")


async def up(data_dir: Path, console: Console) -> int:
    check_data_dir(data_dir, console)
    # SIGTERM stops the cluster the same way Ctrl-C does.
    task = asyncio.current_task()
    if task is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    config = ensure_config(data_dir, console)
    url = store_url_for(data_dir)
    store = await open_store(url)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        running = await local_node_pids(store)
        if running:
            raise AdminError(
                f"a local cluster is already running in {data_dir} (nodes "
                f"{', '.join(f'{n} pid {p}' for n, p in sorted(running.items()))}); "
                "stop it first (Ctrl-C in its terminal)"
            )
        await apply_config(store, config)
        start_rev = await store.revision()
        for node in config.node_names:
            proc = spawn_node(data_dir, url, node)
            procs.append(proc)
            console.print(f"started {node} (pid {proc.pid}, log {data_dir / 'logs' / node}.log)")
        await _wait_online(store, config, console, procs)
        console.print(layout_table(config, build_status(await read_view(store))))
        if _serves_mail(config):
            await _seed_users(store, config, data_dir, console)
        if any(r.type == "admin_service" for vs in config.virtual_servers for r in vs.resources):
            from clustermail.admin.console_account import seed_admin

            await seed_admin(store, config, data_dir, console)
        console.print(
            "[dim]following the cluster log; Ctrl-C stops the cluster. In another terminal: "
            f"clustermail status --data {data_dir}[/]"
        )
        await _follow(store, start_rev, console)
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    finally:
        # A second Ctrl-C must not abandon the nodes half-stopped.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        console.print(f"stopping the local cluster (within {STOP_TIMEOUT:.0f} s; "
                      "further Ctrl-C is ignored)…")
        with contextlib.suppress(Exception):
            pids = await local_node_pids(store)
            known = set(pids.values())
            pids.update({f"pid {p.pid}": p.pid for p in procs
                         if p.poll() is None and p.pid not in known})
            await stop_pids(pids, console)
        await wait_reaped(procs, 5.0)
        await store.close()
        console.print("stopped.")
    return 0


def _serves_mail(config: ClusterConfig) -> bool:
    return any(r.type == "mail_store" for vs in config.virtual_servers for r in vs.resources)


async def _seed_users(
    store: Store, config: ClusterConfig, data_dir: Path, console: Console
) -> None:
    """The demo's domain and one user per virtual server; passwords shown once and
    kept (owner-readable only) in DATA/passwords.json."""
    from clustermail.mail.directory import Directory
    from clustermail.mail.directory.model import DirectoryError

    directory = Directory(store)
    passwords = sample_cluster.load_passwords(data_dir)
    created: dict[str, str] = {}
    try:
        if not await directory.is_local_domain(sample_cluster.DOMAIN):
            await directory.add_domain(sample_cluster.DOMAIN)
        for vs, user in sample_cluster.USERS.items():
            if config.virtual_server(vs) is None:
                continue
            address = f"{user}@{sample_cluster.DOMAIN}"
            if await directory.mailbox(address) is None:
                password = sample_cluster.new_password()
                await directory.add_mailbox(address, password=password, server=vs,
                                            display_name=user.capitalize())
                created[address] = password
    except DirectoryError as exc:
        console.print(f"[yellow]could not create the demo users: {exc}[/]")
        return
    finally:
        await directory.close()
    if created:
        passwords.update(created)
        sample_cluster.save_passwords(data_dir, passwords)
    table = Table(title=f"mail users (domain {sample_cluster.DOMAIN})")
    for col in ("virtual server", "address", "user", "password"):
        table.add_column(col, no_wrap=True)
    for vs, user in sample_cluster.USERS.items():
        server = config.virtual_server(vs)
        if server is None:
            continue
        address = next((str(r.properties.get("address")) for r in server.resources
                        if r.type == "ip_address"), "?")
        login = f"{user}@{sample_cluster.DOMAIN}"
        table.add_row(vs, address, login, created.get(login, "(in passwords.json)"))
    console.print(table)
    p = sample_cluster.PORTS
    console.print(
        f"on each address: SMTP {p['smtp']}, submission {p['submission']} (STARTTLS) and "
        f"{p['submissions']} (TLS), IMAP {p['imap']} and {p['imaps']} (TLS), "
        f"POP3 {p['pop3']} and {p['pop3s']} (TLS); plaintext login is allowed on loopback"
    )
    if created:
        console.print(f"passwords shown once; kept in {sample_cluster.passwords_path(data_dir)}")


async def _wait_online(
    store: Store, config: ClusterConfig, console: Console, procs: list[subprocess.Popen[bytes]]
) -> None:
    """Shows start-up progress until every virtual server is placed and settled."""
    # The cluster's own group is shown apart (the console line), not counted here.
    servers = {vs.name for vs in config.virtual_servers if vs.takes_room}
    total = len(servers)
    deadline = time.monotonic() + 60
    shown = -1
    while time.monotonic() < deadline:
        status = build_status(await read_view(store))
        online = sum(1 for v in status["virtual_servers"]
                     if v["state"] == "online" and v["name"] in servers)
        if online != shown:
            console.print(f"virtual servers online: {online}/{total}")
            shown = online
        if online == total:
            return
        dead = [p.pid for p in procs if p.poll() is not None]
        if dead:
            raise AdminError(
                f"node process(es) {dead} exited during start-up; see {store.url} logs "
                "under the data directory's logs/ folder"
            )
        await asyncio.sleep(0.1)
    console.print("[yellow]not every virtual server came online within 60 s; see the log[/]")


async def _follow(store: Store, start: int, console: Console) -> None:
    async for ev in store.watch(keys.LOG, start):
        if ev.value:
            entry = eventlog.parse(ev.key, ev.value)
            console.print(format_entry(entry))


def format_entry(entry: eventlog.LogEntry) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(entry.time))
    return f"{stamp}.{int(entry.time * 1000) % 1000:03d} {entry.node:8} {entry.message}"


async def node_start(data_dir: Path, store_url: str, name: str, console: Console) -> int:
    store = await open_store(store_url)
    try:
        view = await read_view(store)
        if name not in view.node_names():
            raise AdminError(f"no node named {name!r} (nodes: {', '.join(view.node_names())})")
        running = await local_node_pids(store)
        if name in running:
            raise AdminError(f"{name} is already running (pid {running[name]})")
        proc = spawn_node(data_dir, store_url, name)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if name in (await read_view(store)).nodes:
                console.print(f"{name} started (pid {proc.pid})")
                return 0
            if proc.poll() is not None:
                raise AdminError(f"{name} exited at once (code {proc.returncode}); see "
                                 f"{data_dir / 'logs' / name}.log")
            await asyncio.sleep(0.05)
        raise AdminError(f"{name} did not join within 15 s; see {data_dir / 'logs' / name}.log")
    finally:
        await store.close()


async def node_stop(store_url: str, name: str, console: Console) -> int:
    store = await open_store(store_url)
    try:
        view = await read_view(store)
        if name not in view.node_names():
            raise AdminError(f"no node named {name!r} (nodes: {', '.join(view.node_names())})")
        running = await local_node_pids(store)
        if name not in running:
            raise AdminError(f"{name} is not running on this machine")
        await stop_pids({name: running[name]}, console)
        console.print(f"{name} stopped")
        return 0
    finally:
        await store.close()
