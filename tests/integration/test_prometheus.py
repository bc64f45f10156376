"""A real Prometheus (Debian's package) scrapes a running worker and evaluates the alert rules."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import requests
import yaml
from confluent_kafka import Producer

from streams.tools.embedded import free_port
from tests.integration.conftest import wait_for_events

pytestmark = pytest.mark.integration
ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
GOOD, BAD = 500, 100


@pytest.fixture
def prometheus(tmp_path):
    """Start Prometheus on `config` (a dict) and return its base URL."""
    started = []

    def start(config):
        port = free_port()
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        binary = shutil.which("prometheus")
        assert binary, "prometheus is missing: `make tools` installs it"
        log = (tmp_path / "prometheus.log").open("wb")
        started.append(
            subprocess.Popen(
                [
                    binary,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        return f"http://127.0.0.1:{port}"

    yield start
    for process in started:
        process.terminate()
        process.wait(30)


def quick_alerts(path):
    """alerts.yml with every `for` at 0 s, so a test need not wait out the pending time."""
    path.write_text(re.sub(r"for: \d+m", "for: 0s", ALERTS.read_text()))
    return str(path)


def query(url, expression):
    answer = requests.get(f"{url}/api/v1/query", params={"query": expression}, timeout=5).json()
    assert answer["status"] == "success", answer
    return {
        tuple(sorted(sample["metric"].items())): float(sample["value"][1])
        for sample in answer["data"]["result"]
    }


def eventually(check, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_prometheus_scrapes_the_worker_and_the_alerts_fire(
    config, start_worker, model, prometheus, tmp_path
):
    metrics_port = free_port()
    settings = config.model_copy(update={"metrics_port": metrics_port})
    worker = start_worker(settings)
    url = prometheus(
        {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [quick_alerts(tmp_path / "alerts.yml")],
            "scrape_configs": [
                {
                    "job_name": "segstream-worker",
                    "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
                },
                {  # nothing listens here: the trainer is "down"
                    "job_name": "segstream-trainer",
                    "static_configs": [{"targets": [f"127.0.0.1:{free_port()}"]}],
                },
            ],
        }
    )
    worker.wait_for_log("partitions assigned")
    producer = Producer({"bootstrap.servers": config.kafka_bootstrap})

    def send(first):
        """Half the good and half the malformed events, from `first` on, stamped now."""
        now = datetime.now(UTC).isoformat()
        for index in range(first, first + GOOD // 2):
            user = f"u{index % 50}"
            body = {"type": "page", "userId": user, "timestamp": now, "messageId": str(index)}
            producer.produce(config.events_topic, key=user.encode(), value=orjson.dumps(body))
        for index in range(BAD // 2):
            producer.produce(config.events_topic, key=f"u{index}".encode(), value=b'{"type": ')
        assert producer.flush(30) == 0

    # Two waves, so that Prometheus sees the counters rise between scrapes.
    send(0)
    wait_for_events(model, (GOOD + BAD) // 2)

    def first_wave_scraped():
        assert query(url, "sum(segstream_worker_events_dead_lettered_total)") == {(): BAD // 2}

    eventually(first_wave_scraped)
    send(GOOD // 2)
    wait_for_events(model, GOOD + BAD)

    def scraped():
        assert query(url, 'max by (instance) (up{job="segstream-worker"})') == {
            (("instance", f"127.0.0.1:{metrics_port}"),): 1.0
        }
        assert list(query(url, "sum(segstream_worker_events_processed_total)").values()) == [GOOD]
        dead = query(url, "sum by (reason) (segstream_worker_events_dead_lettered_total)")
        assert dead == {(("reason", "invalid_json"),): BAD}

    eventually(scraped)
    assert list(query(url, "max(segstream_worker_partitions_assigned)").values()) == [4.0]
    lag = query(url, "segstream_worker_consumer_lag_messages")
    assert len(lag) == 4
    fresh = query(
        url, "histogram_quantile(0.5, sum by (le) (segstream_worker_freshness_seconds_bucket))"
    )
    assert 0 < next(iter(fresh.values())) < 60

    def alerts():
        rules = requests.get(f"{url}/api/v1/rules", timeout=5).json()["data"]["groups"]
        evaluated = {rule["name"]: rule for group in rules for rule in group["rules"]}
        assert len(evaluated) == 7
        assert all(rule["health"] == "ok" for rule in evaluated.values()), evaluated
        assert all(rule["lastEvaluation"] > "2000" for rule in evaluated.values())
        firing = requests.get(f"{url}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
        names = {
            (a["labels"]["alertname"], a["labels"].get("job"))
            for a in firing
            if a["state"] == "firing"
        }
        assert names == {
            ("SegstreamDeadLetterRate", "segstream-worker"),
            ("SegstreamTargetDown", "segstream-trainer"),
            ("SegstreamNoModelSnapshot", None),
        }

    eventually(alerts)

    exposition = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).content
    lint = subprocess.run(
        [shutil.which("promtool"), "check", "metrics"], input=exposition, capture_output=True
    )
    assert lint.returncode == 0
    assert lint.stdout + lint.stderr == b""
    for probe in ("healthz", "readyz"):
        assert (
            requests.get(f"http://127.0.0.1:{metrics_port}/{probe}", timeout=5).status_code == 200
        )
