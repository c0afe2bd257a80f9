"""Scenario validation before any node starts: non-finite numbers, memory footprints,
memory_per_node, --base, output paths and unreadable scenario files (no cluster)."""

from __future__ import annotations

import contextlib
import math
import struct
import types

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tornado_dsm._barriers import KINDS as BARRIER_KINDS
from tornado_dsm._barriers import words_needed as barrier_words
from tornado_dsm._locks import KINDS as LOCK_KINDS
from tornado_dsm._locks import words_needed as lock_words
from tornado_dsm._cli import main
from tornado_dsm._scenario_config import KEYS, ScenarioError, from_dict, load, physical_memory
from tornado_dsm._scenario_run import RunContext, plan_runs, run_scenario
from tornado_dsm._syncspace import words_layout
from tornado_dsm._workloads import DRIVERS, memory_bytes, window_pages

FLOAT_KEYS = sorted(k for k, spec in KEYS.items()
                    if float in (spec.type if isinstance(spec.type, tuple) else (spec.type,)))
NAN_PAYLOADS = st.tuples(st.booleans(), st.integers(1, (1 << 52) - 1)).map(
    lambda sign_mantissa: struct.unpack("<d", struct.pack("<Q", sign_mantissa[0] << 63 | 0x7FF << 52
                                                          | sign_mantissa[1]))[0])
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf]) | NAN_PAYLOADS  # every nan and both infinities


def doc_with(key: str, value) -> dict:
    """A TOML document setting dotted ``key`` to ``value``, with a kind the key applies to."""
    section, _, name = key.rpartition(".")
    doc = {"workload": {"kind": KEYS[key].kinds[0]}}
    doc.setdefault(section, {})[name] = value
    return doc


def assert_names(exc: ScenarioError, key: str, value, fragment: str) -> None:
    """The error names the key, shows the value and says what is accepted."""
    message = str(exc)
    assert exc.key == key and f"{key} = {value!r}" in message and fragment in message


@pytest.fixture
def no_start(monkeypatch):
    """Fail the test if any cluster would start (every check must come before)."""
    def started(*args, **kwargs):
        raise AssertionError("a cluster was started")
    monkeypatch.setattr("tornado_dsm._scenario_run.run_one", started)


class TestCheckValue:
    @given(key=st.sampled_from(FLOAT_KEYS), value=NON_FINITE)
    def test_non_finite_float_in_any_float_key_is_refused(self, key, value):
        """Any nan or infinity in any float key is refused, naming the key, value and range."""
        with pytest.raises(ScenarioError) as info:
            from_dict(doc_with(key, value))
        assert_names(info.value, key, value, f"not a finite number; expected {KEYS[key].accepted}")

    @pytest.mark.parametrize("raw", ["nan", "inf", "-inf", "+nan"])
    def test_non_finite_set_is_refused(self, raw):
        """--set write_fraction=nan (TOML's nan, inf) is refused like the file's value."""
        with pytest.raises(ScenarioError, match="workload.write_fraction = .*not a finite number"):
            from_dict({}, sets=[f"write_fraction={raw}"])

    def test_non_finite_vary_value_is_refused(self):
        """A nan among the values of --vary is refused before any combination runs."""
        with pytest.raises(ScenarioError, match="workload.write_fraction = nan: not a finite number"):
            from_dict({}, varies=["write_fraction=0.5,nan"])

    def test_nan_in_file_is_refused(self, tmp_path):
        """`write_fraction = nan` in a scenario file is refused, naming the file."""
        path = tmp_path / "nan.toml"
        path.write_text("[workload]\nwrite_fraction = nan\n")
        with pytest.raises(ScenarioError) as info:
            load(path)
        assert str(info.value) == (f"{path}: workload.write_fraction = nan: not a finite number; "
                                   "expected a number from 0 to 1")



