"""The collector with Segment's own Python SDK as the client, on a real broker and Redis."""

from __future__ import annotations

import gzip
import os
import signal
import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import requests
from segment.analytics.client import Client

from streams.tools.embedded import free_port
from streams.tools.embedded.apache_kafka import running_kafka
from tests.integration.conftest import (
    read_topic,
    wait_for_events,
    wait_until_serving,
)

pytestmark = pytest.mark.integration


KEY = "wk-test"
T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


@pytest.fixture
def collector(config, start_worker):
    """A running collector (write key `wk-test`, 1 s ack timeout) and its base URL."""
    port = free_port()
    settings = config.model_copy(
        update={"write_keys": KEY, "collector_port": port, "ack_timeout_seconds": 1.0}
    )
    process = start_worker(settings, "collector")
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(f"{url}/readyz", process)
    return url


def sdk(url, key=KEY, **options):
    errors = []
    options.setdefault("max_retries", 0)
    client = Client(key, host=url, on_error=lambda error, _batch: errors.append(error), **options)
    return client, errors


def events_on_topic(settings):
    """What the collector produced: the events topic without the worker's own relays."""
    messages = read_topic(settings, settings.events_topic)
    return [(m.key(), orjson.loads(m.value())) for m in messages if not m.headers()]


def test_sdk_calls_become_profiles(config, collector, start_worker, model):
    start_worker()
    client, errors = sdk(collector, gzip=True)
    at = T0
    client.page(anonymous_id="anon-1", name="Home", timestamp=at)
    client.track(
        anonymous_id="anon-1",
        event="Product Viewed",
        properties={"product_id": "p1", "category": "shoes", "price": 20},
        timestamp=at + timedelta(minutes=1),
    )
    client.identify(user_id="ann", anonymous_id="anon-1", traits={"plan": "gold"}, timestamp=at)
    client.track(
        user_id="ann",
        event="Product Added",
        properties={"product_id": "p1", "category": "shoes", "price": 20, "quantity": 2},
        timestamp=at + timedelta(minutes=3),
    )
    client.track(
        user_id="ann",
        event="Order Completed",
        properties={"revenue": 40.0, "products": [{"product_id": "p1", "category": "shoes"}]},
        timestamp=at + timedelta(minutes=4),
    )
    client.screen(user_id="bob", name="Cart", timestamp=at)
    client.group(user_id="bob", group_id="g1", timestamp=at)
    client.alias(previous_id="anon-2", user_id="bob", timestamp=at)
    client.flush()
    # A second client, plain JSON, many events queued and sent in batches of 100.
    bulk, bulk_errors = sdk(collector, gzip=False, upload_size=100)
    for index in range(600):
        bulk.track(
            user_id=f"user-{index % 60}",
            event="Product Viewed",
            properties={"product_id": f"p{index}", "category": "hats"},
            timestamp=at + timedelta(seconds=index),
            message_id=f"bulk-{index}",
        )
    bulk.flush()
    assert errors == []
    assert bulk_errors == []

    counters = wait_for_events(model, 608, timeout=120)
    assert counters["events"] == 608
    assert counters.get("dead_letters", 0) == 0
    ann = model.user("anon-1")  # the anonymous id leads to the identified user
    assert ann["user_id"] == "ann"
    assert ann["features"]["orders_lifetime"] == 1.0
    assert ann["features"]["revenue_lifetime"] == 40.0
    assert ann["features"]["events_lifetime"] == 4.0  # identify calls are not behaviour
    assert model.user("user-7")["features"]["events_lifetime"] == 10.0

    produced = events_on_topic(config)
    assert len(produced) == 608
    for key, event in produced:
        assert key.decode() == (event.get("userId") or event["anonymousId"])
        assert event["receivedAt"].endswith("Z")
        assert event["messageId"]
        assert "writeKey" not in event
    bulk_ids = {
        event["messageId"] for _, event in produced if event.get("event") == "Product Viewed"
    }
    assert {f"bulk-{index}" for index in range(600)} <= bulk_ids


