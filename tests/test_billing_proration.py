"""Proration policies: hand-computed scenarios per policy and cycle, and their invariants."""

from datetime import date, timedelta
from decimal import Decimal

import pytest
from headend.billing.periods import Period, first_period, period_containing
from headend.billing.proration import (
    BASES,
    cancellation,
    cycle_change,
    deferred_downgrade,
    hibernation,
    immediate_upgrade,
    partial_first_period,
    prorate,
    to_minor_lines,
)
from headend.catalog.models import CYCLES
from headend.errors import ValidationFailed
from headend.money import to_minor
from hypothesis import given
from hypothesis import strategies as st

D = Decimal
JAN_2025 = Period(date(2025, 1, 1), date(2025, 2, 1))


def amounts(lines):
    return [line.amount for line in lines]


def test_partial_first_period_monthly_fixed_bill_day_explained():
    first, full = first_period(date(2025, 1, 20), "monthly", "fixed", 1)
    [line] = partial_first_period(D("119.99"), full, first.start, label="Triple Play")
    assert line.amount == D("46.4477")
    assert line.period == first
    assert line.description == "Triple Play (Jan 20 – Jan 31, 2025)"
    assert line.explanation == ("Triple Play, 12 of 31 days (Jan 20 – Jan 31, 2025)"
                                " × 119.99 = 46.4477")
    assert [m.amount for m in to_minor_lines([line], "USD")] == [4645]
    assert [m.amount for m in to_minor_lines([line], "JPY")] == [46]


@pytest.mark.parametrize(("start", "cycle", "price", "expected"), [
    (date(2024, 2, 20), "monthly", "29", "10.0000"),         # 10 of 29 days, leap February
    (date(2025, 2, 20), "monthly", "29", "9.3214"),          # 9 of 28 days
    (date(2025, 2, 15), "quarterly", "300", "46.6667"),      # 14 of 90 days (Dec 1 - Mar 1)
    (date(2024, 6, 10), "semiannual", "600", "69.2308"),     # 21 of 182 days (Jan 1 - Jul 1 2024)
    (date(2023, 12, 2), "annual", "1200", "98.6301"),        # 30 of 365 days (Jan 1 2023 - 2024)
    (date(2023, 12, 1), "annual", "1200", "1200.0000"),      # on the bill day: full price
])
def test_partial_first_period_each_cycle(start, cycle, price, expected):
    first, full = first_period(start, cycle, "fixed", 1)
    assert amounts(partial_first_period(D(price), full, first.start)) == [D(expected)]


def test_thirty_day_basis_counts_every_month_as_30_days():
    [jan] = partial_first_period(D("119.99"), JAN_2025, date(2025, 1, 20), basis="thirty_day")
    assert jan.amount == D("43.9963")  # Jan 20-30 = 11 of 30; the 31st counts none
    assert "11 of 30 days" in jan.explanation and "(30-day months)" in jan.explanation
    feb = Period(date(2025, 2, 1), date(2025, 3, 1))
    [piece] = partial_first_period(D("30"), feb, date(2025, 2, 20), basis="thirty_day")
    assert piece.amount == D("11.0000")  # Feb 20-28: the last day makes up for 29 and 30


def test_immediate_upgrade_credits_old_and_charges_new():
    lines = immediate_upgrade(D("49.99"), D("119.99"), JAN_2025, date(2025, 1, 20),
                              old_label="Basic", new_label="Triple Play")
    assert amounts(lines) == [D("-19.3510"), D("46.4477")]
    assert lines[0].explanation == ("Credit for unused Basic, 12 of 31 days"
                                    " (Jan 20 – Jan 31, 2025) × 49.99 = -19.351")
    assert [m.amount for m in to_minor_lines(lines, "USD")] == [-1935, 4645]


def test_immediate_upgrade_semiannual_leap_year():
    period = Period(date(2024, 1, 1), date(2024, 7, 1))  # 182 days
    assert amounts(immediate_upgrade(D("300"), D("450"), period, date(2024, 4, 1))) == [
        D("-150.0000"), D("225.0000")]  # 91 of 182 days


def test_deferred_downgrade_charges_nothing_until_the_next_period():
    change = deferred_downgrade(D("119.99"), D("49.99"), JAN_2025, date(2025, 1, 20),
                                old_label="Triple Play", new_label="Basic")
    assert change.effective_date == date(2025, 2, 1)
    assert change.lines == ()
    assert change.explanation == ("No charge now: Triple Play (119.99) runs to Jan 31, 2025;"
                                  " Basic (49.99) starts on Feb 1, 2025.")


def test_cycle_change_monthly_to_annual_with_new_bill_day():
    lines = cycle_change("monthly", D("119.99"), "annual", D("1199.90"), JAN_2025,
                         date(2025, 1, 20), 15, label="Triple Play")
    assert amounts(lines) == [D("-46.4477"), D("85.2388")]  # annual: 26 of 366 days
    assert lines[1].period == Period(date(2025, 1, 20), date(2025, 2, 15))
    assert "Triple Play, annual, 26 of 366 days (Jan 20 – Feb 14, 2025)" in lines[1].explanation


