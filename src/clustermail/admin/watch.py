"""`clustermail status --watch`: the cluster picture, redrawn live in the terminal (like
crm_mon): one panel per node with the virtual servers it runs and their resources,
redrawn whenever a key of the cluster changes (at most every ``REDRAW_EVERY`` s)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from rich.columns import Columns
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.text import Text

from clustermail.admin.status import build_status
from clustermail.cluster import keys
from clustermail.cluster.view import ClusterView, read_view
from clustermail.coord import CoordError, Store

REDRAW_EVERY = 0.25
COLORS = {"up": "green", "online": "green", "paused": "yellow", "draining": "yellow",
          "partially_online": "yellow", "online_pending": "magenta",
          "offline_pending": "magenta", "down": "red", "failed": "red", "offline": "dim"}


def _state(state: str) -> Text:
    return Text(state, style=COLORS.get(state, ""))


def _vs(vs: dict[str, Any], view: ClusterView) -> RenderableType:
    lines = [Text.assemble((vs["name"], "bold"), " ", _state(vs["state"]), " ",
                           (vs["address"] or "", "dim"))]
    config = view.cluster_config
    server = config.virtual_server(vs["name"]) if config is not None else None
    for name in server.online_order() if server is not None else ():
        res = server.resource(name) if server is not None else None
        state = vs["resources"].get(name, "offline")
        held = " (held offline)" if view.resource_intent(vs["name"], name).offline else ""
        deps = f" ← {', '.join(res.depends_on)}" if res is not None and res.depends_on else ""
        lines.append(Text.assemble("  ", name, " ", _state(state), held, (deps, "dim")))
    if vs["state"] != "online" and vs["reason"]:
        lines.append(Text(f"  {vs['reason']}", style="dim"))
    return Group(*lines)


def picture(view: ClusterView) -> RenderableType:
    status = build_status(view)
    panels = []
    for node in status["nodes"]:
        hosted = [_vs(v, view) for v in status["virtual_servers"] if v["owner"] == node["name"]]
        title = Text.assemble((node["name"], "bold"), " ", _state(node["state"]),
                              " ★" if node["leader"] else "")
        panels.append(Panel(Group(*hosted) if hosted else Text("(nothing)", style="dim"),
                            title=title, border_style=COLORS.get(node["state"], ""),
                            width=44))
    unplaced = [_vs(v, view) for v in status["virtual_servers"] if not v["owner"]]
    parts: list[RenderableType] = [
        Text(f"cluster {status['cluster']} — {time.strftime('%H:%M:%S')} "
             f"(store revision {status['revision']}; Ctrl-C to quit)", style="bold"),
        Columns(panels),
    ]
    if unplaced:
        parts.append(Panel(Group(*unplaced), title="not running", border_style="red"))
    return Group(*parts)


async def watch(store: Store, console: Console) -> int:
    changed = asyncio.Event()
    changed.set()

    async def follow() -> None:
        start: int | None = None
        while True:
            try:
                async for ev in store.watch(keys.PREFIX, start):
                    start = ev.revision + 1
                    changed.set()
            except CoordError:
                await asyncio.sleep(0.5)
                changed.set()

    async def current() -> RenderableType:
        try:
            return picture(await read_view(store))
        except CoordError as exc:
            return Text(f"the store is unreachable: {exc}", style="red")

    follower = asyncio.ensure_future(follow())
    try:
        if not console.is_terminal:
            # A pipe or a file: one picture after another instead of redrawing in place.
            while True:
                await changed.wait()
                changed.clear()
                console.print(await current())
                console.file.flush()
                await asyncio.sleep(REDRAW_EVERY)
        with Live(console=console, auto_refresh=False, screen=False) as live:
            while True:
                await changed.wait()
                changed.clear()
                live.update(await current(), refresh=True)
                await asyncio.sleep(REDRAW_EVERY)
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
