"""Publishing rules from the console, as `segstream rules apply` does from a shell.

The three ways mirror the command's: as users act (the default), `reevaluate` (every
known user now, `--reevaluate`) and `backfill` (a new generation built from the events
topic's history, `--backfill`, refused when the topic no longer holds what the rules
read). Each publication is noted in the rules history with the admin token's name::

    text = publish_rules(settings, rules_text, "reevaluate", by="alice")
"""

from __future__ import annotations

import time

from confluent_kafka import KafkaException

from processors.history import needed_seconds
from processors.rules import parse_rules
from streams.generations import retained, start_build
from streams.rules_feed import publish
from streams.services.console.routes import RULES_SOURCE, PublishRefusedError
from streams.settings import Settings


def publish_rules(settings: Settings, text: str, mode: str, by: str) -> str:
    """Publish `text` the way `mode` says, noted as `by`'s; what was done, in words. Raises
    `RuleFileError`, or :class:`PublishRefusedError` with why."""
    try:
        if mode == "backfill":
            rules = parse_rules(text, source=RULES_SOURCE)
            needed = needed_seconds(rules) + settings.allowed_lateness_seconds
            problem = retained(settings).problem(needed, time.time())
            if problem is not None:
                raise PublishRefusedError(
                    f"refused: {problem} (`segstream rules apply --backfill "
                    "--accept-partial-history` builds anyway)"
                )
            build = start_build(settings, text, RULES_SOURCE, by=by)
            return (
                f"building generation {build.generation} for rules v{build.version}; "
                "the workers switch to it once it has caught up"
            )
        published = publish(settings, text, RULES_SOURCE, reevaluate=mode == "reevaluate", by=by)
    except (KafkaException, RuntimeError) as error:
        raise PublishRefusedError(f"not published: {error}") from None
    how = ", every known user re-evaluated now" if mode == "reevaluate" else ""
    return f"published as rules {published.label} ({len(published.names)} segments){how}"
