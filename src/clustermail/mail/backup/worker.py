"""The owner's side of store requests: the mail_store resource runs one
:class:`RequestWorker` while online.

It reads the virtual server's requests, then watches them. A pending request is claimed
with a compare-and-swap that also checks the owner key it read names this node and this
fencing epoch, run (one at a time: a backup's copy in a child process of its own, paced
to ``backup_max_rate`` (:mod:`.process`); the other operations' blocking work in a
thread), its progress written back at most every :data:`PROGRESS_INTERVAL`, and its
result written with a compare-and-swap on the revision it last wrote. A request some
earlier owner claimed and never finished is failed with a message that says so. Requests
are never retried: the one who asked decides to ask again.

It also keeps the virtual server's backup schedule (:mod:`.schedule`): when a slot is due
it records the slot and writes the scheduled backup's request in one transaction, so a
slot runs once whichever node owns the virtual server, and the request then runs like any
other.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from clustermail.cluster import keys as cluster_keys
from clustermail.cluster.records import OwnerRecord, RecordError
from clustermail.cluster.resources.base import Logger
from clustermail.coord import Compare, CoordError, Delete, EventType, KeyValue, Put, Store
from clustermail.mail.backup import requests as rq
from clustermail.mail.backup.operations import run_operation
from clustermail.mail.backup.process import DEFAULT_MAX_RATE, ChildBackup
from clustermail.mail.backup.schedule import Schedule, due
from clustermail.mail.backup.sets import BackupError
from clustermail.mail.store.database import MailboxDatabase
from clustermail.mail.store.errors import StoreError
from clustermail.mail.store.storage_group import MailStore

PROGRESS_INTERVAL = 0.5
RETRY_DELAY = 1.0
#: How long a scheduled request may wait to be claimed (by this very owner, at once).
SCHEDULED_CLAIM = 3600.0


@dataclass
class OwnerSite:
    """The :class:`~clustermail.mail.backup.operations.Site` of a running mail_store."""

    vs: str
    root: Path
    queue: Path
    backups: Path
    epoch: int | None
    mail_store: MailStore
    dismount: Callable[[str, str], Awaitable[None]]
    mount: Callable[[str, str], Awaitable[None]]
    #: Writes (an id) or drops (None) the cluster's record of a database.
    identity: Callable[[str, str, str | None], Awaitable[None]] | None = None

    @property
    def serving(self) -> bool:
        return True

    @property
    def store(self) -> MailStore | None:
        return self.mail_store

    async def take_offline(self, storage_group: str, database: str) -> None:
        await self.dismount(storage_group, database)

    async def bring_online(self, storage_group: str, database: str) -> None:
        await self.mount(storage_group, database)

    async def record_identity(self, storage_group: str, database: str,
                              db_id: str | None) -> None:
        if self.identity is not None:
            await self.identity(storage_group, database, db_id)

    @contextlib.asynccontextmanager
    async def live_database(self, storage_group: str,
                            database: str) -> AsyncIterator[MailboxDatabase]:
        db = self.mail_store.database(storage_group, database)
        if not db.mounted:
            raise BackupError(f"{storage_group}/{database} of {self.vs} is dismounted: "
                              "restore or mount it first")
        yield db


@dataclass
class BackupPlan:
    """The backup properties of a mail_store resource: the schedule, and the pace of
    every backup the owner runs (bytes/s; None: unpaced)."""

    full: Schedule | None = None
    incremental: Schedule | None = None
    keep: int | None = None
    max_rate: float | None = DEFAULT_MAX_RATE

    def schedules(self) -> list[tuple[str, Schedule]]:
        out = [("full", self.full)] if self.full else []
        return out + ([("incremental", self.incremental)] if self.incremental else [])


@dataclass
class _Latest:
    """The newest progress report of the running operation (written from its thread)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    value: rq.RequestProgress | None = None

    def __call__(self, what: str, done: int, total: int) -> None:
        with self.lock:
            self.value = rq.RequestProgress(what, done, total)


@dataclass
class _Written:
    """The request as last written by the worker, and the revision it got."""

    request: rq.StoreRequest
    revision: int


