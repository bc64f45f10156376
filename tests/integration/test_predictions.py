"""Predictions on a real broker and Redis: shoppers' events through a worker (SIGKILLed on
the way) and the trainer, every labelled example as the oracle gives it and learned once,
the predictions ungated, and a rule on `purchase_30d` that places users."""

from __future__ import annotations

import random
import time
from collections import Counter
from datetime import UTC, datetime

import orjson
import pytest
import requests

from processors._core import PREDICTION_HORIZON_DAYS, PREDICTIONS
from processors.examples import unpack_examples
from processors.model import ModelSnapshot, PredictionQuality
from state.model_store import ModelStore
from streams.redis_clients import read_model, redis_client
from streams.rules_feed import load_rules
from streams.settings import Settings
from streams.tools.embedded import free_port
from streams.tools.replay import wait_until_applied
from streams.tools.simulate import KafkaSink
from streams.tools.simulator import SimulatedEvent
from tests import oracle
from tests.integration.conftest import (
    advance,
    read_topic,
    segstream,
    wait_for_events,
    wait_for_settled_model,
    wait_until_serving,
)

pytestmark = pytest.mark.integration

DAY = 86_400
START = 1_780_000_000 - 1_780_000_000 % DAY
RULES = """
segments:
  - name: Likely Buyers
    description: at least an even chance of an order within 30 days
    condition: {prediction: purchase_30d, op: ">=", value: 0.5}
  - name: Top Odds
    description: the top quarter of the users by their chance of an order within 30 days
    condition: {prediction: purchase_30d, op: ">=", value: p75(purchase_30d)}
"""


def shoppers(count: int, seed: int, first_day: int, last_day: int) -> list[SimulatedEvent]:
    """Steady buyers, occasional buyers, browsers who never buy, and buyers who lapse after
    day 40, visiting from `first_day` to `last_day` (days after `START`)."""
    rng = random.Random(seed)
    found = []
    for index in range(count):
        user, kind = f"s{index:03d}", index % 4
        every, buys = [(6, 0.6), (15, 0.25), (4, 0.0), (5, 0.5)][kind]
        moment = START + first_day * DAY + rng.uniform(0, 5 * DAY)
        number = 0
        while moment < START + last_day * DAY:
            if kind == 3 and moment > START + 40 * DAY:
                break
            body: dict = {"userId": user, "messageId": f"{user}-{first_day}-{number}"}
            body["timestamp"] = datetime.fromtimestamp(int(moment), UTC).isoformat()
            if rng.random() < buys:
                revenue = round(rng.uniform(10, 200), 2)
                body |= {"type": "track", "event": "Order Completed"}
                body["properties"] = {"revenue": revenue}
            else:
                body["type"] = "page"
            found.append(SimulatedEvent(moment, user.encode(), orjson.dumps(body)))
            number += 1
            moment += rng.expovariate(1 / (every * DAY))
    return sorted(found, key=lambda event: event.timestamp)


def send(settings: Settings, events: list[SimulatedEvent]) -> None:
    sink = KafkaSink(settings)
    for event in events:
        sink.write(event)
    sink.close()


