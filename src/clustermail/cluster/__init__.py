"""Layer 2: the cluster service.

The pure core exported here (model, configuration, placement) does no I/O and
reads no clock; the leader and node agents are thin shells around it.
"""

from clustermail.cluster.config import (
    ConfigError,
    Problem,
    config_from_dict,
    default_cluster_config,
    load_config,
    parse_config,
)
from clustermail.cluster.model import (
    ClusterConfig,
    FailbackMode,
    FailbackPolicy,
    Node,
    PlacementMode,
    Resource,
    ResourcePolicy,
    VirtualServer,
    offline_order,
    online_order,
)
from clustermail.cluster.placement import (
    Candidate,
    Decision,
    Placement,
    ReasonCode,
    UnknownVirtualServer,
    explain,
    place,
)
from clustermail.cluster.resource_schema import (
    PropertyKind,
    PropertySpec,
    register_resource_type,
)
from clustermail.cluster.snapshot import (
    FailoverRecord,
    NodeStatus,
    Snapshot,
    VsState,
    VsStatus,
)
from clustermail.cluster.timing import (
    DEFAULT_TIMING,
    FAST_TIMING,
    LeaseTiming,
    TimingError,
)
from clustermail.cluster.toml_render import render_toml

__all__ = [
    "DEFAULT_TIMING",
    "FAST_TIMING",
    "Candidate",
    "ClusterConfig",
    "ConfigError",
    "Decision",
    "FailbackMode",
    "FailbackPolicy",
    "FailoverRecord",
    "LeaseTiming",
    "Node",
    "NodeStatus",
    "Placement",
    "PlacementMode",
    "Problem",
    "PropertyKind",
    "PropertySpec",
    "ReasonCode",
    "Resource",
    "ResourcePolicy",
    "Snapshot",
    "TimingError",
    "UnknownVirtualServer",
    "VirtualServer",
    "VsState",
    "VsStatus",
    "config_from_dict",
    "default_cluster_config",
    "explain",
    "load_config",
    "offline_order",
    "online_order",
    "parse_config",
    "place",
    "register_resource_type",
    "render_toml",
]
