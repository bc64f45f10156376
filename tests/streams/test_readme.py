"""The README and the docs tell the truth about settings and commands."""

from pathlib import Path

from streams.settings import settings_table

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()


def test_settings_table_matches_the_code():
    assert settings_table() in (ROOT / "docs" / "settings.md").read_text()


def test_the_readme_links_only_to_docs_that_exist():
    import re

    for target in re.findall(r"\]\((docs/[^)#]+)", README):
        assert (ROOT / target).exists(), target


def test_the_two_commands_come_first():
    assert README.index("make demo") < README.index("## How it fits together")
    assert README.index("make test") < README.index("## How it fits together")
