"""The README tells the truth about settings and commands."""

from pathlib import Path

from streams.settings import settings_table

README = (Path(__file__).parents[2] / "README.md").read_text()


def test_settings_table_matches_the_code():
    assert settings_table() in README


def test_the_two_commands_come_first():
    assert README.index("make demo") < README.index("## How it fits together")
    assert README.index("make test") < README.index("## How it fits together")
