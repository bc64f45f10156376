"""The read API on a real broker and Redis: lookups, segment listings, pagination, erasure."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import requests

from processors.model import Cluster, ModelSnapshot
from state.model_store import ModelStore
from state.read_model import ReadModel
from state.timer_store import timer_shard
from streams.kafka import reliable_producer
from streams.redis_clients import redis_client
from streams.settings import Settings
from streams.tools.embedded import free_port
from tests.integration.conftest import (
    WorkerProcess,
    isolated_settings,
    read_topic,
    wait_for_events,
    wait_until_serving,
)

pytestmark = pytest.mark.integration
T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
VISITORS = 250


def event(user_id, kind, at, **fields):
    body = {"userId": user_id, "timestamp": (T0 + at).isoformat(), "messageId": f"{user_id}-{at}"}
    if kind == "page":
        body["type"] = "page"
    else:
        body.update(type="track", event=kind)
    return body | fields


@dataclass(frozen=True)
class Served:
    """The read API over one worker's state: its URL, settings and store."""

    url: str
    config: Settings
    model: ReadModel


@pytest.fixture(scope="module")
def served(stack, tmp_path_factory) -> Iterator[Served]:
    """A worker that has taken in 250 new visitors and one repeat customer, and the API; for
    the whole file (the erasure test, which changes the state, comes last)."""
    config = isolated_settings(stack)
    model = ReadModel(redis_client(config), config.key_layout())
    logs = tmp_path_factory.mktemp("api")
    # on each user's canonical partition, as the SDK's collector sends them: forwarded events
    # would be judged against their partition's watermark in whatever order relays arrive
    producer = reliable_producer(config)
    events = [event(f"visitor-{i:03d}", "page", timedelta(seconds=i)) for i in range(VISITORS)]
    events += [
        {"type": "page", "anonymousId": "anon-1", "timestamp": T0.isoformat(), "messageId": "a1"},
        {
            "type": "identify",
            "userId": "ann",
            "anonymousId": "anon-1",
            "timestamp": (T0 + timedelta(minutes=1)).isoformat(),
            "messageId": "i1",
        },
        event("ann", "Order Completed", timedelta(minutes=2), properties={"revenue": 10}),
        event("ann", "Order Completed", timedelta(days=1), properties={"revenue": 20}),
        event("ann", "Order Completed", timedelta(days=2), properties={"revenue": 20}),
        event("ann", "Product Added", timedelta(days=2, minutes=4), properties={"price": 5}),
    ]
    for body in events:
        key = body.get("userId") or body["anonymousId"]
        producer.produce(config.events_topic, key=key.encode(), value=orjson.dumps(body))
    assert producer.flush(30) == 0
    worker = WorkerProcess(config, logs / "worker.log")
    port = free_port()
    settings = config.model_copy(update={"api_tokens": "tok-1, tok-2", "api_port": port})
    api = WorkerProcess(settings, logs / "api.log", "api")
    try:
        wait_for_events(model, len(events))
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(f"{url}/readyz", api)
        yield Served(url, config, model)
    finally:
        for process in (api, worker):
            if process.process.poll() is None:
                process.kill()


@pytest.fixture
def api(served: Served) -> str:
    return served.url


def get(url, token="tok-2", **params):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(url, headers=headers, params=params, timeout=5)