def expected_examples(
    events: list[SimulatedEvent], until: int
) -> dict[tuple[str, str, int], float]:
    """Every example the oracle labels by `until`, with its label."""
    people = oracle.people(oracle.read(event.value) for event in events)
    found = {}
    for user_id, mine in people.items():
        first = int(min(event.timestamp for event in mine))
        for day in range(first // DAY + 1, until // DAY + 1):
            for name, horizon in zip(PREDICTIONS, PREDICTION_HORIZON_DAYS, strict=True):
                if oracle.labelled_on(day + horizon) * DAY <= until:
                    found[(user_id, name, day)] = oracle.label(name, mine, day)
    return found


def wait_for_quality(settings: Settings, timeout: float = 240) -> PredictionQuality:
    """The quality of `purchase_30d` once a settled snapshot scored examples."""
    store = ModelStore(redis_client(settings), settings.key_layout())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        latest = store.latest()
        model = None if latest is None else latest.predictions.get("purchase_30d")
        if model is not None and model.quality is not None and model.quality.examples >= 300:
            return model.quality
        time.sleep(0.5)
    raise AssertionError("no quality figures")


def wait_for_learned(settings: Settings, wanted: int, timeout: float = 240) -> ModelSnapshot:
    """The first snapshot whose `purchase_30d` learned `wanted` labelled examples."""
    store = ModelStore(redis_client(settings), settings.key_layout())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        latest = store.latest()
        model = None if latest is None else latest.predictions.get("purchase_30d")
        if model is not None and model.positives + model.negatives >= wanted:
            assert latest is not None
            return latest
        time.sleep(0.5)
    raise AssertionError(f"the trainer did not learn {wanted} purchase examples")


def test_examples_are_labelled_as_the_oracle_says_learned_once_and_predictions_place_users(
    config, start_worker, tmp_path
):
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    settings = config.model_copy(
        update={
            "predictions": True,
            "rules_file": rules,
            "snapshot_seconds": 2,
            "cluster_min_users": 40,
            "trainer_web_port": free_port(),
            "api_tokens": "tok",
            "api_port": free_port(),
        }
    )
    history = shoppers(120, seed=4, first_day=0, last_day=150)
    send(settings, history)
    worker = start_worker(settings)
    wait_for_events(read_model(settings), len(history) // 3, timeout=180)
    worker.kill()  # mid-stream: its batch is done again by the next worker
    worker = start_worker(settings)
    trainer = start_worker(settings, command="trainer")
    until = START + 150 * DAY + 6 * 3_600
    wait_until_applied(settings, advance(settings, until), timeout=240)

    # Every example the oracle labels is on the topic, with its label; none other.
    expected = expected_examples(history, until)
    published = [
        example
        for message in read_topic(settings, settings.examples_topic)
        for example in unpack_examples(message.value())
    ]
    labels: dict[tuple[str, str, int], set[float]] = {}
    for example in published:  # a batch done again publishes its examples again
        labels.setdefault(example.key, set()).add(example.label)
    assert {key: found.pop() for key, found in labels.items() if len(found) == 1} == expected
    assert all(e.matured * DAY <= until for e in published)  # none before its horizon

    # The trainer learned each once, and the predictions are scored.
    purchases = Counter(
        label > 0 for (_, name, _), label in expected.items() if name == "purchase_30d"
    )
    snapshot = wait_for_learned(settings, purchases[True] + purchases[False])
    learned = snapshot.predictions["purchase_30d"]
    assert (learned.positives, learned.negatives) == (purchases[True], purchases[False])
    assert learned.ready
    worker.wait_for_log(f"model switched to={snapshot.version} ", timeout=60)

    # Examples taken from now on carry the predictions made, which the quality scores.
    later = shoppers(120, seed=5, first_day=150, last_day=190)
    send(settings, later)
    until = START + 190 * DAY + 6 * 3_600
    wait_until_applied(settings, advance(settings, until), timeout=240)
    quality = wait_for_quality(settings)
    assert quality.auc is not None
    assert quality.auc > 0.7, quality
    snapshot = wait_for_settled_model(settings)  # so that labels and reads use the same
    worker.wait_for_log(f"model switched to={snapshot.version} ", timeout=60)

    # The read API shows the quality and each user's predictions as scored now.
    api = start_worker(settings, command="api")
    url = f"http://127.0.0.1:{settings.api_port}"
    wait_until_serving(f"{url}/readyz", api)
    headers = {"Authorization": "Bearer tok"}
    shown = requests.get(f"{url}/v1/predictions", headers=headers, timeout=5).json()
    purchase = next(p for p in shown["predictions"] if p["name"] == "purchase_30d")
    assert purchase["scored"]
    assert purchase["quality"]["examples"] >= 300
    user = requests.get(
        f"{url}/v1/users/s000", params={"features": "true"}, headers=headers, timeout=5
    ).json()
    assert user["predictions"]["purchase_30d"] is not None
    assert ("Likely Buyers" in user["segments"]) == (user["predictions"]["purchase_30d"] >= 0.5)
    api.stop()

    # The evaluation report has a section on the predictions, with its two plots.
    report = tmp_path / "evaluation"
    evaluated = segstream(settings, "evaluate", "--output", str(report), timeout=120)
    assert evaluated.returncode == 0, evaluated.stderr
    text = (report / "report.md").read_text()
    assert "## Predictions" in text
    assert "| purchase_30d | scored |" in text
    for plot in ("predictions-calibration.png", "predictions-lift.png"):
        assert (report / plot).read_bytes().startswith(b"\x89PNG"), plot

    # The rule places users as the model in force scores them.
    worker.wait_for_log(f"model switched to={snapshot.version} ", timeout=60)
    time.sleep(1)
    documents = list(read_model(settings, load_rules(settings)).users())
    top = snapshot.percentile("prediction.purchase_30d", 75)
    assert top is not None  # the trainer's sample of users gives it
    placed = Counter()
    for document in documents:
        probability = document["predictions"]["purchase_30d"]
        assert probability is not None
        inside = "Likely Buyers" in document["segments"]
        assert inside == (probability >= 0.5), document["user_id"]
        assert ("Top Odds" in document["segments"]) == (probability >= top), document["user_id"]
        placed.update(document["segments"])
    assert 0 < placed["Likely Buyers"] < len(documents)
    assert 0 < placed["Top Odds"] < len(documents)

    # The preview scores a candidate's predictions with the model in force: a lower bar
    # brings in exactly the users between the two.
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(RULES.replace("value: 0.5}", "value: 0.3}"))
    previewed = segstream(settings, "rules", "preview", str(candidate), "--json")
    assert previewed.returncode == 0, previewed.stderr
    segments = {s["name"]: s for s in orjson.loads(previewed.stdout)["segments"]}
    between = [d for d in documents if 0.3 <= d["predictions"]["purchase_30d"] < 0.5]
    likely = segments["Likely Buyers"]
    assert (likely["now"], likely["entering"], likely["leaving"]) == (
        placed["Likely Buyers"],
        len(between),
        0,
    )
    assert segments["Top Odds"]["entering"] == segments["Top Odds"]["leaving"] == 0
    changes = [orjson.loads(m.value()) for m in read_topic(settings, settings.changes_topic)]
    assert any(c["reason"] == "model" and "Likely Buyers" in c["entered"] for c in changes), (
        "no user entered with a model"
    )
    assert trainer.stop() == 0
    assert worker.stop() == 0
