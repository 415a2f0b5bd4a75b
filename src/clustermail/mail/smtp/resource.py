"""The ``smtp`` resource type: SMTP service and relay queue of a virtual server.

Depends on ``mail_store`` and ``ip_address``. Properties (all optional):

* ``port`` 25, ``submission_port`` 587, ``submissions_port`` 465 (0 turns one off);
* ``hostname`` (default: the network name), ``cert`` / ``key`` (default: a self-signed
  certificate kept on the virtual server's disk);
* ``message_size_limit`` 10240000, ``max_recipients`` 1000, ``timeout`` 300 s,
  ``max_connections`` 1000, ``max_connections_per_client`` 50;
* hostile clients: ``login_timeout`` 60 s (587/465: AUTH within this after connecting),
  ``line_timeout`` 60 s (a command line, once begun, must be complete within this),
  ``max_line_length`` 65536 (DATA), ``soft_error_limit`` 10, ``hard_error_limit`` 20,
  ``error_sleep_time`` 1 s, ``junk_command_limit`` 100, ``reject_sender_login_mismatch``
  true (an authenticated client's From: header must be one of its addresses);
* ``smart_host`` ("host:port") for external domains (else they wait in the queue);
* ``allow_plaintext_on_loopback`` false: AUTH without TLS on a loopback address;
* queue: ``retry_base`` 60 s, ``retry_max`` 3600 s, ``delay_notice_after`` 14400 s,
  ``expire_after`` 172800 s, ``queue_poll`` 5 s.
"""

from __future__ import annotations

import asyncio
import time

from clustermail.cluster.model import PropertyValue
from clustermail.cluster.resource_schema import PropertyKind, PropertySpec, ResourceType
from clustermail.cluster.resources.base import (
    Properties,
    PropertyError,
    Resource,
    ResourceContext,
    ResourceError,
)
from clustermail.coord import Store
from clustermail.mail.net import protocol_resource as pr
from clustermail.mail.net.listener import is_loopback, shared_throttle
from clustermail.mail.queue.finished import finished_dir
from clustermail.mail.queue.routing import Router
from clustermail.mail.queue.runner import QueueRunner, RunnerConfig
from clustermail.mail.queue.schedule import RetryPolicy
from clustermail.mail.queue.store import LOCAL, Queue, QueueFencedError, queue_path
from clustermail.mail.queue.tracking import TrackingLog
from clustermail.mail.smtp import policy
from clustermail.mail.smtp.handler import SmtpContext
from clustermail.mail.smtp.policy import MAX_RECIPIENTS, MESSAGE_SIZE_LIMIT, TIMEOUT, SmtpLimits
from clustermail.mail.smtp.server import SmtpPorts, SmtpService
from clustermail.mail.store import StoreError
from clustermail.mail.store.resource import MailStoreResource


def parse_host_port(value: str, key: str = "smart_host") -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise PropertyError(f"property {key!r}: expected \"host:port\", got {value!r}")
    return host.strip("[]"), int(port)


