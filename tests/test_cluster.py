"""The Cluster API across real node processes: arrays, run, files, free, bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import tornado_dsm as td

import clusterprogs as progs
from helpers import new_cluster

pytestmark = [pytest.mark.multinode, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def vm_cluster():
    """3 nodes x 2 threads with debug checks and a 64 MiB window, for the whole module."""
    with new_cluster(3, threads_per_node=2, size=64 << 20, debug=True) as c:
        yield c


class TestRun:
    def test_results_in_node_thread_order(self, vm_cluster):
        """run() returns one result per (node, thread), ordered, and each call knows where it runs."""
        assert vm_cluster.run(progs.where_am_i) == [(n, t) for n in range(3) for t in range(2)]
        assert vm_cluster.run(progs.where_am_i, on=[2, 0], threads=1) == [(2, 0), (0, 0)]

    def test_exception_names_node_and_thread(self, vm_cluster):
        """A node's exception is re-raised in the caller with node and thread named."""
        with pytest.raises(KeyError) as info:
            vm_cluster.run(progs.fail_on, 1, threads=1)
        assert any("node 1, thread 0" in note for note in info.value.__notes__)

    @pytest.mark.parametrize("nodes", ["some", 3, [0, 5], [], True])
    def test_bad_nodes(self, vm_cluster, nodes):
        """Bad node choices name what is accepted."""
        with pytest.raises(ValueError, match="on must be"):
            vm_cluster.run(progs.where_am_i, on=nodes)

    def test_non_callable_refused(self, vm_cluster):
        """Something that is not callable is refused before any node runs it."""
        with pytest.raises(TypeError, match="needs a callable, not int"):
            vm_cluster.run(3)


class TestFunctionsFromAnywhere:
    def test_lambda_and_closure_run_by_value(self, vm_cluster):
        """A lambda and a closure over local values run on every node."""
        offset = 40
        assert vm_cluster.run(lambda: td.current_node() + offset, threads=1) == [40, 41, 42]

    def test_arrays_inside_containers_and_closures_are_shared(self, vm_cluster):
        """A shared array in a list argument or captured by a closure arrives as a view, not a copy."""
        a = vm_cluster.zeros(8, np.int64)

        def mark(arrays):
            arrays[0][td.current_node()] = 10 + td.current_node()
            a[4 + td.current_node()] = 20 + td.current_node()
        vm_cluster.run(mark, [a], threads=1)
        assert a.tolist() == [10, 11, 12, 0, 20, 21, 22, 0]
        vm_cluster.free(a)


@pytest.mark.parametrize("how", ["-c", "stdin"])
def test_program_without_a_file_runs(tmp_path, how):
    """A program given with `python -c` or on stdin runs functions it defines on the nodes."""
    program = ("import tornado_dsm as td\n"
               "def where(): return td.current_node()\n"
               "with td.Cluster(nodes=2, timeout=60) as c:\n"
               "    print(c.run(where), c.run(lambda: 7))\n")
    args = [sys.executable, "-c", program] if how == "-c" else [sys.executable, "-"]
    r = subprocess.run(args, input=None if how == "-c" else program, capture_output=True, text=True,
                       timeout=100, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[0, 1] [7, 7]"


def test_script_without_main_guard_says_so(tmp_path):
    """A script that makes a cluster at import fails in one clear line naming the guard."""
    script = tmp_path / "unguarded.py"
    script.write_text("import tornado_dsm as td\nwith td.Cluster(nodes=2) as c:\n    pass\n")
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=100,
                       cwd=tmp_path)
    assert r.returncode != 0
    assert r.stderr.count('if __name__ == "__main__":') == 2   # the node's line and the error
    assert "An attempt has been made to start a new process" not in r.stderr


def test_jupyter_kernel_runs_cell_functions(tmp_path):
    """Functions defined in a notebook cell run on the nodes (a real Jupyter kernel)."""
    manager = pytest.importorskip("jupyter_client.manager", reason="jupyter_client is not installed")
    pytest.importorskip("ipykernel", reason="no Jupyter kernel (ipykernel) is installed")
    km, kc = manager.start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        code = ("import tornado_dsm as td\n"
                "def square(x): return x * x + td.current_node()\n"
                "with td.Cluster(nodes=2, timeout=60) as c:\n"
                "    print(c.run(square, 3))\n")
        out = []
        reply = kc.execute_interactive(code, timeout=100, output_hook=lambda m: out.append(m))
        assert reply["content"]["status"] == "ok", reply["content"]
        text = "".join(m["content"].get("text", "") for m in out if m["msg_type"] == "stream")
        assert text.strip() == "[9, 10]"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


