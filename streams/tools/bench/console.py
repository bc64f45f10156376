"""The bench's console figures: each page's p99 answer time over a store of 100,000 users
whose records are full.

The store is the preview's (`fill_preview_store`: the one-worker run's users copied
under new ids), given what the workers write beside the state rows: each user's
labels and membership, and a full day of minute samples and 30 days of hour samples
of the sizes. The API then answers, one request at a time, each page and fragment
`requests_per_page` times, signed in with the bench's token::

    users = fill_console_records(store_settings)
    p99 = console_p99(url, "bench", users, requests_per_page=200)
"""

from __future__ import annotations

import http.client
import random
import time
from collections import defaultdict
from collections.abc import Callable
from urllib.parse import quote, urlencode

import orjson

from processors._core import User
from state.activity import HOURS, MINUTES, SizeSample
from state.redis_store import RedisStateStore
from streams.redis_clients import redis_client
from streams.settings import Settings
from streams.tools.bench.parts import percentiles
from streams.tools.preview_table import tightened_default_rules

_CHUNK = 2_000


def fill_console_records(settings: Settings) -> list[str]:
    """Write every stored user's labels and membership, and full size histories, into
    `settings`' keys; returns the users' ids."""
    client = redis_client(settings)
    keys = settings.key_layout()
    store = RedisStateStore(client, keys, settings.group_id)
    users: list[str] = []
    sizes: dict[str, int] = defaultdict(int)
    partitions = store.claim_partition_count(settings.partitions)
    try:
        for partition in range(partitions):
            for chunk in store.partition_users(partition):
                with client.pipeline(transaction=False) as pipe:
                    for user_id, row in store.rows({partition: chunk}).items():
                        user = User.from_bytes(row)
                        users.append(user_id)
                        pipe.hset(
                            keys.labels(partition, user_id),
                            mapping={
                                "segments": orjson.dumps(user.segments),
                                "cluster": user.cluster or "",
                                "version": str(user.version),
                                "event_time": repr(user.as_of),
                                "rules_version": "bench",
                                "alias_of": "",
                            },
                        )
                        for segment in user.segments:
                            pipe.sadd(keys.members(partition, segment), user_id)
                            sizes[segment] += 1
                    pipe.execute()
        now = time.time()
        sample = SizeSample(now, dict(sizes), {}, {f"+{s}": n for s, n in sizes.items()})
        for resolution, count, step in (("m", MINUTES, 60.0), ("h", HOURS, 3600.0)):
            key = keys.size_series(resolution)
            client.delete(key)
            for start in range(0, count, _CHUNK):
                shifted = [
                    SizeSample(now - i * step, sample.segments, {}, sample.moves).encode()
                    for i in range(start, min(count, start + _CHUNK))
                ]
                client.rpush(key, *shifted)
    finally:
        client.close()
    return users


def console_p99(url: str, token: str, users: list[str], requests_per_page: int) -> dict[str, float]:
    """Each page's (and fragment's) p99 answer time in ms, over `requests_per_page`
    sequential requests on one keep-alive connection."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    session: dict[str, str] = {}

    def ask(method: str, path: str, body: dict[str, str] | None = None) -> int:
        headers = dict(session)
        encoded = None
        if body is not None:
            encoded = urlencode(body).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        connection.request(method, path, body=encoded, headers=headers)
        answer = connection.getresponse()
        answer.read()
        if answer.getheader("set-cookie"):
            session["Cookie"] = answer.getheader("set-cookie", "").split(";")[0]
        return answer.status

    if ask("POST", "/console/sign-in", {"token": token}) != 303:
        raise RuntimeError("the console refused the bench's token")
    connection.request("GET", "/v1/segments", headers={"Authorization": f"Bearer {token}"})
    listed = orjson.loads(connection.getresponse().read())
    largest = max(listed["segments"], key=lambda segment: segment["size"])["name"]
    chosen = random.Random(7).choices(users, k=requests_per_page)
    rules = {"rules": tightened_default_rules()}
    pages: dict[str, Callable[[int], int]] = {
        "segments": lambda _: ask("GET", "/console"),
        "segments_fragment": lambda _: ask("GET", "/console/fragments/segments"),
        "segment": lambda _: ask("GET", f"/console/segments/{quote(largest)}"),
        "profile": lambda n: ask("GET", f"/console/users?{urlencode({'id': chosen[n]})}"),
        "rules": lambda _: ask("GET", "/console/rules"),
        "validate": lambda _: ask("POST", "/console/rules/validate", rules),
    }
    found: dict[str, float] = {}
    for name, fetch in pages.items():
        latencies = []
        for n in range(requests_per_page):
            started = time.perf_counter()
            status = fetch(n)
            latencies.append(time.perf_counter() - started)
            if status != 200:
                raise RuntimeError(f"console {name} answered {status}")
        found[name] = round(percentiles(latencies)[1], 1)
    connection.close()
    return found
