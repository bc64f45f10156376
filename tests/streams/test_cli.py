"""The command line: help everywhere, clear errors, and the offline commands."""

import click
import orjson
import pytest
from click.testing import CliRunner

from streams.cli import main


def all_commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from all_commands(command, (*prefix, name))


@pytest.mark.parametrize(
    "path", [(), *all_commands(main)], ids=lambda p: " ".join(p) or "segstream"
)
def test_every_command_has_help(path):
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output
    assert len(result.output.splitlines()) > 3


def test_a_wrong_setting_stops_a_command_naming_it(monkeypatch):
    monkeypatch.setenv("SEGSTREAM_BATCH_MAX_EVENTS", "-5")
    result = CliRunner().invoke(main, ["profile", "someone"])
    assert result.exit_code == 1
    assert "invalid setting SEGSTREAM_BATCH_MAX_EVENTS=-5" in result.output


def test_simulate_to_a_file_writes_events_and_truth(tmp_path):
    output = tmp_path / "events.jsonl"
    result = CliRunner().invoke(
        main, ["simulate", "--users", "30", "--seed", "2", "--output", str(output)]
    )
    assert result.exit_code == 0, result.output
    lines = output.read_bytes().splitlines()
    truth = [
        orjson.loads(line)
        for line in (tmp_path / "events.jsonl.truth.jsonl").read_bytes().splitlines()
    ]
    assert len(truth) == 30
    assert {row["persona"] for row in truth} <= {
        "bargain_hunter", "luxury_buyer", "frequent_browser", "cart_abandoner", "lapsed_customer", "new_visitor"
    }  # fmt: skip
    assert len(lines) > 30 * 10
    assert all(orjson.loads(line)["timestamp"].endswith("Z") for line in lines[:50])


def test_simulate_event_limit(tmp_path):
    output = tmp_path / "events.jsonl"
    args = ["simulate", "--users", "30", "--events", "123", "--output", str(output)]
    assert CliRunner().invoke(main, args).exit_code == 0
    assert len(output.read_bytes().splitlines()) == 123


def test_rules_validate_reports_lines(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "segments:\n  - name: A\n    description: d\n    condition: {feature: nope, op: '>', value: 1}\n"
    )
    result = CliRunner().invoke(main, ["rules", "validate", str(bad)])
    assert result.exit_code == 1
    assert "line 4, segments[0].condition.feature: unknown feature 'nope'" in result.output


def test_destinations_validate_reports_lines_or_the_destinations(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("destinations:\n  - name: crm\n    url: http://x\n    secret: nope\n")
    result = CliRunner().invoke(main, ["destinations", "validate", str(bad)])
    assert result.exit_code == 1
    assert "line 4, destinations[0].secret: a secret starts with whsec_" in result.output
    good = tmp_path / "good.yaml"
    good.write_text("destinations:\n  - {name: crm, url: 'http://x', secret_env: CRM_SECRET}\n")
    result = CliRunner().invoke(main, ["destinations", "validate", str(good)])
    assert result.exit_code == 0, result.output
    assert "1 destinations (crm)" in result.output
