"""The README's examples run as printed."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def code_block_after(heading: str) -> str:
    """The first ```python block after ``heading`` in the README."""
    text = README.read_text()
    start = text.index(heading)
    return re.search(r"```python\n(.*?)```", text[start:], re.S).group(1)


def run_example(heading: str, tmp_path, timeout: float) -> subprocess.CompletedProcess:
    """The first python block after ``heading``, run as a script in ``tmp_path``; it must succeed."""
    script = tmp_path / "example.py"
    script.write_text(code_block_after(heading))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=timeout, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    return r


class TestClusterExample:
    @pytest.mark.multinode
    @pytest.mark.timeout(180)
    def test_runs_and_prints_what_it_says(self, tmp_path):
        """The shared-arrays example runs as a script and prints the values its comments promise."""
        r = run_example("## Shared arrays across nodes", tmp_path, timeout=170)
        lines = r.stdout.splitlines()
        assert lines[:3] == ["[102400.0, 204800.0, 307200.0]", "[614400.0]", "1.0 3.0"]
        assert "replication view" in r.stdout and "fcm:array0" in r.stdout


class TestSyncExample:
    @pytest.mark.multinode
    @pytest.mark.timeout(120)
    def test_runs_and_prints_what_it_says(self, tmp_path):
        """The lock-and-barrier example runs as a script and prints the totals its comments promise."""
        r = run_example("### Locks, barriers and waiting on a word", tmp_path, timeout=110)
        assert r.stdout.splitlines() == ["[6000.0, 3000.0, 1500.0]", "True"]


class TestSwapExample:
    @pytest.mark.multinode
    @pytest.mark.timeout(120)
    def test_runs_and_prints_what_it_says(self, tmp_path):
        """The set_policy example runs as a script: one swap away from per_node and its history."""
        r = run_example("### Changing a policy while it runs", tmp_path, timeout=110)
        first, history = r.stdout.splitlines()
        assert first.startswith("per_node -> singleton ") and first.endswith(" call(s) waited")
        assert history == "['singleton', 'per_node']"


class TestMigrateExample:
    @pytest.mark.multinode
    @pytest.mark.timeout(120)
    def test_runs_and_prints_what_it_says(self, tmp_path):
        """The migrate example runs as a script: the Region moves from node 0 to 2, no write is lost."""
        r = run_example("#### Moving an object to another node", tmp_path, timeout=110)
        first, second = r.stdout.splitlines()
        assert first.startswith("0 -> 2 ") and first.endswith(" call(s) waited")
        assert second == "4096 [('migrate', 2)]"


class TestAdaptiveExample:
    @pytest.mark.multinode
    @pytest.mark.timeout(120)
    def test_runs_and_prints_what_it_says(self, tmp_path):
        """The adaptive example runs as a script: the Region goes per_node under reads and back when idle."""
        r = run_example("#### Usage-driven replication", tmp_path, timeout=110)
        assert r.stdout.splitlines()[0] == ("[('singleton', 'per_node', 'adaptive'), "
                                            "('per_node', 'singleton', 'adaptive')]")