def test_bad_key_and_bad_bodies_are_refused_and_nothing_is_produced(config, collector):
    client, _errors = sdk(collector, key="not-a-key", sync_mode=True)
    with pytest.raises(Exception, match=r"401|unknown write key"):
        client.track(user_id="u1", event="Order Completed", timestamp=T0)
    post = requests.post

    def refused(path, body, status, text, **headers):
        answer = post(f"{collector}{path}", data=body, auth=(KEY, ""), headers=headers, timeout=5)
        assert answer.status_code == status, answer.text
        assert text in answer.json()["detail"], answer.json()

    event = {
        "type": "track",
        "userId": "u1",
        "event": "Product Viewed",
        "timestamp": T0.isoformat(),
    }
    no_key = post(f"{collector}/v1/track", json=event, timeout=5)
    assert no_key.status_code == 401
    assert no_key.headers["WWW-Authenticate"].startswith("Basic")
    refused("/v1/track", b'{"userId": "u1", "event": ', 400, "invalid JSON")
    refused("/v1/track", b'["not", "an", "object"]', 400, "expected a JSON object")
    refused("/v1/track", orjson.dumps({"event": "Product Viewed"}), 400, "neither userId")
    refused("/v1/batch", orjson.dumps({"batch": [event, {"type": "page"}]}), 400, "batch[1]")
    refused("/v1/batch", orjson.dumps({"batch": [{**event, "type": "buy"}]}), 400, "batch[0]: type")
    big = {**event, "properties": {"note": "x" * 33_000}}
    refused("/v1/track", orjson.dumps(big), 400, "over the limit of 32768")
    refused("/v1/batch", orjson.dumps({"batch": [big]}), 400, "batch[0]: event is")
    many = {"batch": [{**event, "properties": {"note": "x" * 20_000}}] * 26}
    refused("/v1/batch", orjson.dumps(many), 400, "over the limit of 512000")
    refused(
        "/v1/batch",
        gzip.compress(orjson.dumps(many)),
        400,
        "over the limit",
        **{"Content-Encoding": "gzip"},
    )
    refused(
        "/v1/track", b"\x1f\x8b not gzip", 400, "not valid gzip", **{"Content-Encoding": "gzip"}
    )

    # A batch of the largest allowed size, gzip-encoded, with the key in the body, goes through.
    fits = {
        "batch": [
            {**event, "messageId": f"m{i}", "properties": {"note": "x" * 19_000}} for i in range(25)
        ],
        "writeKey": KEY,
    }
    answer = post(
        f"{collector}/v1/batch",
        data=gzip.compress(orjson.dumps(fits)),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"success": True}
    assert [event["messageId"] for _, event in events_on_topic(config)] == [
        f"m{i}" for i in range(25)
    ]


