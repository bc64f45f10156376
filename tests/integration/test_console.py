"""The console in Debian's headless Chromium, on a real broker, Redis, worker and API: sign-in,
the segments page against `GET /v1/segments`, a segment, a profile against the user route,
the rules page's validation, preview (against the CLI's) and publication, who may publish,
that nothing is readable signed out, and that ids and traits holding markup stay text.

Set `CONSOLE_SCREENSHOTS` to a folder to keep the pages' screenshots (docs/console.md
shows them)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import requests
from playwright.sync_api import Browser, Page, expect, sync_playwright

from state.activity import SizeRecorder, SizeSample
from state.read_model import ReadModel
from streams.kafka import reliable_producer
from streams.redis_clients import redis_client
from streams.settings import Settings
from streams.tools.embedded import free_port
from streams.tools.preview_table import tightened_default_rules
from tests.integration.conftest import (
    WorkerProcess,
    environment,
    isolated_settings,
    wait_for_events,
    wait_until_serving,
)

pytestmark = pytest.mark.integration
CHROMIUM = shutil.which("chromium")
T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
READER, ADMIN = "read-7f3a", "admin-93c1"
MARKUP_ID = '<script>window.__owned = "id"</script>'
MARKUP_TRAIT = "<img src=x onerror=\"window.__owned = 'trait'\">"
SHOTS = (
    Path(os.environ.get("CONSOLE_SCREENSHOTS", ""))
    if os.environ.get("CONSOLE_SCREENSHOTS")
    else None
)


@dataclass(frozen=True)
class Console:
    """The API (with the console) over one worker's state."""

    url: str
    config: Settings
    worker_log: Path


def _event(user_id: str, kind: str, at: timedelta, **fields: object) -> dict[str, object]:
    body = {"userId": user_id, "timestamp": (T0 + at).isoformat(), "messageId": f"{user_id}{at}"}
    if kind == "page":
        return body | {"type": "page"} | fields
    return body | {"type": "track", "event": kind} | fields


@pytest.fixture(scope="module")
def console(stack, tmp_path_factory) -> Iterator[Console]:
    """A worker that has taken in 40 visitors, a buyer known first by an anonymous id, and a
    user whose id and trait hold markup; and the API with read and admin tokens."""
    assert CHROMIUM, "chromium is missing: run `make tools`"
    config = isolated_settings(stack).model_copy(update={"keep_traits": "all"})
    events = [_event(f"visitor-{i:02d}", "page", timedelta(seconds=i)) for i in range(40)]
    events += [
        {"type": "page", "anonymousId": "anon-1", "timestamp": T0.isoformat(), "messageId": "a1"},
        {
            "type": "identify",
            "userId": "ann",
            "anonymousId": "anon-1",
            "traits": {"plan": "pro"},
            "timestamp": (T0 + timedelta(minutes=1)).isoformat(),
            "messageId": "i1",
        },
        _event("ann", "Order Completed", timedelta(minutes=2), properties={"revenue": 10}),
        _event("ann", "Order Completed", timedelta(days=1), properties={"revenue": 20}),
        _event("ann", "Order Completed", timedelta(days=2), properties={"revenue": 20}),
        {
            "type": "identify",
            "userId": MARKUP_ID,
            "traits": {"nickname": MARKUP_TRAIT},
            "timestamp": (T0 + timedelta(days=2, minutes=2)).isoformat(),
            "messageId": "i2",
        },
        _event(
            MARKUP_ID, "Order Completed", timedelta(days=2, minutes=3), properties={"revenue": 5}
        ),
    ]
    producer = reliable_producer(config)
    for body in events:
        key = str(body.get("userId") or body["anonymousId"])
        producer.produce(config.events_topic, key=key.encode(), value=orjson.dumps(body))
    assert producer.flush(30) == 0
    logs = tmp_path_factory.mktemp("console")
    worker = WorkerProcess(config, logs / "worker.log")
    port = free_port()
    served = config.model_copy(
        update={"api_tokens": READER, "admin_tokens": f"alice:{ADMIN}", "api_port": port}
    )
    api = WorkerProcess(served, logs / "api.log", "api")
    try:
        wait_for_events(ReadModel(redis_client(config), config.key_layout()), len(events))
        url = f"http://127.0.0.1:{port}"
        wait_until_serving(f"{url}/readyz", api)
        yield Console(url, config, logs / "worker.log")
    finally:
        for process in (api, worker):
            if process.process.poll() is None:
                process.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield launched
        launched.close()


