"""Virtual memory of the cluster: node start-up, and the operations the
Cluster API runs on node 0 (allocate, free, flush, drop mappings).

The fault path starts in _process.py (``handle_fault``).  An allocation is
four clustered objects: a COR for its backing store, an FCM (the variant of
the cluster's manager), for the centralized and fixed managers a
PageDirectory, and a Region attached to the Process.
"""

from __future__ import annotations

import attrs

from tornado_dsm.kernel import PAGE, NodeLost, NodeMemory, PPCTimeout, atomic, current_cos, home_of

from . import _nodestate
from ._cor import CORRoot
from ._directory import DirectoryFCMRoot, PageDirectoryRoot
from ._dynamic import DynamicFCMRoot
from ._fcm import MANAGERS, FCMSpec
from ._frames import DSMRoot, FrameAccount
from ._interfaces import COR, DSM, FCM, Process
from ._process import ProcessRoot, RegionRoot, handle_fault


@attrs.frozen
class VMConfig:
    """Settings every node needs to start its part of the VM."""

    base: int
    size: int
    protocol: str = "ivy"
    manager: str = "dynamic"
    memory_per_node: int | None = None  # pages
    debug: bool = False
    backend: str | None = None  # fault backend; None: each node's $TORNADO_DSM_BACKEND or the default


def start_node(config: VMConfig) -> None:
    """On every node: map the window, account frames, take the trap's hook."""
    cos = current_cos()
    memory = NodeMemory(base=config.base, size=config.size, node=cos.node, handler=handle_fault,
                        backend=config.backend)
    frames = FrameAccount(memory, config.memory_per_node)
    _nodestate.install(_nodestate.NodeState(memory, frames))
    atomic.configure_waits(config.protocol == "migrate")  # a read there takes the page


def node_backend() -> str:
    """The fault backend this node's window took ("uffd" or "mprotect")."""
    return _nodestate.current().memory.backend


def stop_node() -> None:
    """Unmap this node's window (at cluster shutdown)."""
    state = _nodestate._state
    if state is not None:
        state.memory.close()
        _nodestate.clear()


@attrs.frozen
class Allocation:
    """The objects behind one array."""

    start: int
    npages: int
    region: int
    fcm: int
    directory: int
    cor: int
    name: str = ""


@attrs.frozen
class WriteBack:
    """What a flush did: pages written (and fsynced), and the nodes whose
    dirty pages could not be gathered, as (node, reason)."""

    written: int
    lost: tuple = ()


def fcm_root(manager: str) -> type:
    """The FCM root class for an IVY manager (ValueError naming the accepted ones)."""
    if manager not in MANAGERS:
        raise ValueError(f"manager must be one of {MANAGERS}, not {manager!r}")
    return DynamicFCMRoot if manager == "dynamic" else DirectoryFCMRoot


class VirtualMemory:
    """Node 0's handle on the VM objects (created once per cluster)."""

    def __init__(self, config: VMConfig, policies: dict) -> None:
        self.config, self.policies = config, policies
        cos = self.cos = current_cos()
        npages = config.size // PAGE
        self.process = cos.ref(int(cos.create(ProcessRoot, config.base, npages, policy=policies["process"],
                                              name="process")), Process)
        self.dsm = cos.ref(int(cos.create(DSMRoot, policy="per_node", name="dsm")), DSM)

    def allocate(self, nbytes: int, name: str, prot: str = "rw", path: str = "", mode: str = "r+",
                 prefetch: int = 0) -> Allocation:
        """Back ``nbytes`` of the window with new Region, FCM, directory and COR objects;
        ``prefetch``: pages a read fault's reply brings beyond the missing one."""
        npages = -(-nbytes // PAGE)
        first = self.process.allocate(npages)
        try:
            return self._build(first, npages, nbytes, name, prot, path, mode, prefetch)
        except BaseException:
            self.process.release(first)
            raise

    def _build(self, first, npages, nbytes, name, prot, path, mode, prefetch=0) -> Allocation:
        cfg, cos = self.config, self.cos
        kind = "file" if path else "anonymous"
        cor = int(cos.create(CORRoot, kind, npages, path, nbytes, mode, name=f"cor:{name}"))
        spec = FCMSpec(first, npages, cfg.protocol, cor, kind == "anonymous", cfg.debug, prefetch=prefetch)
        fcm = int(cos.create(fcm_root(cfg.manager), spec, policy="per_node", name=f"fcm:{name}"))
        directory = 0
        if cfg.manager != "dynamic":
            policy = "singleton" if cfg.manager == "centralized" else "partitioned"
            directory = int(cos.create(PageDirectoryRoot, fcm, spec,
                                       policy=policy, name=f"dir:{name}"))
            cos.call_root(fcm, cos.node, "set_directory", [directory])
        start = cfg.base + first * PAGE
        region = int(cos.create(RegionRoot, start, npages, prot, fcm, policy=self.policies["region"],
                                name=f"region:{name}"))
        self.process.attach(start, start + npages * PAGE, region, name)
        return Allocation(start, npages, region, fcm, directory, cor, name)

    def rep_nodes(self, oid: int) -> tuple:
        """Nodes holding a rep of ``oid`` (asked of its root: calling the reps of
        every node would make the others miss and build reps just to answer)."""
        return tuple(self.cos.call_root(oid, home_of(oid), "rep_nodes", []))

    def flush(self, a: Allocation) -> WriteBack:
        """Write every dirty page of ``a``, on every node, back to its COR; fsync.

        A node that cannot be reached (lost, or timed out) is skipped and named
        in the result: the pages of every other node are still written and made
        durable (a node's dirty pages are marked clean when it hands them over,
        so they are gathered one node at a time — one failure must not drop
        what the others handed over).  Other errors propagate."""
        fcm = self.cos.ref(a.fcm, FCM)
        pages, lost = [], []
        for node in self.rep_nodes(a.fcm):
            try:
                pages.extend(fcm.on(node).dirty_pages())
            except (NodeLost, PPCTimeout) as exc:
                lost.append((node, f"{type(exc).__name__}: {exc}"))
        written = self.cos.ref(a.cor, COR).write_pages(pages)
        return WriteBack(written, tuple(lost))

    def free(self, a: Allocation) -> None:
        """Detach and destroy the objects of ``a`` (the caller flushes a file first),
        then quarantine its addresses: every node's pages of it are unmapped (the
        FCM reps' cleanup), so a stale view faults, naming ``a``, instead of
        aliasing the next allocation (_layout.py says until when)."""
        self.process.detach(a.region)
        for oid in (a.region, a.fcm, a.directory, a.cor):
            if oid:
                self.cos.destroy(oid)
        # only once every object is gone (a failed destroy leaves the run taken)
        self.process.retire((a.start - self.config.base) // PAGE)


def drop_mappings(fcm_oids: list) -> int:
    """On one node holding reps of these FCMs: unmap their pages in the HAT but
    keep the cached copies (the next faults are in-core).  Returns the pages
    cached here."""
    cos = current_cos()
    return sum(cos.ref(fcm, FCM).drop_mappings() for fcm in fcm_oids)
