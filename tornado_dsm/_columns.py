"""Text tables: right-aligned columns under a ruled header (the CLI's every table)."""

from __future__ import annotations


def ruled(head, rows) -> list[str]:
    """The lines of a table: ``head``, a rule of dashes as wide as each column,
    then ``rows``; every cell (a str) right-aligned to its column's widest."""
    rows = [list(head)] + [list(r) for r in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
    return lines[:1] + ["  ".join("-" * w for w in widths)] + lines[1:]
