"""A tenant with a catalog and subscribers for the invoicing tests (created with the models)."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal as D

from headend.billing.defaults import update_invoice_defaults
from headend.billing.models import BilledPeriod, Invoice
from headend.catalog.models import (
    Item,
    Package,
    PackageInclusion,
    PackageServiceLine,
    Service,
    TaxRate,
)
from headend.ledger.models import JournalEntry, Leg
from headend.ledger.services import subscriber_balance
from headend.subscribers.services import add_package, create_subscriber
from sqlalchemy import func, select

_seq = itertools.count(1)
JAN20 = dt.date(2026, 1, 20)


def tax_rate(s, label="State tax", rate="6.25", kind="percent") -> TaxRate:
    row = TaxRate(label=label, kind=kind, rate=D(rate))
    s.add(row)
    s.flush()
    return row


def triple_play(s, **over) -> Package:
    """The demo's Triple Play: 119.99 a month, 49.99 setup, a free router."""
    values = dict(
        name=f"Triple Play {next(_seq)}",
        setup_fee=D("49.99"),
        price_monthly=D("119.99"),
        price_quarterly=D("349.99"),
        price_semiannual=D("689.99"),
        price_annual=D("1319.99"),
    )
    values.update(over)
    package = Package(**values)
    package.service_lines.append(
        PackageServiceLine(
            service=Service(name=f"Internet {next(_seq)}", type="internet"), label="Internet"
        )
    )
    router = Item(
        code=f"RTR-{next(_seq)}", name="AC1200 router", type="equipment", price=D("89.00")
    )
    package.inclusions.append(PackageInclusion(item=router, quantity=1))
    s.add(package)
    s.flush()
    return package


def subscriber(s, rates=(), **over):
    n = next(_seq)
    values = dict(
        first_name="Ana",
        last_name=f"Bill{n}",
        email=f"b{n}@x.test",
        service_line1="100 N State St",
        service_city="Chicago",
        service_region="IL",
        service_postal_code="60601",
        service_country="US",
    )
    values.update(over)
    sub = create_subscriber(s, **values)
    sub.tax_rates = list(rates)
    s.flush()
    return sub


def subscribe(s, sub, package, cycle="monthly", start=JAN20, **over):
    subscription = add_package(s, sub.id, package.id, billing_cycle=cycle, bill_start_date=start)
    for name, value in over.items():
        setattr(subscription, name, value)
    s.flush()
    return subscription


def fixed_day_one(s, **over):
    update_invoice_defaults(s, billing_mode="fixed", bill_day=1, **over)


def lines_of(invoice):
    return [(ln.kind, ln.amount, ln.tax) for ln in invoice.lines]


def legs_sum(s) -> int:
    return int(s.scalar(select(func.coalesce(func.sum(Leg.debit - Leg.credit), 0))))


def counts(s) -> tuple[int, int, int]:
    return (
        s.scalar(select(func.count(Invoice.id))),
        s.scalar(select(func.count(JournalEntry.id))),
        s.scalar(select(func.count(BilledPeriod.id))),
    )


def balance(s, sub) -> int:
    return subscriber_balance(s, sub.id)
