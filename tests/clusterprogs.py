"""Module-level functions that tests run on nodes with Cluster.run (they must
be importable on every node)."""

from __future__ import annotations

import numpy as np

import tornado_dsm as td
from tornado_dsm.kernel import atomic, trap


def address_of(a: np.ndarray, index: int = 0) -> int:
    return a.__array_interface__["data"][0] + index * a.itemsize


def read_word(a, i, thread):
    """Read a[i] on one chosen thread of the node (the others do nothing)."""
    if td.current_thread() != thread:
        return None
    value = int(a[i])
    trap.check()
    return value


def write_word(a, i, value, thread):
    """Write a[i] on one chosen thread of the node."""
    if td.current_thread() == thread:
        a[i] = value
        trap.check()


def increment(a, shared_index, n):
    """n atomic increments of a[shared_index] and of this node-thread's private word."""
    private = 1 + td.current_node() * 64 + td.current_thread()
    for _ in range(n):
        atomic.fetch_add(address_of(a, shared_index), 1)
        atomic.fetch_add(address_of(a, private * 512), 1)  # its own page
    return private


def where_am_i():
    return td.current_node(), td.current_thread()


def fail_on(node):
    if td.current_node() == node:
        raise KeyError(f"boom on {node}")
    return td.current_node()


def fill_rows(a, value):
    """Each node fills its own row of a 2-D array."""
    n = td.current_node()
    a[n, :] = value + n
    return float(a[n].sum())


def touch_forever(a, stop_index):
    """Read every page until the array goes away; report what ended the loop."""
    try:
        while True:
            for i in range(0, a.size, 512):
                if a[i] < 0:
                    return "negative"
            trap.check()
    except td.SegmentationFault as e:
        return e.reason


def litmus_thread(a, ops, delays_us):
    """Run one litmus thread: ops are ("w", word, value) or ("r", word); a
    busy-wait of delays_us[i] microseconds precedes op i (schedule
    perturbation, not synchronization).  Returns the registers read."""
    import time

    regs = []
    for (op, *rest), delay in zip(ops, delays_us):
        end = time.perf_counter() + delay * 1e-6
        while time.perf_counter() < end:
            pass
        if op == "w":
            a[rest[0]] = rest[1]
        else:
            regs.append(int(a[rest[0]]))
    trap.check()
    return regs


def reset_words(a, words):
    for w in words:
        a[w] = 0


def read_words(a, words):
    return [int(a[w]) for w in words]


def write_pages(a, value):
    """Write value into the first word of every page of a."""
    for i in range(0, a.size, 512):
        a[i] = value
    trap.check()


def sum_pages(a):
    return int(sum(int(a[i]) for i in range(0, a.size, 512)))


def pressure_counts(nodes, protocol, manager, frames, rounds):
    """Every node adds 1, ``rounds`` times, to word 0 and to the word one page on,
    with room for ``frames`` pages per node: each fault evicts the other page.
    Returns the two totals (exact when no write is lost)."""
    with td.Cluster(nodes=nodes, protocol=protocol, manager=manager, memory_per_node=frames * 4096,
                    size=4 << 20, debug=True) as c:
        a = c.zeros((1024,), np.int64)
        c.run(increment_two_pages, a, rounds)
        stats = c.statistics().total
        return [int(a[0]), int(a[512]), stats.evicted_owned + stats.evicted_copies]


def increment_two_pages(a, rounds):
    for _ in range(rounds):
        atomic.fetch_add(address_of(a, 0), 1)
        atomic.fetch_add(address_of(a, 512), 1)


def write_page_words(a, pages, value):
    """Write value into the first word of each of ``pages`` of a (an int64 array)."""
    for p in pages:
        a[p * 512] = value
    trap.check()


def write_every_other_page(a, first_node):
    """Node n writes word 0 of every other page of ``a``, starting at page n - first_node
    (two nodes interleave page by page: every page's protection differs from its
    neighbours' on both); returns the pages written."""
    pages = a.reshape(-1, 512)
    mine = np.arange(td.current_node() - first_node, len(pages), 2)
    pages[mine, 0] = td.current_node()
    trap.check()
    return len(mine)


def pages_holding_node(a, first_node):
    """How many of this node's pages (as write_every_other_page chose them) hold its id."""
    pages = a.reshape(-1, 512)
    return int(np.count_nonzero(pages[td.current_node() - first_node::2, 0] == td.current_node()))


def window_state():
    """(backend, kernel mappings covering this node's window, HAT sheds) on this node."""
    from tornado_dsm.objects import _nodestate
    mem = _nodestate.current().memory
    count = 0
    with open("/proc/self/maps") as f:
        for line in f:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            count += lo < mem.end and hi > mem.base
    return mem.backend, count, mem.hat.statistics().sheds


def churn_pages(a, stop):
    """Write this node's word of every page in turn (write sharing with the others)
    until stop[0] is set; a check every 64 writes, so the stop word's page stays read."""
    me, n = td.current_node(), 0
    pages = a.size // 512
    while n % 64 or not stop[0]:
        a[(n % pages) * 512 + me] = n
        n += 1
    return n
