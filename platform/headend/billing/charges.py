"""What a subscription owes for one billing period: one pure function, used by "Invoice Now",
the billing preview and the nightly billing run alike (so they can never disagree).

No database access here: callers load plain snapshots (one query per batch in the billing run).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

from headend.billing import proration
from headend.billing.periods import Period


@dataclass(frozen=True)
class InclusionSnapshot:
    item_id: int
    description: str
    quantity: int
    recurring_price: Decimal | None  # None or 0: free
    income_account_id: int
    taxable: bool


@dataclass(frozen=True)
class SubscriptionSnapshot:
    subscription_id: int
    subscriber_id: int  # whose service it is
    bill_to_subscriber_id: int  # whose invoice it lands on
    package_name: str
    cycle: str
    quantity: int
    unit_price: Decimal  # custom price where allowed, else the package's price for the cycle
    setup_fee: Decimal | None
    first_invoice: bool  # no period billed yet: the setup fee is due
    bill_start_date: dt.date
    income_account_id: int  # the package's main service income account
    setup_income_account_id: int
    taxable: bool
    exclude_from_invoicing: bool
    hibernate_from: dt.date | None = None
    hibernate_until: dt.date | None = None
    hibernation_fee: Decimal | None = None
    inclusions: tuple[InclusionSnapshot, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Charge:
    kind: str  # one of headend.billing.models.LINE_KINDS
    description: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal  # exact; rounded half-up to minor units when the invoice line is written
    income_account_id: int
    taxable: bool
    subscription_id: int | None
    for_subscriber_id: int
    period: Period | None
    explanation: str | None = None


def charges_for(sub: SubscriptionSnapshot, period: Period, full_period: Period,
                *, proration_basis: str = "actual_days") -> list[Charge]:
    """The charges of `sub` for `period` (a part of `full_period` when it is a partial first
    period): recurring fee, setup fee on the first invoice, inclusions with a recurring charge,
    hibernation credit and fee. Packages excluded from invoicing owe nothing.

    Free inclusions come back as zero-amount lines so the invoice lists what the package brings.
    """
    if sub.exclude_from_invoicing:
        return []
    basis = _BASES.get(proration_basis, proration_basis)
    price = sub.unit_price * sub.quantity
    charges = [_recurring(sub, period, full_period, price, basis)]
    charges += [_inclusion(sub, inc, period, full_period, basis) for inc in sub.inclusions]
    if sub.first_invoice and sub.setup_fee:
        charges.append(_charge(sub, "setup", f"Setup fee: {sub.package_name}", Decimal(1),
                               sub.setup_fee, sub.setup_income_account_id, period))
    charges += _hibernation(sub, period, full_period, price, basis)
    return charges


# The model spells the basis as Invoice Defaults stores it; proration names it shorter.
_BASES = {"actual_days": "actual"}


def _charge(sub: SubscriptionSnapshot, kind: str, description: str, quantity: Decimal,
            unit_price: Decimal, account_id: int, period: Period, amount: Decimal | None = None,
            explanation: str | None = None, taxable: bool | None = None) -> Charge:
    return Charge(kind=kind, description=description, quantity=quantity, unit_price=unit_price,
                  amount=quantity * unit_price if amount is None else amount,
                  income_account_id=account_id,
                  taxable=sub.taxable if taxable is None else taxable,
                  subscription_id=sub.subscription_id, for_subscriber_id=sub.subscriber_id,
                  period=period, explanation=explanation)


def _recurring(sub, period, full, price, basis) -> Charge:
    label = f"{sub.package_name} ({sub.cycle})"
    if period == full:
        return _charge(sub, "recurring", f"{label} {_span(period)}", Decimal(sub.quantity),
                       sub.unit_price, sub.income_account_id, period)
    (line,) = proration.partial_first_period(price, full, period.start, label=label,
                                             basis=basis)
    return _charge(sub, "proration", line.description, Decimal(1), line.amount,
                   sub.income_account_id, period, explanation=line.explanation)


def _inclusion(sub, inc: InclusionSnapshot, period, full, basis) -> Charge:
    quantity = Decimal(inc.quantity * sub.quantity)
    if not inc.recurring_price:
        return _charge(sub, "inclusion", f"Included: {inc.description}", quantity, Decimal(0),
                       inc.income_account_id, period, taxable=False,
                       explanation=f"Included with {sub.package_name} at no charge")
    if period == full:
        return _charge(sub, "inclusion", inc.description, quantity, inc.recurring_price,
                       inc.income_account_id, period, taxable=inc.taxable)
    line = proration.prorate(inc.recurring_price * quantity, full, period,
                             label=inc.description, basis=basis)
    return _charge(sub, "inclusion", line.description, Decimal(1), line.amount,
                   inc.income_account_id, period, explanation=line.explanation,
                   taxable=inc.taxable)


def _hibernation(sub, period, full, price, basis) -> list[Charge]:
    """Credit for the hibernated days of `period` and the package's fee, when they touch it."""
    if sub.hibernate_from is None:
        return []
    start = max(sub.hibernate_from, period.start)
    end = period.end if sub.hibernate_until is None else min(sub.hibernate_until, period.end)
    if end <= start:
        return []
    lines = proration.hibernation(price, full, start, end if end < full.end else None,
                                  sub.hibernation_fee, label=sub.package_name, basis=basis)
    return [_charge(sub, "hibernation", line.description, Decimal(1), line.amount,
                    sub.income_account_id, period, explanation=line.explanation)
            for line in lines]


def _span(period: Period) -> str:
    first, last = period.start, period.last_day
    return f"{first:%b} {first.day} – {last:%b} {last.day}, {last.year}"
