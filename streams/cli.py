"""The `segstream` command line: one entry point for every process and tool."""

from __future__ import annotations

import importlib
import logging
import math
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, Any

import click
import orjson
from rich.progress import ProgressColumn, Task
from rich.text import Text

from processors.rules import RuleFileError, parse_rules
from state.read_model import ReadModel
from streams import logs
from streams.failures import one_line
from streams.kafka import answering
from streams.redis_clients import read_model, redis_client
from streams.settings import Settings, SettingsError

if TYPE_CHECKING:
    from processors.destinations import Destination
    from streams.tools.embedded import Stack

DEV_SETTINGS = {
    "SEGSTREAM_DEV_MODE": "true",
    "SEGSTREAM_ALLOWED_LATENESS_SECONDS": "10",
    "SEGSTREAM_FIRING_DELAY_SECONDS": "1",
    "SEGSTREAM_IDLE_WATERMARK_SECONDS": "5",
}
"""What `dev env` sets beside the stack's addresses: the dev mode, and clocks short enough
that a timed segment moves within seconds of its moment on a quiet stack."""


def _dev_folder() -> Path:
    from streams.tools.embedded.stack import dev_folder

    return dev_folder()


def settings() -> Settings:
    """Settings from the environment; a wrong one ends the command naming it (see
    :class:`_Commands`)."""
    return Settings()


