"""Rebalances under live load on Apache Kafka: four workers on sixteen partitions, each
restarted in turn (SIGTERM, started again), then one SIGKILLed.

The measurement is the bench's (:mod:`streams.tools.bench.rebalance`), at 2,000 events/s
(the bench runs it at half a worker's rate, about 45,000 here): a rate two cores keep up
with beside the other test file `make test` runs at the same time.
"""

from __future__ import annotations

import pytest

from streams.redis_clients import read_model
from streams.tools.bench.parts import Processes
from streams.tools.bench.rebalance import measure_rebalances
from tests.integration.conftest import isolated_settings

pytestmark = pytest.mark.integration


def test_a_rolling_restart_and_a_killed_worker_lose_nothing_and_pause_briefly(stack, tmp_path):
    settings = isolated_settings(stack, partitions=16)
    processes = Processes(tmp_path)
    try:
        figures = measure_rebalances(processes, settings, rate=2_000, workers=4)
    finally:
        processes.stop_all()
    counters = read_model(settings).counters()
    assert counters["events"] == figures.sent  # none lost, none applied twice
    assert counters.get("duplicates", 0) == 0
    assert counters.get("dead_letters", 0) == 0
    assert figures.restart_pause_p99_ms <= 2_000, figures
    assert figures.failover_seconds <= 15, figures
    for number in range(4):
        log = (tmp_path / f"{settings.redis_prefix}-rebalance-{number}.log").read_text()
        assert "group protocol=consumer" in log, log[-2000:]
