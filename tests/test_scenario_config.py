"""Scenario files: parsing, overrides, combinations and the errors of bad files (no cluster)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tornado_dsm._scenario_config import KEYS, ScenarioError, from_dict, load

SHIPPED = sorted((Path(__file__).resolve().parent.parent / "scenarios").glob("*.toml"))


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return path


class TestShipped:
    @pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
    def test_shipped_files_validate(self, path):
        """Every shipped scenario file and each of its combinations is valid."""
        s = load(path)
        assert s.name == path.stem and s["description"]
        assert all(s.with_values(o) for o in s.combinations())

    def test_required_scenarios_are_shipped(self):
        """The scenarios the README and the issue name are all shipped."""
        names = {p.stem for p in SHIPPED}
        assert {"quickstart", "tornado-infault", "ivy-managers", "migrate-vs-ivy", "false-sharing",
                "jacobi"} <= names


class TestOverrides:
    def test_defaults_fill_every_key(self):
        """An empty file is a valid scenario with every key at its default."""
        s = from_dict({})
        assert s.values == {k: key.default for k, key in KEYS.items()}

    def test_set_short_and_dotted_keys(self):
        """--set takes a key's last part when unambiguous, or its dotted name; typed as TOML."""
        s = from_dict({}, sets=["nodes=3", "workload.repeats=5", "manager=fixed", "debug=true"])
        assert (s["cluster.nodes"], s["workload.repeats"], s["cluster.manager"], s["cluster.debug"]) == \
            (3, 5, "fixed", True)

    def test_set_replaces_vary_of_same_key(self):
        """--set nodes=2 on a file that varies nodes runs only nodes=2."""
        s = from_dict({"vary": {"nodes": [1, 2, 4]}}, sets=["nodes=2"])
        assert s.combinations() == [{}] and s["cluster.nodes"] == 2

    def test_vary_product_and_tables(self):
        """[vary] combinations are the product; a table value sets several keys of its section."""
        s = from_dict({"vary": {"policies": [{"process": "singleton", "region": "singleton"},
                                             {"process": "replicated", "region": "per_node"}],
                                "nodes": [1, 2]}})
        combos = s.combinations()
        assert len(combos) == 4
        assert combos[0] == {"policies.process": "singleton", "policies.region": "singleton", "cluster.nodes": 1}

    def test_cli_vary(self):
        """--vary key=a,b adds a comparison with values typed like the key."""
        s = from_dict({}, varies=["manager=centralized,dynamic", "nodes=1,2"])
        assert [c["cluster.nodes"] for c in s.combinations()] == [1, 2, 1, 2]


class TestErrors:
    @pytest.mark.parametrize("text,key,fragment", [
        ("[cluster]\nnodez = 2\n", "cluster.nodez", "accepted: cluster.nodes"),
        ("[cluster]\nnodes = 0\n", "cluster.nodes", "from 1 to 64"),
        ("[cluster]\nnodes = \"two\"\n", "cluster.nodes", "wrong type str"),
        ("[cluster]\nmanager = \"central\"\n", "cluster.manager", "'centralized', 'fixed', 'dynamic'"),
        ("[policies]\nregion = \"everywhere\"\n", "policies.region", "'per_node', 'singleton', 'group:k'"),
        ("[policies]\nregion = \"group:5\"\n", "policies.region", "k from 1 to cluster.nodes"),
        ("[policies]\nprocess = \"everywhere\"\n", "policies.process", "'per_node', 'singleton'"),
        ("[workload]\nkind = \"lu\"\n", "workload.kind", "'jacobi'"),
        ("[workload]\nwrite_fraction = 1.5\n", "workload.write_fraction", "from 0 to 1"),
        ("[workload]\nkind = \"jacobi\"\nwrite_fraction = 0.5\n", "workload.write_fraction",
         "does not apply to workload kind 'jacobi'"),
        ("[workload]\nkind = \"matmul\"\nn = 100\nblock = 16\n", "workload.block", "divisor"),
        ("cluster = 3\n", "cluster", "a table"),
        ("colour = \"red\"\n", "colour", "accepted: name, description"),
        ("[vary]\nnodes = 2\n", "vary.nodes", "non-empty list"),
        ("[vary]\nnodes = [1, 0]\n", "cluster.nodes", "from 1 to 64"),
        ("[vary]\nflavour = [1]\n", "flavour", "unknown key"),
        ("[cluster\n", "(syntax)", "valid TOML"),
    ])
    def test_bad_file_names_file_key_value_accepted(self, tmp_path, text, key, fragment):
        """A bad file's error names the file, the key, the bad value and what is accepted."""
        path = write(tmp_path, text)
        with pytest.raises(ScenarioError) as info:
            load(path)
        message = str(info.value)
        assert message.startswith(str(path)) and info.value.key == key and fragment in message

    def test_missing_file(self, tmp_path):
        """A missing file is a ScenarioError naming it and `tornado-dsm list`."""
        with pytest.raises(ScenarioError, match="tornado-dsm list"):
            load(tmp_path / "nope.toml")

    def test_bad_set(self):
        """--set without '=' or with an unknown key says what is accepted."""
        with pytest.raises(ScenarioError, match="KEY=VALUE"):
            from_dict({}, sets=["nodes"])
        with pytest.raises(ScenarioError, match="unknown key"):
            from_dict({}, sets=["colour=red"])
        with pytest.raises(ScenarioError, match="out of range"):
            from_dict({}, sets=["nodes=65"])