class RequestWorker:
    def __init__(self, store: Store, site: OwnerSite, node: str, log: Logger,
                 plan: BackupPlan | None = None,
                 event: Callable[[str], Awaitable[None]] | None = None) -> None:
        self.store = store
        self.site = site
        self.vs = site.vs
        self.node = node
        self.epoch = site.epoch
        self.log = log
        self.plan = plan or BackupPlan()
        self.event = event
        self.create = ChildBackup(max_rate=self.plan.max_rate, log=log.info)
        self._todo: asyncio.Queue[KeyValue] = asyncio.Queue()

    async def run(self) -> None:
        """Until cancelled: follow the requests and the schedule, run what is asked."""
        tasks = [asyncio.create_task(self._follow(), name=f"{self.vs} requests"),
                 asyncio.create_task(self._runner(), name=f"{self.vs} request runner")]
        if self.plan.schedules():
            tasks.append(asyncio.create_task(self._scheduler(), name=f"{self.vs} schedule"))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                # Once: gather ends at its first cancelled child, and a second cancel
                # would cut short a request's own stop (its child's SIGTERM grace).
                if not task.cancelling():
                    task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # ------------------------------------------------------------------ requests

    async def _follow(self) -> None:
        prefix = rq.prefix_of(self.vs)
        while True:
            try:
                found = await self.store.range(prefix)
                for kv in found.kvs:
                    await self._consider(kv, tidy=True)
                async for ev in self.store.watch(prefix, found.revision + 1):
                    if ev.type is EventType.PUT:
                        await self._consider(KeyValue(ev.key, ev.value, ev.create_revision,
                                                      ev.revision, ev.version, ev.lease))
            except CoordError as exc:
                self.log.warning(f"following store requests failed, will retry: {exc}")
                await asyncio.sleep(RETRY_DELAY)

    async def _consider(self, kv: KeyValue, *, tidy: bool = False) -> None:
        try:
            request = rq.parse(kv)
        except rq.RequestError as exc:
            self.log.warning(f"ignored a store request: {exc}")
            return
        if request.state == rq.PENDING or (request.state == rq.RUNNING
                                           and request.epoch != self.epoch):
            self._todo.put_nowait(kv)
        elif tidy and request.is_finished and (request.finished or 0) < (
                time.time() - rq.KEEP_FINISHED):
            await self.store.txn([Compare.mod_is(kv.key, kv.mod_revision)], [Delete(kv.key)])

    async def _runner(self) -> None:
        while True:
            kv = await self._todo.get()
            try:
                await self._handle(kv)
            except CoordError as exc:
                self.log.warning(f"store request {kv.key}: {exc}")
            except Exception as exc:  # one bad request never stops the others
                self.log.error(f"store request {kv.key}: {exc!r}")

    async def _handle(self, kv: KeyValue) -> None:
        current = await self.store.get(kv.key)
        if current is None:
            return
        request, revision = rq.parse(current), current.mod_revision
        now = time.time()
        if request.state == rq.RUNNING and request.epoch != self.epoch:
            if await rq.fail_if(self.store, request, revision,
                                f"{request.node} (epoch {request.epoch}) stopped owning "
                                f"{self.vs} while it ran this {request.op}; nothing of it "
                                "took effect unless it had finished: run it again"):
                self.log.warning(f"store request {request.id} ({request.op}) of an earlier "
                                 f"owner, {request.node}, failed: it was cut short")
            return
        if request.state != rq.PENDING:
            return
        if now > request.claim_by:
            await rq.fail_if(self.store, request, revision,
                             "nobody claimed it in time (was the virtual server online?)")
            return
        owner_key = cluster_keys.OWNER + self.vs
        owner_kv = await self.store.get(owner_key)
        try:
            owner = None if owner_kv is None else OwnerRecord.from_store(owner_key,
                                                                         owner_kv.value)
        except RecordError:
            owner = None
        if owner_kv is None or owner is None or (owner.node, owner.epoch) != (self.node,
                                                                              self.epoch):
            return  # not (or no longer) the owner: the one who is claims it
        claimed = replace(request, state=rq.RUNNING, node=self.node, epoch=self.epoch,
                          started=now)
        new_rev = await rq.replace_if(self.store, claimed, revision,
                                      [Compare.mod_is(owner_key, owner_kv.mod_revision)])
        if new_rev is None:
            return  # changed meanwhile (withdrawn, or claimed): look at it again if needed
        await self._run(claimed, new_rev)

    async def _run(self, request: rq.StoreRequest, revision: int) -> None:
        self.log.info(f"running store request {request.id}: {request.op} "
                      f"{dict(request.params)} for {request.requested_by}")
        latest = _Latest()
        state = _Written(request, revision)
        publisher = asyncio.create_task(self._publish(state, latest))
        started = time.monotonic()
        try:
            result, text = await run_operation(request.op, request.params, self.site, latest,
                                               self.create)
            final = replace(request, state=rq.DONE, result=result, text=text)
        except asyncio.CancelledError:  # the mail store goes offline: say so, then stop
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError, CoordError):
                await rq.fail_if(self.store, state.request, state.revision,
                                 f"the mail store of {self.vs} went offline on {self.node} "
                                 "while it ran; run it again")
            raise
        except (StoreError, OSError, ValueError) as exc:
            final = replace(request, state=rq.FAILED, error=str(exc) or repr(exc))
        except Exception as exc:  # never a crash of the resource: a failed request
            self.log.error(f"store request {request.id} failed unexpectedly: {exc!r}")
            final = replace(request, state=rq.FAILED, error=f"internal error: {exc!r}")
        finally:
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
        final = replace(final, finished=time.time(), progress=latest.value)
        seconds = time.monotonic() - started
        if await rq.replace_if(self.store, final, state.revision) is None:
            self.log.warning(f"store request {request.id}: its record changed meanwhile; "
                             f"result not written ({final.state})")
        log = self.log.info if final.state == rq.DONE else self.log.warning
        line = (f"{request.op} {final.state} in {seconds:.2f} s (request {request.id})"
                + (f": {final.error}" if final.error else f": {final.text.splitlines()[0]}"
                   if final.text else ""))
        log(line)
        if self.event is not None:
            await self.event(line)

    async def _publish(self, state: _Written, latest: _Latest) -> None:
        last: rq.RequestProgress | None = None
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL)
            with latest.lock:
                now = latest.value
            if now is None or now == last:
                continue
            last = now
            updated = replace(state.request, progress=now)
            try:
                revision = await rq.replace_if(self.store, updated, state.revision)
            except CoordError:
                continue  # progress is a courtesy; the result is written at the end
            if revision is not None:
                state.request, state.revision = updated, revision

    # ------------------------------------------------------------------ schedule

    async def _scheduler(self) -> None:
        schedules = self.plan.schedules()
        while True:
            try:
                await self.take_due(time.time())
            except CoordError as exc:
                self.log.warning(f"backup schedule: {exc}")
            now = time.time()
            wake = min(s.next(now) for _, s in schedules)
            await asyncio.sleep(max(RETRY_DELAY, wake - now + 0.01))

    async def take_due(self, now: float) -> rq.StoreRequest | None:
        """Takes the schedule's due slot, if any, with its backup request (one
        transaction); returns the request written."""
        key = rq.schedule_key(self.vs)
        kv = await self.store.get(key)
        try:
            record = rq.ScheduleRecord() if kv is None else rq.ScheduleRecord.from_store(
                key, kv.value)
        except rq.RequestError as exc:
            self.log.warning(f"backup schedule record replaced: {exc}")
            record = rq.ScheduleRecord()
        slots = dict(record.slots)
        taken: dict[str, float] = {}
        for kind, schedule in self.plan.schedules():
            last = slots.get(kind)
            if last is None:
                slots[kind] = schedule.latest(now)  # a new schedule starts from now
            elif (slot := due(schedule, last, now)) is not None:
                slots[kind] = taken[kind] = slot
        if slots == dict(record.slots):
            return None
        guard = Compare.absent(key) if kv is None else Compare.mod_is(key, kv.mod_revision)
        ops: list[Any] = [Put(key, rq.ScheduleRecord(slots).to_store())]
        request = None
        if taken:
            kind = "full" if "full" in taken else "incremental"
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(taken[kind]))
            params: dict[str, Any] = {"incremental": kind == "incremental",
                                      "full_if_none": True, "scheduled": True}
            if self.plan.keep:
                params["keep"] = self.plan.keep
            request = rq.new_request(self.vs, "backup", params,
                                     claim_timeout=SCHEDULED_CLAIM,
                                     requested_by=f"the backup schedule of {self.vs}",
                                     request_id=f"scheduled-{kind}-{stamp}")
            ops.append(Put(request.key, request.to_store()))
            guards = [guard, Compare.absent(request.key)]
        else:
            guards = [guard]
        result = await self.store.txn(guards, ops)
        if not result.succeeded:
            return None  # another owner took it first (or it changed): nothing to do
        if request is not None:
            kind = "incremental" if request.params["incremental"] else "full"
            self.log.info(f"scheduled {kind} backup of {self.vs} requested ({request.id})")
        return request


def plan_from(properties: Mapping[str, Any]) -> BackupPlan:
    """Reads an already validated plan (the resource's properties check them)."""
    from clustermail.mail.backup.schedule import parse_schedule

    full = properties.get("backup_schedule")
    incremental = properties.get("backup_incremental_schedule")
    keep = properties.get("backup_keep")
    rate = properties.get("backup_max_rate")  # MB/s; 0: unpaced
    return BackupPlan(
        full=parse_schedule(str(full)) if full else None,
        incremental=parse_schedule(str(incremental)) if incremental else None,
        keep=int(keep) if keep else None,
        max_rate=DEFAULT_MAX_RATE if rate is None else float(rate) * 1e6 or None,
    )


__all__ = ["BackupPlan", "OwnerSite", "RequestWorker", "plan_from"]
