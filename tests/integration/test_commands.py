"""`segstream dev` and `segstream demo` as a newcomer runs them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
import requests
from confluent_kafka.admin import AdminClient

from streams.tools.embedded.apache_kafka import kafka_libs

pytestmark = pytest.mark.integration


def run(
    *args: str, cwd: Path, timeout: float = 90, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {name: value for name, value in os.environ.items() if not name.startswith("SEGSTREAM_")}
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def test_dev_up_env_down_from_any_directory(tmp_path):
    """The stack lives in the user's cache folder, keyed by the project: `dev env` run from
    another directory finds the stack `dev up` started."""
    cache = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    (tmp_path / "cache" / "segstream").mkdir(parents=True)
    (tmp_path / "cache" / "segstream" / kafka_libs().name).symlink_to(kafka_libs())
    here, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    up = run("dev", "up", cwd=here, env=cache)
    assert up.returncode == 0, up.stderr
    try:
        again = run("dev", "up", cwd=elsewhere, env=cache)
        assert again.returncode == 1
        assert "already runs" in again.stderr

        env = run("dev", "env", cwd=elsewhere, env=cache)
        assert env.returncode == 0, env.stderr
        assert env.stdout == up.stdout
        settings = dict(re.findall(r"^export (SEGSTREAM_\w+)=(\S+)$", env.stdout, re.MULTILINE))
        assert settings == {
            "SEGSTREAM_KAFKA_BOOTSTRAP": settings["SEGSTREAM_KAFKA_BOOTSTRAP"],
            "SEGSTREAM_REDIS_URL": settings["SEGSTREAM_REDIS_URL"],
            "SEGSTREAM_DEV_MODE": "true",
            "SEGSTREAM_ALLOWED_LATENESS_SECONDS": "10",
            "SEGSTREAM_FIRING_DELAY_SECONDS": "1",
            "SEGSTREAM_IDLE_WATERMARK_SECONDS": "5",
        }
        assert redis.Redis.from_url(settings["SEGSTREAM_REDIS_URL"]).ping()
        admin = AdminClient({"bootstrap.servers": settings["SEGSTREAM_KAFKA_BOOTSTRAP"]})
        assert len(admin.list_topics(timeout=10).brokers) == 1  # the stack's one broker answers
    finally:
        down = run("dev", "down", cwd=elsewhere, env=cache)
    assert down.returncode == 0, down.stderr
    assert processes_mentioning(str(tmp_path / "cache")) == []
    gone = run("dev", "env", cwd=here, env=cache)
    assert gone.returncode == 1
    assert "no dev stack is running" in gone.stderr

    # a folder of one's choice, the same one again: Apache Kafka's storage is formatted anew
    for _ in range(2):
        up = run("dev", "up", "--dir", "stack", cwd=tmp_path)
        assert up.returncode == 0, up.stderr
        down = run("dev", "down", "--dir", "stack", cwd=tmp_path)
        assert down.returncode == 0, down.stderr


def test_demo_runs_for_its_duration_prints_a_summary_and_stops_everything(tmp_path):
    started = time.monotonic()
    demo = run(
        "demo", "--duration", "8", "--users", "150", "--rate", "3000", cwd=tmp_path, timeout=120
    )
    assert demo.returncode == 0, demo.stderr + demo.stdout
    assert time.monotonic() - started < 60
    summary = demo.stdout.split("segments at the end of the demo")[-1]
    events = int(re.search(r"events\s+([\d,]+)", summary).group(1).replace(",", ""))
    dead = int(re.search(r"dead letters \(DLQ\)\s+([\d,]+)", summary).group(1).replace(",", ""))
    assert events > 1_000  # a few seconds of 3,000/s, less start-up on a busy machine
    assert dead > 0
    assert re.search(r"events/s\s+[\d,]+", summary)
    scratch = re.search(r"logs in (\S+segstream-demo-\w+)", demo.stdout).group(1)
    assert processes_mentioning(scratch) == []


def test_demo_ends_cleanly_on_ctrl_c(tmp_path):
    env = {name: value for name, value in os.environ.items() if not name.startswith("SEGSTREAM_")}
    demo = subprocess.Popen(
        [sys.executable, "-m", "streams", "demo", "--duration", "120", "--users", "100"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert demo.stdout is not None
    first = demo.stdout.readline()  # "starting the embedded broker and Redis (logs in …)"
    scratch = re.search(r"logs in (\S+segstream-demo-\w+)", first).group(1)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(demo.stdout), daemon=True)
    reader.start()
    worker_log = Path(scratch) / "worker.log"
    deadline = time.monotonic() + 120
    while "partitions assigned" not in (worker_log.read_text() if worker_log.exists() else ""):
        assert demo.poll() is None, "the demo stopped before its worker ran"
        assert time.monotonic() < deadline, "the demo's worker never took its partitions"
        time.sleep(0.2)
    printed = re.search(r"the console: (http://\S+/console), token (\S+)", "".join(lines))
    assert printed, "".join(lines)
    url, token = printed.groups()
    session = requests.Session()
    while True:  # the console is up while the demo runs
        try:
            signed = session.post(f"{url}/sign-in", data={"token": token}, timeout=5)
            break
        except requests.ConnectionError:
            assert time.monotonic() < deadline, "the demo's console never answered"
            time.sleep(0.2)
    assert signed.status_code == 200, signed.text[:500]
    assert "<h1>Segments</h1>" in signed.text
    os.killpg(demo.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
    assert demo.wait(timeout=60) == 0, demo.stderr.read() if demo.stderr else ""
    reader.join(10)
    assert "segments at the end of the demo" in "".join(lines)
    assert processes_mentioning(scratch) == []
