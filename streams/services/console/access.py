"""Who may see the console and who may publish from it.

The console is behind the read API's tokens (`SEGSTREAM_API_TOKENS`) and the admin
tokens (`SEGSTREAM_ADMIN_TOKENS`, `name:token` pairs); only an admin token may
publish rules. Signing in keeps the token in a cookie for the browser session
(`HttpOnly`, `SameSite=Strict`, limited to `/console`), so another site's form or
script can neither read it nor post with it.

>>> access = ConsoleAccess(Credentials(["r3ad"]), {"ann": "s3cret"})
>>> access.viewer("r3ad"), access.viewer("s3cret"), access.viewer("nope")
(Viewer(admin=None), Viewer(admin='ann'), None)
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import Response

from streams.services.credentials import Credentials

COOKIE = "segstream_console"
PATH = "/console"


@dataclass(frozen=True, slots=True)
class Viewer:
    """Someone signed in: `admin` is the admin token's name, `None` for a read token."""

    admin: str | None


class ConsoleAccess:
    """The tokens that open the console (`readers`, and every admin token) and those that
    publish (`admins`, by name)."""

    def __init__(self, readers: Credentials, admins: dict[str, str]) -> None:
        self.readers = readers
        self.admins = [(name, secret.encode()) for name, secret in admins.items()]

    def viewer(self, token: str | None) -> Viewer | None:
        """Who `token` signs in, if anyone (compared with every token, in constant time)."""
        found: str | None = None
        if token is not None:
            candidate = token.encode()
            for name, secret in self.admins:
                if hmac.compare_digest(candidate, secret):
                    found = name
        if found is not None:
            return Viewer(found)
        if self.readers.accepts(token) and (token is not None or not self.admins):
            return Viewer(None)
        return None

    def of(self, request: Request) -> Viewer | None:
        """Who sent `request`, from its session cookie."""
        return self.viewer(request.cookies.get(COOKIE))


def keep_token(response: Response, request: Request, token: str) -> None:
    """Set the session cookie that holds `token`."""
    response.set_cookie(
        COOKIE,
        token,
        path=PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def forget_token(response: Response) -> None:
    """Clear the session cookie."""
    response.delete_cookie(COOKIE, path=PATH, httponly=True, samesite="strict")