def stop_on_signals() -> threading.Event:
    """An event set by SIGINT or SIGTERM, for loops that end cleanly."""
    stop = threading.Event()

    def handle(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
    return stop


class _Commands(click.Group):
    """segstream's commands: a wrong setting, found at any point of start-up, and every
    expected failure (a broker or Redis that does not answer or refuses the credentials, a
    file that cannot be read) end the command with one line and exit code 1 rather than a
    traceback; `--debug` shows the traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SettingsError as error:
            raise click.ClickException(str(error)) from None
        except click.BadParameter as error:
            if error.param is None or not isinstance(error.param.type, click.Path):
                raise
            raise click.ClickException(error.format_message()) from None
        except Exception as error:
            line = None if ctx.params.get("debug") else one_line(error, _settings_if_valid())
            if line is None:
                raise
            raise click.ClickException(line) from None


def _settings_if_valid() -> Settings | None:
    try:
        return Settings()
    except SettingsError:
        return None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show the traceback of a failure.")
def main(debug: bool) -> None:
    """segstream: streaming user segmentation from Kafka events to Redis.

    Every command reads its settings from SEGSTREAM_* environment variables;
    `segstream dev env` prints the ones that point at the embedded dev stack.
    """
    del debug  # read by the commands' group when one fails
    # One-shot commands speak through their output and their one-line failure; the
    # long-running ones configure logging (streams.logs) and replace this.
    logging.getLogger().addHandler(logging.NullHandler())


@main.command()
def worker() -> None:
    """Consume events in batches and keep users' segments current in Redis.

    With SEGSTREAM_METRICS_PORT set, serves `/metrics`, `/healthz` and `/readyz`.
    """
    from state.redis_store import EarlierLayoutError
    from streams.health import Probe, serve
    from streams.rules_feed import load_rules
    from streams.topics import ensure_topics
    from streams.worker.loop import PartitionCountError, Worker
    from streams.worker.parts import build_parts

    config = settings()
    logs.configure(config.log_level)
    try:
        rules = load_rules(config)
    except (OSError, RuleFileError) as error:
        raise click.ClickException(f"rules file refused: {error}") from None
    probe = Probe(stale_after=max(60.0, config.session_timeout_ms / 100))
    if config.metrics_port:
        serve(config.metrics_host, config.metrics_port, probe)
    ensure_topics(config)
    try:
        Worker(config, rules, build_parts(config), probe).run(stop_on_signals())
    except (PartitionCountError, EarlierLayoutError) as error:
        raise click.ClickException(str(error)) from None


@main.command()
def trainer() -> None:
    """Learn the clustering model from the workers' feature vectors and publish snapshots.

    A Faust app: one agent over the features topic, a snapshot timer, and a
    web endpoint (`/model`, `/metrics`) on SEGSTREAM_TRAINER_WEB_PORT.
    """
    from streams.topics import ensure_topics
    from streams.trainer.app import run

    config = settings()
    ensure_topics(config)
    run(config)


@main.command()
def collector() -> None:
    """Take Segment HTTP Tracking API calls (POST /v1/track, /v1/batch, ...) into the events topic.

    Serves on SEGSTREAM_HTTP_HOST:SEGSTREAM_COLLECTOR_PORT, with `/metrics`,
    `/healthz`, `/readyz` and its OpenAPI schema at `/openapi.json`. Needs
    SEGSTREAM_WRITE_KEYS.
    """
    _serve("collector")


@main.command()
def api() -> None:
    """Serve users' segments, segment definitions and members, and erasure over HTTP.

    Serves on SEGSTREAM_HTTP_HOST:SEGSTREAM_API_PORT with bearer-token auth
    (SEGSTREAM_API_TOKENS), `/metrics`, `/healthz`, `/readyz` and its OpenAPI
    schema at `/openapi.json`.
    """
    _serve("api")


def _serve(service: str) -> None:
    """Run `streams.services.<service>` on its port (`SEGSTREAM_<SERVICE>_PORT`)."""
    from streams.services.serve import serve

    config = settings()
    module = importlib.import_module(f"streams.services.{service}")
    serve(config, module.build_app, getattr(config, f"{service}_port"))


@main.command()
@click.option("--events", default=1_000_000, show_default=True, help="Events to preload.")
@click.option("--users", default=100_000, show_default=True, help="Simulated users.")
@click.option("--partitions", default=4, show_default=True, help="Partitions of the topic.")
@click.option(
    "--naive-seconds", default=60.0, show_default=True, help="How long the baseline runs."
)
@click.option("--freshness-seconds", default=30.0, show_default=True, help="Live load duration.")
@click.option("--lookup-rps", default=1_000, show_default=True, help="Read API requests/s.")
@click.option("--lookup-seconds", default=10.0, show_default=True, help="Lookup load duration.")
@click.option(
    "--redis-cluster", is_flag=True, help="Measure on a Redis Cluster of three local masters."
)
@click.option(
    "--webhook-changes",
    default=20_000,
    show_default=True,
    type=click.IntRange(2),
    help="Changes timed at a healthy webhook receiver.",
)
@click.option(
    "--flaky-changes",
    default=10_000,
    show_default=True,
    type=click.IntRange(1),
    help="Changes a receiver answering 503 twice before each 200 must take.",
)
@click.option(
    "--preview-users",
    default=100_000,
    show_default=True,
    type=click.IntRange(1),
    help="Users the rules preview is timed over.",
)
@click.option(
    "--console-requests",
    default=200,
    show_default=True,
    type=click.IntRange(1),
    help="Requests timed per console page (over the preview's users).",
)
@click.option(
    "--act-seconds",
    default=20.0,
    show_default=True,
    type=click.FloatRange(5),
    help="Seconds of live events with abandoned-cart probes (time to act).",
)
@click.option(
    "--edge-seconds",
    default=10.0,
    show_default=True,
    type=click.FloatRange(1),
    help="Seconds each of the collector's measurements runs.",
)
@click.option(
    "--edge-rate",
    default=5_000.0,
    show_default=True,
    type=click.FloatRange(1),
    help="Single tracker calls/s for the tracker to label.",
)
@click.option(
    "--kafka",
    metavar="BOOTSTRAP",
    help="Measure on this Kafka (with --redis) instead of an embedded one; "
    "SEGSTREAM_KAFKA_* security settings apply as for the worker.",
)
@click.option(
    "--redis",
    "redis_url",
    metavar="URL",
    help="Measure on this Redis (with --kafka); SEGSTREAM_REDIS_CLUSTER=true for a cluster.",
)
@click.option(
    "--rules",
    "rules_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Measure one worker again with this rules file (its events/s, share of the I/O "
    "floor and Redis bytes per user).",
)
@click.option("--json", "json_file", type=click.Path(path_type=Path), help="Write figures here.")
def bench(
    events: int,
    users: int,
    partitions: int,
    naive_seconds: float,
    freshness_seconds: float,
    lookup_rps: int,
    lookup_seconds: float,
    redis_cluster: bool,
    webhook_changes: int,
    flaky_changes: int,
    preview_users: int,
    console_requests: int,
    act_seconds: float,
    edge_seconds: float,
    edge_rate: float,
    kafka: str | None,
    redis_url: str | None,
    rules_file: Path | None,
    json_file: Path | None,
) -> None:
    """Measure segstream against a naive Faust pipeline and the raw Kafka limit, in one run.

    Starts the embedded broker and Redis (or uses yours: --kafka and --redis, with
    topics, groups and keys of its own, removed afterwards), preloads simulated events,
    and prints throughput (one and two workers, the baseline, the raw limit), freshness,
    Redis bytes per user, read API lookup latency, webhooks (deliveries/s, a flaky
    receiver, time to act on an abandoned cart), the console's pages, the collector
    (batch and single-call rates, tracker to label) and rebalances (a rolling restart, a
    killed worker). With --redis-cluster, the store is a Redis Cluster of three masters
    started on this machine.
    """
    from rich.console import Console

    from streams.tools.bench.run import BenchConfig, run_bench
    from streams.tools.bench.table import bench_table

    console = Console()
    config = BenchConfig(
        events=events,
        users=users,
        partitions=partitions,
        naive_seconds=naive_seconds,
        freshness_seconds=freshness_seconds,
        lookup_rps=lookup_rps,
        lookup_seconds=lookup_seconds,
        redis_cluster=redis_cluster,
        webhook_changes=webhook_changes,
        flaky_changes=flaky_changes,
        preview_users=preview_users,
        console_requests=console_requests,
        act_seconds=act_seconds,
        edge_seconds=edge_seconds,
        edge_rate=edge_rate,
        kafka=kafka,
        redis=redis_url,
        rules=rules_file,
    )
    if (kafka is None) != (redis_url is None):
        raise click.UsageError("--kafka and --redis go together")
    figures = run_bench(config, lambda step: console.print(f"[dim]… {step}[/dim]"))
    console.print(bench_table(figures))
    if json_file is not None:
        json_file.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2) + b"\n")


@main.command("evaluate")
@click.option(
    "--truth",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Ground truth, JSON Lines of {user_id, persona} (as `simulate --truth` writes).",
)
@click.option(
    "--output",
    default=Path("evaluation"),
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for report.md and the PNG plots.",
)
@click.option(
    "--sample",
    default=5_000,
    show_default=True,
    type=click.IntRange(10),
    help="Users to sample from Redis.",
)
@click.option("--seed", default=7, show_default=True, type=int, help="Sampling and k-means seed.")
def evaluate_command(truth: Path | None, output: Path, sample: int, seed: int) -> None:
    """Measure the clustering model on a sample of users; write a report and plots."""
    from processors.model import SnapshotError
    from state.model_store import ModelStore
    from state.redis_store import RedisStateStore
    from streams.tools.evaluate import EvaluationError, evaluate_model, read_truth, write_report

    config = settings()
    client = redis_client(config)
    keys = config.key_layout()
    try:
        evaluation = evaluate_model(
            RedisStateStore(client, keys, config.group_id),
            ModelStore(client, keys),
            ReadModel(client, keys),
            sample=sample,
            seed=seed,
            truth=read_truth(truth) if truth else None,
        )
    except (EvaluationError, SnapshotError) as error:
        raise click.ClickException(str(error)) from None
    report = write_report(evaluation, output)
    a = evaluation.assessment
    click.echo(
        f"model v{evaluation.snapshot.version}: k={a.k}, {a.placed}/{a.users} users placed, "
        f"silhouette {a.silhouette if a.silhouette is None else round(a.silhouette, 3)}"
    )
    if a.online_ari is not None:
        click.echo(
            f"ARI vs truth: online {a.online_ari:.3f}, offline {a.offline_ari:.3f} "
            f"(ratio {a.ari_ratio:.2f}); NMI online {a.online_nmi:.3f}, "
            f"offline {a.offline_nmi:.3f}"
        )
    click.echo(f"report: {report}")


@main.command()
def migrate() -> None:
    """Convert a store written before keys carried partition hash tags, in place.

    Run it once, with no worker running; a store already converted is left as it is.
    """
    from state.migration import MigrationError, migrate

    config = settings()
    client = redis_client(config)
    try:
        moved = migrate(client, config.key_layout())
    except MigrationError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"moved {moved} keys to the partition-tagged layout" if moved else "nothing to do")


@main.command()
def topics() -> None:
    """Create the Kafka topics segstream uses (those that do not exist yet)."""
    from streams.topics import ensure_topics

    config = settings()
    answering(config)
    created = ensure_topics(config)
    click.echo(f"created: {', '.join(created)}" if created else "all topics exist")


@main.command()
@click.option("--users", default=1_000, show_default=True, type=click.IntRange(1), help="Shoppers.")
@click.option(
    "--seed", default=1, show_default=True, type=int, help="Random seed; fixes the stream."
)
@click.option(
    "--rate",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Events per second; 0 sends as fast as possible.",
)
@click.option(
    "--duration",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0),
    help="Stop after this many seconds; 0 runs until the history is exhausted.",
)
@click.option("--events", "limit", default=0, type=click.IntRange(0), help="Stop after N events.")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write JSON Lines to this file instead of producing to Kafka ('-' for stdout).",
)
@click.option(
    "--truth",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write each user's persona (JSON Lines) [default: OUTPUT.truth.jsonl, "
    "or truth.jsonl in the dev stack's folder].",
)
@click.option(
    "--end",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    help="Event time (UTC) the simulated history ends at [default: 2026-11-01].",
)
@click.option(
    "--days",
    type=click.FloatRange(0, min_open=True),
    help="Only the last DAYS days of each shopper's history [default: all 180].",
)
@click.option(
    "--invalid-share",
    default=0.0,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="Share of malformed events to mix in, to exercise the dead-letter topic.",
)
@click.option(
    "--scenario",
    type=click.Choice(["shop", "media"]),
    default="shop",
    show_default=True,
    help="Shoppers of a web shop, or viewers of a streaming service (custom events, "
    "properties and traits, for processors/rules/media.yaml).",
)
def simulate(
    users: int,
    seed: int,
    rate: float,
    duration: float,
    limit: int,
    output: Path | None,
    truth: Path | None,
    end: datetime | None,
    invalid_share: float,
    days: float | None,
    scenario: str,
) -> None:
    """Stream simulated shoppers (or viewers) drawn from personas to Kafka or to a file."""
    from streams.tools.media import MediaSimulation
    from streams.tools.simulate import FileSink, KafkaSink, Population, send
    from streams.tools.simulator import DEFAULT_END, Simulation

    end_time = end.replace(tzinfo=UTC).timestamp() if end else DEFAULT_END
    simulation: Population
    if scenario == "media":
        if invalid_share:
            raise click.UsageError("--invalid-share is for the shop scenario")
        simulation = MediaSimulation(users, seed, end=end_time, days=days or 30.0)
    else:
        simulation = Simulation(users, seed, end=end_time, invalid_share=invalid_share, days=days)
    truth_path = truth or (
        output.with_name(output.name + ".truth.jsonl")
        if output and str(output) != "-"
        else _dev_folder() / "truth.jsonl"
    )
    truth_path.parent.mkdir(parents=True, exist_ok=True)
    with truth_path.open("wb") as handle:
        for row in simulation.truth():
            handle.write(orjson.dumps(row) + b"\n")
    stop = stop_on_signals()
    if output is not None:
        with click.open_file(str(output), "wb") as handle:
            sent = send(simulation, FileSink(handle), rate, duration, limit, stop)
    else:
        config = settings()
        answering(config)
        sent = send(simulation, KafkaSink(config), rate, duration, limit, stop)
    click.echo(f"sent {sent} events from {users} users; personas in {truth_path}", err=True)


def _event_time(text: str | None) -> float | None:
    """An ISO-8601 time (UTC when no offset is given) or epoch seconds."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is neither ISO-8601 nor epoch seconds") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


