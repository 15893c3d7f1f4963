"""charges_for by hand: the one pure function every invoice's subscription lines come from."""

import datetime as dt
from decimal import Decimal as D

import pytest
from headend.billing.charges import InclusionSnapshot, SubscriptionSnapshot, charges_for
from headend.billing.periods import Period, first_period

ROUTER = InclusionSnapshot(7, "AC1200 router", 1, None, 43, True)
STB = InclusionSnapshot(8, "Set-top box", 2, D("5.00"), 43, True)


def snap(**over) -> SubscriptionSnapshot:
    values = dict(subscription_id=1, subscriber_id=10, bill_to_subscriber_id=10,
                  package_name="Triple Play", cycle="monthly", quantity=1,
                  unit_price=D("119.99"), setup_fee=D("49.99"), first_invoice=True,
                  bill_start_date=dt.date(2026, 1, 20), income_account_id=40,
                  setup_income_account_id=44, taxable=True, exclude_from_invoicing=False)
    values.update(over)
    return SubscriptionSnapshot(**values)


def amounts(charges):
    return [(c.kind, c.amount) for c in charges]


def test_partial_first_period_prorates_recurring_and_charged_inclusions():
    period, full = first_period(dt.date(2026, 1, 20), "monthly", "fixed", 1)
    charges = charges_for(snap(inclusions=(ROUTER, STB)), period, full)
    # 12 of 31 days: 119.99 x 12/31 = 46.4477; 2 x 5.00 x 12/31 = 3.8710; router free
    assert amounts(charges) == [("proration", D("46.4477")), ("inclusion", D("0")),
                                ("inclusion", D("3.8710")), ("setup", D("49.99"))]
    assert "12 of 31 days" in charges[0].explanation
    assert charges[1].description == "Included: AC1200 router" and not charges[1].taxable
    assert all(c.period == period and c.for_subscriber_id == 10 for c in charges)


@pytest.mark.parametrize("cycle,price,end", [
    ("monthly", "119.99", dt.date(2026, 2, 1)), ("quarterly", "349.99", dt.date(2026, 4, 1)),
    ("semiannual", "689.99", dt.date(2026, 7, 1)), ("annual", "1319.99", dt.date(2027, 1, 1))])
def test_each_cycle_charges_its_price_times_quantity(cycle, price, end):
    full = Period(dt.date(2026, 1, 1), end)
    charges = charges_for(snap(cycle=cycle, unit_price=D(price), quantity=2,
                               first_invoice=False, inclusions=(STB,)), full, full)
    assert amounts(charges) == [("recurring", D(price) * 2), ("inclusion", D("20.00"))]
    assert charges[0].quantity == 2 and charges[0].unit_price == D(price)


def test_setup_fee_only_on_the_first_invoice():
    full = Period(dt.date(2026, 2, 1), dt.date(2026, 3, 1))
    assert "setup" in [c.kind for c in charges_for(snap(), full, full)]
    assert "setup" not in [c.kind for c in charges_for(snap(first_invoice=False), full, full)]
    assert "setup" not in [c.kind for c in charges_for(snap(setup_fee=None), full, full)]


def test_hibernation_credits_the_hibernated_days_and_charges_the_fee():
    full = Period(dt.date(2026, 3, 1), dt.date(2026, 4, 1))
    charges = charges_for(snap(unit_price=D("30.00"), first_invoice=False,
                               hibernate_from=dt.date(2026, 3, 11),
                               hibernation_fee=D("5.00")), full, full)
    # 21 of 31 days hibernated: 30.00 x 21/31 = 20.3226 credited
    assert amounts(charges) == [("recurring", D("30.00")), ("hibernation", D("-20.3226")),
                                ("hibernation", D("5.0000"))]
    later = Period(dt.date(2026, 4, 1), dt.date(2026, 5, 1))
    ended = charges_for(snap(first_invoice=False, hibernate_from=dt.date(2026, 3, 11),
                             hibernate_until=dt.date(2026, 3, 20)), later, later)
    assert amounts(ended) == [("recurring", D("119.99"))]


def test_thirty_day_basis():
    period, full = first_period(dt.date(2026, 1, 20), "monthly", "fixed", 1)
    (line,) = charges_for(snap(first_invoice=False), period, full, proration_basis="thirty_day")
    assert line.amount == D("43.9963")  # 11 of 30 days


def test_excluded_packages_owe_nothing():
    full = Period(dt.date(2026, 1, 1), dt.date(2026, 2, 1))
    assert charges_for(snap(exclude_from_invoicing=True, inclusions=(STB,)), full, full) == []
