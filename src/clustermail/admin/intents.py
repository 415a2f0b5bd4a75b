"""Administrative intents: what `clustermail node|vs|resource …` write into the store.

Each function checks the names against the applied configuration first, so a
typo gets a clear error instead of a silent no-op.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from clustermail.admin.errors import AdminError
from clustermail.cluster import keys
from clustermail.cluster.view import ClusterView, read_view
from clustermail.coord import Store


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
        raise AdminError(f"no node named {node!r} (nodes: {', '.join(view.node_names())})")


def check_vs(view: ClusterView, vs: str) -> None:
    if vs not in view.vs_names():
        raise AdminError(
            f"no virtual server named {vs!r} (virtual servers: {', '.join(view.vs_names())})"
        )


def check_resource(view: ClusterView, vs: str, resource: str) -> None:
    check_vs(view, vs)
    assert view.config is not None
    resources = view.config["virtual_servers"][vs].get("resources", {})
    if resource not in resources:
        raise AdminError(
            f"virtual server {vs} has no resource {resource!r} "
            f"(resources: {', '.join(sorted(resources))})"
        )


async def _update(store: Store, key: str, changes: dict[str, Any]) -> dict[str, Any]:
    kv = await store.get(key)
    record: dict[str, Any] = json.loads(kv.value) if kv else {}
    record.update(changes)
    await store.put(key, json.dumps(record))
    return record


async def evict_node(store: Store, node: str) -> None:
    """Removes a node that is down from the configuration (Windows' "Evict Node")."""
    from clustermail.cluster.config import ConfigError
    from clustermail.cluster.model import ClusterConfig
    from clustermail.coord import Compare, Delete, Put

    view = await current_view(store)
    check_node(view, node)
    if node in view.nodes:
        raise AdminError(f"{node} is up: stop it first (`clustermail node stop {node}`), "
                         "then evict it")
    assert view.config is not None
    config = json.loads(json.dumps(view.config))
    del config["nodes"][node]
    if not config["nodes"]:
        raise AdminError(f"{node} is the last node of the cluster; it cannot be evicted")
    for vs in config.get("virtual_servers", {}).values():
        for field in ("preferred_owners", "possible_owners"):
            if field in vs:
                vs[field] = [n for n in vs[field] if n != node]
                if field == "possible_owners" and not vs[field]:
                    del vs[field]
    try:
        ClusterConfig.from_dict(config, "the configuration without " + node)
    except ConfigError as exc:
        raise AdminError(f"cannot evict {node}: {exc}") from exc
    result = await store.txn(
        [Compare.mod_is(keys.CONFIG, view.config_revision)],
        [Put(keys.CONFIG, json.dumps(config, sort_keys=True)), Delete(keys.NODE_ADMIN + node)],
    )
    if not result.succeeded:
        raise AdminError("the configuration changed meanwhile; run the command again")


async def pause_node(store: Store, node: str, paused: bool) -> None:
    view = await current_view(store)
    check_node(view, node)
    await _update(store, keys.NODE_ADMIN + node, {"paused": paused, "time": time.time()})


async def set_vs_offline(store: Store, vs: str, offline: bool) -> None:
    view = await current_view(store)
    check_vs(view, vs)
    await _update(store, keys.VS_ADMIN + vs, {"offline": offline, "time": time.time()})


async def move_vs(store: Store, vs: str, to: str | None) -> str:
    """Requests a planned move; returns the move id the leader echoes when done."""
    view = await current_view(store)
    check_vs(view, vs)
    if to is not None:
        check_node(view, to)
    move_id = uuid.uuid4().hex[:12]
    await _update(
        store,
        keys.VS_ADMIN + vs,
        {"move_to": to or "*", "move_id": move_id, "move_time": time.time(), "offline": False},
    )
    return move_id


async def clear_failures(store: Store, vs: str) -> None:
    view = await current_view(store)
    check_vs(view, vs)
    await _update(store, keys.VS_ADMIN + vs, {"cleared_at": time.time()})
    await store.delete(keys.GIVEUP + vs)


async def set_resource_offline(store: Store, vs: str, resource: str, offline: bool) -> None:
    view = await current_view(store)
    check_resource(view, vs, resource)
    await _update(store, f"{keys.RESOURCE_ADMIN}{vs}/{resource}", {"offline": offline})


async def _rewrite_config(
    store: Store, view: ClusterView, config: dict[str, Any], what: str
) -> None:
    """Validates a changed configuration and writes it with compare-and-swap."""
    import clustermail.mail.schemas  # noqa: F401  (mail resource types)
    from clustermail.cluster.config import ConfigError
    from clustermail.cluster.model import ClusterConfig
    from clustermail.coord import Compare, Put

    try:
        ClusterConfig.from_dict(config, what)
    except ConfigError as exc:
        raise AdminError(str(exc)) from exc
    result = await store.txn(
        [Compare.mod_is(keys.CONFIG, view.config_revision)],
        [Put(keys.CONFIG, json.dumps(config, sort_keys=True))],
    )
    if not result.succeeded:
        raise AdminError("the configuration changed meanwhile; run the command again")


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
    assert view.config is not None
    config = json.loads(json.dumps(view.config))
    resources: dict[str, Any] = config["virtual_servers"][vs].setdefault("resources", {})
    name = name or rtype
    if name in resources:
        raise AdminError(f"virtual server {vs} already has a resource named {name!r}")
    if depends_on is None:
        wanted = _AUTO_DEPENDENCIES.get(rtype, ())
        depends_on = [r for r, spec in resources.items() if spec.get("type") in wanted]
    template = next((t for t in mail_resources().values() if t["type"] == rtype), None)
    props = dict(template["properties"]) if template and properties is None else {}
    props.update(properties or {})
    resources[name] = {"type": rtype, "depends_on": depends_on, "properties": props}
    await _rewrite_config(store, view, config, f"{vs} with {rtype} resource {name!r}")
    return name


async def remove_resource(store: Store, vs: str, resource: str) -> None:
    """Removes a resource; its owner takes it offline live. Refused while others need it."""
    view = await current_view(store)
    check_resource(view, vs, resource)
    assert view.config is not None
    config = json.loads(json.dumps(view.config))
    resources: dict[str, Any] = config["virtual_servers"][vs]["resources"]
    needed_by = sorted(r for r, spec in resources.items()
                       if resource in spec.get("depends_on", []))
    if needed_by:
        raise AdminError(
            f"{', '.join(needed_by)} {'depends' if len(needed_by) == 1 else 'depend'} on "
            f"{vs}/{resource}: remove {'it' if len(needed_by) == 1 else 'them'} first"
        )
    del resources[resource]
    await _rewrite_config(store, view, config, f"{vs} without resource {resource!r}")
    await store.delete(f"{keys.RESOURCE_ADMIN}{vs}/{resource}")
