"""One cluster under load for a series of runs: the store, four node agents, the
clients, the audit watcher, the mail checker; and the repairs between runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import shutil
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.campaign.audit import AuditWatcher, Overlap
from bench.campaign.faults import (
    FAILBACK_NODE,
    FAILBACK_VS,
    EtcdControl,
    SqliteControl,
    StoreControl,
    World,
)
from bench.campaign.load import ImapReader, Sender
from bench.campaign.mailcheck import Mailbox
from clustermail.admin import intents
from clustermail.admin.errors import AdminError
from clustermail.cluster import keys
from clustermail.cluster.config import config_from_dict
from tests.e2e.harness import (
    MAIL_PASSWORD,
    MAIL_USERS,
    SEED,
    LocalCluster,
    add_mail_users,
    cluster_toml,
    free_addresses,
    mail_port,
    owners,
    wait_for_imap_login,
)
from tests.support.etcd_server import EtcdCluster

VIRTUAL_SERVERS = tuple(MAIL_USERS)
#: Tries to read a mailbox, a second apart, before a run's check gives up.
READ_ATTEMPTS = 20
#: Seconds without a change of owner before a repaired cluster counts as settled.
STABLE_LAYOUT = 3.0


class RepairFailed(Exception):
    """The cluster could not be brought back to every virtual server online."""


def campaign_toml(base: str, port: int) -> str:
    """The e2e mail cluster; mail1 fails back at once (the others never), and the
    failover threshold is out of reach: the campaign's faults are not the
    policy's business."""
    text = cluster_toml(base, port, mail=True, vs_extra="failover_threshold = 10000")
    text = text.replace('failback = "never"', 'failback = "immediate"', 1)  # mail1's
    config = config_from_dict(tomllib.loads(text), "the campaign cluster")
    server = config.virtual_server(FAILBACK_VS)
    assert server is not None and server.failback.to_dict() == "immediate"
    return text


