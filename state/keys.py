"""Where segstream keeps things in Redis: one place that names every key.

Everything a batch writes lives under its partition's hash tag, `{<topic>.<partition>}`,
so one partition's keys share a Redis Cluster slot and a batch commits with one
transaction per partition; a single Redis uses the same layout. The model's keys
share the tag `{model}`; the rules version and the partition count stand alone.

A generation (the state built for one version of the rules, see `rules apply
--backfill`) has its partitions' keys of its own: generation 0 keeps the names
above, generation `n` puts `g<n>` after the prefix and before the hash tag, so
its keys keep their partition's slot. The model, rules and partition count keys
belong to no generation.

>>> keys = KeyLayout("seg", "events")
>>> keys.state(3, "alice"), keys.labels(3, "alice"), keys.members(3, "Buyers")
('seg:{events.3}:s:alice', 'seg:{events.3}:u:alice', 'seg:{events.3}:m:Buyers')
>>> keys.offset(3, "segstream-worker")
'seg:{events.3}:o:segstream-worker'
>>> keys.timers(3), keys.timer_shard(3, 17)
('seg:{events.3}:t', 'seg:{events.3}:t:17')
>>> keys.partition_count, keys.model_history
('seg:pc:events', 'seg:{model}:history')
>>> rebuilt = keys.of_generation(2)
>>> rebuilt.state(3, "alice"), rebuilt.partition_count
('seg:g2:{events.3}:s:alice', 'seg:pc:events')
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """Key names under one `prefix` for the events `topic`; see docs/operating.md's
    "Redis keys" table."""

    prefix: str = "seg"
    topic: str = "events"
    generation: int = 0

    def of_generation(self, generation: int) -> KeyLayout:
        """The same layout for the state of `generation`."""
        return KeyLayout(self.prefix, self.topic, generation)

    def tag(self, partition: int) -> str:
        """The start of every key of `partition`: the prefix, the generation (after the
        first) and the partition's hash tag."""
        if self.generation:
            return f"{self.prefix}:g{self.generation}:{{{self.topic}.{partition}}}"
        return f"{self.prefix}:{{{self.topic}.{partition}}}"

    def state(self, partition: int, user_id: str) -> str:
        """String: the user's full state (msgpack), the worker's state of record."""
        return f"{self.tag(partition)}:s:{user_id}"

    def labels(self, partition: int, user_id: str) -> str:
        """Hash: the user's segments (JSON list), cluster, versions, evaluation time, and the
        user an id merged into (`alias_of`)."""
        return f"{self.tag(partition)}:u:{user_id}"

    def members(self, partition: int, segment: str) -> str:
        """Set: the ids of the partition's users in `segment`."""
        return f"{self.tag(partition)}:m:{segment}"

    def cluster_members(self, partition: int, cluster: str) -> str:
        """Set: the ids of the partition's users in `cluster` (an id such as `c3`, or
        `cold-start`)."""
        return f"{self.tag(partition)}:cm:{cluster}"

    def values(self, partition: int, feature: str) -> str:
        """Sorted set: the partition's users scored by `feature` at their latest evaluation,
        for the features rules compare with a percentile (`processors.thresholds`)."""
        return f"{self.tag(partition)}:v:{feature}"

    def segments(self, partition: int) -> str:
        """Set: every segment name that has had a member on the partition."""
        return f"{self.tag(partition)}:segments"

    def clusters(self, partition: int) -> str:
        """Set: every cluster id that has had a member on the partition."""
        return f"{self.tag(partition)}:clusters"

    def counters(self, partition: int) -> str:
        """Hash: the partition's pipeline totals (events, dead letters, changes), exact like
        the state; the pipeline's totals are their sum over the partitions."""
        return f"{self.tag(partition)}:stats"

    def offset(self, partition: int, group: str) -> str:
        """String: the partition's progress (offset, watermark) for the consumer `group`,
        committed with the state."""
        return f"{self.tag(partition)}:o:{group}"

    def evaluated(self, partition: int) -> str:
        """Hash: segment name to the digest of the definition every user of the partition
        was last evaluated with (:attr:`processors.rules.RuleSet.segment_digests`)."""
        return f"{self.tag(partition)}:ev"

    def adopted(self, partition: int) -> str:
        """String: the generation whose labels the partition's users took over when this one
        replaced it (see `streams.worker.adoption`)."""
        return f"{self.tag(partition)}:adopted"

    def partition_users(self, partition: int) -> str:
        """Set: the users whose events arrive on the partition."""
        return f"{self.tag(partition)}:pu"

    def timers(self, partition: int) -> str:
        """Sorted set: the partition's timer shards, each scored at most its earliest due
        time."""
        return f"{self.tag(partition)}:t"

    def timer_shard(self, partition: int, shard: int) -> str:
        """Sorted set: users of one timer shard, scored by their timer's event time."""
        return f"{self.tag(partition)}:t:{shard}"

    def activity_tag(self, partition: int) -> str:
        """The start of the keys of what happened on `partition` (moves, change logs): `a`
        after the prefix, whatever the generation, so that they outlive a switch (and keep
        the partition's slot)."""
        return f"{self.prefix}:a:{{{self.topic}.{partition}}}"

    def moves(self, partition: int) -> str:
        """Hash: per segment (`+name`, `-name`) and cluster (`+@id`, `-@id`), how many users
        of the partition entered and left it since the store began (`state.activity`)."""
        return f"{self.activity_tag(partition)}:mv"

    def segment_log(self, partition: int, segment: str) -> str:
        """List: the partition's latest entries to and exits from `segment`, newest first."""
        return f"{self.activity_tag(partition)}:hs:{segment}"

    def cluster_log(self, partition: int, cluster: str) -> str:
        """List: the partition's latest moves into and out of `cluster`, newest first."""
        return f"{self.activity_tag(partition)}:hc:{cluster}"

    def user_log(self, partition: int, user_id: str) -> str:
        """List: the user's latest segment changes, newest first."""
        return f"{self.activity_tag(partition)}:hu:{user_id}"

    def size_series(self, resolution: str) -> str:
        """List: segment and cluster sizes sampled every `m`inute or `h`our, newest first."""
        return f"{self.prefix}:sizes:{resolution}"

    def size_sampled(self, period: str) -> str:
        """String: set by the one worker that samples the sizes of `period` (a minute's
        number, or `h` and an hour's)."""
        return f"{self.prefix}:sizes:at:{period}"

    @property
    def rules_history(self) -> str:
        """List: every rules publication's version, time, publisher and options (JSON),
        newest first."""
        return f"{self.prefix}:rules:history"

    @property
    def partition_count(self) -> str:
        """String: the number of partitions of the topic the state was built with."""
        return f"{self.prefix}:pc:{self.topic}"

    @property
    def model(self) -> str:
        """String: the latest model snapshot (JSON), as on the models topic; the model's keys
        share the tag `{model}`, so a snapshot is stored in one transaction."""
        return f"{self.prefix}:{{model}}"

    @property
    def model_history(self) -> str:
        """List: every snapshot's version, time, reason and clusters (JSON), newest last."""
        return f"{self.prefix}:{{model}}:history"

    @property
    def model_sample(self) -> str:
        """String: the trainer's user sample (msgpack), saved with each snapshot to resume from."""
        return f"{self.prefix}:{{model}}:sample"

    @property
    def rules_version(self) -> str:
        """String: the number of the latest rules published."""
        return f"{self.prefix}:rules:version"

    @property
    def generations(self) -> str:
        """String: the number of the latest generation a build was started for."""
        return f"{self.prefix}:generations"

    @property
    def earlier_counters(self) -> str:
        """Hash: the pipeline totals of the earlier layout, which had no partition tags; its
        presence marks a store to migrate (`segstream migrate`)."""
        return f"{self.prefix}:stats"
