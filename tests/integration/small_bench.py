"""A small run of `segstream bench`, for the tests that keep its harness from rotting."""

from __future__ import annotations

import os
import subprocess
import sys


def small_bench(output, *more):
    """`segstream bench` at a small size, its figures to `output`."""
    done = subprocess.run(
        [
            sys.executable, "-m", "streams", "bench",
            "--events", "3000", "--users", "300",
            "--naive-seconds", "2", "--freshness-seconds", "2",
            "--lookup-rps", "100", "--lookup-seconds", "1",
            "--webhook-changes", "200", "--flaky-changes", "20", "--act-seconds", "5", "--preview-users", "1000",
            "--console-requests", "10",
            "--edge-seconds", "2", "--edge-rate", "300",
            "--json", str(output), *more,
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},  # the table's rows unwrapped
        timeout=600,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done
