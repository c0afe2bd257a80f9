"""tornado_dsm.objects: the clustered objects that make up virtual memory.

Process, Region, FCM (with its coherence managers: PageDirectory for IVY's
centralized and fixed schemes, probOwner for the dynamic one), COR and DSM,
and the counters of K42's experiment.  It may import the kernel's facade
(``tornado_dsm.kernel``) and its own modules, never ``tornado_dsm``.
"""

from ._counter import PartitionedCounter, PerNodeCounter, SingletonCounter, counter_class
from ._fcmobject import MANAGERS, PROTOCOLS
from ._fanout import MAX_NODES
from ._vm import (
    Allocation, VirtualMemory, VMConfig, drop_mappings, fault_latency_histogram, set_process,
    start_node, stop_node,
)

__all__ = [
    "PartitionedCounter", "PerNodeCounter", "SingletonCounter", "counter_class", "MANAGERS",
    "PROTOCOLS", "MAX_NODES", "Allocation", "VirtualMemory", "VMConfig", "drop_mappings",
    "fault_latency_histogram", "set_process", "start_node", "stop_node",
]
