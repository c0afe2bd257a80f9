"""Scenario validation before any node starts: non-finite numbers, memory footprints,
memory_per_node, --base, output paths and unreadable scenario files (no cluster)."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tornado_dsm._scenario_config import KEYS, ScenarioError, from_dict, load

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
