"""`clustermail lab …`: the command line of the lab (see the package's docstring)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console

from clustermail.admin.common import Add, Parser, add_group
from clustermail.admin.lab import commands
from clustermail.admin.lab.state import require
from clustermail.cluster.timing import PROFILES

DEFAULT_DATA = Path("clustermail-lab")


def add_commands(sub: Any, add: Add) -> None:
    g = add_group(sub, "lab", "a cluster of machines on this Linux box (network namespaces, "
                              "a bridge, a 3-member etcd; root only)")

    def lab(name: str, help: str, handler: Any) -> argparse.ArgumentParser:
        p = add(name, help, handler, g)
        p.set_defaults(data=DEFAULT_DATA)
        return p

    p = lab("up", "build the lab and start the cluster on it", cmd_up)
    p.add_argument("--machines", type=int, default=4, help="node machines (default 4)")
    p.add_argument("--etcd", type=int, default=3,
                   help="etcd members, on the first machines (default 3)")
    p.add_argument("--timing", choices=sorted(PROFILES), default="default",
                   help="the cluster's lease timing profile (default: default)")
    lab("down", "remove every namespace, process, loop device and bridge of the lab", cmd_down)
    lab("status", "the machines, their processes, and the cluster", cmd_status)
    p = lab("exec", "run a command on a machine: lab exec MACHINE -- CMD…", cmd_exec)
    p.add_argument("machine")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD")
    p = lab("power-off", "kill -9 of everything on a machine, its cable out", cmd_power_off)
    p.add_argument("machine")
    p = lab("power-on", "boot a machine again (its etcd member and node agent)", cmd_power_on)
    p.add_argument("machine")
    p = lab("freeze", "SIGSTOP of everything on a machine (it hangs, cable in)", cmd_freeze)
    p.add_argument("machine")
    p = lab("thaw", "SIGCONT of everything on a frozen machine", cmd_thaw)
    p.add_argument("machine")
    p = lab("partition", "cut machines off the bridge (both directions)", cmd_partition)
    p.add_argument("machines", nargs="+", metavar="MACHINE")
    lab("heal", "reconnect every partitioned machine", cmd_heal)


async def cmd_up(args: argparse.Namespace, console: Console) -> int:
    return await commands.up(args.data, args.machines, args.etcd, console, args.timing)


async def cmd_down(args: argparse.Namespace, console: Console) -> int:
    return commands.down(args.data, console)


async def cmd_status(args: argparse.Namespace, console: Console) -> int:
    commands.require_root()
    data = await commands.status_data(require(args.data))
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        for part in commands.status_tables(data):
            console.print(part)
    return 0


async def cmd_exec(args: argparse.Namespace, console: Console) -> int:
    argv = list(args.argv)
    if "--" in argv:
        # argparse leaves options given after MACHINE (``--data D -- CMD``) to us.
        cut = argv.index("--")
        head, argv = argv[:cut], argv[cut + 1:]
        options = Parser(prog="clustermail lab exec")
        options.add_argument("--data", type=Path, default=args.data)
        options.add_argument("--store")
        options.add_argument("--json", action="store_true")
        args.data = options.parse_args(head).data
    return commands.exec_in(args.data, args.machine, argv)


async def cmd_power_off(args: argparse.Namespace, console: Console) -> int:
    return commands.power_off(args.data, args.machine, console)


async def cmd_power_on(args: argparse.Namespace, console: Console) -> int:
    return commands.power_on(args.data, args.machine, console)


async def cmd_freeze(args: argparse.Namespace, console: Console) -> int:
    return commands.freeze(args.data, args.machine, False, console)


async def cmd_thaw(args: argparse.Namespace, console: Console) -> int:
    return commands.freeze(args.data, args.machine, True, console)


async def cmd_partition(args: argparse.Namespace, console: Console) -> int:
    return commands.partition(args.data, args.machines, console)


async def cmd_heal(args: argparse.Namespace, console: Console) -> int:
    return commands.heal(args.data, console)