def test_unacknowledged_events_get_503_and_the_collector_recovers(config, stack, collector):
    event = {
        "userId": "u1",
        "event": "Product Viewed",
        "timestamp": T0.isoformat(),
        "messageId": "frozen-1",
    }
    os.kill(stack.broker_pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        answer = requests.post(f"{collector}/v1/track", json=event, auth=(KEY, ""), timeout=10)
        waited = time.monotonic() - started
    finally:
        os.kill(stack.broker_pid, signal.SIGCONT)
    assert answer.status_code == 503, answer.text
    assert "did not acknowledge within 1 s" in answer.json()["detail"]
    assert answer.headers["Retry-After"] == "1"
    assert 1.0 <= waited < 5.0
    deadline = time.monotonic() + 60  # librdkafka reconnects with back-off
    while True:
        retried = requests.post(
            f"{collector}/v1/track",
            json={**event, "messageId": "thawed-1"},
            auth=(KEY, ""),
            timeout=10,
        )
        if retried.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert retried.status_code == 200, retried.text
    assert "thawed-1" in {event["messageId"] for _, event in events_on_topic(config)}


def test_a_collector_killed_while_sdk_clients_send_loses_nothing_acknowledged(
    config, start_worker, model
):
    port = free_port()
    settings = config.model_copy(update={"write_keys": KEY, "collector_port": port})
    url = f"http://127.0.0.1:{port}"
    collector = start_worker(settings, "collector")
    wait_until_serving(f"{url}/readyz", collector)
    start_worker(settings)
    clients = []
    for number in range(3):  # retrying clients, as trackers run them
        client, errors = sdk(url, upload_size=20, upload_interval=0.05, max_retries=10)
        clients.append((number, client, errors))
    total = 1_500
    for index in range(total):
        number, client, _ = clients[index % 3]
        client.track(
            user_id=f"user-{index % 50}",
            event="Product Viewed",
            properties={"product_id": f"p{index}"},
            timestamp=T0 + timedelta(seconds=index),
            message_id=f"c{number}-{index}",
        )
        if index == total // 3:
            collector.kill()  # mid-stream, requests in flight
            time.sleep(2)
            collector = start_worker(settings, "collector")
            wait_until_serving(f"{url}/readyz", collector)
        time.sleep(0.001)
    for _, client, errors in clients:
        client.flush()
        assert errors == []
    counters = wait_for_events(model, total, timeout=120)
    deadline = time.monotonic() + 60  # resent messages count as duplicates meanwhile
    while counters["events"] < total and time.monotonic() < deadline:
        time.sleep(0.2)
        counters = model.counters()
    assert counters["events"] == total  # each message once, resent ones as duplicates
    ids = {event["messageId"] for _, event in events_on_topic(settings)}
    assert {f"c{index % 3}-{index}" for index in range(total)} <= ids


def test_cors_preflights_and_every_answer_carry_the_origin_only_when_allowed(config, start_worker):
    port = free_port()
    settings = config.model_copy(
        update={
            "write_keys": KEY,
            "collector_port": port,
            "cors_origins": "https://shop.example, http://localhost:3000",
        }
    )
    process = start_worker(settings, "collector")
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(f"{url}/readyz", process)
    asked = "authorization,content-type,x-retry-count"
    for origin in ("https://shop.example", "http://localhost:3000"):
        preflight = requests.options(
            f"{url}/v1/t",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": asked,
            },
            timeout=5,
        )
        assert preflight.status_code == 200
        assert preflight.headers["Access-Control-Allow-Origin"] == origin
        assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
        assert preflight.headers["Access-Control-Allow-Headers"] == asked
        assert int(preflight.headers["Access-Control-Max-Age"]) >= 600
    # Every error answer is readable by the page too, with Retry-After exposed.
    shop = {"Origin": "https://shop.example", "Content-Type": "text/plain"}
    too_large = b" " * (settings.max_batch_bytes + 1)  # over a limit: 400, as Segment answers
    errors = [
        (400, requests.post(f"{url}/v1/t", data=b'{"userId": ', headers=shop, auth=(KEY, ""))),
        (400, requests.post(f"{url}/v1/batch", data=too_large, headers=shop, auth=(KEY, ""))),
        (401, requests.post(f"{url}/v1/t", data=b'{"userId": "u"}', headers=shop)),
        (404, requests.get(f"{url}/v1/projects/unknown-key/settings", headers=shop)),
    ]  # and 503: test_a_collector_started_before_its_broker_listens_and_answers_503_…
    for status, refused in errors:
        assert refused.status_code == status, refused.text
        assert refused.headers["Access-Control-Allow-Origin"] == "https://shop.example", status
        assert "Retry-After" in refused.headers["Access-Control-Expose-Headers"], status
    # Another origin learns nothing: no CORS header on its preflight or its answers.
    stranger = {"Origin": "https://evil.example"}
    denied = requests.options(
        f"{url}/v1/track",
        headers={**stranger, "Access-Control-Request-Method": "POST"},
        timeout=5,
    )
    answer = requests.get(f"{url}/v1/projects/{KEY}/settings", headers=stranger, timeout=5)
    for response in (denied, answer):
        assert not [name for name in response.headers if name.lower().startswith("access-control")]
    assert denied.status_code == 403