class TestArrays:
    def test_same_memory_everywhere(self, vm_cluster):
        """Arrays passed to run are views of the same memory on every node."""
        a = vm_cluster.zeros((3, 1024), np.float64)
        sums = vm_cluster.run(progs.fill_rows, a, 1.0, threads=1)
        assert sums == [1024.0 * (1 + n) for n in range(3)]
        assert a.sum() == 1024.0 * 6
        vm_cluster.free(a)

    @pytest.mark.parametrize("shape,dtype,match", [((-1,), "f8", "shape"), ("x", "f8", "shape"),
                                                   ((4,), "not-a-dtype", "dtype"), ((4,), object, "Python objects")])
    def test_bad_shape_or_dtype(self, vm_cluster, shape, dtype, match):
        """Invalid shapes and dtypes name the value and what is accepted."""
        with pytest.raises(ValueError, match=match):
            vm_cluster.zeros(shape, dtype)

    def test_beyond_window(self, vm_cluster):
        """An array larger than the window is a MemoryError naming the option."""
        with pytest.raises(MemoryError, match="size="):
            vm_cluster.zeros((1 << 30,), np.uint8)


class TestFree:
    def test_use_after_free(self, vm_cluster):
        """Touching a freed array is a SegmentationFault saying why; freeing it again is a ValueError."""
        a = vm_cluster.zeros((512,), np.int64)
        a[0] = 1
        vm_cluster.free(a)
        with pytest.raises(td.SegmentationFault, match=r"use after free: array 'array\d+' .* was freed"):
            a[0]
            td.kernel.trap.check()
        with pytest.raises(ValueError, match="use after free: .* was freed"):
            vm_cluster.free(a)
        with pytest.raises(ValueError, match="not a live shared array"):
            vm_cluster.free(np.asarray(td.kernel.view_at(a.__array_interface__["data"][0], (8,), np.int64)))

    def test_free_while_others_fault(self, vm_cluster):
        """free() while other nodes fault on the array: they end with SegmentationFault, nothing hangs."""
        from concurrent.futures import ThreadPoolExecutor

        a = vm_cluster.zeros((64 * 512,), np.int64)
        with ThreadPoolExecutor(1) as pool:
            running = pool.submit(vm_cluster.run, progs.touch_forever, a, 0, on=[1, 2], threads=1)
            while vm_cluster.statistics().total.read_faults < 8:
                pass
            vm_cluster.free(a)
            reasons = running.result(timeout=60)
        assert all("freed" in r or "destroyed" in r for r in reasons), reasons


class TestMapFile:
    def test_written_by_three_nodes_survives(self, tmp_path):
        """A file-backed array written from 3 nodes, flushed, reads back identically in a fresh cluster."""
        path = tmp_path / "grid.bin"
        path.write_bytes(bytes(3 * 1024 * 8))
        with new_cluster(3) as c:
            a = c.map_file(path, (3, 1024), np.float64)
            c.run(progs.fill_rows, a, 2.0)
            assert c.flush(a) >= 3
            expected = np.array(a)
        assert path.read_bytes() == expected.tobytes()
        with new_cluster(2) as c:
            b = c.map_file(path, (3, 1024), np.float64, mode="r")
            assert np.array_equal(b, expected)
            with pytest.raises(td.SegmentationFault, match="read-only"):
                b[0, 0] = 1
                td.kernel.trap.check()

    def test_refusal_crosses_a_singleton_region(self, tmp_path):
        """A write refused by a singleton Region on its home reaches node 1 as SegmentationFault with the reason."""
        path = tmp_path / "ro.bin"
        path.write_bytes(bytes(2 * 4096))
        with new_cluster(2, policies={"region": "singleton"}) as c:
            b = c.map_file(path, (2, 512), np.float64, mode="r")
            with pytest.raises(td.SegmentationFault, match="write to a read-only region"):
                c.run(progs.fill_rows, b, 1.0, on=[1])

    def test_short_file(self, tmp_path, vm_cluster):
        """A file shorter than the mapping is refused, naming both sizes."""
        path = tmp_path / "short.bin"
        path.write_bytes(bytes(100))
        with pytest.raises(ValueError, match="has 100 bytes, shorter than the mapping"):
            vm_cluster.map_file(path, (1000,), np.uint8)


