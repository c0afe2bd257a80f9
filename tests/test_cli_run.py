"""tornado-dsm run / inspect / list, as a user types them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from tornado_dsm._cli import main
from tornado_dsm._report import load_schema

REPO = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# The console script of the Python running the tests (a virtual environment's own), else PATH's.
SCRIPT = str(Path(sys.executable).with_name("tornado-dsm")) \
    if Path(sys.executable).with_name("tornado-dsm").is_file() else "tornado-dsm"


def tornado_dsm(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the installed console script from a directory other than the repository."""
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=timeout, cwd="/")


@pytest.mark.multinode
@pytest.mark.timeout(180)
class TestRun:
    def test_run_writes_table_json_and_plot(self, tmp_path):
        """run prints one row per combination, writes JSON valid against the schema and a PNG."""
        out, png = tmp_path / "r.json", tmp_path / "r.png"
        r = tornado_dsm("run", str(REPO / "scenarios" / "quickstart.toml"), "--set", "pages=8",
                        "--set", "repeats=1", "--json", str(out), "--plot", str(png))
        assert r.returncode == 0, r.stderr
        rows = [line for line in r.stdout.splitlines() if line.split()[:1] in (["per_node"], ["singleton"])]
        assert len(rows) == 4 and "norm.cost" in r.stdout and "Process rPPC/f" in r.stdout
        doc = json.loads(out.read_text())
        jsonschema.validate(doc, load_schema())
        assert doc["schema_version"] == 1
        assert [(x["params"]["policies.process"], x["params"]["cluster.nodes"]) for x in doc["runs"]] == \
            [("per_node", 1), ("per_node", 2), ("singleton", 1), ("singleton", 2)]
        data = png.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and b"matplotlib" in data[:4096].lower()

    def test_run_by_name_with_vary(self, tmp_path):
        """A shipped scenario runs by name; --vary makes the comparison, normalised to 1 node."""
        out = tmp_path / "v.json"
        r = tornado_dsm("run", "false-sharing", "--set", "ops=500", "--set", "repeats=1",
                        "--vary", "nodes=1,2", "--json", str(out), "--no-progress")
        assert r.returncode == 0, r.stderr
        runs = json.loads(out.read_text())["runs"]
        assert [x["values"]["cluster.nodes"] for x in runs] == [1, 2] and runs[0]["normalized_cost"] == 1.0

    def test_inspect_prints_replication_levels(self):
        """inspect shows every VM object with its policy, rep nodes, calls and PPCs."""
        r = tornado_dsm("inspect", "tornado-infault", "--set", "nodes=2", "--set", "pages=4",
                        "--set", "repeats=1", "--no-progress")
        assert r.returncode == 0, r.stderr
        assert r.stdout.count("replication levels of tornado-infault") == 2
        assert "measured PPC remote" in r.stdout
        lines = {line.split()[0]: line.split() for line in r.stdout.splitlines() if line.startswith("process")}
        assert lines["process"][2] in ("per_node", "singleton")

    @pytest.mark.parametrize("backend", ["mprotect", "auto"])
    def test_reports_name_the_fault_backend(self, tmp_path, backend):
        """The table, inspect and the JSON say which fault backend every node took."""
        from tornado_dsm.kernel import uffd_support
        took = "uffd" if backend == "auto" and uffd_support().ok else "mprotect"
        out = tmp_path / "b.json"
        common = ("tornado-infault", "--set", "nodes=2", "--set", "pages=4", "--set", "repeats=1",
                  "--set", f"backend={backend}", "--no-progress")
        r = tornado_dsm("run", *common, "--json", str(out))
        assert r.returncode == 0, r.stderr
        assert f"fault backend {took})" in r.stdout
        run = json.loads(out.read_text())["runs"][0]
        assert run["backend"] == took and [n["backend"] for n in run["nodes"]] == [took, took]
        r = tornado_dsm("inspect", *common)
        assert r.returncode == 0, r.stderr
        assert f"on 2 node(s), fault backend {took}" in r.stdout


class TestListAndErrors:
    def test_list_names_every_shipped_scenario(self):
        """list prints one line per shipped scenario, from any directory."""
        r = tornado_dsm("list")
        assert r.returncode == 0
        names = [line.split()[0] for line in r.stdout.splitlines()]
        assert names == sorted(p.stem for p in (REPO / "scenarios").glob("*.toml"))

    def test_bad_scenario_exits_2_naming_key(self, tmp_path, capsys):
        """A bad file exits 2 with one line naming the file, key, value and accepted values."""
        bad = tmp_path / "bad.toml"
        bad.write_text("[cluster]\nnodes = 0\n")
        assert main(["run", str(bad)]) == 2
        err = capsys.readouterr().err
        assert str(bad) in err and "cluster.nodes = 0" in err and "from 1 to 64" in err

    def test_bad_set_exits_2(self, capsys):
        """--set of an unknown key exits 2 listing the accepted keys."""
        assert main(["run", "quickstart", "--set", "colour=red"]) == 2
        assert "unknown key" in capsys.readouterr().err
