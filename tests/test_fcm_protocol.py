"""The IVY/migrate protocol logic of FCMPages + PageDirectory, in one process.

A unit test of the protocol state machine: each "node" here is an FCMPages
on its own real window (real faults, real HAT, on each fault backend), and
the directory reaches them by direct calls.  The cross-process protocol is tested through the
Cluster API (test_cluster*.py).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from tornado_dsm.kernel import PAGE, READ, NodeMemory
from tornado_dsm.kernel.net._wire import pack_parts, unpack_parts
from tornado_dsm.objects._cor import AnonymousCOR, CORClient
from tornado_dsm.objects._directory import Directory, DirectoryClient
from tornado_dsm.objects._frames import FrameAccount
from tornado_dsm.objects._dynamic import DynamicManager
from tornado_dsm.objects._fcm import WRITE, FCMPages, Grant
from tornado_dsm.objects._invariants import check_page

from helpers import fresh_base

NODES, PAGES = 3, 4

# The in-process stand-in for the PPCs of a fan-out: each call on its own thread.
_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="test-fanout")


class NodeFCM:
    """What other nodes reach on one node's FCM rep (the FCM interface's protocol
    methods), as direct calls on its page table and manager."""

    def __init__(self, node, pages, manager) -> None:
        self.node, self.pages, self.manager = node, pages, manager

    def send_copy(self, page, expect_version):
        return self.pages.send_copy(page, expect_version)

    def give_page(self, page, expect_version, new_version, need_data):
        return self.pages.give_page(page, expect_version, new_version, need_data)

    def invalidate(self, page, new_version, new_owner=-1):
        return self.manager.invalidate(page, new_version, new_owner)

    def relinquish(self, page, owner, expect_version, new_version, need_data, new_owner):
        if owner == self.node:
            return self.pages.give_page(page, expect_version, new_version, need_data)
        return self.manager.invalidate(page, new_version, new_owner)

    def serve(self, page, requester, want, have_version, hops):
        return self.manager.serve(page, requester, want, have_version, hops)


class Peers:
    """A typed FCM reference's ``on``/``on_each``, across the harness's nodes."""

    def __init__(self) -> None:
        self.nodes: list[NodeFCM] = []

    def on(self, node):
        return self.nodes[node]

    def on_each(self, nodes, tolerate_lost=False):
        return _Each([self.nodes[n] for n in nodes])


class _Each:
    """Every method called on several NodeFCMs at once, results in order."""

    def __init__(self, targets) -> None:
        self.targets = targets

    def __getattr__(self, method):
        def fan_out(*args):
            futures = [_pool.submit(getattr(t, method), *args) for t in self.targets]
            return [f.result() for f in futures]
        return fan_out


class COR:
    """The COR interface on an in-process AnonymousCOR."""

    def __init__(self, store) -> None:
        self.store = store

    def read_page(self, page):
        return self.store.read_page(page)

    def write_back(self, page, data, dirty=True):
        self.store.write_back(page, data)  # anonymous: kept whether dirty or not


class Harness:
    """NODES windows, one FCMPages each, and a manager: one Directory
    ("centralized") or a DynamicManager per node ("dynamic")."""

    def __init__(self, protocol: str = "ivy", manager: str = "centralized", capacity=None,
                 backend: str = "mprotect", prefetch: int = 0) -> None:
        self.mems = [NodeMemory(base=fresh_base(), size=PAGES * PAGE, node=n, backend=backend)
                     for n in range(NODES)]
        self.protocol, self.manager = protocol, manager
        self.cor = AnonymousCOR(PAGES)
        self.store = CORClient(COR(self.cor), PAGES, anonymous=True)
        self.peers = Peers()
        self.directory = Directory(PAGES, self.peers, self.store, protocol=protocol)
        self.fcms, self.dyns = [], []
        self.frames = [FrameAccount(mem, capacity) for mem in self.mems]
        for n, mem in enumerate(self.mems):
            manager_n = self._manager(n)
            fcm = FCMPages(mem, 0, PAGES, manager_n, self.frames[n], migrate=protocol == "migrate",
                           prefetch=prefetch)
            mem.set_handler(self._handler(fcm, mem))
            self.fcms.append(fcm)
            self.peers.nodes.append(NodeFCM(n, fcm, manager_n))
        self.arrays = [m.array(0, (PAGES * PAGE // 8,), np.int64) for m in self.mems]

    def _manager(self, node):
        if self.manager != "dynamic":
            return DirectoryClient(self.directory, node)
        self.dyns.append(DynamicManager(node, NODES, 0, self.peers, self.store))
        return self.dyns[-1]
    @staticmethod
    def _handler(fcm, mem):
        def handle(address, access):
            fcm.get_page((address - mem.base) // PAGE, 1 if access == READ else 2)
        return handle

    def holders(self, page):
        """(owner, copyset) from the directory or the dynamic owner."""
        if not self.dyns:
            return int(self.directory.owner[page]), int(self.directory.copyset[page])
        owners = [n for n in range(NODES) if self.dyns[n].owner[page]]
        assert len(owners) == 1, f"page {page} has owners {owners}"
        return owners[0], int(self.dyns[owners[0]].copyset[page])

    def check(self) -> None:
        for p in range(PAGES):
            owner, copyset = self.holders(p)
            access = np.array([f.access[p] for f in self.fcms])
            if self.dyns and access[owner] == 0:
                owner = -1  # owned without a copy: the backing store has it
            check_page(p, access, owner, copyset, self.protocol)

    def __enter__(self) -> "Harness":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for m in self.mems:
            m.close()
        self.cor.close()


@pytest.fixture(params=[("ivy", "centralized"), ("migrate", "centralized"), ("ivy", "dynamic"),
                        ("migrate", "dynamic")])
def harness(request, backend):
    """A Harness for each (protocol, manager) here, on each fault backend."""
    with Harness(*request.param, backend=backend) as h:
        yield h


class TestMessages:
    def test_read_from_third_owner(self, backend):
        """A read fault whose owner is another node fetches a copy and joins the copyset."""
        with Harness(backend=backend) as h:
            h.arrays[1][0] = 5
            assert h.arrays[2][0] == 5
            assert h.holders(0) == (1, 1 << 2)
            assert h.fcms[1].access[0] == READ  # the owner was downgraded
            h.check()

    def test_write_invalidates_readers(self, backend):
        """A write invalidates every reader before it is granted."""
        with Harness(backend=backend) as h:
            h.arrays[0][0] = 1
            assert h.arrays[1][0] == 1 and h.arrays[2][0] == 1
            h.arrays[2][1] = 9
            assert [f.access[0] for f in h.fcms] == [0, 0, WRITE]
            assert h.directory.invalidations == 1  # node 1; node 0 was the owner
            assert h.arrays[0][1] == 9
            h.check()


def begin_request(fcm, page) -> None:
    """Mark ``page`` requested at ``fcm``, as a faulting thread does before it asks the manager."""
    with fcm.cond:
        fcm.requesting[page] = 1


def install(fcm, page, grant) -> bool:
    """A grant arriving now at ``fcm`` (as the requester's thread ends its request and installs it)."""
    with fcm.cond:
        fcm.requesting[page] = 0
        try:
            return fcm._locked_try_install(page, grant)
        finally:
            fcm._locked_end_request(page)


def over_the_wire(grant: Grant) -> Grant:
    """``grant`` as a requester decodes it from a reply frame: its page out of band."""
    body, parts = pack_parts(grant)
    assert len(parts) == 1, "a page grant's data travels out of band"
    value, _data = unpack_parts(body, bytearray(b"".join(parts)))
    return value


class TestCrossingMessages:
    def test_copy_overtaken_by_invalidation_is_refused(self, backend):
        """A read copy older than an invalidation that reached the node first is not installed."""
        with Harness(backend=backend) as h:
            h.arrays[0][0] = 3                                  # node 0 owns page 0
            begin_request(h.fcms[2], 0)
            grant = h.directory.request(0, 2, READ, -1)         # node 2's copy, still "in flight"
            h.arrays[1][0] = 4                                  # write on node 1 invalidates node 2
            assert not install(h.fcms[2], 0, grant)
            assert h.fcms[2].stale_grants == 1 and h.fcms[2].access[0] == 0
            assert h.arrays[2][0] == 4                          # the retry sees the new value
            h.check()

    def test_wire_copy_overtaken_by_invalidation_is_discarded(self, backend):
        """A copy whose page crossed the wire out of band (a view of the payload) is discarded once an invalidation overtook it."""
        with Harness(backend=backend) as h:
            h.arrays[0][0] = 3                                  # node 0 owns page 0
            begin_request(h.fcms[2], 0)
            grant = over_the_wire(h.directory.request(0, 2, READ, -1))
            assert isinstance(grant.data, memoryview)
            h.arrays[1][0] = 4                                  # write on node 1 invalidates node 2
            assert not install(h.fcms[2], 0, grant)
            assert h.fcms[2].stale_grants == 1 and h.arrays[2][0] == 4
            h.check()

    def test_wire_copy_installs_intact(self, backend):
        """A copy whose page crossed the wire out of band installs every byte of it."""
        with Harness(backend=backend) as h:
            words = PAGE // 8
            h.arrays[0][:words] = np.arange(words) * 7 + 1      # node 0 owns page 0
            begin_request(h.fcms[2], 0)
            assert install(h.fcms[2], 0, over_the_wire(h.directory.request(0, 2, READ, -1)))
            assert np.array_equal(h.arrays[2][:words], np.arange(words) * 7 + 1)
            h.check()

    def test_invalidations_are_remembered_only_while_requested(self, backend):
        """Without prefetch, an invalidation is recorded only for a page with a request out, and forgotten when it ends."""
        with Harness(backend=backend) as h:
            for p in (0, 1):
                h.arrays[0][p * (PAGE // 8)] = 1                # node 0 owns pages 0 and 1
                assert h.arrays[2][p * (PAGE // 8)] == 1        # node 2 reads both
            begin_request(h.fcms[2], 1)
            h.arrays[1][0] = h.arrays[1][PAGE // 8] = 2         # node 1 writes both: node 2 is invalidated
            assert dict(h.fcms[2].inval) == {1: 2}              # only the requested page, at version 2
            install(h.fcms[2], 1, Grant(1, READ, bytes(PAGE)))  # the stale copy its request brought
            assert h.fcms[2].stale_grants == 1 and dict(h.fcms[2].inval) == {}

    def test_owner_answers_only_after_installing(self, backend):
        """A copy requested from a node whose ownership grant is not installed yet waits for it."""
        with Harness(backend=backend) as h:
            h.arrays[0][0] = 7
            grant = h.directory.request(0, 1, WRITE, -1)        # node 1 now owns page 0, not installed
            seen = []
            reader = threading.Thread(target=lambda: seen.append(int(h.arrays[2][0])))
            reader.start()
            reader.join(timeout=0.3)
            assert reader.is_alive() and not seen               # blocked on node 1's transition
            assert install(h.fcms[1], 0, grant)
            reader.join(timeout=30)
            assert seen == [7]
            h.check()


class TestPrefetch:
    def test_a_read_miss_brings_the_owners_next_pages(self, backend):
        """A read miss installs the next pages the same owner holds, in one reply; their first reads are hits."""
        with Harness(manager="dynamic", backend=backend, prefetch=2) as h:
            words = PAGE // 8
            for p in range(PAGES):
                h.arrays[1][p * words] = 10 + p                 # node 1 owns every page
            assert h.arrays[2][0] == 10                         # one miss: pages 1 and 2 come along
            assert h.fcms[2].prefetch_installed == 2 and list(h.fcms[2].access) == [READ, READ, READ, 0]
            assert [int(h.arrays[2][p * words]) for p in (1, 2)] == [11, 12]
            assert h.fcms[2].prefetch_hits == 2
            h.check()

    def test_a_prefetched_copy_overtaken_by_an_invalidation_is_discarded(self, backend):
        """A prefetched page whose invalidation arrived first is not installed; the next read fetches the new value."""
        with Harness(manager="dynamic", backend=backend, prefetch=1) as h:
            words = PAGE // 8
            h.arrays[1][0], h.arrays[1][words] = 1, 2            # node 1 owns pages 0 and 1
            reply = h.dyns[1].serve(0, 2, READ, -1, 0)          # node 2's reply, still "in flight"
            (grant, owner, extras), data = reply.value, reply.data
            h.arrays[0][words] = 3                              # a write on node 0 invalidates node 2's page 1
            h.fcms[2].install_prefetched(extras, data)
            assert h.fcms[2].prefetch_discarded == 1 and h.fcms[2].access[1] == 0
            assert install(h.fcms[2], 0, grant) and h.arrays[2][words] == 3
            h.check()


class TestEviction:
    @pytest.mark.parametrize("manager", ["centralized", "dynamic"])
    def test_owned_pages_survive_eviction(self, manager, backend):
        """Over capacity, owned pages go to the backing store and come back intact."""
        with Harness("ivy", manager, capacity=2, backend=backend) as h:
            words = PAGE // 8
            for p in range(PAGES):
                h.arrays[0][p * words] = 100 + p
            assert h.frames[0].statistics().evicted_owned >= PAGES - 2
            assert h.mems[0].resident_pages() <= 2
            assert [int(h.arrays[1][p * words]) for p in range(PAGES)] == [100 + p for p in range(PAGES)]
            h.check()

    def test_read_copies_go_first(self, backend):
        """With read copies and owned pages resident, a read copy is evicted first."""
        with Harness("ivy", "centralized", capacity=2, backend=backend) as h:
            words = PAGE // 8
            h.arrays[0][0] = 1                   # node 0 owns page 0
            h.arrays[1][words] = 2               # node 1 owns page 1
            assert h.arrays[1][0] == 1           # node 1: read copy of page 0 (2 frames now)
            h.arrays[1][2 * words] = 3           # needs a third frame on node 1
            stats = h.frames[1].statistics()
            assert (stats.evicted_copies, stats.evicted_owned) == (1, 0)
            assert h.fcms[1].owned[1] == 1 and h.fcms[1].access[0] == 0
            h.check()


class TestConcurrentCounters:
    def test_atomic_increments_exact(self, harness):
        """Threads of every node doing atomic increments on one word: the total is exact."""
        from tornado_dsm.kernel import atomic

        start = threading.Barrier(NODES * 2)

        def work(n):
            start.wait(timeout=30)
            for _ in range(300):
                atomic.fetch_add(harness.mems[n].base + 8, 1)

        threads = [threading.Thread(target=work, args=(n % NODES,)) for n in range(NODES * 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        values = [int(a[1]) for a in harness.arrays]
        assert values[0] == NODES * 2 * 300 and len(set(values)) == 1
        harness.check()


class ProtocolMachine(RuleBasedStateMachine):
    """Random reads and writes from random nodes against a sequential model."""

    protocol, manager, capacity, prefetch = "ivy", "centralized", None, 0

    def __init__(self, backend: str = "mprotect"):
        super().__init__()
        self.h = Harness(self.protocol, self.manager, self.capacity, backend, self.prefetch)
        self.model = np.zeros(PAGES * PAGE // 8, dtype=np.int64)

    @rule(node=st.integers(0, NODES - 1), word=st.integers(0, PAGES * PAGE // 8 - 1))
    def read(self, node, word):
        assert self.h.arrays[node][word] == self.model[word]

    @rule(node=st.integers(0, NODES - 1), word=st.integers(0, PAGES * PAGE // 8 - 1),
          value=st.integers(-(2**63), 2**63 - 1))
    def write(self, node, word, value):
        self.h.arrays[node][word] = value
        self.model[word] = value

    @rule(node=st.integers(0, NODES - 1))
    def drop_mappings(self, node):
        self.h.fcms[node].drop_mappings()

    @invariant()
    def coherent(self):
        self.h.check()

    def teardown(self):
        self.h.close()


class MigrateMachine(ProtocolMachine):
    protocol = "migrate"


class DynamicMachine(ProtocolMachine):
    manager = "dynamic"


class MigrateDynamicMachine(ProtocolMachine):
    protocol, manager = "migrate", "dynamic"


class PrefetchDynamicMachine(ProtocolMachine):
    """Read replies carry up to 2 more pages of the owner's (region prefetch)."""

    manager, prefetch = "dynamic", 2


class EvictingMachine(ProtocolMachine):
    """Two frames per node for four pages: every few steps a node evicts."""

    capacity = 2


class EvictingDynamicMachine(ProtocolMachine):
    manager, capacity = "dynamic", 2


_settings = settings(max_examples=30, stateful_step_count=40, deadline=None)
MACHINES = [ProtocolMachine, MigrateMachine, DynamicMachine, MigrateDynamicMachine, PrefetchDynamicMachine,
            EvictingMachine, EvictingDynamicMachine]


@pytest.mark.parametrize("machine", MACHINES, ids=[m.__name__ for m in MACHINES])
def test_protocol_machine(machine, backend):
    """Random reads, writes, mapping drops and evictions read what a sequential memory would, coherent after each step."""
    run_state_machine_as_test(lambda: machine(backend), settings=_settings)
