"""The Tracking API's request bodies as OpenAPI documents them.

The collector parses bodies itself (gzip, limits, loose per-event checks, see
:mod:`processors.tracking`); these models only describe them, for the
OpenAPI schema that clients and API testers read.

>>> sorted(request_schemas())[:3]
['AliasCall', 'BatchCall', 'BatchItem']
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

_REF = "#/components/schemas/{model}"


class Call(BaseModel):
    """Fields every call may carry; at least one of `userId` and `anonymousId` is required."""

    model_config = ConfigDict(extra="allow")
    userId: str | None = Field(None, max_length=256)  # noqa: N815 (Segment's field names)
    anonymousId: str | None = Field(None, max_length=256)  # noqa: N815
    messageId: str | None = Field(None, max_length=256)  # noqa: N815
    timestamp: str | None = Field(None, description="ISO 8601; receivedAt when absent.")
    sentAt: str | None = Field(None, description="ISO 8601; used to correct clock skew.")  # noqa: N815
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None


class TrackCall(Call):
    """`/v1/track`: a named action with properties."""

    type: Literal["track"] | None = None
    event: str = Field(min_length=1, max_length=256)
    properties: dict[str, Any] | None = None


class PageCall(Call):
    """`/v1/page`: a web page view."""

    type: Literal["page"] | None = None
    name: str | None = None
    properties: dict[str, Any] | None = None


class ScreenCall(Call):
    """`/v1/screen`: an app screen view."""

    type: Literal["screen"] | None = None
    name: str | None = None
    properties: dict[str, Any] | None = None


class IdentifyCall(Call):
    """`/v1/identify`: who the user is; links `anonymousId` to `userId`."""

    type: Literal["identify"] | None = None
    traits: dict[str, Any] | None = None


class AliasCall(Call):
    """`/v1/alias`: `previousId` and `userId` are the same person."""

    type: Literal["alias"] | None = None
    previousId: str = Field(min_length=1, max_length=256)  # noqa: N815


class GroupCall(Call):
    """`/v1/group`: the user belongs to a group (accepted, not used for segments)."""

    type: Literal["group"] | None = None
    groupId: str | None = None  # noqa: N815
    traits: dict[str, Any] | None = None


class BatchItem(Call):
    """One event of a batch: any call, with its `type`."""

    type: Literal["track", "page", "screen", "identify", "alias", "group"]


class BatchCall(BaseModel):
    """`/v1/batch` (and `/v1/import`): up to 500 KB of events sent together."""

    model_config = ConfigDict(extra="allow")
    batch: list[BatchItem]
    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None
    sentAt: str | None = None  # noqa: N815


class Accepted(BaseModel):
    """The answer to an accepted call: its events were acknowledged by the broker."""

    success: Literal[True] = True


class Problem(BaseModel):
    """The answer to a refused call."""

    detail: str


CALL_MODELS: dict[str, type[BaseModel]] = {
    "track": TrackCall,
    "page": PageCall,
    "screen": ScreenCall,
    "identify": IdentifyCall,
    "alias": AliasCall,
    "group": GroupCall,
    "batch": BatchCall,
}
"""The body model of each `/v1/<call>` endpoint."""


def request_schemas() -> dict[str, Any]:
    """JSON schemas of every request body, keyed by model name, for OpenAPI's components."""
    _, top = models_json_schema(
        [(model, "validation") for model in CALL_MODELS.values()], ref_template=_REF
    )
    schemas: dict[str, Any] = top.get("$defs", {})
    return schemas


def request_body(call: str) -> dict[str, Any]:
    """The OpenAPI `requestBody` of `/v1/<call>` (JSON, optionally gzip-encoded)."""
    return {
        "required": True,
        "description": "JSON; may be sent with `Content-Encoding: gzip`.",
        "content": {
            "application/json": {"schema": {"$ref": _REF.format(model=CALL_MODELS[call].__name__)}}
        },
    }
