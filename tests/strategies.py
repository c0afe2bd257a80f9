"""Hypothesis strategies shared by the tests.  Each section names its users."""

from __future__ import annotations

from hypothesis import strategies as st

# ---- kernel (test_hat_machine, test_atomic) -------------------------------------

WINDOW_PAGES = 32
WORDS_PER_PAGE = 512  # int64 words

pages = st.integers(min_value=0, max_value=WINDOW_PAGES - 1)
words = st.integers(min_value=0, max_value=WORDS_PER_PAGE - 1)
values = st.integers(min_value=-(2**63), max_value=2**63 - 1)
protections = st.sampled_from([0, 1, 2])  # PROT_NONE, PROT_READ, PROT_WRITE


@st.composite
def page_runs(draw, npages: int = WINDOW_PAGES):
    """(first, count) of a non-empty run inside a window of npages."""
    first = draw(st.integers(min_value=0, max_value=npages - 1))
    count = draw(st.integers(min_value=1, max_value=min(8, npages - first)))
    return first, count