@main.command()
@click.argument("file", type=click.File("rb"))
@click.option(
    "--until",
    help="After the events, advance every partition's watermark to this time "
    "(ISO-8601 or epoch seconds), so time-based features are as of it.",
)
@click.option(
    "--run-events",
    default=500_000,
    show_default=True,
    type=click.IntRange(1_000),
    help="Events sorted in memory at once; larger files are merged from sorted runs on disk.",
)
@click.option("--timeout", default=3_600.0, show_default=True, help="Seconds to wait for workers.")
@click.option(
    "--rate",
    type=click.FloatRange(min=1, min_open=False),
    help="Send at most this many events a second (default: as fast as the broker takes them).",
)
def replay(
    file: IO[bytes], until: str | None, run_events: int, timeout: float, rate: float | None
) -> None:
    """Send a JSON Lines export through the workers in event-time order, and wait for them."""
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from streams.tools.replay import replay as run_replay

    config = settings()
    until_time = _event_time(until)
    answering(config)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TextColumn("{task.completed:,}"))
    with Progress(*columns, transient=False) as progress:
        sending = progress.add_task("events sent", total=None)
        applying = progress.add_task("offsets applied by the workers", total=None)
        sent = run_replay(
            config,
            file,
            until=until_time,
            run_events=run_events,
            timeout=timeout,
            rate=rate,
            on_sent=lambda n: progress.update(sending, completed=n),
            on_applied=lambda n: progress.update(applying, completed=n),
        )
    click.echo(f"replayed {sent} events" + (f"; watermarks at {until}" if until else ""), err=True)


