"""A rebuilt generation takes over the labels readers have seen.

A build replays history without publishing what users went through; when it
becomes current, each user of the partitions a worker owns is given the labels
of the generation it replaces (segments, version, cluster) and is re-evaluated
with the new rules, as `rules apply --reevaluate` does: a user whose segments
differ gets exactly one change (reason `rules`), whose version continues their
own, and every user keeps a version that only grows. Chunks commit through the
build's checkpoint, fenced by its progress, like a relabel. Example::

    adopt(builder.owned, builder.store, previous_store, 0, builder.classifier,
          builder.checkpoint, settings)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from processors import _core
from processors._core import User
from processors.classifier import ChangeReason, Classifier
from processors.thresholds import indexed_features, indexed_values
from state.store import BatchCommit, Counters, PartitionCommit, StateStore
from streams.settings import Settings
from streams.worker import outgoing
from streams.worker.checkpoint import Checkpoint
from streams.worker.partitions import PartitionState

log = logging.getLogger(__name__)

_CHUNK = 1_000
"""Users read and committed at a time."""


def adopt(
    owned: Mapping[int, PartitionState],
    store: StateStore,
    previous: StateStore,
    replaced: int,
    classifier: Classifier,
    checkpoint: Checkpoint,
    settings: Settings,
    beat: Callable[[], None] = lambda: None,
) -> int:
    """Give the users of the `owned` partitions in `store` their labels in `previous` (of
    generation `replaced`) and re-evaluate them with `classifier`, noting each partition
    done in `store` (one noted already is left alone); returns how many changed segments."""
    indexed = indexed_features(classifier.rules)
    moved = 0
    done = store.adopted(sorted(owned))
    for number, state in owned.items():
        if number in done:
            continue  # taken over already, by another worker that owned it then
        if state.committed is None:
            store.mark_adopted(number, replaced)  # nothing built, nothing to take over
            continue
        progress = state.progress(state.committed)
        users = sorted(
            {user for chunk in store.partition_users(number) for user in chunk}
            | {user for chunk in previous.partition_users(number) for user in chunk}
        )
        for start in range(0, len(users), _CHUNK):
            chunk = users[start : start + _CHUNK]
            rebuilt = store.rows({number: chunk})
            before = previous.rows({number: chunk})
            taken = {
                user_id: User.from_bytes(row).with_labels_of(
                    User.from_bytes(before[user_id]) if user_id in before else None
                )
                for user_id, row in rebuilt.items()
            }
            found, changes, timers, _ = _core.relabel(
                taken, classifier.core, ChangeReason.RULES, settings.expiry_seconds
            )
            part = PartitionCommit(
                number,
                state.committed,
                progress,
                rows={user_id: user.to_bytes() for user_id, user in found.items()},
                labelled=dict(found),
                changes=changes,
                counters=Counters(changes=len(changes)),
                timers=timers,
                values=indexed_values(indexed, found, found, classifier.core),
            )
            events = outgoing.change_events(
                changes, settings.changes_topic, time.time(), classifier.rules.label
            )
            if not checkpoint.commit(events, BatchCommit([part], classifier.rules.label)):
                log.warning("adoption skipped partition=%d reason=fenced", number)
                break
            moved += sum(1 for change in changes if change.entered or change.exited)
            beat()
        else:
            store.mark_adopted(number, replaced)
    log.info("generation adopted users_moved=%d", moved)
    return moved