class TestBadConfiguration:
    @pytest.mark.parametrize("kwargs,match", [
        (dict(nodes=0), "nodes must be"), (dict(protocol="mesi"), "protocol"),
        (dict(manager="central"), "manager"), (dict(policies={"process": "per_cpu"}), "process policy"),
        (dict(policies={"region": "group:9"}), "k must be"), (dict(policies={"fcm": "singleton"}), "unknown object"),
        (dict(memory_per_node=10), "at least one page"), (dict(threads_per_node=0), "threads_per_node"),
    ])
    def test_refused_before_starting(self, kwargs, match):
        """Bad arguments are refused with the value and the accepted ones, before any node starts."""
        with pytest.raises(ValueError, match=match):
            td.Cluster(**kwargs)


def run_on_calls(stats) -> int:
    """Node-service run_on calls counted in one node's PPCStatistics."""
    counter = stats.get(0, "run_on", "remote")
    return counter.calls if counter is not None else 0


def address(array) -> int:
    """The start address of an array's data."""
    return array.__array_interface__["data"][0]


@pytest.fixture(scope="class")
def own_cluster():
    """A 3-node cluster of this class's own."""
    with new_cluster(3) as c:
        yield c


class TestAccessors:
    def test_ppc_statistics_by_node(self, own_cluster):
        """ppc_statistics() is every node's PPCStatistics by node id; node 0's counts run's remote calls."""
        before = own_cluster.ppc_statistics()
        own_cluster.run(progs.where_am_i, threads=1)
        after = own_cluster.ppc_statistics()
        assert [s.node for s in after] == [0, 1, 2]
        assert run_on_calls(after[0]) - run_on_calls(before[0]) == 2

    def test_arrays_lists_the_live_ones(self, own_cluster):
        """arrays() lists the live shared arrays oldest first, as the same memory; a freed one leaves it."""
        a, b = own_cluster.zeros((8,), np.int64), own_cluster.zeros((4, 4), np.float32)
        listed = own_cluster.arrays()
        assert [address(x) for x in listed[-2:]] == [address(a), address(b)]
        assert (listed[-1].shape, listed[-1].dtype) == ((4, 4), np.float32)
        own_cluster.free(a)
        assert [address(x) for x in own_cluster.arrays()][-1:] == [address(b)]
        assert address(a) not in [address(x) for x in own_cluster.arrays()]

    def test_node_set(self, own_cluster):
        """node_set runs plain functions on nodes (node 0's share here) and holds node 0's runtime."""
        assert own_cluster.node_set.run_on_all(td.current_node) == [0, 1, 2]
        assert own_cluster.node_set.run_on_each([2, 0], td.current_node) == [2, 0]
        assert own_cluster.node_set.runtime.node_id == 0


class TestClosed:
    def test_node_set_of_a_closed_cluster(self):
        """After close, node_set raises RuntimeError saying the cluster is closed."""
        c = new_cluster(1)
        c.close()
        with pytest.raises(RuntimeError, match="closed"):
            c.node_set

    @pytest.mark.parametrize("call", [
        lambda c, a: c.zeros(4), lambda c, a: c.run(len, [1]), lambda c, a: c.statistics(),
        lambda c, a: c.inspect(), lambda c, a: c.flush(a), lambda c, a: c.free(a), lambda c, a: c.lock(),
        lambda c, a: c.barrier(2), lambda c, a: c.drop_mappings(a), lambda c, a: c.arrays(),
        lambda c, a: c.lost_nodes(), lambda c, a: c.map_file("x", 4)])
    def test_every_call_says_closed(self, call):
        """After close(), every call says the cluster is closed (never a lost node or a dangling array)."""
        c = new_cluster(2)
        a = c.zeros(4)
        c.close()
        with pytest.raises(RuntimeError, match="this cluster is closed"):
            call(c, a)

    def test_lock_of_a_closed_cluster(self):
        """A lock and a barrier used after their cluster closed say so."""
        c = new_cluster(2)
        lock, barrier = c.lock("ttas"), c.barrier(1, "counter")
        c.close()
        with pytest.raises(RuntimeError, match="belongs to a cluster that is closed"):
            lock.acquire()
        with pytest.raises(RuntimeError, match="belongs to a cluster that is closed"):
            barrier.wait()


