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
    StoreCredentialsError,
    StoreUnavailable,
    TxnOp,
    TxnResult,
)
from clustermail.coord.opener import open_store
from clustermail.coord.url import parse_store_url

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
    "StoreCredentialsError",
    "StoreUnavailable",
    "TxnOp",
    "TxnResult",
    "open_store",
    "parse_store_url",
]
