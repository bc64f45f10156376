"""Queries over what the workers wrote: users, segment sizes, pipeline totals.

A user's keys are found from their canonical partition; sizes and totals are
summed over the partitions. Example::

    model = ReadModel(redis_client(settings), settings.key_layout())
    model.segment_sizes()  # {"Bargain Hunters": 1234, ...}
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, cast

import redis

from processors._core import Classifier as CompiledRules
from processors._core import User
from processors.classifier import Classifier
from processors.model import ClusterAssigner, SnapshotError
from processors.partitioner import canonical_partition
from processors.rules import RuleSet
from state.keys import KeyLayout
from state.model_store import ModelStore
from state.redis_store import RedisStateStore

_MAX_ALIAS_HOPS = 8


class ReadModel:
    """Read-only views of the segment store."""

    def __init__(self, client: redis.Redis, keys: KeyLayout, rules: RuleSet | None = None) -> None:
        self.client = client
        self.keys = keys
        self.rules = rules
        """The rules whose computed traits documents show (none without); with them,
        documents show the predictions as the latest model snapshot scores them."""
        self._store = RedisStateStore(client, keys, group="")
        self._scoring: CompiledRules | None = None

    def user(self, user_id: str) -> dict[str, Any] | None:
        """One user's exported document, or `None` when segstream has not seen them.

        An id merged into another user (by `identify` or `alias`) gives that user.
        """
        partitions = self._store.partition_count()
        if not partitions:
            return None
        for _ in range(_MAX_ALIAS_HOPS):
            partition = canonical_partition(user_id, partitions)
            row = self._store.rows({partition: [user_id]}).get(user_id)
            if row is None:
                return None
            found = User.from_bytes(row)
            if found.alias_of is None:
                return found.document(user_id, self._compiled())
            user_id = found.alias_of
        return None

    def users(self) -> Iterator[dict[str, Any]]:
        """Every user's exported document, in no particular order; merged ids are left out.

        The export leaves out `version`: how many transitions a user went through
        can depend on when a merged id's history arrived, while what they are
        (features, segments, as of when) does not.
        """
        for user_id, user in self._store.users():
            if user.alias_of is None:
                document = user.document(user_id, self._compiled())
                del document["version"]
                yield document

    def _compiled(self) -> CompiledRules | None:
        if self.rules is None:
            return None
        if self._scoring is None:
            try:
                snapshot = ModelStore(self.client, self.keys).latest()
            except SnapshotError:
                snapshot = None
            model = None if snapshot is None else ClusterAssigner(snapshot)
            self._scoring = Classifier.of(self.rules, model).core
        return self._scoring

    def partition_of(self, user_id: str) -> int:
        """The partition whose keys hold `user_id` (its canonical partition)."""
        return canonical_partition(user_id, self._store.partition_count())

    def segment_members(self, segment: str) -> set[str]:
        """Every member of `segment`, over the partitions."""
        return self._members(partial(self.keys.members, segment=segment))

    def cluster_members(self, cluster: str) -> set[str]:
        """Every member of `cluster`, over the partitions."""
        return self._members(partial(self.keys.cluster_members, cluster=cluster))

    def segment_sizes(self) -> dict[str, int]:
        """Members per segment, for every segment that has had a member."""
        return self._sizes(self.keys.segments, self.keys.members)

    def cluster_sizes(self) -> dict[str, int]:
        """Members per cluster id (`cold-start` included), for every cluster that has had one."""
        sizes = self._sizes(self.keys.clusters, self.keys.cluster_members)
        return {identifier: size for identifier, size in sizes.items() if size}

    def counters(self) -> dict[str, int]:
        """Pipeline totals: `events`, `dead_letters`, `changes` and so on."""
        with self.client.pipeline(transaction=False) as pipe:
            for partition in range(self._store.partition_count()):
                pipe.hgetall(self.keys.counters(partition))
            hashes = cast(list[dict[bytes, bytes]], pipe.execute())
        totals: Counter[str] = Counter()
        for raw in hashes:
            totals.update({name.decode(): int(value) for name, value in raw.items()})
        return dict(totals)

    def _members(self, set_key: Callable[[int], str]) -> set[str]:
        with self.client.pipeline(transaction=False) as pipe:
            for partition in range(self._store.partition_count()):
                pipe.smembers(set_key(partition))
            listed = cast(list[set[bytes]], pipe.execute())
        return {member.decode() for members in listed for member in members}

    def _sizes(
        self, names_key: Callable[[int], str], set_key: Callable[[int, str], str]
    ) -> dict[str, int]:
        """Members of each name listed in any partition's `names_key`, summed over the
        partitions' `set_key` sets (two round trips)."""
        partitions = range(self._store.partition_count())
        with self.client.pipeline(transaction=False) as pipe:
            for partition in partitions:
                pipe.smembers(names_key(partition))
            listed = cast(list[set[bytes]], pipe.execute())
        names = sorted({name.decode() for names in listed for name in names})
        with self.client.pipeline(transaction=False) as pipe:
            for name in names:
                for partition in partitions:
                    pipe.scard(set_key(partition, name))
            cards = cast(list[int], pipe.execute())
        width = len(partitions)
        return {
            name: sum(cards[index * width : (index + 1) * width])
            for index, name in enumerate(names)
        }
