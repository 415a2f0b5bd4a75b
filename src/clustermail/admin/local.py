"""The local cluster: `clustermail up`, `node start`, `node stop` on one machine.

`up` takes the data directory for itself (``DATA/up.lock``), checks that no
node agent of an earlier start still runs there and that the virtual servers'
addresses and ports are free, writes the sample cluster's configuration to
``DATA/cluster.toml`` (or reuses the one there), applies it to the store —
the embedded ``DATA/cluster.db``, the etcd cluster of ``--store``, or with
``--etcd`` a private 3-member etcd cluster it starts itself
(:mod:`clustermail.admin.local_etcd`); see :mod:`clustermail.admin.local_store`
for how later commands find it — starts one `node run` process per node on
that store, and follows the event log. A store that does not answer is
refused before anything starts.

`up` owns its nodes: Ctrl-C (SIGINT), SIGTERM and SIGHUP (the terminal closed)
stop every node agent — and through them every resource host — within the
stop timeout, after which what is left is SIGKILLed by PID
(:mod:`clustermail.admin.local_stop`). Its nodes run with ``--stop-with``
its PID, so if `up` itself is killed they stop on their own within seconds; the
private etcd members follow the same rules and stop after the nodes. A node
process that dies is not restarted: it stands for a machine that lost power.
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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from clustermail import private_files
from clustermail.admin import dir_lock, local_store, preflight, sample_cluster
from clustermail.admin.errors import AdminError
from clustermail.admin.local_stop import Processes, stop_processes
from clustermail.admin.status import build_status
from clustermail.cluster import eventlog, keys, undo
from clustermail.cluster.config import ConfigError, load_config, render_toml
from clustermail.cluster.model import ClusterConfig
from clustermail.cluster.records import ConfigRecord
from clustermail.cluster.view import read_view
from clustermail.coord import Store, open_store
from clustermail.private_files import append_private, make_private_dir, write_private_text

if TYPE_CHECKING:
    from clustermail.admin import local_etcd

#: Seconds the node agents get to stop gracefully before they are killed.
STOP_TIMEOUT = 30.0
#: The signals that stop `up` and with it the local cluster.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def store_url_for(data_dir: Path) -> str:
    """The store of the local cluster under ``data_dir`` (see local_store)."""
    return local_store.default_url(data_dir)


def has_cluster(data_dir: Path) -> bool:
    """Whether a local cluster was started under ``data_dir`` (on any store)."""
    return local_store.has_cluster(data_dir)


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


def spawn_node(
    data_dir: Path, store_url: str, name: str, stop_with: int | None = None
) -> subprocess.Popen[bytes]:
    """Starts `node run` for ``name``; with ``stop_with``, the node stops when that
    process (the `up` that owns the local cluster) is gone."""
    logs = make_private_dir(data_dir / "logs")
    owner = ["--stop-with", str(stop_with)] if stop_with is not None else []
    with os.fdopen(append_private(logs / f"{name}.log"), "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "clustermail", "node", "run", "--store", store_url,
             "--name", name, "--data", str(data_dir.resolve()), *owner],
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


async def local_processes(store: Store | None, procs: list[subprocess.Popen[bytes]],
                          data_dir: Path) -> Processes:
    """Every process of the local cluster this machine knows of: the agents we
    started, those holding a node lock in ``data_dir``, those the store lists on
    this machine, and the resource hosts and resource processes of the status."""
    names: dict[int, str] = {p.pid: f"pid {p.pid}" for p in procs if p.poll() is None}
    for name, held in dir_lock.node_holders(data_dir).items():
        if held.pid:
            names[held.pid] = name
    found = Processes()
    view = None
    if store is not None:
        # Whatever is wrong with the store (wedged, its file deleted), the stop goes on
        # with the processes known without it.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(3):
                view = await read_view(store)
    if view is not None:
        here = socket.gethostname()
        for name, rec in view.nodes.items():
            if rec.host == here and rec.pid and _is_node_agent(rec.pid):
                names[rec.pid] = name
        for vs, status in view.status.items():
            if status.pid:
                found.add_other(f"{vs} resource host", status.pid)
            for res, pid in status.resource_pids.items():
                found.add_other(f"{vs}/{res}", pid)
    for pid, name in names.items():
        found.add_agent(name, pid)
    return found


def _is_node_agent(pid: int) -> bool:
    """Whether ``pid`` runs `clustermail node run` (a store record may be stale)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"node" in argv and b"run" in argv and any(b"clustermail" in a for a in argv)


async def stop_local(
    store: Store | None, procs: list[subprocess.Popen[bytes]], data_dir: Path,
    say: Callable[[str], None], timeout: float = STOP_TIMEOUT,
) -> None:
    """Stops the local cluster's processes: gracefully, then by force (see local_stop)."""
    found = await local_processes(store, procs, data_dir)

    def reap() -> None:
        for p in procs:
            p.poll()

    left = await stop_processes(found, say, timeout, reap=reap)
    if left:
        say(f"could not stop {', '.join(left)}")


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


