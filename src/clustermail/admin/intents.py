"""Administrative intents: what `clustermail node|vs|resource …` write into the store.

Each function checks the names against the applied configuration first, so a
typo gets a clear error instead of a silent no-op.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from clustermail.admin.errors import AdminError, InvalidRequestError, NotFoundError
from clustermail.cluster import keys
from clustermail.cluster.config import ConfigError, config_from_dict
from clustermail.cluster.model import ClusterConfig, VirtualServer
from clustermail.cluster.records import (
    ANY_NODE,
    ConfigRecord,
    NodeIntent,
    RecordError,
    ResourceIntent,
    StoreRecord,
    VsIntent,
)
from clustermail.cluster.view import ClusterView, read_view
from clustermail.coord import Compare, Delete, Put, Store, TxnOp


async def current_view(store: Store) -> ClusterView:
    view = await read_view(store)
    if view.config is None:
        raise AdminError(
            f"no cluster configuration in {store.url}: run `clustermail config apply FILE` "
            "or `clustermail up`"
        )
    return view


def check_node(view: ClusterView, node: str) -> None:
    if node not in view.node_names():
        raise NotFoundError(f"no node named {node!r} (nodes: {', '.join(view.node_names())})")


def check_vs(view: ClusterView, vs: str) -> None:
    if vs not in view.vs_names():
        raise NotFoundError(
            f"no virtual server named {vs!r} (virtual servers: {', '.join(view.vs_names())})"
        )


def applied_config(view: ClusterView) -> ClusterConfig:
    try:
        return view.applied_config()
    except ConfigError as exc:
        raise AdminError(str(exc)) from exc


def check_resource(view: ClusterView, vs: str, resource: str) -> None:
    check_vs(view, vs)
    server = applied_config(view).virtual_server(vs)
    names = [r.name for r in server.resources] if server is not None else []
    if resource not in names:
        raise NotFoundError(
            f"virtual server {vs} has no resource {resource!r} "
            f"(resources: {', '.join(sorted(names))})"
        )


IntentT = TypeVar("IntentT", bound=StoreRecord)

#: Reads and compare-and-swap writes of one intent before :func:`_update` gives up.
UPDATE_ATTEMPTS = 5


async def _update(store: Store, key: str, parse: Callable[[str, bytes], IntentT], empty: IntentT,
                  change: Callable[[IntentT], IntentT]) -> IntentT:
    """Rewrites an intent, keeping the fields this command does not set.

    Compare-and-swap on the key's mod revision: the leader writes into the same
    key (its answer to a move), and an answer written between our read and our
    write must not be overwritten. On a conflict, reads again and reapplies
    ``change``, up to :data:`UPDATE_ATTEMPTS` times."""
    for _ in range(UPDATE_ATTEMPTS):
        kv = await store.get(key)
        record = empty
        if kv is not None:
            # An unreadable intent is replaced: the administrator's new one is what counts.
            with contextlib.suppress(RecordError):
                record = parse(key, kv.value)
        record = change(record)
        read_at = kv.mod_revision if kv is not None else 0  # 0: it must still be absent
        result = await store.txn([Compare.mod_is(key, read_at)], [Put(key, record.to_store())])
        if result.succeeded:
            return record
    raise AdminError(f"{key} kept changing while this command wrote it "
                     f"({UPDATE_ATTEMPTS} attempts); run the command again")


async def _write_config(store: Store, view: ClusterView, config: ClusterConfig,
                        extra: list[TxnOp] | None = None) -> None:
    """Writes a changed configuration with compare-and-swap against the one read."""
    result = await store.txn(
        [Compare.mod_is(keys.CONFIG, view.config_revision)],
        [Put(keys.CONFIG, ConfigRecord.of(config).to_store()), *(extra or [])],
    )
    if not result.succeeded:
        raise AdminError("the configuration changed meanwhile; run the command again")


def _validated(data: dict[str, Any], what: str) -> ClusterConfig:

    try:
        return config_from_dict(data, what)
    except ConfigError as exc:
        raise InvalidRequestError(str(exc)) from exc


def _with_server(config: ClusterConfig, server: VirtualServer) -> ClusterConfig:
    servers = tuple(server if v.name == server.name else v for v in config.virtual_servers)
    return replace(config, virtual_servers=servers)


async def evict_node(store: Store, node: str) -> None:
    """Removes a node that is down from the configuration (Windows' "Evict Node")."""
    view = await current_view(store)
    check_node(view, node)
    if node in view.nodes:
        raise AdminError(f"{node} is up: stop it first (`clustermail node stop {node}`), "
                         "then evict it")
    config = applied_config(view)
    nodes = tuple(n for n in config.nodes if n.name != node)
    if not nodes:
        raise AdminError(f"{node} is the last node of the cluster; it cannot be evicted")
    servers = []
    for vs in config.virtual_servers:
        possible = vs.possible_owners
        if possible is not None:
            # None is every node: an emptied list must not become "no node at all".
            possible = tuple(n for n in possible if n != node) or None
        servers.append(replace(vs, possible_owners=possible,
                               preferred_owners=tuple(n for n in vs.preferred_owners
                                                      if n != node)))
    evicted = replace(config, nodes=nodes, virtual_servers=tuple(servers))
    try:
        config_from_dict(evicted.to_dict(), "the configuration without " + node)
    except ConfigError as exc:
        raise AdminError(f"cannot evict {node}: {exc}") from exc
    await _write_config(store, view, evicted, [Delete(keys.NODE_ADMIN + node)])


async def add_node(store: Store, node: str, *, possible_owner_of: list[str] | None = None,
                   preferred_owner_of: list[str] | None = None) -> ClusterConfig:
    """Adds a node to the configuration (the way back after `node evict`): it may then join
    with `node run --name NODE`. ``possible_owner_of``: virtual servers whose list of possible
    owners gets it (those without a list may run anywhere already); ``preferred_owner_of``:
    virtual servers that prefer it first (so they fail back to it per their policy)."""
    from clustermail.cluster.model import Node

    view = await current_view(store)
    config = applied_config(view)
    if config.node(node) is not None:
        raise AdminError(f"{node} is already a node of the cluster")
    for name in [*(possible_owner_of or []), *(preferred_owner_of or [])]:
        check_vs(view, name)
    servers = []
    for vs in config.virtual_servers:
        possible, preferred = vs.possible_owners, vs.preferred_owners
        if vs.name in (possible_owner_of or []) + (preferred_owner_of or []) and (
                possible is not None and node not in possible):
            possible = (*possible, node)  # a preferred owner must be a possible one
        if vs.name in (preferred_owner_of or []):
            preferred = (node, *(n for n in preferred if n != node))
        servers.append(replace(vs, possible_owners=possible, preferred_owners=preferred))
    added = replace(config, nodes=(*config.nodes, Node(node)), virtual_servers=tuple(servers))
    result = _validated(added.to_dict(), f"the configuration with node {node}")
    await _write_config(store, view, result)
    return result


async def pause_node(store: Store, node: str, paused: bool) -> None:
    view = await current_view(store)
    check_node(view, node)
    await _update(store, keys.NODE_ADMIN + node, NodeIntent.from_store, NodeIntent(),
                  lambda r: replace(r, paused=paused, time=time.time()))


async def set_vs_offline(store: Store, vs: str, offline: bool) -> None:
    view = await current_view(store)
    check_vs(view, vs)
    await _update(store, keys.VS_ADMIN + vs, VsIntent.from_store, VsIntent(),
                  lambda r: replace(r, offline=offline, time=time.time()))


async def move_vs(store: Store, vs: str, to: str | None) -> str:
    """Requests a planned move; returns the move id the leader echoes when done."""
    view = await current_view(store)
    check_vs(view, vs)
    if to is not None:
        check_node(view, to)
    move_id = uuid.uuid4().hex[:12]
    await _update(store, keys.VS_ADMIN + vs, VsIntent.from_store, VsIntent(),
                  lambda r: replace(r, move_to=to or ANY_NODE, move_id=move_id,
                                    move_time=time.time(), offline=False))
    return move_id


def move_answer(view: ClusterView, vs: str, move_id: str) -> str | None:
    """None while the leader has not answered move ``move_id``; then why it refused the
    move, or "" when it did it."""
    return view.vs_intent(vs).answer_to(move_id)


async def clear_failures(store: Store, vs: str) -> None:
    view = await current_view(store)
    check_vs(view, vs)
    await _update(store, keys.VS_ADMIN + vs, VsIntent.from_store, VsIntent(),
                  lambda r: replace(r, cleared_at=time.time()))
    await store.delete(keys.GIVEUP + vs)


async def set_resource_offline(store: Store, vs: str, resource: str, offline: bool) -> None:
    view = await current_view(store)
    check_resource(view, vs, resource)
    await _update(store, f"{keys.RESOURCE_ADMIN}{vs}/{resource}", ResourceIntent.from_store,
                  ResourceIntent(), lambda r: replace(r, offline=offline))


#: Resource types that serve mail depend on the virtual server's mail store and
#: address (SMTP also on its network name, which it uses as its host name).
_AUTO_DEPENDENCIES = {
    "smtp": ("mail_store", "ip_address", "network_name"),
    "pop3": ("mail_store", "ip_address"),
    "imap4": ("mail_store", "ip_address"),
    "mail_store": ("disk",),
}


async def add_resource(
    store: Store,
    vs: str,
    rtype: str,
    *,
    name: str | None = None,
    depends_on: list[str] | None = None,
    properties: dict[str, Any] | None = None,
) -> str:
    """Adds a resource to a virtual server; its owner brings it online live."""
    from clustermail.admin.sample_cluster import mail_resources

    view = await current_view(store)
    check_vs(view, vs)
    config = applied_config(view)
    server = config.virtual_server(vs)
    assert server is not None
    name = name or rtype
    if server.resource(name) is not None:
        raise AdminError(f"virtual server {vs} already has a resource named {name!r}")
    if depends_on is None:
        wanted = _AUTO_DEPENDENCIES.get(rtype, ())
        depends_on = [r.name for r in server.resources if r.type in wanted]
    template = next((t for t in mail_resources().values() if t["type"] == rtype), None)
    props = dict(template["properties"]) if template and properties is None else {}
    props.update(properties or {})
    # The new resource is validated with the rest, from the file's form.
    data = config.to_dict()
    data["virtual_servers"][vs]["resources"][name] = {
        "type": rtype, "depends_on": depends_on, "properties": props}
    await _write_config(store, view, _validated(data, f"{vs} with {rtype} resource {name!r}"))
    return name


async def remove_resource(store: Store, vs: str, resource: str) -> None:
    """Removes a resource; its owner takes it offline live. Refused while others need it."""
    view = await current_view(store)
    check_resource(view, vs, resource)
    config = applied_config(view)
    server = config.virtual_server(vs)
    assert server is not None
    needed_by = sorted(r.name for r in server.resources if resource in r.depends_on)
    if needed_by:
        raise AdminError(
            f"{', '.join(needed_by)} {'depends' if len(needed_by) == 1 else 'depend'} on "
            f"{vs}/{resource}: remove {'it' if len(needed_by) == 1 else 'them'} first"
        )
    smaller = replace(server, resources=tuple(r for r in server.resources if r.name != resource))
    changed = _validated(_with_server(config, smaller).to_dict(),
                         f"{vs} without resource {resource!r}")
    await _write_config(store, view, changed)
    await store.delete(f"{keys.RESOURCE_ADMIN}{vs}/{resource}")
