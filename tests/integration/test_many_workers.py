"""Many workers: four on sixteen partitions, one SIGKILLed and one added mid-replay.

The history (`FAULT_EVENTS` events) and the comparison are the fault tests' (see
tests/integration/test_effectively_once.py); it runs on Apache Kafka.
"""

from __future__ import annotations

import pytest

from state.read_model import ReadModel
from streams.redis_clients import redis_client
from tests.integration.conftest import (
    FAULT_EVENTS,
    HISTORY_UNTIL,
    WorkerProcess,
    assert_matches_oracle,
    assert_same_profiles,
    export,
    isolated_settings,
    one_clean_run,
    replay_in_background,
    wait_for_events,
)

pytestmark = pytest.mark.integration


def test_four_workers_on_sixteen_partitions_one_killed_and_one_added(
    stack, history, tmp_path_factory
):
    """Many workers: four share sixteen partitions; one is SIGKILLed and a fifth joins
    mid-replay. The profiles are those of one worker alone on the same sixteen
    partitions, and every user's change versions run without gaps."""
    alone = isolated_settings(stack, partitions=16)
    reference = one_clean_run(alone, history, tmp_path_factory.mktemp("alone"))

    settings = isolated_settings(stack, partitions=16)
    logs = tmp_path_factory.mktemp("many")
    model = ReadModel(redis_client(settings), settings.key_layout())
    small_batches = settings.model_copy(update={"batch_max_events": 200})
    workers = [WorkerProcess(small_batches, logs / f"worker-{n}.log") for n in range(4)]
    for worker in workers:
        worker.wait_for_log("partitions assigned", timeout=120)
    replay = replay_in_background(settings, history, logs / "replay.log", rate=FAULT_EVENTS // 40)
    wait_for_events(model, FAULT_EVENTS // 4, timeout=300)
    workers[1].kill()
    added = WorkerProcess(small_batches, logs / "worker-4.log")
    added.wait_for_log("partitions assigned", timeout=120)
    assert model.counters()["events"] < FAULT_EVENTS * 9 // 10, "the stream drained before the join"
    assert replay.wait(600) == 0, (logs / "replay.log").read_text()
    for worker in [workers[0], *workers[2:], added]:
        assert worker.stop() == 0
    exported = export(settings)
    assert_same_profiles(exported, reference)
    assert_matches_oracle(settings, exported, history.read_bytes().splitlines(), HISTORY_UNTIL)
    for worker in [*workers, added]:
        assert "partitions assigned=" in worker.log.read_text()
