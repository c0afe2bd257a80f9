"""Scenario files: TOML parsing, validation, --set/--vary overrides, combinations.

A scenario is a TOML file with the sections [cluster], [policies], [region],
[workload] and [vary] (see docs/scenarios.md).  Every key is declared once in
KEYS with its type, default and accepted values, so validation, --set, --vary
and the reference page all agree.  Errors are `ScenarioError`s naming the
file, the key, the bad value and what is accepted.
"""

from __future__ import annotations

import difflib
import itertools
import math
import os
import tomllib
from pathlib import Path

import attrs

from tornado_dsm.kernel import PAGE
from tornado_dsm.objects import MANAGERS, MAX_NODES, MAX_PREFETCH, PROTOCOLS

from ._config import check_policies, check_region_policy
from ._barriers import KINDS as BARRIER_KINDS
from ._locks import KINDS as LOCK_KINDS
from ._syncspace import PADDINGS
from ._workloads import WORDS, footprint_formula, footprint_keys, memory_bytes, window_pages

KINDS = ("infault", "shared-read", "producer-consumer", "false-sharing", "ping-pong", "jacobi", "matmul",
         "lock", "barrier", "phases")


class ScenarioError(ValueError):
    """A bad scenario file or override: names the file, key, value and what is accepted."""

    def __init__(self, source: str, key: str, value, accepted: str) -> None:
        self.source, self.key, self.value, self.accepted = source, key, value, accepted
        shown = "(missing)" if value is _MISSING else repr(value)
        super().__init__(f"{source}: {key} = {shown}: {accepted}")


_MISSING = object()


@attrs.frozen
class Key:
    """One scenario key: its type, default and the check of its value."""

    type: type | tuple
    default: object
    accepted: str                  # what is accepted, in words (errors and docs)
    choices: tuple = ()            # allowed values, if a closed set
    low: float | None = None       # numeric lower bound (inclusive)
    high: float | None = None      # numeric upper bound (inclusive)
    kinds: tuple = KINDS           # workload kinds the key applies to
    doc: str = ""


def _int(default, low=None, high=None, doc="", kinds=KINDS):
    bound = f"from {low} to {high}" if high is not None else f"of at least {low}"
    return Key(int, default, f"an integer {bound}", low=low, high=high, doc=doc, kinds=kinds)


def _choice(default, choices, doc="", kinds=KINDS):
    return Key(str, default, "one of " + ", ".join(repr(c) for c in choices), choices=choices,
               doc=doc, kinds=kinds)


