"""segstream on a Redis Cluster of three masters: workers killed mid-replay leave the profiles
of a clean run on one Redis, the trainer stores its snapshots, and a seed that is not what
`SEGSTREAM_REDIS_CLUSTER` says stops every process at start-up naming the setting."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from state.keys import KeyLayout
from tests.integration.conftest import (
    HISTORY_UNTIL,
    assert_counted_once,
    assert_matches_oracle,
    assert_same_profiles,
    export,
    isolated_settings,
    one_clean_run,
    replay_killing_the_worker,
    run_worker_and_trainer,
    segstream,
)

pytestmark = [pytest.mark.integration, pytest.mark.redis_cluster]


@pytest.fixture(scope="module")
def clean_run(embedded_stack, history, tmp_path_factory):
    """The reference export: one worker, one Redis, four partitions."""
    return one_clean_run(
        isolated_settings(embedded_stack), history, tmp_path_factory.mktemp("clean")
    )


def test_workers_killed_five_times_on_a_cluster_leave_the_profiles_of_a_clean_run(
    config, start_worker, history, clean_run, tmp_path, model, redis_cluster
):
    replay_killing_the_worker(config, start_worker, history, model, tmp_path / "replay.log", 11)
    exported = export(config)
    assert_same_profiles(exported, clean_run)
    assert_matches_oracle(config, exported, history.read_bytes().splitlines(), HISTORY_UNTIL)
    assert_counted_once(model, history)
    assert model.counters()["timers_fired"] > 0  # `replay --until` moved every watermark past them
    # Every master holds some partitions' keys.
    keys = KeyLayout(config.redis_prefix, config.events_topic)
    owners = {model.client.keyslot(keys.tag(partition)) for partition in range(config.partitions)}
    nodes = {model.client.nodes_manager.get_node_from_slot(slot).port for slot in owners}
    assert len(nodes) > 1, f"the partitions' keys all landed on {nodes}"
    assert set(nodes) <= set(redis_cluster.ports)


def test_the_trainer_and_a_worker_run_on_a_cluster(config, start_worker):
    early = {"cluster_min_users": 20, "cluster_k_max": 4, "snapshot_seconds": 1}
    run_worker_and_trainer(config.model_copy(update=early), start_worker)


def test_a_seed_that_is_not_what_the_setting_says_stops_every_process(config, embedded_stack):
    plain = config.model_copy(update={"redis_url": embedded_stack.redis_url})
    unset = config.model_copy(update={"redis_cluster": False, "api_tokens": "tok-1"})
    runs = [(plain, command) for command in (["worker"], ["profile", "ann"], ["migrate"])]
    runs += [(unset, command) for command in (["worker"], ["profile", "ann"], ["api"])]
    with ThreadPoolExecutor(len(runs)) as pool:  # each waits on its own start-up
        results = list(pool.map(lambda run: segstream(run[0], *run[1], timeout=120), runs))
    for (settings, command), done in zip(runs, results, strict=True):
        assert done.returncode == 1, command
        if settings is plain:
            assert "SEGSTREAM_REDIS_CLUSTER=true, but SEGSTREAM_REDIS_URL" in done.stderr
            assert "is a Redis without cluster mode" in done.stderr
        else:
            assert "is a node of a Redis Cluster: set SEGSTREAM_REDIS_CLUSTER=true" in done.stderr
