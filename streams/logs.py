"""Structured logging: one `key=value` line per record, to standard error."""

from __future__ import annotations

import logging
import sys


def configure(level: str) -> None:
    """Send every logger's records to stderr as `time level logger message`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