KEYS: dict[str, Key] = {
    "name": Key(str, "", "a string", doc="Scenario name (default: the file name without .toml)."),
    "description": Key(str, "", "a string", doc="One line shown by `tornado-dsm list`."),
    "cluster.nodes": _int(2, 1, MAX_NODES, "Node processes (node 0 is the tornado-dsm process)."),
    "cluster.threads_per_node": _int(1, 1, 64, "Threads running the workload on each node."),
    "cluster.protocol": _choice("ivy", PROTOCOLS,
                                "Coherence: IVY multiple readers/single writer, or migrate (one copy moves)."),
    "cluster.manager": _choice("dynamic", MANAGERS,
                               "IVY manager: one directory on node 0, page p on node p mod N, or probOwner hints."),
    "cluster.memory_per_node": Key(int, 0, f"0 (no limit) or an integer of at least {PAGE} (one page)", low=0,
                                   doc="Bytes of frames a node may hold (0: no limit)."),
    "cluster.window_mib": _int(64, 1, 1 << 20, "Size of the DSM window in MiB (every region must fit)."),
    "cluster.debug": Key(bool, False, "true or false", doc="Check IVY's invariants after every request (slow)."),
    "cluster.backend": _choice("default", ("default", "auto", "uffd", "mprotect"),
                               "Fault backend of every node: mprotect, uffd (userfaultfd: no map-count limit), "
                               "auto (uffd where allowed); default: $TORNADO_DSM_BACKEND, else auto."),
    "policies.process": Key(str, "per_node", "'per_node', 'singleton' or 'adaptive[:key=value,...]'",
                            doc="Process object: a rep per node, or one rep on node 0 (remote lookups), or "
                            "switched between the two by usage (README: adaptive); 'replicated' is read "
                            "as its old name for per_node."),
    "policies.region": Key(str, "per_node", "'per_node', 'singleton', 'group:k' (k from 1 to nodes) or "
                           "'adaptive[:key=value,...]'",
                           doc="Region objects: a rep per node, one on node 0, one per group of k nodes, "
                           "or switched between singleton and per_node by usage."),
    "region.pages": _int(16, 1, 1 << 20, "Pages of each region (what a page means depends on the kind)."),
    "region.backing": _choice("anonymous", ("anonymous", "file"),
                              "Zero-filled memory, or a real file read on first touch."),
    "region.path": Key(str, "", "a file path (empty: a temporary file per run)",
                       doc="File backing: the file (created and sized as needed)."),
    "region.prefetch": _int(0, 0, MAX_PREFETCH, "Pages a read fault that misses brings beyond the missing "
                            "one, from the same owner in the same reply (dynamic manager only)."),
    "workload.kind": _choice("infault", KINDS, "The built-in workload (see the table of kinds)."),
    "workload.form": _choice("multithreaded", ("multithreaded", "multiprogrammed"),
                             "infault: one shared region, or one region per thread.", kinds=("infault",)),
    "workload.pattern": _choice("sequential", ("sequential", "random", "strided"),
                                "Order in which a thread touches its pages.",
                                kinds=("infault", "shared-read", "producer-consumer")),
    "workload.stride": _int(2, 1, 1 << 20, "strided pattern: pages between touches (wraps around).",
                            kinds=("infault", "shared-read", "producer-consumer")),
    "workload.write_fraction": Key((float, int), 0.0, "a number from 0 to 1", low=0.0, high=1.0,
                                   kinds=("infault", "shared-read", "false-sharing", "ping-pong"),
                                   doc="Access mix: the fraction of touches that write (seeded)."),
    "workload.repeats": _int(3, 1, 1 << 20, "Measured passes (rounds, iterations; lock: contended passes "
                             "and FIFO probes)."),
    "workload.ops": _int(200, 1, 1 << 24, "Accesses per thread per pass (false-sharing, ping-pong); lock: "
                         "timed uncontended acquire+release pairs; barrier: episodes per pass.",
                         kinds=("false-sharing", "ping-pong", "lock", "barrier")),
    "workload.n": _int(64, 2, 4096, "matmul: matrix side (float64).", kinds=("matmul",)),
    "workload.block": _int(16, 1, 4096, "matmul: block side.", kinds=("matmul",)),
    "workload.seed": _int(1, 0, None, "Seed of every random choice (patterns, mixes, data)."),
    "workload.steps": _choice("barrier", ("barrier", "run"),
                              "jacobi, producer-consumer: 'barrier' runs every step in one Cluster.run "
                              "with a barrier between steps; 'run' makes each step a Cluster.run of its own "
                              "(the end of a run is the barrier).", kinds=("jacobi", "producer-consumer")),
    "workload.barrier": _choice("tree", BARRIER_KINDS,
                                "The barrier kind between steps (workload.steps = 'barrier'); barrier: "
                                "the barrier measured.", kinds=("jacobi", "producer-consumer", "barrier")),
    "workload.lock": _choice("mcs", LOCK_KINDS, "lock: the lock algorithm measured.", kinds=("lock",)),
    "workload.padding": _choice("page", PADDINGS, "lock, barrier: 'page' puts every word of the lock or "
                                "barrier on a page of its own, 'word' packs them 8 bytes apart (false "
                                "sharing).", kinds=("lock", "barrier")),
    "workload.seconds": Key((float, int), 0.3, "a number from 0.01 to 60", low=0.01, high=60.0,
                            kinds=("lock", "phases"), doc="lock: seconds of each contended pass (every "
                            "thread acquires until then); phases: seconds of each phase."),
    "workload.phases": Key(str, "read,churn", "a comma-separated list of 'read' and 'churn'",
                           kinds=("phases",), doc="phases: the phases in order (read: every node faults "
                           "in-core through the Region; churn: attach/detach on the Process)."),
}
SECTIONS = ("cluster", "policies", "region", "workload")