class SmtpResource(Resource):
    def __init__(self, ctx: ResourceContext, properties: Properties) -> None:
        super().__init__(ctx, properties)
        p = properties
        self.ports = SmtpPorts(
            pr.port(p, "port", 25), pr.port(p, "submission_port", 587),
            pr.port(p, "submissions_port", 465),
        )
        self.limits = SmtpLimits(
            message_size_limit=p.integer("message_size_limit", MESSAGE_SIZE_LIMIT, minimum=1),
            max_recipients=p.integer("max_recipients", MAX_RECIPIENTS, minimum=1),
            timeout=p.number("timeout", TIMEOUT, minimum=1),
            max_line_length=p.integer("max_line_length", policy.MAX_LINE_LENGTH,
                                      minimum=policy.MIN_LINE_LENGTH),
            soft_error_limit=p.integer("soft_error_limit", policy.SOFT_ERROR_LIMIT, minimum=1),
            hard_error_limit=p.integer("hard_error_limit", policy.HARD_ERROR_LIMIT, minimum=1),
            error_sleep_time=p.number("error_sleep_time", policy.ERROR_SLEEP_TIME),
            junk_command_limit=p.integer("junk_command_limit", policy.JUNK_COMMAND_LIMIT,
                                         minimum=1),
            login_timeout=p.number("login_timeout", policy.LOGIN_TIMEOUT, minimum=1),
            line_timeout=p.number("line_timeout", policy.LINE_TIMEOUT, minimum=1),
            reject_sender_login_mismatch=p.boolean("reject_sender_login_mismatch", True),
        )
        self.listener_limits = pr.listener_limits(p, TIMEOUT)
        smart = p.optional_string("smart_host")
        self.smart_host = parse_host_port(smart) if smart else None
        self.plaintext_on_loopback = p.boolean("allow_plaintext_on_loopback", False)
        try:
            self.policy = RetryPolicy(
                base=p.number("retry_base", 60.0, minimum=0.01),
                max_interval=p.number("retry_max", 3600.0, minimum=0.01),
                delay_notice_after=p.number("delay_notice_after", 4 * 3600.0, minimum=1),
                expire_after=p.number("expire_after", 2 * 86400.0, minimum=1),
            )
        except ValueError as exc:
            raise PropertyError(f"{ctx.resource}: {exc}") from None
        self.poll = p.number("queue_poll", 5.0, minimum=0.05)
        self.service: SmtpService | None = None
        self.queue: Queue | None = None
        self.tracking: TrackingLog | None = None
        self._retries: set[asyncio.Task[None]] = set()

    async def online(self) -> None:
        ctx = self.ctx
        setup = await pr.service_setup(ctx, self.properties)
        mail_store, address, name, disk, tls = (
            setup.mail_store, setup.address, setup.name, setup.disk, setup.tls)
        queue = Queue(queue_path(disk), time.time, finished_dir(mail_store.store.disk))
        try:
            await asyncio.to_thread(queue.open, ctx.epoch)
        except StoreError as exc:
            fenced = isinstance(exc, QueueFencedError)
            raise ResourceError(f"{ctx.resource}: {exc}", permanent=fenced) from exc
        tracking = TrackingLog(disk, ctx.vs)
        self.queue, self.tracking = queue, tracking

        async def store() -> Store:
            return await ctx.store()

        router = Router(mail_store.directory, ctx.vs, store, self.ports.inbound or 25)
        smtp_ctx = SmtpContext(
            vs=ctx.vs, hostname=name, router=router, mail_store=mail_store, queue=queue,
            tracking=tracking, limits=self.limits, throttle=shared_throttle(ctx.vs),
        )
        runner = QueueRunner(
            queue, router, mail_store, tracking,
            RunnerConfig(name, self.smart_host, self.policy, poll=self.poll),
        )
        service = SmtpService(
            smtp_ctx, runner, address, self.ports, tls, self.listener_limits,
            plaintext_auth=self.plaintext_on_loopback and is_loopback(address),
        )
        try:
            await service.start()
        except OSError as exc:
            await self._close()
            raise ResourceError(f"{ctx.resource}: {exc}") from exc
        self.service = service
        if isinstance(mail_store, MailStoreResource):
            mail_store.mount_listeners.append(self._database_mounted)
        ctx.log.info(f"smtp on {address} ports {service.ports} as {name}")

    def _database_mounted(self, storage_group: str, database: str) -> None:
        """Deliveries that waited in the queue while a database was being restored go now."""
        queue, service = self.queue, self.service
        if queue is None or service is None or service.runner is None:
            return
        runner = service.runner

        async def retry() -> None:
            try:
                if await queue.retry_route(LOCAL):
                    runner.wake()
            except StoreError as exc:
                self.ctx.log.warning(f"retrying local deliveries failed: {exc}")

        task = asyncio.get_running_loop().create_task(retry())
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def _close(self) -> None:
        for dep in self.ctx.dependencies():
            if isinstance(dep, MailStoreResource) and self._database_mounted in (
                    dep.mount_listeners):
                dep.mount_listeners.remove(self._database_mounted)
        service, self.service = self.service, None
        if service is not None:
            await service.stop()
        queue, self.queue = self.queue, None
        if queue is not None:
            await asyncio.to_thread(queue.close)
        tracking, self.tracking = self.tracking, None
        if tracking is not None:
            tracking.close()

    async def offline(self) -> None:
        await self._close()

    async def quick_check(self) -> bool:
        return self.service is not None and self.service.is_serving()

    async def thorough_check(self) -> bool:
        if not await self.quick_check() or self.queue is None:
            return False
        try:
            await asyncio.to_thread(self.queue.check_owner)  # fenced: a newer owner exists
        except Exception as exc:
            self.ctx.log.error(f"queue check failed: {exc}")
            return False
        return True



def _host_port(value: PropertyValue) -> str | None:
    host, sep, port = str(value).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return '"host:port", such as "smtp.example.net:587"'
    return None


_I, _F = PropertyKind.INT, PropertyKind.FLOAT


def _line_length(value: PropertyValue) -> str | None:
    ok = isinstance(value, int) and not isinstance(value, bool) \
        and value >= policy.MIN_LINE_LENGTH
    return None if ok else f"an integer >= {policy.MIN_LINE_LENGTH} (RFC 5322's 998 + CRLF)"


def _at_least_zero(value: PropertyValue) -> str | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
    return None if ok else "a number >= 0"

SMTP_TYPE = ResourceType(
    "smtp",
    SmtpResource,
    {
        **pr.COMMON_PROPERTIES,
        "port": PropertySpec(_I, check=pr.port_check),
        "submission_port": PropertySpec(_I, check=pr.port_check),
        "submissions_port": PropertySpec(_I, check=pr.port_check),
        "message_size_limit": PropertySpec(_I, check=pr.above_zero),
        "max_recipients": PropertySpec(_I, check=pr.above_zero),
        "max_line_length": PropertySpec(_I, check=_line_length),
        "soft_error_limit": PropertySpec(_I, check=pr.above_zero),
        "hard_error_limit": PropertySpec(_I, check=pr.above_zero),
        "error_sleep_time": PropertySpec(_F, check=_at_least_zero),
        "junk_command_limit": PropertySpec(_I, check=pr.above_zero),
        "login_timeout": PropertySpec(_F, check=pr.above_zero),
        "line_timeout": PropertySpec(_F, check=pr.above_zero),
        "reject_sender_login_mismatch": PropertySpec(PropertyKind.BOOL),
        "smart_host": PropertySpec(PropertyKind.STR, check=_host_port),
        "retry_base": PropertySpec(_F, check=pr.above_zero),
        "retry_max": PropertySpec(_F, check=pr.above_zero),
        "delay_notice_after": PropertySpec(_F, check=pr.above_zero),
        "expire_after": PropertySpec(_F, check=pr.above_zero),
        "queue_poll": PropertySpec(_F, check=pr.above_zero),
    },
    check=pr.tls_pair,
)
