"""`segstream rules preview` and `POST /v1/rules/preview`: a candidate rule file against
every stored user, exactly, before it goes live.

Partition by partition, users are read a chunk at a time (one `MGET` each) and
settled with the candidate rules as of the partition's committed firing clock —
re-evaluated, then their timers due by then fired — with the worker's own code
(:func:`processors.preview.settle`), so the preview is what `rules apply
--reevaluate` will give once settled. Percentile thresholds come from the latest
model snapshot, as the workers take them. Nothing is written or published.
Example::

    report = preview_rules(client, settings, current, candidate, examples=5)
    report["segments"][0]  # {"name": …, "now": …, "candidate": …, "entering": …, …}
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

import redis

from processors.classifier import Classifier
from processors.model import ClusterAssigner
from processors.preview import Tally, history_limits, settle
from processors.rules import RuleSet
from state.keys import KeyLayout
from state.model_store import ModelStore
from state.redis_store import RedisStateStore
from streams.settings import Settings


def preview_rules(
    client: redis.Redis,
    settings: Settings,
    current: RuleSet,
    candidate: RuleSet,
    examples: int,
    keys: KeyLayout | None = None,
) -> dict[str, Any]:
    """The preview of `candidate` against every stored user (of the generation at `keys`,
    the first by default), with `current` in force."""
    keys = keys or settings.key_layout()
    store = RedisStateStore(client, keys, settings.group_id)
    snapshot = ModelStore(client, keys).latest()
    modelled = Classifier.of(candidate, ClusterAssigner(snapshot) if snapshot else None)
    # placement plays no part in segments: leave the model out and keep its thresholds,
    # unless a rule compares a prediction, which the model's coefficients score
    chosen = modelled if candidate.predictions else Classifier(candidate, None, modelled.thresholds)
    classifier = chosen.core
    partitions = list(range(store.partition_count() or settings.partitions))
    tally = Tally(current.names, candidate.names, examples)
    clocks: dict[str, str | None] = {}
    started = time.time()
    for partition, progress in sorted(store.progress(partitions).items()):
        lateness, delay = settings.allowed_lateness_seconds, settings.firing_delay_seconds
        firing = progress.clock(lateness, delay).firing
        clocks[str(partition)] = _moment(firing)
        for chunk in store.partition_users(partition):
            rows = store.rows({partition: chunk})
            tally.add_all(settle(rows, classifier, firing, settings.expiry_seconds))
    limits = history_limits(candidate)
    needs = candidate.model_needs
    lacking = {
        name: sorted(needs.get(name, ()))
        if snapshot is None
        else snapshot.lacks(sorted(needs.get(name, ())))
        for name in candidate.names
    }
    return {
        "as_of": _moment(started),
        "users": tally.users,
        "current_rules": current.label,
        "candidate_digest": candidate.digest,
        "model_version": snapshot.version if snapshot else None,
        "firing_clocks": clocks,
        "seconds": round(time.time() - started, 3),
        "segments": [
            {
                **segment,
                "limits": limits.get(segment["name"], []),
                "waiting_for": "model" if lacking.get(segment["name"]) else None,
                "lacking": lacking.get(segment["name"], []),
            }
            for segment in tally.segments()
        ],
    }


def _moment(seconds: float) -> str | None:
    """An epoch time in ISO 8601 (UTC); `None` for a clock not set yet."""
    if not math.isfinite(seconds):
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")
