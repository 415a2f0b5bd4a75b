"""Layer 2: the cluster service.

The pure core (model, configuration, placement) does no I/O and reads no
clock; the leader and node agents are thin shells around it. Import from the
submodules: this package stays empty so that resource hosts, which start on
every failover, import only what they use.
"""
