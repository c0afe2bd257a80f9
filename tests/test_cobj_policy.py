"""Policies, partition functions and the Root/Rep helpers of the COS (no nodes needed)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from tornado_dsm.kernel import ClusteredRep, ClusteredRoot, Policy, parse_policy
from tornado_dsm.kernel.cobj._policy import (
    class_path, group_leader, load_class, public_methods, stable_partition,
)
from tornado_dsm.objects import PerNodeCounter, SingletonCounter, counter_class

from strategies import cobj_policies, partition_keys

NODES = st.integers(min_value=1, max_value=16)


class TestParsePolicy:
    def test_valid_names(self):
        """Every documented policy name parses and prints back unchanged."""
        for text in ("singleton", "per_node", "partitioned", "group:1", "group:4"):
            assert str(parse_policy(text, 4)) == text

    @pytest.mark.parametrize("text", ["", "single", "group", "group:", "group:x", "group:-1", "GROUP:2"])
    def test_unknown_or_malformed(self, text):
        """A bad policy text raises ValueError naming it and the accepted policies or k range."""
        with pytest.raises(ValueError, match="policy|group size"):
            parse_policy(text, 4)

    @pytest.mark.parametrize("k", [0, 5, 100])
    def test_bad_group_size(self, k):
        """group:k with k outside 1..nnodes is refused, naming the bound."""
        with pytest.raises(ValueError, match=r"from 1 to the number of nodes \(4\)"):
            parse_policy(f"group:{k}", 4)

    def test_not_a_string(self):
        """A non-string policy raises TypeError naming the accepted names."""
        with pytest.raises(TypeError, match="singleton"):
            parse_policy(3, 4)


class TestDecide:
    @settings(max_examples=60, deadline=None)
    @given(NODES.flatmap(lambda n: st.tuples(st.just(n), cobj_policies(n), st.integers(0, n - 1))))
    def test_every_node_reaches_a_rep(self, case):
        """Every node gets a rep or a stub to a node that itself gets a rep."""
        nnodes, text, home = case
        policy = parse_policy(text, nnodes)
        for node in range(nnodes):
            kind, target = policy.decide(node, home, nnodes)
            assert policy.decide(target, home, nnodes) == ("rep", target)
            assert (kind == "rep") == (target == node)

    @settings(max_examples=60, deadline=None)
    @given(NODES.flatmap(lambda n: st.tuples(st.just(n), st.integers(1, n), st.integers(0, n - 1))))
    def test_group_has_one_rep(self, case):
        """group:k gives exactly one rep per group n // k, on the home in the home's group."""
        nnodes, k, home = case
        policy = parse_policy(f"group:{k}", nnodes)
        reps = [n for n in range(nnodes) if policy.decide(n, home, nnodes)[0] == "rep"]
        assert sorted(n // k for n in reps) == sorted({n // k for n in range(nnodes)})
        assert home in reps
        assert all(group_leader(n, home, k) // k == n // k for n in range(nnodes))

    def test_singleton_and_per_node(self):
        """singleton: rep only on home; per_node and partitioned: a rep everywhere."""
        assert [Policy("singleton").decide(n, 1, 3) for n in range(3)] == [("stub", 1), ("rep", 1), ("stub", 1)]
        for kind in ("per_node", "partitioned"):
            assert [Policy(kind).decide(n, 1, 3) for n in range(3)] == [("rep", 0), ("rep", 1), ("rep", 2)]


class TestStablePartition:
    @settings(max_examples=100, deadline=None)
    @given(partition_keys, NODES)
    def test_in_range_and_deterministic(self, key, nnodes):
        """The default key -> node map lands in 0..N-1 and does not depend on the process."""
        node = stable_partition(key, nnodes)
        assert 0 <= node < nnodes and stable_partition(key, nnodes) == node

    def test_ints_are_mod_n(self):
        """Integer keys map to key mod N."""
        assert [stable_partition(k, 3) for k in range(-2, 5)] == [1, 2, 0, 1, 2, 0, 1]

    @pytest.mark.parametrize("key", [1.5, None, (1,), True])
    def test_bad_key(self, key):
        """A key that is not int, str or bytes raises TypeError naming it."""
        with pytest.raises(TypeError, match="partition key"):
            stable_partition(key, 3)


class TestClassHelpers:
    def test_class_path_round_trip(self):
        """class_path names a module-level class so that load_class finds it again."""
        assert load_class(class_path(PerNodeCounter)) is PerNodeCounter

    def test_local_class_refused(self):
        """A class defined inside a function cannot be named across nodes: ValueError."""
        class Local(ClusteredRoot):
            pass
        with pytest.raises(ValueError, match="module level"):
            class_path(Local)

    def test_public_methods(self):
        """Callable methods exclude _private, locked_* and the ClusteredRep machinery."""
        class R(ClusteredRep):
            def a(self): ...
            def _b(self): ...
            def locked_c(self): ...
        assert public_methods(R) == ("a",)
        assert public_methods(SingletonCounter.Rep) == ("inc", "reset", "value")

    def test_counter_class(self):
        """counter_class maps each policy to its counter variant and refuses unknown ones."""
        assert counter_class("singleton") is SingletonCounter
        assert counter_class("group:2") is PerNodeCounter
        with pytest.raises(ValueError, match="accepted"):
            counter_class("bogus")
