"""What a subscription owes for one billing period: one pure function, used by "Invoice Now",
the billing preview and the nightly billing run alike (so they can never disagree).

No database access here: callers load plain snapshots (one query per batch in the billing run).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

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
    hibernation credit and fee. Packages excluded from invoicing owe nothing."""
    raise NotImplementedError("being written by the invoicing work of issue 3")
