"""Where the cluster service keeps its state in the coordination store.

Everything lives under one prefix so one range read is one consistent
snapshot and one watch sees every change. Intent (written by admins) and
observed state (written by node agents) are separate keys, so neither side
ever overwrites the other.
"""

from __future__ import annotations

PREFIX = "/clustermail/"

# What each key holds is a typed record of clustermail.cluster.records.

#: The applied cluster configuration (ConfigRecord), written by `config apply`.
CONFIG = PREFIX + "config"
#: node name -> NodeRecord, bound to the node's lease: present = node up.
NODES = PREFIX + "nodes/"
#: node name -> NodeIntent (paused); persistent.
NODE_ADMIN = PREFIX + "node-admin/"
#: The elected leader (LeaderRecord: the node name), bound to the leader's lease.
LEADER = PREFIX + "leader"
#: vs name -> AssignmentRecord (the desired owner), written by the leader only (CAS).
ASSIGN = PREFIX + "assign/"
#: vs name -> OwnerRecord: the one owner, bound to the owner's lease.
OWNER = PREFIX + "owner/"
#: vs name -> EpochRecord: the last fencing epoch handed out, bumped with each new owner.
EPOCH = PREFIX + "epoch/"
#: vs name -> StatusRecord (observed), bound to the owner's lease.
STATUS = PREFIX + "status/"
#: vs name -> VsIntent (offline, move request and its answer, failures cleared).
VS_ADMIN = PREFIX + "vs-admin/"
#: vs name -> FailoverHistory, kept by the leader.
FAILURES = PREFIX + "failures/"
#: vs name -> GiveUpRecord: the owner gave it up after a failure.
GIVEUP = PREFIX + "giveup/"
#: "<vs>/<resource>" -> ResourceIntent (offline).
RESOURCE_ADMIN = PREFIX + "resource-admin/"
#: network name -> NameRecord (the network_name resource).
NAMES = PREFIX + "names/"
#: The cluster event log (outside PREFIX, so log writes wake no reconcile loop).
LOG = "/clustermail-log/"


def name_of(key: str, prefix: str) -> str:
    """The last part of a key under ``prefix`` (e.g. the node name)."""
    return key[len(prefix) :]
#: Outside PREFIX (the view does not read it): device id -> a `disk` resource's
#: reservation of a block device (virtual server, node, fencing epoch).
DISK_RESERVATIONS = "/clustermail-disk-reservations/"
#: Outside PREFIX (requests wake no reconcile loop): ``<node>/<id>`` -> a request addressed
#: to one node agent (:class:`clustermail.cluster.node_requests.NodeRequest`), e.g. a
#: validation; the virtual servers' owners have their own (the mail layer's store requests).
NODE_REQUESTS = "/clustermail-node-requests/"
