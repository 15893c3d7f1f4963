"""Proration policies: what a mid-period event charges or credits, explained line by line.

Each policy is a pure function the UI can call for a preview and the invoicing code can call to
post: the same lines, the same words. Conventions a billing manager can rely on:

- Billing is in advance, so a mid-period policy assumes the current period was already invoiced
  at the old price: it credits the unused part and charges what replaces it.
- `price` is the full price of one period of the cycle for the whole line (price x quantity).
- Basis "actual" (default): a piece is worth price x its days / the period's actual days, so
  January days are worth less than February days, and the pieces of any period add up to it.
  Basis "thirty_day" (30/360, as some billing systems offer): every month counts 30 days, the
  31st counts none and the last day of February makes up the missing ones.
- `ProratedLine.amount` is rounded half-up to 4 decimal places (the precision prices are stored
  with); a credit is the exact mirror of the charge it undoes. Rounding to the currency's minor
  unit happens once per line when posting (`to_minor_lines`), never on a running total.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

from headend.billing.periods import Period, first_period
from headend.errors import ValidationFailed
from headend.money import to_minor

PLACES = Decimal("0.0001")
BASES = ("actual", "thirty_day")
DEFAULT_BASIS = "actual"


@dataclass(frozen=True)
class ProratedLine:
    """One charge (amount > 0) or credit (amount < 0) covering `period`."""

    description: str
    amount: Decimal
    period: Period
    explanation: str


@dataclass(frozen=True)
class MinorLine:
    """A ProratedLine rounded to the currency's minor units, ready to post."""

    description: str
    amount: int
    period: Period
    explanation: str


@dataclass(frozen=True)
class ScheduledChange:
    """A change that costs nothing now and takes effect on `effective_date` (a period start).

    `lines` is empty: it is here so a preview can treat every policy alike.
    """

    effective_date: date
    explanation: str
    lines: tuple[ProratedLine, ...] = ()


def _days360(day: date) -> int:
    return day.year * 360 + (day.month - 1) * 30 + min(day.day - 1, 30)


def day_count(piece: Period, basis: str = DEFAULT_BASIS) -> int:
    """Days `piece` counts for under `basis`."""
    if basis == "actual":
        return piece.days
    if basis == "thirty_day":
        return _days360(piece.end) - _days360(piece.start)
    raise ValueError(f"unknown proration basis {basis!r}; expected one of {BASES}")


def _money(amount: Decimal) -> str:
    """119.9900 -> 119.99, 5 -> 5.00, 46.4477 stays: at least cents, no trailing noise."""
    text = f"{amount.normalize():f}"
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"


def _day(day: date) -> str:
    return f"{day:%b} {day.day}, {day.year}"


def _span(period: Period) -> str:
    first, last = period.start, period.last_day
    if first == last:
        return _day(last)
    if first.year == last.year:
        return f"{first:%b} {first.day} – {last:%b} {last.day}, {last.year}"
    return f"{_day(first)} – {_day(last)}"


def _check_price(field: str, price: Decimal) -> None:
    if not isinstance(price, Decimal):
        raise TypeError(f"{field} must be Decimal, not {type(price).__name__}")
    if price < 0:
        raise ValidationFailed({field: "A price cannot be negative."})


def _check_within(field: str, day: date, period: Period) -> None:
    if day not in period:
        raise ValidationFailed(
            {field: f"Must fall within the billing period {_span(period)}."})


def prorate(price: Decimal, full: Period, piece: Period, *, label: str = "Service",
            basis: str = DEFAULT_BASIS, credit: bool = False) -> ProratedLine:
    """`piece` of the `full` period priced at `price`: the building block of every policy.

    With `credit` the line is the negative mirror image of the same charge.
    """
    if not full.start <= piece.start < piece.end <= full.end:
        raise ValueError(f"{piece} is not part of {full}")
    used, total = day_count(piece, basis), day_count(full, basis)
    magnitude = (price * used / total).quantize(PLACES, rounding=ROUND_HALF_UP)
    amount = -magnitude if credit and magnitude else magnitude
    suffix = " (30-day months)" if basis == "thirty_day" else ""
    what = f"Credit for unused {label}" if credit else label
    return ProratedLine(
        description=f"{'Credit: unused ' if credit else ''}{label} ({_span(piece)})",
        amount=amount,
        period=piece,
        explanation=(f"{what}, {used} of {total} days ({_span(piece)}){suffix}"
                     f" × {_money(price)} = {_money(amount)}"),
    )


def partial_first_period(price: Decimal, full_period: Period, start: date, *,
                         label: str = "Service", basis: str = DEFAULT_BASIS
                         ) -> list[ProratedLine]:
    """Charge for `start` to the end of `full_period` (fixed bill day, started off the bill day).

    Starting on the period's first day charges the full price.
    """
    _check_price("price", price)
    _check_within("start", start, full_period)
    return [prorate(price, full_period, Period(start, full_period.end), label=label, basis=basis)]


