"""Sliding windows: the cached running sums always equal a fresh sum over the buckets."""

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.windows import SlidingCounts

operations = st.lists(
    st.tuples(st.sampled_from(["add", "window", "prune"]), st.integers(0, 60 * 3600)),
    max_size=60,
)


def trimmed(totals):
    while totals and not totals[-1]:
        totals = totals[:-1]
    return totals


@settings(max_examples=300, deadline=None)
@given(operations)
def test_running_sums_equal_fresh_sums_after_any_adds_reads_and_prunes(steps):
    counts = SlidingCounts(width=3600, span=24)
    clock = 0
    for operation, moment in sorted(steps, key=lambda step: step[1]):
        clock = max(clock, moment)
        if operation == "add":
            counts.add(moment, slot=moment % 3)
        elif operation == "prune":
            counts.prune(clock)
        for buckets in (1, 7, 24):
            fresh = SlidingCounts(3600, 24, dict(counts.buckets)).window(clock, buckets)
            assert trimmed(counts.window(clock, buckets)) == trimmed(fresh)
