"""Billing periods: which dates a subscription's cycle covers, from an anchor date.

Periods are half-open `[start, end)`. Every boundary is derived from the anchor by adding whole
months, never from the previous boundary, so an anchor on the 31st gives Jan 31 -> Feb 28/29 ->
Mar 31 instead of drifting to the 28th forever. A day the month lacks is clamped to its last day.

Two ways to choose the anchor (Invoice Defaults):
- anniversary: periods start on the day of the subscription's bill start date;
- fixed: every subscriber is billed on one bill day; the stretch from the start date to the first
  bill day is a partial first period, prorated against the full period it belongs to.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date, timedelta

from headend.catalog.models import CYCLES

# Keys are exactly headend.catalog.models.CYCLES (a test holds them together).
CYCLE_MONTHS = {"monthly": 1, "quarterly": 3, "semiannual": 6, "annual": 12}

MODES = ("anniversary", "fixed")


@dataclass(frozen=True, order=True)
class Period:
    """A billing period; `end` is exclusive (the next period's start)."""

    start: date
    end: date

    def __post_init__(self):
        if self.end <= self.start:
            raise ValueError(f"empty period {self.start} .. {self.end}")

    @property
    def days(self) -> int:
        return (self.end - self.start).days

    @property
    def last_day(self) -> date:
        """The last day covered, for people: invoices say 'Jan 1 - Jan 31'."""
        return self.end - timedelta(days=1)

    def __contains__(self, day: date) -> bool:
        return self.start <= day < self.end


def months_of(cycle: str) -> int:
    try:
        return CYCLE_MONTHS[cycle]
    except KeyError:
        raise ValueError(f"unknown billing cycle {cycle!r}; expected one of {CYCLES}") from None


def shift_months(anchor: date, months: int, day: int | None = None) -> date:
    """`anchor` moved by `months` whole months, on `day` (default the anchor's), clamped."""
    index = anchor.year * 12 + anchor.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    return date(year, month, min(day or anchor.day, calendar.monthrange(year, month)[1]))


def _boundary(anchor: date, cycle: str, k: int, day: int | None) -> date:
    return shift_months(anchor, k * months_of(cycle), day)


def period_containing(anchor: date, cycle: str, on: date, *, day: int | None = None) -> Period:
    """The period of the cycle anchored at `anchor` that contains `on` (before or after it).

    `day` is the intended day of month when it differs from `anchor.day` because the anchor itself
    was clamped (fixed bill day 31 with the first bill date on Feb 28).
    """
    step = months_of(cycle)
    k = ((on.year - anchor.year) * 12 + on.month - anchor.month) // step
    while _boundary(anchor, cycle, k, day) > on:
        k -= 1
    while _boundary(anchor, cycle, k + 1, day) <= on:
        k += 1
    return Period(_boundary(anchor, cycle, k, day), _boundary(anchor, cycle, k + 1, day))


# The name the issue-3 contract gives other modules.
period_for = period_containing


def next_period(anchor: date, cycle: str, after: Period, *, day: int | None = None) -> Period:
    """The period that follows `after`."""
    return period_containing(anchor, cycle, after.end, day=day)


def periods_between(
    anchor: date, cycle: str, start: date, end: date, *, day: int | None = None
) -> list[Period]:
    """Every period that overlaps `[start, end)`, whole (the first and last may stick out)."""
    periods: list[Period] = []
    if end <= start:
        return periods
    current = period_containing(anchor, cycle, start, day=day)
    while current.start < end:
        periods.append(current)
        current = period_containing(anchor, cycle, current.end, day=day)
    return periods


def next_bill_date(anchor: date, cycle: str, on: date, *, day: int | None = None) -> date:
    """The first period start on or after `on` (billing in advance bills a period at its start)."""
    current = period_containing(anchor, cycle, on, day=day)
    return on if current.start == on else current.end


def invoice_date_for(period: Period, days_in_advance: int) -> date:
    """Billing in advance: the invoice for `period` is created this many days before it starts."""
    if days_in_advance < 0:
        raise ValueError("days_in_advance must be >= 0")
    return period.start - timedelta(days=days_in_advance)


def billing_anchor(start_date: date, mode: str, bill_day: int | None = None) -> date:
    """The anchor a subscription's periods are derived from (pass `bill_day` as `day=` too).

    anniversary: the bill start date itself. fixed: the first bill day on or after the start date.
    """
    if mode == "anniversary":
        return start_date
    if mode != "fixed":
        raise ValueError(f"unknown billing mode {mode!r}; expected one of {MODES}")
    if not bill_day or not 1 <= bill_day <= 31:
        raise ValueError("fixed billing needs a bill day between 1 and 31")
    this_month = shift_months(start_date, 0, bill_day)
    return this_month if this_month >= start_date else shift_months(start_date, 1, bill_day)


def first_period(
    start_date: date, cycle: str, mode: str, bill_day: int | None = None
) -> tuple[Period, Period]:
    """The first period billed for a subscription starting on `start_date`, and the full period
    it is part of (the two are equal unless fixed billing starts off the bill day).

    Fixed bill day 1, monthly, start Jan 20 -> (Jan 20 .. Feb 1, Jan 1 .. Feb 1).
    """
    anchor = billing_anchor(start_date, mode, bill_day)
    day = bill_day if mode == "fixed" else None
    full = period_containing(anchor, cycle, start_date, day=day)
    return Period(start_date, full.end), full