def immediate_upgrade(old_price: Decimal, new_price: Decimal, period: Period, change_date: date,
                      *, old_label: str = "Current package", new_label: str = "New package",
                      basis: str = DEFAULT_BASIS) -> list[ProratedLine]:
    """Switch now: credit the unused rest of the old package, charge the new one for the rest.

    Also serves an immediate downgrade, for tenants whose policy does not defer them.
    """
    _check_price("old_price", old_price)
    _check_price("new_price", new_price)
    _check_within("change_date", change_date, period)
    rest = Period(change_date, period.end)
    return [prorate(old_price, period, rest, label=old_label, basis=basis, credit=True),
            prorate(new_price, period, rest, label=new_label, basis=basis)]


def deferred_downgrade(old_price: Decimal, new_price: Decimal, period: Period, change_date: date,
                       *, old_label: str = "Current package", new_label: str = "New package"
                       ) -> ScheduledChange:
    """Nothing is charged or credited: the old package runs to the end of the paid period and
    the new one starts with the next period, billed at its own price."""
    _check_price("old_price", old_price)
    _check_price("new_price", new_price)
    _check_within("change_date", change_date, period)
    return ScheduledChange(
        effective_date=period.end,
        explanation=(f"No charge now: {old_label} ({_money(old_price)}) runs to"
                     f" {_day(period.last_day)}; {new_label} ({_money(new_price)})"
                     f" starts on {_day(period.end)}."),
    )


def cycle_change(old_cycle: str, old_price: Decimal, new_cycle: str, new_price: Decimal,
                 period: Period, change_date: date, bill_day: int, *, label: str = "Service",
                 basis: str = DEFAULT_BASIS) -> list[ProratedLine]:
    """Move to another cycle and/or bill day on `change_date`.

    Credits the unused part of the current (already billed) period at the old cycle's price, then
    charges the new cycle's first period: from `change_date` to the next `bill_day`, prorated
    against the full new-cycle period it belongs to (the full price if `change_date` is on the
    bill day). Later periods anchor on that bill day (`billing_anchor(change_date, "fixed", ..)`).
    """
    _check_price("old_price", old_price)
    _check_price("new_price", new_price)
    _check_within("change_date", change_date, period)
    first, full = first_period(change_date, new_cycle, "fixed", bill_day)
    return [
        prorate(old_price, period, Period(change_date, period.end),
                label=f"{label}, {old_cycle}", basis=basis, credit=True),
        prorate(new_price, full, first, label=f"{label}, {new_cycle}", basis=basis),
    ]


def cancellation(price: Decimal, period: Period, cancel_date: date, credit_unused: bool, *,
                 label: str = "Service", basis: str = DEFAULT_BASIS) -> list[ProratedLine]:
    """Service ends on `cancel_date` (that day is no longer served).

    With `credit_unused` the unused rest of the paid period is credited; without it nothing is.
    """
    _check_price("price", price)
    _check_within("cancel_date", cancel_date, period)
    if not credit_unused:
        return []
    return [prorate(price, period, Period(cancel_date, period.end), label=label, basis=basis,
                    credit=True)]


def hibernation(price: Decimal, period: Period, hibernate_from: date, hibernate_to: date | None,
                hibernation_fee: Decimal | None, *, label: str = "Service",
                basis: str = DEFAULT_BASIS) -> list[ProratedLine]:
    """What hibernating `[hibernate_from, hibernate_to)` changes in one billed `period`.

    The hibernated days of the period are credited, and the package's hibernation fee is charged
    once for every billing period that has at least one hibernated day, unprorated — a flat
    "account on hold" fee per bill, the way ISPs quote it. `hibernate_to` None = until further
    notice. Added to the period's regular charge, the lines give what the period costs.
    """
    _check_price("price", price)
    if hibernation_fee is not None:
        _check_price("hibernation_fee", hibernation_fee)
    if hibernate_to is not None and hibernate_to <= hibernate_from:
        raise ValidationFailed({"hibernate_to": "Must be after the hibernation start."})
    start = max(hibernate_from, period.start)
    end = period.end if hibernate_to is None else min(hibernate_to, period.end)
    if end <= start:
        raise ValidationFailed(
            {"hibernate_from": f"The hibernation does not touch the period {_span(period)}."})
    lines = [prorate(price, period, Period(start, end), label=label, basis=basis, credit=True)]
    if hibernation_fee:
        lines.append(ProratedLine(
            description=f"Hibernation fee: {label} ({_span(period)})",
            amount=hibernation_fee.quantize(PLACES, rounding=ROUND_HALF_UP),
            period=period,
            explanation=(f"Hibernation fee for {label}, once per billing period"
                         f" ({_span(period)}) = {_money(hibernation_fee)}"),
        ))
    return lines


def to_minor_lines(lines: Iterable[ProratedLine], currency: str) -> list[MinorLine]:
    """Round each line half-up to the currency's minor unit (per line, then sum)."""
    return [MinorLine(line.description, to_minor(line.amount, currency), line.period,
                      line.explanation) for line in lines]