class TestCheckMemory:
    @given(memory=st.integers(0, 3 * 4096) | st.integers(4096, 1 << 40))
    def test_refused_exactly_below_one_page(self, memory):
        """memory_per_node is refused exactly when it is from 1 to 4095 bytes (less than a frame)."""
        if 0 < memory < 4096:
            with pytest.raises(ScenarioError) as info:
                from_dict({"cluster": {"memory_per_node": memory}})
            assert_names(info.value, "cluster.memory_per_node", memory,
                         "less than one page; expected 0 (no limit) or an integer of at least 4096 (one page)")
        else:
            assert from_dict({"cluster": {"memory_per_node": memory}})["cluster.memory_per_node"] == memory



class AllocationCounter:
    """A stand-in RunContext that counts the pages a driver allocates and runs nothing."""

    def __init__(self, s) -> None:
        self.s, self.pages, self.sync = s, 0, {}
        self.cluster = types.SimpleNamespace(run=lambda *a, **k: [], drop_mappings=lambda *a, **k: [],
                                             barrier=self.barrier, lock=self.lock)

    params = RunContext.params  # the drivers' real parameters

    def region(self, pages: int, dtype=np.int64) -> np.ndarray:
        self.pages += pages
        return np.zeros(pages * 4096 // np.dtype(dtype).itemsize, dtype)

    def step(self, *args, **kwargs) -> list:
        return []

    def reserve(self, pages: int) -> int:
        self.pages += pages
        return 0

    def oids(self, a) -> dict:
        return {"region": 0, "fcm": 0, "process": 0}

    def history(self, target) -> list:
        return []

    def barrier(self, parties: int, kind: str = "tree", padding: str = "page"):
        return self._sync(kind, words_layout(padding, barrier_words(kind, parties))[1])

    def lock(self, kind: str = "mcs", padding: str = "page", threads: int | None = None):
        return self._sync(kind, words_layout(padding, lock_words(kind, threads))[1])

    def _sync(self, kind: str, pages: int):
        """A stand-in lock or barrier of ``pages`` pages (what the drivers read of one)."""
        self.pages += pages
        return types.SimpleNamespace(kind=kind, name=f"{kind} stand-in",
                                     space=types.SimpleNamespace(uid=0, npages=pages))


@st.composite
def small_scenarios(draw):
    """A valid scenario of any kind with small sizes (matmul's block divides n; every
    lock and barrier kind and padding)."""
    kind = draw(st.sampled_from(sorted(DRIVERS)))
    n = draw(st.integers(2, 100))
    doc = {"cluster": {"nodes": draw(st.integers(2 if kind == "ping-pong" else 1, 4)),
                       "threads_per_node": draw(st.integers(1, 3))},
           "region": {"pages": draw(st.integers(1, 40))},
           "workload": {"kind": kind, "repeats": draw(st.integers(1, 4))}}
    if kind == "infault":
        doc["workload"]["form"] = draw(st.sampled_from(["multithreaded", "multiprogrammed"]))
    if kind == "matmul":
        doc["workload"].update(n=n, block=n)
    if kind in ("jacobi", "producer-consumer"):
        doc["workload"].update(steps=draw(st.sampled_from(["barrier", "run"])),
                               barrier=draw(st.sampled_from(["counter", "tree", "dissemination"])))
    if kind in ("lock", "barrier"):
        doc["workload"]["padding"] = draw(st.sampled_from(["page", "word"]))
        doc["workload"][kind] = draw(st.sampled_from(LOCK_KINDS if kind == "lock" else BARRIER_KINDS))
    return from_dict(doc)


class TestWindowPages:
    @given(s=small_scenarios())
    def test_equals_what_the_driver_allocates(self, s):
        """window_pages is exactly the pages every kind's driver allocates in one run."""
        ctx = AllocationCounter(s)
        with contextlib.suppress(AssertionError):  # jacobi checks results nothing computed
            DRIVERS[s["workload.kind"]](ctx, s)
        assert window_pages(s) == ctx.pages


class TestCheckWindow:
    def test_infault_larger_than_window_is_refused(self):
        """infault's pages × nodes × threads beyond the window is refused, naming both sizes and the keys."""
        with pytest.raises(ScenarioError) as info:
            from_dict({"cluster": {"nodes": 2, "threads_per_node": 4, "window_mib": 1}, "region": {"pages": 33}})
        assert str(info.value) == (
            "<string>: cluster.window_mib = 1: the window (1048576 bytes) is smaller than the workload's "
            "arrays: infault takes region.pages × cluster.nodes × cluster.threads_per_node = 33 × 2 × 4 = "
            "264 pages = 1081344 bytes; raise cluster.window_mib to at least 2, or lower region.pages, "
            "cluster.nodes, cluster.threads_per_node")

    @given(s=small_scenarios(), window_mib=st.integers(1, 3))
    def test_refused_exactly_when_the_arrays_do_not_fit(self, s, window_mib):
        """Any kind is refused exactly when its arrays need more than cluster.window_mib."""
        fits = window_pages(s) * 4096 <= window_mib << 20
        try:
            s.with_values({"cluster.window_mib": window_mib})
        except ScenarioError as exc:
            assert not fits and exc.key == "cluster.window_mib" and f"= {window_pages(s)} pages" in str(exc)
        else:
            assert fits

    def test_above_the_largest_window_names_the_keys_to_lower(self):
        """A footprint above the largest window says so and names only the keys to lower."""
        with pytest.raises(ScenarioError, match=r"above the largest window \(1048576 MiB\): lower "
                                                r"region.pages, cluster.nodes, cluster.threads_per_node$"):
            from_dict({"cluster": {"nodes": 64, "threads_per_node": 64, "window_mib": 1 << 20},
                       "region": {"pages": 1 << 20}})

    def test_false_sharing_counts_a_region_per_pass(self):
        """false-sharing's fresh region per pass counts (pages + 1) × repeats against the window."""
        with pytest.raises(ScenarioError, match=r"\(region.pages \+ 1\) × workload.repeats = \(255 \+ 1\) × 2 = "
                                                r"512 pages = 2097152 bytes; raise cluster.window_mib to at least 2"):
            from_dict({"cluster": {"window_mib": 1}, "region": {"pages": 255},
                       "workload": {"kind": "false-sharing", "repeats": 2}})


class TestCheckMachine:
    @given(s=small_scenarios(), machine=st.integers(1 << 16, 1 << 24))
    def test_refused_exactly_above_half_the_memory(self, s, machine):
        """Any scenario is refused exactly when its memory bound exceeds half the machine's memory."""
        total, _how = memory_bytes(s)
        try:
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr("tornado_dsm._scenario_config.physical_memory", lambda: machine)
                s.with_values({})
        except ScenarioError as exc:
            assert total > machine // 2 and f"may take {total} bytes" in str(exc)
            assert f"more than half ({machine // 2} bytes) of this machine's {machine} bytes" in str(exc)
        else:
            assert total <= machine // 2

    def test_shared_read_counts_a_copy_per_node(self, monkeypatch):
        """shared-read's bound is a copy of the region per node; the error names the keys to lower."""
        monkeypatch.setattr("tornado_dsm._scenario_config.physical_memory", lambda: 1 << 30)
        with pytest.raises(ScenarioError) as info:
            from_dict({"cluster": {"nodes": 4, "window_mib": 1024}, "region": {"pages": 40000},
                       "workload": {"kind": "shared-read"}})
        assert str(info.value) == (
            "<string>: region.pages = 40000: the run may take 655360000 bytes of memory (4 copies of the "
            "regions' 163840000 bytes), more than half (536870912 bytes) of this machine's 1073741824 bytes; "
            "lower region.pages, cluster.nodes, or set cluster.memory_per_node (bytes of frames per node)")

    def test_memory_per_node_caps_the_bound(self, monkeypatch):
        """memory_per_node bounds the frames, so the same scenario with a cap is accepted."""
        monkeypatch.setattr("tornado_dsm._scenario_config.physical_memory", lambda: 1 << 30)
        doc = {"cluster": {"nodes": 4, "memory_per_node": 1 << 20, "window_mib": 1024}, "region": {"pages": 40000},
               "workload": {"kind": "shared-read"}}
        assert memory_bytes(from_dict(doc)) == (4 * (1 << 20) + 163840000, "4 nodes × cluster.memory_per_node "
                                                "1048576 bytes of frames + 163840000 bytes of the swap of evicted pages")

    def test_uses_this_machines_memory(self):
        """The limit is this machine's physical memory (page size × physical pages)."""
        import os
        assert physical_memory() == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")



BASE_ACCEPTED = "expected a positive (nonzero) multiple of the page size (4096), e.g. 0x200000000000 (the default)"


class TestPlanRuns:
    @given(base=st.integers(-(1 << 20), 1 << 46).filter(lambda b: b <= 0 or b % 4096))
    def test_zero_negative_or_unaligned_base_is_refused(self, base):
        """Any base that is not a positive multiple of 4096 is refused, shown in hex."""
        with pytest.raises(ScenarioError) as info:
            plan_runs(from_dict({}), base)
        assert str(info.value) == f"<string>: --base = {hex(base)!r}: {BASE_ACCEPTED}"

    def test_windows_past_user_space_are_refused(self):
        """A base whose last combination's window would pass the end of user space is refused."""
        s = from_dict({"vary": {"nodes": [1, 2]}})
        with pytest.raises(ScenarioError) as info:
            plan_runs(s, 0x7FFF_0000_0000)
        assert str(info.value) == (
            "<string>: --base = '0x7fff00000000': the windows of the 2 run(s) would end at 0x800f04000000, "
            "past the end of user space (0x7ffffffff000); expected a base of at most 0x7feffbfff000")
        assert [b for _o, _s, b in plan_runs(s, 0x7FEF_FBFF_F000)] == [0x7FEF_FBFF_F000, 0x7FFF_FBFF_F000]

    def test_run_scenario_refuses_a_bad_base_before_start(self, no_start):
        """run_scenario(base=0) is a ScenarioError before any cluster starts."""
        with pytest.raises(ScenarioError, match="--base = '0x0'"):
            run_scenario(from_dict({}), base=0, progress=False)



class TestCheckCross:
    @given(nodes=st.integers(1, 64), tpn=st.integers(1, 64), pages=st.integers(1, 9))
    def test_false_sharing_refused_exactly_when_threads_outnumber_words(self, nodes, tpn, pages):
        """false-sharing is refused exactly when its threads outnumber the data pages' words (512 a page)."""
        doc = {"cluster": {"nodes": nodes, "threads_per_node": tpn}, "region": {"pages": pages},
               "workload": {"kind": "false-sharing"}}
        if pages * 512 < nodes * tpn:
            with pytest.raises(ScenarioError) as info:
                from_dict(doc)
            assert_names(info.value, "region.pages", pages, f"too few for false-sharing's {nodes * tpn} threads "
                         f"(cluster.nodes × cluster.threads_per_node), a word each, 512 a page; expected at least "
                         f"{-(-nodes * tpn // 512)}")
        else:
            assert from_dict(doc)["region.pages"] == pages


FILE_ACCEPTED = "expected a scenario file (UTF-8 TOML text) or the name of a shipped one (`tornado-dsm list`)"


class TestReadText:
    def test_directory_is_refused(self, tmp_path):
        """A directory given as FILE is a ScenarioError saying so, not an IsADirectoryError."""
        with pytest.raises(ScenarioError) as info:
            load(tmp_path)
        assert str(info.value) == f"{tmp_path}: (file) = {str(tmp_path)!r}: a directory; {FILE_ACCEPTED}"

    def test_binary_file_is_refused(self, tmp_path):
        """A file holding a NUL byte is refused as binary, naming the byte's offset and line."""
        path = tmp_path / "prog.toml"
        path.write_bytes(b"name = 'x'\n\x7fELF\x02\x00\x01")
        with pytest.raises(ScenarioError) as info:
            load(path)
        assert str(info.value).endswith(f"a binary file (a NUL byte at offset 16, line 2); {FILE_ACCEPTED}")

    @given(prefix=st.text(st.characters(codec="ascii", exclude_characters="\x00"), max_size=40),
           bad=st.integers(0x80, 0xFF))
    def test_non_utf8_file_is_refused(self, tmp_path_factory, prefix, bad):
        """Any file with a byte that is not UTF-8 is refused, naming the byte, its offset and line."""
        path = tmp_path_factory.mktemp("enc") / "latin.toml"
        data = prefix.encode() + bytes([bad]) + b" "
        path.write_bytes(data)
        with pytest.raises(ScenarioError) as info:
            load(path)
        assert info.value.key == "(file)" and str(info.value).endswith(
            f"not UTF-8 (byte {bad:#04x} at offset {len(prefix)}, line {prefix.count(chr(10)) + 1}); "
            f"{FILE_ACCEPTED}")

    def test_unreadable_path_is_refused(self, tmp_path):
        """A path that cannot be opened (a file used as a directory) names the OS's reason."""
        (tmp_path / "plain").write_text("")
        path = tmp_path / "plain" / "x.toml"
        with pytest.raises(ScenarioError) as info:
            load(path)
        assert str(info.value) == f"{path}: (file) = {str(path)!r}: cannot be read (Not a directory); {FILE_ACCEPTED}"

    def test_endless_file_is_refused(self):
        """A device that never ends (/dev/zero) is refused after a bounded read, not read forever."""
        with pytest.raises(ScenarioError, match=r"/dev/zero: \(file\) = '/dev/zero': larger than 1048576 bytes"):
            load("/dev/zero")


def cli_error(capsys, *argv: str) -> str:
    """Run the CLI, expect exit status 2 and return its one line of stderr."""
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err.rstrip("\n")


class TestCliRun:
    @pytest.mark.parametrize("command", ["run", "inspect"])
    def test_directory_exits_2(self, tmp_path, capsys, command):
        """run/inspect DIRECTORY exits 2 with one line naming the directory, no traceback."""
        err = cli_error(capsys, command, str(tmp_path))
        assert err == f"tornado-dsm: error: {tmp_path}: (file) = {str(tmp_path)!r}: a directory; {FILE_ACCEPTED}"

    def test_binary_file_exits_2(self, tmp_path, capsys):
        """run BINARY exits 2 with one line naming the file and the NUL byte."""
        path = tmp_path / "a.out"
        path.write_bytes(b"\x7fELF\x02\x01\x01\x00")
        assert cli_error(capsys, "run", str(path)).startswith(
            f"tornado-dsm: error: {path}: (file) = {str(path)!r}: a binary file (a NUL byte at offset 7, line 1)")

    def test_non_utf8_file_exits_2(self, tmp_path, capsys):
        """run LATIN-1-FILE exits 2 with one line naming the file and the byte."""
        path = tmp_path / "latin.toml"
        path.write_bytes("name = 'café'\n".encode("latin-1"))
        assert cli_error(capsys, "run", str(path)).startswith(
            f"tornado-dsm: error: {path}: (file) = {str(path)!r}: not UTF-8 (byte 0xe9 at offset 11, line 1)")


class TestCliRunBeforeStart:
    def test_memory_below_one_page_exits_2_before_start(self, tmp_path, capsys, no_start):
        """memory_per_node = 1 exits 2 with one line, before any node starts."""
        path = tmp_path / "mem.toml"
        path.write_text("[cluster]\nmemory_per_node = 1\n")
        assert cli_error(capsys, "run", str(path)) == (
            f"tornado-dsm: error: {path}: cluster.memory_per_node = 1: less than one page; "
            "expected 0 (no limit) or an integer of at least 4096 (one page)")

    def test_more_than_half_the_memory_exits_2_before_start(self, tmp_path, capsys, no_start):
        """A run that would take more than half of this machine's memory exits 2 before start."""
        machine = physical_memory()
        pages = min(1 << 20, machine // (64 * 4096) + 1)   # 64 copies of it: more than the whole machine
        if 64 * pages * 4096 <= machine // 2:
            pytest.skip("this machine has more memory than the largest shared-read can take")
        path = tmp_path / "big.toml"
        path.write_text(f"[cluster]\nnodes = 64\nwindow_mib = 1048576\n[region]\npages = {pages}\n"
                        "[workload]\nkind = \"shared-read\"\n")
        err = cli_error(capsys, "run", str(path))
        assert err.startswith(f"tornado-dsm: error: {path}: region.pages = {pages}: the run may take "
                              f"{64 * pages * 4096} bytes of memory (64 copies") and f"this machine's {machine} bytes" in err

    def test_larger_than_window_exits_2_before_start(self, tmp_path, capsys, no_start):
        """A workload larger than the window exits 2 with one line before any node starts."""
        path = tmp_path / "wide.toml"
        path.write_text("[cluster]\nwindow_mib = 1\n[region]\npages = 1000\n")
        assert cli_error(capsys, "run", str(path)).startswith(
            f"tornado-dsm: error: {path}: cluster.window_mib = 1: the window (1048576 bytes) is smaller")

    @pytest.mark.parametrize("base,shown", [("0", "0x0"), ("0x1001", "0x1001"), ("-4096", "-0x1000")])
    def test_bad_base_exits_2_before_start(self, capsys, no_start, base, shown):
        """--base 0, negative or unaligned exits 2 with one line before any node starts."""
        assert cli_error(capsys, "run", "quickstart", f"--base={base}").endswith(
            f"quickstart.toml: --base = {shown!r}: {BASE_ACCEPTED}")

    def test_base_not_a_number_is_an_argparse_error(self, capsys):
        """--base abc is argparse's usage error naming the option and the text."""
        with pytest.raises(SystemExit) as info:
            main(["run", "quickstart", "--base", "abc"])
        assert info.value.code == 2
        assert "tornado-dsm run: error: argument --base: invalid address value: 'abc'" in capsys.readouterr().err

    @pytest.mark.parametrize("option", ["--json", "--plot"])
    def test_output_in_missing_directory_exits_2_before_start(self, tmp_path, capsys, no_start, option):
        """--json/--plot in a directory that does not exist exits 2 before any node starts."""
        out = tmp_path / "missing" / "r.out"
        assert cli_error(capsys, "run", "quickstart", option, str(out)).endswith(
            f"quickstart.toml: {option} = {str(out)!r}: the directory {str(out.parent)!r} does not exist; "
            "expected a file path in an existing, writable directory")

    def test_output_under_a_file_exits_2_before_start(self, tmp_path, capsys, no_start):
        """--json under a plain file (not a directory) exits 2 before any node starts."""
        (tmp_path / "plain").write_text("")
        out = tmp_path / "plain" / "r.json"
        assert cli_error(capsys, "run", "quickstart", "--json", str(out)).endswith(
            f"--json = {str(out)!r}: {str(out.parent)!r} is not a directory; "
            "expected a file path in an existing, writable directory")

    def test_output_that_is_a_directory_exits_2_before_start(self, tmp_path, capsys, no_start):
        """--plot naming an existing directory exits 2 before any node starts."""
        assert cli_error(capsys, "run", "quickstart", "--plot", str(tmp_path)).endswith(
            f"--plot = {str(tmp_path)!r}: a directory; expected a file path in an existing, writable directory")
