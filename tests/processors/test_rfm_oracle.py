"""RFM agrees with lifetimes' `summary_data_from_transaction_data` (daily periods)."""

import warnings

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lifetimes.utils import summary_data_from_transaction_data

from processors.events import Action, EventKind
from tests.steps import user_after

DAY = 86_400
START = 20_000 * DAY  # a midnight UTC

transactions = st.lists(
    st.tuples(st.integers(0, 400 * DAY), st.integers(1, 100_000)),  # (seconds after START, cents)
    min_size=1,
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(transactions, st.integers(0, 60 * DAY))
def test_rfm_matches_lifetimes(orders, after_last):
    user = user_after(
        *(
            Action("u", str(number), EventKind.ORDER, START + offset, value=cents / 100)
            for number, (offset, cents) in enumerate(orders)
        )
    )
    as_of = START + max(offset for offset, _ in orders) + after_last
    ours = user.features(as_of)

    frame = pd.DataFrame(
        {
            "user": ["u"] * len(orders),
            "date": pd.to_datetime([START + offset for offset, _ in orders], unit="s"),
            "value": [cents / 100 for _, cents in orders],
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = summary_data_from_transaction_data(
            frame,
            "user",
            "date",
            monetary_value_col="value",
            observation_period_end=pd.to_datetime(as_of, unit="s"),
            freq="D",
        ).loc["u"]
    assert ours["frequency"] == summary["frequency"]
    assert ours["recency"] == summary["recency"]
    assert ours["T"] == summary["T"]
    assert ours["monetary_value"] == pytest.approx(summary["monetary_value"], rel=1e-12, abs=1e-12)