def test_every_route_needs_a_known_token(api):
    """Each operation of the OpenAPI document, `DELETE /v1/users/{id}` and the segment
    routes among them, answers 401 without a token, with an unknown one and with a known one
    misspelt, and nothing is done."""
    schema = requests.get(f"{api}/openapi.json", timeout=5).json()
    operations = [(path, method) for path, item in schema["paths"].items() for method in item]
    assert ("/v1/users/{user_id}", "delete") in operations
    for path, method in operations:
        url = api + path.format(user_id="ann", name="Buyers")
        for token in (None, "tok-3", "tok-1x"):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            body = SPENDERS if method == "post" else None
            answer = requests.request(method, url, headers=headers, data=body, timeout=30)
            assert answer.status_code == 401, (method, path, token, answer.status_code)
            assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert get(f"{api}/v1/users/ann", "tok-1").status_code == 200  # not erased
    assert set(schema["paths"]) == {
        "/v1/users/{user_id}",
        "/v1/segments",
        "/v1/segments/{name}/members",
        "/v1/rules/preview",
        "/v1/predictions",
    }
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_a_user_s_labels_features_and_merged_ids(api):
    ann = get(f"{api}/v1/users/ann").json()
    assert ann["user_id"] == "ann"
    assert "Bargain Hunters" in ann["segments"]
    assert ann["version"] >= 1
    assert ann["rules_version"]
    assert ann["features"] is None
    with_features = get(f"{api}/v1/users/ann", features="true").json()
    assert with_features["features"]["orders_lifetime"] == 3.0
    assert with_features["features"]["revenue_lifetime"] == 50.0
    assert get(f"{api}/v1/users/anon-1").json()["user_id"] == "ann"
    missing = get(f"{api}/v1/users/nobody")
    assert missing.status_code == 404
    assert "nobody" in missing.json()["detail"]