@attrs.frozen
class Scenario:
    """A validated scenario: ``values`` maps every dotted key to its value."""

    source: str                 # the file (or "<string>") the scenario came from
    values: dict                # dotted key -> value (defaults filled in)
    vary: tuple = ()            # ((dotted key or section, (value, ...)), ...)
    explicit: frozenset = frozenset()  # keys set in the file or by --set

    def __getitem__(self, key: str):
        return self.values[key]

    @property
    def name(self) -> str:
        """The scenario's name: its ``name`` key, else the file name without .toml."""
        return self.values["name"] or Path(self.source).stem

    def combinations(self) -> list[dict]:
        """One {dotted key: value} override per combination of [vary] (product order)."""
        if not self.vary:
            return [{}]
        combos = []
        for choice in itertools.product(*(values for _key, values in self.vary)):
            override: dict = {}
            for (key, _values), value in zip(self.vary, choice):
                override.update(_expand(key, value))
            combos.append(override)
        return combos

    def with_values(self, override: dict) -> "Scenario":
        """This scenario with ``override`` applied and checked (no vary)."""
        values = dict(self.values, **override)
        return check(Scenario(self.source, values, (), self.explicit | set(override)))


def _expand(key: str, value) -> dict:
    """A vary value: a table sets several keys of the section ``key``."""
    if isinstance(value, dict):
        return {f"{key}.{k}": v for k, v in value.items()}
    return {key: value}


# ---- loading ---------------------------------------------------------------------------

