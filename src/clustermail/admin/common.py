"""What every `clustermail` command shares: the parser, the store, the output.

Usage errors are one line on stderr and exit code 2; ``--json`` output is
always written by :func:`emit` (one document) or :func:`emit_line` (one line of
a stream), so every command prints JSON the same way: keys sorted, UTF-8 kept
as is, documents indented by two spaces.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console, RenderableType
from rich.table import Table

from clustermail.admin import local, local_store
from clustermail.admin.errors import AdminError
from clustermail.coord import Store, open_store

DEFAULT_DATA = Path("clustermail-data")

#: A command: parsed arguments and the console in, exit code out.
Handler = Callable[[argparse.Namespace, Console], Coroutine[Any, Any, int]]
#: ``add(name, help, handler, parent)``: adds one command (see :func:`command_adder`).
Add = Callable[..., argparse.ArgumentParser]


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"clustermail: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


def add_common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="the local cluster's data directory (default: ./clustermail-data)")
    p.add_argument("--store", help="coordination store URL (default: sqlite store under --data)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--api", metavar="URL",
                   help="drive a cluster through its admin API (e.g. https://HOST:8443) "
                   "instead of its store (default: CLUSTERMAIL_API_URL, for the commands that "
                   "support it); credentials from CLUSTERMAIL_API_USER and "
                   "CLUSTERMAIL_API_PASSWORD or ~/.config/clustermail/api.toml")


def command_adder(default_parent: Any) -> Add:
    """``add(name, help, handler, parent=default_parent)``: a command with the common
    options whose handler runs when it is chosen."""

    def add(name: str, help: str, handler: Handler,
            parent: Any = default_parent) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, help=help, description=help)
        add_common_options(p)
        p.set_defaults(handler=handler)
        return p

    return add


def add_group(sub: Any, name: str, help: str) -> Any:
    """A command with actions (``node pause``, ``user add``): returns its subparsers."""
    p = sub.add_parser(name, help=help, description=help)
    return p.add_subparsers(dest="sub", metavar="ACTION", parser_class=Parser, required=True)


# --------------------------------------------------------------------------- the store


def store_url(args: argparse.Namespace) -> str:
    return str(args.store) if args.store else local.store_url_for(args.data)


async def with_store(args: argparse.Namespace) -> Store:
    """The store of ``--store``, or of the local cluster under ``--data`` if it exists."""
    if not args.store and not local.has_cluster(args.data):
        raise AdminError(
            f"no local cluster in {args.data.resolve()}: start one with `clustermail up`, "
            "or give --store URL"
        )
    if not args.store:
        return await local_store.open_default(args.data)
    return await open_store(store_url(args))


# --------------------------------------------------------------------------- output


def json_text(data: Any, *, line: bool = False) -> str:
    """The one JSON format of the CLI; ``line`` gives one line, for streams (JSON Lines)."""
    return json.dumps(data, indent=None if line else 2, sort_keys=True, ensure_ascii=False,
                      default=str)


def emit(console: Console, args: argparse.Namespace, data: Any, human: RenderableType) -> None:
    """``data`` as one JSON document with ``--json``, else ``human`` on the console."""
    if args.json:
        print(json_text(data))
    else:
        console.print(human)


def emit_line(data: Any) -> None:
    """One JSON line of a stream (``log --json``), flushed so a follower sees it at once."""
    print(json_text(data, line=True), flush=True)


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> Table:
    t = Table(title=title)
    for col in columns:
        t.add_column(col)
    for row in rows:
        t.add_row(*row)
    return t
