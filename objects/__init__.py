"""tornado_dsm.objects: the clustered objects that make up virtual memory.

Process, Region, FCM (with its coherence managers: PageDirectory for IVY's
centralized and fixed schemes, probOwner for the dynamic one), COR and DSM,
and the counters of K42's experiment.  It may import the kernel's facade
(``tornado_dsm.kernel``) and its own modules, never ``tornado_dsm``.
"""

from ._interfaces import COR, DSM, FCM, DynamicFCM, PageDirectory, Process, Region
from ._records import (
    CORStatistics, DirectoryStatistics, FCMStatistics, FrameStatistics, Grant, RegionStatistics,
)
from ._counter import PartitionedCounter, PerNodeCounter, SingletonCounter, counter_class
from ._fcm import MANAGERS, MAX_PREFETCH, PROTOCOLS, check_prefetch
from ._copyset import MAX_NODES
from ._process import fault_latency_histogram, set_process
from ._loss import lost_pages, pages_in_flight
from ._vm import Allocation, VirtualMemory, VMConfig, drop_mappings, node_backend, start_node, stop_node

__all__ = [
    "CORStatistics", "FrameStatistics", "COR", "DSM", "FCM", "DynamicFCM", "PageDirectory", "Process",
    "Region", "DirectoryStatistics", "FCMStatistics", "Grant", "RegionStatistics",
    "PartitionedCounter", "PerNodeCounter", "SingletonCounter", "counter_class", "MANAGERS", "MAX_PREFETCH", "check_prefetch",
    "PROTOCOLS", "MAX_NODES", "Allocation", "VirtualMemory", "VMConfig", "drop_mappings", "node_backend",
    "fault_latency_histogram", "lost_pages", "pages_in_flight", "set_process", "start_node", "stop_node",
]