class StopSignals:
    """Ctrl-C, SIGTERM and SIGHUP stop `up` and, through its stop, the local cluster.

    The first one cancels ``task`` (whose ``finally`` stops the cluster); later ones
    are only acknowledged, so the stop is never abandoned half-way. A signal that was
    ignored when `up` started (``nohup``, a background job of a script) stays
    ignored. After SIGHUP the terminal is gone: what `up` still has to say goes to
    ``DATA/logs/up.log``."""

    def __init__(self, task: asyncio.Task[Any], data_dir: Path, say: Callable[[str], None]) -> None:
        self.task = task
        self.data_dir = data_dir
        self.say = say
        self.received: str | None = None
        self._installed: list[signal.Signals] = []

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in STOP_SIGNALS:
            if signal.getsignal(sig) is signal.SIG_IGN:
                continue
            loop.add_signal_handler(sig, self._received, sig)
            self._installed.append(sig)

    def remove(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._installed:
            loop.remove_signal_handler(sig)
        self._installed.clear()

    def _received(self, sig: signal.Signals) -> None:
        if sig == signal.SIGHUP:
            self._leave_terminal()
        if self.received is None:
            self.received = sig.name
            self.task.cancel()
        else:
            self.say(f"{sig.name}: already stopping the local cluster")

    def _leave_terminal(self) -> None:
        with contextlib.suppress(OSError):
            logs = self.data_dir / "logs"
            logs.mkdir(parents=True, exist_ok=True)
            fd = os.open(logs / "up.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.close(fd)


def take_data_dir(data_dir: Path) -> dir_lock.DirLock:
    """``DATA/up.lock`` for this `up`, or the one clear line that says who has it."""
    try:
        return dir_lock.DirLock(dir_lock.up_lock_path(data_dir), "clustermail up").acquire()
    except dir_lock.LockHeld as exc:
        raise preflight.in_use_by_up(data_dir, exc.holder) from None


async def up(data_dir: Path, console: Console, stop_timeout: float = STOP_TIMEOUT, *,
             store_url: str | None = None, private_etcd: bool = False) -> int:
    """Runs the local cluster until a stop signal. ``store_url`` (``--store``) runs it
    on that store; ``private_etcd`` (``--etcd``) on a private etcd cluster started
    here; neither, on the data directory's own store."""
    from clustermail.admin import local_etcd  # only `up` needs it: commands start faster

    check_data_dir(data_dir, console)
    task = asyncio.current_task()
    assert task is not None

    def say(text: str) -> None:
        with contextlib.suppress(OSError):  # a terminal that went away
            console.print(text, highlight=False)

    signals = StopSignals(task, data_dir, say)
    signals.install()
    store: Store | None = None
    procs: list[subprocess.Popen[bytes]] = []
    lock: dir_lock.DirLock | None = None
    etcd: local_etcd.PrivateEtcd | None = None
    try:
        try:
            # Nothing is started until every check has passed.
            lock = take_data_dir(data_dir)
            preflight.check_no_agents(data_dir)
            before = local_store.recorded(data_dir)
            if private_etcd or (store_url is None and before is not None
                                and before.private_etcd):
                plan: local_etcd.Plan | None = local_etcd.load_or_plan(data_dir)
            else:
                plan = None
            choice = local_store.choose(data_dir, store_url,
                                        plan.url if plan is not None else None)
            config = ensure_config(data_dir, console)
            preflight.check_ports(config, config_path_for(data_dir))
            if plan is not None:
                binary = local_etcd.check(data_dir, plan)
                say(f"starting a private etcd cluster: {len(plan.members)} members on "
                    f"{local_etcd.HOST}, data in {local_etcd.folder(data_dir)}")
                etcd = local_etcd.PrivateEtcd(data_dir, plan)
                etcd.start(binary, os.getpid())
                await etcd.wait_healthy(say)
            store = await local_store.connect(choice)
            url = choice.url
            if choice != local_store.StoreChoice(local_store.sqlite_url(data_dir)):
                local_store.record(data_dir, choice)
                if before is None:
                    say(f"the cluster's store is {choice.describe()}; recorded in "
                        f"{local_store.record_path(data_dir)} for later commands")
                elif store_url is None and not private_etcd:
                    say(f"running on {choice.describe()}, as recorded in "
                        f"{local_store.record_path(data_dir)}")
            running = await local_node_pids(store)
            if running:
                raise AdminError(
                    f"a local cluster is already running in {data_dir} (nodes "
                    f"{', '.join(f'{n} pid {p}' for n, p in sorted(running.items()))}); "
                    f"stop it first (`kill {' '.join(str(p) for p in running.values())}`)"
                )
            await _run(store, url, config, data_dir, console, procs)
        except asyncio.CancelledError:
            if signals.received is None:
                raise
            task.uncancel()
    finally:
        signals.received = signals.received or "stop"  # later signals only acknowledged
        if procs:
            say(f"stopping the local cluster (within {stop_timeout:g} s; "
                "further Ctrl-C is ignored)…")
            await stop_local(store, procs, data_dir, say, stop_timeout)
            say("stopped.")
        if store is not None:
            with contextlib.suppress(Exception):
                await store.close()
        if etcd is not None:
            # After the nodes: they stop through this store.
            await etcd.stop(say)
        if lock is not None:
            lock.release()
        signals.remove()
    return 0


async def _run(store: Store, url: str, config: ClusterConfig, data_dir: Path, console: Console,
               procs: list[subprocess.Popen[bytes]]) -> None:
    await apply_config(store, config)
    start_rev = await store.revision()
    for node in config.node_names:
        proc = spawn_node(data_dir, url, node, stop_with=os.getpid())
        procs.append(proc)
        console.print(f"started {node} (pid {proc.pid}, log {data_dir / 'logs' / node}.log)")
    await _wait_online(store, config, console, procs)
    console.print(layout_table(config, build_status(await read_view(store))))
    if _serves_mail(config):
        await _seed_users(store, config, data_dir, console)
    if any(r.type == "admin_service" for vs in config.virtual_servers for r in vs.resources):
        from clustermail.admin.console_account import console_url, seed_admin

        address = console_url(config)
        if address is not None:
            # The console's address is shown once it answers (the cluster group may
            # still be starting).
            await _wait_answers(address, console)
        await seed_admin(store, config, data_dir, console)
    console.print(
        "[dim]following the cluster log; Ctrl-C stops the cluster. In another terminal: "
        f"clustermail status --data {data_dir}[/]"
    )
    await _follow(store, start_rev, console)


#: Seconds `up` waits for the admin service before it shows its address anyway.
ADMIN_WAIT = 60.0


def _answers(url: str) -> bool:
    """Whether an HTTP(S) server answers at ``url`` (any status counts)."""
    import ssl
    import urllib.error
    import urllib.request

    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only a probe: nothing is sent or trusted
    try:
        with urllib.request.urlopen(url, timeout=2, context=context):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


async def _wait_answers(url: str, console: Console) -> None:
    deadline = time.monotonic() + ADMIN_WAIT
    if await asyncio.to_thread(_answers, url):
        return
    console.print("waiting for the admin service (the cluster group) to answer…")
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        if await asyncio.to_thread(_answers, url):
            return
    console.print(f"[yellow]the admin service did not answer within {ADMIN_WAIT:g} s; "
                  "see `clustermail status` and the log[/]")


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
    held = dir_lock.holder(dir_lock.node_lock_path(data_dir, name))
    if held is not None:
        raise AdminError(f"{name} is already running (pid {held.pid}): stop it with "
                         f"`clustermail node stop {name}`")
    # A node started into a running `up` belongs to it like the others.
    owner = dir_lock.holder(dir_lock.up_lock_path(data_dir))
    stop_with = owner.pid if owner is not None and owner.pid else None
    store = await open_store(store_url)
    try:
        view = await read_view(store)
        if name not in view.node_names():
            raise AdminError(f"no node named {name!r} (nodes: {', '.join(view.node_names())})")
        running = await local_node_pids(store)
        if name in running:
            raise AdminError(f"{name} is already running (pid {running[name]})")
        proc = spawn_node(data_dir, store_url, name, stop_with=stop_with)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if name in (await read_view(store)).nodes:
                console.print(f"{name} started (pid {proc.pid})" + (
                    f", stops with clustermail up (pid {stop_with})" if stop_with else ""))
                return 0
            if proc.poll() is not None:
                raise AdminError(f"{name} exited at once (code {proc.returncode}); see "
                                 f"{data_dir / 'logs' / name}.log")
            await asyncio.sleep(0.05)
        raise AdminError(f"{name} did not join within 15 s; see {data_dir / 'logs' / name}.log")
    finally:
        await store.close()


async def node_stop(data_dir: Path, store_url: str, name: str, console: Console) -> int:
    store = await open_store(store_url)
    try:
        view = await read_view(store)
        if name not in view.node_names():
            raise AdminError(f"no node named {name!r} (nodes: {', '.join(view.node_names())})")
        found = Processes()
        held = dir_lock.holder(dir_lock.node_lock_path(data_dir, name))
        if held is not None and held.pid:
            found.add_agent(name, held.pid)
        running = await local_node_pids(store)
        if name in running and _is_node_agent(running[name]):
            found.add_agent(name, running[name])
        if not found.agents:
            raise AdminError(f"{name} is not running on this machine")
        for vs, status in view.status.items():
            if status.node == name and status.pid:
                found.add_other(f"{vs} resource host", status.pid)

        def say(text: str) -> None:
            console.print(text, highlight=False)

        left = await stop_processes(found, say, STOP_TIMEOUT, reap=lambda: None)
        if left:
            raise AdminError(f"could not stop {', '.join(left)}")
        console.print(f"{name} stopped")
        return 0
    finally:
        await store.close()
