"""`clustermail validate --cluster`, the node's side: the handler of the ``validate``
node request, which ``node run`` gives its agent.

It measures the store's read latency from this node, reads the cluster, runs the
trials of :mod:`.validate_trial` on a thread, checks the data directory, and answers
with the checks. Nothing it does changes what runs.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from typing import Any

from clustermail.admin.validate import data_dir_check, latency
from clustermail.admin.validate_report import FAIL, Check, as_json
from clustermail.admin.validate_trial import Site, trial_checks
from clustermail.cluster.hostspec import substitute
from clustermail.cluster.node_requests import Handler, NodeContext
from clustermail.cluster.resources.block_device import Reservation, reservation_key
from clustermail.cluster.view import read_view
from clustermail.coord import Store

OP = "validate"


async def handle(ctx: NodeContext, params: Mapping[str, Any]) -> dict[str, Any]:
    checks: list[Check] = [await latency(ctx.store)]
    view = await read_view(ctx.store)
    config = view.cluster_config
    if config is None:
        error = view.config_error or "no configuration is applied"
        checks.append(Check("configuration", FAIL, str(error)))
        return {"checks": as_json(checks)}
    values = {"data": str(ctx.data_dir.resolve()), "node": ctx.node}
    devices = {str(substitute(r.properties["device"], {**values, "vs": vs.name}))
               for vs in config.virtual_servers for r in vs.resources
               if r.type == "disk" and "device" in r.properties}
    site = Site(ctx.node, ctx.data_dir, config, view,
                {d: await _reservation(ctx.store, d) for d in sorted(devices)},
                socket.gethostname())

    def local() -> list[Check]:
        return [*trial_checks(site), data_dir_check(ctx.data_dir)]

    checks.extend(await asyncio.to_thread(local))
    return {"checks": as_json(checks)}


async def _reservation(store: Store, device: str) -> Reservation | None:
    kv = await store.get(reservation_key(device))
    return None if kv is None else Reservation.from_store(kv.value)


#: What ``node run`` gives its agent.
HANDLERS: dict[str, Handler] = {OP: handle}

__all__ = ["HANDLERS", "OP", "handle"]
