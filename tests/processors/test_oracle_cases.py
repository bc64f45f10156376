"""The Rust tests' expected values are the oracle's, as `oracle_cases.py` writes them."""

from tests.processors.oracle_cases import CASES, written


def test_the_rust_tests_expect_what_the_oracle_computes():
    assert CASES.read_text() == written(), (
        "the oracle and processors/core/tests/data/oracle_cases.json differ: "
        "run .venv/bin/python -m tests.processors.oracle_cases"
    )
