"""The embedded stack: Apache Kafka and Redis started together, remembered for `dev env`.

with running_stack(Path("/tmp/s")) as stack:
    print(stack.environment()["SEGSTREAM_KAFKA_BOOTSTRAP"])
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from streams.tools.embedded.apache_kafka import spawn_kafka, wait_until_serving
from streams.tools.embedded.processes import StackError, free_port, running, terminate
from streams.tools.embedded.redis_server import spawn_redis, wait_for_redis


def dev_folder() -> Path:
    """Where `segstream dev` keeps this project's stack (its logs, data and state file): a
    folder of the user's cache folder named after the project's checkout or installation,
    so that `dev env` finds the stack from any directory.

    >>> folder = dev_folder()
    >>> folder.parent.name, folder.name.startswith(Path(__file__).resolve().parents[3].name)
    ('segstream', True)
    """
    project = Path(__file__).resolve().parents[3]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    key = hashlib.sha256(str(project).encode()).hexdigest()[:12]
    return cache / "segstream" / f"{project.name}-{key}"


@dataclass(frozen=True, slots=True)
class Stack:
    """A running broker and Redis: where they listen and which processes they are.
    `kafka_sasl_bootstrap` is the broker's SASL/SCRAM listener, '' when it has none."""

    kafka_bootstrap: str
    redis_url: str
    broker_pid: int
    redis_pid: int
    directory: str
    kafka_sasl_bootstrap: str = ""

    def environment(self) -> dict[str, str]:
        """The `SEGSTREAM_*` settings that point at this stack."""
        return {
            "SEGSTREAM_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "SEGSTREAM_REDIS_URL": self.redis_url,
        }

    def save(self, path: Path) -> None:
        """Remember the stack in `path` (JSON) for `dev env` and `dev down`."""
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> Stack:
        """Inverse of :meth:`save`."""
        return cls(**json.loads(path.read_text(encoding="utf-8")))

    def alive(self) -> bool:
        """Whether both processes still run."""
        return all(running(pid) for pid in (self.broker_pid, self.redis_pid))

    def stop(self, timeout: float = 10.0) -> None:
        """Stop both processes: SIGTERM, then SIGKILL after `timeout` seconds."""
        for pid in (self.broker_pid, self.redis_pid):
            terminate(pid, timeout)


def start_stack(
    directory: Path, scram_users: Mapping[str, str] | None = None, timeout: float = 90.0
) -> Stack:
    """Start a broker (with a SASL/SCRAM listener for `scram_users`, if any) and Redis in
    the background; their logs go to `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    redis_port = free_port()
    server = spawn_redis(directory, redis_port)
    try:
        broker, kafka = spawn_kafka(directory / "kafka", scram_users)
    except StackError:
        terminate(server.pid, 10)
        raise
    stack = Stack(
        kafka.bootstrap,
        f"redis://127.0.0.1:{redis_port}/0",
        broker.pid,
        server.pid,
        str(directory),
        kafka.sasl_bootstrap,
    )
    deadline = time.monotonic() + timeout
    try:
        wait_for_redis(stack.redis_url, server, timeout)
        wait_until_serving(kafka.bootstrap, broker, max(1.0, deadline - time.monotonic()))
    except StackError as error:
        stack.stop()
        raise StackError(f"{error}; see the logs in {directory}") from None
    return stack


@contextlib.contextmanager
def running_stack(directory: Path, scram_users: Mapping[str, str] | None = None) -> Iterator[Stack]:
    """A broker and Redis for the duration of a `with` block."""
    stack = start_stack(directory, scram_users)
    try:
        yield stack
    finally:
        stack.stop()