def test_every_path_and_body_form_of_the_sdks_is_taken(config, collector):
    def event(message_id, **extra):
        return {"userId": "u-forms", "event": "Product Viewed", "messageId": message_id, **extra}

    plain = {"Content-Type": "text/plain"}
    sent = [
        # Segment's browser SDK: short paths, text/plain, write key in the body.
        ("/v1/t", orjson.dumps({**event("f1"), "writeKey": KEY}), plain, None),
        (
            "/v1/p",
            orjson.dumps({"userId": "u-forms", "messageId": "f2", "writeKey": KEY}),
            plain,
            None,
        ),
        (
            "/v1/i",
            orjson.dumps({"userId": "u-forms", "messageId": "f3", "writeKey": KEY}),
            plain,
            None,
        ),
        (
            "/v1/s",
            orjson.dumps({"userId": "u-forms", "messageId": "f4", "writeKey": KEY}),
            plain,
            None,
        ),
        (
            "/v1/g",
            orjson.dumps({"userId": "u-forms", "messageId": "f5", "writeKey": KEY}),
            plain,
            None,
        ),
        (
            "/v1/a",
            orjson.dumps(
                {"userId": "u-forms", "previousId": "x", "messageId": "f6", "writeKey": KEY}
            ),
            plain,
            None,
        ),
        (
            "/v1/b",
            orjson.dumps({"batch": [{**event("f7"), "type": "track"}], "writeKey": KEY}),
            plain,
            None,
        ),
        # App SDKs' batch paths, with basic auth.
        ("/v1/import", orjson.dumps({"batch": [{**event("f8"), "type": "track"}]}), {}, (KEY, "")),
        ("/v1/batch", orjson.dumps({"batch": [{**event("f9"), "type": "track"}]}), {}, (KEY, "")),
        # RudderStack's beacon: the write key in the query string, only originalTimestamp.
        (
            f"/beacon/v1/batch?writeKey={KEY}",
            orjson.dumps(
                {
                    "batch": [
                        {
                            **event("f10"),
                            "type": "track",
                            "originalTimestamp": "2026-11-01T10:00:00.000Z",
                            "sentAt": "2026-11-01T10:00:02.000Z",
                        }
                    ]
                }
            ),
            plain,
            None,
        ),
    ]
    for path, body, headers, auth in sent:
        answer = requests.post(
            f"{collector}{path}", data=body, headers=headers, auth=auth, timeout=5
        )
        assert answer.status_code == 200, (path, answer.text)
    wrong = requests.post(
        f"{collector}/beacon/v1/batch?writeKey=nope", data=sent[-1][1], headers=plain, timeout=5
    )
    assert wrong.status_code == 401
    produced = {event["messageId"]: event for _, event in events_on_topic(config)}
    assert sorted(produced, key=lambda m: int(m[1:])) == [f"f{n}" for n in range(1, 11)]
    assert [produced[f"f{n}"]["type"] for n in range(1, 7)] == [
        "track",
        "page",
        "identify",
        "screen",
        "group",
        "alias",
    ]
    beaconed = produced["f10"]
    assert beaconed["originalTimestamp"] == "2026-11-01T10:00:00.000Z"
    received = datetime.fromisoformat(beaconed["receivedAt"])
    assert datetime.fromisoformat(beaconed["timestamp"]) == received - timedelta(seconds=2)


def test_a_collector_started_before_its_broker_listens_and_answers_503_until_it_comes(
    config, start_worker, tmp_path
):
    broker_port, port = free_port(), free_port()
    settings = config.model_copy(
        update={
            "kafka_bootstrap": f"127.0.0.1:{broker_port}",
            "write_keys": KEY,
            "collector_port": port,
        }
    )
    process = start_worker(settings, "collector")
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(f"{url}/healthz", process, timeout=30)
    event = {"userId": "early", "event": "Product Viewed", "messageId": "early-1"}
    time.sleep(9)  # as long as the collector of old wrote 176 lines of connection errors
    assert requests.get(f"{url}/readyz", timeout=5).status_code == 503
    page = {"Origin": "https://shop.example"}
    early = requests.post(f"{url}/v1/track", json=event, auth=(KEY, ""), headers=page, timeout=5)
    assert early.status_code == 503
    assert early.headers["Retry-After"] == "1"
    assert early.headers["Access-Control-Allow-Origin"] in ("*", "https://shop.example")
    assert "Retry-After" in early.headers["Access-Control-Expose-Headers"]
    logged = process.log.read_text().splitlines()
    assert len([line for line in logged if "kafka" in line.lower()]) <= 2, logged
    try:
        with running_kafka(tmp_path / "kafka", port=broker_port):
            wait_until_serving(f"{url}/readyz", process, timeout=60)
            late = requests.post(f"{url}/v1/track", json=event, auth=(KEY, ""), timeout=10)
            assert late.status_code == 200, late.text
            assert "kafka reachable" in process.log.read_text()
    finally:
        process.kill()
