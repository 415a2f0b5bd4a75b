"""`clustermail validate`: can this machine run its part of the cluster?

Like Windows clustering's "Validate a Configuration", run on each machine: it reads
the applied configuration from the store and checks, without touching what runs,
the store's reachability and latency, the clock against the etcd members' clocks,
every virtual server's address (interface present, the address not already up
here unless this node owns it) and disk (device or folder present), the mail ports
free, the tools the resources need, and the data directory's permissions. Each
check says pass, warn or fail; the exit code: 0 pass, 1 a failure, 3 warnings only.

``--cluster`` asks every running node agent instead (:mod:`.validate_cluster`), with
trial bring-ups (:mod:`.validate_trial`) and the clock skew between nodes.
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import json
import os
import shutil
import socket
import stat
import statistics
import time
import urllib.request
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from clustermail.admin.common import Add, store_url
from clustermail.admin.errors import AdminError
from clustermail.admin.validate_report import Check, as_json, exit_code, rows, summary, verdict
from clustermail.cluster import ports
from clustermail.cluster.model import ClusterConfig
from clustermail.cluster.view import ClusterView, read_view
from clustermail.coord import CoordError, Store, open_store, parse_store_url

STORE_TIMEOUT = 10.0
LATENCY_WARN = 0.05  # s per linearizable read
SKEW_WARN, SKEW_FAIL = 1.0, 5.0  # s
#: The longest `validate --cluster --timeout` (a node's handler is capped lower anyway).
MAX_TIMEOUT = 300.0
PORT_PROPERTIES = ("port", "submission_port", "submissions_port", "tls_port")


async def run_checks(store_url: str, node: str | None, data_dir: Path) -> list[Check]:
    checks: list[Check] = []
    started = time.monotonic()
    try:
        store = await asyncio.wait_for(open_store(store_url), STORE_TIMEOUT)
    except (CoordError, TimeoutError) as exc:
        return [Check("store", "fail", f"cannot reach {store_url}: {exc or 'timed out'}")]
    try:
        checks.append(Check("store", "pass", f"reached in {time.monotonic() - started:.3f} s"))
        checks.append(await latency(store))
        view = await asyncio.wait_for(read_view(store), STORE_TIMEOUT)
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
    checks.extend(machine_checks(config, view, node, data_dir))
    return checks


async def latency(store: Store, reads: int = 10) -> Check:
    times = []
    for _ in range(reads):
        t = time.monotonic()
        await store.get("/clustermail/config")
        times.append(time.monotonic() - t)
    p50, worst = statistics.median(times), max(times)
    result = "pass" if p50 <= LATENCY_WARN else "warn"
    return Check("store latency", result, f"read p50 {p50 * 1000:.1f} ms, max "
                 f"{worst * 1000:.1f} ms over {reads}"
                 + ("" if result == "pass" else f" (over {LATENCY_WARN * 1000:.0f} ms: leases "
                    "and failover will be slow)"))


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
    config: ClusterConfig, view: ClusterView, node: str | None, data_dir: Path
) -> list[Check]:
    checks: list[Check] = []
    owners = {name: rec.node for name, rec in view.owner.items()}
    needs_root = False
    for vs in config.virtual_servers:
        here = node is not None and owners.get(vs.name) == node
        if node is not None and vs.possible_owners and node not in vs.possible_owners:
            continue
        address = None
        for r in vs.resources:
            props = r.properties
            if r.type == "ip_address":
                address = str(props["address"])
                if props.get("mode") == "interface":
                    needs_root = True
                    checks.append(interface_check(vs.name, address, str(props["interface"]),
                                                  here))
            elif r.type == "disk":
                checks.append(disk_check(vs.name, props, data_dir))
                needs_root = needs_root or "device" in props
        if address is not None:
            checks.extend(port_checks(vs.name, address, config, here))
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


def interface_check(vs: str, address: str, interface: str, here: bool) -> Check:
    name = f"{vs} address"
    if not Path("/sys/class/net", interface).exists():
        return Check(name, "fail", f"no interface {interface} on this machine")
    up = _address_is_local(address)
    if up and not here:
        return Check(name, "fail", f"{address} is already up on this machine, which does not "
                     f"own {vs}: remove it (ip addr del) or find who added it")
    return Check(name, "pass", f"{address} can be added on {interface}"
                 + (" (up here: this node owns it)" if up else ""))


def _address_is_local(address: str) -> bool:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.bind((address, 0))
    except OSError:
        return False
    return True


def disk_check(vs: str, props: Any, data_dir: Path) -> Check:
    name = f"{vs} disk"
    path = Path(str(props["path"]).replace("{data}", str(data_dir.resolve())))
    device = props.get("device")
    if device is not None:
        try:
            mode = os.stat(str(device)).st_mode
        except OSError as exc:
            return Check(name, "fail", f"device {device}: {exc.strerror or exc}")
        if not (stat.S_ISBLK(mode) or stat.S_ISREG(mode)):
            return Check(name, "fail", f"{device} is neither a block device nor an image file")
        if not path.is_dir() and props.get("create") is False:
            return Check(name, "fail", f"mount point {path} does not exist")
        return Check(name, "pass", f"device {device} present; mount point {path}")
    if path.is_dir():
        return Check(name, "pass", f"{path} present")
    if props.get("create") is False:
        return Check(name, "fail", f"{path} does not exist (create = false)")
    return Check(name, "pass", f"{path} will be created")


def port_checks(vs: str, address: str, config: ClusterConfig, here: bool) -> list[Check]:
    server = config.virtual_server(vs)
    wanted = sorted({int(v) for r in (server.resources if server else ())
                     for k, v in r.properties.items()
                     if k in PORT_PROPERTIES and isinstance(v, int)})
    if not wanted:
        return []
    held = [p for p in wanted if ports.listening_inodes(address, p)]
    if not held or here:
        return [Check(f"{vs} ports", "pass", ", ".join(map(str, wanted))
                      + (" (served here: this node owns it)" if held else " free"))]
    notes = "; ".join(f"{p}{ports.holder_note(address, p)}" for p in held)
    return [Check(f"{vs} ports", "fail", f"in use on this machine: {notes}")]


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
