"""Redis for the embedded stack: Debian's `redis-server` (`make runtime` installs it).

server = spawn_redis(Path("/tmp/r"), 6390)
wait_for_redis("redis://127.0.0.1:6390/0", server)
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from streams.tools.embedded.processes import StackError, spawn


def redis_binary() -> str:
    """`redis-server` from `PATH`; :class:`StackError` when there is none."""
    found = shutil.which("redis-server")
    if found is None:
        raise StackError("redis-server is not on PATH: run `make tools`")
    return found


def spawn_redis(directory: Path, port: int, *, durable: bool = False) -> subprocess.Popen[bytes]:
    """Start `redis-server` on 127.0.0.1:`port`, logging to `directory`; with `durable`, every
    write is in its append-only file there before it is acknowledged, so a restart on the
    same directory finds everything."""
    persistence = (
        ["--appendonly", "yes", "--appendfsync", "always"] if durable else ["--appendonly", "no"]
    )
    return spawn(
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
    """Wait until the Redis at `url` answers; :class:`StackError` if `process` ends first or
    after `timeout` s."""
    deadline = time.monotonic() + timeout
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
