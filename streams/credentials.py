"""Write keys and tokens, checked in constant time.

>>> keys = Credentials(("k1", "k2"))
>>> keys.accepts("k2"), keys.accepts("k3"), keys.accepts(None)
(True, False, False)
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable


class Credentials:
    """A set of secrets; :meth:`accepts` compares with every one, so timing tells nothing."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = [secret.encode() for secret in secrets]

    def accepts(self, given: str | None) -> bool:
        """Whether `given` is one of the secrets."""
        if given is None:
            return False
        candidate = given.encode()
        found = False
        for secret in self._secrets:
            found |= hmac.compare_digest(candidate, secret)
        return found
