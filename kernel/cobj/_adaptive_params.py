"""The parameters of the ``adaptive`` policy: their names, defaults and parsing.

A leaf module (no imports from the object system), so that ``_policy`` can parse
``adaptive:...`` without importing the monitor, which imports the swap protocol,
which imports ``_policy``.  The monitor itself is ``_adaptive``.
"""

from __future__ import annotations

import math

ADAPTIVE = "adaptive"
TARGETS = ("singleton", "per_node")
DEFAULTS = {"up": 200.0, "down": 20.0, "ratio": 2.0, "dwell": 0.5, "period": 0.1, "start": "singleton"}


def is_adaptive(text) -> bool:
    """Whether ``text`` names the adaptive policy, with or without parameters."""
    return isinstance(text, str) and (text == ADAPTIVE or text.startswith(ADAPTIVE + ":"))


def _usage(text: str) -> str:
    return (f"in policy {text!r}: expected 'adaptive' or 'adaptive:KEY=VALUE,...' with KEY one of "
            f"{', '.join(DEFAULTS)} (start: {' or '.join(TARGETS)}; the others numbers >= 0)")


def parse_params(text: str) -> tuple:
    """The (key, value) pairs ``adaptive[:key=value,...]`` gives, sorted; ValueError
    naming the bad one and what is accepted."""
    if text == ADAPTIVE:
        return ()
    given: dict = {}
    for item in text[len(ADAPTIVE) + 1:].split(","):
        key, sep, raw = (part.strip() for part in item.partition("="))
        if not sep or key not in DEFAULTS:
            raise ValueError(f"bad parameter {item!r} {_usage(text)}")
        if key in given:
            raise ValueError(f"parameter {key!r} given twice {_usage(text)}")
        given[key] = _value(text, key, raw)
    check_params(text, dict(DEFAULTS, **given))
    return tuple(sorted(given.items()))


def _value(text: str, key: str, raw: str):
    """One parameter's value: a policy name for ``start``, else a finite number >= 0."""
    if key == "start":
        if raw not in TARGETS:
            raise ValueError(f"start={raw!r} {_usage(text)}")
        return raw
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{key}={raw!r} is not a number {_usage(text)}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{key}={raw!r} {_usage(text)}")
    return value


def check_params(text: str, p: dict) -> None:
    """Refuse parameters without hysteresis (down >= up, ratio < 1) or a zero period."""
    if p["period"] <= 0:
        raise ValueError(f"period={p['period']:g} must be above 0 seconds {_usage(text)}")
    if p["down"] >= p["up"]:
        raise ValueError(f"down={p['down']:g} must be below up={p['up']:g} (the band between them "
                         f"is the hysteresis) {_usage(text)}")
    if p["ratio"] < 1:
        raise ValueError(f"ratio={p['ratio']:g} must be at least 1 {_usage(text)}")
