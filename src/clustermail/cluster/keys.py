"""Where the cluster service keeps its state in the coordination store.

Everything lives under one prefix so one range read is one consistent
snapshot and one watch sees every change. Intent (written by admins) and
observed state (written by node agents) are separate keys, so neither side
ever overwrites the other.
"""

from __future__ import annotations

PREFIX = "/clustermail/"

#: The applied cluster configuration (JSON), written by `config apply`.
CONFIG = PREFIX + "config"
#: node name -> NodeRecord JSON, bound to the node's lease: present = node up.
NODES = PREFIX + "nodes/"
#: node name -> admin intent JSON {"paused": bool}; persistent.
NODE_ADMIN = PREFIX + "node-admin/"
#: The elected leader: node name, bound to the leader's lease.
LEADER = PREFIX + "leader"
#: vs name -> desired owner JSON, written by the leader only (CAS).
ASSIGN = PREFIX + "assign/"
#: vs name -> {"node", "epoch"}: the one owner, bound to the owner's lease.
OWNER = PREFIX + "owner/"
#: vs name -> last fencing epoch handed out (int), bumped with each new owner.
EPOCH = PREFIX + "epoch/"
#: vs name -> observed status JSON, bound to the owner's lease.
STATUS = PREFIX + "status/"
#: vs name -> admin intent JSON {"offline", "move_to", "move_id", "cleared_at"}.
VS_ADMIN = PREFIX + "vs-admin/"
#: vs name -> failover history JSON list, kept by the leader.
FAILURES = PREFIX + "failures/"
#: vs name -> JSON {"node", "time", "reason"}: the owner gave it up after a failure.
GIVEUP = PREFIX + "giveup/"
#: "<vs>/<resource>" -> admin intent JSON {"offline": bool}.
RESOURCE_ADMIN = PREFIX + "resource-admin/"
#: network name -> {"address", "node", "vs", "epoch"} (the network_name resource).
NAMES = PREFIX + "names/"
#: The cluster event log (outside PREFIX, so log writes wake no reconcile loop).
LOG = "/clustermail-log/"


def name_of(key: str, prefix: str) -> str:
    """The last part of a key under ``prefix`` (e.g. the node name)."""
    return key[len(prefix) :]
