"""One immutable snapshot of the cluster's state in the store, from one range read.

Each cycle of a node agent or the leader decides from one view only (the
Patroni lesson), so its reason line always matches what it saw. Every key is
parsed into its typed record (:mod:`clustermail.cluster.records`) here, once;
a malformed record is left out of the view and listed in ``problems`` with
the key and what is wrong, so the caller can say so instead of crashing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from clustermail.cluster import keys
from clustermail.cluster.config import ConfigError, Problem
from clustermail.cluster.model import ClusterConfig
from clustermail.cluster.records import (
    AssignmentRecord,
    ConfigRecord,
    EpochRecord,
    FailoverHistory,
    GiveUpRecord,
    LeaderRecord,
    NameRecord,
    NodeIntent,
    NodeRecord,
    OwnerRecord,
    RecordError,
    ResourceIntent,
    StatusRecord,
    VsIntent,
)
from clustermail.coord import KeyValue, Store

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class KeyMeta:
    """What compare-and-swap writes of a key need (kept for malformed records too,
    so the leader can replace one)."""

    mod_revision: int
    lease: int = 0


@dataclass(frozen=True, slots=True)
class ClusterView:
    revision: int
    #: The applied configuration as written (JSON), for commands that rewrite it.
    config: dict[str, Any] | None
    config_revision: int
    #: The applied configuration validated (None when none is applied or it is invalid).
    cluster_config: ClusterConfig | None
    #: Why the applied configuration is unusable: unreadable or invalid.
    config_error: ConfigError | None
    #: node name -> registration (present = the node's lease is alive)
    nodes: Mapping[str, NodeRecord]
    node_admin: Mapping[str, NodeIntent]
    leader: str | None
    assign: Mapping[str, AssignmentRecord]
    owner: Mapping[str, OwnerRecord]
    epoch: Mapping[str, EpochRecord]
    status: Mapping[str, StatusRecord]
    vs_admin: Mapping[str, VsIntent]
    failures: Mapping[str, FailoverHistory]
    giveup: Mapping[str, GiveUpRecord]
    #: "<vs>/<resource>" -> intent
    resource_admin: Mapping[str, ResourceIntent]
    names: Mapping[str, NameRecord]
    #: Every key read (full key) -> its mod revision and lease.
    meta: Mapping[str, KeyMeta] = field(default_factory=dict)
    #: Malformed records, left out of the fields above.
    problems: tuple[RecordError, ...] = ()

    def vs_names(self) -> list[str]:
        """Virtual servers of the applied configuration."""
        return sorted(_section(self.config, "virtual_servers"))

    def node_names(self) -> list[str]:
        return sorted(_section(self.config, "nodes"))

    def applied_config(self) -> ClusterConfig:
        """The validated configuration; ``ConfigError`` when there is none or it is invalid."""
        if self.cluster_config is not None:
            return self.cluster_config
        if self.config_error is not None:
            raise ConfigError(self.config_error.source, self.config_error.problems)
        raise ConfigError("the applied configuration",
                          [Problem("", "none has been applied (`clustermail config apply`)")])

    def config_problem(self) -> str | None:
        """Why there is no usable configuration, on one line (None when there is one)."""
        if self.cluster_config is not None:
            return None
        if self.config_error is None:
            return "none has been applied"
        return "; ".join(str(p) for p in self.config_error.problems)

    def mod_revision(self, key: str) -> int:
        """The key's mod revision, 0 when it is absent (what ``Compare.mod_is`` expects)."""
        found = self.meta.get(key)
        return 0 if found is None else found.mod_revision

    def lease_of(self, key: str) -> int:
        """The lease the key is bound to, 0 when none or the key is absent."""
        found = self.meta.get(key)
        return 0 if found is None else found.lease

    def assignment(self, vs: str) -> AssignmentRecord:
        """The leader's decision for ``vs`` (placed nowhere when it made none)."""
        return self.assign.get(vs) or AssignmentRecord()

    def epoch_of(self, vs: str) -> int:
        found = self.epoch.get(vs)
        return 0 if found is None else found.epoch

    def vs_intent(self, vs: str) -> VsIntent:
        return self.vs_admin.get(vs) or VsIntent()

    def paused(self, node: str) -> bool:
        intent = self.node_admin.get(node)
        return intent is not None and intent.paused

    def resource_intent(self, vs: str, resource: str) -> ResourceIntent:
        return self.resource_admin.get(f"{vs}/{resource}") or ResourceIntent()

    def offline_resources(self, vs: str) -> list[str]:
        """Resources of ``vs`` an administrator holds offline."""
        prefix = vs + "/"
        return sorted(k[len(prefix):] for k, intent in self.resource_admin.items()
                      if k.startswith(prefix) and intent.offline)