def _fill_and_sum(a):
    a[:] = 3
    return int(a.sum())


class TestMemoryBudget:
    def test_one_array_larger_than_all_memory_pages(self):
        """memory_per_node is a frame budget, not an admission limit: an array larger than every
        node's memory together is admitted and works (it pages to the backing store)."""
        with new_cluster(2, memory_per_node=4 * 4096) as c:
            a = c.zeros(16 * 512, np.int64)            # 16 pages, the nodes hold 8 together
            assert c.run(_fill_and_sum, a, on=[1]) == [3 * 16 * 512]
            assert int(a.sum()) == 3 * 16 * 512
            assert c.statistics().total.evicted_owned > 0


class TestStatistics:
    def test_first_touches_are_their_own_kind(self):
        """On one node, zero-filled first touches count as first touches, never as coherence faults."""
        with new_cluster(1) as c:
            a = c.zeros(8 * 512, np.int64)
            c.run(progs.write_pages, a, 1)
            t = c.statistics().total
            assert (t.first_touch_faults, t.coherence_faults, t.faults, t.write_faults) == (8, 0, 8, 8)

    def test_a_stub_node_counts_its_own_faults(self):
        """With a singleton Region, each faulting node reports its own reads and faults, not the home."""
        with new_cluster(3, policies={"region": "singleton"}) as c:
            a = c.zeros(8 * 512, np.int64)
            c.run(progs.sum_pages, a, on=[2], threads=1)
            n = c.statistics().nodes
            assert (n[2].read_faults, n[2].faults, n[2].resident_pages) == (8, 8, 8)
            assert (n[0].read_faults, n[1].read_faults) == (0, 0)

    def test_reset_and_measure_give_one_phase(self):
        """statistics(reset=True) and measure() count only what happened after them."""
        with new_cluster(2) as c:
            a = c.zeros(8 * 512, np.int64)
            c.run(progs.write_pages, a, 1, on=[0], threads=1)
            assert c.statistics(reset=True).total.write_faults == 8
            with c.measure() as m:
                c.run(progs.sum_pages, a, on=[1], threads=1)
            assert (m.statistics.total.read_faults, m.statistics.total.write_faults) == (8, 0)
            assert m.seconds > 0
            assert c.statistics().total.read_faults == 8       # since the reset

    def test_prints_as_a_short_table(self):
        """print(statistics) is one header, one row per node and a total; repr is one line."""
        with new_cluster(3) as c:
            c.run(progs.write_pages, c.zeros(4 * 512, np.int64), 1, on=[1], threads=1)
            s = c.statistics()
            lines = str(s).splitlines()
            assert len(lines) == 5 and lines[0].split()[:4] == ["node", "faults", "read", "write"]
            assert lines[-1].split()[:2] == ["total", "4"]
            assert "\n" not in repr(s) and "histogram" not in repr(s)


class TestRunOn:
    def test_nodes_keyword_still_works_with_a_warning(self):
        """run(nodes=...) still chooses nodes, with a DeprecationWarning naming on=."""
        with new_cluster(2) as c:
            with pytest.warns(DeprecationWarning, match=r"run\(on=\.\.\.\)"):
                assert c.run(progs.where_am_i, nodes=[1], threads=1) == [(1, 0)]
            with pytest.raises(TypeError, match="not both"):
                c.run(progs.where_am_i, on=[1], nodes=[1])


class TestPolicyNames:
    def test_inspect_shows_the_name_given(self):
        """Cluster(policies={"process": "per_node"}) and the old "replicated" both show as per_node."""
        for name in ("per_node", "replicated"):
            with new_cluster(2, policies={"process": name}) as c:
                assert {o.policy for o in c.inspect().objects if o.name == "process"} == {"per_node"}