def signed_in(browser: Browser, console: Console, token: str) -> Page:
    """A new browser session signed in with `token`, on the segments page."""
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(f"{console.url}/console")
    expect(page.locator("h1")).to_have_text("Sign in")
    page.fill("input[name=token]", token)
    page.click("text=Sign in >> nth=-1")
    expect(page.locator("h1")).to_have_text("Segments")
    return page


def api_get(console: Console, path: str, **params: str) -> dict:
    answer = requests.get(
        f"{console.url}{path}",
        headers={"Authorization": f"Bearer {READER}"},
        params=params,
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def shoot(page: Page, name: str, tmp_path: Path) -> None:
    folder = SHOTS or tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"console-{name}.png"), full_page=True)
    assert (folder / f"console-{name}.png").stat().st_size > 10_000


def test_nothing_is_readable_without_signing_in(console):
    """Every page and fragment answers 401 with the sign-in form alone, without a session
    or with a session of an unknown token, and a fragment tells htmx to go to sign-in."""
    pages = [
        ("get", "/console"),
        ("get", "/console/fragments/segments"),
        ("get", "/console/segments/Bargain%20Hunters"),
        ("get", "/console/fragments/segments/Bargain%20Hunters/moves"),
        ("get", "/console/users?id=ann"),
        ("get", "/console/rules"),
        ("post", "/console/rules/validate"),
        ("post", "/console/rules/preview"),
        ("post", "/console/rules/publish"),
    ]
    for cookies in ({}, {"segstream_console": "guess"}, {"segstream_console": READER + "x"}):
        for method, path in pages:
            answer = requests.request(
                method,
                console.url + path,
                cookies=cookies,
                data={"rules": tightened_default_rules(), "mode": "reevaluate"},
                headers={"HX-Request": "true"},
                timeout=10,
            )
            assert answer.status_code == 401, (path, cookies, answer.status_code)
            assert answer.headers["HX-Redirect"] == "/console/sign-in"
            assert 'name="token"' in answer.text
            shown = re.sub(r'name="next" value="[^"]*"', "", answer.text)  # the page asked for
            for secret in ("ann", "visitor-", "Bargain Hunters", "segments:"):
                assert secret not in shown, (path, secret)
    versions = api_get(console, "/v1/segments")["rules_version"]
    assert versions.startswith("file:"), "nothing was published"


def test_segments_page_shows_the_api_s_sizes_and_refreshes_itself(console, browser, tmp_path):
    page = signed_in(browser, console, READER)
    listed = api_get(console, "/v1/segments")
    for segment in listed["segments"]:
        row = page.locator(f'tr[data-segment="{segment["name"]}"]')
        expect(row.locator(".size")).to_have_text(f"{segment['size']:,}")
        expect(row.locator("svg.chart")).to_have_count(2)  # a day by minute, 30 days by hour
        entered, left = re.findall(r"[+-]([\d,]+)", row.locator("td").nth(2).inner_text())
        # the store began within the hour: what entered less what left is who is in
        assert int(entered.replace(",", "")) - int(left.replace(",", "")) == segment["size"]
    shoot(page, "segments", tmp_path)
    # a new visitor enters a segment: the page shows it without being reloaded
    before = page.evaluate("performance.getEntriesByType('navigation').length")
    buyers = {s["name"]: s["size"] for s in listed["segments"]}
    producer = reliable_producer(console.config)
    body = _event("bob", "page", timedelta(days=2, minutes=5))
    producer.produce(console.config.events_topic, key=b"bob", value=orjson.dumps(body))
    assert producer.flush(30) == 0
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        after = {s["name"]: s["size"] for s in api_get(console, "/v1/segments")["segments"]}
        if after != buyers:
            break
        time.sleep(0.2)
    grown = next(name for name in after if after[name] != buyers[name])
    expect(page.locator(f'tr[data-segment="{grown}"] .size')).to_have_text(
        f"{after[grown]:,}", timeout=15_000
    )
    assert page.evaluate("performance.getEntriesByType('navigation').length") == before


