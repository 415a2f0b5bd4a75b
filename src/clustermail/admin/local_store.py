"""Which coordination store a data directory's cluster lives in.

`clustermail up` runs the local cluster on the embedded store
``DATA/cluster.db`` unless told otherwise: ``--store URL`` (an etcd cluster
that runs already) or ``--etcd`` (a private etcd cluster that `up` starts, see
:mod:`clustermail.admin.local_etcd`). It records its choice in
``DATA/store.json``, so every later command given ``--data DIR`` (or the
default directory) and no ``--store`` finds the same cluster, and a later
`up` on that directory runs on the same store again.

A data directory belongs to one store: its mail databases carry the fencing
epochs of that store's virtual servers, and another store would start the
epochs over (its mounts would be refused). `up` therefore refuses to switch a
data directory to another store, naming both.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

from clustermail.admin.errors import AdminError
from clustermail.coord import CoordError, Store, open_store
from clustermail.coord.url import parse_store_url, redact
from clustermail.private_files import write_private_text

RECORD = "store.json"
#: Seconds `up` waits for a store to answer before it refuses to start.
CONNECT_TIMEOUT = 15.0


@dataclass(frozen=True, slots=True)
class StoreChoice:
    """The store of a data directory's cluster: a URL, or `up`'s private etcd."""

    url: str
    #: The store is the private etcd cluster that `up --etcd` runs under DATA/etcd.
    private_etcd: bool = False

    def describe(self) -> str:
        if self.private_etcd:
            return f"the private etcd cluster of `up --etcd` ({self.url})"
        return redact(self.url)


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite://{data_dir.resolve() / 'cluster.db'}"


def record_path(data_dir: Path) -> Path:
    return data_dir / RECORD


def recorded(data_dir: Path) -> StoreChoice | None:
    """What `up` recorded in ``DATA/store.json`` (None if nothing, or unreadable)."""
    try:
        data = json.loads(record_path(data_dir).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("store"), str):
        return None
    return StoreChoice(data["store"], private_etcd=data.get("private_etcd") is True)


def record(data_dir: Path, choice: StoreChoice) -> None:
    write_private_text(record_path(data_dir), json.dumps(
        {"store": choice.url, "private_etcd": choice.private_etcd}, indent=2) + "\n")


def default_url(data_dir: Path) -> str:
    """The store URL of the cluster under ``data_dir``: the one `up` recorded there,
    else the embedded store's."""
    choice = recorded(data_dir)
    return choice.url if choice is not None else sqlite_url(data_dir)


def has_cluster(data_dir: Path) -> bool:
    """Whether ``data_dir`` holds a local cluster (an embedded store, or a record)."""
    return (data_dir / "cluster.db").exists() or recorded(data_dir) is not None


def choose(data_dir: Path, store: str | None, private_etcd_url: str | None) -> StoreChoice:
    """The store `up` runs on: ``--store``, ``--etcd`` (``private_etcd_url``), the one
    recorded in the data directory, or the embedded one. Refuses another store than
    the data directory's own."""
    before = recorded(data_dir)
    if store is None and private_etcd_url is None:
        if before is not None:
            return before
        return StoreChoice(sqlite_url(data_dir))
    if private_etcd_url is not None:
        wanted = StoreChoice(private_etcd_url, private_etcd=True)
    else:
        assert store is not None
        try:
            wanted = StoreChoice(str(parse_store_url(store)))
        except CoordError as exc:
            raise AdminError(str(exc)) from None
    if before is None and (data_dir / "cluster.db").exists():
        before = StoreChoice(sqlite_url(data_dir))
    if before is not None and not _same(before, wanted):
        raise AdminError(
            f"{data_dir} holds the cluster of {before.describe()}; its mail databases "
            f"are fenced by that store's epochs: give another --data directory for "
            f"{wanted.describe()}, or run `clustermail up --data {data_dir}` without "
            "--store/--etcd to use its own"
        )
    return wanted


def _same(a: StoreChoice, b: StoreChoice) -> bool:
    if a.private_etcd or b.private_etcd:
        # The private cluster's ports are the data directory's own: only the mode counts.
        return a.private_etcd == b.private_etcd
    if a.url.startswith("sqlite://") and b.url.startswith("sqlite://"):
        return Path(a.url[len("sqlite://"):]).resolve() == Path(b.url[len("sqlite://"):]).resolve()
    return a.url == b.url


async def open_default(data_dir: Path) -> Store:
    """The store of the cluster under ``data_dir``, for commands given no ``--store``.
    The private etcd runs only while its `up` does: a refusal says so."""
    choice = recorded(data_dir)
    if choice is None or not choice.private_etcd:
        return await open_store(default_url(data_dir))
    try:
        return await open_store(choice.url)
    except CoordError as exc:
        raise AdminError(f"the cluster in {data_dir} runs on the private etcd cluster of "
                         f"`up --etcd`, which does not answer ({exc}): it runs only while "
                         f"`clustermail up --data {data_dir}` does") from None


async def connect(choice: StoreChoice) -> Store:
    """Opens the store, or raises the one line that says it does not answer."""
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            return await open_store(choice.url)
    except TimeoutError:
        why = f"no answer within {CONNECT_TIMEOUT:g} s"
    except CoordError as exc:
        why = str(exc)
    raise AdminError(f"cannot reach the store {choice.describe()} ({why}); nothing was "
                     "started: start the store or give the right --store URL")
