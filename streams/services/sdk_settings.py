"""The settings documents browser SDKs fetch before they send anything.

Segment's analytics.js 2.0 (`@segment/analytics-next`) first reads
`{cdnURL}/v1/projects/{writeKey}/settings`; RudderStack's JavaScript SDK v3
reads `{configUrl}/sourceConfig/?writeKey=…`. The collector serves both, so a
page needs no CDN but its own collector. Each names only the SDK's own
delivery to the collector (`Segment.io`; no destinations), since any other
integration makes the SDK fetch code from the vendor's CDN, and turns the SDKs'
own telemetry off.

>>> where = Endpoint.of("https://track.example.com/", "http", "ignored:8088")
>>> where.api_host, where.protocol
('track.example.com/v1', 'https')
>>> segment_settings("wk1", where)["integrations"]["Segment.io"]["apiHost"]
'track.example.com/v1'
>>> rudderstack_source_config("wk1")["source"]["destinations"]
[]
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

_CALLS = ("track", "identify", "group")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where browsers reach the collector: `api_host` is host[:port] and path of `/v1`,
    without a scheme, as Segment's settings give it."""

    api_host: str
    protocol: Literal["http", "https"]

    @classmethod
    def of(cls, public_url: str, scheme: str, host: str) -> Endpoint:
        """The configured `public_url` when set, else the request's own `scheme` and `host`."""
        if public_url:
            parts = urlsplit(public_url)
            scheme, host = parts.scheme, parts.netloc + parts.path.rstrip("/")
        return cls(f"{host}/v1", "https" if scheme == "https" else "http")


def segment_settings(write_key: str, endpoint: Endpoint) -> dict[str, Any]:
    """The CDN settings of analytics.js 2.0 for `write_key`, sending to `endpoint`."""
    everything = {"__default": {"enabled": True, "integrations": {}}}
    return {
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": endpoint.api_host,
                "protocol": endpoint.protocol,
                "unbundledIntegrations": [],
                "addBundledMetadata": True,
                "maybeBundledConfigIds": {},
            }
        },
        "plan": {call: everything for call in _CALLS},
        "edgeFunction": {},
        "analyticsNextEnabled": True,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": {"sampleRate": 0},
        "legacyVideoPluginsEnabled": False,
        "remotePlugins": [],
    }


def rudderstack_source_config(write_key: str) -> dict[str, Any]:
    """The source config of RudderStack's JavaScript SDK v3 for `write_key`."""
    source_id = "segstream-" + hashlib.sha256(write_key.encode()).hexdigest()[:16]
    return {
        "isHosted": False,
        "source": {
            "id": source_id,
            "name": "segstream",
            "writeKey": write_key,
            "workspaceId": "segstream",
            "enabled": True,
            "config": {
                "statsCollection": {
                    "errors": {"enabled": False},
                    "metrics": {"enabled": False},
                }
            },
            "destinations": [],
        },
    }
