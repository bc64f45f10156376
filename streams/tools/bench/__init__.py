"""`segstream bench`: segstream, a naive Faust pipeline and the raw Kafka limit, in one run.

The package's modules: :mod:`.run` (the run and the worker, floor, lookup and freshness
measurements), :mod:`.parts` (what they share), :mod:`.preview`, :mod:`.webhooks`,
:mod:`.edge` (the collector), :mod:`.rebalance`, :mod:`.naive` (the baseline
pipeline), :mod:`.target` (where it runs) and :mod:`.table` (the printed table).

The bench preloads simulated events once
and measures, against those same events:

- `worker_eps`, `two_workers_eps`: one worker process, then two, from their
  first commit to the last event committed (state, labels, change events);
- `rebuild_eps`, `rebuild_two_workers_eps`: a rebuild of the one-worker run's users
  from the events topic (`rules apply --backfill` of the same rules) by one worker,
  then by two, from their first commit of the new generation to its last event;
  `rebuild_vs_worker` and `rebuild_two_vs_one` their ratios to the one-worker run
  and to each other;
- `naive_eps`: the baseline of :mod:`.naive` (a Faust agent, per-event
  table and Redis writes) over the same topic for `naive_seconds`;
- `raw_eps`: confluent-kafka batch consume plus the event validation, nothing else;
- `io_floor_eps`: the least a worker must do per batch over the same events:
  consume, decode, load the batch's users with one `MGET`, and write each back
  with the offsets in one `MULTI`/`EXEC`;
- `rules_worker_eps`, `rules_worker_vs_io_floor`, `rules_worker_cpu_us_per_event`,
  `rules_redis_bytes_per_user` (with `--rules FILE`): one worker again with that
  rules file, its share of the I/O floor above, its CPU per event and its Redis
  per user; `rules_io_floor_eps`, `rules_worker_vs_own_io_floor`: the I/O floor
  over that run's state rows, decoding with the file's projection, and the
  worker's share of it;
- `redis_commands_per_event`, `redis_bytes_per_event`: what the one-worker run
  asked of Redis (`INFO commandstats`, bytes Redis received) per event;
- `worker_cpu_us_per_event`, `redis_cpu_us_per_event`: CPU the one worker
  process (from /proc, first commit to last) and the Redis server (`INFO cpu`)
  spent per event in the one-worker run;
- `redis_bytes_per_user`: median `MEMORY USAGE` of a user's state and labels;
- `redis_bytes_per_user_changes`: median `MEMORY USAGE` of a user's change log
  (`SEGSTREAM_USER_CHANGES_KEPT`, for the console's profiles);
- `redis_bytes_per_user_sets`: `MEMORY USAGE` of every partition's segment and
  cluster membership sets and user index, per user;
- `redis_bytes_per_timer`: `MEMORY USAGE` of the timer shards and their index
  per pending timer;
- `lookup_p50_ms`, `lookup_p99_ms`: the read API's `GET /v1/users/{id}` at
  `lookup_rps` requests/s;
- `freshness_p50_ms`, `freshness_p99_ms`: from an event produced to its
  user's labels readable in Redis, with events produced live at half the
  one-worker throughput;
- `preview_seconds`: `segstream rules preview` of a tightened threshold over
  `preview_users` users, as :mod:`.preview` says;
- `console_<page>_p99_ms`: the console's pages (`segments`, its refresh
  `segments_fragment`, a `segment`, a `profile`, `rules`, `validate` an edit)
  over that store, its records full, as :mod:`.console` says;
- `deliveries_per_second`, `flaky_receiver_seconds`, `time_to_act_p50_ms`,
  `time_to_act_p99_ms`, `quiet_time_to_act_p50_ms`, `quiet_time_to_act_p99_ms`:
  webhooks, as :mod:`.webhooks` says, with the shipped `firing_delay_seconds` and
  `idle_watermark_seconds` (both in the figures);
- `collector_batch_eps`, `collector_single_rps`, `tracker_to_label_p50_ms`,
  `tracker_to_label_p99_ms`, `arrival_delay_p999_ms`, `arrival_delay_max_ms`: the
  collector, as :mod:`.edge` says;
- `restart_pause_p50_ms`, `restart_pause_p99_ms`, `failover_seconds`: four workers on
  sixteen partitions at half the one-worker rate, each restarted in turn, then one
  SIGKILLed, as :mod:`.rebalance` says.

`broker` and `redis` name what it ran on: the embedded stack it starts (Apache Kafka
and Redis on loopback), or the user's own (`--kafka`, `--redis`, as
:mod:`.target` says), and `machine` the processor.

:func:`~streams.tools.bench.run.run_bench` returns the figures; the command prints them as a
table and writes them as JSON.
"""
