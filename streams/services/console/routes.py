"""The console's pages and the fragments they refresh (htmx), added to the read API's app.

Pages: `/console` (segments and clusters: sizes, moves, readiness, size over time),
`/console/segments/{name}` (a cluster is `@<id>`), `/console/users?id=` (a profile),
`/console/rules` (the rules in force, an editor that validates as you type, preview and
publish, the history). Every page and fragment answers only someone signed in
(:mod:`streams.services.console.access`); anyone else gets the sign-in form and
status 401. Templates escape everything they show. Example::

    add_console(app, sources)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import parse_qs

import yaml
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from processors.partitioner import canonical_partition
from processors.rules import RuleFileError, RuleSet, parse_rules
from processors.yaml_files import Problem
from state.activity import (
    HOURS,
    MINUTES,
    ActivityReads,
    LoggedChange,
    SizeSample,
    moved_since,
)
from state.lookups import CursorError, Lookups
from state.rules_history import history
from streams.services.console.access import (
    ConsoleAccess,
    Viewer,
    forget_token,
    keep_token,
)
from streams.services.console.charts import size_chart
from streams.settings import Settings

if TYPE_CHECKING:
    from streams.services.api import SegmentsView

_HERE = Path(__file__).parent
TEMPLATES = Jinja2Templates(directory=_HERE / "templates")
RULES_SOURCE = "rules.yaml"
"""The name errors give an edited rules file, as `segstream rules validate rules.yaml`."""
_MAX_RULES_BYTES = 256 * 1024
_MAX_USER_ID = 256
"""The longest id the read API looks up."""
_MEMBERS_PAGE = 50
_LATEST_MOVES = 50
_HISTORY_SHOWN = 50
_HOUR, _DAY = 3600.0, 86_400.0


@dataclass(frozen=True, slots=True)
class ConsoleSources:
    """What the console reads and does, from the read API it is served by."""

    settings: Settings
    lookups: Lookups
    access: ConsoleAccess
    segments: Callable[[], Awaitable[SegmentsView]]
    """The segments and clusters with their sizes, as `GET /v1/segments` answers."""
    user: Callable[[str], Awaitable[dict[str, Any] | None]]
    """A user's labels, features, traits, computed traits and predictions."""
    rules: Callable[[], RuleSet]
    """The rules in force."""
    preview: Callable[[RuleSet], Awaitable[dict[str, Any]]]
    """A candidate's preview against every stored user."""
    publish: Callable[[str, str, str], Awaitable[str]]
    """Publish a text with a mode (`as users act`, `reevaluate`, `backfill`) as a named
    admin; what was done, or raises `PublishRefusedError`."""


class PublishRefusedError(Exception):
    """A publication the console cannot make, with why (shown as is)."""


class _SignInNeededError(Exception):
    """The request has no session: the answer is the sign-in form."""


@dataclass(frozen=True, slots=True)
class SegmentRow:
    """One line of the segments page."""

    key: str
    """The segment's name, or `@` and a cluster's id."""
    name: str
    description: str
    size: int
    hour: tuple[int, int]
    day: tuple[int, int]
    state: str
    trend: list[tuple[float, int]]
    """The size at each minute's sample of the last 24 hours."""
    month: list[tuple[float, int]]
    """The size at each hour's sample of the last 30 days."""


async def _signed_in(request: Request) -> Viewer:
    """Who sent `request`; raises :class:`_SignInNeededError` for no one."""
    access: ConsoleAccess = request.app.state.console_access
    found = access.of(request)
    if found is None:
        raise _SignInNeededError
    return found


SignedIn = Annotated[Viewer, Depends(_signed_in)]