def test_segments_and_their_members_page_by_page(api, served):
    model = served.model
    listing = get(f"{api}/v1/segments").json()
    sizes = {segment["name"]: segment["size"] for segment in listing["segments"]}
    assert len(sizes) == 6
    assert sizes["New Visitors"] == VISITORS
    assert sizes == {name: model.segment_sizes().get(name, 0) for name in sizes}
    visitors = next(s for s in listing["segments"] if s["name"] == "New Visitors")
    assert visitors["condition"]["all"][0]["feature"] == "days_since_first_seen"

    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 40} | ({"cursor": cursor} if cursor else {})
        page = get(f"{api}/v1/segments/New Visitors/members", **params).json()
        assert len(page["members"]) <= 40
        seen += page["members"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == [f"visitor-{i:03d}" for i in range(VISITORS)]
    assert pages >= VISITORS // 40
    assert get(f"{api}/v1/segments/Nope/members").status_code == 404
    bad = get(f"{api}/v1/segments/New Visitors/members", cursor="zzz")
    assert bad.status_code == 400
    assert get(f"{api}/v1/segments/New Visitors/members", limit=0).status_code == 422


SPENDERS = """segments:
  - name: Spenders
    description: Spent 40 or more.
    condition: {feature: revenue_lifetime, op: ">=", value: 40}
"""


def test_a_rules_preview_answers_exactly_and_refuses_an_invalid_file(api, served):
    model = served.model
    url = f"{api}/v1/rules/preview"
    headers = {"Authorization": "Bearer tok-1", "Content-Type": "application/yaml"}
    answer = requests.post(url, data=SPENDERS, headers=headers, params={"sample": 3}, timeout=30)
    assert answer.status_code == 200, answer.text
    report = answer.json()
    assert report["users"] == VISITORS + 1
    segments = {segment["name"]: segment for segment in report["segments"]}
    assert list(segments)[-1] == "Spenders"
    assert segments["Spenders"] | {"limits": []} == {
        "waiting_for": None,
        "lacking": [],
        "name": "Spenders",
        "now": 0,
        "candidate": 1,
        "entering": 1,
        "leaving": 0,
        "examples": {"entering": ["ann"], "leaving": []},
        "limits": [],
    }
    visitors = segments["New Visitors"]
    assert (visitors["now"], visitors["candidate"], visitors["leaving"]) == (VISITORS, 0, VISITORS)
    assert len(visitors["examples"]["leaving"]) == 3
    assert model.segment_sizes()["New Visitors"] == VISITORS  # nothing changed

    refused = requests.post(
        url, data=SPENDERS.replace("revenue_lifetime", "nope"), headers=headers, timeout=30
    )
    assert refused.status_code == 422
    [error] = refused.json()["errors"]
    assert (error["line"], error["field"]) == (4, "segments[0].condition.feature")
    assert error["message"].startswith("unknown feature 'nope'; an identify trait is `trait: nope`")
    assert requests.post(url, data=SPENDERS, timeout=30).status_code == 401

    # a percentile threshold is the latest snapshot's: unknown (never met) before there is one
    median = SPENDERS.replace("value: 40", "value: p50(revenue_lifetime)")

    def spenders() -> tuple[int | None, int]:
        found = requests.post(url, data=median, headers=headers, timeout=30).json()
        return found["model_version"], found["segments"][-1]["candidate"]

    assert spenders() == (None, 0)
    snapshot = ModelSnapshot(
        version=1,
        generation=1,
        reason="initial",
        created_at=time.time(),
        features=("orders_lifetime",),
        mean=(1.0,),
        std=(1.0,),
        clusters=(Cluster(id="c1", name="all", centroid=(0.0,), share=1.0),),
        min_events=1,
        quantiles={"revenue_lifetime": tuple(float(q) for q in range(101))},  # p50: 50
    )
    ModelStore(redis_client(served.config), served.config.key_layout()).save(snapshot, [])
    assert spenders() == (1, 1)  # ann spent 50


def test_erasure_removes_state_labels_membership_and_leaves_a_tombstone(api, served):
    config, model = served.config, served.model
    client = redis_client(config)
    keys = config.key_layout()
    home = {user_id: model.partition_of(user_id) for user_id in ("ann", "anon-1")}
    assert "ann" in model.segment_members("Bargain Hunters")
    answer = requests.delete(f"{api}/v1/users/ann", headers={"Authorization": "Bearer tok-1"})
    assert answer.status_code == 202
    assert answer.json() == {"user_id": "ann", "status": "accepted"}
    deadline = time.monotonic() + 30
    while get(f"{api}/v1/users/ann").status_code != 404 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert get(f"{api}/v1/users/ann").status_code == 404
    while client.exists(keys.state(home["anon-1"], "anon-1")) and time.monotonic() < deadline:
        time.sleep(0.2)  # the merged id's alias record goes by a relayed erasure
    assert get(f"{api}/v1/users/anon-1").status_code == 404
    for user_id in ("ann", "anon-1"):
        partition = home[user_id]
        assert not client.exists(keys.state(partition, user_id), keys.labels(partition, user_id))
    for name in model.segment_sizes():
        assert "ann" not in model.segment_members(name)
    for partition in range(config.partitions):
        shard = keys.timer_shard(partition, timer_shard("ann", config.timer_shards))
        assert client.zscore(shard, "ann") is None
        assert not client.sismember(keys.partition_users(partition), "ann")
    assert model.counters()["erased"] == 2

    changes = [m for m in read_topic(config, config.changes_topic) if m.key() == b"ann"]
    *before, last_exit, tombstone = changes
    assert orjson.loads(last_exit.value())["reason"] == "erased"
    assert orjson.loads(last_exit.value())["segments"] == []
    assert tombstone.value() is None
    assert before
    visitors = get(f"{api}/v1/segments").json()["segments"]
    assert next(s for s in visitors if s["name"] == "Bargain Hunters")["size"] == 0


def test_without_redis_the_api_answers_503_and_logs_it_once(config, start_worker):
    port = free_port()
    settings = config.model_copy(
        update={
            "api_tokens": "tok-1",
            "api_port": port,
            "redis_url": f"redis://127.0.0.1:{free_port()}/0",
        }
    )
    process = start_worker(settings, "api")
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(f"{url}/healthz", process)
    for _ in range(5):
        assert requests.get(f"{url}/readyz", timeout=10).status_code == 503
        lookup = get(f"{url}/v1/users/ann", token="tok-1")
        assert lookup.status_code == 503, lookup.text
        assert lookup.headers["Retry-After"] == "1"
    logged = process.log.read_text()
    assert logged.count("redis unreachable") == 1, logged[-2000:]