@main.group()
def dlq() -> None:
    """Read the dead-letter topic: refused events with why, and send them back once fixed."""


_SINCE = click.option(
    "--since", help="Only letters written from this time (ISO-8601 or epoch seconds)."
)
_UNTIL = click.option("--until", help="Only letters written up to this time.")
_REASON = click.option("--reason", help="Only letters of this reason (invalid_json, late, ...).")


@dlq.command("tail")
@_REASON
@_SINCE
@click.option("--follow", "-f", is_flag=True, help="Keep printing letters as they come.")
def dlq_tail(reason: str | None, since: str | None, follow: bool) -> None:
    """Print dead letters as JSON lines: body, reason, detail, source, partition, offset, time."""
    from streams.tools.dead_letters import read

    config = settings()
    answering(config)
    stop = stop_on_signals()
    letters = read(
        config,
        since=_event_time(since),
        reason=reason,
        follow=(lambda: not stop.is_set()) if follow else None,
    )
    for letter in letters:
        click.echo(orjson.dumps(letter.line()).decode())


@dlq.command("stats")
@_SINCE
@_UNTIL
def dlq_stats(since: str | None, until: str | None) -> None:
    """Count the dead letters by reason."""
    from streams.tools.dead_letters import read, stats

    config = settings()
    answering(config)
    counted = stats(read(config, since=_event_time(since), until=_event_time(until)))
    for reason, count in sorted(counted.items(), key=lambda item: (-item[1], item[0])):
        click.echo(f"{reason}\t{count}")
    click.echo(f"total\t{counted.total()}")