def add_console(app: FastAPI, sources: ConsoleSources) -> None:
    """Serve the console from `app`."""
    lookups, access = sources.lookups, sources.access
    activity = ActivityReads(lookups.client, lookups.keys)

    app.state.console_access = access

    def page(request: Request, name: str, viewer: Viewer | None, **context: Any) -> HTMLResponse:
        return TEMPLATES.TemplateResponse(
            request, name, {"viewer": viewer, "clock": clock, **context}
        )

    async def sign_in_answer(request: Request, _error: Exception) -> Response:
        answer = page(request, "sign_in.html", None, next=_local(request.url.path), problem=None)
        answer.status_code = 401
        if request.headers.get("hx-request"):
            answer.headers["HX-Redirect"] = "/console/sign-in"
        return answer

    app.add_exception_handler(_SignInNeededError, sign_in_answer)
    app.mount("/console/static", StaticFiles(directory=_HERE / "static"), name="console-static")

    @app.get("/console/sign-in", include_in_schema=False)
    async def sign_in_form(request: Request, next: str = "/console") -> HTMLResponse:
        return page(request, "sign_in.html", None, next=_local(next), problem=None)

    @app.post("/console/sign-in", include_in_schema=False)
    async def sign_in(request: Request) -> Response:
        form = await _form(request)
        token, target = form.get("token", "").strip(), _local(form.get("next", "/console"))
        if access.viewer(token or None) is None:
            answer = page(request, "sign_in.html", None, next=target, problem="unknown token")
            answer.status_code = 401
            return answer
        moved = RedirectResponse(target, status_code=303)
        keep_token(moved, request, token)
        return moved

    @app.post("/console/sign-out", include_in_schema=False)
    async def sign_out() -> Response:
        answer = RedirectResponse("/console/sign-in", status_code=303)
        forget_token(answer)
        return answer

    async def segment_rows() -> tuple[SegmentsView, list[SegmentRow]]:
        view = await sources.segments()
        partitions = await lookups.partitions()
        now_moves, minutes, hours = await asyncio.gather(
            activity.moves(partitions), activity.series("m", MINUTES), activity.series("h", HOURS)
        )
        samples = sorted([*hours, *minutes], key=lambda sample: sample.time)
        now = time.time()
        rows = [
            SegmentRow(
                segment.name,
                segment.name,
                segment.description,
                segment.size,
                moved_since(samples, now_moves, segment.name, _HOUR, now),
                moved_since(samples, now_moves, segment.name, _DAY, now),
                _readiness(segment.ready, segment.waiting_for, segment.exact),
                _trend(minutes, segment.name),
                _trend(hours, segment.name),
            )
            for segment in view.segments
        ]
        rows += [
            SegmentRow(
                f"@{cluster.id}",
                cluster.name,
                f"cluster {cluster.id} of model v{view.model_version}, "
                f"{cluster.share:.0%} of its sample",
                cluster.size,
                moved_since(samples, now_moves, f"@{cluster.id}", _HOUR, now),
                moved_since(samples, now_moves, f"@{cluster.id}", _DAY, now),
                "ready",
                _trend(minutes, f"@{cluster.id}"),
                _trend(hours, f"@{cluster.id}"),
            )
            for cluster in view.clusters
        ]
        return view, rows

    @app.get("/console", include_in_schema=False)
    async def segments_page(request: Request, viewer: SignedIn) -> HTMLResponse:
        view, rows = await segment_rows()
        return page(request, "segments.html", viewer, view=view, rows=rows, chart=size_chart)

    @app.get("/console/fragments/segments", include_in_schema=False)
    async def segments_fragment(request: Request, viewer: SignedIn) -> HTMLResponse:
        view, rows = await segment_rows()
        return page(request, "segments_table.html", viewer, view=view, rows=rows, chart=size_chart)

    async def find_group(key: str) -> tuple[SegmentRow, Callable[[int], str], str] | None:
        """A segment or cluster by its key: its row, its members' sets, its definition."""
        _, rows = await segment_rows()
        row = next((row for row in rows if row.key == key), None)
        if row is None:
            return None
        if key.startswith("@"):
            return row, partial(lookups.keys.cluster_members, cluster=key[1:]), ""
        rules = sources.rules()
        index = rules.names.index(key)
        return row, partial(lookups.keys.members, segment=key), as_written(rules.text, index)

    @app.get("/console/segments/{key}", include_in_schema=False)
    async def segment_page(
        request: Request,
        viewer: SignedIn,
        key: str,
        cursor: Annotated[str | None, Query(max_length=64)] = None,
    ) -> HTMLResponse:
        found = await find_group(key)
        if found is None:
            answer = page(request, "missing.html", viewer, what=f"no segment or cluster {key!r}")
            answer.status_code = 404
            return answer
        row, set_key, definition = found
        partitions = await lookups.partitions()
        try:
            members, following = await lookups.members(set_key, cursor, _MEMBERS_PAGE)
        except CursorError:
            members, following = [], None
        minutes, hours, moves = await asyncio.gather(
            activity.series("m", MINUTES),
            activity.series("h", HOURS),
            activity.latest_moves(key, partitions, _LATEST_MOVES),
        )
        return page(
            request,
            "segment.html",
            viewer,
            row=row,
            definition=definition,
            day_chart=size_chart(_trend(minutes, key), "size, every minute, last 24 hours"),
            month_chart=size_chart(_trend(hours, key), "size, every hour, last 30 days"),
            moves=moves,
            members=members,
            next_cursor=following,
        )

    @app.get("/console/fragments/segments/{key}/moves", include_in_schema=False)
    async def moves_fragment(request: Request, viewer: SignedIn, key: str) -> HTMLResponse:
        moves = await activity.latest_moves(key, await lookups.partitions(), _LATEST_MOVES)
        return page(request, "moves.html", viewer, moves=moves)

    @app.get("/console/users", include_in_schema=False)
    async def profile_page(
        request: Request,
        viewer: SignedIn,
        id: str = "",
    ) -> HTMLResponse:
        searched = id.strip()
        if len(searched) > _MAX_USER_ID:
            answer = page(
                request, "missing.html", viewer, what=f"an id is at most {_MAX_USER_ID} characters"
            )
            answer.status_code = 422
            return answer
        found = await sources.user(searched) if searched else None
        changes: list[LoggedChange] = []
        if found is not None:
            partitions = await lookups.partitions()
            user_id = found["user_id"]
            changes = await activity.user_changes(canonical_partition(user_id, partitions), user_id)
        answer = page(
            request, "profile.html", viewer, searched=searched, user=found, changes=changes
        )
        if searched and found is None:
            answer.status_code = 404
        return answer

    @app.get("/console/rules", include_in_schema=False)
    async def rules_page(request: Request, viewer: SignedIn) -> HTMLResponse:
        rules = sources.rules()
        published = await history(lookups.client, lookups.keys, _HISTORY_SHOWN)
        return page(request, "rules.html", viewer, rules=rules, published=published)

    @app.post("/console/rules/validate", include_in_schema=False)
    async def validate(request: Request, viewer: SignedIn) -> HTMLResponse:
        checked = _checked((await _form(request)).get("rules", ""))
        answer = page(request, "validation.html", viewer, checked=checked)
        answer.status_code = 200 if isinstance(checked, RuleSet) else 422
        return answer

    @app.post("/console/rules/preview", include_in_schema=False)
    async def preview(request: Request, viewer: SignedIn) -> HTMLResponse:
        checked = _checked((await _form(request)).get("rules", ""))
        if not isinstance(checked, RuleSet):
            answer = page(request, "validation.html", viewer, checked=checked)
            answer.status_code = 422
            return answer
        report = await sources.preview(checked)
        return page(request, "preview.html", viewer, report=report)

    @app.post("/console/rules/publish", include_in_schema=False)
    async def publish(request: Request, viewer: SignedIn) -> HTMLResponse:
        form = await _form(request)
        if viewer.admin is None:
            answer = page(
                request,
                "published.html",
                viewer,
                done=None,
                problem="publishing needs an admin token (SEGSTREAM_ADMIN_TOKENS); "
                "this session signed in with a read token",
            )
            answer.status_code = 403
            return answer
        checked = _checked(form.get("rules", ""))
        if not isinstance(checked, RuleSet):
            answer = page(request, "validation.html", viewer, checked=checked)
            answer.status_code = 422
            return answer
        mode = form.get("mode", "as users act")
        if mode not in ("as users act", "reevaluate", "backfill"):
            mode = "as users act"
        try:
            done = await sources.publish(checked.text, mode, viewer.admin)
        except PublishRefusedError as refused:
            answer = page(request, "published.html", viewer, done=None, problem=str(refused))
            answer.status_code = 409
            return answer
        published = await history(lookups.client, lookups.keys, _HISTORY_SHOWN)
        return page(request, "published.html", viewer, done=done, problem=None, published=published)


