"""The real tracking SDKs, unchanged, against the collector: browser SDKs in Debian's
headless Chromium on a page of another origin, server SDKs from npm and PyPI.

Each SDK sends one shopper's visit (a page view while anonymous, identify, a product
viewed and added, an order, one more product added); the test waits for that
user's profile to hold the order, the revenue and the open cart.
"""

from __future__ import annotations

import functools
import math
import shutil
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import orjson
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from rudderstack.analytics.client import Client as RudderClient
from segment.analytics.client import Client as SegmentClient

from processors._core import Action, decode_events
from state.read_model import ReadModel
from streams.redis_clients import redis_client
from streams.tools.embedded import free_port
from tests.integration.conftest import (
    WorkerProcess,
    isolated_settings,
    read_topic,
    wait_until_serving,
)

pytestmark = pytest.mark.integration
SDK_DIR = Path(__file__).parents[1] / "sdk"
KEY = "wk-browser"
CHROMIUM = shutil.which("chromium")
EXPECTED = {
    "orders_lifetime": 1.0,
    "revenue_lifetime": 40.0,
    "cart_products": 1.0,
    "cart_value": 15.0,
    "events_lifetime": 5.0,  # the anonymous page view, merged in by identify, and four more
}


def _required(found: object, what: str, install: str) -> None:
    if not found:
        pytest.fail(f"{what} is missing: run `{install}` (make test does)")


@pytest.fixture(scope="module")
def pipeline(stack, tmp_path_factory):
    """A worker and a collector (CORS for any origin) on topics of their own."""
    _required((SDK_DIR / "node_modules" / ".package-lock.json").exists(), "the SDKs", "make sdks")
    _required(CHROMIUM, "chromium", "make tools")
    logs = tmp_path_factory.mktemp("sdk-pipeline")
    port = free_port()
    settings = isolated_settings(stack).model_copy(
        update={"write_keys": KEY, "collector_port": port, "cors_origins": "*"}
    )
    worker = WorkerProcess(settings, logs / "worker.log")
    collector = WorkerProcess(settings, logs / "collector.log", "collector")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(f"{url}/readyz", collector)
        model = ReadModel(redis_client(settings), settings.key_layout())
        yield url, model
    finally:
        for process in (collector, worker):
            process.kill()


@pytest.fixture(scope="module")
def page_origin():
    """The test pages and the SDKs' browser builds, served from an origin of their own."""
    handler = functools.partial(_QuietHandler, directory=str(SDK_DIR))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://localhost:{server.server_address[1]}"
    server.shutdown()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *_args):
        pass


def profile_of(model, user, timeout=60.0):
    """The user's features once they show `EXPECTED` (or the last seen, after `timeout`)."""
    deadline = time.monotonic() + timeout
    features = {}
    while time.monotonic() < deadline:
        found = model.user(user)
        features = (found or {}).get("features") or {}
        if all(features.get(name) == value for name, value in EXPECTED.items()):
            break
        time.sleep(0.3)
    return {name: features.get(name) for name in EXPECTED}


