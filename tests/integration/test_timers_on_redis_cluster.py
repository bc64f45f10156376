"""Timers on a Redis Cluster of three masters: users lapse and abandon carts as event time
passes, and a commit that takes due timers leaves one entry each."""

from __future__ import annotations

import pytest

from tests.integration.test_timers import (  # the same tests, on the cluster
    test_lapsing_and_abandoning_happen_as_event_time_passes,
    test_taking_due_timers_then_rescheduling_or_dropping_them_leaves_one_entry_each,
)

pytestmark = [pytest.mark.integration, pytest.mark.redis_cluster]

__all__ = [
    "test_lapsing_and_abandoning_happen_as_event_time_passes",
    "test_taking_due_timers_then_rescheduling_or_dropping_them_leaves_one_entry_each",
]
