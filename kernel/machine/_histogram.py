"""Latency histograms in log2 buckets, the one form every layer reports.

Bucket 0 holds values under one unit; bucket b >= 1 holds [2**(b-1), 2**b)
units, so a value's bucket is ``int(value).bit_length()``: one C call on a
fast path.  PPCs count microseconds, faults nanoseconds.  A percentile is
reported as the upper edge of the bucket it falls in: an upper bound.
"""

from __future__ import annotations


def log2_percentile(hist, q: float) -> float:
    """Upper edge (in the histogram's unit) of the bucket holding quantile ``q`` (0..1); 0.0 if empty."""
    total = sum(hist)
    if total == 0:
        return 0.0
    rank, seen = q * total, 0
    for b, n in enumerate(hist):
        seen += n
        if seen >= rank:
            return float(1 << b)
    return float(1 << (len(hist) - 1))
