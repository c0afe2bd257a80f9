"""Call chains through a hot swap: a chain already inside an object passes the
mediator wherever it comes back into the object (kernel/net chain_stack, _swap)."""

from __future__ import annotations

import threading
import time

import pytest

import swapprogs as sp
from helpers import new_cluster
from tornado_dsm.kernel import current_cos
from tornado_dsm.kernel.net import chain_stack, in_chain

pytestmark = [pytest.mark.timeout(120)]

SWAP_TIMEOUT = 8.0  # a chain that deadlocked against the drain would fail the swap after this


def _swap_under_chain(c, oid: int, relay: int) -> tuple[dict, list, float]:
    """Hold a chain inside ``oid`` on node 0, start a swap to singleton, let the chain go
    once every node has a mediator: (the swap's record, the chain's result, seconds)."""
    held, out = sp.start_chain(oid, relay)
    records: list = []
    swapper = threading.Thread(target=lambda: records.append(
        c.set_policy(oid, "singleton", timeout=SWAP_TIMEOUT)))
    t0 = time.monotonic()
    swapper.start()
    try:
        sp.await_mediators(c, oid, range(c.nnodes))
    finally:
        sp.release_hold(held)
        swapper.join(120)
    return (records or [None])[0], out, time.monotonic() - t0


class TestChainStack:
    def test_in_chain_pushes_and_pops(self):
        """in_chain runs the call with the oid on top of this thread's stack, and pops it after."""
        seen = in_chain(7, lambda: list(chain_stack()), ())
        assert seen[-1] == 7 and 7 not in chain_stack()

    def test_in_chain_pops_on_error(self):
        """A call that raises leaves the stack as it found it."""
        before = list(chain_stack())
        with pytest.raises(KeyError):
            in_chain(9, lambda: {}[1], ())
        assert chain_stack() == before


@pytest.mark.multinode
class TestSwapUnderCallChain:
    def test_chain_back_through_another_node(self):
        """X on node 0 -> Relay on node 1 -> X on node 1 during a swap of X: the call-back passes, the swap commits."""
        with new_cluster(3) as c:
            cos = current_cos()
            oid = cos.create(sp.Tally, policy="per_node").oid
            relay = cos.create(sp.Relay, policy="singleton", home=1).oid
            c.run(sp.bump, oid, on=[1], threads=1)
            record, out, seconds = _swap_under_chain(c, oid, relay)
            assert out == [1], "the call-back ran on node 1's old rep"
            assert record is not None and record["to"] == "singleton"
            assert seconds < SWAP_TIMEOUT
            assert sp.total(c, oid) == 1

    def test_reentrant_chain_on_one_node(self):
        """X -> Relay -> X all on node 0 during a swap of X: the re-entrant call passes, no wait for the timeout."""
        with new_cluster(2) as c:
            cos = current_cos()
            oid = cos.create(sp.Tally, policy="per_node").oid
            relay = cos.create(sp.Relay, policy="per_node").oid
            record, out, seconds = _swap_under_chain(c, oid, relay)
            assert out == [0]
            assert record is not None and record["waited"] == 0
            assert seconds < SWAP_TIMEOUT

    def test_a_call_outside_the_chain_still_waits(self):
        """While the chain is held, a new call from node 1 waits in the mediator (it is not in the chain)."""
        with new_cluster(2) as c:
            cos = current_cos()
            oid = cos.create(sp.Tally, policy="per_node").oid
            relay = cos.create(sp.Relay, policy="per_node").oid
            held, out = sp.start_chain(oid, relay)
            swapper = threading.Thread(target=lambda: c.set_policy(oid, "singleton", timeout=SWAP_TIMEOUT))
            swapper.start()
            caller = None
            try:
                sp.await_mediators(c, oid, [0, 1])
                caller = threading.Thread(target=lambda: c.run(sp.bump, oid, on=[1], threads=1))
                caller.start()
                deadline = time.monotonic() + 30
                while not c.run(sp.waiting, oid, on=[1], threads=1)[0]:
                    assert time.monotonic() < deadline, "the outside call did not wait"
                    time.sleep(0.005)
            finally:
                sp.release_hold(held)
                swapper.join(120)
                if caller is not None:
                    caller.join(120)
            assert out == [0] and c.swap_history(oid)[-1]["waited"] >= 1