@dlq.command("replay")
@_REASON
@_SINCE
@_UNTIL
def dlq_replay(reason: str | None, since: str | None, until: str | None) -> None:
    """Send dead letters back to the events topic (each once, with its original key), after
    the producer or the rules were fixed; letters the workers refuse again come back here."""
    from streams.tools.dead_letters import read, replay

    config = settings()
    answering(config)
    letters = read(config, since=_event_time(since), until=_event_time(until), reason=reason)
    sent = replay(config, letters)
    click.echo(f"sent {sent} dead letters back to {config.events_topic}", err=True)


@main.group()
def dev() -> None:
    """Run the embedded broker and Redis in the background for development."""


_DEV_FOLDER_HELP = "Where the stack keeps its logs, data and state file [default: a folder "
_DEV_FOLDER_HELP += "of ~/.cache/segstream for this project, the same from any directory]."


@dev.command("up")
@click.option(
    "--dir",
    "directory",
    default=_dev_folder,
    type=click.Path(file_okay=False, path_type=Path),
    help=_DEV_FOLDER_HELP,
)
def dev_up(directory: Path) -> None:
    """Start the broker and Redis, remember them, and print their settings."""
    from streams.tools.embedded import Stack, StackError, start_stack

    state_file = directory / "dev.json"
    if state_file.exists() and Stack.load(state_file).alive():
        raise click.ClickException(f"a dev stack already runs (see {state_file})")
    try:
        stack = start_stack(directory.resolve())
    except StackError as error:
        raise click.ClickException(str(error)) from None
    stack.save(state_file)
    _print_environment(stack)


@dev.command("env")
@click.option(
    "--dir",
    "directory",
    default=_dev_folder,
    type=click.Path(path_type=Path),
    help=_DEV_FOLDER_HELP,
)
def dev_env(directory: Path) -> None:
    """Print `export SEGSTREAM_...` lines for the running dev stack (eval them)."""
    _print_environment(_running_dev_stack(directory))


@dev.command("down")
@click.option(
    "--dir",
    "directory",
    default=_dev_folder,
    type=click.Path(path_type=Path),
    help=_DEV_FOLDER_HELP,
)
def dev_down(directory: Path) -> None:
    """Stop the dev stack's broker and Redis."""
    from streams.tools.embedded import Stack

    state_file = directory / "dev.json"
    if not state_file.exists():
        raise click.ClickException("no dev stack is running (`segstream dev up` starts one)")
    Stack.load(state_file).stop()
    state_file.unlink()
    click.echo("dev stack stopped", err=True)