def test_cycle_change_quarterly_to_monthly():
    quarter = Period(date(2025, 1, 1), date(2025, 4, 1))  # 90 days
    lines = cycle_change("quarterly", D("330"), "monthly", D("119.99"), quarter,
                         date(2025, 2, 10), 1)
    assert amounts(lines) == [D("-183.3333"), D("81.4218")]  # 50 of 90; 19 of 28 (Feb 2025)


def test_cycle_change_on_the_new_bill_day_charges_a_full_new_period():
    lines = cycle_change("monthly", D("100"), "quarterly", D("270"), JAN_2025,
                         date(2025, 1, 15), 15)
    assert amounts(lines) == [D("-54.8387"), D("270.0000")]  # 17 of 31 days credited
    assert lines[1].period == Period(date(2025, 1, 15), date(2025, 4, 15))


def test_cancellation_with_and_without_credit():
    assert amounts(cancellation(D("119.99"), JAN_2025, date(2025, 1, 20), True)) == [
        D("-46.4477")]
    assert cancellation(D("119.99"), JAN_2025, date(2025, 1, 20), False) == []
    year = Period(date(2024, 3, 1), date(2025, 3, 1))  # 365 days
    assert amounts(cancellation(D("1200"), year, date(2024, 9, 1), True)) == [D("-595.0685")]


def test_hibernation_credits_hibernated_days_and_charges_the_fee_per_period():
    lines = hibernation(D("119.99"), JAN_2025, date(2025, 1, 10), date(2025, 2, 15), D("5"))
    assert amounts(lines) == [D("-85.1542"), D("5.0000")]  # 22 of 31 days
    assert lines[1].explanation == ("Hibernation fee for Service, once per billing period"
                                    " (Jan 1 – Jan 31, 2025) = 5.00")
    feb = Period(date(2025, 2, 1), date(2025, 3, 1))
    assert amounts(hibernation(D("119.99"), feb, date(2025, 1, 10), None, D("5"))) == [
        D("-119.9900"), D("5.0000")]
    assert amounts(hibernation(D("119.99"), feb, date(2025, 2, 1), date(2025, 2, 8), None)) == [
        D("-29.9975")]


@pytest.mark.parametrize(("call", "field"), [
    (lambda: cancellation(D("1"), JAN_2025, date(2025, 2, 1), True), "cancel_date"),
    (lambda: immediate_upgrade(D("1"), D("2"), JAN_2025, date(2024, 12, 31)), "change_date"),
    (lambda: deferred_downgrade(D("2"), D("1"), JAN_2025, date(2025, 3, 1)), "change_date"),
    (lambda: partial_first_period(D("-1"), JAN_2025, date(2025, 1, 2)), "price"),
    (lambda: hibernation(D("1"), JAN_2025, date(2025, 3, 1), None, None), "hibernate_from"),
    (lambda: hibernation(D("1"), JAN_2025, date(2025, 1, 9), date(2025, 1, 9), None),
     "hibernate_to"),
])
def test_bad_input_names_the_field(call, field):
    with pytest.raises(ValidationFailed) as refused:
        call()
    assert field in refused.value.errors


def test_float_prices_and_unknown_basis_are_refused():
    with pytest.raises(TypeError):
        cancellation(119.99, JAN_2025, date(2025, 1, 20), True)
    with pytest.raises(ValueError, match="basis"):
        partial_first_period(D("1"), JAN_2025, date(2025, 1, 2), basis="banker")


dates = st.dates(min_value=date(1990, 1, 1), max_value=date(2090, 12, 31))
prices = st.decimals(min_value=0, max_value=100000, places=4, allow_nan=False,
                     allow_infinity=False)


@st.composite
def split_periods(draw):
    """A period of any cycle from any anchor, and a day strictly inside it."""
    anchor, on = draw(dates), draw(dates)
    period = period_containing(anchor, draw(st.sampled_from(CYCLES)), on)
    offset = draw(st.integers(min_value=1, max_value=period.days - 1))
    return period, period.start + timedelta(days=offset)


@given(split=split_periods(), price=prices, basis=st.sampled_from(BASES),
       currency=st.sampled_from(["USD", "JPY", "KWD"]))
def test_two_pieces_of_a_period_sum_to_its_price(split, price, basis, currency):
    period, cut = split
    pieces = [prorate(price, period, Period(period.start, cut), basis=basis),
              prorate(price, period, Period(cut, period.end), basis=basis)]
    assert abs(sum(amounts(pieces)) - price.quantize(D("0.0001"))) <= D("0.0001")
    minor = sum(m.amount for m in to_minor_lines(pieces, currency))
    assert abs(minor - to_minor(price, currency)) <= len(pieces)


@given(split=split_periods(), old=prices, new=prices, basis=st.sampled_from(BASES))
def test_upgrade_then_immediate_downgrade_nets_to_zero(split, old, new, basis):
    period, cut = split
    lines = (immediate_upgrade(old, new, period, cut, basis=basis)
             + immediate_upgrade(new, old, period, cut, basis=basis))
    assert sum(amounts(lines)) == 0
    assert sum(m.amount for m in to_minor_lines(lines, "USD")) == 0