def test_a_segment_page_lists_its_definition_moves_and_members(console, browser, tmp_path):
    page = signed_in(browser, console, READER)
    ann = api_get(console, "/v1/users/ann")
    segment = ann["segments"][0]
    page.click(f'tr[data-segment="{segment}"] a')
    expect(page.locator("h1")).to_have_text(segment)
    expect(page.locator(".definition")).to_contain_text("condition")
    expect(page.locator("svg.chart").first).to_be_visible()
    expect(page.locator("table.moves")).to_contain_text("ann")
    members = api_get(console, f"/v1/segments/{segment}/members", limit="1000")["members"]
    assert sorted(page.locator(".members li").all_inner_texts()) == sorted(members)
    shoot(page, "segment", tmp_path)
    page.click(".members a >> text=ann")
    expect(page.locator(".user-id")).to_have_text("ann")


def test_a_profile_found_by_a_merged_id_shows_the_api_s_labels_and_changes(
    console, browser, tmp_path
):
    page = signed_in(browser, console, READER)
    page.fill("input[name=id]", "anon-1")
    page.press("input[name=id]", "Enter")
    expect(page.locator(".user-id")).to_have_text("ann")
    ann = api_get(console, "/v1/users/ann", features="true")
    assert page.locator("dd.segments a").all_inner_texts() == ann["segments"]
    assert "plan" in page.locator("table.values").first.inner_text() or "plan" in page.content()
    expect(page.locator("table.changes")).to_contain_text("event")
    entered = " ".join(page.locator("table.changes tbody tr td:nth-child(2)").all_inner_texts())
    for segment in ann["segments"]:
        assert segment in entered
    shoot(page, "profile", tmp_path)


def test_ids_and_traits_holding_markup_are_shown_as_text(console, browser):
    page = signed_in(browser, console, READER)
    page.fill("input[name=id]", MARKUP_ID)
    page.press("input[name=id]", "Enter")
    expect(page.locator(".user-id")).to_have_text(MARKUP_ID)
    expect(page.locator("table.values >> nth=1")).to_contain_text(MARKUP_TRAIT)
    assert page.evaluate("window.__owned") is None
    assert page.locator("main script").count() == 0
    assert page.locator("main img").count() == 0
    page.fill("input[name=id]", "x" * 300)
    page.press("input[name=id]", "Enter")
    expect(page.locator("main .problem")).to_have_text("an id is at most 256 characters")


def test_an_invalid_edit_shows_the_cli_s_error_with_its_line(console, browser, tmp_path):
    page = signed_in(browser, console, READER)
    page.click("text=Rules")
    expect(page.locator(".valid")).to_contain_text("valid:")
    broken = "segments:\n  - name: Fans\n    description: x\n    condition: {feature: nope, op: '>', value: 1}\n"
    page.fill("textarea[name=rules]", broken)
    expect(page.locator("pre.errors")).to_contain_text("line 4, segments[0].condition.feature")
    (tmp_path / "rules.yaml").write_text(broken)
    validated = _segstream(console, tmp_path, "rules", "validate", "rules.yaml")
    assert validated.returncode == 1
    assert page.locator("pre.errors").inner_text().strip() == validated.stderr.strip()
    assert page.locator(".gutter").inner_text().split() == ["1", "2", "3", "4", "5"]
    shoot(page, "rules", tmp_path)


