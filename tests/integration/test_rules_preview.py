"""`segstream rules preview` against a worker's live state: exact, and what `rules apply
--reevaluate` then gives, segment by segment and user by user."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import orjson
import pytest
import requests

from streams.settings import default_rules_file
from streams.tools.embedded import free_port
from streams.tools.simulate import KafkaSink, send
from streams.tools.simulator import Simulation
from tests.integration.conftest import segstream, wait_for_events, wait_until_serving

pytestmark = pytest.mark.integration
TOKEN = {"Authorization": "Bearer t"}


def candidate_rules(path: Path) -> Path:
    """The default rules with one threshold loosened, one tightened, one horizon widened,
    one segment dropped and one added."""
    text = default_rules_file().read_text(encoding="utf-8")
    for old, new in (
        ('{feature: sessions_7d, op: ">=", value: 4}', '{feature: sessions_7d, op: ">=", value: 2}'),
        ('{feature: avg_order_value, op: "<", value: 50}', '{feature: avg_order_value, op: "<", value: 30}'),
        ('{feature: days_since_first_seen, op: "<=", value: 7}', '{feature: days_since_first_seen, op: "<=", value: 14}'),
    ):  # fmt: skip
        assert old in text
        text = text.replace(old, new)
    lapsed = text.index("  - name: Lapsed Customers")
    text = text[:lapsed] + text[text.index("  - name: Cart Abandoners") :]
    text += """
  - name: Mobile Shoppers
    description: Last seen on a phone.
    condition: {feature: last_device, op: "==", value: mobile}
"""
    path.write_text(text)
    return path


def test_the_preview_is_what_rules_apply_reevaluate_gives(config, model, start_worker, tmp_path):
    simulation = Simulation(users=400, seed=13)
    send(simulation, KafkaSink(config), rate=0, duration=0, limit=0, stop=threading.Event())
    worker = start_worker()
    wait_for_events(model, sum(1 for _ in simulation.events()))
    candidate = candidate_rules(tmp_path / "candidate.yaml")

    done = segstream(config, "rules", "preview", str(candidate), "--json", "--sample", "1000")
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)  # one object and nothing else on standard output
    assert report["users"] == 400
    assert report["current_rules"].startswith("file:")
    segments = {segment["name"]: segment for segment in report["segments"]}
    assert segments["Lapsed Customers"]["candidate"] == 0
    assert segments["Lapsed Customers"]["leaving"] == segments["Lapsed Customers"]["now"] > 0
    assert segments["Mobile Shoppers"]["now"] == 0
    assert segments["Mobile Shoppers"]["entering"] == segments["Mobile Shoppers"]["candidate"] > 0
    assert segments["Frequent Browsers"]["entering"] > 0
    assert segments["Bargain Hunters"]["leaving"] > 0
    before = {name: model.segment_members(name) for name in segments}
    for name, segment in segments.items():
        assert segment["now"] == len(before[name]), name
    unchanged = segstream(config, "rules", "preview", str(candidate), "--json")
    assert orjson.loads(unchanged.stdout)["segments"][0]["now"] == report["segments"][0]["now"]

    port = free_port()
    api = start_worker(config.model_copy(update={"api_port": port, "api_tokens": "t"}), "api")
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(f"{url}/readyz", api)

    def listed(version: str) -> dict[str, dict]:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            listing = requests.get(f"{url}/v1/segments", headers=TOKEN, timeout=5).json()
            if listing["rules_version"] == version:
                return {s["name"]: s for s in listing["segments"]}
            time.sleep(0.3)
        raise AssertionError(f"the API did not take rules {version}")

    def readiness(version: str) -> dict[str, bool]:
        """Whether each segment that waits for no model snapshot is ready."""
        return {n: s["ready"] for n, s in listed(version).items() if s["waiting_for"] is None}

    # no trainer runs here: the segment over p90(revenue_30d) waits for a model
    waiting = listed(report["current_rules"])["High-Value Recent Buyers"]
    assert (waiting["ready"], waiting["lacking"]) == (False, ["p90(revenue_30d)"])
    assert all(readiness(report["current_rules"]).values())
    published = segstream(config, "rules", "apply", str(candidate))  # without --reevaluate
    assert published.returncode == 0, published.stderr
    ready = readiness("v1")
    assert not ready["Mobile Shoppers"]
    assert not ready["Frequent Browsers"]
    assert ready["Cart Abandoners"]  # unchanged: its members are the same
    assert model.segment_members("Mobile Shoppers") == set()

    applied = segstream(config, "rules", "apply", str(candidate), "--reevaluate")
    assert applied.returncode == 0, applied.stderr
    worker.wait_for_log("reason=rules")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        sizes = {name: len(model.segment_members(name)) for name in segments}
        if all(sizes[name] == segment["candidate"] for name, segment in segments.items()):
            break
        time.sleep(0.5)
    for name, segment in segments.items():
        after = model.segment_members(name)
        assert len(after) == segment["candidate"], name
        assert sorted(after - before[name]) == sorted(segment["examples"]["entering"]), name
        assert sorted(before[name] - after) == sorted(segment["examples"]["leaving"]), name
    assert all(readiness("v2").values())
    assert worker.stop() == 0


def test_an_invalid_candidate_is_refused_with_line_and_field(config, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "segments:\n  - name: X\n    description: d\n    condition: {feature: nope, op: '>', value: 1}\n"
    )
    done = segstream(config, "rules", "preview", str(bad), "--json")
    assert done.returncode == 1
    assert done.stdout == ""
    assert "line 4, segments[0].condition.feature: unknown feature 'nope'" in done.stderr
