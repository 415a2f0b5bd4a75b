"""A resource type that misbehaves on purpose, for the supervision tests.

Declared by tests as a third party would, through an entry point
(:data:`ENTRY_POINT`, with ``tests/support/distributions.py``), so real resource
hosts and node agents load it too. Its ``fault`` property says how it fails:

* ``wedge_online`` / ``wedge_check``: the online, or the quick check, blocks the
  event loop (``time.sleep``): only the agent's ping can notice;
* ``hang_check``: the quick check awaits forever, the loop stays fine: its
  pending timeout must count it as failed;
* ``ignore_cancel_online``: the online awaits and swallows its cancellations
  for :data:`IGNORE_CANCEL_FOR` seconds: the pending timeout must end it
  earlier;
* ``none``: behaves.

With ``trigger`` (a file path) the fault happens only once that file exists,
and only once: the resource deletes the file as it fires, so a test picks the
moment and the virtual server's next start (on another node) behaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

from clustermail.cluster.resource_schema import PropertyKind, PropertySpec, ResourceType
from clustermail.cluster.resources import Properties, Resource, ResourceContext

#: The entry point tests declare for it.
ENTRY_POINT = {"faulty": f"{__name__}:FAULTY_TYPE"}

FAULTS = ("none", "wedge_online", "wedge_check", "hang_check", "ignore_cancel_online")
#: Long enough to outlast any test; the agent kills the host long before.
WEDGE_SECONDS = 1000.0
#: Longer than the pending timeouts of the tests; bounded, so a test's own event
#: loop can still close.
IGNORE_CANCEL_FOR = 5.0


class FaultyResource(Resource):
    def __init__(self, ctx: ResourceContext, properties: Properties) -> None:
        super().__init__(ctx, properties)
        self.fault = properties.string("fault", "none")
        self.trigger = properties.optional_string("trigger")

    def _fires(self, fault: str) -> bool:
        if self.fault != fault:
            return False
        if self.trigger is None:
            return True
        try:
            os.unlink(self.trigger)  # fire once: whoever deletes it fires
        except FileNotFoundError:
            return False
        self.ctx.log.warning(f"{fault}: triggered")
        return True

    async def online(self) -> None:
        if self._fires("wedge_online"):
            time.sleep(WEDGE_SECONDS)  # the bug under test: a blocking call on the loop
        if self._fires("ignore_cancel_online"):
            until = time.monotonic() + IGNORE_CANCEL_FOR
            while (left := until - time.monotonic()) > 0:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(left)

    async def offline(self) -> None:
        pass

    async def quick_check(self) -> bool:
        if self._fires("wedge_check"):
            time.sleep(WEDGE_SECONDS)
        if self._fires("hang_check"):
            await asyncio.Event().wait()
        return True

    async def thorough_check(self) -> bool:
        return await self.quick_check()


FAULTY_TYPE = ResourceType(
    "faulty",
    FaultyResource,
    {
        "fault": PropertySpec(PropertyKind.STR, choices=FAULTS, default="none"),
        "trigger": PropertySpec(PropertyKind.STR),
    },
)
