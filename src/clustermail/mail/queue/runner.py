"""The queue runner: delivers what is due, defers with backoff, bounces what failed.

One asyncio task per virtual server (inside its SMTP resource). It wakes when a message
is queued, when the earliest retry falls due, and at least every ``poll`` seconds (so
``clustermail queue retry``, which writes the file directly, takes effect promptly).
Each attempt's outcome, the bounce it produced and the delay notice it sent are written
in one transaction; a message being delivered when the virtual server fails over is
simply tried again by the next owner (at-least-once; the receiver may see it twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from clustermail.logutil import log_event
from clustermail.mail import metrics
from clustermail.mail.backends import MailboxRef, MailStoreService
from clustermail.mail.directory.addresses import InvalidAddressError
from clustermail.mail.queue import dsn, schedule
from clustermail.mail.queue.delivery import deliver_local
from clustermail.mail.queue.routing import Router, Target, UnknownRecipient
from clustermail.mail.queue.store import (
    EXTERNAL,
    LOCAL,
    VS_PREFIX,
    NewMessage,
    NewRecipient,
    Outcome,
    Queue,
    QueuedMessage,
    QueuedRecipient,
)
from clustermail.mail.queue.tracking import TrackingLog
from clustermail.mail.smtp import relay


@dataclass(frozen=True, slots=True)
class Attempt:
    """The result of one recipient's attempt."""

    recipient: QueuedRecipient
    delivered: bool
    permanent: bool
    code: str
    detail: str
    remote: str | None = None


@dataclass(frozen=True, slots=True)
class RunnerConfig:
    hostname: str
    smart_host: tuple[str, int] | None = None
    policy: schedule.RetryPolicy = field(default_factory=schedule.RetryPolicy)
    concurrency: int = 8
    poll: float = 5.0
    relay_timeout: float = relay.RELAY_TIMEOUT


