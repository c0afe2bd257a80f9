"""tornado_dsm.kernel.net: nodes and messages — transport, PPC, node runtime, start-up.

Owns the node processes and what travels between them: authenticated
connections (HMAC challenge-response, fixed-size handshake frames), framed
messages (struct header, msgpack body, raw payload), the call and serve
channels of a protected procedure call, the per-node PPC counters, the node
runtime with its node service (oid 0), and starting and stopping a cluster
(``start_nodes`` -> ``NodeSet``), on one host or under an MPI launcher
(``start_mpi_nodes`` on rank 0, ``serve_mpi_ranks`` on the others).  It may import the machine layer and its
own modules, never the clustered object system: the layer above gives each
node its object system through the ``attach`` hook of ``start_nodes``.
"""

from ._channel import before_blocking, chain_stack, in_chain
from ._mpi import MPI_TRANSPORTS, MPIJob, launched_by_mpi, mpi_job, serve_mpi_ranks, start_mpi_nodes
from ._ppc import LOST
from ._runtime import NodeRuntime, NodeStartupError, current_runtime
from ._startup import NodeSet, run_node, start_nodes
from ._stats import PPCCounter, PPCStatistics, peek as peek_count
from ._transport import (
    AuthenticationError, check_key, connect, handshake_accept, listen, new_key, parse_address, read_key_file, write_key_file,
)
from ._wire import NodeLost, Payload, PPCTimeout, RemoteError, wire_record

__all__ = [
    "MPI_TRANSPORTS", "MPIJob", "launched_by_mpi", "mpi_job", "serve_mpi_ranks", "start_mpi_nodes",
    "LOST", "before_blocking", "NodeRuntime", "NodeStartupError", "current_runtime", "NodeSet", "run_node",
    "start_nodes", "PPCCounter", "PPCStatistics", "peek_count", "new_key", "parse_address",
    "read_key_file", "write_key_file", "AuthenticationError", "check_key", "connect", "handshake_accept", "listen", "NodeLost", "Payload", "PPCTimeout", "RemoteError", "wire_record",
]
