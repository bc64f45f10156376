"""What the bench's measurements share: child processes, live simulated events, HTTP
readiness and latency percentiles.

>>> percentiles([0.001, 0.002, 0.003])
(2.0, 3.0)
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson

from streams.settings import Settings
from streams.tools.embedded import stop_process
from streams.tools.simulator import Simulation


class Processes:
    """Child processes of the bench, stopped when it ends however it ends.

    `start(settings, "deliver", "streams", "deliver")` runs `python -m streams deliver`
    with `settings` as its environment, logging to `<logs>/deliver.log`.
    """

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, settings: Settings, name: str, *command: str) -> subprocess.Popen[bytes]:
        environment = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SEGSTREAM_")},
            **settings.environment(),
        }
        with (self.logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", *command], env=environment, stdout=log, stderr=log
            )
        self.running.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        stop_process(process)
        self.running.remove(process)

    def stop_all(self) -> None:
        for process in list(self.running):
            self.stop(process)


def percentiles(values: list[float]) -> tuple[float, float]:
    """The median and 99th percentile of `values` (seconds), in milliseconds."""
    ordered = sorted(values)
    if not ordered:
        return 0.0, 0.0
    return (
        ordered[len(ordered) // 2] * 1000,
        ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
    )


def wait_for_http(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the process serving {url} ended early")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer in {timeout} s")


def live_events(users: int, seed: int) -> Iterator[tuple[bytes, bytes]]:
    """Simulated events as a key and the JSON up to the timestamp's value, to be completed
    with `<timestamp>"}` when produced.

    >>> key, head = next(live_events(users=1_000, seed=8))
    >>> orjson.loads(head + b'2026-11-01T10:00:00Z"}')["timestamp"]
    '2026-11-01T10:00:00Z'
    """
    simulation = Simulation(users=users, seed=seed)
    for event in simulation.events():
        body = orjson.loads(event.value)
        if isinstance(body, dict):
            body.pop("timestamp", None)
            yield event.key, orjson.dumps(body)[:-1] + b',"timestamp":"'
