"""CORS for pages that send events from other origins (browser SDKs).

Starlette's middleware does the work; this one answers a disallowed origin with
no CORS headers at all (Starlette would still send its allowed methods and
exposed headers), so nothing about the service leaks to such a page.

Example::

    app.add_middleware(Cors, allowed=origins("https://shop.example, https://www.example"))

>>> origins("*"), origins(""), origins(" https://a.example ,https://b.example:8443 ")
(('*',), (), ('https://a.example', 'https://b.example:8443'))
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Send

MAX_AGE_SECONDS = 86_400
"""How long a browser may reuse a preflight's answer, in seconds (Chromium caps it at 2 h)."""


def origins(setting: str) -> tuple[str, ...]:
    """The origins of a comma-separated `SEGSTREAM_CORS_ORIGINS` value."""
    return tuple(part.strip() for part in setting.split(",") if part.strip())


class Cors(CORSMiddleware):
    """Answers preflights (methods, the request's own headers, max age) and adds
    `Access-Control-Allow-Origin` and `Access-Control-Expose-Headers: Retry-After` to
    every answer, errors included, for the `allowed` origins (`*`: any)."""

    def __init__(self, app: ASGIApp, allowed: Sequence[str]) -> None:
        super().__init__(
            app,
            allow_origins=allowed,
            allow_methods=("GET", "POST", "OPTIONS"),
            allow_headers=("*",),
            expose_headers=("Retry-After",),
            max_age=MAX_AGE_SECONDS,
        )

    def preflight_response(self, request_headers: Headers) -> Response:
        """The preflight's answer; a plain 403 for an origin that is not allowed."""
        if not self.is_allowed_origin(request_headers["origin"]):
            return PlainTextResponse("origin not allowed", status_code=403)
        return super().preflight_response(request_headers)

    async def send(self, message: Message, send: Send, request_headers: Headers) -> None:
        """Pass the answer on, with CORS headers only for an allowed origin."""
        origin = request_headers.get("origin")
        if origin is not None and not self.is_allowed_origin(origin):
            await send(message)
            return
        await super().send(message, send, request_headers)
