"""Hypothesis strategies shared by the tests.  Each section names its users."""

from __future__ import annotations

from hypothesis import strategies as st

# ---- kernel (test_hat_machine, test_atomic) -------------------------------------

WINDOW_PAGES = 32
WORDS_PER_PAGE = 512  # int64 words

pages = st.integers(min_value=0, max_value=WINDOW_PAGES - 1)
words = st.integers(min_value=0, max_value=WORDS_PER_PAGE - 1)
values = st.integers(min_value=-(2**63), max_value=2**63 - 1)
protections = st.sampled_from([0, 1, 2])  # PROT_NONE, PROT_READ, PROT_WRITE


@st.composite
def page_runs(draw, npages: int = WINDOW_PAGES):
    """(first, count) of a non-empty run inside a window of npages."""
    first = draw(st.integers(min_value=0, max_value=npages - 1))
    count = draw(st.integers(min_value=1, max_value=min(8, npages - first)))
    return first, count

# ---- clustered objects (test_cobj_policy, test_cobj_machine) ---------------------

def cobj_policies(nnodes: int):
    """Every policy text valid on an nnodes-node cluster (group sizes 1..nnodes)."""
    return st.sampled_from(["singleton", "per_node", "partitioned"]) | st.integers(
        min_value=1, max_value=nnodes).map(lambda k: f"group:{k}")


partition_keys = st.integers(min_value=-1000, max_value=1000) | st.text(max_size=8) | st.binary(max_size=8)

# ---- synchronization (test_sync) --------------------------------------------------

LOCK_KINDS = ("tas", "ttas", "backoff", "ticket", "anderson", "mcs", "server")
BARRIER_KINDS = ("counter", "tree", "mcs", "tournament", "dissemination", "server")
SYNC_PADDINGS = ("page", "word")

lock_kinds = st.sampled_from(LOCK_KINDS)
barrier_kinds = st.sampled_from(BARRIER_KINDS)
sync_paddings = st.sampled_from(SYNC_PADDINGS)


@st.composite
def sync_shapes(draw, max_nodes: int = 3, max_threads: int = 2):
    """Threads per node of a run on nodes 0..n-1: a list of n counts, each in
    1..max_threads (n in 1..max_nodes), so the parties need not be a power of two."""
    n = draw(st.integers(min_value=1, max_value=max_nodes))
    return draw(st.lists(st.integers(min_value=1, max_value=max_threads), min_size=n, max_size=n))

# ---- hot swap and migration (test_migrate) ---------------------------------------

@st.composite
def home_moves(draw, nnodes: int):
    """A short sequence of (op, argument, calling node): ("migrate", new home) or
    ("swap", policy) on a Tally (singleton | per_node), refused ones included
    (a migration to the object's own home or of a replicated object)."""
    move = st.tuples(st.just("migrate"), st.integers(min_value=0, max_value=nnodes - 1))
    swap = st.tuples(st.just("swap"), st.sampled_from(["singleton", "per_node"]))
    op = st.one_of(move, swap)
    caller = st.integers(min_value=0, max_value=nnodes - 1)
    return draw(st.lists(st.tuples(op, caller).map(lambda t: (*t[0], t[1])), min_size=1, max_size=5))