def browse(page_origin, page, **query):
    """Open a test page in Chromium; the driver's report of what happened."""
    url = f"{page_origin}/pages/{page}?{urlencode(query)}"
    done = subprocess.run(
        ["node", str(SDK_DIR / "browser.mjs"), url, "40"],
        cwd=SDK_DIR,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
        env={"CHROMIUM": CHROMIUM or "", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return orjson.loads(done.stdout)


def paths(report, origin):
    """`METHOD path` of each request the page made to `origin`, in order."""
    host = urlsplit(origin).netloc
    return [
        f"{request['method']} {urlsplit(request['url']).path}"
        for request in report["requests"]
        if urlsplit(request["url"]).netloc == host
    ]


def assert_clean(report, collector):
    assert report["outcome"] == "sent", report
    assert report["console"] == [], report["console"]
    assert report["failed"] == [], report["failed"]
    to_collector = [r for r in report["requests"] if r["url"].startswith(collector)]
    assert to_collector, report
    assert all(r["status"] < 400 for r in to_collector), to_collector
    readable = [r for r in to_collector if not r["url"].startswith(f"{collector}/beacon/")]
    assert all(r["allowOrigin"] == "*" for r in readable), readable  # beacons are not read


def test_segment_analytics_next_with_cdn_url_fetches_settings_and_sends_short_paths(
    pipeline, page_origin
):
    collector, model = pipeline
    report = browse(page_origin, "segment.html", collector=collector, key=KEY, user="seg-cdn")
    assert_clean(report, collector)
    seen = paths(report, collector)
    assert seen[0] == f"GET /v1/projects/{KEY}/settings"
    assert {"POST /v1/p", "POST /v1/i", "POST /v1/t"} <= set(seen), seen
    sent = [r for r in report["requests"] if r["method"] == "POST"]
    assert {r["contentType"] for r in sent} == {"text/plain"}
    assert profile_of(model, "seg-cdn") == EXPECTED


def test_segment_analytics_next_inline_settings_batches_to_api_host(pipeline, page_origin):
    collector, model = pipeline
    report = browse(
        page_origin, "segment.html", collector=collector, key=KEY, user="seg-inline", mode="inline"
    )
    assert_clean(report, collector)
    seen = paths(report, collector)
    assert "POST /v1/b" in seen, seen
    assert not any("/settings" in path for path in seen)
    assert profile_of(model, "seg-inline") == EXPECTED


@pytest.mark.parametrize("mode", ["xhr", "beacon"])
def test_rudderstack_analytics_js_reads_source_config_and_sends(pipeline, page_origin, mode):
    collector, model = pipeline
    user = f"rs-{mode}"
    report = browse(
        page_origin, "rudderstack.html", collector=collector, key=KEY, user=user, mode=mode
    )
    assert_clean(report, collector)
    seen = paths(report, collector)
    assert seen[0] in ("GET /sourceConfig/", "OPTIONS /sourceConfig/"), seen
    if mode == "beacon":
        assert "POST /beacon/v1/batch" in seen, seen
    else:
        assert {"POST /v1/page", "POST /v1/identify", "POST /v1/track"} <= set(seen), seen
    assert profile_of(model, user) == EXPECTED


def test_settings_documents_refuse_unknown_write_keys(pipeline):
    import requests

    collector, _ = pipeline
    assert requests.get(f"{collector}/v1/projects/nope/settings", timeout=5).status_code == 404
    assert requests.get(f"{collector}/sourceConfig/?writeKey=nope", timeout=5).status_code == 404
    known = requests.get(f"{collector}/v1/projects/{KEY}/settings", timeout=5).json()
    assert list(known["integrations"]) == ["Segment.io"]
    assert known["integrations"]["Segment.io"]["apiHost"] == f"{urlsplit(collector).netloc}/v1"
    source = requests.get(f"{collector}/sourceConfig/?writeKey={KEY}", timeout=5).json()["source"]
    assert source["writeKey"] == KEY
    assert source["destinations"] == []


@pytest.mark.parametrize("sdk", ["segment", "rudderstack"])
def test_node_server_sdks(pipeline, sdk):
    collector, model = pipeline
    user = f"node-{sdk}"
    done = subprocess.run(
        ["node", str(SDK_DIR / "server.mjs"), sdk, collector, KEY, user],
        cwd=SDK_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert orjson.loads(done.stdout) == {"errors": []}
    assert profile_of(model, user) == EXPECTED


@pytest.mark.parametrize("client_class", [SegmentClient, RudderClient], ids=["segment", "rudder"])
def test_python_server_sdks(pipeline, client_class):
    collector, model = pipeline
    user = f"py-{client_class.__module__.split('.')[0]}"
    errors = []
    client = client_class(
        KEY, host=collector, max_retries=0, on_error=lambda error, _batch: errors.append(error)
    )
    anonymous = f"anon-{user}"
    start = datetime.now(UTC) - timedelta(minutes=10)  # one minute between calls
    at = [start + timedelta(minutes=step) for step in range(6)]
    client.page(anonymous_id=anonymous, name="Home", properties={"path": "/"}, timestamp=at[0])
    client.identify(user_id=user, anonymous_id=anonymous, traits={"plan": "gold"}, timestamp=at[1])
    shoes = {"product_id": "p1", "category": "shoes", "price": 20}
    client.track(user_id=user, event="Product Viewed", properties=shoes, timestamp=at[2])
    client.track(
        user_id=user, event="Product Added", properties={**shoes, "quantity": 2}, timestamp=at[3]
    )
    client.track(
        user_id=user,
        event="Order Completed",
        properties={"order_id": "o1", "revenue": 40, "products": [shoes]},
        timestamp=at[4],
    )
    hat = {"product_id": "p2", "category": "hats", "price": 15, "quantity": 1}
    client.track(user_id=user, event="Product Added", properties=hat, timestamp=at[5])
    client.flush()
    assert errors == []
    assert profile_of(model, user) == EXPECTED


def test_server_sdks_batching_as_shipped_arrive_up_to_their_flush_interval_behind(stack, tmp_path):
    """Two quiet servers track one call a second with the node SDKs' default batching while
    a browser-like stream (one call each 100 ms, sent at once) keeps the partition's clocks
    moving: the servers' events arrive up to the SDKs' flush interval (10 s) behind, past
    the default firing delay, and the worker's arrival-delay histogram shows it."""
    metrics_port, port = free_port(), free_port()
    settings = isolated_settings(stack, partitions=1).model_copy(
        update={"write_keys": KEY, "collector_port": port, "metrics_port": metrics_port}
    )
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    quiet = settings.model_copy(update={"metrics_port": 0})  # the worker's is the one read
    collector = WorkerProcess(quiet, tmp_path / "collector.log", "collector")
    url = f"http://127.0.0.1:{port}"
    seconds = 14
    try:
        wait_until_serving(f"{url}/readyz", collector)
        servers = [
            subprocess.Popen(
                ["node", str(SDK_DIR / "steady.mjs"), sdk, url, KEY, f"server-{sdk}", str(seconds)],
                cwd=SDK_DIR,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for sdk in ("segment", "rudderstack")
        ]
        session = requests.Session()
        for number in range(10 * (seconds + 2)):
            body = {"type": "track", "event": "Page Viewed", "userId": f"browser-{number % 7}"}
            answer = session.post(
                f"{url}/v1/t",
                data=orjson.dumps({**body, "writeKey": KEY}),
                headers={"Content-Type": "text/plain"},
            )
            assert answer.status_code == 200
            time.sleep(0.1)
        for server in servers:
            out, err = server.communicate(timeout=60)
            assert server.returncode == 0, err[-3000:]
            assert orjson.loads(out) == {"errors": []}
        delays = _arrival_delays_by_sender(settings)
        assert sorted(delays) == ["browser", "server"]
        assert len(delays["server"]) == 2 * seconds
        late = max(delays["server"])
        print(
            f"server SDKs: {len(delays['server'])} events, arrival delay max {late:.2f} s, "
            f"{sum(d > settings.firing_delay_seconds for d in delays['server'])} past the "
            f"firing delay; browser-like: max {max(delays['browser']):.3f} s"
        )
        assert settings.firing_delay_seconds < late <= 10 + 2
        assert max(delays["browser"]) < 1
        histogram = _arrival_delay_buckets(
            f"http://127.0.0.1:{metrics_port}/metrics", sum(map(len, delays.values()))
        )
        assert histogram["+Inf"] - histogram["5.0"] == sum(
            d > 5 for ds in delays.values() for d in ds
        )
    finally:
        for process in (collector, worker):
            process.kill()


def _arrival_delays_by_sender(settings):
    """How far behind the partition's newest event time each event arrived, by sender
    (`browser` or `server`), in offset order."""
    newest = -math.inf
    delays: dict[str, list[float]] = {}
    values = [message.value() for message in read_topic(settings, settings.events_topic)]
    for action in decode_events(values, settings.max_event_bytes):
        assert isinstance(action, Action)
        sender = action.user_id.split("-")[0]
        delays.setdefault(sender, []).append(max(newest - action.timestamp, 0.0))
        newest = max(newest, action.timestamp)
    return delays


def _arrival_delay_buckets(url, count, timeout=60.0):
    """The worker's arrival-delay histogram buckets once it has observed `count` events."""
    deadline = time.monotonic() + timeout
    while True:
        buckets = {
            sample.labels["le"]: sample.value
            for family in text_string_to_metric_families(requests.get(url, timeout=5).text)
            if family.name == "segstream_worker_arrival_delay_seconds"
            for sample in family.samples
            if sample.name.endswith("_bucket")
        }
        if buckets.get("+Inf", 0) >= count:
            return buckets
        assert time.monotonic() < deadline, f"the worker observed {buckets.get('+Inf')} of {count}"
        time.sleep(0.5)