def _running_dev_stack(directory: Path) -> Stack:
    from streams.tools.embedded import Stack

    state_file = directory / "dev.json"
    if not state_file.exists():
        raise click.ClickException("no dev stack is running (`segstream dev up` starts one)")
    stack = Stack.load(state_file)
    if not stack.alive():
        raise click.ClickException(
            f"the dev stack in {state_file} has stopped; run `segstream dev down`"
        )
    return stack


def _print_environment(stack: Stack) -> None:
    for name, value in {**stack.environment(), **DEV_SETTINGS}.items():
        click.echo(f"export {name}={value}")


@main.command()
@click.argument("user_id")
def profile(user_id: str) -> None:
    """Print one user's features, traits, computed traits and segments as JSON."""
    from streams.rules_feed import in_force

    configured = settings()
    current = in_force(configured)
    found = read_model(configured, current.rules, current.keys(configured)).user(user_id)
    if found is None:
        raise click.ClickException(f"no profile for user {user_id!r}")
    click.echo(orjson.dumps(found, option=orjson.OPT_INDENT_2).decode())


@main.group()
def profiles() -> None:
    """Work with every user's profile at once."""


@profiles.command("export")
@click.option(
    "--output",
    default="-",
    show_default=True,
    type=click.Path(dir_okay=False, allow_dash=True),
    help="JSON Lines file to write ('-' for stdout).",
)
def profiles_export(output: str) -> None:
    """Write every profile as JSON Lines: user_id, features, traits, computed traits (those
    of the rules in force), segments, as_of."""
    from streams.rules_feed import in_force

    configured = settings()
    current = in_force(configured)
    count = 0
    with click.open_file(output, "wb") as sink:
        for document in read_model(configured, current.rules, current.keys(configured)).users():
            sink.write(orjson.dumps(document, option=orjson.OPT_SORT_KEYS) + b"\n")
            count += 1
    click.echo(f"exported {count} profiles", err=True)


@main.group()
def rules() -> None:
    """Check rule files and publish them to the running workers."""


@rules.command("validate")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def rules_validate(file: Path) -> None:
    """Check a rules file; print every error with its line and field, or what its computed
    traits add to each user's state."""
    from processors.rule_cost import state_costs

    try:
        parsed = parse_rules(file.read_text(encoding="utf-8"), source=str(file))
    except RuleFileError as error:
        click.echo(str(error), err=True)
        sys.exit(1)
    click.echo(f"{file}: {len(parsed.names)} segments, digest {parsed.digest}")
    costs = list(state_costs(parsed))
    if costs:
        click.echo("state per user of its computed traits, sequences and absences:")
        for line in costs:
            click.echo(f"  {line}")


@rules.command("apply")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--reevaluate", is_flag=True, help="Re-label every known user now, not only as they act."
)
@click.option(
    "--backfill",
    is_flag=True,
    help="Build the rules' state from the events topic's history in a new generation, "
    "then switch to it.",
)
@click.option("--no-wait", is_flag=True, help="With --backfill: return once the build started.")
@click.option(
    "--accept-partial-history",
    is_flag=True,
    help="With --backfill: build even when the topic no longer holds all the rules read.",
)
def rules_apply(
    file: Path, reevaluate: bool, backfill: bool, no_wait: bool, accept_partial_history: bool
) -> None:
    """Publish a rules file as the next version; running workers switch within seconds (with
    --backfill, once they have rebuilt every user from the events topic)."""
    from streams.rules_feed import publish
    from streams.topics import ensure_topics

    if reevaluate and backfill:
        raise click.UsageError("--backfill re-evaluates every user already: not both")
    if (no_wait or accept_partial_history) and not backfill:
        raise click.UsageError("--no-wait and --accept-partial-history go with --backfill")
    config = settings()
    text = file.read_text(encoding="utf-8")
    try:
        parse_rules(text, source=str(file))  # refused with line and field before any I/O
        answering(config)
        ensure_topics(config)
        if backfill:
            _backfill(config, text, str(file), wait=not no_wait, partial=accept_partial_history)
            return
        published = publish(config, text, str(file), reevaluate=reevaluate)
    except RuleFileError as error:
        click.echo(str(error), err=True)
        sys.exit(1)
    click.echo(f"published {file} as rules {published.label} ({len(published.names)} segments)")


