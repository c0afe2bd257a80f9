"""Virtual memory of the cluster: node start-up, the fault path, and the
operations the Cluster API runs on node 0 (allocate, free, flush, stats).

The fault path, in the faulting thread of the faulting node (DESIGN.md):

    trap -> handle_fault(addr, access)
         -> Process.find_region(addr)         replicated: local; singleton: PPC to home
         -> Region.translate(addr, access)    per_node: local; singleton: PPC to home
         -> FCM.get_page(page, access)        always this node's rep (the page is mapped here)
              -> PageDirectory / probOwner, COR on first touch, DSM frames
         -> HAT.protect
"""

from __future__ import annotations

from time import perf_counter_ns

import attrs

from tornado_dsm.kernel import (
    PAGE, FaultRefused, NodeLost, NodeMemory, ObjectDestroyed, PPCTimeout, current_cos, home_of,
)

from . import _nodestate
from ._fcmobject import FCMRoot, PageDirectoryRoot
from ._frames import FrameAccount
from ._vmobjects import CORRoot, DSMRoot, ProcessRoot, RegionRoot

_process_oid: int | None = None
_cos_call = None


@attrs.frozen
class VMConfig:
    """Settings every node needs to start its part of the VM."""

    base: int
    size: int
    protocol: str = "ivy"
    manager: str = "dynamic"
    memory_per_node: int | None = None  # pages
    debug: bool = False


def start_node(config: VMConfig) -> None:
    """On every node: map the window, account frames, take the trap's hook."""
    global _cos_call
    _cos_call = current_cos().call  # bound once: the fault path makes three calls through it
    memory = NodeMemory(base=config.base, size=config.size, node=current_cos().node, handler=handle_fault)
    frames = FrameAccount(memory, config.memory_per_node)
    _nodestate.install(_nodestate.NodeState(memory, frames, config.debug))


def stop_node() -> None:
    """Unmap this node's window (at cluster shutdown)."""
    state = _nodestate._state
    if state is not None:
        state.memory.close()
        _nodestate.clear()


def set_process(oid: int) -> None:
    """On every node: the Process object whose regions this node's faults use."""
    global _process_oid
    _process_oid = oid


# Fault latency on this node: _latency[b] counts faults that took [2**(b-1), 2**b) ns.
_latency = [0] * 64


def fault_latency_histogram() -> list:
    """This node's fault-latency histogram (log2 ns buckets), a copy."""
    return list(_latency)


def handle_fault(address: int, access: int) -> None:
    """The trap's fault handler on every node (see module docstring).  One
    function on purpose: this is the fast path, a frame costs here."""
    t0 = perf_counter_ns()
    call = _cos_call
    try:
        region = call(_process_oid, "find_region", address)
        if region is None:
            raise FaultRefused("no region at this address (never allocated, or freed)")
        where = call(region, "translate", address, access)
        if where.__class__ is str:
            raise FaultRefused(where)
        call(where[0], "get_page", where[1], access)
    except ObjectDestroyed as exc:
        raise FaultRefused(f"use after free: {exc}") from None
    except (NodeLost, PPCTimeout) as exc:
        raise FaultRefused(f"{type(exc).__name__}: {exc}") from None
    finally:
        _latency[(perf_counter_ns() - t0).bit_length()] += 1


@attrs.frozen
class Allocation:
    """The objects behind one array."""

    start: int
    npages: int
    region: int
    fcm: int
    directory: int
    cor: int


class VirtualMemory:
    """Node 0's handle on the VM objects (created once per cluster)."""

    def __init__(self, config: VMConfig, policies: dict) -> None:
        self.config, self.policies = config, policies
        self.cos = current_cos()
        npages = config.size // PAGE
        self.process = self.cos.create(ProcessRoot, config.base, npages, policy=policies["process"],
                                       name="process")
        self.dsm = self.cos.create(DSMRoot, policy="per_node", name="dsm")

    def allocate(self, nbytes: int, name: str, prot: str = "rw", path: str = "", mode: str = "r+") -> Allocation:
        """Back ``nbytes`` of the window with new Region, FCM, directory and COR objects."""
        npages = -(-nbytes // PAGE)
        first = self.process.allocate(npages)
        try:
            return self._build(first, npages, nbytes, name, prot, path, mode)
        except BaseException:
            self.process.release(first)
            raise

    def _build(self, first, npages, nbytes, name, prot, path, mode) -> Allocation:
        cfg, cos = self.config, self.cos
        kind = "file" if path else "anonymous"
        cor = cos.create(CORRoot, kind, npages, path, nbytes, mode, name=f"cor:{name}")
        anonymous = kind == "anonymous"
        fcm = cos.create(FCMRoot, first, npages, cfg.protocol, cfg.manager, int(cor), anonymous, cos.nnodes,
                         cfg.debug, policy="per_node", name=f"fcm:{name}")
        directory = 0
        if cfg.manager != "dynamic":
            policy = "singleton" if cfg.manager == "centralized" else "partitioned"
            directory = int(cos.create(PageDirectoryRoot, int(fcm), npages, cfg.protocol, int(cor), anonymous,
                                       cfg.debug, policy=policy, name=f"dir:{name}"))
            cos.call_root(int(fcm), cos.node, "set_directory", [directory])
        start = cfg.base + first * PAGE
        region = cos.create(RegionRoot, start, npages, prot, int(fcm), policy=self.policies["region"],
                            name=f"region:{name}")
        self.process.attach(start, start + npages * PAGE, int(region), name)
        return Allocation(start, npages, int(region), int(fcm), directory, int(cor))

    def rep_nodes(self, oid: int) -> tuple:
        """Nodes holding a rep of ``oid`` (asked of its root: calling the reps of
        every node would make the others miss and build reps just to answer)."""
        return tuple(self.cos.call_root(oid, home_of(oid), "rep_nodes", []))

    def flush(self, a: Allocation) -> int:
        """Write every dirty page of ``a``, on every node, back to its COR; fsync."""
        dirty = self.cos.call_reps(a.fcm, self.rep_nodes(a.fcm), "dirty_pages", ())
        pages = [pair for node in sorted(dirty) for pair in dirty[node]]
        return self.cos.call(a.cor, "write_pages", pages)

    def free(self, a: Allocation) -> None:
        """Detach and destroy the objects of ``a`` (flushing a file first)."""
        self.process.detach(a.region)
        for oid in (a.region, a.fcm, a.directory, a.cor):
            if oid:
                self.cos.destroy(oid)
        self.process.release((a.start - self.config.base) // PAGE)


def drop_mappings(fcm_oids: list) -> int:
    """On one node holding reps of these FCMs: unmap their pages in the HAT but
    keep the cached copies (the next faults are in-core).  Returns the pages
    cached here."""
    cos, cached = current_cos(), 0
    for fcm in fcm_oids:
        cos.call(fcm, "drop_mappings")
        cached += cos.call(fcm, "statistics")["resident"]
    return cached
