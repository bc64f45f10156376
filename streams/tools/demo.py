"""`segstream demo`: the whole pipeline on the embedded stack, watched live.

Starts a broker and Redis, creates the topics, starts a worker, the trainer,
the simulator and the read API with its console (printing the console's URL and
a token) as child processes, renders segment and cluster sizes,
events/s and dead letters with rich, and after the duration (or Ctrl-C)
prints a summary and what a tightened threshold would change (`segstream rules
preview`), and stops everything it started.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import TopicPartition
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from processors.model import SnapshotError
from processors.rules import parse_rules
from state.model_store import ModelStore
from state.read_model import ReadModel
from state.redis_store import RedisStateStore
from streams.kafka import topic_reader
from streams.redis_clients import read_model, redis_client
from streams.rules_feed import load_rules
from streams.rules_preview import preview_rules
from streams.settings import Settings
from streams.tools.embedded import Stack, free_port, running_stack, stop_process
from streams.tools.preview_table import preview_table, tightened_default_rules
from streams.topics import ensure_topics

_REFRESH_SECONDS = 0.5
_DRAIN_SECONDS = 30.0


@dataclass(slots=True)
class Snapshot:
    """What the view shows at one moment."""

    elapsed: float
    events: int
    dead_letters: int
    users: int
    changes: int
    rate: float
    sizes: dict[str, int]
    clusters: dict[str, int]
    names: dict[str, str]
    model_version: int | None
    waiting: frozenset[str]
    """Segments whose percentiles or predictions no model snapshot gives yet."""


def _snapshot(
    model: ReadModel,
    started: float,
    previous: Snapshot | None,
    models: ModelStore,
    needs: Mapping[str, frozenset[str]],
) -> Snapshot:
    counters = model.counters()
    try:
        latest = models.latest()
    except SnapshotError:
        latest = None
    elapsed = time.monotonic() - started
    events = counters.get("events", 0)
    rate = 0.0
    if previous is not None and elapsed > previous.elapsed:
        rate = (events - previous.events) / (elapsed - previous.elapsed)
    return Snapshot(
        elapsed=elapsed,
        events=events,
        dead_letters=counters.get("dead_letters", 0),
        users=counters.get("users", 0),
        changes=counters.get("changes", 0),
        rate=rate,
        sizes=model.segment_sizes(),
        clusters=model.cluster_sizes(),
        names=latest.names() if latest else {},
        model_version=latest.version if latest else None,
        waiting=frozenset(
            name for name, need in needs.items() if (latest.lacks(need) if latest else need)
        ),
    )


def _segment_table(snapshot: Snapshot, title: str) -> Table:
    table = Table(title=title, title_justify="left", min_width=len(title))
    table.add_column("segment")
    table.add_column("users", justify="right")
    table.add_column("share", justify="right")
    for name, size in sorted(snapshot.sizes.items(), key=lambda item: -item[1]):
        share = size / snapshot.users if snapshot.users else 0.0
        shown = f"{name} (waits for the trainer's model)" if name in snapshot.waiting else name
        table.add_row(shown, f"{size:,}", f"{share:.1%}")
    return table


def _cluster_table(snapshot: Snapshot, title: str) -> Table:
    version = f"model v{snapshot.model_version}" if snapshot.model_version else "no model yet"
    heading = f"{title} ({version})"
    table = Table(title=heading, title_justify="left", min_width=len(heading))
    table.add_column("cluster")
    table.add_column("name")
    table.add_column("users", justify="right")
    total = sum(snapshot.clusters.values())
    for identifier, size in sorted(snapshot.clusters.items(), key=lambda item: -item[1]):
        share = f"{size:,} ({size / total:.0%})" if total else f"{size:,}"
        table.add_row(identifier, snapshot.names.get(identifier, ""), share)
    return table


def _totals(snapshot: Snapshot, average_rate: float) -> Table:
    table = Table(show_header=False, box=None)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("events", f"{snapshot.events:,}")
    table.add_row("dead letters (DLQ)", f"{snapshot.dead_letters:,}")
    table.add_row("users", f"{snapshot.users:,}")
    table.add_row("segment changes", f"{snapshot.changes:,}")
    table.add_row("events/s", f"{average_rate:,.0f}")
    return table


def _live_view(snapshot: Snapshot, duration: float) -> Group:
    header = Text(
        f"segstream demo  {snapshot.elapsed:4.0f}/{duration:.0f} s   "
        f"{snapshot.rate:8,.0f} events/s   DLQ {snapshot.dead_letters:,}",
        style="bold cyan",
    )
    return Group(
        header,
        _segment_table(snapshot, "live segments"),
        _cluster_table(snapshot, "live clusters"),
        _totals(snapshot, snapshot.rate),
    )


def _start(command: list[str], environment: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "streams", *command],
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )


class _Backlog:
    """Messages on the events topic that the workers have not committed yet."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.events_topic
        self.partitions = list(range(settings.partitions))
        self.reader = topic_reader(settings, f"{settings.group_id}-demo")
        self.store = RedisStateStore(
            redis_client(settings), settings.key_layout(), settings.group_id
        )

    def __call__(self) -> int:
        progress = self.store.progress(self.partitions)
        waiting = 0
        for partition in self.partitions:
            _, high = self.reader.get_watermark_offsets(
                TopicPartition(self.topic, partition), timeout=5
            )
            found = progress.get(partition)
            waiting += max(0, high - (found.offset if found else 0))
        return waiting

    def close(self) -> None:
        self.reader.close()


