"""One immutable snapshot of the cluster's state in the store, from one range read.

Each cycle of a node agent or the leader decides from one view only (the
Patroni lesson), so its reason line always matches what it saw.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from clustermail.cluster import keys
from clustermail.coord import KeyValue, Store


def _json(kv: KeyValue) -> Any:
    try:
        return json.loads(kv.value)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class ClusterView:
    revision: int
    config: dict[str, Any] | None
    config_revision: int
    #: node name -> registration record (present = the node's lease is alive)
    nodes: dict[str, dict[str, Any]]
    node_admin: dict[str, dict[str, Any]]
    leader: str | None
    #: vs -> (assignment record, mod revision of the assignment key)
    assign: dict[str, tuple[dict[str, Any], int]]
    #: vs -> (owner record, the owner key's KeyValue)
    owner: dict[str, tuple[dict[str, Any], KeyValue]]
    epoch: dict[str, tuple[int, int]]  # vs -> (epoch, mod revision)
    status: dict[str, dict[str, Any]]
    vs_admin: dict[str, tuple[dict[str, Any], int]]
    failures: dict[str, tuple[list[dict[str, Any]], int]]
    giveup: dict[str, tuple[dict[str, Any], int]]
    resource_admin: dict[str, dict[str, Any]]
    names: dict[str, dict[str, Any]] = field(default_factory=dict)

    def vs_names(self) -> list[str]:
        """Virtual servers of the applied configuration (the to_dict form: keyed by name)."""
        if not self.config:
            return []
        return sorted(self.config.get("virtual_servers", {}))

    def node_names(self) -> list[str]:
        if not self.config:
            return []
        return sorted(self.config.get("nodes", {}))


async def read_view(store: Store) -> ClusterView:
    result = await store.range(keys.PREFIX)
    config: dict[str, Any] | None = None
    config_rev = 0
    nodes: dict[str, dict[str, Any]] = {}
    node_admin: dict[str, dict[str, Any]] = {}
    leader: str | None = None
    assign: dict[str, tuple[dict[str, Any], int]] = {}
    owner: dict[str, tuple[dict[str, Any], KeyValue]] = {}
    epoch: dict[str, tuple[int, int]] = {}
    status: dict[str, dict[str, Any]] = {}
    vs_admin: dict[str, tuple[dict[str, Any], int]] = {}
    failures: dict[str, tuple[list[dict[str, Any]], int]] = {}
    giveup: dict[str, tuple[dict[str, Any], int]] = {}
    resource_admin: dict[str, dict[str, Any]] = {}
    names: dict[str, dict[str, Any]] = {}
    for kv in result.kvs:
        k = kv.key
        if k.startswith(keys.LOG):
            continue
        if k == keys.CONFIG:
            config, config_rev = _json(kv), kv.mod_revision
        elif k == keys.LEADER:
            leader = kv.value.decode()
        elif k.startswith(keys.NODES):
            nodes[keys.name_of(k, keys.NODES)] = _json(kv) or {}
        elif k.startswith(keys.NODE_ADMIN):
            node_admin[keys.name_of(k, keys.NODE_ADMIN)] = _json(kv) or {}
        elif k.startswith(keys.ASSIGN):
            assign[keys.name_of(k, keys.ASSIGN)] = (_json(kv) or {}, kv.mod_revision)
        elif k.startswith(keys.OWNER):
            owner[keys.name_of(k, keys.OWNER)] = (_json(kv) or {}, kv)
        elif k.startswith(keys.EPOCH):
            epoch[keys.name_of(k, keys.EPOCH)] = (int(kv.value or b"0"), kv.mod_revision)
        elif k.startswith(keys.STATUS):
            status[keys.name_of(k, keys.STATUS)] = _json(kv) or {}
        elif k.startswith(keys.VS_ADMIN):
            vs_admin[keys.name_of(k, keys.VS_ADMIN)] = (_json(kv) or {}, kv.mod_revision)
        elif k.startswith(keys.FAILURES):
            failures[keys.name_of(k, keys.FAILURES)] = (_json(kv) or [], kv.mod_revision)
        elif k.startswith(keys.GIVEUP):
            giveup[keys.name_of(k, keys.GIVEUP)] = (_json(kv) or {}, kv.mod_revision)
        elif k.startswith(keys.RESOURCE_ADMIN):
            resource_admin[keys.name_of(k, keys.RESOURCE_ADMIN)] = _json(kv) or {}
        elif k.startswith(keys.NAMES):
            names[keys.name_of(k, keys.NAMES)] = _json(kv) or {}
    return ClusterView(
        revision=result.revision,
        config=config,
        config_revision=config_rev,
        nodes=nodes,
        node_admin=node_admin,
        leader=leader,
        assign=assign,
        owner=owner,
        epoch=epoch,
        status=status,
        vs_admin=vs_admin,
        failures=failures,
        giveup=giveup,
        resource_admin=resource_admin,
        names=names,
    )