def _checked(text: str) -> RuleSet | RuleFileError:
    """The rules in `text`, or why they do not validate."""
    if len(text.encode()) > _MAX_RULES_BYTES:
        return RuleFileError(RULES_SOURCE, [Problem(None, "(document)", "is over 256 KiB")])
    try:
        return parse_rules(text, source=RULES_SOURCE)
    except RuleFileError as error:
        return error


async def _form(request: Request) -> dict[str, str]:
    """A urlencoded form's fields (the last value of each)."""
    body = (await request.body())[: _MAX_RULES_BYTES * 4]
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {name: values[-1] for name, values in fields.items()}


def _local(target: str) -> str:
    """`target` if it is a console path, else the console's first page: sign-in sends
    nowhere else.

    >>> _local("/console/rules"), _local("https://elsewhere.example/"), _local("//x")
    ('/console/rules', '/console', '/console')
    """
    if target.startswith("/console") and not target.startswith("//"):
        return target
    return "/console"


def as_written(text: str, index: int) -> str:
    r"""The lines of a rules file's `index`th segment, as written (comments included).

    >>> print(as_written("segments:\n  - name: A\n    # first\n  - name: B\n", 1))
      - name: B
    """
    document = yaml.compose(text)
    if not isinstance(document, yaml.MappingNode):
        return ""
    for key, value in document.value:
        if key.value == "segments" and isinstance(value, yaml.SequenceNode):
            node = value.value[index]
            lines = text.splitlines()[node.start_mark.line : node.end_mark.line]
            return "\n".join(lines).rstrip()
    return ""


def _trend(samples: list[SizeSample], key: str) -> list[tuple[float, int]]:
    """The sizes of a segment (or `@cluster`) in `samples`, where sampled."""
    points = [(sample.time, sample.size(key)) for sample in samples]
    return [(at, size) for at, size in points if size is not None]


def _readiness(ready: bool, waiting_for: str | None, exact: bool) -> str:
    """A segment's readiness in words.

    >>> _readiness(True, None, True), _readiness(False, "model", True)
    ('ready', 'waits for a model')
    """
    if waiting_for == "model":
        return "waits for a model"
    if not ready:
        return "being evaluated"
    return "ready" if exact else "ready, not exact (partial history)"


def clock(at: float | None) -> str:
    """An epoch time as the console shows it, UTC to the second.

    >>> clock(90_000.5), clock(None)
    ('1970-01-02 01:00:00 UTC', '')
    """
    if at is None:
        return ""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
