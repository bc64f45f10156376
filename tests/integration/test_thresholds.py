"""A snapshot that moves a percentile threshold moves the users it passed over, and only
them, found by their values in the store's index, on a real broker and Redis."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import requests
from confluent_kafka import Producer

from processors.model import Cluster, ModelSnapshot, parse_snapshot
from state.model_store import ModelStore
from streams.redis_clients import redis_client
from streams.tools.embedded import free_port
from tests.integration.conftest import segstream, wait_until_serving
from tests.integration.test_timers import changes_of, send, track

pytestmark = pytest.mark.integration
T0 = datetime(2026, 10, 1, tzinfo=UTC).timestamp()
RULES = """
segments:
  - name: Big Spenders
    description: Spent at least the median of lifetime revenue.
    condition: {feature: revenue_lifetime, op: ">=", value: p50(revenue_lifetime)}
"""
COMPUTED_RULES = """
computed:
  spent: {event: Order Completed, aggregate: sum, of: properties.revenue, window: lifetime}
segments:
  - name: Big Spenders
    description: Spent at least the median of what users spent.
    condition: {computed: spent, op: ">=", value: p50(spent)}
"""


def snapshot(version: int, median: float, feature: str = "revenue_lifetime") -> bytes:
    """A snapshot of generation 1 whose median of `feature` is `median`."""
    return ModelSnapshot(
        version=version,
        generation=1,
        reason="initial" if version == 1 else "update",
        created_at=time.time(),
        features=("orders_lifetime",),
        mean=(1.0,),
        std=(1.0,),
        clusters=(Cluster(id="c1", name="all", centroid=(0.0,), share=1.0),),
        min_events=1,
        quantiles={feature: tuple(median * q / 50 for q in range(101))},
    ).to_json()


def publish(config, value: bytes) -> None:
    producer = Producer({"bootstrap.servers": config.kafka_bootstrap})
    producer.produce(config.models_topic, key=b"model", value=value)
    assert producer.flush(10) == 0


@pytest.mark.parametrize(
    ("rules", "feature"),
    [(RULES, "revenue_lifetime"), (COMPUTED_RULES, "computed.spent")],
    ids=["feature", "computed"],
)
def test_a_moved_percentile_relabels_the_users_between_the_thresholds(
    config, start_worker, model, tmp_path: Path, rules: str, feature: str
) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(rules)
    config = config.model_copy(update={"rules_file": rules_file})
    spenders = [f"u{n}" for n in range(1, 10)]  # u1 spent 10, …, u9 spent 90
    orders = [
        track(user, 1, "Order Completed", T0 + n, revenue=10.0 * (n + 1))
        for n, user in enumerate(spenders)
    ]
    worker = start_worker(config)
    port = free_port()
    api = start_worker(config.model_copy(update={"api_tokens": "t", "api_port": port}), "api")
    send(config, orders)
    deadline = time.monotonic() + 60
    while model.counters().get("events", 0) < len(orders):
        assert time.monotonic() < deadline
        time.sleep(0.2)

    # no snapshot yet: the segment says what it waits for, and so does the preview
    url = f"http://127.0.0.1:{port}/v1/segments"
    wait_until_serving(f"http://127.0.0.1:{port}/readyz", api)

    def segment() -> dict:
        listed = requests.get(url, headers={"Authorization": "Bearer t"}, timeout=10).json()
        [found] = listed["segments"]
        return found

    waiting = segment()
    threshold = f"p50({feature})"
    assert (waiting["ready"], waiting["waiting_for"], waiting["lacking"]) == (
        False,
        "model",
        [threshold],
    )
    preview = segstream(config, "rules", "preview", str(rules_file), "--json")
    [previewed] = orjson.loads(preview.stdout)["segments"]
    assert (previewed["waiting_for"], previewed["lacking"]) == ("model", [threshold])
    table = segstream(config, "rules", "preview", str(rules_file))
    assert "waits for a model" in table.stdout

    publish(config, snapshot(1, 45.0, feature))  # a first snapshot: everyone is re-evaluated
    worker.wait_for_log("users relabelled=9 reason=model")
    assert model.segment_members("Big Spenders") == {"u5", "u6", "u7", "u8", "u9"}
    stored = ModelStore(redis_client(config), config.key_layout())  # as the trainer keeps it
    stored.save(parse_snapshot(snapshot(1, 45.0, feature)), [])
    deadline = time.monotonic() + 30
    while segment()["waiting_for"] is not None:
        assert time.monotonic() < deadline, segment()
        time.sleep(0.2)
    assert (segment()["ready"], segment()["lacking"]) == (True, [])

    publish(config, snapshot(2, 75.0, feature))  # the median moves from 45 to 75
    worker.wait_for_log("model switched to=2 ")
    # only the users valued from 45 to 75 are read and evaluated again
    worker.wait_for_log("users relabelled=3 reason=model")
    assert model.segment_members("Big Spenders") == {"u8", "u9"}
    for user in ("u5", "u6", "u7"):
        last = changes_of(config, user)[-1]
        assert (last["exited"], last["reason"]) == (["Big Spenders"], "model")
    assert [c["version"] for c in changes_of(config, "u8")] == [1, 2]  # entered once, kept
    worker.stop()
