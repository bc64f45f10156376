"""Where segstream keeps things in Redis: one place that names every key.

>>> keys = KeyLayout("seg")
>>> keys.state("alice"), keys.labels("alice"), keys.members("Buyers")
('seg:s:alice', 'seg:u:alice', 'seg:m:Buyers')
>>> keys.offset("segstream-worker", "events", 3)
'seg:o:segstream-worker:events:3'
>>> keys.timers("events", 3), keys.timer_shard("events", 3, 17)
('seg:t:events:3', 'seg:t:events:3:17')
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """Key names under one `prefix`; see the README's "Redis keys" table."""

    prefix: str = "seg"

    def state(self, user_id: str) -> str:
        """String: the user's full state (msgpack), the worker's state of record."""
        return f"{self.prefix}:s:{user_id}"

    def labels(self, user_id: str) -> str:
        """Hash: the user's segments (JSON list), cluster, versions, evaluation time, and the
        user an id merged into (`alias_of`)."""
        return f"{self.prefix}:u:{user_id}"

    def members(self, segment: str) -> str:
        """Set: the ids of the users in `segment`."""
        return f"{self.prefix}:m:{segment}"

    def cluster_members(self, cluster: str) -> str:
        """Set: the ids of the users in `cluster` (an id such as `c3`, or `cold-start`)."""
        return f"{self.prefix}:cm:{cluster}"

    @property
    def clusters(self) -> str:
        """Set: every cluster id that has had a member."""
        return f"{self.prefix}:clusters"

    @property
    def model(self) -> str:
        """String: the latest model snapshot (JSON), as on the models topic."""
        return f"{self.prefix}:model"

    @property
    def model_history(self) -> str:
        """List: every snapshot's version, time, reason and clusters (JSON), newest last."""
        return f"{self.prefix}:model:history"

    @property
    def model_sample(self) -> str:
        """String: the trainer's user sample (msgpack), saved with each snapshot to resume from."""
        return f"{self.prefix}:model:sample"

    def offset(self, group: str, topic: str, partition: int) -> str:
        """String: a partition's progress (offset, watermark), committed with the state."""
        return f"{self.prefix}:o:{group}:{topic}:{partition}"

    def partition_count(self, topic: str) -> str:
        """String: the number of partitions of `topic` the state was built with."""
        return f"{self.prefix}:pc:{topic}"

    def partition_users(self, topic: str, partition: int) -> str:
        """Set: the users whose events arrive on a partition (for watermark sweeps)."""
        return f"{self.prefix}:pu:{topic}:{partition}"

    def timers(self, topic: str, partition: int) -> str:
        """Sorted set: a partition's timer shards, each scored at most its earliest due time."""
        return f"{self.prefix}:t:{topic}:{partition}"

    def timer_shard(self, topic: str, partition: int, shard: int) -> str:
        """Sorted set: users of one timer shard, scored by their timer's event time."""
        return f"{self.prefix}:t:{topic}:{partition}:{shard}"

    @property
    def segments(self) -> str:
        """Set: every segment name that has had a member."""
        return f"{self.prefix}:segments"

    @property
    def counters(self) -> str:
        """Hash: pipeline totals (events, dead letters, changes), exact like the state."""
        return f"{self.prefix}:stats"

    def state_pattern(self) -> str:
        """SCAN pattern matching every user's state key."""
        return f"{self.prefix}:s:*"

    def user_of_state(self, key: str) -> str:
        """The user id in a :meth:`state` key."""
        return key[len(self.prefix) + 3 :]
