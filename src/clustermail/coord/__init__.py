"""Layer 1: the coordination store (the cluster's quorum). Knows nothing of mail."""

from clustermail.coord.api import (
    Compacted,
    Compare,
    CoordError,
    Delete,
    Event,
    EventType,
    Get,
    InvalidStoreURL,
    KeyValue,
    Lease,
    LeaseNotFound,
    Put,
    RangeResult,
    Store,
    StoreUnavailable,
    TxnOp,
    TxnResult,
)
from clustermail.coord.url import open_store, parse_store_url

__all__ = [
    "Compacted",
    "Compare",
    "CoordError",
    "Delete",
    "Event",
    "EventType",
    "Get",
    "InvalidStoreURL",
    "KeyValue",
    "Lease",
    "LeaseNotFound",
    "Put",
    "RangeResult",
    "Store",
    "StoreUnavailable",
    "TxnOp",
    "TxnResult",
    "open_store",
    "parse_store_url",
]