def load(path, sets=(), varies=()) -> Scenario:
    """Read, override and validate a scenario file.

    ``sets``: "key=value" strings (--set), ``varies``: "key=v1,v2" (--vary,
    replacing [vary] entries of the same key).  Raises ScenarioError.
    """
    path = str(path)
    try:
        doc = tomllib.loads(_read_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(path, "(syntax)", str(exc), "valid TOML (https://toml.io)") from None
    return from_dict(doc, path, sets, varies)


MAX_FILE_BYTES = 1 << 20  # a scenario is a few lines; more is the wrong file (or /dev/zero)
_FILE_ACCEPTED = "expected a scenario file (UTF-8 TOML text) or the name of a shipped one (`tornado-dsm list`)"


# The text of scenario file ``path``.  ScenarioError (key "(file)") if it is
# missing, a directory, unreadable, larger than MAX_FILE_BYTES, binary or not UTF-8.
def _read_text(path: str) -> str:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ScenarioError(path, "(file)", path, "no such file; `tornado-dsm list` shows the shipped ones") from None
    except IsADirectoryError:
        raise ScenarioError(path, "(file)", path, f"a directory; {_FILE_ACCEPTED}") from None
    except OSError as exc:
        raise ScenarioError(path, "(file)", path, f"cannot be read ({exc.strerror}); {_FILE_ACCEPTED}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ScenarioError(path, "(file)", path, f"larger than {MAX_FILE_BYTES} bytes; {_FILE_ACCEPTED}")
    return _decode(path, data)


# ``data`` as text; ScenarioError naming the first NUL byte (a binary file) or
# the first byte that is not UTF-8, with its offset and line.
def _decode(path: str, data: bytes) -> str:
    if b"\0" in data:
        at = data.index(b"\0")
        raise ScenarioError(path, "(file)", path, f"a binary file (a NUL byte at offset {at}, line "
                            f"{_line(data, at)}); {_FILE_ACCEPTED}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(path, "(file)", path, f"not UTF-8 (byte {data[exc.start]:#04x} at offset "
                            f"{exc.start}, line {_line(data, exc.start)}); {_FILE_ACCEPTED}") from None


# The 1-based line of byte offset ``at`` in ``data``.
def _line(data: bytes, at: int) -> int:
    return data.count(b"\n", 0, at) + 1


def from_dict(doc: dict, source: str = "<string>", sets=(), varies=()) -> Scenario:
    """Validate a parsed TOML document (see `load`)."""
    values, explicit = _flatten(doc, source)
    vary = dict(_parse_vary(doc.get("vary", {}), source))
    for text in sets:
        key, raw = _split_assignment(text, source, "--set")
        values[key] = _coerce(key, raw, source)
        explicit.add(key)
        vary.pop(key, None)
    for text in varies:
        key, raw = _split_assignment(text, source, "--vary")
        vary[key] = tuple(_coerce(key, part, source) for part in raw.split(","))
    values, vary = _new_names(values), {k: tuple(_new_names_in(k, v) for v in vs) for k, vs in vary.items()}
    scenario = check(Scenario(source, values, tuple(vary.items()), frozenset(explicit)))
    for override in scenario.combinations():  # every combination is checked before any runs
        scenario.with_values(override)
    return scenario


# Old names of values, read as the one name used everywhere else (inspect, reports).
OLD_VALUES = {"policies.process": {"replicated": "per_node"}}


def _new_names(values: dict) -> dict:
    return {k: OLD_VALUES.get(k, {}).get(v, v) if isinstance(v, str) else v for k, v in values.items()}


def _new_names_in(key: str, value):
    """A [vary] value with old names replaced (a section table: its keys' values)."""
    if isinstance(value, dict):
        return {k: _new_names({f"{key}.{k}": v})[f"{key}.{k}"] for k, v in value.items()}
    return _new_names({key: value})[key]


def _flatten(doc: dict, source: str) -> tuple[dict, set]:
    values = {k: key.default for k, key in KEYS.items()}
    explicit: set = set()
    for name, value in doc.items():
        if name == "vary":
            continue
        if name in SECTIONS:
            if not isinstance(value, dict):
                raise ScenarioError(source, name, value, "a table ([" + name + "])")
            for k, v in value.items():
                _known(f"{name}.{k}", v, source)
                values[f"{name}.{k}"] = v
                explicit.add(f"{name}.{k}")
        else:
            _known(name, value, source)
            values[name] = value
            explicit.add(name)
    return values, explicit


def _known(key: str, value, source: str) -> None:
    if key not in KEYS:
        section = key.split(".")[0] if "." in key else ""
        names = [k for k in KEYS if k.startswith(section + ".")] if section in SECTIONS else \
            [k for k in KEYS if "." not in k] + [f"[{s}]" for s in SECTIONS] + ["[vary]"]
        raise ScenarioError(source, key, value, _did_you_mean(key) + "unknown key; accepted: " + ", ".join(names))


def _natural(key: str) -> str | None:
    """The dotted key a natural spelling means: "region.policy" or "policy.region"
    -> "policies.region"; None if it names no key."""
    a, _, b = key.partition(".")
    for first, second in ((a, b), (b, a)):
        if second in ("policy", "policies") and f"policies.{first}" in KEYS:
            return f"policies.{first}"
    return None


def _did_you_mean(key: str) -> str:
    """"did you mean 'cluster.nodes'? " for a near miss of a key (or its last part), else ""."""
    names = list(KEYS) + sorted({k.rpartition(".")[2] for k in KEYS})
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.75)
    natural = _natural(key)
    if natural:
        return f"did you mean {natural!r}? "
    if not close:
        return ""
    found = close[0] if close[0] in KEYS else resolve_key(close[0], "", quiet=True) or close[0]
    return f"did you mean {found!r}? "


def resolve_key(key: str, source: str, quiet: bool = False) -> str:
    """The dotted key named by ``key`` ("nodes" -> "cluster.nodes" when unambiguous;
    natural spellings such as "region.policy" -> "policies.region").  ``quiet``:
    None instead of the error for an unknown or ambiguous key."""
    if key in KEYS or key in SECTIONS:
        return key
    matches = [k for k in KEYS if k.rpartition(".")[2] == key] or [k for k in (_natural(key),) if k]
    if len(matches) == 1:
        return matches[0]
    if quiet:
        return None
    raise ScenarioError(source, key, _MISSING if not matches else key,
                        _did_you_mean(key) + "unknown key; accepted: " + ", ".join(KEYS) if not matches
                        else "ambiguous; write one of " + ", ".join(matches))


def _split_assignment(text: str, source: str, option: str) -> tuple[str, str]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ScenarioError(source, option, text, "KEY=VALUE (e.g. nodes=2 or workload.pages=8)")
    return resolve_key(key.strip(), source), raw.strip()


def _coerce(key: str, raw: str, source: str):
    """A command-line string as the type of ``key`` (TOML syntax for numbers/booleans)."""
    spec = KEYS.get(key)
    if spec is None:
        raise ScenarioError(source, key, raw, f"--set/--vary take single keys, not the section [{key}]")
    if spec.type is str:
        return raw.strip("'\"")
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        raise ScenarioError(source, key, raw, spec.accepted) from None


def _parse_vary(vary, source: str):
    if not isinstance(vary, dict):
        raise ScenarioError(source, "vary", vary, "a table of key = [values]")
    for key, options in vary.items():
        if isinstance(options, dict):   # `policies.region = [...]` (dotted, unquoted) or [vary.policies]
            yield from _parse_vary({f"{key}.{k}": v for k, v in options.items()}, source)
            continue
        full = resolve_key(key, source)
        if not isinstance(options, list) or not options:
            raise ScenarioError(source, f"vary.{key}", options, "a non-empty list of values")
        if full in SECTIONS and not all(isinstance(o, dict) for o in options):
            hint = [k for k in KEYS if k.rpartition(".")[2] == full]
            raise ScenarioError(source, f"vary.{key}", options,
                                f"a list of tables of [{full}] keys, e.g. [{{...}}, {{...}}]"
                                + (f"; to vary one key write {hint[0]} = {options!r}" if hint else ""))
        yield full, tuple(options)


# ---- checking --------------------------------------------------------------------------

def check(scenario: Scenario) -> Scenario:
    """Check every value of ``scenario`` (types, ranges, choices, kind, cross-key rules)."""
    source, values = scenario.source, scenario.values
    for key, value in values.items():
        _known(key, value, source)
        _check_value(key, KEYS[key], value, source)
    kind = values["workload.kind"]
    for key in sorted(scenario.explicit):
        if kind not in KEYS[key].kinds and values[key] != KEYS[key].default:
            raise ScenarioError(source, key, values[key], f"does not apply to workload kind {kind!r}; "
                                f"it applies to {', '.join(KEYS[key].kinds)}")
    _check_cross(source, values)
    _check_memory(source, values)
    _check_window(source, values)
    _check_machine(source, values)
    return scenario


# Refuse a value of the wrong type, outside the choices or the range of ``spec``,
# or a float that is nan or infinite (nan compares false with every bound).
def _check_value(key: str, spec: Key, value, source: str) -> None:
    types = spec.type if isinstance(spec.type, tuple) else (spec.type,)
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        raise ScenarioError(source, key, value, f"wrong type {type(value).__name__}; expected {spec.accepted}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ScenarioError(source, key, value, f"not a finite number; expected {spec.accepted}")
    if spec.choices and value not in spec.choices:
        raise ScenarioError(source, key, value, f"expected {spec.accepted}")
    if spec.low is not None and value < spec.low or spec.high is not None and value > spec.high:
        raise ScenarioError(source, key, value, f"out of range; expected {spec.accepted}")


# Refuse values that are wrong only together with others.
def _check_cross(source: str, v: dict) -> None:
    region = v["policies.region"]
    try:
        check_region_policy(region, v["cluster.nodes"])
    except ValueError as exc:
        raise ScenarioError(source, "policies.region", region,
                            f"expected {KEYS['policies.region'].accepted}; "
                            f"group:k needs k from 1 to cluster.nodes ({v['cluster.nodes']}); {exc}") from None
    try:
        check_policies({"process": v["policies.process"]}, v["cluster.nodes"])
    except ValueError as exc:
        raise ScenarioError(source, "policies.process", v["policies.process"],
                            f"expected {KEYS['policies.process'].accepted}; {exc}") from None
    if v["workload.kind"] == "phases":
        _check_phases(source, v["workload.phases"])
    threads = v["cluster.nodes"] * v["cluster.threads_per_node"]
    if v["workload.kind"] == "false-sharing" and v["region.pages"] * WORDS < threads:
        raise ScenarioError(source, "region.pages", v["region.pages"],
                            f"too few for false-sharing's {threads} threads (cluster.nodes × cluster.threads_per_node),"
                            f" a word each, {WORDS} a page; expected at least {-(-threads // WORDS)}")
    if v["workload.kind"] == "ping-pong" and v["cluster.nodes"] < 2:
        raise ScenarioError(source, "cluster.nodes", 1, "ping-pong needs at least 2 nodes")
    if v["workload.kind"] == "matmul" and v["workload.n"] % v["workload.block"]:
        raise ScenarioError(source, "workload.block", v["workload.block"],
                            f"a divisor of workload.n ({v['workload.n']})")
    if v["region.prefetch"] and v["cluster.manager"] != "dynamic":
        raise ScenarioError(source, "region.prefetch", v["region.prefetch"],
                            f"0 with cluster.manager = {v['cluster.manager']!r}; prefetch needs 'dynamic'")
    if v["region.backing"] == "anonymous" and v["region.path"]:
        raise ScenarioError(source, "region.path", v["region.path"], "only with region.backing = 'file'")


# Refuse a workload.phases that names no phase or an unknown one.
def _check_phases(source: str, text: str) -> None:
    from ._workloads_phases import parse_phases
    try:
        parse_phases(text)
    except ValueError as exc:
        raise ScenarioError(source, "workload.phases", text, str(exc)) from None


# Refuse a memory limit below one page (a node could hold no frame at all).
def _check_memory(source: str, v: dict) -> None:
    if 0 < v["cluster.memory_per_node"] < PAGE:
        raise ScenarioError(source, "cluster.memory_per_node", v["cluster.memory_per_node"],
                            f"less than one page; expected {KEYS['cluster.memory_per_node'].accepted}")


MIB = 1 << 20


# Refuse a workload whose arrays do not fit the DSM window, naming the bytes both
# ways, the window the workload needs and the keys that would make it fit.
def _check_window(source: str, v: dict) -> None:
    need, window = window_pages(v) * PAGE, v["cluster.window_mib"] * MIB
    if need <= window:
        return
    most = KEYS["cluster.window_mib"].high
    fix = f"raise cluster.window_mib to at least {-(-need // MIB)}, or lower " if need <= most * MIB else \
        f"it is above the largest window ({most} MiB): lower "
    raise ScenarioError(source, "cluster.window_mib", v["cluster.window_mib"],
                        f"the window ({window} bytes) is smaller than the workload's arrays: "
                        f"{v['workload.kind']} takes {footprint_formula(v)} = {need // PAGE} "
                        f"pages = {need} bytes; {fix}{', '.join(footprint_keys(v))}")


# This machine's physical memory in bytes (what the memory check compares with).
def physical_memory() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


# Refuse a run that may take more than half of this machine's physical memory,
# naming both numbers, how the run's was counted and the keys that lower it.
def _check_machine(source: str, v: dict) -> None:
    machine, (total, how) = physical_memory(), memory_bytes(v)
    if total <= machine // 2:
        return
    keys = list(dict.fromkeys(footprint_keys(v) + ([] if v["workload.kind"] == "infault" else ["cluster.nodes"])))
    cap = ", or set cluster.memory_per_node (bytes of frames per node)" \
        if 2 * window_pages(v) * PAGE <= machine // 2 else ""
    raise ScenarioError(source, keys[0], v[keys[0]],
                        f"the run may take {total} bytes of memory ({how}), more than half ({machine // 2} "
                        f"bytes) of this machine's {machine} bytes; lower {', '.join(keys)}{cap}")