@dataclass
class Session:
    backend: str
    tmp: Path
    rate: float
    log: Callable[[str], None]
    seed: int
    tag: str = field(default_factory=lambda: secrets.token_hex(4))
    etcd: EtcdCluster | None = None
    cluster: LocalCluster | None = None
    world: World | None = None
    audit: AuditWatcher | None = None
    senders: dict[str, Sender] = field(default_factory=dict)
    readers: dict[str, ImapReader] = field(default_factory=dict)
    boxes: dict[str, Mailbox] = field(default_factory=dict)
    ttl: float = 2.0
    host_timeout: float = 5.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    lost: dict[str, set[int]] = field(default_factory=dict)
    duplicates: dict[str, set[int]] = field(default_factory=dict)
    phantoms: dict[str, set[int]] = field(default_factory=dict)
    _overlaps_seen: set[tuple[Any, ...]] = field(default_factory=set)
    _acked_checked: int = 0

    async def start(self) -> None:
        base, port = free_addresses()
        control: StoreControl
        if self.backend == "etcd":
            self.etcd = await asyncio.to_thread(EtcdCluster.start, self.tmp / "etcd", 3)
            url = self.etcd.url
            control = EtcdControl(self.etcd)
        else:
            url = f"sqlite://{self.tmp}/cluster.db"
            control = SqliteControl(self.tmp / "cluster.db")
        toml = campaign_toml(base, port)
        config = config_from_dict(tomllib.loads(toml), "the campaign cluster")
        self.ttl = config.timing.ttl
        # Where a node agent supervises its hosts, its timeout is part of the bound.
        timeout_of = getattr(config, "host_timeout", None)
        if callable(timeout_of):
            self.host_timeout = max(float(timeout_of(vs)) for vs in config.virtual_servers)
        c = self.cluster = LocalCluster(self.tmp, url, toml)
        await c.__aenter__()
        # Before the first host starts: every mount is then seen while its host lives.
        self.audit = AuditWatcher({vs: c.data / "disks" / vs for vs in VIRTUAL_SERVERS})
        self.audit.start()
        c.start_all()
        await c.wait_for(lambda s: owners(s) == SEED, timeout=90, what="the initial layout")
        assert c.store is not None
        await add_mail_users(c.store, MAIL_USERS, MAIL_PASSWORD)
        addresses = {vs: f"{base}.{10 + i}" for i, vs in enumerate(VIRTUAL_SERVERS, 1)}
        imap_port, smtp_port = mail_port(port, "imap"), mail_port(port, "smtp")
        for vs, user in MAIL_USERS.items():
            address = f"{user}@example.test"
            await wait_for_imap_login(addresses[vs], imap_port, address, MAIL_PASSWORD, 60)
            self.senders[vs] = Sender(vs, addresses[vs], smtp_port, address, self.tag,
                                      self.rate)
            self.readers[vs] = ImapReader(addresses[vs], imap_port, address, MAIL_PASSWORD)
            self.boxes[vs] = Mailbox(vs, addresses[vs], imap_port, address, MAIL_PASSWORD,
                                     self.tag)
            self.lost[vs], self.duplicates[vs], self.phantoms[vs] = set(), set(), set()
        clients: list[Sender | ImapReader] = [*self.senders.values(), *self.readers.values()]
        for client in clients:
            t = threading.Thread(target=client.run, args=(self._stop,), daemon=True)
            t.start()
            self._threads.append(t)
        self.world = World(c, control, random.Random(self.seed), self.ttl, audit=self.audit)
        await self.wait_serving(60)

    async def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            await asyncio.to_thread(t.join, 10)
        if self.world is not None:
            self.world.thaw_all()
        if self.cluster is not None:
            await self.cluster.close()
        if self.audit is not None:
            await asyncio.sleep(0.2)  # the exits of the last hosts
            self.audit.stop()
        if self.etcd is not None:
            await asyncio.to_thread(self.etcd.stop)

    # ------------------------------------------------------------------ health

    def serving(self, vs: str, within: float = 0.6) -> bool:
        last = self.senders[vs].last_ack()
        return last is not None and time.monotonic() - last < within

    async def wait_serving(self, timeout: float) -> None:
        """Until every virtual server is online and acknowledging mail."""
        assert self.cluster is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = await self.cluster.status()
            if all(owners(status).values()) and all(self.serving(vs) for vs in self.senders):
                return
            await asyncio.sleep(0.1)
        raise RepairFailed(f"not every virtual server serves after {timeout:g} s: "
                           f"{owners(await self.cluster.status())}")

    async def repair(self) -> None:
        """Back to four nodes and every virtual server online, failures forgotten."""
        assert self.cluster is not None and self.world is not None
        c = self.cluster
        self.world.thaw_all()
        for name, proc in list(c.procs.items()):
            if proc.poll() is not None:
                c.start_node(name)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = await c.status()
            if all(n["state"] == "up" for n in status["nodes"]):
                break
            await asyncio.sleep(0.1)
        assert c.store is not None
        for vs in VIRTUAL_SERVERS:
            await intents.clear_failures(c.store, vs)
        await self.wait_serving(90)
        # A node that came back may draw a failback: let the layout settle.
        await self.wait_stable(STABLE_LAYOUT, 60)

    async def wait_stable(self, quiet: float, timeout: float) -> None:
        """Until the owners have not changed for ``quiet`` s and every virtual server
        serves mail."""
        assert self.cluster is not None
        deadline = time.monotonic() + timeout
        last: dict[str, str | None] = {}
        since = time.monotonic()
        while time.monotonic() < deadline:
            now_owners = owners(await self.cluster.status())
            if now_owners != last:
                last, since = now_owners, time.monotonic()
            elif time.monotonic() - since >= quiet and all(last.values()) and \
                    all(self.serving(vs) for vs in self.senders):
                return
            await asyncio.sleep(0.1)
        raise RepairFailed(f"the layout did not settle within {timeout:g} s: {last}")

    async def failback_home(self, timeout: float = 60) -> bool:
        """Puts the virtual server that fails back on its preferred node, moving what
        runs there to an idle node first (planned moves, as an administrator would)."""
        assert self.cluster is not None and self.cluster.store is not None
        store = self.cluster.store
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = await self.cluster.status()
            where = owners(status)
            if where.get(FAILBACK_VS) == FAILBACK_NODE:
                await self.wait_stable(1.0, max(1.0, deadline - time.monotonic()))
                return True
            if all(where.values()):
                busy = set(where.values())
                occupant = next((vs for vs, node in where.items() if node == FAILBACK_NODE),
                                None)
                idle = [n["name"] for n in status["nodes"]
                        if n["state"] == "up" and n["name"] not in busy]
                with contextlib.suppress(AdminError):
                    if occupant is not None and idle:
                        await intents.move_vs(store, occupant, idle[0])
                    elif occupant is None:
                        await intents.move_vs(store, FAILBACK_VS, FAILBACK_NODE)
                await asyncio.sleep(1.0)
            await asyncio.sleep(0.2)
        return False

    # ------------------------------------------------------------------ recovery

    async def wait_recovered(self, after: float, limit: float,
                             stable: float = 1.0) -> float | None:
        """When every virtual server that can run (one per live node) is online and
        acknowledging mail again, for ``stable`` s in a row; None past ``limit``."""
        assert self.cluster is not None and self.world is not None
        since: float | None = None
        while time.monotonic() < limit:
            now = time.monotonic()
            status = await self.cluster.status()
            online = [vs for vs, owner in owners(status).items() if owner]
            placeable = min(len(VIRTUAL_SERVERS), len(self.world.live_nodes()))
            ok = now >= after and len(online) >= placeable and \
                all(self.serving(vs) for vs in online)
            if not ok:
                since = None
            elif since is None:
                since = now
            elif now - since >= stable:
                return since
            await asyncio.sleep(0.1)
        return None

    def outage(self, t0: float, settled: float) -> float:
        """Seconds from ``t0`` until the virtual server that came back last served
        again: the first 250 after its last failed attempt, or after the last gap
        in its 250s longer than a few sending periods (a frozen server fails no
        attempt, it only stops answering); 0 when its client saw neither."""
        gap = max(0.5, 4.0 / self.rate)
        worst = 0.0
        for sender in self.senders.values():
            times = sender.acks_between(t0 - 5.0, settled + 1.0)
            prev = max((t for t in times if t <= t0), default=t0)
            for t in (t for t in times if t > t0):
                if t - prev > gap:
                    worst = max(worst, t - t0)
                prev = t
            failures = sender.failures_between(t0, settled + 1.0)
            if failures:
                back = next((t for t in times if t > failures[-1]), None)
                if back is not None:
                    worst = max(worst, back - t0)
        return worst

    # ------------------------------------------------------------------ checks

    async def check_mail(self) -> dict[str, int]:
        """New losses, duplicates and phantoms (refused yet delivered) since the last
        check. Every message acknowledged before the check began must be there."""
        cut = time.monotonic()
        snapshots = {vs: s.snapshot() for vs, s in self.senders.items()}
        found = {"lost": 0, "duplicates": 0, "phantoms": 0, "acked": 0}
        for vs, box in self.boxes.items():
            acked, refused, _ = snapshots[vs]
            due = {n for n, t in acked.items() if t <= cut}
            found["acked"] += len(due)
            for attempt in range(READ_ATTEMPTS):
                last = attempt == READ_ATTEMPTS - 1
                try:
                    await asyncio.to_thread(box.refresh)
                except Exception as exc:  # a load-induced fence may be moving it: again
                    if last:
                        raise RepairFailed(f"cannot read {vs}'s mailbox: {exc}") from exc
                    await asyncio.sleep(1.0)
                    continue
                if not box.missing(due) - self.lost[vs] or attempt >= 3:
                    break
                await asyncio.sleep(1.0)  # re-read before calling it lost
            lost = box.missing(due) - self.lost[vs]
            dups = box.duplicates() - self.duplicates[vs]
            phantoms = {n for n in refused if box.copies[n] > 0} - self.phantoms[vs]
            if lost:
                self.log(f"  LOST on {vs}: {sorted(lost)[:20]}")
            self.lost[vs] |= lost
            self.duplicates[vs] |= dups
            self.phantoms[vs] |= phantoms
            found["lost"] += len(lost)
            found["duplicates"] += len(dups)
            found["phantoms"] += len(phantoms)
        # Acknowledged messages checked for the first time by this check.
        found["acked"], self._acked_checked = found["acked"] - self._acked_checked, found["acked"]
        return found

    async def keep_evidence(self, folder: Path) -> None:
        """Copies the audit trails, the logs and the cluster's keys to ``folder``."""
        assert self.cluster is not None and self.cluster.store is not None
        data = self.cluster.data
        folder.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(Exception):
            found = await self.cluster.store.range(keys.PREFIX)
            (folder / "store.json").write_text(json.dumps(
                [{"key": kv.key, "lease": kv.lease, "mod_revision": kv.mod_revision,
                  "value": kv.value.decode(errors="replace")} for kv in found.kvs], indent=1))
            (folder / "status.json").write_text(json.dumps(await self.cluster.status(),
                                                           indent=1))
        for vs in VIRTUAL_SERVERS:
            with contextlib.suppress(OSError):
                shutil.copy(data / "disks" / vs / ".clustermail" / "audit.log",
                            folder / f"{vs}-audit.log")
        with contextlib.suppress(OSError):
            shutil.copytree(data / "logs", folder / "logs", dirs_exist_ok=True)
        for log in data.glob("*.agent.log"):
            with contextlib.suppress(OSError):
                shutil.copy(log, folder / log.name)

    def new_overlaps(self) -> list[Overlap]:
        assert self.audit is not None
        fresh = []
        for o in self.audit.overlaps():
            key = (o.vs, o.first.pid, o.first.epoch, o.second.pid, o.second.epoch)
            if key not in self._overlaps_seen:
                self._overlaps_seen.add(key)
                fresh.append(o)
        return fresh