class TestReference:
    def test_every_key_documented(self):
        """docs/scenarios.md has a row for every scenario key."""
        text = (Path(__file__).resolve().parent.parent / "docs" / "scenarios.md").read_text()
        assert all(f"| `{key}` |" in text for key in KEYS)


class TestCombinationErrors:
    def test_bad_combination_found_at_load(self):
        """A combination that is invalid only together (group:2 on 1 node) fails at load."""
        with pytest.raises(ScenarioError, match="group:k needs k from 1 to cluster.nodes"):
            from_dict({"policies": {"region": "group:2"}, "vary": {"nodes": [1, 2]}})


class TestPrefetchKey:
    def test_prefetch_needs_the_dynamic_manager(self):
        """region.prefetch with a centralized manager is refused naming the key and the manager it needs."""
        with pytest.raises(ScenarioError, match="region.prefetch.*needs 'dynamic'"):
            from_dict({"cluster": {"manager": "centralized"}, "region": {"prefetch": 2}})

    def test_prefetch_out_of_range(self):
        """region.prefetch above the largest reply is refused with the accepted range."""
        with pytest.raises(ScenarioError, match="from 0 to 64"):
            from_dict({"region": {"prefetch": 65}})


class TestOneNamePerPolicy:
    def test_old_name_reads_as_per_node(self):
        """process = "replicated" (the old name), as a value or in [vary], is per_node everywhere after loading."""
        s = from_dict({"policies": {"process": "replicated"},
                       "vary": {"policies": [{"process": "replicated"}, {"process": "singleton"}]}})
        assert s["policies.process"] == "per_node"
        assert [c["policies.process"] for c in s.combinations()] == ["per_node", "singleton"]


class TestKeyNames:
    @pytest.mark.parametrize("vary", [
        {"policies.region": ["per_node", "singleton"]},          # quoted dotted key
        {"policies": {"region": ["per_node", "singleton"]}},     # policies.region = [...] unquoted
        {"region.policy": ["per_node", "singleton"]},            # the natural spelling
        {"policy.region": ["per_node", "singleton"]}])
    def test_every_natural_form_varies_the_region_policy(self, vary):
        """[vary] reads policies.region in its quoted, dotted and natural spellings alike."""
        s = from_dict({"vary": vary})
        assert [c["policies.region"] for c in s.combinations()] == ["per_node", "singleton"]

    def test_bare_section_name_suggests_the_key(self):
        """vary.region = [...] (a section given plain values) names the key that would vary it."""
        with pytest.raises(ScenarioError, match=r"to vary one key write policies.region = "):
            from_dict({"vary": {"region": ["per_node", "singleton"]}})

    @pytest.mark.parametrize("doc,key,suggestion", [
        ({"cluster": {"nodez": 2}}, "cluster.nodez", "cluster.nodes"),
        ({"workload": {"repeat": 2}}, "workload.repeat", "workload.repeats")])
    def test_unknown_key_in_a_file_says_did_you_mean(self, doc, key, suggestion):
        """A misspelt key is refused with the nearest key suggested."""
        with pytest.raises(ScenarioError, match=f"did you mean '{suggestion}'") as info:
            from_dict(doc)
        assert info.value.key == key

    def test_unknown_set_key_says_did_you_mean(self):
        """--set nodez=3 suggests cluster.nodes."""
        with pytest.raises(ScenarioError, match="did you mean 'cluster.nodes'"):
            from_dict({}, sets=["nodez=3"])