def _backfill(config: Settings, text: str, source: str, *, wait: bool, partial: bool) -> None:
    """Check the history, start a build of the next generation and, with `wait`, show its
    progress until the workers switch to it."""
    from processors.history import needed_seconds, segments_needing
    from streams.generations import footprint, retained, start_build
    from streams.rules_feed import in_force

    rules = parse_rules(text, source=source)
    history = retained(config)
    now = time.time()
    problem = history.problem(needed_seconds(rules) + config.allowed_lateness_seconds, now)
    inexact: tuple[str, ...] = ()
    if problem is not None:
        if not partial:
            click.echo(f"refused: {problem} (--accept-partial-history builds anyway)", err=True)
            sys.exit(1)
        available = history.reach(now) - config.allowed_lateness_seconds
        inexact = tuple(segments_needing(rules, available))
        click.echo(f"{problem}; not exact: {', '.join(inexact) or 'none'}", err=True)
    click.echo(footprint(config, in_force(config), rules).text())
    build = start_build(config, text, source, inexact)
    click.echo(f"building generation {build.generation} for rules v{build.version} from {source}")
    if wait:
        _follow_build(config, build.generation, build.version)


def _follow_build(config: Settings, generation: int, version: int) -> None:
    """A progress bar of the build until the rules are served from it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from streams.generations import BuildFeed, build_progress
    from streams.rules_feed import RulesFeed

    served, builds = RulesFeed(config), BuildFeed(config)
    columns = (BarColumn(), MofNCompleteColumn(), _RateColumn(), TimeRemainingColumn())
    try:
        current = served.catch_up()
        builds.catch_up()
        with Progress(*columns, transient=True) as bar:
            task = bar.add_task("rebuilt", total=None)
            moved, built = time.monotonic(), -1
            while current is None or current.generation != generation:
                if builds.generation > generation:
                    raise click.ClickException(f"generation {generation} was replaced")
                done = build_progress(config, generation)
                bar.update(task, completed=done.built, total=done.total)
                if done.built != built:
                    moved, built = time.monotonic(), done.built
                elif time.monotonic() - moved > _STILL:
                    bar.console.print(
                        f"nothing rebuilt for {_STILL:.0f} s: are workers running (segstream "
                        "worker)? The build goes on once they are; Ctrl-C leaves it building.",
                        style="yellow",
                    )
                    moved = math.inf
                time.sleep(0.5)
                current = served.poll() or current
                builds.poll()
    finally:
        served.close()
        builds.close()
    click.echo(f"rules v{version} are served from generation {generation}")


_STILL = 30.0
"""Seconds without progress after which `rules apply --backfill` says workers may be missing."""


class _RateColumn(ProgressColumn):
    """Events rebuilt a second."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:,.0f} events/s")


@rules.command("status")
def rules_status() -> None:
    """The rules in force and the generation serving them, and any build and its progress."""
    from streams.generations import BuildFeed, build_progress
    from streams.rules_feed import in_force

    config = settings()
    current = in_force(config)
    click.echo(f"rules {current.rules.label} served from generation {current.generation}")
    builds = BuildFeed(config)
    try:
        build = builds.catch_up()
    finally:
        builds.close()
    if build is None or build.generation <= current.generation:
        click.echo("no build")
        return
    done = build_progress(config, build.generation)
    share = done.built / done.total if done.total else 1.0
    click.echo(
        f"building generation {build.generation} for rules v{build.version}: "
        f"{done.built:,} of {done.total:,} events ({share:.0%})"
    )
    if build.partial:
        click.echo(f"not exact for lack of history: {', '.join(build.partial)}")


@rules.command("preview")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object, nothing else.")
@click.option(
    "--sample",
    default=5,
    show_default=True,
    type=click.IntRange(0, 1_000),
    help="Example ids of users entering and leaving, per segment.",
)
def rules_preview(file: Path, as_json: bool, sample: int) -> None:
    """Evaluate a candidate rules file against every stored user, exactly, changing nothing:
    members now and with it, who enters and who leaves, per segment."""
    from streams.rules_feed import in_force
    from streams.rules_preview import preview_rules

    config = settings()
    try:
        candidate = parse_rules(file.read_text(encoding="utf-8"), source=str(file))
    except RuleFileError as error:
        click.echo(str(error), err=True)
        sys.exit(1)
    current = in_force(config)
    client = redis_client(config)
    try:
        report = preview_rules(
            client, config, current.rules, candidate, sample, current.keys(config)
        )
    finally:
        client.close()
    if as_json:
        click.echo(orjson.dumps(report).decode())
        return
    from rich.console import Console

    from streams.tools.preview_table import preview_table

    Console().print(preview_table(report, str(file)))


