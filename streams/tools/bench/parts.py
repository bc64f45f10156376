"""What the bench's measurements share: child processes, live simulated events, HTTP
readiness and latency percentiles.

>>> percentiles([0.001, 0.002, 0.003])
(2.0, 3.0)
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from streams.redis_clients import redis_client
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


def live_events(users: int, seed: int, *, ids: bool = True) -> Iterator[tuple[bytes, bytes]]:
    """Simulated events, endlessly, as a key and the JSON up to the timestamp's value, to be
    completed with `<timestamp>"}` when produced. When one simulation of `users` has given
    all its events, the next round begins with the next seed, its message ids marked with
    the round so that none is taken for a duplicate. Without `ids`, the events have no
    message id: sent again, they are applied again.

    >>> key, head = next(live_events(users=1_000, seed=8))
    >>> orjson.loads(head + b'2026-11-01T10:00:00Z"}')["timestamp"]
    '2026-11-01T10:00:00Z'
    >>> one_round = sum(1 for _ in Simulation(users=2, seed=8).events())
    >>> heads = [head for _, head in itertools.islice(live_events(users=2, seed=8), 3 * one_round)]
    >>> len({orjson.loads(head + b'x"}')["messageId"] for head in heads}) == 3 * one_round
    True
    """
    for round_ in itertools.count():
        for event in Simulation(users=users, seed=seed + round_).events():
            body = orjson.loads(event.value)
            if isinstance(body, dict):
                body.pop("timestamp", None)
                if not ids:
                    body.pop("messageId", None)
                elif round_ and "messageId" in body:
                    body["messageId"] = f"{body['messageId']}-r{round_}"
                yield event.key, orjson.dumps(body)[:-1] + b',"timestamp":"'


@dataclass(slots=True)
class Probe:
    """An event sent to see when it is applied: its user's partition and id, when it was
    sent and when its state row was first seen in Redis (`time.time()`)."""

    partition: int
    user: str
    sent: float
    seen: float | None = None


class ProbeWatch:
    """Probes, and a thread that looks for their users' state rows in Redis every
    `every` s (one pipeline of `EXISTS` a look) until stopped and every probe was seen.

    Used as a context manager: the thread runs inside the `with` block and a little past
    it, until the probes sent in it are all seen or `timeout` s have passed.
    """

    def __init__(self, settings: Settings, every: float = 0.005, timeout: float = 60) -> None:
        self.settings = settings
        self.every = every
        self.timeout = timeout
        self.probes: list[Probe] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="probe-watch", daemon=True)

    def __enter__(self) -> ProbeWatch:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopping.set()
        self.thread.join(self.timeout + 5)

    def add(self, probes: list[Probe]) -> None:
        """Watch `probes` from now on."""
        with self.lock:
            self.probes.extend(probes)

    def since(self, moment: float) -> list[Probe]:
        """The probes sent at or after `moment` (a `time.time()`)."""
        with self.lock:
            return [probe for probe in self.probes if probe.sent >= moment]

    def pending(self) -> list[Probe]:
        """The probes not seen yet."""
        with self.lock:
            return [probe for probe in self.probes if probe.seen is None]

    def _watch(self) -> None:
        client = redis_client(self.settings)
        keys = self.settings.key_layout()
        stopped_at: float | None = None
        try:
            while (pending := self.pending()) or not self.stopping.is_set():
                if self.stopping.is_set():
                    stopped_at = stopped_at or time.monotonic()
                    if time.monotonic() - stopped_at > self.timeout:
                        return
                if pending:
                    with client.pipeline(transaction=False) as pipe:
                        for probe in pending:
                            pipe.exists(keys.state(probe.partition, probe.user))
                        found = pipe.execute()
                    now = time.time()
                    for probe, exists in zip(pending, found, strict=True):
                        if exists:
                            probe.seen = now
                time.sleep(self.every)
        finally:
            client.close()


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> bytes:
    """Send one HTTP/1.1 `request` on a keep-alive connection and read its answer; returns
    the answer's head (the body is read and dropped). A small client on raw asyncio
    streams, so that a load generator on the same cores as the server costs little."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    await reader.readexactly(length)
    return head


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait until `condition()` holds; :class:`TimeoutError` naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not done in {timeout:g} s")
        time.sleep(0.05)


_ASSIGNED = re.compile(rb"partitions assigned=\d")


def joined(log: Path) -> bool:
    """Whether the worker logging to `log` has been assigned at least one partition."""
    return log.exists() and _ASSIGNED.search(log.read_bytes()) is not None
