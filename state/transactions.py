"""Transactions fenced by `WATCH`: read the watched keys, then run commands in `MULTI`/`EXEC`
unless one of those keys changed meanwhile.

On one Redis the commands go out as one packet and their replies are read back in a
row on a connection of the client's pool (:class:`PackedTransaction`): about a third of
the client's CPU of a redis-py pipeline, which queues, packs and parses each command in
Python (2,400 commands: 3.5 ms against 9.0 ms). On a Redis Cluster, redis-py's cluster
pipeline routes the transaction to its slot's node and follows the cluster when a slot
moves (:class:`PipelineTransaction`). Either way::

    with fenced_transaction(client) as transaction:
        if transaction.watch(["offset"]) == [b"5"]:
            committed = transaction.execute([("SET", "offset", "6")])  # False: it moved
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, cast

import hiredis
import redis
from redis.cluster import RedisCluster

from state.timer_store import Command

_pack = cast(Callable[[Command], bytes], hiredis.pack_command)
"""One command in the Redis protocol (its arguments as they are: bytes, text, numbers)."""
_MULTI = _pack(("MULTI",))
_EXEC = _pack(("EXEC",))
_UNWATCH = _pack(("UNWATCH",))


@dataclass(frozen=True, slots=True)
class Packed:
    """`count` commands already in the Redis protocol, made by the core in one call.

    >>> Packed(_pack(("DEL", "a")) + _pack(("LTRIM", "b", 0, 9)), 2).commands()
    [('DEL', b'a'), ('LTRIM', b'b', b'0', b'9')]
    """

    data: bytes
    count: int

    def commands(self) -> list[Command]:
        """The commands one by one: the verb as text (as a cluster client looks it up),
        the arguments as bytes."""
        reader = hiredis.Reader()
        reader.feed(self.data)
        found: list[Command] = []
        for _ in range(self.count):
            verb, *arguments = cast(list[bytes], reader.gets())
            found.append((verb.decode(), *arguments))
        return found


Write = Command | Packed
"""What a transaction runs: a command, or commands packed by the core."""


class FencedTransaction(Protocol):
    """One transaction fenced on the keys it watched, used once as a context manager."""

    def __enter__(self) -> FencedTransaction: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None: ...

    def watch(self, keys: Sequence[str]) -> list[bytes | None]:
        """Watch `keys` and read their values (strings, `None` where missing)."""
        ...

    def execute(self, commands: Sequence[Write]) -> bool:
        """Run `commands` in one `MULTI`/`EXEC`; `False` (nothing run) when a watched key
        changed since :meth:`watch`. Raises :class:`redis.ResponseError` when a command
        failed."""
        ...


def fenced_transaction(client: redis.Redis) -> FencedTransaction:
    """A transaction on `client`: packed on one Redis, a cluster pipeline on a cluster."""
    if isinstance(client, RedisCluster):
        return PipelineTransaction(client)
    return PackedTransaction(client)


class PackedTransaction:
    """A fenced transaction on one Redis: `WATCH` and `MGET` in one round trip, then
    `MULTI`, the commands and `EXEC` in one packet, on a connection of `client`'s pool.

    A connection whose replies were not all read (an error on the way) is closed rather
    than returned to the pool in that state.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.pool = client.connection_pool
        self.connection = self.pool.get_connection()
        self.watching = False

    def __enter__(self) -> PackedTransaction:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        connection = self.connection
        try:
            if error is not None:
                connection.disconnect()  # type: ignore[no-untyped-call]
            elif self.watching:
                connection.send_packed_command([_UNWATCH])  # type: ignore[no-untyped-call]
                connection.read_response()
        finally:
            self.pool.release(connection)

    def watch(self, keys: Sequence[str]) -> list[bytes | None]:
        connection = self.connection
        watch, read = _pack(("WATCH", *keys)), _pack(("MGET", *keys))
        connection.send_packed_command([watch, read])  # type: ignore[no-untyped-call]
        self.watching = True
        connection.read_response()
        return cast(list[bytes | None], connection.read_response())

    def execute(self, commands: Sequence[Write]) -> bool:
        connection = self.connection
        count = 0
        chunks = [_MULTI]
        for command in commands:
            if isinstance(command, Packed):
                chunks.append(command.data)
                count += command.count
            else:
                chunks.append(_pack(command))
                count += 1
        chunks.append(_EXEC)
        packed = b"".join(chunks)
        connection.send_packed_command([packed], check_health=False)  # type: ignore[no-untyped-call]
        self.watching = False  # EXEC unwatches, whatever it answers
        read = connection.read_response
        refused: list[redis.ResponseError] = []
        for _ in range(count + 1):  # MULTI's OK, then a QUEUED a command
            try:
                read()
            except redis.ResponseError as error:  # a command Redis would not queue
                refused.append(error)
        try:
            replies = cast(list[object] | None, read())
        except redis.ResponseError as error:  # EXECABORT, after a refused command
            raise (refused[0] if refused else error) from None
        if replies is None:
            return False
        for reply in replies:
            if isinstance(reply, redis.ResponseError):
                raise reply
        return True


class PipelineTransaction:
    """A fenced transaction in a redis-py pipeline (a cluster's: its commands share a slot)."""

    def __init__(self, client: redis.Redis) -> None:
        self.pipe = client.pipeline(transaction=True)

    def __enter__(self) -> PipelineTransaction:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.pipe.reset()

    def watch(self, keys: Sequence[str]) -> list[bytes | None]:
        self.pipe.watch(*keys)  # type: ignore[no-untyped-call]
        return cast(list[bytes | None], self.pipe.execute_command("MGET", *keys))  # type: ignore[no-untyped-call]

    def execute(self, commands: Sequence[Write]) -> bool:
        pipe = self.pipe
        pipe.multi()
        for write in commands:
            for command in write.commands() if isinstance(write, Packed) else [write]:
                pipe.execute_command(*command)  # type: ignore[no-untyped-call]
        try:
            pipe.execute()
        except redis.WatchError:
            return False
        return True
