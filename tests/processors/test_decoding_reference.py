"""Decoding keeps the reasons and details of the decoder it replaced, payload for payload.

`data/decoding_reference.jsonl.gz` holds 8,140 payloads — events of every call
type with each field mutated, fuzzed bytes, simulated shoppers, odd JSON and
odd timestamps — each with what the previous decoder (pydantic models) made of
it: a rejection's reason and detail, or the action's fields.
"""

import gzip
import json
from pathlib import Path

from processors.events import Action, decode_all

REFERENCE = Path(__file__).with_name("data") / "decoding_reference.jsonl.gz"


def test_every_payload_decodes_as_the_reference_recorded():
    with gzip.open(REFERENCE, "rt", encoding="utf-8") as lines:
        rows = [json.loads(line) for line in lines]
    raws = [row["text"].encode() if "text" in row else bytes.fromhex(row["hex"]) for row in rows]
    differ = []
    for row, raw, result in zip(rows, raws, decode_all(raws), strict=True):
        if isinstance(result, Action):
            got = {
                "action": [
                    result.user_id, result.message_id, int(result.kind), result.timestamp,
                    result.value, list(result.categories), result.device, result.anonymous_id,
                    result.previous_id, result.product,
                ]
            }  # fmt: skip
        else:
            got = {"reason": result.reason, "detail": result.detail}
        expected = {key: row[key] for key in ("action", "reason", "detail") if key in row}
        if got != expected:
            differ.append((raw[:120], expected, got))
    assert len(rows) == 8_140
    assert not differ, f"{len(differ)} differ, e.g. {differ[:3]}"
