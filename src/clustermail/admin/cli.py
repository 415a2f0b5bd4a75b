"""`clustermail` — Cluster Administrator on the command line.

Every command takes ``--store URL`` (default: the local cluster's store under
``--data DIR``) and ``--json``. Errors are one clear line on stderr and a
non-zero exit; no traceback reaches the user.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.table import Table

from clustermail import logutil
from clustermail.admin import (
    admin_user_cli,
    backup_cli,
    dir_lock,
    intents,
    local,
    queue_cli,
    validate,
    validate_node,
)
from clustermail.admin.common import (
    Handler,
    Parser,
    add_group,
    command_adder,
    emit,
    emit_line,
    json_text,
    store_url,
    table,
    with_store,
)
from clustermail.admin.errors import AdminError
from clustermail.admin.lab import cli as lab_cli
from clustermail.admin.mail_cli import add_mail_commands
from clustermail.admin.status import build_status
from clustermail.cluster import eventlog, keys
from clustermail.cluster.config import ConfigError, load_config
from clustermail.cluster.view import read_view
from clustermail.coord import CoordError, open_store
from clustermail.private_files import make_private_dir, restrict_umask


def build_parser() -> Parser:
    parser = Parser(
        prog="clustermail",
        description="A highly available mail system: virtual mail servers that fail over.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    add = command_adder(sub)

    p = add("up", "start the default local cluster (4 nodes, 3 virtual servers) and follow it; "
            "Ctrl-C, SIGTERM or SIGHUP stops it. With --store etcd://... it runs on that "
            "etcd cluster, with --etcd on a private 3-member etcd cluster it starts", cmd_up)
    p.add_argument("--etcd", action="store_true",
                   help="start a private 3-member etcd cluster on 127.0.0.1 (data under "
                        "--data) and run the cluster on it; it stops with the cluster")
    p.add_argument("--stop-timeout", type=_positive_seconds, default=local.STOP_TIMEOUT,
                   metavar="SECONDS",
                   help="how long the nodes get to stop gracefully before they are killed "
                        f"(default {local.STOP_TIMEOUT:g})")
    p = add("status", "nodes and virtual servers at a glance", cmd_status)
    p.add_argument("--watch", "-w", action="store_true",
                   help="redraw the cluster picture live until Ctrl-C")
    p = add("explain", "why a virtual server runs where it runs (or why it does not)", cmd_explain)
    p.add_argument("vs")
    p = add("log", "the cluster event log", cmd_log)
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new entries")
    p.add_argument("-n", type=int, default=50, help="how many recent entries (default 50)")

    csub = add_group(sub, "config", "check or apply a cluster configuration file")
    p = add("check", "validate a configuration file", cmd_config_check, csub)
    p.add_argument("file", type=Path)
    p = add("apply", "validate a configuration file and apply it to the cluster", cmd_config_apply,
            csub)
    p.add_argument("file", type=Path)
    add("show", "print the applied configuration", cmd_config_show, csub)

    nsub = add_group(sub, "node", "nodes: run, list, add, evict, pause, resume, start, stop")
    p = add("run", "run this machine's node agent (foreground)", cmd_node_run, nsub)
    p.add_argument("--name", required=True)
    p.add_argument("--stop-with", type=int, metavar="PID",
                   help="stop when process PID exits (`clustermail up` sets it for the nodes "
                        "of the local cluster; a real machine's node runs on its own)")
    p = add("add", "add a node to the cluster configuration (then start it: node run)",
            cmd_node_add, nsub)
    p.add_argument("name")
    p.add_argument("--possible-owner-of", nargs="+", default=[], metavar="VS",
                   help="virtual servers it may run (those with a list of possible owners)")
    p.add_argument("--preferred-owner-of", nargs="+", default=[], metavar="VS",
                   help="virtual servers that prefer it first (they fail back to it per "
                        "their failback policy)")
    add("list", "list nodes", cmd_node_list, nsub)
    for action, text in [
        ("pause", "pause a node: it keeps what it runs but takes nothing new"),
        ("resume", "resume a paused node"),
        ("evict", "remove a node that is down from the cluster configuration"),
        ("start", "start a node of the local cluster"),
        ("stop", "stop a node of the local cluster gracefully (its virtual servers move first)"),
    ]:
        p = add(action, text, cmd_node_action, nsub)
        p.add_argument("name")

    vsub = add_group(sub, "vs", "virtual servers: list, move, online, offline, clear-failures")
    add("list", "list virtual servers", cmd_vs_list, vsub)
    p = add("move", "move a virtual server to another node (planned failover)", cmd_vs_move, vsub)
    p.add_argument("vs")
    p.add_argument("--to", help="target node (default: the best other node)")
    p.add_argument("--no-wait", action="store_true", help="return without waiting for the move")
    for action, text in [
        ("online", "bring a virtual server online (clears an administrative offline)"),
        ("offline", "take a virtual server offline and keep it offline"),
        ("clear-failures", "forget a virtual server's failover history so it may start again"),
    ]:
        p = add(action, text, cmd_vs_action, vsub)
        p.add_argument("vs")

    rsub = add_group(sub, "resource", "resources of virtual servers: list, online, offline")
    p = add("list", "list resources", cmd_resource_list, rsub)
    p.add_argument("vs", nargs="?")
    for action, text in [
        ("online", "bring a resource (and what depends on it) back online"),
        ("offline", "take a resource (and what depends on it) offline"),
        ("remove", "remove a resource from a virtual server (taken offline live)"),
    ]:
        p = add(action, text, cmd_resource_action, rsub)
        p.add_argument("vs")
        p.add_argument("resource")
    p = add("add", "add a resource to a virtual server (brought online live), "
            "e.g. `resource add mail1 pop3` enables POP3", cmd_resource_add, rsub)
    p.add_argument("vs")
    p.add_argument("type", help="resource type: pop3, imap4, smtp, process, ...")
    p.add_argument("--name", help="resource name (default: the type)")
    p.add_argument("--depends-on", action="append", metavar="RESOURCE",
                   help="a resource it depends on (repeatable; default for mail "
                        "protocols: the mail store and the address)")
    p.add_argument("--property", "-p", action="append", default=[], metavar="KEY=VALUE",
                   help="a property (repeatable); values are TOML: 2110, true, \"text\"")
    add_mail_commands(sub, add)
    queue_cli.add_commands(sub, add, Parser)
    backup_cli.add_commands(sub, add)
    lab_cli.add_commands(sub, add)
    validate.add_commands(sub, add)
    admin_user_cli.add_commands(sub, add)
    return parser


# ---------------------------------------------------------------------- commands


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of seconds above 0")
    return value


async def cmd_up(args: argparse.Namespace, console: Console) -> int:
    if args.etcd and args.store:
        raise AdminError("give --store URL (an etcd cluster that runs) or --etcd (a private "
                         "one that up starts), not both", exit_code=2)
    return await local.up(args.data, console, stop_timeout=args.stop_timeout,
                          store_url=args.store, private_etcd=args.etcd)


async def cmd_status(args: argparse.Namespace, console: Console) -> int:
    if args.watch:
        from clustermail.admin.watch import watch

        async with await with_store(args) as store:
            return await watch(store, console)
    async with await with_store(args) as store:
        status = build_status(await intents.current_view(store))
    nodes = table("nodes", ("node", "state", "pid", "leader"), [
        [n["name"], n["state"], str(n["pid"] or "-"), "*" if n["leader"] else ""]
        for n in status["nodes"]])
    emit(console, args, status, Group(nodes, _vs_table(status)))
    return 0


def _vs_table(status: dict[str, Any]) -> Table:
    return table("virtual servers",
                 ("virtual server", "state", "owner", "address", "pid", "reason"),
                 [[v["name"], v["state"], v["owner"] or "-", v["address"] or "-",
                   str(v["pid"] or "-"), v["reason"]] for v in status["virtual_servers"]])


async def cmd_explain(args: argparse.Namespace, console: Console) -> int:
    from clustermail.cluster.leader import explain_vs

    async with await with_store(args) as store:
        view = await intents.current_view(store)
        intents.check_vs(view, args.vs)
        text = explain_vs(view, args.vs, time.time())
    emit(console, args, {"vs": args.vs, "explanation": text}, text)
    return 0


async def cmd_log(args: argparse.Namespace, console: Console) -> int:
    async with await with_store(args) as store:
        start = await store.revision() + 1
        entries = await eventlog.read(store, args.n)
        for e in entries:
            _print_entry(args, console, e)
        if args.follow:
            async for ev in store.watch(keys.LOG, start):
                if ev.value:
                    _print_entry(args, console, eventlog.parse(ev.key, ev.value))
    return 0


def _print_entry(args: argparse.Namespace, console: Console, entry: eventlog.LogEntry) -> None:
    if args.json:
        emit_line(asdict(entry))  # a stream: one JSON object per line
    else:
        console.print(local.format_entry(entry), highlight=False)


async def cmd_config_check(args: argparse.Namespace, console: Console) -> int:
    config = _load(args.file)
    nodes, vs = len(config.nodes), len(config.virtual_servers)
    emit(console, args, config.to_dict(),
         f"{args.file}: valid ({nodes} node{'s' * (nodes != 1)}, "
         f"{vs} virtual server{'s' * (vs != 1)}, "
         f"{config.placement.value}, timing {config.timing.profile})")
    return 0


def _load(path: Path) -> Any:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise AdminError(str(exc)) from exc
    except OSError as exc:
        raise AdminError(f"{path}: {exc.strerror}") from exc


async def cmd_config_apply(args: argparse.Namespace, console: Console) -> int:
    config = _load(args.file)
    if not args.store:
        make_private_dir(args.data)
    store = await open_store(store_url(args))
    try:
        rev = await local.apply_config(store, config)
    finally:
        await store.close()
    emit(console, args, {"applied": str(args.file), "revision": rev},
         f"applied {args.file} (store revision {rev})")
    return 0


async def cmd_config_show(args: argparse.Namespace, console: Console) -> int:
    async with await with_store(args) as store:
        view = await intents.current_view(store)
    print(json_text(view.config))  # JSON with or without --json
    return 0


async def cmd_node_run(args: argparse.Namespace, console: Console) -> int:
    from clustermail.cluster import owner_watch
    from clustermail.cluster.agent import AgentError, NodeAgent

    # Before anything is written into it: a data directory others can write is refused.
    local.check_data_dir(args.data, console)
    # Held while the agent runs: a second agent of this node on this machine, or an
    # `up` on this data directory, is refused naming our PID.
    lock = dir_lock.DirLock(dir_lock.node_lock_path(args.data, args.name),
                            f"node agent {args.name}")
    try:
        lock.acquire()
    except dir_lock.LockHeld as exc:
        raise AdminError(f"{args.name} is already running on this machine (pid "
                         f"{exc.holder.pid}): stop it with `clustermail node stop "
                         f"{args.name}`") from None
    try:
        if args.stop_with is not None:
            try:
                owner_watch.stop_with(args.stop_with)
            except owner_watch.OwnerWatchError as exc:
                raise AdminError(str(exc)) from None
        agent = NodeAgent(store_url(args), args.name, args.data,
                          request_handlers=validate_node.HANDLERS)
        try:
            return await agent.run()
        except AgentError as exc:
            raise AdminError(str(exc)) from exc
    finally:
        lock.release()


async def cmd_node_list(args: argparse.Namespace, console: Console) -> int:
    async with await with_store(args) as store:
        status = build_status(await intents.current_view(store))
    rows = []
    for n in status["nodes"]:
        hosts = [v["name"] for v in status["virtual_servers"] if v["owner"] == n["name"]]
        rows.append([n["name"], n["state"], str(n["pid"] or "-"), "*" if n["leader"] else "",
                     ", ".join(hosts)])
    emit(console, args, status["nodes"],
         table("nodes", ("node", "state", "pid", "leader", "hosts"), rows))
    return 0


async def cmd_node_add(args: argparse.Namespace, console: Console) -> int:
    async with await with_store(args) as store:
        config = await intents.add_node(store, args.name,
                                        possible_owner_of=args.possible_owner_of,
                                        preferred_owner_of=args.preferred_owner_of)
    owners = {v.name: list(v.preferred_owners) for v in config.virtual_servers
              if args.name in v.preferred_owners}
    emit(console, args, {"added": args.name, "preferred_owner_of": owners},
         f"{args.name} added to the cluster configuration; start it on its machine: "
         f"clustermail node run --name {args.name} (or clustermail node start {args.name} in "
         "the local cluster)")
    return 0


async def cmd_node_action(args: argparse.Namespace, console: Console) -> int:
    if args.sub == "start":
        return await local.node_start(args.data, store_url(args), args.name, console)
    if args.sub == "stop":
        return await local.node_stop(args.data, store_url(args), args.name, console)
    async with await with_store(args) as store:
        if args.sub == "evict":
            await intents.evict_node(store, args.name)
            console.print(f"{args.name} evicted from the cluster configuration")
            return 0
        await intents.pause_node(store, args.name, args.sub == "pause")
    console.print(f"{args.name} {'paused' if args.sub == 'pause' else 'resumed'}")
    return 0


async def cmd_vs_list(args: argparse.Namespace, console: Console) -> int:
    async with await with_store(args) as store:
        status = build_status(await intents.current_view(store))
    emit(console, args, status["virtual_servers"], _vs_table(status))
    return 0


async def cmd_vs_move(args: argparse.Namespace, console: Console) -> int:
    async with await with_store(args) as store:
        move_id = await intents.move_vs(store, args.vs, args.to)
        if args.no_wait:
            console.print(f"move of {args.vs} requested")
            return 0
        started = time.monotonic()
        deadline = started + 60
        while time.monotonic() < deadline:
            view = await read_view(store)
            refused = intents.move_answer(view, args.vs, move_id)
            status = build_status(view)
            vs = next(v for v in status["virtual_servers"] if v["name"] == args.vs)
            target = view.assignment(args.vs).node
            if refused == "" and vs["state"] == "online" and vs["owner"] == target:
                console.print(f"{args.vs} is online on {vs['owner']} "
                              f"({time.monotonic() - started:.2f} s)")
                return 0
            if refused:
                raise AdminError(f"move of {args.vs} not done: {refused}")
            await asyncio.sleep(0.05)
        raise AdminError(f"{args.vs} did not come online within 60 s; see `clustermail log`")


async def cmd_vs_action(args: argparse.Namespace, console: Console) -> int:
    async with await with_store(args) as store:
        if args.sub == "clear-failures":
            await intents.clear_failures(store, args.vs)
            console.print(f"failover history of {args.vs} cleared")
        else:
            await intents.set_vs_offline(store, args.vs, args.sub == "offline")
            console.print(f"{args.vs}: {args.sub} requested")
    return 0


async def cmd_resource_list(args: argparse.Namespace, console: Console) -> int:
    async with await with_store(args) as store:
        view = await intents.current_view(store)
        if args.vs:
            intents.check_vs(view, args.vs)
    config = intents.applied_config(view)
    rows: list[dict[str, Any]] = []
    for server in config.virtual_servers:
        if args.vs and server.name != args.vs:
            continue
        status = view.status.get(server.name)
        for res in server.resources:
            rows.append({
                "vs": server.name, "resource": res.name, "type": res.type,
                "state": status.resources.get(res.name, "offline") if status else "offline",
                "depends_on": list(res.depends_on),
                "admin_offline": view.resource_intent(server.name, res.name).offline,
            })
    emit(console, args, rows, table(
        "resources", ("virtual server", "resource", "type", "state", "depends on"),
        [[r["vs"], r["resource"], r["type"],
          r["state"] + (" (held offline)" if r["admin_offline"] else ""),
          ", ".join(r["depends_on"])] for r in rows]))
    return 0


async def cmd_resource_action(args: argparse.Namespace, console: Console) -> int:
    async with await with_store(args) as store:
        if args.sub == "remove":
            await intents.remove_resource(store, args.vs, args.resource)
            console.print(f"{args.vs}/{args.resource} removed (its owner takes it offline)")
            return 0
        await intents.set_resource_offline(store, args.vs, args.resource, args.sub == "offline")
    console.print(f"{args.vs}/{args.resource}: {args.sub} requested")
    return 0


def _property(text: str) -> tuple[str, Any]:
    import tomllib

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise AdminError(f"--property {text!r}: expected KEY=VALUE")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word is a string
    return key.strip(), value


async def cmd_resource_add(args: argparse.Namespace, console: Console) -> int:
    props = dict(_property(p) for p in args.property) or None
    async with await with_store(args) as store:
        name = await intents.add_resource(store, args.vs, args.type, name=args.name,
                                          depends_on=args.depends_on, properties=props)
    console.print(f"{args.vs}/{name} added (its owner brings it online)")
    return 0


# ---------------------------------------------------------------------- entry


def main(argv: list[str] | None = None) -> int:
    # Everything this process and its children create is private (docs/security.md).
    restrict_umask()
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    console = Console(highlight=False)
    logutil.setup()
    try:
        from clustermail.admin.remote import remote_handler

        handler = remote_handler(args) or handler
        return asyncio.run(handler(args, console))
    except KeyboardInterrupt:
        return 130
    except AdminError as exc:
        sys.stderr.write(f"clustermail: {exc}\n")
        return exc.exit_code
    except CoordError as exc:
        sys.stderr.write(f"clustermail: {exc}\n")
        return 1
