"""tornado_dsm.objects: the clustered objects that make up virtual memory."""

from ._counter import PartitionedCounter, PerNodeCounter, SingletonCounter, counter_class

__all__ = ["PartitionedCounter", "PerNodeCounter", "SingletonCounter", "counter_class"]
