"""The README's "Try it by hand" section, run line by line as it is written there: the dev
stack, the worker, collector and read API, a tracker's call with curl, a profile, a rule
checked, previewed and applied, and a webhook received."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from streams.tools.embedded.apache_kafka import kafka_libs

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def section(title: str) -> str:
    """The shell blocks of the README's section `title`, in order."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index(f"\n## {title}\n")
    end = readme.index("\n## ", start + 1)
    return "\n".join(re.findall(r"```sh\n(.*?)```", readme[start:end], re.DOTALL))


def test_try_it_by_hand_runs_as_written(tmp_path):
    script = section("Try it by hand")
    assert "segstream dev up" in script
    cache = tmp_path / "cache"
    (cache / "segstream").mkdir(parents=True)
    (cache / "segstream" / kafka_libs().name).symlink_to(kafka_libs())
    env = {name: value for name, value in os.environ.items() if not name.startswith("SEGSTREAM_")}
    env |= {"XDG_CACHE_HOME": str(cache), "TMPDIR": str(tmp_path)}
    guarded = "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + script
    try:
        done = subprocess.run(
            ["bash", "-c", guarded],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        subprocess.run(
            ["bash", "-c", ". .venv/bin/activate && segstream dev down"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    output = done.stdout
    assert '"user_id":"ann"' in output  # the read API's answer
    assert '"segments": [' in output or '"segments":[' in output
    assert "Buyers" in output  # validated, previewed, applied
    received = [
        line for line in output.splitlines() if line.startswith('{"type":"segment.changed"')
    ]
    assert received, output[-2000:]  # the webhook, as the receiver printed it
    assert '"user_id":"ann","entered":["Buyers"]' in received[0]