def _drain(
    model: ReadModel,
    started: float,
    sent_all: Snapshot,
    models: ModelStore,
    backlog: _Backlog,
    needs: Mapping[str, frozenset[str]],
) -> Snapshot:
    """Wait until the worker has committed everything on the topic, at most a while."""
    deadline = time.monotonic() + _DRAIN_SECONDS
    while backlog() and time.monotonic() < deadline:
        time.sleep(0.5)
    return _snapshot(model, started, sent_all, models, needs)


def run_demo(duration: float, users: int, rate: float, seed: int) -> None:
    """Run the demo; returns after printing the summary, with every process stopped."""
    # Ctrl-C ends the demo cleanly even when it was started with SIGINT ignored
    # (from a background job or a CI runner), as Python then leaves it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    console = Console()
    with tempfile.TemporaryDirectory(prefix="segstream-demo-") as scratch:
        directory = Path(scratch)
        console.print(f"starting the embedded broker and Redis (logs in {directory}) ...")
        with running_stack(directory) as stack:
            _run(console, stack, directory, duration, users, rate, seed)


def _run(
    console: Console,
    stack: Stack,
    directory: Path,
    duration: float,
    users: int,
    rate: float,
    seed: int,
) -> None:
    token, api_port = secrets.token_urlsafe(12), free_port()
    environment = {
        **os.environ,
        **stack.environment(),
        "SEGSTREAM_SNAPSHOT_SECONDS": "5",
        "SEGSTREAM_CLUSTER_MIN_USERS": str(max(10, min(500, users // 4))),
        "SEGSTREAM_TRAINER_WEB_PORT": str(free_port()),
        "SEGSTREAM_API_PORT": str(api_port),
        "SEGSTREAM_API_TOKENS": secrets.token_urlsafe(12),
        "SEGSTREAM_ADMIN_TOKENS": f"demo:{token}",
    }
    config = Settings(kafka_bootstrap=stack.kafka_bootstrap, redis_url=stack.redis_url)
    ensure_topics(config)
    model = read_model(config)
    models = ModelStore(redis_client(config), config.key_layout())
    needs = load_rules(config).model_needs
    simulation_args = ["simulate", "--users", str(users), "--rate", str(rate), "--seed", str(seed)]
    simulation_args += ["--invalid-share", "0.002", "--truth", str(directory / "truth.jsonl")]
    worker = _start(["worker"], environment, directory / "worker.log")
    trainer = _start(["trainer"], environment, directory / "trainer.log")
    simulator = _start(simulation_args, environment, directory / "simulate.log")
    api = _start(["api"], environment, directory / "api.log")
    console.print(
        f"the console: [bold]http://127.0.0.1:{api_port}/console[/bold], token [bold]{token}"
        "[/bold] (reads and publishes rules; up while the demo runs)",
        soft_wrap=True,
    )
    started = time.monotonic()
    snapshot = _snapshot(model, started, None, models, needs)
    interrupted = False
    try:
        with Live(_live_view(snapshot, duration), console=console, refresh_per_second=4) as live:
            while snapshot.elapsed < duration:
                time.sleep(_REFRESH_SECONDS)
                snapshot = _snapshot(model, started, snapshot, models, needs)
                live.update(_live_view(snapshot, duration))
                if worker.poll() is not None:
                    console.print(f"[red]the worker exited; see {directory / 'worker.log'}")
                    break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stop_process(simulator, 15)
    console.print()
    if not interrupted:
        backlog = _Backlog(config)
        try:
            snapshot = _drain(model, started, snapshot, models, backlog, needs)
        finally:
            backlog.close()
    stop_process(worker, 15)
    stop_process(trainer, 15)
    stop_process(api, 15)
    final = _snapshot(model, started, None, models, needs)
    console.print(_segment_table(final, "segments at the end of the demo"))
    console.print(_cluster_table(final, "clusters at the end of the demo"))
    console.print(_totals(final, final.events / max(snapshot.elapsed, 1e-9)))
    if not interrupted:
        _preview_tightened(console, config)


def _preview_tightened(console: Console, config: Settings) -> None:
    """What `segstream rules preview` says a tightened threshold would change."""
    candidate = parse_rules(tightened_default_rules(), source="tightened")
    client = redis_client(config)
    try:
        report = preview_rules(client, config, load_rules(config), candidate, examples=3)
    finally:
        client.close()
    console.print(
        preview_table(report, "Bargain Hunters' basket ceiling at 30 instead of 50 (a preview)")
    )
