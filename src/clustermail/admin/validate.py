"""`clustermail validate`: can this machine run its part of the cluster?

Like Windows clustering's "Validate a Configuration", run on each machine: it reads
the applied configuration from the store and checks, without touching what runs,
the store's reachability and latency, the clock against the etcd members' clocks,
a trial bring-up of every virtual server (:mod:`.validate_trial`: address, disk,
ports; of those ``--node`` may own and does not own), the tools the resources need,
and the data directory's permissions. Each
check says pass, warn or fail; the exit code: 0 pass, 1 a failure, 3 warnings only.

``--cluster`` asks every running node agent instead (:mod:`.validate_cluster`): the same
trials on each node's machine, and the clock skew between nodes.
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import json
import os
import shutil
import socket
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from clustermail.admin.common import Add, store_url
from clustermail.admin.errors import AdminError
from clustermail.admin.validate_report import Check, as_json, exit_code, rows, summary, verdict
from clustermail.admin.validate_store import STORE_TIMEOUT, latency, lease_ttl
from clustermail.admin.validate_trial import Site, trial_checks
from clustermail.cluster.hostspec import substitute
from clustermail.cluster.model import ClusterConfig
from clustermail.cluster.resources.block_device import Reservation, reservation_key
from clustermail.cluster.view import ClusterView, read_view
from clustermail.coord import CoordError, Store, open_store, parse_store_url

SKEW_WARN, SKEW_FAIL = 1.0, 5.0  # s
#: The longest `validate --cluster --timeout` (a node's handler is capped lower anyway).
MAX_TIMEOUT = 300.0


async def run_checks(store_url: str, node: str | None, data_dir: Path) -> list[Check]:
    checks: list[Check] = []
    started = time.monotonic()
    try:
        async with asyncio.timeout(STORE_TIMEOUT):
            store = await open_store(store_url)
    except (CoordError, TimeoutError) as exc:
        return [Check("store", "fail", f"cannot reach {store_url}: {exc or 'timed out'}")]
    try:
        checks.append(Check("store", "pass", f"reached in {time.monotonic() - started:.3f} s"))
        checks.append(await latency(store))
        async with asyncio.timeout(STORE_TIMEOUT):
            view = await read_view(store)
        reservations = {}
        if view.cluster_config is not None:
            async with asyncio.timeout(STORE_TIMEOUT):
                reservations = await reservations_of(store, view.cluster_config, data_dir, node)
            async with asyncio.timeout(STORE_TIMEOUT):
                checks.append(await lease_ttl(store, view.cluster_config.timing))
    except (CoordError, TimeoutError) as exc:
        checks.append(Check("store", "fail", f"reading the cluster failed: {exc or 'timed out'}"))
        return checks
    finally:
        await store.close()
    checks.extend(await asyncio.to_thread(clock_checks, store_url))
    config = view.cluster_config
    if config is None:
        error = view.config_error or "no configuration is applied (clustermail config apply)"
        checks.append(Check("configuration", "fail", str(error)))
        return checks
    checks.append(Check("configuration", "pass", f"{len(config.node_names)} nodes, "
                        f"{len(config.virtual_servers)} virtual servers"))
    if node is not None and node not in config.node_names:
        checks.append(Check("node", "fail", f"{node} is not a node of the cluster "
                            f"({', '.join(config.node_names)})"))
    checks.extend(await asyncio.to_thread(machine_checks, config, view, node, data_dir,
                                          reservations))
    return checks


def clock_checks(store_url: str) -> list[Check]:
    """This machine's clock against each etcd member's (the Date of its /health)."""
    url = parse_store_url(store_url)
    if url.scheme != "etcd":
        return [Check("clock", "pass" if url.scheme == "sqlite" else "warn",
                      "one machine's store: nothing to compare" if url.scheme == "sqlite"
                      else "not measured over TLS; compare `chronyc tracking` on each machine")]
    checks = []
    for host, port in url.endpoints:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=2) as resp:
                date = resp.headers.get("Date")
                now = time.time()
        except OSError as exc:
            checks.append(Check(f"clock vs {host}", "warn", f"cannot ask: {exc}"))
            continue
        if not date:
            checks.append(Check(f"clock vs {host}", "warn", "the member sent no Date"))
            continue
        # Date has a 1 s resolution: half a second is noise.
        skew = email.utils.parsedate_to_datetime(date).timestamp() + 0.5 - now
        result = "pass" if abs(skew) < SKEW_WARN else "warn" if abs(skew) < SKEW_FAIL else "fail"
        checks.append(Check(f"clock vs {host}", result, f"skew {skew:+.1f} s"))
    return checks


def machine_checks(
    config: ClusterConfig, view: ClusterView, node: str | None, data_dir: Path,
    reservations: Mapping[str, Reservation | None] | None = None,
) -> list[Check]:
    """The trial bring-ups of :mod:`.validate_trial` (for every virtual server, or those
    ``node`` may own), the tools and privileges they need, the data directory."""
    site = Site(node or "", data_dir, config, view, reservations or {}, socket.gethostname())
    checks = trial_checks(site)
    needs_root = any(
        (r.type == "ip_address" and r.properties.get("mode") == "interface")
        or (r.type == "disk" and "device" in r.properties)
        for vs in config.virtual_servers
        if node is None or vs.possible_owners is None or node in vs.possible_owners
        for r in vs.resources)
    if needs_root:
        missing = [t for t in ("ip", "arping", "mount", "umount") if shutil.which(t) is None]
        checks.append(Check("tools", "fail" if missing else "pass",
                            f"missing: {', '.join(missing)}" if missing
                            else "ip, arping, mount, umount"))
        checks.append(Check("privileges", "pass" if os.geteuid() == 0 else "fail",
                            "root" if os.geteuid() == 0 else "interface addresses and "
                            "block-device disks need root (or the node service's capabilities)"))
    checks.append(data_dir_check(data_dir))
    return checks


async def reservations_of(store: Store, config: ClusterConfig, data_dir: Path,
                          node: str | None) -> dict[str, Reservation | None]:
    """The reservation record of every block device a disk resource names."""
    out: dict[str, Reservation | None] = {}
    for vs in config.virtual_servers:
        values = {"data": str(data_dir.resolve()), "vs": vs.name, "node": node or ""}
        for r in vs.resources:
            if r.type == "disk" and "device" in r.properties:
                device = str(substitute(r.properties["device"], values))
                kv = await store.get(reservation_key(device))
                out[device] = None if kv is None else Reservation.from_store(kv.value)
    return out


def data_dir_check(data_dir: Path) -> Check:
    try:
        st = data_dir.stat()
    except FileNotFoundError:
        return Check("data directory", "pass", f"{data_dir} will be created (private)")
    except OSError as exc:
        return Check("data directory", "fail", f"{data_dir}: {exc}")
    if st.st_uid != os.geteuid():
        return Check("data directory", "fail", f"{data_dir} belongs to uid {st.st_uid}, not us")
    if st.st_mode & 0o022:
        return Check("data directory", "fail", f"{data_dir} is writable by group or others")
    if st.st_mode & 0o044:
        return Check("data directory", "warn", f"{data_dir} is readable by group or others "
                     "(node run takes that away)")
    return Check("data directory", "pass", f"{data_dir} private")


def add_commands(sub: Any, add: Add) -> None:
    p = add("validate", "check that this machine (or, with --cluster, every running node) "
            "can run its part of the cluster: store, clock, addresses, disks, ports, "
            "permissions (pass/warn/fail; exit 0 pass, 1 fail, 3 warnings)", cmd_validate, sub)
    p.add_argument("--node", help="this machine's node name (checks what it may own)")
    p.add_argument("--cluster", action="store_true",
                   help="ask every running node agent to validate itself, with trial "
                   "bring-ups of the virtual servers it may own, and compare their clocks")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                   help="with --cluster: how long to wait for the nodes (default 10)")


COLOUR = {"pass": "green", "warn": "yellow", "fail": "red"}


async def cmd_validate(args: argparse.Namespace, console: Console) -> int:
    if args.cluster:
        return await cmd_validate_cluster(args, console)
    if args.timeout is not None:
        raise AdminError("--timeout goes with --cluster", exit_code=2)
    checks = await run_checks(store_url(args), args.node, args.data)
    if args.json:
        print(json.dumps(as_json(checks), indent=2))
    else:
        table = Table(title="validate")
        for col in ("check", "result", "detail"):
            table.add_column(col)
        for c in checks:
            table.add_row(escape(c.name), f"[{COLOUR[c.result]}]{c.result}[/]",
                          escape(c.detail))
        console.print(table)
    return exit_code(verdict(checks))


async def cmd_validate_cluster(args: argparse.Namespace, console: Console) -> int:
    from clustermail.admin.validate_cluster import DEFAULT_TIMEOUT, validate_cluster

    if args.node is not None:
        raise AdminError("--node is for one machine; --cluster validates every running node",
                         exit_code=2)
    timeout = DEFAULT_TIMEOUT if args.timeout is None else args.timeout
    if not 0 < timeout <= MAX_TIMEOUT:
        raise AdminError(f"--timeout must be more than 0 and at most {MAX_TIMEOUT:g} s "
                         f"(got {timeout:g})", exit_code=2)
    report = await validate_cluster(store_url(args), timeout)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        table = Table(title="validate --cluster")
        for col in ("node", "check", "result", "detail"):
            table.add_column(col)
        for where, name, result, detail in rows(report):
            table.add_row(escape(where), escape(name), f"[{COLOUR[result]}]{result}[/]",
                          escape(detail))
        console.print(table)
        console.print(f"[{COLOUR[report.verdict]}]{summary(report)}[/]", highlight=False)
    return exit_code(report.verdict)
