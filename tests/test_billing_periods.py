"""Billing periods: anniversary and fixed bill day, every cycle, month ends and leap years."""

from datetime import date, timedelta

import pytest
from headend.billing.periods import (
    CYCLE_MONTHS,
    Period,
    billing_anchor,
    first_period,
    invoice_date_for,
    next_bill_date,
    next_period,
    period_containing,
    period_for,
    periods_between,
    shift_months,
)
from headend.catalog.models import CYCLES
from hypothesis import given
from hypothesis import strategies as st


def P(a, b):
    return Period(date.fromisoformat(a), date.fromisoformat(b))


def starts(anchor, cycle, first_on, count, day=None):
    periods = periods_between(anchor, cycle, first_on, date(2100, 1, 1), day=day)[:count]
    return [p.start.isoformat() for p in periods]


def test_cycle_names_match_the_catalog():
    assert tuple(CYCLE_MONTHS) == CYCLES
    assert period_for is period_containing


def test_period_is_half_open_and_counts_days():
    period = P("2024-02-01", "2024-03-01")
    assert period.days == 29
    assert period.last_day == date(2024, 2, 29)
    assert date(2024, 2, 1) in period and date(2024, 3, 1) not in period
    with pytest.raises(ValueError):
        P("2024-03-01", "2024-03-01")


def test_monthly_anniversary_on_the_31st_never_drifts():
    assert starts(date(2024, 1, 31), "monthly", date(2024, 1, 31), 5) == [
        "2024-01-31", "2024-02-29", "2024-03-31", "2024-04-30", "2024-05-31"]
    assert starts(date(2025, 1, 31), "monthly", date(2025, 1, 31), 3) == [
        "2025-01-31", "2025-02-28", "2025-03-31"]


def test_quarterly_semiannual_and_annual_month_ends():
    assert starts(date(2023, 11, 30), "quarterly", date(2023, 11, 30), 4) == [
        "2023-11-30", "2024-02-29", "2024-05-30", "2024-08-30"]
    assert starts(date(2023, 8, 31), "semiannual", date(2023, 8, 31), 4) == [
        "2023-08-31", "2024-02-29", "2024-08-31", "2025-02-28"]
    assert starts(date(2024, 2, 29), "annual", date(2024, 2, 29), 5) == [
        "2024-02-29", "2025-02-28", "2026-02-28", "2027-02-28", "2028-02-29"]


def test_period_containing_before_after_and_on_boundaries():
    anchor = date(2025, 1, 15)
    assert period_containing(anchor, "monthly", date(2024, 12, 20)) == P("2024-12-15",
                                                                        "2025-01-15")
    assert period_containing(anchor, "monthly", date(2025, 1, 15)) == P("2025-01-15",
                                                                       "2025-02-15")
    assert period_containing(anchor, "monthly", date(2025, 2, 14)) == P("2025-01-15",
                                                                       "2025-02-15")
    assert period_containing(anchor, "quarterly", date(2025, 6, 1)) == P("2025-04-15",
                                                                        "2025-07-15")
    assert period_containing(date(2024, 2, 29), "annual", date(2025, 3, 1)) == P(
        "2025-02-28", "2026-02-28")
    assert period_containing(date(2024, 2, 29), "annual", date(2025, 3, 1)).days == 365


def test_next_period_next_bill_date_and_invoice_date():
    anchor = date(2025, 1, 15)
    assert next_period(anchor, "monthly", P("2025-01-15", "2025-02-15")) == P("2025-02-15",
                                                                             "2025-03-15")
    assert next_bill_date(anchor, "monthly", date(2025, 1, 15)) == date(2025, 1, 15)
    assert next_bill_date(anchor, "monthly", date(2025, 1, 16)) == date(2025, 2, 15)
    assert next_bill_date(anchor, "annual", date(2025, 1, 16)) == date(2026, 1, 15)
    assert invoice_date_for(P("2025-03-01", "2025-04-01"), 5) == date(2025, 2, 24)
    assert invoice_date_for(P("2025-03-01", "2025-04-01"), 0) == date(2025, 3, 1)
    with pytest.raises(ValueError):
        invoice_date_for(P("2025-03-01", "2025-04-01"), -1)


def test_periods_between_returns_whole_overlapping_periods():
    assert periods_between(date(2025, 1, 1), "monthly", date(2025, 1, 15), date(2025, 4, 1)) == [
        P("2025-01-01", "2025-02-01"), P("2025-02-01", "2025-03-01"),
        P("2025-03-01", "2025-04-01")]
    assert periods_between(date(2025, 1, 1), "monthly", date(2025, 4, 1), date(2025, 4, 1)) == []


def test_first_period_fixed_bill_day_is_partial():
    assert first_period(date(2025, 1, 20), "monthly", "fixed", 1) == (
        P("2025-01-20", "2025-02-01"), P("2025-01-01", "2025-02-01"))
    assert first_period(date(2025, 1, 20), "quarterly", "fixed", 15) == (
        P("2025-01-20", "2025-02-15"), P("2024-11-15", "2025-02-15"))
    assert first_period(date(2025, 1, 20), "annual", "fixed", 1) == (
        P("2025-01-20", "2025-02-01"), P("2024-02-01", "2025-02-01"))


def test_first_period_on_the_bill_day_or_anniversary_is_full():
    full = P("2025-01-01", "2025-07-01")
    assert first_period(date(2025, 1, 1), "semiannual", "fixed", 1) == (full, full)
    leap = P("2024-01-31", "2024-02-29")
    assert first_period(date(2024, 1, 31), "monthly", "anniversary") == (leap, leap)


def test_fixed_bill_day_31_keeps_its_day_after_a_short_month():
    anchor = billing_anchor(date(2025, 2, 10), "fixed", 31)
    assert anchor == date(2025, 2, 28)
    first, full = first_period(date(2025, 2, 10), "monthly", "fixed", 31)
    assert (first, full) == (P("2025-02-10", "2025-02-28"), P("2025-01-31", "2025-02-28"))
    assert next_period(anchor, "monthly", full, day=31) == P("2025-02-28", "2025-03-31")


def test_bad_cycle_mode_or_bill_day_are_refused():
    with pytest.raises(ValueError, match="billing cycle"):
        period_containing(date(2025, 1, 1), "weekly", date(2025, 1, 1))
    with pytest.raises(ValueError, match="billing mode"):
        billing_anchor(date(2025, 1, 1), "calendar", 1)
    with pytest.raises(ValueError, match="bill day"):
        billing_anchor(date(2025, 1, 1), "fixed", None)


dates = st.dates(min_value=date(1990, 1, 1), max_value=date(2090, 12, 31))


@given(anchor=dates, cycle=st.sampled_from(CYCLES), start=dates,
       span=st.integers(min_value=1, max_value=2000),
       day=st.one_of(st.none(), st.integers(min_value=1, max_value=31)))
def test_consecutive_periods_tile_time(anchor, cycle, start, span, day):
    """From any anchor, periods follow each other with no gap or overlap, each one cycle long,
    each on the anchor day clamped to its month."""
    end = start + timedelta(days=span)
    periods = periods_between(anchor, cycle, start, end, day=day)
    assert start in periods[0] and end - timedelta(days=1) in periods[-1]
    for before, after in zip(periods, periods[1:], strict=False):
        assert before.end == after.start
    for period in periods:
        assert period_containing(anchor, cycle, period.start, day=day) == period
        months = (period.end.year - period.start.year) * 12 + period.end.month - period.start.month
        assert months == CYCLE_MONTHS[cycle]
        assert period.start == shift_months(period.start, 0, day or anchor.day)