def _section(config: Mapping[str, Any] | None, name: str) -> list[str]:
    section = (config or {}).get(name)
    return [str(k) for k in section] if isinstance(section, dict) else []


class _Builder:
    """Sorts the keys of one range read into typed records."""

    def __init__(self) -> None:
        self.problems: list[RecordError] = []
        self.meta: dict[str, KeyMeta] = {}

    def parse(self, parse: Callable[[str, bytes], R], kv: KeyValue) -> R | None:
        self.meta[kv.key] = KeyMeta(kv.mod_revision, kv.lease)
        try:
            return parse(kv.key, kv.value)
        except RecordError as exc:
            self.problems.append(exc)
            return None

    def put(self, into: dict[str, R], prefix: str, parse: Callable[[str, bytes], R],
            kv: KeyValue) -> None:
        record = self.parse(parse, kv)
        if record is not None:
            into[keys.name_of(kv.key, prefix)] = record


async def read_view(store: Store) -> ClusterView:
    result = await store.range(keys.PREFIX)
    b = _Builder()
    config_record: ConfigRecord | None = None
    config_rev = 0
    leader: str | None = None
    nodes: dict[str, NodeRecord] = {}
    node_admin: dict[str, NodeIntent] = {}
    assign: dict[str, AssignmentRecord] = {}
    owner: dict[str, OwnerRecord] = {}
    epoch: dict[str, EpochRecord] = {}
    status: dict[str, StatusRecord] = {}
    vs_admin: dict[str, VsIntent] = {}
    failures: dict[str, FailoverHistory] = {}
    giveup: dict[str, GiveUpRecord] = {}
    resource_admin: dict[str, ResourceIntent] = {}
    names: dict[str, NameRecord] = {}
    for kv in result.kvs:
        k = kv.key
        if k == keys.CONFIG:
            config_record = b.parse(ConfigRecord.from_store, kv)
            config_rev = kv.mod_revision
        elif k == keys.LEADER:
            found = b.parse(LeaderRecord.from_store, kv)
            leader = found.node if found is not None else None
        elif k.startswith(keys.NODES):
            b.put(nodes, keys.NODES, NodeRecord.from_store, kv)
        elif k.startswith(keys.NODE_ADMIN):
            b.put(node_admin, keys.NODE_ADMIN, NodeIntent.from_store, kv)
        elif k.startswith(keys.ASSIGN):
            b.put(assign, keys.ASSIGN, AssignmentRecord.from_store, kv)
        elif k.startswith(keys.OWNER):
            b.put(owner, keys.OWNER, OwnerRecord.from_store, kv)
        elif k.startswith(keys.EPOCH):
            b.put(epoch, keys.EPOCH, EpochRecord.from_store, kv)
        elif k.startswith(keys.STATUS):
            b.put(status, keys.STATUS, StatusRecord.from_store, kv)
        elif k.startswith(keys.VS_ADMIN):
            b.put(vs_admin, keys.VS_ADMIN, VsIntent.from_store, kv)
        elif k.startswith(keys.FAILURES):
            b.put(failures, keys.FAILURES, FailoverHistory.from_store, kv)
        elif k.startswith(keys.GIVEUP):
            b.put(giveup, keys.GIVEUP, GiveUpRecord.from_store, kv)
        elif k.startswith(keys.RESOURCE_ADMIN):
            b.put(resource_admin, keys.RESOURCE_ADMIN, ResourceIntent.from_store, kv)
        elif k.startswith(keys.NAMES):
            b.put(names, keys.NAMES, NameRecord.from_store, kv)
    cluster_config: ClusterConfig | None = None
    config_error: ConfigError | None = None
    if config_record is not None:
        try:
            cluster_config = config_record.parse()
        except ConfigError as exc:
            config_error = exc
    else:
        # Written but unreadable is not "none applied": say what is wrong with it.
        config_error = next((ConfigError("the applied configuration",
                                         [Problem("", f"unreadable: {p}")])
                             for p in b.problems if p.key == keys.CONFIG), None)
    return ClusterView(
        revision=result.revision,
        config=config_record.data if config_record is not None else None,
        config_revision=config_rev,
        cluster_config=cluster_config,
        config_error=config_error,
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
        meta=b.meta,
        problems=tuple(b.problems),
    )