def _segstream(console: Console, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`segstream ARGS` run in `cwd` against the console's settings."""
    import sys

    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        cwd=cwd,
        env=environment(console.config),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_preview_gives_the_cli_s_figures(console, browser, tmp_path):
    page = signed_in(browser, console, READER)
    page.goto(f"{console.url}/console/rules")
    page.fill("textarea[name=rules]", tightened_default_rules())
    expect(page.locator(".valid")).to_contain_text("valid:")
    page.click("#preview-button")
    expect(page.locator("table.preview")).to_be_visible(timeout=30_000)
    (tmp_path / "tightened.yaml").write_text(tightened_default_rules())
    answer = _segstream(console, tmp_path, "rules", "preview", "tightened.yaml", "--json")
    assert answer.returncode == 0, answer.stderr
    report = orjson.loads(answer.stdout)
    for segment in report["segments"]:
        row = page.locator(f'table.preview tr[data-segment="{segment["name"]}"]')
        shown = [row.locator(f".{column}").inner_text() for column in ("now", "candidate")]
        shown += [row.locator(f".{column}").inner_text() for column in ("entering", "leaving")]
        expected = [segment[c] for c in ("now", "candidate", "entering", "leaving")]
        assert [int(value) for value in shown] == expected, segment["name"]


def test_a_read_token_cannot_publish(console, browser):
    page = signed_in(browser, console, READER)
    page.goto(f"{console.url}/console/rules")
    expect(page.locator(".valid")).to_contain_text("valid:")
    page.click("#publish-button")
    expect(page.locator("#published .problem")).to_contain_text("needs an admin token")
    assert api_get(console, "/v1/segments")["rules_version"].startswith("file:")


def test_an_admin_publishes_and_the_workers_switch(console, browser, tmp_path):
    page = signed_in(browser, console, ADMIN)
    expect(page.locator(".who")).to_have_text("admin alice")
    page.goto(f"{console.url}/console/rules")
    page.fill("textarea[name=rules]", tightened_default_rules())
    expect(page.locator(".valid")).to_contain_text("valid:")
    page.check("input[value=reevaluate]")
    page.click("#publish-button")
    expect(page.locator("#published .valid")).to_contain_text("published as rules v1")
    first = page.locator("#history tbody tr").first
    expect(first).to_contain_text("v1")
    expect(first).to_contain_text("alice")
    expect(first).to_contain_text("reevaluate")
    deadline = time.monotonic() + 60
    while "rules switched to=v1" not in console.worker_log.read_text(errors="replace"):
        assert time.monotonic() < deadline, "the worker did not switch to v1"
        time.sleep(0.2)
    deadline = time.monotonic() + 30
    while api_get(console, "/v1/segments")["rules_version"] != "v1":
        assert time.monotonic() < deadline, "the API did not switch to v1"
        time.sleep(0.2)
    page.reload()
    expect(page.locator("h1 .version")).to_have_text("v1")
    expect(page.locator("textarea[name=rules]")).to_have_value(tightened_default_rules())


def test_the_size_history_is_kept_in_redis_once_a_minute_across_restarts(console):
    """Two workers' samplers (or one before and after a restart) sample each minute once."""
    client = redis_client(console.config)
    keys = console.config.key_layout().of_generation(0)
    keys = type(keys)(keys.prefix + "-sizes", keys.topic)
    first, second = SizeRecorder(client, keys), SizeRecorder(client, keys)
    minute = 29_000_000 * 60.0
    first.tick(minute + 1, ["Bargain Hunters"], 0, 4)
    second.tick(minute + 2, ["Bargain Hunters"], 0, 4)
    first.tick(minute + 30, ["Bargain Hunters"], 0, 4)
    second.tick(minute + 61, ["Bargain Hunters"], 0, 4)
    minutes = [SizeSample.parse(blob) for blob in client.lrange(keys.size_series("m"), 0, -1)]
    hours = [SizeSample.parse(blob) for blob in client.lrange(keys.size_series("h"), 0, -1)]
    assert [sample.time for sample in minutes] == [minute + 60, minute]
    assert [sample.time for sample in hours] == [minute]
