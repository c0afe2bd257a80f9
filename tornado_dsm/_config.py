"""Validation of Cluster arguments: every error names the value and what is accepted."""

from __future__ import annotations

from tornado_dsm.kernel import PAGE, is_adaptive, parse_policy
from tornado_dsm.objects import MANAGERS, MAX_NODES, PROTOCOLS

PROCESS_POLICIES = ("per_node", "singleton", "adaptive[:key=value,...]")
REGION_POLICIES = ("per_node", "singleton", "group:k", "adaptive[:key=value,...]")
DEFAULT_POLICIES = {"process": "per_node", "region": "per_node"}
OLD_NAMES = {"replicated": "per_node"}   # one name per policy everywhere; the old one still read


def _positive_int(name: str, value, limit: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1 or (limit and value > limit):
        bound = f"from 1 to {limit}" if limit else "of at least 1"
        raise ValueError(f"{name} must be an integer {bound}, not {value!r}")


def _one_of(name: str, value, accepted) -> None:
    if value not in accepted:
        raise ValueError(f"unknown {name} {value!r}; accepted: {', '.join(accepted)}")


def check_policies(policies, nodes: int) -> dict:
    """Policies with defaults filled in, in the COS's words (the old name
    "replicated" is read as per_node)."""
    policies = dict(DEFAULT_POLICIES, **(policies or {}))
    unknown = set(policies) - set(DEFAULT_POLICIES)
    if unknown:
        raise ValueError(f"unknown object in policies: {sorted(unknown)}; accepted: process, region")
    process = OLD_NAMES.get(policies["process"], policies["process"])
    if is_adaptive(process):
        parse_policy(process, nodes)   # its parameters, checked by the COS's own parser
    else:
        _one_of("process policy", process, PROCESS_POLICIES)
    region = policies["region"]
    check_region_policy(region, nodes)
    return {"process": process, "region": region}


def check_region_policy(text, nodes: int) -> None:
    """Refuse a Region policy other than per_node, singleton or group:k (1 <= k <= nodes);
    the group size and adaptive's parameters are parsed by the COS's own ``parse_policy``."""
    if text not in ("per_node", "singleton") and not is_adaptive(text) \
            and not (isinstance(text, str) and text.startswith("group:")):
        _one_of("region policy", text, REGION_POLICIES)   # raises, naming the accepted ones
    parse_policy(text, nodes)   # group:k: k from 1 to nodes


def check_cluster_args(nodes, threads_per_node, protocol, manager, policies, memory_per_node,
                       base, size) -> tuple[dict, int | None]:
    """Validate Cluster(...) arguments; returns (policies for the COS, frames per node or None)."""
    _positive_int("nodes", nodes, MAX_NODES)
    _positive_int("threads_per_node", threads_per_node)
    _one_of("protocol", protocol, PROTOCOLS)
    _one_of("manager", manager, MANAGERS)
    cos_policies = check_policies(policies, nodes)
    frames = None
    if memory_per_node is not None:
        _positive_int("memory_per_node (bytes)", memory_per_node)
        if memory_per_node < PAGE:
            raise ValueError(f"memory_per_node must be at least one page ({PAGE} bytes), not {memory_per_node}")
        frames = memory_per_node // PAGE
    for name, value in (("base", base), ("size", size)):
        if not isinstance(value, int) or value <= 0 or value % PAGE:
            raise ValueError(f"{name} must be a positive multiple of {PAGE}, not {value!r}")
    return cos_policies, frames


def check_timeout(name: str, value) -> float | None:
    """A timeout in seconds: None (no limit) or a finite number > 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ValueError(f"{name} must be None (no limit) or a finite number of seconds > 0, not {value!r}")
    return float(value)
