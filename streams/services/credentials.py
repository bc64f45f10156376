"""Write keys and tokens, checked in constant time.

>>> keys = Credentials(("k1", "k2"))
>>> keys.accepts("k2"), keys.accepts("k3"), keys.accepts(None)
(True, False, False)
>>> Credentials((), open_when_empty=True).accepts(None)
True
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable


class Credentials:
    """A set of secrets; :meth:`accepts` compares with every one, so timing tells nothing.

    With `open_when_empty` (development mode) and no secrets, everyone is accepted.
    """

    def __init__(self, secrets: Iterable[str], *, open_when_empty: bool = False) -> None:
        self._secrets = [secret.encode() for secret in secrets]
        self.open = open_when_empty and not self._secrets

    def accepts(self, given: str | None) -> bool:
        """Whether `given` is one of the secrets."""
        if self.open:
            return True
        if given is None:
            return False
        candidate = given.encode()
        found = False
        for secret in self._secrets:
            found |= hmac.compare_digest(candidate, secret)
        return found
