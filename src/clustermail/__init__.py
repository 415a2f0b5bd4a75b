"""clustermail: a highly available mail system of virtual mail servers that fail over."""

__version__ = "0.1.0"
