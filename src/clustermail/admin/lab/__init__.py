"""`clustermail lab`: a cluster of several machines on one Linux box (root only).

A machine is a network namespace with an ``eth0`` on a shared bridge plus a
long-lived "init" process that holds the machine's own mount and UTS namespaces
(so mounts made on a machine stay on it, and each has its own host name).
Everything run on a machine enters those namespaces with ``nsenter``. The lab
keeps ``DIR/lab.json`` listing what it made before making it, so `lab down`
removes everything even after a crashed `lab up`.
"""
