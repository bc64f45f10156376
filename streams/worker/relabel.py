"""Re-evaluate, re-place and re-time every user of the owned partitions at once.

New rules published with `--reevaluate`, or a model that re-clustered, move
users now rather than at their next event. Users are read a chunk at a time;
each chunk is committed through the :class:`~streams.worker.checkpoint.Checkpoint`
with its partition's progress unchanged, so it is fenced like a batch: a
partition that moved to another worker is left alone. Once a partition's last
chunk is in, its segment digests are recorded: the read API reports a segment
ready when every partition has its current definition. Example::

    relabel(owned, store, classifier, checkpoint, settings, reason=ChangeReason.RULES)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping

from processors import _core
from processors.classifier import Classifier
from processors.thresholds import indexed_features, indexed_values
from state.store import BatchCommit, Counters, PartitionCommit, StateStore
from streams.settings import Settings
from streams.worker import outgoing
from streams.worker.checkpoint import Checkpoint
from streams.worker.partitions import PartitionState

log = logging.getLogger(__name__)


def relabel(
    owned: Mapping[int, PartitionState],
    store: StateStore,
    classifier: Classifier,
    checkpoint: Checkpoint,
    settings: Settings,
    *,
    reason: str,
    beat: Callable[[], None] = lambda: None,
    users_of: Callable[[int], Iterator[list[str]]] | None = None,
) -> int:
    """Relabel every user of the `owned` partitions that has committed progress (or those
    `users_of` gives per partition, in chunks); returns how many. `beat` is called after
    each chunk (the worker's liveness)."""
    retention = settings.expiry_seconds
    relabelled_users = 0
    indexed = indexed_features(classifier.rules)
    for number, state in list(owned.items()):
        if state.committed is None:
            continue
        progress = state.progress(state.committed)
        chunks = store.partition_users(number) if users_of is None else users_of(number)
        for chunk in chunks:
            users, changes, timers, relabelled = _core.relabel(
                store.rows({number: chunk}), classifier.core, reason, retention
            )
            active = sum(1 for user in users.values() if user.alias_of is None)
            part = PartitionCommit(
                number,
                state.committed,
                progress,
                rows={user_id: user.to_bytes() for user_id, user in users.items()},
                labelled={user_id: users[user_id] for user_id in relabelled},
                changes=changes,
                counters=Counters(changes=len(changes)),
                timers=timers,
                values=indexed_values(indexed, users, users, classifier.core),
            )
            committed = checkpoint.commit(
                outgoing.change_events(
                    changes, settings.changes_topic, time.time(), classifier.rules.label
                ),
                BatchCommit([part], classifier.rules.label),
            )
            if not committed:
                log.warning("relabel skipped partition=%d reason=fenced", number)
                break
            beat()
            relabelled_users += active
        else:
            if users_of is not None:
                continue  # some users only: the partition's digests stay as they were
            # every user of the partition now evaluated with these rules
            done = PartitionCommit(
                number, state.committed, progress, evaluated=classifier.rules.segment_digests
            )
            checkpoint.commit([], BatchCommit([done], classifier.rules.label))
    log.info("users relabelled=%d reason=%s", relabelled_users, reason)
    return relabelled_users
