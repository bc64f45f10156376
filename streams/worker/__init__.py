"""The worker process: consume events in batches, keep users' state and segments in Redis.

`loop` runs the batch loop; `decoding` turns a batch's messages into each
partition's items (routing, dead letters, control commands, relays);
`partitions` holds an owned partition's runtime state; `checkpoint` commits a
batch (produce and wait for acks, the fenced store transaction, progress,
metrics); `relabel` re-evaluates every owned user when rules or models change;
`parts` builds the store, consumer and producer from settings; `models_feed`
follows model snapshots; `metrics` declares what it exposes (`streams.health` serves it).
"""