class QueueRunner:
    def __init__(
        self,
        queue: Queue,
        router: Router,
        mail_store: MailStoreService,
        tracking: TrackingLog,
        config: RunnerConfig,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.queue = queue
        self.router = router
        self.mail_store = mail_store
        self.tracking = tracking
        self.config = config
        self.clock = clock
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._in_flight: dict[int, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(config.concurrency)
        #: Messages whose attempt failed and whose deferral could not be written either:
        #: message id -> (failures in a row, not before this time). Never retried at once.
        self._held: dict[int, tuple[int, float]] = {}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"queue-runner:{self.router.vs}")

    def wake(self) -> None:
        self._wake.set()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        task, self._task = self._task, None
        tasks = [t for t in (task, *self._in_flight.values()) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                await self._dispatch()
                wait = await self._wait_time()
                self._export_length()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a broken queue file must not spin or kill the host
                log_event("queue_error", message=f"queue runner: {exc}", vs=self.router.vs)
                wait = self.config.poll
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.01, wait)):
                    await self._wake.wait()

    def _busy(self) -> list[int]:
        """Messages not to pick up now: being tried, or held back after a failure."""
        now = self.clock()
        self._held = {mid: held for mid, held in self._held.items() if held[1] > now}
        return [*self._in_flight, *self._held]

    def _export_length(self) -> None:
        messages, _ = self.queue.counts()
        oldest = self.queue.oldest_arrival()
        metrics.QUEUE_MESSAGES.set(messages)
        metrics.QUEUE_OLDEST.set(0.0 if oldest is None else max(0.0, time.time() - oldest))

    async def _wait_time(self) -> float:
        due = await self.queue.next_due(self._busy())
        times = [t for _, t in self._held.values()]
        if due is not None:
            times.append(due)
        return min([self.config.poll, *(t - self.clock() for t in times)])

    async def _dispatch(self) -> None:
        free = self.config.concurrency - len(self._in_flight)
        if free <= 0:
            return
        batch = await self.queue.due(self.clock(), self._busy(), free)
        for msg in batch:
            task = asyncio.create_task(self._attempt(msg))
            self._in_flight[msg.id] = task

    async def _attempt(self, msg: QueuedMessage) -> None:
        try:
            async with self._slots:
                attempts = await self._deliver(msg)
                await self._settle(msg, attempts)
            self._held.pop(msg.id, None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._back_off(msg, exc)
        finally:
            self._in_flight.pop(msg.id, None)
            self._wake.set()

    async def _back_off(self, msg: QueuedMessage, exc: Exception) -> None:
        """An attempt that raised (a bug, a queue write that failed): never a retry at
        once. Its recipients are deferred like any temporary failure; if even that
        cannot be written, the message is held back in memory, longer each time."""
        why = f"{type(exc).__name__}: {exc}"
        now = self.clock()
        policy = self.config.policy
        try:
            await self.queue.record([
                Outcome(r.id, False, schedule.next_attempt(policy, r.attempts + 1, now,
                                                           msg.arrived), f"4.3.0 {why}")
                for r in msg.recipients
            ])
            self._held.pop(msg.id, None)
            outcome = "deferred"
        except Exception as again:
            failures = self._held.get(msg.id, (0, 0.0))[0] + 1
            wait = schedule.retry_interval(policy, failures)
            self._held[msg.id] = (failures, now + wait)
            outcome = f"held back {wait:.0f} s (the deferral failed too: {again})"
        log_event("queue_error", message=f"delivery of {msg.queue_id} failed: {why}; {outcome}",
                  vs=self.router.vs)

    # ------------------------------------------------------------------ one message

    async def _deliver(self, msg: QueuedMessage) -> list[Attempt]:
        local: list[tuple[QueuedRecipient, MailboxRef]] = []
        remote: dict[str, list[QueuedRecipient]] = {}
        attempts: list[Attempt] = []
        for rcpt in msg.recipients:
            try:
                target: Target = await self.router.reroute(rcpt.address, rcpt.route)
            except UnknownRecipient:
                attempts.append(Attempt(rcpt, False, True, "5.1.1", "no such mailbox"))
                continue
            except InvalidAddressError as exc:  # it does not parse: it never will
                attempts.append(Attempt(rcpt, False, True, "5.1.3", f"bad address: {exc}"))
                continue
            except Exception as exc:  # the directory is unreachable: later
                attempts.append(Attempt(rcpt, False, False, "4.3.0", f"directory: {exc}"))
                continue
            if target.route == LOCAL and target.entry is not None:
                local.append((rcpt, target.entry))
            else:
                remote.setdefault(target.route, []).append(rcpt)
        if local:
            try:
                results = await deliver_local(self.mail_store, msg.body, [e for _, e in local])
                for (rcpt, _), r in zip(local, results, strict=True):
                    attempts.append(Attempt(rcpt, r.delivered, r.permanent, r.code, r.reason))
            except Exception as exc:
                attempts += [Attempt(rcpt, False, False, "4.3.0", f"mail store: {exc}")
                             for rcpt, _ in local]
        for route, rcpts in remote.items():
            try:
                attempts += await self._relay(msg, route, rcpts)
            except Exception as exc:
                attempts += [Attempt(r, False, False, "4.4.1", f"relay: {exc}") for r in rcpts]
        return attempts

    async def _relay(
        self, msg: QueuedMessage, route: str, rcpts: list[QueuedRecipient]
    ) -> list[Attempt]:
        if route.startswith(VS_PREFIX):
            vs = route[len(VS_PREFIX):]
            where = await self.router.endpoint(vs)
            if where is None:
                why = f"virtual server {vs} has no address now (offline or failing over)"
                return [Attempt(r, False, False, "4.4.1", why) for r in rcpts]
        else:
            assert route == EXTERNAL
            where = self.config.smart_host
            if where is None:
                why = "no smart host configured for external domains; waiting in the queue"
                return [Attempt(r, False, False, "4.4.0", why) for r in rcpts]
        host, port = where
        results = await relay.send_async(
            host, port, self.config.hostname, msg.sender, [r.address for r in rcpts], msg.body,
            timeout=self.config.relay_timeout,
        )
        return [
            Attempt(r, res.delivered, res.permanent, res.code, res.reply, f"{host}:{port}")
            for r, res in zip(rcpts, results, strict=True)
        ]

    async def _settle(self, msg: QueuedMessage, attempts: list[Attempt]) -> None:
        now = self.clock()
        policy = self.config.policy
        outcomes: list[Outcome] = []
        failed: list[dsn.RecipientReport] = []
        delayed: list[dsn.RecipientReport] = []
        is_expired = schedule.expired(policy, msg.arrived, now)
        for a in attempts:
            r = a.recipient
            if a.delivered:
                if r.route != LOCAL:
                    metrics.RELAYED.inc()
                outcomes.append(Outcome(r.id, True))
                self._track("deliver" if r.route == LOCAL else "relay", msg, r.address,
                            "2.0.0", a.detail)
            elif a.permanent or is_expired:
                code = a.code if a.permanent else "4.4.7"
                detail = a.detail if a.permanent else f"expired in the queue ({a.detail})"
                outcomes.append(Outcome(r.id, True))
                metrics.BOUNCED.inc()
                failed.append(dsn.RecipientReport(r.address, dsn.FAILED, code, detail, a.remote))
                self._track("fail" if a.permanent else "expire", msg, r.address, code, detail)
            else:
                when = schedule.next_attempt(policy, r.attempts + 1, now, msg.arrived)
                outcomes.append(Outcome(r.id, False, when, f"{a.code} {a.detail}"))
                delayed.append(dsn.RecipientReport(r.address, dsn.DELAYED, a.code, a.detail))
                self._track("defer", msg, r.address, a.code, a.detail)
        bounces: list[NewMessage] = []
        notified: list[int] = []
        if failed:
            bounce = await self._notice(msg, failed, now)
            if bounce is not None:
                bounces.append(bounce)
        if delayed and schedule.delay_notice_due(policy, msg.arrived, now, msg.delay_notified):
            notice = await self._notice(msg, delayed, now)
            if notice is not None:
                bounces.append(notice)
            notified.append(msg.id)
        await self.queue.record(outcomes, new=bounces, delay_notified=notified)
        if bounces:
            self.wake()

    async def _notice(
        self, msg: QueuedMessage, reports: list[dsn.RecipientReport], now: float
    ) -> NewMessage | None:
        """A DSN to the sender, queued like any message; None for a null sender or a
        message that is itself a DSN (never bounce a bounce)."""
        addresses = [r.address for r in reports]
        if not msg.sender or msg.is_dsn:
            self._track("drop", msg, addresses[0], reports[0].status,
                        "no notice: the message has a null sender")
            return None
        try:
            targets = await self.router.targets(msg.sender)
        except Exception as exc:
            targets = []
            log_event("queue_error", message=f"cannot route a notice to {msg.sender}: {exc}")
        if not targets:
            self._track("drop", msg, addresses[0], reports[0].status,
                        f"no notice: sender {msg.sender} is unknown")
            return None
        policy = self.config.policy
        body = dsn.build(
            reporting_mta=self.config.hostname,
            original_sender=msg.sender,
            original_message_id=msg.message_id,
            original=msg.body,
            recipients=reports,
            arrived=msg.arrived,
            now=now,
            retry_until=msg.arrived + policy.expire_after,
        )
        notice = NewMessage(
            sender="",
            recipients=tuple(NewRecipient(t.address, t.route) for t in targets),
            body=body,
            is_dsn=True,
        )
        event = "bounce" if reports[0].action == dsn.FAILED else "delay"
        self.tracking.record(
            event, queue_id=notice.queue_id, message_id=msg.message_id, sender="",
            recipients=[msg.sender], size=len(body), result=reports[0].status,
            detail=f"notice for {msg.queue_id}: " + ", ".join(addresses),
        )
        return notice

    def _track(self, event: str, msg: QueuedMessage, rcpt: str, result: str, detail: str) -> None:
        self.tracking.record(
            event, queue_id=msg.queue_id, message_id=msg.message_id, sender=msg.sender,
            recipients=[rcpt], size=msg.size, result=result, detail=detail,
        )
