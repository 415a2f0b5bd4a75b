"""`clustermail validate --cluster`, the node's side: the handler of the ``validate``
node request, which ``node run`` gives its agent.

It measures the store's read latency from this node, reads the cluster, runs the
machine's checks of ``validate --node`` (the trials of :mod:`.validate_trial`, tools,
privileges, the data directory) on a thread, and answers with the checks. Nothing it
does changes what runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from clustermail.admin.validate import machine_checks, reservations_of
from clustermail.admin.validate_report import FAIL, OP, Check, as_json
from clustermail.admin.validate_store import latency
from clustermail.cluster.node_requests import Handler, NodeContext
from clustermail.cluster.view import read_view


async def handle(ctx: NodeContext, params: Mapping[str, Any]) -> dict[str, Any]:
    checks: list[Check] = [await latency(ctx.store)]
    view = await read_view(ctx.store)
    config = view.cluster_config
    if config is None:
        error = view.config_error or "no configuration is applied"
        checks.append(Check("configuration", FAIL, str(error)))
        return {"checks": as_json(checks)}
    reservations = await reservations_of(ctx.store, config, ctx.data_dir, ctx.node)
    checks.extend(await asyncio.to_thread(machine_checks, config, view, ctx.node,
                                          ctx.data_dir, reservations))
    return {"checks": as_json(checks)}


#: What ``node run`` gives its agent.
HANDLERS: dict[str, Handler] = {OP: handle}

__all__ = ["HANDLERS", "handle"]
