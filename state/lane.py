"""One Redis connection that many coroutines share for their reads, replies matched in order.

redis-py's asyncio client takes a connection from its pool for each command,
wraps it in retries, timeouts and event hooks, and gives the connection back:
about 200 µs of CPU for an HGETALL on the bench machine, half of a read API
lookup. A lane writes each command on one connection as it comes, and hands
each reply, parsed by hiredis, to the oldest command still waiting: about
35 µs. redis-py opens the connection (TLS, ACL user, database, protocol), so a
lane reaches every single Redis its clients reach; a Redis Cluster is read
through redis-py's cluster client instead. Example::

    lane = Lane(redis.asyncio.ConnectionPool.from_url("redis://127.0.0.1:6379/0"))
    labels = await lane.hgetall("seg:{events-3}:labels:ann")  # {b"segments": b"[]", ...}
    await lane.close()

A connection that breaks or stops answering for `timeout` seconds fails the
commands waiting on it with :class:`redis.ConnectionError`; the next command
opens a new one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, cast

import hiredis
import redis
import redis.asyncio as aioredis


class _Replies(asyncio.Protocol):
    """The receiving end of a lane's connection: each reply goes to the oldest waiter."""

    def __init__(self) -> None:
        self.parser = hiredis.Reader(replyError=redis.ResponseError)
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.answered = 0
        self.lost = False

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)
        while (reply := self.parser.gets()) is not False:
            self.answered += 1
            waiter = self.waiting.popleft()
            if not waiter.done():  # a caller that gave up (cancelled) leaves its reply unread
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_exception(redis.ConnectionError("the connection to Redis was lost"))


class Lane:
    """A shared connection to one Redis for single-key reads (see the module)."""

    def __init__(self, pool: aioredis.ConnectionPool, timeout: float = 5.0) -> None:
        self.pool = pool
        self.timeout = timeout
        self._transport: asyncio.Transport | None = None
        self._stream: asyncio.StreamWriter | None = None
        self._replies = _Replies()
        self._opening: asyncio.Lock | None = None
        self._sent = 0
        self._watching = False

    async def hgetall(self, key: str) -> dict[bytes, bytes]:
        """The fields of the hash at `key` (empty when there is none)."""
        reply = await self.execute(b"HGETALL", key)
        if isinstance(reply, dict):  # RESP3 answers a map
            return cast(dict[bytes, bytes], reply)
        return dict(zip(reply[::2], reply[1::2], strict=True))

    async def get(self, key: str) -> bytes | None:
        """The string at `key`, or `None`."""
        return cast(bytes | None, await self.execute(b"GET", key))

    async def execute(self, *command: bytes | str) -> Any:
        """Send one command and wait for its reply; a Redis error reply is raised."""
        transport = self._transport
        if transport is None or self._replies.lost:
            transport = await self._open()
        waiter = asyncio.get_running_loop().create_future()
        self._replies.waiting.append(waiter)
        transport.write(hiredis.pack_command(cast(Any, command)))  # its stub wants 1-tuples
        self._sent += 1
        if not self._watching:
            self._watch(self._sent)
        reply = await waiter
        if isinstance(reply, redis.ResponseError):
            raise reply
        return reply

    async def close(self) -> None:
        """Close the connection; commands still waiting fail."""
        if self._transport is not None:
            self._transport.close()
            self._transport = self._stream = None

    async def _open(self) -> asyncio.Transport:
        """A new connection, opened and greeted by redis-py, then read by the lane."""
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._transport is not None and not self._replies.lost:
                return self._transport
            connection = self.pool.make_connection()  # type: ignore[no-untyped-call]
            await connection.connect()
            self._stream = _take_transport(connection)
            transport = cast(asyncio.Transport, self._stream.transport)
            self._replies = _Replies()
            transport.set_protocol(self._replies)
            self._transport, self._sent = transport, 0
            return transport

    def _watch(self, mark: int) -> None:
        """In `timeout` s, fail the connection if a command sent by `mark` is unanswered."""
        self._watching = True
        replies = self._replies
        asyncio.get_running_loop().call_later(self.timeout, self._check, replies, mark)

    def _check(self, replies: _Replies, mark: int) -> None:
        self._watching = False
        if replies is not self._replies or replies.lost:
            return
        if replies.answered < mark:
            assert self._transport is not None
            self._transport.abort()  # fails the waiting commands (connection_lost)
        elif replies.answered < self._sent:
            self._watch(self._sent)


def _take_transport(connection: aioredis.Connection) -> asyncio.StreamWriter:
    """The stream of a connection redis-py opened and greeted (TLS session, ACL user,
    database), detached from the connection so that it neither reads nor closes it.

    The caller keeps the stream for as long as it uses its transport, which the stream
    closes when it is collected. redis-py has no public handle on the stream it opened,
    hence its private fields.
    """
    writer = cast(asyncio.StreamWriter, connection._writer)
    connection._writer = connection._reader = None
    return writer
