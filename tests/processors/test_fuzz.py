"""Fuzzing: every payload decodes or is rejected with a known reason; every rule file
compiles or is refused with the line and field of each problem.

`FUZZ_PAYLOADS` sets how many payloads run (`make chaos` runs 100,000).
"""

import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.events import Action, Reason, Rejection, decode_event
from processors.rules import RuleFileError, parse_rules
from tests.fuzz import mutants, payloads

PER_EXAMPLE = 50
PAYLOADS = int(os.environ.get("FUZZ_PAYLOADS", "2000"))
REASONS = {value for name, value in vars(Reason).items() if name.isupper()}


def judged(raw: bytes) -> Action | Rejection:
    result = decode_event(raw)
    if isinstance(result, Rejection):
        assert result.reason in REASONS, result
        assert result.detail, result
    else:
        assert isinstance(result, Action)
        assert result.user_id
        assert result.message_id
    return result


@settings(
    max_examples=max(1, PAYLOADS // PER_EXAMPLE),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(payloads, min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
def test_fuzzed_payloads_decode_or_are_rejected_with_a_known_reason(batch):
    for raw in batch:
        judged(raw)


def test_the_bulk_mutants_cover_acceptance_and_every_kind_of_rejection():
    found = [judged(raw) for raw in mutants(seed=7, count=PAYLOADS)]
    reasons = {result.reason for result in found if isinstance(result, Rejection)}
    assert sum(isinstance(result, Action) for result in found) > PAYLOADS // 20
    assert {Reason.INVALID_JSON, Reason.INVALID_SCHEMA, Reason.MISSING_ID} <= reasons


_DEFAULT_RULES = Path("processors/rules/default.yaml").read_text(encoding="utf-8")
_RULE_WORDS = st.sampled_from(
    ["feature:", "op:", "value:", "all:", "any:", "not:", "segment:", "- ", "{", "}", "[", "]",
     ">=", "==", "p90(revenue_30d)", "orders_30d", "30m", "-1", "1e400", "\t", "\n", ": ", "'"]
)  # fmt: skip


@st.composite
def _rule_files(draw: st.DrawFn) -> str:
    text = _DEFAULT_RULES
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 12))
        insert = draw(st.one_of(_RULE_WORDS, st.text(max_size=8)))
        text = text[:at] + insert + text[at + cut :]
    return text


@settings(max_examples=max(50, PAYLOADS // 20), deadline=None)
@given(_rule_files())
def test_fuzzed_rule_files_compile_or_are_refused_with_line_and_field(text):
    refused = None
    try:
        parse_rules(text, "fuzzed.yaml")
    except RuleFileError as error:
        refused = error
    if refused is not None:
        assert refused.errors
        for problem in refused.errors:
            assert problem.field
            assert problem.line is None or 1 <= problem.line <= text.count("\n") + 2
        assert str(refused).startswith("fuzzed.yaml:")
