"""A rules preview (:mod:`streams.rules_preview`) as the table `segstream rules preview`
prints.

>>> report = {"as_of": "2026-11-29T10:00:00.000+00:00", "users": 3, "current_rules": "v2",
...           "segments": [{"name": "Buyers", "now": 2, "candidate": 1, "entering": 0,
...                         "leaving": 1, "examples": {"entering": [], "leaving": ["ann"]},
...                         "limits": []}]}
>>> [cell for cell in preview_table(report, "new.yaml").columns[5].cells]
['-ann']
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

from streams.settings import default_rules_file

_BASKET = '{feature: avg_order_value, op: "<", value: 50}'


def tightened_default_rules() -> str:
    """The default rules with Bargain Hunters' basket ceiling tightened from 50 to 30: the
    candidate the demo and the bench preview.

    >>> "value: 30}" in tightened_default_rules()
    True
    """
    text = default_rules_file().read_text(encoding="utf-8")
    return text.replace(_BASKET, _BASKET.replace("50", "30"))


def preview_table(report: dict[str, Any], candidate: str) -> Table:
    """Per segment: members now and with `candidate`, the change, who enters and leaves."""
    table = Table(
        title=f"{candidate} against {report['users']:,} users (rules {report['current_rules']} "
        f"in force), as of {report['as_of']}",
        caption="\n".join(
            [
                f"{segment['name']}: {limit}"
                for segment in report["segments"]
                for limit in segment["limits"]
            ]
            + [
                f"{segment['name']}: waits for a model snapshot giving "
                f"{', '.join(segment['lacking'])} (segstream trainer publishes them); "
                "false for everyone until then"
                for segment in report["segments"]
                if segment.get("lacking")
            ]
        )
        or None,
    )
    for column in ("segment", "now", "candidate", "entering", "leaving", "for example"):
        table.add_column(column, justify="right" if column in ("now", "candidate") else "left")
    for segment in report["segments"]:
        examples = segment["examples"]
        shown = [f"+{user}" for user in examples["entering"]]
        shown += [f"-{user}" for user in examples["leaving"]]
        table.add_row(
            segment["name"] + (" (waits for a model)" if segment.get("lacking") else ""),
            f"{segment['now']:,}",
            f"{segment['candidate']:,}",
            f"+{segment['entering']:,}" if segment["entering"] else "",
            f"-{segment['leaving']:,}" if segment["leaving"] else "",
            " ".join(shown) or "",
        )
    return table
