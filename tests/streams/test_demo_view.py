"""The demo's tables: their titles stay on one line, however few users there are yet."""

import dataclasses
import io

from rich.console import Console

from streams.tools.demo import Snapshot, _cluster_table, _segment_table

NOTHING_YET = Snapshot(
    elapsed=7.0,
    events=0,
    dead_letters=0,
    users=0,
    changes=0,
    rate=0.0,
    sizes={},
    clusters={},
    names={},
    model_version=None,
    waiting=frozenset(),
)


def rendered(table) -> str:
    output = io.StringIO()
    Console(file=output, width=80).print(table)
    return output.getvalue()


def test_empty_tables_keep_their_titles_on_one_line():
    assert "segments at the end of the demo" in rendered(
        _segment_table(NOTHING_YET, "segments at the end of the demo")
    )
    assert "clusters at the end of the demo (no model yet)" in rendered(
        _cluster_table(NOTHING_YET, "clusters at the end of the demo")
    )


def test_a_segment_waiting_for_a_threshold_says_so():
    waiting = dataclasses.replace(
        NOTHING_YET,
        users=4,
        sizes={"High Spenders": 0, "Browsers": 4},
        waiting=frozenset({"High Spenders"}),
    )
    shown = rendered(_segment_table(waiting, "live segments"))
    assert "High Spenders (waits for the trainer's model)" in shown
    assert "Browsers (waits" not in shown
