"""Every one-shot command, run against a broker and a Redis that are not there, a file
that is not there, or a dev stack that is not running, ends with one line and exit code 1;
`--debug` shows the traceback. (The long-running processes, worker, trainer, collector,
api and deliver, wait for their dependencies instead, logging once when each is lost and
found again.)"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_expected_failures_are_one_line_with_exit_code_1(tmp_path):
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "segments:\n  - name: Buyers\n    description: ordered once\n"
        '    condition: {feature: orders_lifetime, op: ">=", value: 1}\n'
    )
    destinations = tmp_path / "destinations.yaml"
    destinations.write_text(
        "destinations:\n  - name: hooks\n    url: https://hooks.example.com/x\n"
        "    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n"
    )
    events = tmp_path / "events.jsonl"
    events.write_text('{"type": "track", "event": "Signed Up", "userId": "u"}\n')
    redis_port, kafka_port = closed_port(), closed_port()
    env = {name: value for name, value in os.environ.items() if not name.startswith("SEGSTREAM_")}
    env |= {
        "SEGSTREAM_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}",
        "SEGSTREAM_REDIS_URL": f"redis://:secret@127.0.0.1:{redis_port}/0",
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    kafka = f"Kafka does not answer at SEGSTREAM_KAFKA_BOOTSTRAP=127.0.0.1:{kafka_port}"
    redis = f"Redis does not answer at SEGSTREAM_REDIS_URL=redis://:***@127.0.0.1:{redis_port}/0"
    expected = {
        ("profile", "dan"): kafka,
        ("profiles", "export"): kafka,
        ("rules", "status"): kafka,
        ("rules", "apply", str(rules)): kafka,
        ("rules", "preview", str(rules)): kafka,
        ("topics",): kafka,
        ("replay", str(events)): kafka,
        ("simulate", "--users", "2"): kafka,
        ("destinations", "apply", str(destinations)): kafka,
        ("migrate",): redis,
        ("evaluate", "--output", str(tmp_path / "report")): redis,
        ("rules", "validate", str(tmp_path / "missing.yaml")): "does not exist",
        ("destinations", "validate", str(tmp_path / "missing.yaml")): "does not exist",
        ("dev", "env"): "no dev stack is running",
    }
    with ThreadPoolExecutor(len(expected) + 1) as pool:
        done = {args: pool.submit(run, list(args), tmp_path, env) for args in expected}
        debug = pool.submit(run, ["--debug", "migrate"], tmp_path, env)
        for args, says in expected.items():
            result = done[args].result()
            lines = (result.stdout + result.stderr).strip().splitlines()
            assert result.returncode == 1, (args, lines)
            assert len(lines) == 1, (args, lines)
            assert lines[0].startswith("Error: "), (args, lines)
            assert says in lines[0], (args, lines)
        assert "secret" not in "".join(done[("migrate",)].result().stderr)
        traceback = debug.result()
        assert traceback.returncode == 1
        assert "Traceback (most recent call last)" in traceback.stderr
        assert "redis.exceptions.ConnectionError" in traceback.stderr