@main.command()
@click.option(
    "--duration", default=60.0, show_default=True, type=click.FloatRange(1), help="Seconds."
)
@click.option("--users", default=1_000, show_default=True, type=click.IntRange(1))
@click.option(
    "--rate", default=5_000.0, show_default=True, type=click.FloatRange(1), help="Events/s."
)
@click.option("--seed", default=1, show_default=True, type=int)
def demo(duration: float, users: int, rate: float, seed: int) -> None:
    """Start everything on the embedded stack and watch shoppers being segmented live."""
    from streams.tools.demo import run_demo

    started = time.monotonic()
    run_demo(duration=duration, users=users, rate=rate, seed=seed)
    click.echo(f"demo finished in {time.monotonic() - started:.0f} s", err=True)


@main.group()
def destinations() -> None:
    """Check and publish webhook destination files (where segment changes are sent)."""


@destinations.command("validate")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def destinations_validate(file: Path) -> None:
    """Check a destinations file; print every error with its line and field."""
    from processors.destinations import DestinationFileError, parse_destinations

    try:
        found = parse_destinations(file.read_text(encoding="utf-8"), source=str(file))
    except DestinationFileError as error:
        click.echo(str(error), err=True)
        sys.exit(1)
    names = ", ".join(destination.name for destination in found)
    click.echo(f"{file}: {len(found)} destinations ({names})")
    _warn_of_unknown_segments(found)


def _warn_of_unknown_segments(found: list[Destination]) -> None:
    """Warn (on stderr) of segment filters the rules in force do not have."""
    from processors.destinations import unknown_segments
    from streams.rules_feed import in_force

    try:
        config = settings()
        answering(config, timeout=3.0)
        current = in_force(config).rules
    except Exception as error:
        line = one_line(error, _settings_if_valid())
        if line is None:
            raise
        click.echo(
            f"warning: segment names not checked against the rules in force: {line}", err=True
        )
        return
    for warning in unknown_segments(found, current.names):
        click.echo(f"warning: {warning} (version {current.version})", err=True)


@destinations.command("apply")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def destinations_apply(file: Path) -> None:
    """Publish a destinations file; running deliverers switch to it within a second."""
    from processors.destinations import DestinationFileError, parse_destinations
    from streams.deliver.destinations_feed import publish
    from streams.topics import ensure_topics

    config = settings()
    text = file.read_text(encoding="utf-8")
    try:
        parse_destinations(text, source=str(file))  # refused before the broker is asked
    except DestinationFileError as error:
        click.echo(str(error), err=True)
        sys.exit(1)
    answering(config)
    ensure_topics(config)
    published = publish(config, text, str(file))
    names = ", ".join(destination.name for destination in published) or "none"
    click.echo(f"published {file}: {len(published)} destinations ({names})")


@main.command()
def deliver() -> None:
    """Send segment changes to webhook destinations: the file last published with
    `segstream destinations apply`, or SEGSTREAM_DESTINATIONS_FILE until one is.

    Signed as Standard Webhooks, at least once and in order per user; refused and
    undeliverable changes go to the deliveries dead-letter topic. With
    SEGSTREAM_METRICS_PORT set, serves `/metrics`, `/healthz` and `/readyz`.
    """
    import asyncio

    from processors.destinations import DestinationFileError, MissingSecretError
    from streams.deliver.deliverer import deliver as run_deliveries
    from streams.deliver.destinations_feed import Configured
    from streams.health import Probe, serve
    from streams.topics import ensure_topics

    config = settings()
    logs.configure(config.log_level)
    fallback = None
    if config.destinations_file is not None:
        path = config.destinations_file
        try:
            fallback = Configured.parse(path.read_text(encoding="utf-8"), str(path))
        except (DestinationFileError, MissingSecretError) as error:
            raise click.ClickException(f"destinations refused: {error}") from None
    probe = Probe(stale_after=60.0)
    if config.metrics_port:
        serve(config.metrics_host, config.metrics_port, probe)
    ensure_topics(config)
    asyncio.run(run_deliveries(config, fallback, stop_on_signals(), probe))
